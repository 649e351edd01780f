"""Face alignment and detector plumbing on synthetic data (no photos, no dlib needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jndkit.errors import InputError
from jndkit.face.align import (
    ALPHA,
    DLIB5_TEMPLATE,
    MTCNN_CHIP_SCALE,
    MTCNN_TEMPLATE,
    ChipDetails,
    extract_chips,
    face_chip_details,
    similarity_transform,
)


def _template_landmarks(template: np.ndarray, scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    """Landmarks of a face whose normalised template is scaled, rotated and shifted."""
    ca, sa = math.cos(angle), math.sin(angle)
    rot = np.array([[ca, -sa], [sa, ca]])
    return (template * scale) @ rot.T + np.array(shift)


def test_similarity_transform_recovers_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, c, t = 0.3, 1.7, np.array([12.0, -4.0])
    r = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dst = src @ (c * r).T + t
    m, tt = similarity_transform(src, dst)
    np.testing.assert_allclose(m, c * r, atol=1e-10)
    np.testing.assert_allclose(tt, t, atol=1e-9)
    # weights: a point with weight 0 does not pull the fit
    dst_bad = dst.copy()
    dst_bad[4] += 50.0
    m_w, t_w = similarity_transform(src, dst_bad, np.array([1, 1, 1, 1, 0.0]))
    np.testing.assert_allclose(m_w, c * r, atol=1e-9)
    with pytest.raises(InputError, match="non-negative"):
        similarity_transform(src, dst, np.array([1, 1, 1, 1, -1.0]))
    with pytest.raises(InputError, match=r"\[N>=2,2\]"):
        similarity_transform(src[:1], dst[:1])


def test_chip_details_of_the_template_face() -> None:
    """Landmarks equal to the template scaled by s: the chip rectangle has side 150*s/150*1.5 - 1."""
    s = 200.0  # face frame of 200 px -> chip covers 1.5 * 200 = 300 px
    lm = _template_landmarks(DLIB5_TEMPLATE, s, 0.0, (50.0, 80.0))
    d = face_chip_details(lm, "dlib5")
    side = d.rect[2] - d.rect[0] + 1
    assert side == pytest.approx(1.5 * s, abs=1e-6)
    assert d.angle == pytest.approx(0.0, abs=1e-12)
    # centre of the chip = centre of the padded frame
    assert (d.rect[0] + d.rect[2]) / 2 == pytest.approx(50 + s * 0.5, abs=1e-6)
    rotated = face_chip_details(_template_landmarks(DLIB5_TEMPLATE, s, 0.2, (50.0, 80.0)), "dlib5")
    assert rotated.angle == pytest.approx(0.2, abs=1e-9)


def test_mtcnn_mapping_is_consistent_with_dlib_template() -> None:
    """On the mean face (MTCNN points placed by dlib's 68-point mean shape), the MTCNN fit lands
    within a few per cent of the dlib 5-point chip."""
    assert ALPHA == pytest.approx(0.4239, abs=1e-4)
    lm_mtcnn = _template_landmarks(MTCNN_TEMPLATE, 180.0, 0.1, (30.0, 40.0))
    lm_dlib = _template_landmarks(DLIB5_TEMPLATE, 180.0, 0.1, (30.0, 40.0))
    b = face_chip_details(lm_dlib, "dlib5")
    # the derived points are drawn together by MTCNN_CHIP_SCALE about the five points' mean: undone,
    # the fit lands on dlib's chip
    c = np.asarray(lm_mtcnn).mean(axis=0)
    a = face_chip_details(c + (np.asarray(lm_mtcnn) - c) / MTCNN_CHIP_SCALE, "mtcnn")
    assert abs(a.angle - b.angle) < 0.02
    assert np.abs(np.array(a.rect) - np.array(b.rect)).max() < 0.02 * (b.rect[2] - b.rect[0])
    # as is, the chip is MTCNN_CHIP_SCALE times dlib's, about the same place
    s = face_chip_details(lm_mtcnn, "mtcnn")
    assert abs(s.angle - b.angle) < 0.02
    side_s, side_b = s.rect[2] - s.rect[0] + 1, b.rect[2] - b.rect[0] + 1
    assert side_s / side_b == pytest.approx(MTCNN_CHIP_SCALE, abs=0.01)
    centre = lambda r: np.array([(r[0] + r[2]) / 2, (r[1] + r[3]) / 2])  # noqa: E731
    assert np.abs(centre(s.rect) - centre(b.rect)).max() < 0.03 * side_b


def _ramp_image(h: int, w: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([x / (w - 1), y / (h - 1), (x + y) / (w + h - 2)])[None].float()


def test_unrotated_chip_samples_the_rectangle_corners() -> None:
    """Chip pixel (0,0) is the rectangle's top-left, (149,149) its bottom-right (dlib convention)."""
    img = _ramp_image(200, 300)
    d = ChipDetails((40.0, 30.0, 189.0, 179.0), 0.0, 150, 150)  # 150 px wide: one image pixel per chip pixel
    chip = extract_chips(img, [d])
    assert chip.shape == (1, 3, 150, 150)
    want = img[0, :, 30:180, 40:190]
    torch.testing.assert_close(chip[0], want - 0.5 / 255, atol=1e-5, rtol=0)  # smooth mode: -0.5 level
    exact = extract_chips(img, [d], dlib_rounding=True)
    torch.testing.assert_close(exact[0], torch.floor(torch.round(want * 255) + 1e-3) / 255, atol=1e-6, rtol=0)


def test_large_face_uses_pyramid_and_gradients_reach_only_the_face() -> None:
    img = _ramp_image(700, 700).requires_grad_(True)
    d = ChipDetails((100.0, 120.0, 499.0, 519.0), 0.05, 150, 150)  # 400 px -> one pyramid level
    chip = extract_chips(img, [d])
    assert chip.shape == (1, 3, 150, 150)
    # the smooth ramp survives the [1 4 6 4 1] pyramid: the chip's centre samples the rectangle's centre
    centre = chip[0, 0, 74:76, 74:76].mean().item() * 255
    assert centre == pytest.approx((299.5 / 699) * 255 - 1.0, abs=1.5)
    chip.sum().backward()
    assert img.grad is not None
    g = img.grad[0].abs().sum(0)
    assert g[200:400, 200:400].min() > 0
    assert g[:80].abs().max() == 0 and g[560:].abs().max() == 0 and g[:, 560:].abs().max() == 0


def test_samples_outside_the_image_are_black() -> None:
    img = torch.ones(1, 3, 100, 100)
    d = ChipDetails((-50.0, -50.0, 99.0, 99.0), 0.0, 150, 150)
    chip = extract_chips(img, [d])
    assert chip[0, :, :49, :].abs().max() == 0 and chip[0, :, :, :49].abs().max() == 0
    assert chip[0, :, 60:140, 60:140].min() > 0.99


def test_invalid_inputs() -> None:
    img = torch.rand(2, 3, 64, 64)
    with pytest.raises(InputError, match=r"\[2,5,2\]"):
        extract_chips(img, torch.zeros(1, 5, 2))
    with pytest.raises(InputError, match="'mtcnn' or 'dlib5'"):
        face_chip_details(np.zeros((5, 2)), "dlib68")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="degenerate"):
        face_chip_details(np.zeros((5, 2)), "dlib5")
    with pytest.raises(InputError, match=r"\[5,2\]"):
        face_chip_details(np.zeros((4, 2)), "dlib5")
    with pytest.raises(InputError, match=r"\[0,1\]"):
        extract_chips(img * 2, torch.zeros(2, 5, 2))


def test_detector_validates_arguments() -> None:
    pytest.importorskip("facenet_pytorch")
    from jndkit.face.detect import FaceDetector

    with pytest.raises(InputError, match="min_face_size"):
        FaceDetector(min_face_size=5)
    with pytest.raises(InputError, match="factor"):
        FaceDetector(factor=1.5)
    det = FaceDetector()
    with pytest.raises(InputError, match=r"\[3,H,W\]"):
        det.detect(torch.rand(1, 3, 64, 64))
    with pytest.raises(InputError, match="unknown MTCNN stages"):
        det.face_probabilities(torch.rand(1, 3, 64, 64), torch.zeros(1, 4), stages=("xnet",))
    # a flat grey image has no face, and ONet's probability at an arbitrary box is low
    assert det.detect(torch.full((3, 120, 160), 0.5)) == []
    p = det.face_probabilities(torch.full((1, 3, 120, 160), 0.5), torch.tensor([[20.0, 20.0, 100.0, 100.0]]))
    assert p.onet.shape == (1,) and float(p.onet[0]) < 0.7
