r"""Pixel-domain human JND (just noticeable difference) maps on batched tensors.

Every model takes an RGB batch ``x`` of shape ``[B,3,H,W]`` in [0,1] and returns per-pixel,
per-channel thresholds ``[B,3,H,W]`` in [0,1] units (grey levels / 255): a change of a channel by
less than the threshold is taken as invisible to a person.

Models (formulas and worked values: SPECS.md section 1):

* :func:`chou_li` — Chou & Li (1995), luminance adaptation and contrast masking, max rule.
* :func:`namm` — Yang et al. (2005), nonlinear additivity model for masking (NAMM), on luma or
  per YCbCr channel.
* :func:`wu_pattern` — Wu et al. (2017), pattern complexity, per RGB channel.
* :func:`jnd_map` — dispatch by name (:data:`JND_MODELS`), including seed 004's colour variance.

The shared operators — :func:`background_luminance` (kernel B / 32), :func:`max_gradient`
(four directional kernels / 16), :func:`luminance_adaptation` (``f2``) and
:func:`contrast_masking` (``f1``) — work on grey levels 0-255, with zero padding 2 (PyTorch
``conv2d`` correlation), and are used by all models.

Chou and NAMM are differentiable in ``x`` (``max``/``min``/``abs`` give subgradients; Canny edge
weights are constants). Wu's luminance adaptation and pattern complexity are piecewise constant
(floor, round, counts), so only its contrast term carries a gradient.

Canny edges (NAMM edge protection and Wu's edge protection) come from
:func:`skimage.feature.canny` with ``sigma = sqrt(2)`` and ``mode='nearest'`` (MATLAB's
``edge(I,'canny',t)`` defaults) and thresholds relative to the image's maximum gradient magnitude
(as MATLAB normalises it): high = ``t * max``, low = ``0.4 * high``. They run on the CPU, per
image and channel, on detached values.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from scipy import ndimage as ndi
from skimage.feature import canny

from .._checks import check_image_batch
from ..errors import InputError
from .color import _safe_sqrt, colour_variance_bound

__all__ = [
    "JND_MODELS",
    "background_luminance",
    "chou_li",
    "contrast_masking",
    "jnd_map",
    "luma",
    "luminance_adaptation",
    "max_gradient",
    "namm",
    "rgb_box_from_ycbcr",
    "wu_pattern",
]

JND_MODELS: tuple[str, ...] = ("chou", "namm", "namm-colour", "wu", "colour-variance")
"""Names accepted by :func:`jnd_map`."""

# ---------------------------------------------------------------------------------------------
# Shared operators (SPECS.md section 1)

_BG_KERNEL = (
    (1, 1, 1, 1, 1),
    (1, 2, 2, 2, 1),
    (1, 2, 0, 2, 1),
    (1, 2, 2, 2, 1),
    (1, 1, 1, 1, 1),
)
_GRAD_KERNELS = (
    ((0, 0, 0, 0, 0), (1, 3, 8, 3, 1), (0, 0, 0, 0, 0), (-1, -3, -8, -3, -1), (0, 0, 0, 0, 0)),
    ((0, 0, 1, 0, 0), (0, 8, 3, 0, 0), (1, 3, 0, -3, -1), (0, 0, -3, -8, 0), (0, 0, -1, 0, 0)),
    ((0, 0, 1, 0, 0), (0, 0, 3, 8, 0), (-1, -3, 0, 3, 1), (0, -8, -3, 0, 0), (0, 0, -1, 0, 0)),
    ((0, 1, 0, -1, 0), (0, 3, 0, -3, 0), (0, 8, 0, -8, 0), (0, 3, 0, -3, 0), (0, 1, 0, -1, 0)),
)

# BT.601 full-range (JFIF) RGB -> YCbCr, chroma centred on 0 (no +128 offset).
_YCBCR_FROM_RGB = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)
# NAMM per-channel parameters for Y, Cb, Cr (Yang et al. 2005).
_NAMM_C = (0.3, 0.25, 0.2)
_NAMM_BETA = (0.117, 0.65, 0.45)

_CANNY_SIGMA = math.sqrt(2.0)
_CANNY_LOW_RATIO = 0.4
_NAMM_CANNY_HIGH = 0.5  # Yang's reference code: edge(I, 'canny', 0.5)
_NAMM_EDGE_WEIGHT = 0.1
_SNAP_TOL = 1e-3  # grey levels: values this close to an integer are taken as 8-bit levels (Wu)


def _filter(y: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate each channel of ``y`` ``[B,C,H,W]`` with ``kernels`` ``[K,k,k]``, zero padding.

    Returns ``[B,C,K,H,W]``.
    """
    b, c, h, w = y.shape
    k = kernels.to(dtype=y.dtype, device=y.device)
    out = F.conv2d(y.reshape(b * c, 1, h, w), k.unsqueeze(1), padding=k.shape[-1] // 2)
    return out.reshape(b, c, k.shape[0], h, w)


def background_luminance(y: torch.Tensor) -> torch.Tensor:
    """Average background luminance ``bg = correlate(y, B) / 32`` (zero padding 2).

    ``B`` is the 5x5 kernel of SPECS.md section 1 (ones on the rim, twos inside, 0 at the centre).

    Args:
        y: ``[B,C,H,W]`` grey levels (0-255), each channel filtered on its own.

    Returns:
        ``[B,C,H,W]`` background luminance, grey levels.
    """
    kernel = torch.tensor(_BG_KERNEL, dtype=torch.float64).unsqueeze(0) / 32.0
    return _filter(y, kernel)[:, :, 0]


def max_gradient(y: torch.Tensor) -> torch.Tensor:
    """Maximal weighted average of gradients ``mg = max_k |correlate(y, G_k) / 16|``, k = 1..4.

    ``G_1..G_4`` are the four 5x5 directional kernels of Chou & Li (SPECS.md section 1); zero
    padding 2.

    Args:
        y: ``[B,C,H,W]`` grey levels (0-255), each channel filtered on its own.

    Returns:
        ``[B,C,H,W]`` ``mg``, grey levels.
    """
    kernels = torch.tensor(_GRAD_KERNELS, dtype=torch.float64) / 16.0
    return _filter(y, kernels).abs().amax(dim=2)


def luminance_adaptation(bg: torch.Tensor) -> torch.Tensor:
    """Luminance adaptation threshold ``f2`` (Chou & Li 1995) in grey levels.

    ``f2(bg) = 17 (1 - sqrt(bg / 127)) + 3`` for ``bg <= 127``, else ``3/128 (bg - 127) + 3``.
    The square root has a finite (zero) gradient at ``bg = 0``.

    Args:
        bg: background luminance, any shape, grey levels.

    Returns:
        ``f2``, same shape, grey levels (20 at ``bg = 0``, 3 at 127, about 6 at 255).
    """
    dark = 17.0 * (1.0 - _safe_sqrt(bg.clamp(min=0.0) / 127.0)) + 3.0
    bright = 3.0 / 128.0 * (bg - 127.0) + 3.0
    return torch.where(bg <= 127.0, dark, bright)


def contrast_masking(bg: torch.Tensor, mg: torch.Tensor) -> torch.Tensor:
    """Chou & Li's spatial masking threshold ``f1 = mg (0.0001 bg + 0.115) + (0.5 - 0.01 bg)``.

    Args:
        bg: background luminance, grey levels.
        mg: maximal gradient (possibly edge-weighted), grey levels, same shape as ``bg``.

    Returns:
        ``f1``, grey levels (negative on flat bright areas, e.g. -1.5 at ``bg = 200, mg = 0``).
    """
    return mg * (0.0001 * bg + 0.115) + (0.5 - 0.01 * bg)


def luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma on grey levels: ``Y = 255 (0.299 R + 0.587 G + 0.114 B)``.

    Computed on the gamma-encoded sRGB values (luma, not linear luminance), as the JND papers
    work on 8-bit grey images.

    Args:
        x: ``[B,3,H,W]`` RGB in [0,1].

    Returns:
        ``[B,1,H,W]`` luma in grey levels (0-255).
    """
    check_image_batch(x.detach() if isinstance(x, torch.Tensor) else x)
    w = torch.tensor(_YCBCR_FROM_RGB[0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return 255.0 * (x * w).sum(dim=1, keepdim=True)


def _ycbcr(x: torch.Tensor) -> torch.Tensor:
    """BT.601 full-range YCbCr in grey levels, chroma centred (Cb, Cr in [-127.5, 127.5])."""
    m = torch.tensor(_YCBCR_FROM_RGB, dtype=x.dtype, device=x.device)
    return 255.0 * torch.einsum("ij,bjhw->bihw", m, x)


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """Normalised ``size x size`` Gaussian (MATLAB ``fspecial('gaussian', size, sigma)``), [1,k,k]."""
    r = (size - 1) / 2.0
    t = torch.arange(size, dtype=torch.float64) - r
    g = torch.exp(-(t * t) / (2.0 * sigma * sigma))
    k2 = g[:, None] * g[None, :]
    return (k2 / k2.sum()).unsqueeze(0)


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """MATLAB ``round``: halves away from zero (``torch.round`` rounds halves to even)."""
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


# ---------------------------------------------------------------------------------------------
# Canny edges (skimage), thresholds relative to the maximum gradient magnitude as in MATLAB


def _canny_relative(img: np.ndarray, high_rel: float) -> np.ndarray:
    """Canny edges of a 2-D float image with thresholds relative to its max gradient magnitude.

    MATLAB's ``edge(I, 'canny', t)`` divides the gradient magnitude by its maximum and uses
    high = t, low = 0.4 t. Here the magnitude of the Gaussian-smoothed (sigma sqrt(2), 'nearest'
    border) image under the Sobel operator — the one :func:`skimage.feature.canny` computes — is
    measured first, and the absolute thresholds ``t * max`` and ``0.4 t * max`` are passed on.
    A flat image has no edges.
    """
    smoothed = ndi.gaussian_filter(img, _CANNY_SIGMA, mode="nearest", truncate=4.0)
    mag = np.hypot(ndi.sobel(smoothed, axis=0), ndi.sobel(smoothed, axis=1))
    mmax = float(mag.max()) if mag.size else 0.0
    if not mmax > 0.0:
        return np.zeros(img.shape, dtype=bool)
    high = high_rel * mmax
    result: np.ndarray = canny(
        img, sigma=_CANNY_SIGMA, low_threshold=_CANNY_LOW_RATIO * high, high_threshold=high, mode="nearest"
    )
    return result


def _canny_batch(y: torch.Tensor, high_rel: torch.Tensor) -> torch.Tensor:
    """Canny on every channel of ``y`` ``[B,C,H,W]`` (grey levels); ``high_rel`` ``[B,C]``.

    Returns a float ``{0,1}`` tensor ``[B,C,H,W]`` on ``y``'s device and dtype.
    """
    arr = y.detach().to(device="cpu", dtype=torch.float64).numpy()
    thr = high_rel.detach().to(device="cpu", dtype=torch.float64).numpy()
    edges = np.zeros(arr.shape, dtype=bool)
    for i in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            edges[i, c] = _canny_relative(arr[i, c], float(thr[i, c]))
    return torch.from_numpy(edges).to(device=y.device, dtype=y.dtype)


def _namm_edge_weights(y: torch.Tensor) -> torch.Tensor:
    """NAMM edge protection ``W`` from luma ``y`` ``[B,1,H,W]`` (grey levels).

    ``W0 = 0.1`` on Canny edges of Y (high threshold 0.5 of the maximum gradient magnitude, low
    0.2), 1 elsewhere; ``W = correlate(W0, 7x7 Gaussian sigma 0.8)`` with zero padding (MATLAB
    ``filter2``), so W also dips below 1 within 3 pixels of the image border.
    """
    thr = torch.full(y.shape[:2], _NAMM_CANNY_HIGH, dtype=torch.float64)
    edges = _canny_batch(y, thr)
    w0 = 1.0 - (1.0 - _NAMM_EDGE_WEIGHT) * edges
    return _filter(w0, _gaussian_kernel(7, 0.8))[:, :, 0]


# ---------------------------------------------------------------------------------------------
# Models


def chou_li(x: torch.Tensor) -> torch.Tensor:
    """Chou & Li (1995) pixel-domain JND on luma.

    ``JND = max(f1(bg, mg), f2(bg))`` with ``bg`` = :func:`background_luminance`, ``mg`` =
    :func:`max_gradient`, ``f1`` = :func:`contrast_masking`, ``f2`` =
    :func:`luminance_adaptation`, all on ``Y`` = :func:`luma` (BT.601, 0.299 / 0.587 / 0.114 on
    gamma-encoded 0-255 values). Worked values (SPECS.md section 1): uniform 64 -> 7.9320,
    uniform 200 -> 4.7109, first pixel on the 100 side of a 0 -> 100 step -> 12.000 grey levels.

    C.-H. Chou and Y.-C. Li, "A perceptually tuned subband image coder based on the measure of
    just-noticeable-distortion profile", IEEE TCSVT 5(6), 1995.

    Args:
        x: ``[B,3,H,W]`` RGB in [0,1].

    Returns:
        ``[B,3,H,W]`` thresholds in [0,1] units (grey levels / 255); the luma threshold is
        repeated on the three channels (a change of at most it on each of R, G, B changes Y by at
        most it, since the luma weights sum to 1).

    Raises:
        InputError: ``x`` is not a ``[B,3,H,W]`` float tensor in [0,1].
    """
    y = luma(x)
    bg = background_luminance(y)
    mg = max_gradient(y)
    jnd = torch.maximum(contrast_masking(bg, mg), luminance_adaptation(bg))
    return (jnd / 255.0).expand(-1, 3, -1, -1).contiguous()


def rgb_box_from_ycbcr(t: torch.Tensor) -> torch.Tensor:
    r"""Per-channel RGB bounds whose every RGB change stays within per-channel YCbCr thresholds.

    With ``M`` the BT.601 full-range RGB -> YCbCr matrix and ``T = (T_Y, T_Cb, T_Cr) >= 0``, an
    RGB change ``d`` with ``|d_j| <= t_j`` gives ``|(M d)_i| <= (|M| t)_i``; the box is inside the
    YCbCr threshold box if and only if ``|M| t <= T``. Among such boxes this returns the largest
    one with the shape ``a = |M^-1| T`` (the RGB extent of the YCbCr threshold box):

    ``t = s a``, ``s = min_i T_i / (|M| a)_i`` (so ``s <= 1`` and at least one YCbCr constraint
    is tight).

    This is conservative (every corner of the RGB box is within every YCbCr threshold) and keeps
    the channel proportions of the YCbCr thresholds: a large Cb threshold gives B more room than
    G. It is differentiable (``min``). No source defines this step (SPECS.md section 1).

    Args:
        t: non-negative thresholds with Y, Cb, Cr on dim 1, e.g. ``[B,3,H,W]``, any units.

    Returns:
        RGB bounds of the same shape and units.

    Raises:
        InputError: ``t`` has no 3-channel dim 1 or has negative values.
    """
    if not isinstance(t, torch.Tensor) or t.ndim < 2 or t.shape[1] != 3:
        shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise InputError(f"t must have Y, Cb, Cr thresholds on dim 1 ([B,3,H,W]), got {shape}")
    t_min = float(t.detach().min()) if t.numel() else 0.0
    if t_min < 0.0:
        raise InputError(f"t must be >= 0, got minimum {t_min:.4g}")
    m = torch.tensor(_YCBCR_FROM_RGB, dtype=torch.float64)
    m_abs = m.abs().to(dtype=t.dtype, device=t.device)
    minv_abs = torch.linalg.inv(m).abs().to(dtype=t.dtype, device=t.device)
    a = torch.einsum("ij,bj...->bi...", minv_abs, t)
    reach = torch.einsum("ij,bj...->bi...", m_abs, a)
    tiny = torch.finfo(t.dtype).tiny
    s = (t / reach.clamp(min=tiny)).amin(dim=1, keepdim=True)
    return s * a


Texture = Literal["reference", "paper"]


def _namm_texture_y(bg: torch.Tensor, mg: torch.Tensor, w: torch.Tensor, texture: Texture) -> torch.Tensor:
    if texture == "reference":
        return contrast_masking(bg, mg * w)
    return _NAMM_BETA[0] * mg * w


def namm(
    x: torch.Tensor,
    colour: bool = False,
    edge_mask: bool = True,
    texture: Texture | None = None,
) -> torch.Tensor:
    r"""Yang et al. (2005) NAMM JND: ``JND = T_l + T_t - C min(T_l, T_t)``.

    ``T_l = f2(bg)`` (:func:`luminance_adaptation` of the luma background
    :func:`background_luminance`). ``W`` is the edge protection: 0.1 on Canny edges of luma,
    1 elsewhere, smoothed by a 7x7 Gaussian with sigma 0.8 (zero padding); edges from
    :func:`skimage.feature.canny`, sigma sqrt(2), high threshold 0.5 and low 0.2 of the maximum
    gradient magnitude (Yang's reference code ``edge(I,'canny',0.5)``; it also dilates the edges
    by a disk of radius 6, which SPECS.md leaves out and so does this). ``edge_mask=False`` sets
    ``W = 1``.

    The texture term ``T_t`` on luma has two forms (``texture``):

    * ``"reference"``: ``T_t = f1(bg, mg W) = mg W (0.0001 bg + 0.115) + 0.5 - 0.01 bg``, Chou's
      masking on the edge-weighted gradient, as in the public reference code (``JND_pixel``,
      type 'Yang'). With ``C = 1`` it is Chou's max rule. This form gives SPECS.md's worked values
      (no edge mask): uniform 64 -> 7.8340, uniform 200 -> 3.6609, step -> 17.8633.
    * ``"paper"``: ``T_t = beta mg W`` with ``beta = 0.117`` (Yang et al. 2005).

    ``colour=False``: luma only, ``C = 0.3``, the luma threshold on all three RGB channels.
    Default texture ``"reference"``.

    ``colour=True``: per channel of BT.601 full-range YCbCr (chroma centred on 0, so zero padding
    is neutral grey): ``C = 0.3 / 0.25 / 0.2``, ``T_t = beta mg_c W`` with
    ``beta = 0.117 / 0.65 / 0.45`` for Y / Cb / Cr, ``mg_c`` the channel's own gradient, ``T_l``
    and ``W`` from luma for all three. Default texture ``"paper"`` (all three channels by
    ``beta``); ``texture="reference"`` uses the luma form above for Y only. The three YCbCr
    thresholds become RGB bounds with :func:`rgb_box_from_ycbcr`: the largest RGB box of shape
    ``|M^-1| T`` whose every change stays within all three YCbCr thresholds (conservative).

    X. K. Yang, W. S. Lin, Z. K. Lu, E. P. Ong and S. S. Yao, "Just noticeable distortion model
    and its applications in video coding", Signal Processing: Image Communication 20(7), 2005.

    Args:
        x: ``[B,3,H,W]`` RGB in [0,1].
        colour: per-channel YCbCr model (True) or luma only (False).
        edge_mask: apply the Canny edge protection ``W`` (True) or ``W = 1`` (False).
        texture: ``"reference"``, ``"paper"`` or None (``"reference"`` for luma only,
            ``"paper"`` for colour).

    Returns:
        ``[B,3,H,W]`` RGB thresholds in [0,1] units (grey levels / 255).

    Raises:
        InputError: bad image batch or unknown ``texture``.
    """
    check_image_batch(x.detach() if isinstance(x, torch.Tensor) else x)
    if texture is None:
        texture = "paper" if colour else "reference"
    if texture not in ("reference", "paper"):
        raise InputError(f"texture must be 'reference' or 'paper', got {texture!r}")
    y = luma(x)
    bg = background_luminance(y)
    t_l = luminance_adaptation(bg)
    w = _namm_edge_weights(y) if edge_mask else torch.ones_like(y)
    if not colour:
        t_t = _namm_texture_y(bg, max_gradient(y), w, texture)
        jnd = t_l + t_t - _NAMM_C[0] * torch.minimum(t_l, t_t)
        return (jnd / 255.0).expand(-1, 3, -1, -1).contiguous()
    mg = max_gradient(_ycbcr(x))
    beta = torch.tensor(_NAMM_BETA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    c = torch.tensor(_NAMM_C, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    t_t = beta * mg * w
    if texture == "reference":
        t_t = torch.cat([_namm_texture_y(bg, mg[:, :1], w, texture), t_t[:, 1:]], dim=1)
    jnd_ycc = t_l + t_t - c * torch.minimum(t_l, t_t)
    return rgb_box_from_ycbcr(jnd_ycc) / 255.0


def _snap_grey_levels(v: torch.Tensor) -> torch.Tensor:
    """Float64 grey levels with values within 1e-3 of an integer set to it (8-bit inputs)."""
    v = v.detach().to(torch.float64)
    r = torch.round(v)
    return torch.where((v - r).abs() < _SNAP_TOL, r, v)


def _local_std5(v: torch.Tensor) -> torch.Tensor:
    """Standard deviation over the 5x5 box, 0 on the 2-pixel border; ``v`` ``[N,1,H,W]``.

    Two-pass (mean, then mean squared deviation) over the 25 shifted copies, so flat areas give
    exactly 0 in float32 too.
    """
    n, _, h, w = v.shape
    out = torch.zeros_like(v)
    if h < 5 or w < 5:
        return out
    hi, wi = h - 4, w - 4
    shifts = [v[:, :, dy : dy + hi, dx : dx + wi] for dy in range(5) for dx in range(5)]
    mean = sum(shifts, torch.zeros_like(shifts[0])) / 25.0
    var = sum(((s - mean) ** 2 for s in shifts), torch.zeros_like(mean)) / 25.0
    out = F.pad(_safe_sqrt(var), (2, 2, 2, 2))
    return out


def _pattern_complexity(v: torch.Tensor) -> torch.Tensor:
    """Wu's pattern complexity ``Pc`` of grey levels ``v`` ``[N,1,H,W]`` (float64, detached).

    Gx, Gy: ``[-1 0 1]`` on 3 rows / 3 (and transposed) after a symmetric pad of 1. A pixel is
    textured if ``sqrt(Gx^2 + Gy^2) >= 5``; its orientation ``round(atan2(Gy, Gx))`` in degrees is
    folded into [0, 180] (``> 90``: -180, ``< -90``: +180, then +90), smooth pixels get 192;
    bin = ``round(theta / 12)`` (0..15, smooth 16). The count of distinct bins among the pixel
    and its 8 neighbours (1 for smooth pixels and the 1-pixel border) is smoothed by a 3x3
    Gaussian, sigma 1, zero padding. MATLAB rounding (halves away from zero) throughout.
    """
    n, _, h, w = v.shape
    vp = F.pad(v, (1, 1, 1, 1), mode="replicate")  # symmetric pad of 1 == replicate
    kx = torch.tensor([[-1.0, 0.0, 1.0]] * 3, dtype=v.dtype) / 3.0
    k = torch.stack([kx, kx.t()]).unsqueeze(1).to(v.device)
    g = F.conv2d(vp, k)
    gx, gy = g[:, :1], g[:, 1:]
    textured = gx * gx + gy * gy >= 25.0 - 1e-9
    theta = _round_half_away(torch.rad2deg(torch.atan2(gy, gx)))
    theta = torch.where(theta > 90.0, theta - 180.0, theta)
    theta = torch.where(theta < -90.0, theta + 180.0, theta)
    theta = torch.where(textured, theta + 90.0, torch.full_like(theta, 192.0))
    bins = _round_half_away(theta / 12.0).to(torch.int64)  # 0..16
    bits = torch.bitwise_left_shift(torch.ones_like(bins), bins)
    bp = F.pad(bits, (1, 1, 1, 1))
    seen = torch.zeros_like(bits)
    for dy in range(3):
        for dx in range(3):
            seen = seen | bp[:, :, dy : dy + h, dx : dx + w]
    count = torch.zeros_like(bits)
    for bit in range(17):
        count = count + ((seen >> bit) & 1)
    cmlx = torch.where(textured, count.to(v.dtype), torch.ones_like(v))
    cmlx[:, :, :1, :] = 1.0
    cmlx[:, :, -1:, :] = 1.0
    cmlx[:, :, :, :1] = 1.0
    cmlx[:, :, :, -1:] = 1.0
    return _filter(cmlx, _gaussian_kernel(3, 1.0))[:, :, 0]


def _wu_edge_protect(v: torch.Tensor) -> torch.Tensor:
    """Wu's edge protection of grey levels ``v`` ``[N,1,H,W]`` (float64, detached).

    Canny with high threshold ``min(60 / max(mg), 0.8)`` of the maximum gradient magnitude
    (``mg`` = :func:`max_gradient`, its maximum over the pixels 2 or more from the border), low
    0.4 of that; edges dilated by the Euclidean disk of radius 3 (``dx^2 + dy^2 <= 9``; MATLAB's
    ``strel('disk',3)`` approximates it); ``1 - E`` smoothed by a 5x5 Gaussian, sigma 0.8, zero
    padding.
    """
    n, _, h, w = v.shape
    mg = max_gradient(v)
    interior = mg[:, :, 2 : h - 2, 2 : w - 2] if h > 4 and w > 4 else mg[:, :, :0, :0]
    if interior.numel():
        peak = interior.reshape(n, -1).amax(dim=1)
    else:
        peak = torch.zeros(n, dtype=v.dtype, device=v.device)
    thr = torch.where(peak > 0, 60.0 / peak.clamp(min=1e-300), torch.full_like(peak, math.inf)).clamp(max=0.8)
    edges = _canny_batch(v, thr.view(n, 1))
    t = torch.arange(-3, 4, dtype=v.dtype)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= 9.0).to(v.dtype).to(v.device)
    dilated = (F.conv2d(edges, disk.view(1, 1, 7, 7), padding=3) > 0.5).to(v.dtype)
    return _filter(1.0 - dilated, _gaussian_kernel(5, 0.8))[:, :, 0]


def wu_pattern(x: torch.Tensor) -> torch.Tensor:
    r"""Wu et al. (2017) pattern-complexity JND, run on each RGB channel as a grey image.

    Following the reference MATLAB ``func_JND_modeling_pattern_complexity.m`` (SPECS.md §1):

    1. ``bg = floor(correlate(I, B) / 32)``; where ``bg <= 127``: ``bg = round(32 + bg 95/127)``;
       ``LA = 0.7 f2(bg)``.
    2. ``Lc`` = standard deviation over the 5x5 box (0 on the 2-pixel border);
       ``LC = 1.84 Lc^2.4 / (Lc^2 + 26^2)``.
    3. ``Pc`` = pattern complexity (distinct orientation bins in the 3x3 neighbourhood, smoothed).
    4. ``Ct = 0.3 Pc^2.7 / (Pc^2 + 1)``, ``PM = Lc Ct``.
    5. Edge protection ``E`` (Canny, dilation, Gaussian; see ``_wu_edge_protect``).
    6. ``VM = max(LC, PM E)``, ``JND = LA + VM - 0.3 min(LA, VM)``.

    Values within 1e-3 of an integer grey level are snapped to it before the floor, rounding and
    threshold steps, so float32 round-off of 8-bit images does not move a pixel across a level.
    Only ``Lc`` (steps 2 and 4) carries a gradient; the rest is piecewise constant. Worked values:
    ``LA`` = 4.5553 on uniform 64 (bg becomes 80), 3.2977 on uniform 200.

    J. Wu, L. Li, W. Dong, G. Shi, W. Lin and C.-C. J. Kuo, "Enhanced just noticeable difference
    model for images with pattern complexity", IEEE TIP 26(6), 2017.

    Args:
        x: ``[B,3,H,W]`` RGB in [0,1].

    Returns:
        ``[B,3,H,W]`` per-channel thresholds in [0,1] units (grey levels / 255).

    Raises:
        InputError: ``x`` is not a ``[B,3,H,W]`` float tensor in [0,1].
    """
    check_image_batch(x.detach() if isinstance(x, torch.Tensor) else x)
    b, c, h, w = x.shape
    v = (255.0 * x).reshape(b * c, 1, h, w)
    vs = _snap_grey_levels(v)

    bg = torch.floor(background_luminance(vs))
    bg = torch.where(bg <= 127.0, _round_half_away(32.0 + bg * 95.0 / 127.0), bg)
    la = (0.7 * luminance_adaptation(bg)).to(x.dtype)

    lc = _local_std5(v)
    lc_mask = 1.84 * lc.pow(2.4) / (lc * lc + 26.0**2)
    pc = _pattern_complexity(vs)
    ct = (0.3 * pc.pow(2.7) / (pc * pc + 1.0)).to(x.dtype)
    pm = lc * ct
    edge = _wu_edge_protect(vs).to(x.dtype)

    vm = torch.maximum(lc_mask, pm * edge)
    jnd = la + vm - 0.3 * torch.minimum(la, vm)
    return (jnd / 255.0).reshape(b, c, h, w)


_MODELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "chou": chou_li,
    "namm": namm,
    "namm-colour": lambda x: namm(x, colour=True),
    "wu": wu_pattern,
    "colour-variance": colour_variance_bound,
}


def jnd_map(x: torch.Tensor, model: str = "namm") -> torch.Tensor:
    """Human JND threshold map by model name, with each model's defaults.

    ``"chou"`` :func:`chou_li`; ``"namm"`` :func:`namm`; ``"namm-colour"``
    ``namm(x, colour=True)``; ``"wu"`` :func:`wu_pattern`; ``"colour-variance"``
    :func:`~jndkit.perception.color.colour_variance_bound` (n = 3, s = 1, T = 40).

    Args:
        x: ``[B,3,H,W]`` RGB in [0,1].
        model: one of :data:`JND_MODELS`.

    Returns:
        ``[B,3,H,W]`` thresholds in [0,1] units (grey levels / 255).

    Raises:
        InputError: unknown model name or bad image batch.
    """
    fn = _MODELS.get(model) if isinstance(model, str) else None
    if fn is None:
        raise InputError(f"model must be one of {', '.join(JND_MODELS)}, got {model!r}")
    return fn(x)


def share_above_jnd(x0: torch.Tensor, x: torch.Tensor, model: str = "chou") -> torch.Tensor:
    """Share of pixels whose luma change exceeds the human JND of the clean photo (SPECS.md §6).

    ``|Y(x) - Y(x0)| > JND_Y(x0)`` per pixel, ``Y = 0.299 R + 0.587 G + 0.114 B`` on the 0-255
    scale, ``JND_Y`` the luma threshold of ``model`` (``chou`` by default, as the transfer anchors
    of SPECS.md were measured; ``namm`` for the map the protective budget uses). A change equal to
    the threshold is not counted.

    Args:
        x0: clean ``[B,3,H,W]`` in [0,1]; x: changed, same shape.

    Returns:
        ``[B]`` float64 in [0,1] (lower is better).
    """
    if model not in ("chou", "namm"):
        raise InputError(f"share_above_jnd measures luma thresholds: model must be chou or namm, got {model!r}")
    if x0.shape != x.shape:
        raise InputError(f"x0 and x must have the same shape, got {list(x0.shape)} and {list(x.shape)}")
    t = jnd_map(x0, model)[:, :1] * 255.0
    dy = (luma(x) - luma(x0)).abs()
    return (dy > t + 1e-6).flatten(1).to(torch.float64).mean(dim=1)
