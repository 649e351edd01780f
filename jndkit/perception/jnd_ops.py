"""Shared operators of the pixel-domain JND models (SPECS.md section 1) and their Canny edge helpers.

Background luminance, maximum directional gradient, luminance adaptation ``f2``, contrast masking
``f1``, luma and YCbCr, Gaussian kernels and MATLAB-style rounding, on grey levels 0-255 with zero
padding 2; Canny edges (skimage) with thresholds relative to the maximum gradient magnitude. Used by
every model of :mod:`jndkit.perception.jnd`. Moved verbatim from the former single
``jndkit/perception/jnd.py`` (issue 11).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.feature import canny

from .._checks import check_image_batch
from .color import _safe_sqrt

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

