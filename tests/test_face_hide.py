"""Hiding faces from MTCNN (logit margins), seed methods on face goals, per-sample face victims.

The photo tests use the ``face_recognition`` 1.3.0 sdist's photos (fetched into ``.cache/face_photos``
by ``scripts/fetch_face_test_photos.py``; skipped without network). The hiding test judges the
written file with a **fresh stock** facenet-pytorch ``MTCNN`` (not jndkit's wrapper).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from jndkit.attacks import get_method, run_attack
from jndkit.images import load_image, quantize

pytest.importorskip("facenet_pytorch")


@pytest.fixture(scope="module")
def detector() -> Any:
    from jndkit.errors import WeightsNotFoundError
    from jndkit.face import FaceDetector

    try:
        return FaceDetector()
    except WeightsNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def net() -> Any:
    from jndkit.errors import WeightsNotFoundError
    from jndkit.face import load_dlib_face_net

    try:
        return load_dlib_face_net()
    except WeightsNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def obama(photo_paths: dict[str, Path]) -> torch.Tensor:
    return quantize(load_image(photo_paths["obama"]).rgb)


def _over(clean: tuple[float, ...], box: np.ndarray) -> bool:
    """The check's rule: a detection is the clean face when IoU >= 0.3 or its centre is in the box."""
    ix = max(0.0, min(clean[2], box[2]) - max(clean[0], box[0]))
    iy = max(0.0, min(clean[3], box[3]) - max(clean[1], box[1]))
    inter = ix * iy
    union = (clean[2] - clean[0]) * (clean[3] - clean[1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return inter / union >= 0.3 or (clean[0] <= cx <= clean[2] and clean[1] <= cy <= clean[3])


# ------------------------------------------------------------------------------------ logits


def test_logit_threshold_is_the_probability_threshold() -> None:
    from jndkit.errors import InputError
    from jndkit.face.detect import logit_threshold

    for t in (0.6, 0.7, 0.9):
        z = logit_threshold(t)
        assert torch.sigmoid(torch.tensor(z, dtype=torch.float64)).item() == pytest.approx(t, abs=1e-12)
        assert z == pytest.approx(math.log(t / (1 - t)))
    with pytest.raises(InputError, match="in \\(0, 1\\)"):
        logit_threshold(1.0)


def test_face_logits_agree_with_the_nets_softmax_and_keep_a_gradient(detector: Any, obama: torch.Tensor) -> None:
    """sigmoid(face logit) is the stock net's softmax probability; where PNet's probability has
    saturated at 1.0 (zero gradient), the logit still has a gradient on the face's pixels."""
    import torch.nn.functional as F

    from jndkit.face.detect import _net_input, _square

    face = detector.detect(obama, min_prob=0.9)[0]
    x = obama[None].clone().requires_grad_(True)
    lg = detector.face_logits(x, [face])
    # ONet: compare with the stock net's own softmax output on the same crop
    x1, y1, x2, y2 = _square(torch.tensor([face.box], dtype=torch.float64)).trunc().long()[0].tolist()
    crop = F.interpolate(obama[None, :, y1 - 1 : y2, x1 - 1 : x2] * 255, size=(48, 48), mode="area")
    with torch.no_grad():
        p_stock = detector.mtcnn.onet(_net_input(crop))[2][0, 1]
    assert float(torch.sigmoid(lg.onet[0].detach())) == pytest.approx(float(p_stock), abs=1e-5)
    pnet_max = lg.pnet[0].max()
    assert float(pnet_max.detach()) > 10.0
    (g_logit,) = torch.autograd.grad(pnet_max, x, retain_graph=True)
    (g_prob,) = torch.autograd.grad(torch.sigmoid(pnet_max), x)
    bx1, by1, bx2, by2 = (int(v) for v in face.box)
    assert float(g_logit[0, :, by1:by2, bx1:bx2].abs().sum()) > 0
    # the probability has saturated: its gradient is p(1-p) < 1e-4 times the logit's
    assert float(g_prob.norm()) < 1e-4 * float(g_logit.norm())
    # the margins are logits minus the logits of MTCNN's thresholds
    m = lg.margins()[0]
    assert m.numel() == lg.pnet[0].numel() + 2
    assert float(m[-1].detach()) == pytest.approx(float(lg.onet[0].detach()) - math.log(0.7 / 0.3), abs=1e-5)
    probs = detector.face_probabilities(obama[None], [face])
    assert float(probs.onet[0]) == pytest.approx(float(torch.sigmoid(lg.onet[0])), abs=1e-6)


def test_hide_victim_pads_and_indexes(detector: Any, obama: torch.Tensor) -> None:
    from jndkit.face import FaceHideVictim, Hide

    face = detector.detect(obama, min_prob=0.9)[0]
    small = obama[:, 50:450, 330:650].contiguous()
    b = face.box
    box_a = torch.tensor([[b[0] - 330, b[1] - 50, b[2] - 330, b[3] - 50]])
    box_b = torch.tensor([[40.0, 40.0, 100.0, 100.0]])
    v = FaceHideVictim(detector, [box_a, box_b], stages=("rnet", "onet"))
    with torch.no_grad():
        out = v(torch.stack([small, small]))
        alone = v[torch.tensor([1])](small[None])
    assert out.shape == (2, 2)
    assert float(out[0].max()) > 0  # the face passes RNet and ONet at its box
    torch.testing.assert_close(out[1:], alone)
    goal = Hide().bind(out)
    assert goal.reached(out).tolist() == [False, bool(out[1].max() < -0.5)]


# ------------------------------------------------------------------------------------ hiding


@pytest.mark.slow
def test_hiding_holds_for_stock_mtcnn_on_the_saved_photo(
    tmp_path: Path, photo_paths: dict[str, Path], detector: Any, net: Any
) -> None:
    """Stock MTCNN finds Obama's face in obama.jpg; on the protected photo, written as PNG and read
    back, a fresh stock MTCNN finds no face (at its own 0.7 threshold) over the clean face box."""
    from facenet_pytorch import MTCNN
    from PIL import Image

    from jndkit.face import FaceProtector, protect_face_paths

    stock = MTCNN(keep_all=True, device="cpu").eval()

    def faces_over(path: Path, clean_box: tuple[float, ...]) -> list[float]:
        boxes, probs = stock.detect(np.asarray(Image.open(path).convert("RGB")))
        if boxes is None:
            return []
        return [float(p) for b, p in zip(boxes, probs) if p >= 0.7 and _over(clean_box, b)]

    boxes, probs = stock.detect(np.asarray(Image.open(photo_paths["obama"]).convert("RGB")))
    clean_box = tuple(float(v) for v in boxes[int(np.argmax(probs))])
    assert max(faces_over(photo_paths["obama"], clean_box)) > 0.99  # the test can fail: the face is there

    prot = FaceProtector("hide", method="ddn", detector=detector, net=net)  # HIDE_ROUNDS: 8 at most
    (rec,) = protect_face_paths([photo_paths["obama"]], tmp_path / "out", protector=prot)
    assert rec.status == "protected", rec.to_json()
    saved = Path(rec.output)
    assert saved.suffix == ".png" and load_image(saved).size == (910, 1137)
    assert faces_over(saved, clean_box) == []
    assert rec.faces[0]["detected_after"] is False and rec.faces[0]["protected"] is True
    assert rec.psnr > 40.0


# ------------------------------------------------------------------------------------ methods


def test_mnd_falls_back_to_the_goal_loss_on_embedding_goals() -> None:
    """Seed 001's adversarial loss needs class weights; on a face goal the face method uses the
    goal's own loss (and reaches it), on a class goal it is the same method."""
    from jndkit.errors import InputError
    from jndkit.face import Dodge, face_method
    from jndkit.goals import Untargeted

    torch.manual_seed(0)
    proj = torch.randn(3 * 8 * 8, 4) * 3

    class Embed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) @ proj

    x0 = quantize(torch.rand(2, 3, 8, 8))
    mnd = get_method("mnd", lr=0.05)
    with pytest.raises(InputError, match="class goal"):
        run_attack(mnd, Embed(), Dodge(kappa=0.05), x0, max_iter=5)
    fm = face_method(mnd)
    assert fm.name == "mnd" and fm.params == mnd.params and fm is not mnd
    res = run_attack(fm, Embed(), Dodge(kappa=0.05), x0, max_iter=300)
    assert res.success.all(), res.margin
    assert float((res.x_adv - x0).abs().max()) > 0
    # a class goal keeps seed 001's loss: same result as the unchanged method
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    a = run_attack(mnd, lin, Untargeted(), x0, max_iter=20)
    b = run_attack(fm, lin, Untargeted(), x0, max_iter=20)
    assert torch.equal(a.x_adv, b.x_adv)
    ddn = get_method("ddn")
    assert face_method(ddn) is ddn


def test_face_recogniser_victim_is_indexed_by_the_engine(net: Any, detector: Any, photo_paths: dict[str, Path]) -> None:
    """Two photos that dodge at different iterations: the engine compacts the batch, which needs
    ``victim[idx]``; each sample's image reaches the goal at its own alignment."""
    from jndkit.face import Dodge, FaceRecogniserVictim

    x = quantize(load_image(photo_paths["obama2"]).rgb)
    face = detector.detect(x, min_prob=0.9)[0]
    x1, y1, x2, y2 = (int(v) for v in face.box)
    pad = 40
    ox, oy = max(0, x1 - pad), max(0, y1 - pad)
    crop = x[:, oy : y2 + pad, ox : x2 + pad].contiguous()
    lm = face.landmarks - torch.tensor([float(ox), float(oy)])
    # the mirror image is another photo; its landmarks mirrored (image-left eye first again)
    lm_flip = lm.clone()
    lm_flip[:, 0] = crop.shape[-1] - 1 - lm[:, 0]
    lm_flip = lm_flip[[1, 0, 2, 4, 3]]
    assert FaceRecogniserVictim.per_sample is True
    victim = FaceRecogniserVictim(net, torch.stack([lm, lm_flip]))
    batch = quantize(torch.stack([crop, crop.flip(-1) * 0.8]))  # the mirror image, darker: another photo
    with torch.no_grad():
        ref = victim(batch)[:, None]  # each photo dodges its own clean descriptor, [B,K=1,128]
    method = get_method("bim", eps=8 / 255, alpha=1 / 255, steps=40)
    res = run_attack(method, victim, Dodge(ref, threshold=0.6, kappa=0.0), batch, max_iter=40)
    assert res.success.all()
    assert int(res.iterations[0]) != int(res.iterations[1])  # so the batch did shrink
    # without per_sample the engine would hand the 2-photo victim a 1-photo batch once one finished
    for i in range(2):
        with torch.no_grad():
            d = float((victim[[i]](res.x_adv[i : i + 1]) - ref[i]).norm())
        assert d > 0.6, (i, d)  # each saved image dodges at its own photo's alignment


def test_face_protector_uses_face_parameters_unless_a_preset_is_named(detector: Any, net: Any) -> None:
    from jndkit.face import FaceProtector
    from jndkit.face.protect import FACE_PARAMS

    for m, params in FACE_PARAMS.items():
        got = FaceProtector("dodge", method=m, detector=detector, net=net).method.params
        assert all(got[k] == v for k, v in params.items()), m
    paper = FaceProtector("dodge", method="mnd", preset="paper-untargeted", detector=detector, net=net)
    assert paper.method.params["lr"] == 1e-4
    hvs = FaceProtector("dodge", method="hvs", detector=detector, net=net).method
    assert hvs.retry is not None and hvs.retry.max_tries == 3  # beta 1500 -> 1000 -> 500 -> 0


# ------------------------------------------------------------------------------------ hiding inside the JND budget
# (jndkit.face.hide, jndkit.face.judges, jndkit.face.hide_task; docs/face-hide.md)


@pytest.fixture(scope="module")
def dlib_mod() -> Any:
    return pytest.importorskip("dlib")


def _u8(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def test_found_is_the_over_rule_on_reported_detections() -> None:
    from jndkit.face.judges import Detection, best_over, found

    clean = (100.0, 100.0, 200.0, 200.0)
    near = Detection((110.0, 105.0, 215.0, 210.0), 0.7, True)  # IoU 0.77
    weak = Detection((110.0, 105.0, 215.0, 210.0), -0.3, False)  # same window, below the detector's threshold
    far = Detection((300.0, 300.0, 400.0, 400.0), 2.0, True)
    assert found(clean, [near]) and not found(clean, [weak]) and not found(clean, [far])
    assert found(clean, [(140.0, 140.0, 180.0, 180.0)])  # plain box: IoU 0.16 but its centre is inside
    assert not found(clean, [(150.0, 150.0, 400.0, 400.0)])  # IoU 0.036, centre (275, 275) outside
    # the clean box is given at the photo's size and scaled to a resized photo
    assert found(clean, [Detection((55.0, 52.0, 107.0, 105.0), 1.0, True)], scale=0.5)
    assert best_over(clean, [weak, far]) is weak and best_over(clean, [far]) is None


def test_held_out_judges_find_the_clean_faces_as_dlib_itself_does(
    photo_paths: dict[str, Path], detector: Any, dlib_mod: Any
) -> None:
    """dlib's HOG detector through the judge (tensor in [0,1] -> 8 bits) gives the windows and scores of
    dlib's own call on the decoded file (face_recognition's ``face_locations(img, 1)``), and finds the
    MTCNN face of each test photo; the CNN judge agrees with dlib's own CNN call on obama's face region."""
    from jndkit.face.judges import dlib_cnn, dlib_hog, find_mmod_model, found, held_out_faces

    hog = dlib_mod.get_frontal_face_detector()
    for name, path in photo_paths.items():
        x = load_image(path).rgb
        (face,) = detector.detect(x, min_prob=0.9)
        dets = held_out_faces(x, dlib_hog(1))
        own = [(r.left(), r.top(), r.right() + 1, r.bottom() + 1) for r in hog(_u8(path), 1)]
        assert sorted(d.box for d in dets if d.found) == sorted(own), name
        assert found(face.box, dets), name
        assert max(d.score for d in dets if d.found) > 1.0, name  # clear faces: HOG scores 1.3-2.0
    x = load_image(photo_paths["obama"]).rgb[:, 0:600, 230:730].contiguous()
    cnn = dlib_mod.cnn_face_detection_model_v1(str(find_mmod_model()))
    (ref,) = cnn(np.ascontiguousarray(_u8(photo_paths["obama"])[0:600, 230:730]), 0)
    (got,) = held_out_faces(x, dlib_cnn(0))
    assert got.box == (ref.rect.left(), ref.rect.top(), ref.rect.right() + 1, ref.rect.bottom() + 1)
    assert got.score == pytest.approx(ref.confidence, abs=1e-6) and got.score > 0.9


def test_crop_transforms_line_up_with_the_whole_photos(obama: torch.Tensor) -> None:
    """A crop with corners on the 64-px grid, resized by x0.5 / x0.75 (Pillow Lanczos), equals the same
    region of the resized whole photo away from the crop's edges (to 1 level; exactly so only when the
    photo's sides scale exactly: otherwise Pillow's ratio drifts by up to a pixel over the photo);
    long-side resizes become the photo's effective scale."""
    from jndkit.face.hide import crop_transforms
    from jndkit.transforms import parse_transform

    h, w = obama.shape[-2:]
    pairs = {t.name: c for t, c in crop_transforms("social", h, w)}
    assert set(pairs) == {"jpeg95", "jpeg85", "jpeg75", "x0.5+jpeg85", "x0.75+jpeg85", "long1080+jpeg85", "webp80"}
    assert pairs["long1080+jpeg85"].scale == pytest.approx(1080 / 1137)
    assert pairs["jpeg85"].scale is None and pairs["x0.75+jpeg85"].scale == 0.75
    x1, y1, x2, y2 = 128, 64, 768, 576
    photo = obama[:, :1024, :896]  # sides on the grid too: Pillow resizes 1137 rows to 568, a ratio of 2.0018
    for s in (0.5, 0.75):
        whole = parse_transform(f"x{s}").apply(photo)
        part = parse_transform(f"x{s}").apply(photo[:, y1:y2, x1:x2])
        m = 8  # Lanczos reaches 3 output pixels past a crop edge
        a = whole[:, int(y1 * s) + m : int(y2 * s) - m, int(x1 * s) + m : int(x2 * s) - m]
        b = part[:, m:-m, m:-m]
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= 1 / 255 + 1e-6, s


def test_a_photo_without_a_face_is_reported_and_left_unchanged(tmp_path: Path, detector: Any, dlib_mod: Any) -> None:
    from skimage import data

    from jndkit.face.hide import hide_faces
    from jndkit.face.hide_task import HideTask
    from jndkit.images import save_image
    from jndkit.pipeline import protect_one

    coffee = quantize(torch.from_numpy(data.coffee().copy()).permute(2, 0, 1).float() / 255.0)
    assert detector.detect(coffee) == []
    r = hide_faces(coffee, judges=None, detector=detector)
    assert r.faces == [] and r.strength is None and not r.success and torch.equal(r.image, coffee)
    src = tmp_path / "coffee.png"
    save_image(coffee, src)
    before = src.read_bytes()
    rec = protect_one(HideTask(judges=("dlib_hog",)), src, tmp_path / "out" / "coffee.png")
    assert rec.status == "no-face" and rec.output is None and "no face" in (rec.error or "")
    assert not (tmp_path / "out" / "coffee.png").exists() and src.read_bytes() == before


def test_jnd_bound_holds_on_the_saved_file(tmp_path: Path, obama: torch.Tensor, detector: Any) -> None:
    """The saved PNG of a hidden attempt changes each value by at most floor(s * NAMM(photo) * 255) / 255
    (the whole photo's map), changes only the attacked crop, and does change it."""
    import torch.nn.functional as F

    from jndkit.face.hide import hide_faces, jnd_bound
    from jndkit.images import save_image
    from jndkit.perception import jnd_map

    x = quantize(F.interpolate(obama[None], scale_factor=0.5, mode="area")[0])
    r = hide_faces(x, strengths=(0.75,), steps=6, rounds=1, suite="x0.75+jpeg85", judges=None, detector=detector)
    assert len(r.faces) == 1 and r.strength == 0.75 and r.crop is not None
    path = tmp_path / "hidden.png"
    save_image(r.image, path)
    saved = load_image(path).rgb
    d = (saved - x).abs()
    bound = torch.floor(jnd_map(x[None], "namm")[0] * 0.75 * 255.0 + 1e-6) / 255.0
    torch.testing.assert_close(jnd_bound(x, 0.75), bound)
    assert bool((d <= bound + 1e-6).all()), float((d - bound).max())
    assert float(d.max()) >= 2 / 255  # it moved
    x1, y1, x2, y2 = r.crop
    assert x1 % 64 == 0 and y1 % 64 == 0
    outside = d.clone()
    outside[:, y1:y2, x1:x2] = 0
    assert float(outside.max()) == 0.0
    # the verdict lists the saved file and the one upload transform, with MTCNN's probability when found
    assert [c["transform"] for c in r.mtcnn[0]["checks"]] == ["saved", "x0.75+jpeg85"]
    assert all((c["prob"] is None) != c["found"] for c in r.mtcnn[0]["checks"])


@pytest.mark.slow
def test_a_hidden_result_is_rejudged_from_the_saved_file(tmp_path: Path, photo_paths: dict[str, Path],
                                                         detector: Any, dlib_mod: Any) -> None:
    """Outside the JND budget (4 x NAMM; inside it MTCNN is not hidden, docs/face-hide.md) the task hides
    obama's face from MTCNN: the written file, read by a fresh stock facenet-pytorch MTCNN, has no face
    over the clean box, nor after x0.75 + JPEG 85; the record holds the held-out detectors' verdicts."""
    from facenet_pytorch import MTCNN
    from PIL import Image

    from jndkit.face.hide_task import HideTask
    from jndkit.pipeline import protect_one
    from jndkit.transforms import parse_transform

    stock = MTCNN(keep_all=True, device="cpu").eval()
    task = HideTask(strengths=(4.0,), rounds=2, suite="x0.75+jpeg85", judges=("dlib_hog",), require_held_out=False)
    rec = protect_one(task, photo_paths["obama"], tmp_path / "out" / "obama.png")
    assert rec.status == "protected", rec.to_json()
    saved = Path(rec.output)
    boxes, probs = stock.detect(_u8(photo_paths["obama"]))
    clean_box = boxes[int(np.argmax(probs))]
    for img in (_u8(saved), (parse_transform("x0.75+jpeg85").apply(load_image(saved).rgb) * 255).round()
                .byte().permute(1, 2, 0).numpy()):
        b, _ = stock.detect(Image.fromarray(img))
        scale = img.shape[1] / 910
        assert b is None or not any(_over(tuple(clean_box * scale), bb) for bb in b)
    (face,) = rec.faces
    assert face["hidden"] and face["mtcnn"]["hidden"]
    assert face["held_out"]["dlib_hog"]["clean_found"] is True
    assert [c["transform"] for c in face["held_out"]["dlib_hog"]["checks"]] == ["saved", "x0.75+jpeg85"]
    assert face["psnr"] is not None and face["psnr"] < 30.0  # 4 x NAMM is visible: said, not hidden


def test_protect_goal_hide_routes_to_the_jnd_bounded_task(tmp_path: Path, photo_paths: dict[str, Path],
                                                          dlib_mod: Any) -> None:
    """``protect --task face --goal hide`` builds :class:`HideTask` (the ladder, or ``--strength``);
    ``--research`` keeps dlib mode's least-change hide."""
    from jndkit.cli.protect import _face_task
    from jndkit.face.hide import HIDE_STRENGTHS
    from jndkit.face.hide_task import HideTask
    from jndkit.face.task import FaceTask

    def task(research: bool, strength: str | None) -> Any:
        return _face_task([photo_paths["obama"]], tmp_path / "o", "hide", None, None, None, None, 0, "png", 95, "none",
                          None, research, None, None, strength)

    t = task(False, None)
    assert isinstance(t, HideTask) and t.strengths == HIDE_STRENGTHS == (0.5, 0.75, 1.0)
    assert t.require_held_out and t.config_json()["judges"] == ["dlib_hog", "dlib_cnn"]
    assert task(False, "4").strengths == (4.0,) and task(False, "subtle").strengths == (0.75,)
    assert isinstance(task(True, None), FaceTask)
