"""Wu et al. (2017) pattern-complexity JND (:func:`wu_pattern`) and its pieces.

Moved verbatim from the former single ``jndkit/perception/jnd.py`` (issue 11); re-exported by
:mod:`jndkit.perception.jnd`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import check_image_batch
from .color import _safe_sqrt
from .jnd_ops import (
    _canny_batch,
    _filter,
    _gaussian_kernel,
    _round_half_away,
    background_luminance,
    luminance_adaptation,
    max_gradient,
)

_SNAP_TOL = 1e-3  # grey levels: values this close to an integer are taken as 8-bit levels (Wu)


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

