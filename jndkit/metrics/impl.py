"""Metric implementations on validated tensors: ``impl(x0, x, ctx) -> Tensor[B]`` float64.

Each takes the output of :func:`jndkit.metrics.bounded._setup` (float64 for small batches, the
caller's dtype for large ones, see :mod:`jndkit.metrics.bounded`) and records in ``ctx.info`` how
it computed its value. Moved verbatim from the former ``jndkit/metrics.py`` (issue 11).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
    spatial_correlation_coefficient,
    structural_similarity_index_measure,
    universal_image_quality_index,
    visual_information_fidelity,
)

from .bounded import (
    TILE,
    _changed,
    _Context,
    _diff,
    _f64,
    _nan,
    _on_downscaled,
    _pixel_stats,
    _strip_info,
    _strips,
    _too_small,
    _valid_window_mean,
)

_SSIM_SIGMA = 1.5
_SSIM_KERNEL = 11  # = 2 * int(3.5 * sigma + 0.5) + 1, scikit-image's truncate=3.5 window
_SSIM_CROP = (_SSIM_KERNEL - 1) // 2
_SSIM_MIN_SIZE = _SSIM_KERNEL
# torchmetrics' MS-SSIM (5 scales, 11x11 kernel) requires side // 16 > 10.
_MS_SSIM_MIN_SIZE = 11 * 16
_UQI_MIN_SIZE = 11
_SCC_WINDOW = 8
_VIF_MIN_SIZE = 41
_VIF_SIGMA_N_SQ = 2.0

_HIST_BINS = 256
_HIST_EPS = 1e-10

# --------------------------------------------------------------------------------------------
# implementations on validated float64 tensors


def _n_values(x: Tensor) -> int:
    return 3 * x.shape[-2] * x.shape[-1]


def _psnr(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("psnr", ctx)
    if ctx.large:
        mse = _pixel_stats(x0, x, ctx)["sq"] / _n_values(x)
        return torch.where(mse > 0, -10.0 * torch.log10(mse), torch.full_like(mse, math.inf))
    return peak_signal_noise_ratio(x, x0, data_range=1.0, reduction="none", dim=(1, 2, 3)).to(torch.float64)


def _too_small_nan(name: str, x: Tensor, min_size: int, ctx: _Context) -> bool:
    if _too_small(x, min_size):
        ctx.info[name] = f"not defined below {min_size} px"
        return True
    return False


def _ssim_map_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map of two ``[h,w,3]`` float64 arrays, scikit-image's Gaussian-window SSIM (as :func:`ssim`)."""
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(
        a, b, gaussian_weights=True, sigma=_SSIM_SIGMA, use_sample_covariance=False, data_range=1.0,
        channel_axis=2, full=True,
    )
    return np.asarray(full)


def _uqi_map_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """UQI map of two ``[h,w,3]`` float64 arrays with torchmetrics' formula (Gaussian 11x11, sigma 1.5, + eps).

    Written here with ``scipy.ndimage.gaussian_filter`` (separable, 11 taps like torchmetrics'
    kernel) because no library exposes a tileable UQI map and torchmetrics' own one costs ~1.3 GB
    per 512x512 tile; it is checked against torchmetrics in the tests.
    """
    from scipy.ndimage import gaussian_filter

    def blur(v: np.ndarray) -> np.ndarray:
        return gaussian_filter(v, sigma=(_SSIM_SIGMA, _SSIM_SIGMA, 0), truncate=3.5, mode="mirror")

    mu_a, mu_b = blur(a), blur(b)
    var_a = np.maximum(blur(a * a) - mu_a**2, 0.0)
    var_b = np.maximum(blur(b * b) - mu_b**2, 0.0)
    cov = blur(a * b) - mu_a * mu_b
    eps = np.finfo(np.float64).eps
    return (2 * mu_a * mu_b * 2 * cov) / ((mu_a**2 + mu_b**2) * (var_a + var_b) + eps)


