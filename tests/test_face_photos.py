"""Face victim on real photos: the ``face_recognition`` 1.3.0 sdist's test photos.

The photos are fetched once into ``.cache/face_photos`` by ``scripts/fetch_face_test_photos.py``
(``pip download`` of the sdist from PyPI); the tests skip when that fails (no network).
Cross-checks against dlib need ``dlib-bin`` (``pip install --no-deps dlib-bin==20.0.1.post1``)
and skip without it. Reference distances (SPECS §5, dlib-bin + face_recognition): obama-obama2
0.346, obama-obama3 0.332, obama2-obama3 0.428, obama-biden 0.840.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from jndkit.errors import InputError, WeightsNotFoundError
from jndkit.images import load_image
from jndkit.face import (
    DlibFaceNet,
    Face,
    FaceDetector,
    FaceRecogniserVictim,
    build_gallery,
    embed_faces,
    extract_chips,
    face_chip_details,
    find_dlib_face_model,
    load_dlib_face_net,
    verify_face_photo,
)

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("obama", "obama2", "obama3", "biden")
SPEC_DISTANCES = {("obama", "obama2"): 0.346, ("obama", "obama3"): 0.332, ("obama2", "obama3"): 0.428, ("obama", "biden"): 0.840}


# `photo_paths` (the face_recognition 1.3.0 sdist photos, fetched once into .cache) is in conftest.py


@pytest.fixture(scope="module")
def photos(photo_paths: dict[str, Path]) -> dict[str, torch.Tensor]:
    return {n: load_image(p).rgb for n, p in photo_paths.items()}


@pytest.fixture(scope="module")
def net() -> DlibFaceNet:
    try:
        return load_dlib_face_net()
    except WeightsNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    pytest.importorskip("facenet_pytorch")
    return FaceDetector()


@pytest.fixture(scope="module")
def detections(detector: FaceDetector, photos: dict[str, torch.Tensor]) -> dict[str, list[Face]]:
    """Stock MTCNN (min face 20, thresholds 0.6/0.7/0.7) on the full-resolution photos."""
    return {n: detector.detect(x) for n, x in photos.items()}


@pytest.fixture(scope="module")
def dlib_ref(photos: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """dlib's own pipeline (as face_recognition.face_encodings): HOG detector (upsample 1),
    5-point shape predictor, chip (150, padding 0.25), descriptor."""
    dlib = pytest.importorskip("dlib")
    models = find_dlib_face_model().parent
    hog = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    out = {}
    for n, x in photos.items():
        img = np.ascontiguousarray(torch.round(x * 255).to(torch.uint8).permute(1, 2, 0).numpy())
        dets = hog(img, 1)
        assert len(dets) == 1
        shape = sp(img, dets[0])
        out[n] = {
            "landmarks": np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64),
            "chip": np.asarray(dlib.get_face_chip(img, shape, 150, 0.25)),
            "descriptor": np.array(rec.compute_face_descriptor(img, shape)),
            "details": dlib.get_face_chip_details(shape, 150, 0.25),
        }
    return out


def _chip_tensor(chip: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(chip).permute(2, 0, 1)[None].float() / 255.0


# ---------------------------------------------------------------------------------------- dlib


def test_descriptors_of_dlib_chips_match_dlib(net: DlibFaceNet, dlib_ref: dict[str, dict[str, Any]]) -> None:
    for n, ref in dlib_ref.items():
        with torch.no_grad():
            d = net(_chip_tensor(ref["chip"]))[0].double().numpy()
        assert np.abs(d - ref["descriptor"]).max() < 1e-4, n


def test_reference_distances(dlib_ref: dict[str, dict[str, Any]]) -> None:
    for (a, b), want in SPEC_DISTANCES.items():
        got = np.linalg.norm(dlib_ref[a]["descriptor"] - dlib_ref[b]["descriptor"])
        assert got == pytest.approx(want, abs=1e-3), (a, b)


def test_chip_geometry_matches_dlib(dlib_ref: dict[str, dict[str, Any]]) -> None:
    for n, ref in dlib_ref.items():
        ours = face_chip_details(ref["landmarks"], "dlib5")
        r = ref["details"].rect
        np.testing.assert_allclose(ours.rect, (r.left(), r.top(), r.right(), r.bottom()), atol=1e-6, err_msg=n)
        assert ours.angle == pytest.approx(ref["details"].angle, abs=1e-9)


def test_extract_chips_reproduces_dlib_chip(
    net: DlibFaceNet, photos: dict[str, torch.Tensor], dlib_ref: dict[str, dict[str, Any]]
) -> None:
    """Given dlib's landmarks, our chip is dlib's chip: with 8-bit truncation emulated, pixels differ
    by at most one level (float rounding at integer boundaries) and descriptors by < 1e-3; smooth,
    by < 1 level on average and descriptors by < 0.01."""
    for n, ref in dlib_ref.items():
        lm = torch.from_numpy(ref["landmarks"])[None]
        dlib_chip = torch.from_numpy(ref["chip"]).permute(2, 0, 1).double()
        with torch.no_grad():
            exact = extract_chips(photos[n][None], lm, kind="dlib5", dlib_rounding=True)
            smooth = extract_chips(photos[n][None], lm, kind="dlib5")
            diff = (exact[0].double() * 255 - dlib_chip).abs()
            assert diff.max() <= 1.0 + 1e-3 and diff.mean() < 0.01, n
            assert (smooth[0].double() * 255 - dlib_chip).abs().mean() < 0.5, n
            d_exact = net(exact)[0].double().numpy()
            d_smooth = net(smooth)[0].double().numpy()
        assert np.linalg.norm(d_exact - ref["descriptor"]) < 1e-3, n
        assert np.linalg.norm(d_smooth - ref["descriptor"]) < 0.01, n


def test_mtcnn_chips_approximate_dlib_pipeline(
    net: DlibFaceNet, photos: dict[str, torch.Tensor], detections: dict[str, list[Face]], dlib_ref: dict[str, dict[str, Any]]
) -> None:
    """MTCNN landmarks give a chip close to dlib's: measured 0.065-0.123 on these photos, and
    0.105-0.180 without the chip scale correction (``MTCNN_CHIP_SCALE``)."""
    import jndkit.face.align as align

    def distances() -> list[float]:
        return [float(np.linalg.norm(embed_faces(photos[n], detections[n][:1], net)[0].double().numpy() - ref["descriptor"]))
                for n, ref in dlib_ref.items()]

    corrected = distances()
    scale = align.MTCNN_CHIP_SCALE
    try:
        align.MTCNN_CHIP_SCALE = 1.0
        plain = distances()
    finally:
        align.MTCNN_CHIP_SCALE = scale
    assert max(corrected) < 0.14, corrected
    assert sum(corrected) < sum(plain) - 0.05, (corrected, plain)


# ---------------------------------------------------------------------------------------- MTCNN


def test_mtcnn_finds_one_face_per_photo(detections: dict[str, list[Face]], photos: dict[str, torch.Tensor]) -> None:
    """Exactly one face with probability >= 0.9. (Stock MTCNN also reports a background patch of
    obama.jpg at p = 0.815, which ``verify_face_photo``'s ``min_prob=0.9`` leaves out.)"""
    for n, faces in detections.items():
        confident = [f for f in faces if f.prob >= 0.9]
        assert len(confident) == 1, (n, [(f.box, f.prob) for f in faces])
        face = confident[0]
        x1, y1, x2, y2 = face.box
        h, w = photos[n].shape[-2:]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and face.prob > 0.99
        assert 150 < x2 - x1 < 400  # the faces are about 250-300 px wide
        lm = face.landmarks
        assert lm.shape == (5, 2)
        assert lm[0, 0] < lm[2, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # eyes, nose, mouth in order
        assert bool(((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)).all())


def test_mtcnn_agrees_with_dlib_detection(detections: dict[str, list[Face]], dlib_ref: dict[str, dict[str, Any]]) -> None:
    for n, ref in dlib_ref.items():
        x1, y1, x2, y2 = detections[n][0].box
        eyes = ref["landmarks"][:4]
        assert ((eyes[:, 0] > x1) & (eyes[:, 0] < x2) & (eyes[:, 1] > y1) & (eyes[:, 1] < y2)).all(), n


def test_face_probabilities_are_differentiable_and_above_thresholds(
    detector: FaceDetector, photos: dict[str, torch.Tensor], detections: dict[str, list[Face]]
) -> None:
    x = photos["obama2"][None].clone().requires_grad_(True)
    faces = detections["obama2"]
    probs = detector.face_probabilities(x, faces)
    assert probs.pnet.shape == probs.rnet.shape == probs.onet.shape == (1,)
    assert (probs.margins() > 0).all()  # a detected face passes every stage
    (probs.pnet + probs.rnet + probs.onet).sum().backward()
    assert x.grad is not None
    g = x.grad[0].abs().sum(0)
    x1, y1, x2, y2 = (int(v) for v in faces[0].box)
    assert g[y1:y2, x1:x2].sum() > 0


def test_hiding_lowers_onet_probability(
    detector: FaceDetector, photos: dict[str, torch.Tensor], detections: dict[str, list[Face]]
) -> None:
    """Signed-gradient steps on the differentiable ONet probability push it down at the fixed box."""
    x0 = photos["biden"][None]
    faces = detections["biden"][:1]
    x = x0.clone()
    start = float(detector.face_probabilities(x, faces, stages=("onet",)).onet[0])
    for _ in range(5):
        x.requires_grad_(True)
        p = detector.face_probabilities(x, faces, stages=("onet",)).onet.sum()
        (g,) = torch.autograd.grad(p, x)
        x = (x.detach() - 4 / 255 * g.sign()).clamp(0, 1)
    end = float(detector.face_probabilities(x, faces, stages=("onet",)).onet[0])
    assert start > 0.7 and end < start - 0.1, (start, end)


# ---------------------------------------------------------------------------------------- victim


def test_mtcnn_pipeline_recognises_the_same_person(
    net: DlibFaceNet, photos: dict[str, torch.Tensor], detections: dict[str, list[Face]]
) -> None:
    emb = {n: embed_faces(photos[n], detections[n][:1], net)[0] for n in NAMES}
    for (a, b), ref in SPEC_DISTANCES.items():
        d = float((emb[a] - emb[b]).norm())
        assert (d < 0.6) == (ref < 0.6), (a, b, d)
        assert d == pytest.approx(ref, abs=0.08), (a, b)


def test_victim_matches_embedding_and_gradient_stays_near_the_face(
    net: DlibFaceNet, photos: dict[str, torch.Tensor], detections: dict[str, list[Face]]
) -> None:
    x = photos["obama"][None].clone().requires_grad_(True)
    face = detections["obama"][0]
    victim = FaceRecogniserVictim(net, face.landmarks[None])
    emb = victim(x)
    assert emb.shape == (1, 128)
    ref = embed_faces(photos["obama"], [face], net, dlib_rounding=False)
    torch.testing.assert_close(emb.detach(), ref, atol=1e-5, rtol=0)
    torch.manual_seed(0)
    (emb @ torch.randn(128)).sum().backward()
    assert x.grad is not None
    g = x.grad[0].abs().sum(0)
    x1, y1, x2, y2 = (int(v) for v in face.box)
    inner = g[y1 + 20 : y2 - 20, x1 + 20 : x2 - 20]
    assert (inner > 0).float().mean() > 0.9  # nearly every face pixel moves the descriptor
    rect = victim.details[0].rect  # chip area (rotation about 0.3 degrees here)
    far = torch.ones_like(g, dtype=torch.bool)
    far[max(0, int(rect[1]) - 10) : int(rect[3]) + 10, max(0, int(rect[0]) - 10) : int(rect[2]) + 10] = False
    assert far.sum() > 0.5 * g.numel() and g[far].abs().max() == 0


def test_victim_batch_and_subset(net: DlibFaceNet, photos: dict[str, torch.Tensor], detections: dict[str, list[Face]]) -> None:
    x = photos["obama2"][None]
    lm = detections["obama2"][0].landmarks
    victim = FaceRecogniserVictim(net, torch.stack([lm, lm + 3.0]))
    batch = torch.cat([x, x])
    with torch.no_grad():
        both = victim(batch)
        second = victim[torch.tensor([False, True])](x)
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=0)
    assert float((both[0] - both[1]).norm()) > 1e-3
    with pytest.raises(InputError, match="victim holds landmarks for 2 photos"):
        victim(x)


def test_verify_and_gallery(
    tmp_path: Path, photo_paths: dict[str, Path], photos: dict[str, torch.Tensor], detector: FaceDetector, net: DlibFaceNet
) -> None:
    """Gallery from half-size copies of obama.jpg and biden.jpg; obama2.jpg is re-read from disk."""
    from PIL import Image

    gal_dir = tmp_path / "gallery"
    (gal_dir / "biden").mkdir(parents=True)
    with Image.open(photo_paths["obama"]) as im:
        im.resize((im.width // 2, im.height // 2), Image.BILINEAR).save(gal_dir / "obama.png")
    with Image.open(photo_paths["biden"]) as im:
        im.resize((im.width // 2, im.height // 2), Image.BILINEAR).save(gal_dir / "biden" / "b1.png")
    gallery = build_gallery(gal_dir, detector=detector, net=net)
    assert sorted(gallery) == ["biden", "obama"] and gallery["obama"].shape == (1, 128)

    res = verify_face_photo(photo_paths["obama2"], gallery, detector=detector, net=net)
    assert len(res) == 1 and res[0]["detected"] and res[0]["identity"] == "obama" and res[0]["match"]
    assert res[0]["distance"] < 0.6 and res[0]["embedding"].shape == (128,)

    blank = torch.full((3, 200, 200), 0.5)
    none = verify_face_photo(blank, gallery, detector=detector, net=net)
    assert none == [{"detected": False, "box": None, "prob": None, "embedding": None, "identity": None, "distance": None, "match": False}]
    with pytest.raises(InputError, match="gallery entry 'x'"):
        verify_face_photo(blank, {"x": torch.zeros(128)}, detector=detector, net=net)
