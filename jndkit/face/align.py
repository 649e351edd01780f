"""Face alignment: dlib's face chips, reproduced as a differentiable PyTorch sampler.

dlib aligns a face for its recogniser with ``get_face_chip_details(shape, size=150,
padding=0.25)`` and ``extract_image_chip`` (``dlib/image_transforms/interpolation.h``):

1. a least-squares similarity transform (Umeyama 1991, eqs. 34-43) maps 5 template points,
   placed in the chip at ``((padding + p) / (1 + 2 padding)) * size``, onto the 5 landmarks;
2. it is stored as a rotated rectangle: centre ``T(size/2, size/2)``, side ``size*scale - 1``
   (dlib's ``drectangle`` counts the end pixel), angle of the rotation;
3. chip pixel ``(0,0)`` maps to the rectangle's top-left corner, ``(size-1, 0)`` to its top-right
   and ``(0, size-1)`` to its bottom-left (so the effective scale is ``(size*scale - 1)/(size - 1)``);
4. when the rectangle is more than twice the chip in area, the crop is first reduced with dlib's
   ``pyramid_down<2>`` (separable ``[1 4 6 4 1]/16`` filter, every second pixel, on a crop
   around the face; point map ``p/2 - (1.25, 0.75)``) until one more level would make it smaller
   than the chip;
5. bilinear interpolation with pixel centres at integer coordinates; a sample whose 2x2
   neighbourhood leaves the image is black.

:func:`extract_chips` does the same with ``conv2d`` and ``grid_sample(align_corners=True)``,
so gradients reach the photo's own pixels. dlib stores the pyramid levels and the chip as
``uint8`` by truncation; ``dlib_rounding=True`` reproduces that with a straight-through floor
(forward equal to dlib, gradient of the smooth version). The default is smooth and subtracts the
truncation's mean error, half a level, at each stage instead. On the test photos, given dlib's
landmarks, descriptors of the truncated chips are within 5e-4 of dlib's (max. abs. component
error 1e-4), of the smooth chips within 0.007.

Landmarks: ``"dlib5"`` is the order of dlib's 5-point shape predictor (image-right eye outer and
inner corner, image-left eye outer and inner corner, base of the nose); with these the chip is
dlib's own. ``"mtcnn"`` is the order of MTCNN (image-left eye centre, image-right eye centre,
nose tip, left and right mouth corner). These points differ from dlib's, so the chip is fitted
to three derived points (weights 2, 2, 1) against dlib's template:

* the eye centres (weight 2 each, as dlib's fit has two corners per eye) onto the means of dlib's
  outer and inner eye-corner template points;
* a nose base ``nose + ALPHA * (mouth centre - nose)`` onto dlib's nose-base template point, with
  ``ALPHA = 0.424`` taken from dlib's 68-point mean face shape (the same normalised frame):
  nose tip (point 30) at y 0.5156, mouth-corner centre (48, 54) at y 0.7802, dlib's nose base at
  y 0.6278.

These chips came out about 4.7 % larger than dlib's own, so the derived points are drawn together
by :data:`MTCNN_CHIP_SCALE` first. Measured on 12 faces (the four ``face_recognition`` test photos,
matplotlib's ``grace_hopper.jpg`` and ``skimage.data.astronaut``, each also mirrored), descriptors
of these chips lie 0.050-0.136 (mean 0.111, Euclidean) from dlib's own pipeline (HOG detector,
5-point predictor), against 0.082-0.180 (mean 0.129) without the factor, and 0.33-0.43 between
different photos of the same person.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_image_batch
from ..errors import InputError

__all__ = [
    "ALPHA",
    "DLIB5_TEMPLATE",
    "MTCNN_CHIP_SCALE",
    "MTCNN_TEMPLATE",
    "ChipDetails",
    "LandmarkKind",
    "extract_chips",
    "face_chip_details",
    "similarity_transform",
]

LandmarkKind = Literal["mtcnn", "dlib5"]

#: dlib's 5-point template (normalised face frame), in the shape predictor's landmark order.
DLIB5_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

# dlib's mean 68-point face shape (points 17..67) from get_face_chip_details; only the points
# needed for MTCNN's landmarks are kept: eyes 36..47, nose tip 30, mouth corners 48 and 54.
_MEAN68 = {
    30: (0.490127, 0.515625),
    36: (0.121737, 0.216423), 37: (0.187122, 0.178758), 38: (0.265825, 0.179852),
    39: (0.334606, 0.231733), 40: (0.260918, 0.245099), 41: (0.182743, 0.244077),
    42: (0.645647, 0.231733), 43: (0.714428, 0.179852), 44: (0.793132, 0.178758),
    45: (0.858516, 0.216423), 46: (0.79751, 0.244077), 47: (0.719335, 0.245099),
    48: (0.254149, 0.780233), 54: (0.726104, 0.780233),
}  # fmt: skip

#: MTCNN's landmarks (image-left eye, image-right eye, nose tip, mouth left, mouth right) as placed
#: in dlib's normalised face frame by dlib's 68-point mean face shape.
MTCNN_TEMPLATE = np.array(
    [
        np.mean([_MEAN68[i] for i in range(36, 42)], axis=0),
        np.mean([_MEAN68[i] for i in range(42, 48)], axis=0),
        _MEAN68[30],
        _MEAN68[48],
        _MEAN68[54],
    ]
)

#: Position of dlib's nose-base point on the segment from MTCNN's nose tip to the mouth-corner centre.
ALPHA = float((DLIB5_TEMPLATE[4, 1] - _MEAN68[30][1]) / ((_MEAN68[48][1] + _MEAN68[54][1]) / 2 - _MEAN68[30][1]))

# Derived points for MTCNN landmarks: eye centres and nose base, in dlib's frame, and their weights.
_MTCNN_FIT_TEMPLATE = np.array([DLIB5_TEMPLATE[2:4].mean(0), DLIB5_TEMPLATE[0:2].mean(0), DLIB5_TEMPLATE[4]])
_MTCNN_FIT_WEIGHTS = np.array([2.0, 2.0, 1.0])

#: The derived points are drawn together by this factor about the mean of MTCNN's five points
#: before the fit.
#: Fitted to MTCNN's points as the mean face shape places them, the chip came out larger than the
#: one dlib's own pipeline (HOG detector, 5-point predictor) cuts from the same photo: by a factor
#: 1.023-1.087 (mean 1.047) over 12 faces, the four ``face_recognition`` test photos,
#: matplotlib's ``grace_hopper.jpg`` and ``skimage.data.astronaut``, each also mirrored (1.032 on
#: the last two alone); the centres agreed within 1.8 % of the side and the angles within 3.7
#: degrees, with no common sign. With this factor (1/1.047) the descriptors of the 12 faces lie
#: 0.050-0.136 (mean 0.111) from dlib's pipeline, against 0.082-0.180 (mean 0.129) without.
MTCNN_CHIP_SCALE = 0.955


def _fit_points(pts: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(landmarks used, their template points in dlib's frame, weights) for ``kind``."""
    if kind == "dlib5":
        return pts, DLIB5_TEMPLATE, None
    mouth = (pts[3] + pts[4]) / 2.0
    nose_base = pts[2] + ALPHA * (mouth - pts[2])
    derived = np.stack([pts[0], pts[1], nose_base])
    centre = pts.mean(axis=0)  # of the five points (eyes, nose tip, mouth corners)
    return centre + (derived - centre) * MTCNN_CHIP_SCALE, _MTCNN_FIT_TEMPLATE, _MTCNN_FIT_WEIGHTS


