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
