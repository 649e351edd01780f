"""Detection goals, the attack, the from-scratch judge, the pipeline task and the box drawing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jndkit.detect.draw import BOX_COLOUR, draw_boxes
from jndkit.detect.goals import DetectorVictim, Mislabel, Vanish, parse_detect_goal
from jndkit.detect.labels import COCO_NAMES
from jndkit.detect.protect import DetectConfig, DetectProtector
from jndkit.detect.ssd import Detection, load_ssd, nms_detections
from jndkit.errors import InputError
from jndkit.goals import goal_usage

C = len(COCO_NAMES)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _outputs(boxes: list[list[float]], scores: dict[tuple[int, int], float]) -> torch.Tensor:
    """``[1,A,4+91]`` victim outputs: boxes per anchor, every score 0.001 but those given."""
    out = torch.full((1, len(boxes), 4 + C), _logit(0.001))
    out[0, :, :4] = torch.tensor(boxes)
    for (a, c), p in scores.items():
        out[0, a, 4 + c] = _logit(p)
    return out


def test_vanish_reached_only_when_no_box_of_the_class_is_left() -> None:
    boxes = [[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]]
    g = Vanish(classes="person").bind(_outputs(boxes, {}))
    for p_person, p_cat, reached in ((0.6, 0.9, False), (0.47, 0.9, False), (0.4, 0.9, True), (0.2, 0.0, True)):
        out = _outputs(boxes, {(0, 1): p_person, (1, 17): p_cat} if p_cat else {(0, 1): p_person})
        assert bool(g.reached(out)[0]) is reached, p_person
        assert float(g.margin(out)[0]) == pytest.approx(0.5 - p_person, abs=1e-6)
    # cats do not matter to vanish:person, they do to vanish-all
    everything = Vanish(classes=None).bind(_outputs(boxes, {}))
    assert not bool(everything.reached(_outputs(boxes, {(0, 1): 0.2, (1, 17): 0.9}))[0])
    assert len(everything.ids) == 90


def test_vanish_margin_agrees_with_nms_boxes() -> None:
    """"No box of the class after NMS" and "margin > 0" are the same statement, on random outputs."""
    gen = torch.Generator().manual_seed(0)
    g = Vanish(classes=["person", "cat"], kappa=0.0)
    for _ in range(40):
        xy = torch.rand(1, 30, 2, generator=gen) * 0.6
        out = torch.cat([xy, xy + 0.1 + torch.rand(1, 30, 2, generator=gen) * 0.3,
                         torch.randn(1, 30, C, generator=gen) * 1.5 - 3.0], dim=-1)
        gb = g.bind(out)
        dets = nms_detections(out[0, :, :4], out[0, :, 4:].sigmoid(), 0.5)
        assert (float(gb.margin(out)[0]) > 0) == (not any(d.label in (1, 17) for d in dets))


def test_mislabel_needs_the_target_at_the_same_place() -> None:
    boxes = [[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]]
    g = Mislabel(target="dog").bind(_outputs(boxes, {(0, 1): 0.9}))
    assert g.labels.tolist() == [[1]]
    assert bool(g.reached(_outputs(boxes, {(0, 1): 0.1, (0, 18): 0.8}))[0])
    assert not bool(g.reached(_outputs(boxes, {(0, 1): 0.1, (1, 18): 0.8}))[0])  # a dog elsewhere
    assert not bool(g.reached(_outputs(boxes, {(0, 1): 0.6, (0, 18): 0.8}))[0])  # still a person there
    out = _outputs(boxes, {(0, 1): 0.6, (0, 18): 0.3}).requires_grad_(True)
    g.loss(out).sum().backward()
    assert out.grad is not None and out.grad[0, 0, 4 + 18] < 0 and out.grad[0, 0, 4 + 1] > 0


def test_goal_spellings() -> None:
    assert parse_detect_goal("vanish").describe() == "vanish:person"
    assert parse_detect_goal("vanish:cat,dog").describe() == "vanish:cat,dog"
    assert parse_detect_goal("vanish-all").describe() == "vanish-all"
    assert parse_detect_goal("mislabel:teddy_bear").describe() == "mislabel:teddy bear"
    assert "mislabel:CLASS" in goal_usage("detect")
    with pytest.raises(InputError, match="unknown COCO class 'persn'; did you mean: person"):
        parse_detect_goal("vanish:persn")
    with pytest.raises(InputError, match="unknown detect goal"):
        parse_detect_goal("hide")


@pytest.fixture(scope="module")
def chelsea() -> torch.Tensor:
    import skimage.data

    torch.set_num_threads(1)
    return torch.from_numpy(np.ascontiguousarray(skimage.data.chelsea())).permute(2, 0, 1).float() / 255.0


def test_attack_then_judge_the_saved_file(chelsea: torch.Tensor, tmp_path: Path) -> None:
    from jndkit.images import load_image, save_image

    p = DetectProtector(DetectConfig(goal="vanish:cat", method="jnd", upload="none", max_iter=40))
    assert p.nothing_to_protect(chelsea) is None
    res = p.protect_tensor(chelsea)
    assert bool(res.success[0]) and 1 <= int(res.iterations[0]) <= 40
    save_image(res.x_adv[0], tmp_path / "cat.png")
    saved = load_image(tmp_path / "cat.png").rgb
    v = p.judge_tensor(chelsea, saved)
    assert v.success and v.robust_success is None and v.margin > 0
    assert [d.name for d in v.boxes_before] == ["cat"] and "cat" not in [d.name for d in v.boxes_after]
    # an independent look at the file: the detector, loaded afresh, finds no cat above 0.5
    assert not [d for d in load_ssd().detect(saved[None])[0] if d.name == "cat"]
    # the clean photo itself fails the judge
    assert not p.judge_tensor(chelsea, chelsea).success


def test_pipeline_task_writes_and_reports_boxes(chelsea: torch.Tensor, tmp_path: Path) -> None:
    from jndkit.detect.task import DetectRecord, DetectTask
    from jndkit.images import save_image
    from jndkit.pipeline import run_paths

    src = tmp_path / "in"
    src.mkdir()
    save_image(chelsea, src / "cat.png")
    save_image(torch.full((3, 64, 96), 0.5), src / "grey.png")  # nothing to detect
    task = DetectTask(DetectProtector(DetectConfig(goal="vanish:cat", method="jnd", upload="none", max_iter=40)))
    recs = {Path(r.input).name: r for r in run_paths(task, [src], tmp_path / "out")}
    cat, grey = recs["cat.png"], recs["grey.png"]
    assert isinstance(cat, DetectRecord) and cat.status == "protected" and cat.success
    assert [b["name"] for b in cat.boxes_before] == ["cat"]
    assert all(b["name"] != "cat" for b in cat.boxes_after)
    assert grey.status == "no-detection" and not (tmp_path / "out/grey.png").exists()
    report = json.loads((tmp_path / "out/report.json").read_text())
    entry = next(e for e in report["images"] if e["input"].endswith("cat.png"))
    assert entry["boxes_before"][0]["name"] == "cat" and report["task"] == "detect"
    # the written file, detected again, has no cat
    from jndkit.images import load_image

    out = load_image(tmp_path / "out/cat.png").rgb
    assert not [d for d in DetectorVictim().detect(out[None])[0] if d.name == "cat"]


def test_draw_boxes_outline_and_label() -> None:
    img = torch.zeros(3, 60, 80)
    box = Detection(17, "cat", 0.91, (10.0, 20.0, 50.0, 55.0))
    out = np.asarray(draw_boxes(img, [box], width=2))
    assert out.shape == (60, 80, 3)
    assert tuple(out[40, 10]) == BOX_COLOUR and tuple(out[40, 49]) == BOX_COLOUR  # left and right edges
    assert tuple(out[40, 30]) == (0, 0, 0)  # inside the box: untouched
    assert (out[:20] == BOX_COLOUR).all(axis=-1).any()  # the label's background above the box
    same = np.asarray(draw_boxes(Image.fromarray(np.zeros((60, 80, 3), np.uint8)), [box.to_json()], width=2))
    assert np.array_equal(out, same)
    assert np.asarray(draw_boxes(img, [])).max() == 0
    with pytest.raises(InputError, match="needs name/label, score and box"):
        draw_boxes(img, [{"name": "cat"}])