@dataclass(frozen=True)
class ChipDetails:
    """dlib's ``chip_details``: where a chip lies in the image.

    Attributes:
        rect: ``(left, top, right, bottom)`` of the unrotated rectangle in image pixels
            (dlib ``drectangle``: width is ``right - left + 1``).
        angle: rotation in radians about the rectangle's centre.
        rows, cols: chip size in pixels.
    """

    rect: tuple[float, float, float, float]
    angle: float
    rows: int
    cols: int


def similarity_transform(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity transform ``dst ≈ c R src + t`` (Umeyama 1991, eqs. 34-43), as
    dlib's ``find_similarity_transform``; with ``weights``, the weighted least-squares version.

    Args:
        src, dst: point sets ``[N,2]`` (N >= 2).
        weights: ``[N]`` non-negative point weights (default: all equal).

    Returns:
        ``(M, t)`` with ``M = c R`` of shape ``[2,2]`` and ``t`` of shape ``[2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise InputError(f"point sets must both have shape [N>=2,2], got {list(src.shape)} and {list(dst.shape)}")
    if weights is None:
        w = np.full(len(src), 1.0 / len(src))
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(src),) or (w < 0).any() or w.sum() <= 0:
            raise InputError(f"weights must be {len(src)} non-negative numbers with a positive sum")
        w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    var_s = w @ ((src - mu_s) ** 2).sum(1)
    cov = ((dst - mu_d) * w[:, None]).T @ (src - mu_s)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    det_cov = np.linalg.det(cov)
    if det_cov < 0 or (det_cov == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        s[1, 1] = -1.0  # d is sorted descending, so the smaller singular value is the last
    r = u @ s @ vt
    c = float(np.trace(np.diag(d) @ s) / var_s) if var_s != 0 else 1.0
    return c * r, mu_d - c * r @ mu_s


def face_chip_details(
    landmarks: np.ndarray | torch.Tensor,
    kind: LandmarkKind = "mtcnn",
    size: int = 150,
    padding: float = 0.25,
) -> ChipDetails:
    """dlib's ``get_face_chip_details`` for one face.

    Args:
        landmarks: ``[5,2]`` pixel coordinates ``(x, y)`` in the order given by ``kind``.
        kind: ``"mtcnn"`` (facenet-pytorch MTCNN points) or ``"dlib5"`` (dlib's 5-point predictor).
        size: chip side in pixels (150 for the recogniser).
        padding: margin around the template, as a fraction of the face (0.25 for the recogniser).
    """
    if kind not in ("mtcnn", "dlib5"):
        raise InputError(f"landmark kind must be 'mtcnn' or 'dlib5', got {kind!r}")
    if size < 2 or padding < 0:
        raise InputError(f"size must be >= 2 and padding >= 0, got size={size}, padding={padding}")
    pts = landmarks.detach().cpu().double().numpy() if isinstance(landmarks, torch.Tensor) else np.asarray(landmarks, np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise InputError(f"landmarks must be a finite [5,2] array of (x, y), got shape {list(pts.shape)}")
    img_pts, template, weights = _fit_points(pts, kind)
    chip_pts = (padding + template) / (2 * padding + 1) * size
    m, t = similarity_transform(chip_pts, img_pts, weights)
    angle = math.atan2(m[1, 0], m[0, 0])
    scale = math.hypot(m[0, 0], m[1, 0])
    if not scale > 0:
        raise InputError("landmarks are degenerate (all points coincide)")
    cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
    half = (size * scale - 1) / 2.0
    return ChipDetails((cx - half, cy - half, cx + half, cy + half), angle, size, size)


# ----------------------------------------------------------------------------------------
# dlib geometry helpers (drectangle semantics: width = right - left + 1)

_Rect = tuple[float, float, float, float]


def _area(r: _Rect) -> float:
    left, top, right, bottom = r
    if top > bottom or left > right:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _point_down(x: float, y: float) -> tuple[float, float]:
    return x / 2.0 - 1.25, y / 2.0 - 0.75


def _rect_down(r: _Rect) -> _Rect:
    left, top = _point_down(r[0], r[1])
    right, bottom = _point_down(r[2], r[3])
    return (left, top, right, bottom)


def _rotated_corners(r: _Rect, angle: float) -> np.ndarray:
    """Top-left, top-right, bottom-left, bottom-right corners of ``r`` rotated about its centre."""
    left, top, right, bottom = r
    centre = np.array([(left + right) / 2.0, (top + bottom) / 2.0])
    ca, sa = math.cos(angle), math.sin(angle)
    rot = np.array([[ca, -sa], [sa, ca]])
    corners = np.array([[left, top], [right, top], [left, bottom], [right, bottom]])
    out: np.ndarray = (corners - centre) @ rot.T + centre
    return out


def _lround(v: float) -> int:
    return math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)


def _pyramid_down(x: torch.Tensor, dlib_rounding: bool) -> torch.Tensor:
    """dlib ``pyramid_down<2>`` on ``[1,3,H,W]`` (0-255 scale): separable [1 4 6 4 1] filter,
    sampled at rows and columns 2, 4, ...; output ``[1,3,(H-3)//2,(W-3)//2]``."""
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (taps[:, None] * taps[None, :] / 256.0).expand(3, 1, 5, 5)
    y = F.conv2d(x, kernel, stride=2, groups=3)
    return _floor_ste(y) if dlib_rounding else y - 0.5


def _floor_ste(v: torch.Tensor) -> torch.Tensor:
    """``floor`` in the forward pass (dlib's truncation to uint8), identity in the backward pass.
    The small offset absorbs float32 error on values that are integers in dlib's arithmetic."""
    return v + (torch.floor(v + 1e-3) - v).detach()


def _sample(
    img: torch.Tensor, rect: _Rect, angle: float, rows: int, cols: int, dlib_rounding: bool
) -> torch.Tensor:
    """Bilinear chip ``[1,3,rows,cols]`` from ``img`` ``[1,3,H,W]`` (0-255): chip corners map to
    the rotated rectangle's corners; samples whose 2x2 neighbourhood leaves ``img`` are 0."""
    tl, tr, bl, _ = _rotated_corners(rect, angle)
    ex = (tr - tl) / max(cols - 1, 1)
    ey = (bl - tl) / max(rows - 1, 1)
    h, w = img.shape[-2:]
    dev, dt = img.device, img.dtype
    c = torch.arange(cols, dtype=torch.float64)
    r = torch.arange(rows, dtype=torch.float64)
    xs = tl[0] + c[None, :] * ex[0] + r[:, None] * ey[0]
    ys = tl[1] + c[None, :] * ex[1] + r[:, None] * ey[1]
    valid = (xs >= 0) & (ys >= 0) & (torch.floor(xs) + 1 < w) & (torch.floor(ys) + 1 < h)
    gx = 2.0 * xs / max(w - 1, 1) - 1.0
    gy = 2.0 * ys / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1)[None].to(device=dev, dtype=dt)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    out = _floor_ste(out) if dlib_rounding else out - 0.5
    masked: torch.Tensor = out * valid.to(device=dev, dtype=dt)
    return masked


def _extract_one(image: torch.Tensor, d: ChipDetails, dlib_rounding: bool) -> torch.Tensor:
    """One chip ``[3,rows,cols]`` in [0,1] from ``image`` ``[3,H,W]`` in [0,1], as dlib's
    ``extract_image_chips`` does for a single chip (image pyramid included)."""
    h, w = image.shape[-2:]
    x = image[None] * 255.0
    if dlib_rounding:
        x = x + (torch.round(x) - x).detach()
    size = d.rows * d.cols
    rect = _rect_down(d.rect)
    depth, grow = 0, 2.0
    while _area(rect) > size:
        rect = _rect_down(rect)
        depth += 1
        grow = grow * 2 + 2
    if depth == 0:
        chip = _sample(x, d.rect, d.angle, d.rows, d.cols, dlib_rounding)
        return chip[0] / 255.0
    corners = _rotated_corners(d.rect, d.angle)
    bl_ = max(corners[:, 0].min() - grow, 0.0)
    bt_ = max(corners[:, 1].min() - grow, 0.0)
    br_ = min(corners[:, 0].max() + grow, w - 1.0)
    bb_ = min(corners[:, 1].max() + grow, h - 1.0)
    left, top, right, bottom = _lround(bl_), _lround(bt_), _lround(br_), _lround(bb_)
    if right - left < 8 or bottom - top < 8:
        raise InputError(f"face chip lies outside the image (crop {left},{top},{right},{bottom} of {w}x{h})")
    level_img = x[..., top : bottom + 1, left : right + 1]
    rect = (d.rect[0] - left, d.rect[1] - top, d.rect[2] - left, d.rect[3] - top)
    level = -1
    while _area(_rect_down(rect)) > size:
        rect = _rect_down(rect)
        level += 1
        if min(level_img.shape[-2:]) <= 8:
            raise InputError("face chip is too small for its image pyramid")
        level_img = _pyramid_down(level_img, dlib_rounding)
    chip = _sample(level_img, rect, d.angle, d.rows, d.cols, dlib_rounding)
    return chip[0] / 255.0


def extract_chips(
    image: torch.Tensor,
    landmarks: torch.Tensor | np.ndarray | list[ChipDetails],
    size: int = 150,
    *,
    kind: LandmarkKind = "mtcnn",
    padding: float = 0.25,
    dlib_rounding: bool = False,
) -> torch.Tensor:
    """Aligned face chips, differentiable with respect to ``image``.

    Args:
        image: photos ``[B,3,H,W]`` in [0,1] at full resolution.
        landmarks: ``[B,5,2]`` pixel coordinates ``(x, y)`` (detached; one face per photo), in the
            order given by ``kind``; or a list of ``B`` :class:`ChipDetails`.
        size: chip side (150 for :class:`~jndkit.face.dlib_net.DlibFaceNet`).
        kind: ``"mtcnn"`` or ``"dlib5"`` (see the module docstring).
        padding: dlib's chip padding (0.25 for the recogniser).
        dlib_rounding: truncate the pyramid levels and the chip to 8 bits as dlib does
            (straight-through, so gradients still flow); otherwise each stage subtracts half a
            level (the truncation's mean error).

    Returns:
        chips ``[B,3,size,size]`` in [0,1] (smooth values may lie half a level below 0; samples
        whose neighbourhood leaves the photo are exactly 0).

    Reference: dlib ``get_face_chip_details`` / ``extract_image_chips``; S. Umeyama,
    "Least-squares estimation of transformation parameters between two point patterns", TPAMI 1991.
    """
    check_image_batch(image.detach(), "image")
    n = image.shape[0]
    if isinstance(landmarks, list):
        details = landmarks
        if len(details) != n or not all(isinstance(d, ChipDetails) for d in details):
            raise InputError(f"expected {n} ChipDetails, got {len(details)} items")
    else:
        lm = landmarks.detach().cpu().double() if isinstance(landmarks, torch.Tensor) else torch.as_tensor(np.asarray(landmarks, np.float64))
        if lm.shape != (n, 5, 2):
            raise InputError(f"landmarks must have shape [{n},5,2], got {list(lm.shape)}")
        details = [face_chip_details(lm[i], kind, size, padding) for i in range(n)]
    return torch.stack([_extract_one(image[i], details[i], dlib_rounding) for i in range(n)])