def _ssim(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    if _too_small_nan("ssim", x, _SSIM_MIN_SIZE, ctx):
        return _nan(x)
    if ctx.large:
        ctx.info["ssim"] = f"tiled {TILE} px (exact)"
        return _valid_window_mean(x0, x, _SSIM_CROP, _ssim_map_np)
    ctx.info["ssim"] = "full image"
    _, full = structural_similarity_index_measure(
        x,
        x0,
        gaussian_kernel=True,
        sigma=_SSIM_SIGMA,
        kernel_size=_SSIM_KERNEL,
        data_range=1.0,
        reduction="none",
        return_full_image=True,
    )
    c = _SSIM_CROP
    return full[..., c:-c, c:-c].mean(dim=(1, 2, 3)).to(torch.float64)


def _ms_ssim_lib(a: Tensor, b: Tensor) -> Tensor:
    return multiscale_structural_similarity_index_measure(
        b, a, gaussian_kernel=True, sigma=_SSIM_SIGMA, kernel_size=_SSIM_KERNEL, data_range=1.0, reduction="none"
    ).to(torch.float64)


def _ms_ssim(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    if _too_small_nan("ms_ssim", x, _MS_SSIM_MIN_SIZE, ctx):
        return _nan(x)
    if ctx.large:
        return _on_downscaled("ms_ssim", x0, x, ctx, _MS_SSIM_MIN_SIZE, _ms_ssim_lib)
    ctx.info["ms_ssim"] = "full image"
    return _ms_ssim_lib(x0, x)


def _uqi(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    if _too_small_nan("uqi", x, _UQI_MIN_SIZE, ctx):
        return _nan(x)
    if ctx.large:
        ctx.info["uqi"] = f"tiled {TILE} px (exact)"
        return _valid_window_mean(x0, x, _SSIM_CROP, _uqi_map_np)
    ctx.info["uqi"] = "full image"
    full = universal_image_quality_index(x, x0, reduction="none")
    return full.mean(dim=(1, 2, 3)).to(torch.float64)


def _scc_lib(a: Tensor, b: Tensor) -> Tensor:
    return spatial_correlation_coefficient(b, a, window_size=_SCC_WINDOW, reduction="none").to(torch.float64)


def _scc(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    if _too_small_nan("scc", x, _SCC_WINDOW, ctx):
        return _nan(x)
    if ctx.large:
        return _on_downscaled("scc", x0, x, ctx, _SCC_WINDOW, _scc_lib)
    ctx.info["scc"] = "full image"
    return _scc_lib(x0, x)


def _vifp_lib(a: Tensor, b: Tensor) -> Tensor:
    with torch.no_grad():
        out = visual_information_fidelity(b * 255.0, a * 255.0, sigma_n_sq=_VIF_SIGMA_N_SQ, reduction="none")
    return out.to(torch.float64)


def _vifp(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    if _too_small_nan("vifp", x, _VIF_MIN_SIZE, ctx):
        return _nan(x)
    if ctx.large:
        return _on_downscaled("vifp", x0, x, ctx, _VIF_MIN_SIZE, _vifp_lib)
    ctx.info["vifp"] = "full image"
    return _vifp_lib(x0, x)


def _l0(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("l0", ctx)
    if ctx.large:
        return _pixel_stats(x0, x, ctx)["changed"]
    return _changed(x0, x).flatten(1).sum(dim=1).to(torch.float64)


def _l1(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("l1", ctx)
    if ctx.large:
        return _pixel_stats(x0, x, ctx)["abs"]
    return _diff(x0, x).abs().sum(dim=1)


def _l2(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("l2", ctx)
    if ctx.large:
        return _pixel_stats(x0, x, ctx)["sq"].sqrt()
    return torch.linalg.vector_norm(_diff(x0, x), ord=2, dim=1)


def _l2_squared(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("l2_squared", ctx)
    if ctx.large:
        return _pixel_stats(x0, x, ctx)["sq"]
    return _diff(x0, x).square().sum(dim=1)


def _linf(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("linf", ctx)
    if ctx.large:
        return _pixel_stats(x0, x, ctx)["max"]
    if x.numel() == 0:
        return torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    return _diff(x0, x).abs().amax(dim=1)


def _mse(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("mse", ctx)
    if ctx.large:
        return _pixel_stats(x0, x, ctx)["sq"] / _n_values(x)
    return _diff(x0, x).square().mean(dim=1)


def _changed_ratio(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("changed_ratio", ctx)
    if ctx.large:
        return _pixel_stats(x0, x, ctx)["changed_px"] / (x.shape[-2] * x.shape[-1])
    return _changed(x0, x).any(dim=1).flatten(1).to(torch.float64).mean(dim=1)


def _changed_values(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("changed_values", ctx)
    if ctx.large:
        return _pixel_stats(x0, x, ctx)["changed"] / _n_values(x)
    return _changed(x0, x).flatten(1).to(torch.float64).mean(dim=1)


def _ciede2000_stats(x0: Tensor, x: Tensor, ctx: _Context) -> tuple[Tensor, Tensor]:
    """Per-image mean and max of the CIEDE2000 map, cached in ``ctx`` for the pair of calls.

    The map is per pixel, so large images are converted strip by strip with the same result.
    """
    cached = ctx.cache.get("ciede2000")
    if cached is not None:
        return cached  # type: ignore[return-value]
    from skimage.color import deltaE_ciede2000, rgb2lab

    b_, _, h, w = x.shape
    means = np.zeros(b_, dtype=np.float64)
    maxes = np.zeros(b_, dtype=np.float64)
    rows = list(_strips(h, w)) if ctx.large else [(0, h)]
    for i in range(b_):
        total, top = 0.0, -math.inf
        for r0, r1 in rows:
            a = _f64(x0[i, :, r0:r1]).permute(1, 2, 0).numpy()
            b = _f64(x[i, :, r0:r1]).permute(1, 2, 0).numpy()
            de = deltaE_ciede2000(rgb2lab(a), rgb2lab(b), channel_axis=-1)
            total += float(de.sum())
            top = max(top, float(de.max()))
        means[i] = total / (h * w)
        maxes[i] = top
    stats = (
        torch.from_numpy(means).to(x.device),
        torch.from_numpy(maxes).to(x.device),
    )
    ctx.cache["ciede2000"] = stats
    return stats


def _ciede2000_mean(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("ciede2000_mean", ctx)
    return _ciede2000_stats(x0, x, ctx)[0]


def _ciede2000_max(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("ciede2000_max", ctx)
    return _ciede2000_stats(x0, x, ctx)[1]


def _histograms(x: Tensor, bins: int, large: bool = False) -> Tensor:
    """Per-channel histograms ``[B,3,bins]`` of the 8-bit levels ``round(255 x)``, as probabilities.

    ``large``: counted strip by strip (same counts, bounded memory).
    """
    b, c, h, w = x.shape
    if large:
        counts = torch.zeros(b, c, bins, dtype=torch.float64)
        for i in range(b):
            for r0, r1 in _strips(h, w):
                counts[i] += _histograms(_f64(x[i : i + 1, :, r0:r1]), bins)[0] * float((r1 - r0) * w)
        return counts.to(x.device) / float(h * w)
    levels = torch.round(x * 255.0).clamp_(0, 255).to(torch.int64)
    idx = (levels * bins) // 256  # bin of level k: floor(k * bins / 256)
    offsets = torch.arange(b * c, device=x.device, dtype=torch.int64).view(b, c, 1, 1) * bins
    counts = torch.bincount((idx + offsets).flatten(), minlength=b * c * bins)
    return counts.view(b, c, bins).to(torch.float64) / float(h * w)


def _hist_kl_impl(x0: Tensor, x: Tensor, bins: int, eps: float, large: bool = False) -> Tensor:
    p = _histograms(x0, bins, large)
    q = _histograms(x, bins, large)
    p = (p + eps) / (1.0 + bins * eps)
    q = (q + eps) / (1.0 + bins * eps)
    kl = (p * (p / q).log()).sum(dim=-1)  # [B,3]
    return kl.mean(dim=1)


def _hist_kl(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    _strip_info("hist_kl", ctx)
    if x.shape[-2] * x.shape[-1] == 0:
        return _nan(x)
    return _hist_kl_impl(x0, x, _HIST_BINS, _HIST_EPS, ctx.large)


def _above_jnd(x0: Tensor, x: Tensor, ctx: _Context) -> Tensor:
    if ctx.jnd is None:
        ctx.info["above_jnd"] = "no JND map given"
        return _nan(x)
    _strip_info("above_jnd", ctx)
    if ctx.large:
        return _pixel_stats(x0, x, ctx)["above"] / _n_values(x)
    return ((x - x0).abs() > ctx.jnd).flatten(1).to(torch.float64).mean(dim=1)
