r"""Full-reference image quality metrics, one value per image.

Every metric takes a reference batch ``x0`` and a distorted batch ``x``, both float tensors of
shape ``[B,3,H,W]`` with values in [0,1], and returns a ``float64`` tensor of shape ``[B]``:
per-image values first, reduction (mean, std, median over a data set) by the caller.
The argument order is always ``(reference, distorted)``; it matters for ``vifp`` and ``hist_kl``,
the only asymmetric metrics.

Where a well-kept library has the metric, it is used (``torchmetrics.functional.image`` for PSNR,
SSIM, MS-SSIM, UQI, SCC and VIF-P; ``skimage.color`` for CIEDE2000). All computations run in
``float64`` (SSIM of a saved adversarial image sits at 0.9997 and above, so float32 rounding would
blur the differences that matter).

Each metric is declared in :data:`METRICS` with its direction (``higher_is_better``), whether its
value has a usable gradient (``is_differentiable``), its unit and the smallest image side it is
defined for. An image smaller than ``min_size`` gives ``NaN`` for that metric instead of an error,
so a table over mixed sizes still fills. :func:`compute_metrics` computes several at once.

Bounded memory. A call whose batch holds more than :data:`FULL_MAX_PIXELS` pixels (``B*H*W``) and
needs no gradient never holds a float64 copy of the whole image: the pixel-wise metrics (norms,
counts, PSNR, CIEDE2000, histograms, ``above_jnd``) run over strips of rows and give the full-image
value; SSIM and UQI run over tiles of :data:`TILE` px with a 5-pixel halo, which is exact because
only windows lying wholly inside the image count; MS-SSIM, SCC and VIF-P, whose multi-scale or
zero-padded definitions cannot be tiled exactly through torchmetrics, run on a copy downscaled by an
integer area average to at most :data:`FULL_MAX_PIXELS` pixels. ``compute_metrics(...,
return_info=True)`` says, per metric, which of these was done (e.g. ``"tiled 1024 px"``). Peak
memory and time for 1, 12 and 50 MP: ``benchmarks/bench_memory.py``.

Conventions shared by the pixel-count metrics: a value *changed* when
``|x - x0| > 0.5/255`` (:data:`CHANGE_THRESHOLD`). For images quantized to 8 bits (the way jndkit
always scores results) this is exactly "the 8-bit value differs", since two 8-bit values differ by
at least ``1/255``; for unquantized float images, a change below half an 8-bit level is not counted.

References
----------
- PSNR, MSE: e.g. Wang & Bovik, *Mean squared error: love it or leave it?*, IEEE SPM 2009.
- SSIM: Wang, Bovik, Sheikh, Simoncelli, *Image quality assessment: from error visibility to
  structural similarity*, IEEE TIP 13(4), 2004.
- MS-SSIM: Wang, Simoncelli, Bovik, *Multiscale structural similarity for image quality
  assessment*, Asilomar 2003.
- UQI: Wang & Bovik, *A universal image quality index*, IEEE SPL 9(3), 2002.
- SCC: Zhou, Civco, Silander, *A wavelet transform method to merge Landsat TM and SPOT panchromatic
  data*, IJRS 19(4), 1998.
- VIF-P: Sheikh & Bovik, *Image information and visual quality*, IEEE TIP 15(2), 2006.
- CIEDE2000: Sharma, Wu, Dalal, *The CIEDE2000 color-difference formula*, CR&A 30(1), 2005.
- Seed 000 (Akan et al.): Tables 1-5 (PSNR, SSIM, UQI, SCC, VIFP, L1/L2/L-inf), eq. 9 (colour
  histogram KL), eq. 10 (squared L2). Seed 001 (Sun et al.): ratio of changed ("deviation") pixels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

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

from ._checks import check_image_batch, check_same_shape
from .errors import InputError

__all__ = [
    "CHANGE_THRESHOLD",
    "FULL_MAX_PIXELS",
    "METRICS",
    "TILE",
    "Metric",
    "above_jnd",
    "changed_ratio",
    "changed_values",
    "ciede2000_max",
    "ciede2000_mean",
    "compute_metrics",
    "hist_kl",
    "l0",
    "l1",
    "l2",
    "l2_squared",
    "linf",
    "ms_ssim",
    "mse",
    "psnr",
    "scc",
    "ssim",
    "uqi",
    "vifp",
]

CHANGE_THRESHOLD: float = 0.5 / 255
"""A value counts as changed when ``|x - x0|`` exceeds half an 8-bit level."""

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

FULL_MAX_PIXELS: int = 512 * 512
"""Largest batch (``B*H*W`` pixels) computed in one piece; above it, strips, tiles or a downscaled copy.

torchmetrics' window metrics convolve float64 with grouped 11x11 kernels, which on the CPU unfolds
each window: about 1.3 GB and 5 s for one 512x512 image (58 GB asked for a 12-MP photo)."""
TILE: int = 1024
"""Side of the tiles (before the halo) of the tiled SSIM and UQI."""
_STRIP_PIXELS = 1 << 19  # pixels per strip of rows for the pixel-wise metrics (~12 MB float64 per image copy)


# --------------------------------------------------------------------------------------------
# shared helpers


@dataclass
class _Context:
    """What one :func:`compute_metrics` call shares between metrics.

    ``large``: the inputs are kept in their own dtype and every metric works in strips, tiles or
    on a downscaled copy; ``info`` records, per metric, which was done.
    """

    jnd: Tensor | None = None
    cache: dict[str, object] = field(default_factory=dict)
    large: bool = False
    info: dict[str, str] = field(default_factory=dict)


def _validate(x0: Tensor, x: Tensor) -> None:
    if isinstance(x0, Tensor) and isinstance(x, Tensor):
        check_same_shape(x0, x, ("x0", "x"))
    check_image_batch(x0.detach() if isinstance(x0, Tensor) else x0, "x0")
    check_image_batch(x.detach() if isinstance(x, Tensor) else x, "x")


def _is_large(x0: Tensor, x: Tensor) -> bool:
    """Above :data:`FULL_MAX_PIXELS` and no gradient wanted: the bounded-memory paths are used."""
    return x.shape[0] * x.shape[-2] * x.shape[-1] > FULL_MAX_PIXELS and not (x.requires_grad or x0.requires_grad)


def _prepare_jnd(jnd: Tensor, x0: Tensor, convert: bool = True) -> Tensor:
    if isinstance(jnd, Tensor):
        check_same_shape(jnd, x0, ("jnd", "x0"))
    check_image_batch(jnd.detach() if isinstance(jnd, Tensor) else jnd, "jnd")
    if not convert:
        return jnd.detach().to(device=x0.device)
    return jnd.to(device=x0.device, dtype=torch.float64)


def _setup(x0: Tensor, x: Tensor, jnd: Tensor | None) -> tuple[Tensor, Tensor, _Context]:
    """Validate once; small batches become float64, large ones stay as given (converted per strip)."""
    _validate(x0, x)
    large = _is_large(x0, x)
    if large:
        x0, x = x0.detach(), x.detach()
    else:
        x0, x = x0.to(torch.float64), x.to(torch.float64)
    ctx = _Context(jnd=None if jnd is None else _prepare_jnd(jnd, x0, convert=not large), large=large)
    return x0, x, ctx


def _run(
    impl: Callable[[Tensor, Tensor, _Context], Tensor], x0: Tensor, x: Tensor, jnd: Tensor | None = None
) -> Tensor:
    """Validate, convert (see :func:`_setup`) and call ``impl``; an empty batch gives an empty result."""
    x0, x, ctx = _setup(x0, x, jnd)
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.float64, device=x.device)
    return impl(x0, x, ctx)


# --------------------------------------------------------------------------------------------
# bounded-memory helpers (strips of rows, tiles with a halo, integer-factor downscaling)


def _strips(h: int, w: int, multiple: int = 1) -> Iterator[tuple[int, int]]:
    """Row ranges ``[r0, r1)`` of about :data:`_STRIP_PIXELS` pixels, each a multiple of ``multiple`` rows."""
    step = max(1, _STRIP_PIXELS // max(1, w * multiple)) * multiple
    for r0 in range(0, h, step):
        yield r0, min(h, r0 + step)


def _bounds(n: int, tile: int) -> list[int]:
    """Split ``[0, n)`` into equal parts of at most ``tile`` (so no part is a sliver)."""
    parts = max(1, math.ceil(n / tile))
    return [round(k * n / parts) for k in range(parts + 1)]


def _tiles(h: int, w: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """Core tiles ``(r0, r1, c0, c1)`` covering an ``h x w`` image."""
    rows, cols = _bounds(h, tile), _bounds(w, tile)
    for r0, r1 in itertools.pairwise(rows):
        for c0, c1 in itertools.pairwise(cols):
            yield r0, r1, c0, c1


def _f64(t: Tensor) -> Tensor:
    return t.detach().to("cpu", torch.float64)


def _valid_window_mean(
    x0: Tensor, x: Tensor, crop: int, map_fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> Tensor:
    """Mean of a window map over the pixels whose whole window lies inside the image, tile by tile.

    ``map_fn(a, b)`` maps two ``[h,w,3]`` float64 arrays to the ``[h,w,3]`` index map; its values at
    least ``crop`` pixels from the array's edge depend only on pixels inside the array. Each core
    tile is taken with a halo of ``crop`` pixels, so the kept values equal those of the whole image
    exactly (up to float summation order).
    """
    b_, _, h, w = x.shape
    out = torch.empty(b_, dtype=torch.float64)
    count = 3 * (h - 2 * crop) * (w - 2 * crop)
    for i in range(b_):
        total = 0.0
        for r0, r1, c0, c1 in _tiles(h, w, TILE):
            t0, t1, u0, u1 = max(0, r0 - crop), min(h, r1 + crop), max(0, c0 - crop), min(w, c1 + crop)
            a = _f64(x0[i, :, t0:t1, u0:u1]).permute(1, 2, 0).numpy()
            b = _f64(x[i, :, t0:t1, u0:u1]).permute(1, 2, 0).numpy()
            v0, v1 = max(r0, crop) - t0, min(r1, h - crop) - t0
            w0, w1 = max(c0, crop) - u0, min(c1, w - crop) - u0
            if v1 > v0 and w1 > w0:
                total += float(map_fn(a, b)[v0:v1, w0:w1].sum())
        out[i] = total / count
    return out.to(x.device)


def _downscaled(x: Tensor, i: int, f: int) -> Tensor:
    """Image ``i`` of ``x`` averaged over ``f x f`` blocks (float64 ``[1,3,H//f,W//f]``), strip by strip."""
    h, w = (x.shape[-2] // f) * f, (x.shape[-1] // f) * f
    if f == 1:
        return _f64(x[i : i + 1, :, :h, :w])
    parts = [
        torch.nn.functional.avg_pool2d(_f64(x[i : i + 1, :, r0:r1, :w]), f) for r0, r1 in _strips(h, w, multiple=f)
    ]
    return torch.cat(parts, dim=2)


def _on_downscaled(
    name: str, x0: Tensor, x: Tensor, ctx: _Context, min_size: int, fn: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """Run a whole-image library metric on copies downscaled to at most :data:`FULL_MAX_PIXELS` pixels."""
    h, w = x.shape[-2], x.shape[-1]
    f = max(1, math.ceil(math.sqrt(h * w / FULL_MAX_PIXELS)))
    f = max(1, min(f, min(h, w) // min_size))  # never below the metric's smallest size
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        with torch.no_grad():
            out[i] = fn(_downscaled(x0, i, f), _downscaled(x, i, f))[0]
    ctx.info[name] = "full image" if f == 1 else f"downscaled 1/{f} ({w // f}x{h // f} px, area average)"
    return out.to(x.device)


def _pixel_stats(x0: Tensor, x: Tensor, ctx: _Context) -> dict[str, Tensor]:
    """Per-image sums for the pixel-wise metrics in one pass over strips of rows (large inputs only).

    Keys: ``sq`` (sum of squared differences), ``abs`` (sum of absolute differences), ``max``
    (largest absolute difference), ``changed`` (values changed), ``changed_px`` (pixels with any
    channel changed), ``above`` (values above the JND map; only with a map).
    """
    cached = ctx.cache.get("pixel_stats")
    if cached is not None:
        return cached  # type: ignore[return-value]
    b_, _, h, w = x.shape
    keys = ("sq", "abs", "max", "changed", "changed_px", "above")
    acc = {k: torch.zeros(b_, dtype=torch.float64) for k in keys}
    for i in range(b_):
        for r0, r1 in _strips(h, w):
            d = _f64(x[i, :, r0:r1]) - _f64(x0[i, :, r0:r1])
            ad = d.abs()
            acc["sq"][i] += d.square().sum()
            acc["abs"][i] += ad.sum()
            if ad.numel():
                acc["max"][i] = max(float(acc["max"][i]), float(ad.max()))
            ch = ad > CHANGE_THRESHOLD
            acc["changed"][i] += ch.sum()
            acc["changed_px"][i] += ch.any(dim=0).sum()
            if ctx.jnd is not None:
                acc["above"][i] += (ad > _f64(ctx.jnd[i, :, r0:r1])).sum()
    stats = {k: v.to(x.device) for k, v in acc.items()}
    ctx.cache["pixel_stats"] = stats
    return stats


def _strip_info(name: str, ctx: _Context) -> None:
    ctx.info[name] = "full image, in strips of rows" if ctx.large else "full image"


def _nan(x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), math.nan, dtype=torch.float64, device=x.device)


def _too_small(x: Tensor, min_size: int) -> bool:
    return min(x.shape[-2], x.shape[-1]) < min_size


def _diff(x0: Tensor, x: Tensor) -> Tensor:
    """Per-image flattened difference ``x - x0``, shape ``[B, 3*H*W]``."""
    return (x - x0).flatten(1)


def _changed(x0: Tensor, x: Tensor) -> Tensor:
    """Boolean mask ``[B,3,H,W]`` of values that changed by more than :data:`CHANGE_THRESHOLD`."""
    return (x - x0).abs() > CHANGE_THRESHOLD


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



# --------------------------------------------------------------------------------------------
# public per-metric functions


def psnr(x0: Tensor, x: Tensor) -> Tensor:
    r"""Peak signal-to-noise ratio in dB, data range 1.

    .. math:: \mathrm{PSNR} = 10 \log_{10} \frac{1}{\mathrm{MSE}}, \qquad
              \mathrm{MSE} = \frac{1}{3HW} \sum (x - x_0)^2

    Identical images give ``+inf`` (MSE = 0); a caller averaging over a data set must decide how
    to treat them (e.g. report their count apart). For images quantized to 8 bits this is exactly
    the 8-bit PSNR (``MAX = 255`` on ``round(255 x)``), since scaling both images and the peak by
    255 leaves the ratio unchanged. Via ``torchmetrics.functional.image.peak_signal_noise_ratio``,
    which converts to base 10 with a float32 ``log(10)``: relative error below 1e-7 (~2e-6 dB).

    Args:
        x0: reference ``[B,3,H,W]`` in [0,1].
        x: distorted ``[B,3,H,W]`` in [0,1].

    Returns:
        ``[B]`` float64, dB, higher is better.
    """
    return _run(_psnr, x0, x)


def ssim(x0: Tensor, x: Tensor) -> Tensor:
    r"""Structural similarity (Wang et al. 2004), Gaussian window 11x11, sigma 1.5, data range 1.

    .. math:: \mathrm{SSIM}(p) = \frac{(2\mu_x\mu_{x_0} + C_1)(2\sigma_{x x_0} + C_2)}
              {(\mu_x^2 + \mu_{x_0}^2 + C_1)(\sigma_x^2 + \sigma_{x_0}^2 + C_2)},
              \quad C_1 = (0.01)^2,\; C_2 = (0.03)^2

    with population (not sample) local statistics, averaged over the valid pixels of every channel.
    The map comes from ``torchmetrics.functional.image.structural_similarity_index_measure``
    (reflect padding); a border of 5 pixels is then cropped before averaging, so that only windows
    lying wholly inside the image count. This is the convention of Wang's reference code
    (``filter2(..., 'valid')``) and of ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)``, which it matches to float precision.
    torchmetrics' own mean keeps the padded border and differs by about 1e-4 on small images.

    Returns ``NaN`` for images with a side below 11 pixels (no complete window).

    Returns:
        ``[B]`` float64 in [-1, 1], higher is better.
    """
    return _run(_ssim, x0, x)


def ms_ssim(x0: Tensor, x: Tensor) -> Tensor:
    r"""Multi-scale SSIM (Wang et al. 2003), 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333).

    .. math:: \mathrm{MS\mbox{-}SSIM} = l_M^{\beta_M} \prod_{j=1}^{M} cs_j^{\beta_j}

    Via ``torchmetrics.functional.image.multiscale_structural_similarity_index_measure`` (Gaussian
    11x11, sigma 1.5, data range 1, ``normalize="relu"``, reflect padding, no border crop).
    Four 2x average-poolings leave ``side // 16`` pixels at the coarsest scale, which must exceed the
    window (10): images with a side below 176 pixels give ``NaN`` (the metric is undefined there).

    Returns:
        ``[B]`` float64, higher is better.
    """
    return _run(_ms_ssim, x0, x)


def uqi(x0: Tensor, x: Tensor) -> Tensor:
    r"""Universal image quality index (Wang & Bovik 2002), averaged over pixels and channels.

    .. math:: Q = \frac{4\,\sigma_{x x_0}\,\mu_x \mu_{x_0}}{(\sigma_x^2 + \sigma_{x_0}^2)(\mu_x^2 + \mu_{x_0}^2)}

    i.e. SSIM with ``C1 = C2 = 0``. Via ``torchmetrics.functional.image.universal_image_quality_index``:
    Gaussian 11x11 window with sigma 1.5 (the original paper used an 8x8 uniform window), valid
    pixels only. Where both images are locally flat, Q is 0/0; torchmetrics adds machine epsilon to
    the denominator, so such windows score 0, and identical images reach exactly 1 only when no window
    is flat. Returns ``NaN`` for images with a side below 11 pixels.

    Returns:
        ``[B]`` float64 in [-1, 1], higher is better.
    """
    return _run(_uqi, x0, x)


def scc(x0: Tensor, x: Tensor) -> Tensor:
    r"""Spatial correlation coefficient (Zhou et al. 1998) of the high-pass details.

    Both images are filtered per channel with the Laplacian ``[[-1,-1,-1],[-1,8,-1],[-1,-1,-1]]``;
    the local correlation coefficient of the two filtered images in an 8x8 uniform window

    .. math:: \mathrm{SCC}(p) = \frac{\sigma_{h h_0}(p)}{\sigma_h(p)\,\sigma_{h_0}(p)}

    is averaged over pixels and channels (0 where a window is flat). Via
    ``torchmetrics.functional.image.spatial_correlation_coefficient``, which computes in float32.
    Returns ``NaN`` for images with a side below 8 pixels.

    Returns:
        ``[B]`` float64 in [-1, 1], higher is better.
    """
    return _run(_scc, x0, x)


def vifp(x0: Tensor, x: Tensor) -> Tensor:
    r"""Pixel-domain visual information fidelity, VIF-P (Sheikh & Bovik 2006).

    .. math::
        \mathrm{VIF} = \frac{\sum_{s,p} \log_{10}\!\left(1 + g^2 \sigma_{x_0}^2 / (\sigma_v^2 + \sigma_n^2)\right)}
                             {\sum_{s,p} \log_{10}\!\left(1 + \sigma_{x_0}^2 / \sigma_n^2\right)}

    over 4 scales, per channel, then averaged over channels. The images are scaled to 8-bit grey
    levels (x 255) before the call, because the visual-noise variance ``sigma_n^2 = 2`` of the
    original definition is in grey levels squared; on the [0,1] scale it would swamp the local
    variances and make the metric nearly blind to noise. Via
    ``torchmetrics.functional.image.visual_information_fidelity``. Computed without gradient:
    torchmetrics 1.9 masks tensors in place after using them, which breaks autograd.
    Returns ``NaN`` for images with a side below 41 pixels.

    Returns:
        ``[B]`` float64, 1 for identical images, higher is better.
    """
    return _run(_vifp, x0, x)


def l0(x0: Tensor, x: Tensor) -> Tensor:
    r"""Number of changed values (pixels x channels), :math:`\#\{i : |x_i - x_{0,i}| > 0.5/255\}`.

    For 8-bit quantized images this counts the 8-bit values that differ. Returns a count (float64).
    """
    return _run(_l0, x0, x)


def l1(x0: Tensor, x: Tensor) -> Tensor:
    r""":math:`\|x - x_0\|_1 = \sum_i |x_i - x_{0,i}|` over all ``3*H*W`` values, on the [0,1] scale.

    Not normalised by the number of values: this is the convention of seed 000, Tables 2 and 5
    (e.g. ImageNet 224x224, FGSM: L1 = 400.11, L2 = 1.0012, L-inf = 0.0131, consistent only with
    plain sums on the [0,1] scale).
    """
    return _run(_l1, x0, x)


def l2(x0: Tensor, x: Tensor) -> Tensor:
    r""":math:`\|x - x_0\|_2 = \sqrt{\sum_i (x_i - x_{0,i})^2}` over all values, [0,1] scale, unnormalised.

    Seed 000, Tables 2, 3 and 5. The squared form of its eq. 10 is :func:`l2_squared`; the
    mean-normalised form is :func:`mse` (``l2**2 / (3HW)``).
    """
    return _run(_l2, x0, x)


def l2_squared(x0: Tensor, x: Tensor) -> Tensor:
    r""":math:`\sum_i (x_i - x_{0,i})^2` on the [0,1] scale: seed 000, eq. 10 (its Fig. 8)."""
    return _run(_l2_squared, x0, x)


def linf(x0: Tensor, x: Tensor) -> Tensor:
    r""":math:`\|x - x_0\|_\infty = \max_i |x_i - x_{0,i}|` on the [0,1] scale (seed 000, Tables 2 and 5)."""
    return _run(_linf, x0, x)


def mse(x0: Tensor, x: Tensor) -> Tensor:
    r"""Mean squared error :math:`\frac{1}{3HW}\sum_i (x_i - x_{0,i})^2` on the [0,1] scale.

    The resolution-independent form of :func:`l2_squared`, and the quantity behind :func:`psnr`
    (``psnr = -10 log10(mse)``).
    """
    return _run(_mse, x0, x)


def changed_ratio(x0: Tensor, x: Tensor) -> Tensor:
    r"""Share of pixel positions where any channel changed by at least one 8-bit level.

    .. math:: \frac{1}{HW} \#\{(h,w) : \max_c |x_{c,h,w} - x_{0,c,h,w}| > 0.5/255\}

    Seed 001's "ratio of deviation pixels" (#non-zero / N in the absolute-difference map).
    In [0, 1], lower is better.
    """
    return _run(_changed_ratio, x0, x)


def changed_values(x0: Tensor, x: Tensor) -> Tensor:
    r"""Share of values (pixels x channels) that changed: ``l0 / (3*H*W)``, in [0, 1]."""
    return _run(_changed_values, x0, x)


def ciede2000_mean(x0: Tensor, x: Tensor) -> Tensor:
    r"""Mean over pixels of the CIEDE2000 colour difference :math:`\Delta E_{00}` between the images.

    sRGB (D65, 2 degree observer) to CIELAB with ``skimage.color.rgb2lab``, then
    ``skimage.color.deltaE_ciede2000`` (kL = kC = kH = 1) per pixel. NumPy on the CPU, one image
    at a time, not differentiable. About 1 means a just-perceptible colour difference.
    """
    return _run(_ciede2000_mean, x0, x)


def ciede2000_max(x0: Tensor, x: Tensor) -> Tensor:
    r"""Maximum over pixels of :math:`\Delta E_{00}` (see :func:`ciede2000_mean`)."""
    return _run(_ciede2000_max, x0, x)


def hist_kl(x0: Tensor, x: Tensor, *, bins: int = _HIST_BINS, eps: float = _HIST_EPS) -> Tensor:
    r"""Colour-histogram Kullback-Leibler divergence, seed 000 eq. 9, in nats.

    .. math:: \mathrm{KL}[p \,\|\, q] = \frac{1}{3}\sum_{c \in \{R,G,B\}} \sum_{r} p_c(r) \ln\frac{p_c(r)}{q_c(r)}

    ``p`` is the colour distribution of the reference (true) image ``x0``, ``q`` that of the
    distorted (adversarial) image ``x``, as in the paper. The paper leaves the estimator open; here:

    - values are rounded to 8-bit levels ``k = round(255 v)`` (as the image is saved);
    - one histogram per channel (a joint 256^3 histogram would be almost empty), ``bins`` bins, level
      ``k`` in bin ``floor(k * bins / 256)``; default 256, one bin per level;
    - each histogram is normalised to sum to 1, then smoothed
      ``p <- (p + eps) / (1 + bins * eps)`` with ``eps = 1e-10`` so that a level present in the
      reference but absent from the distorted image gives a large finite value, not infinity;
    - the three per-channel divergences are averaged.

    Eq. 9 as extracted carries a leading minus sign; with it the divergence would be <= 0, so it is
    read as the usual (non-negative) KL. Identical images give exactly 0. Not differentiable.

    Args:
        x0: reference ``[B,3,H,W]`` in [0,1].
        x: distorted ``[B,3,H,W]`` in [0,1].
        bins: number of histogram bins per channel, 1 to 256.
        eps: smoothing added to every bin probability, > 0.

    Returns:
        ``[B]`` float64 >= 0, nats, lower is better.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 256:
        raise InputError(f"bins must be an integer in [1, 256], got {bins!r}")
    if not eps > 0:
        raise InputError(f"eps must be > 0, got {eps}")
    eps_f = float(eps)

    def impl(a: Tensor, b: Tensor, ctx: _Context) -> Tensor:
        if b.shape[-2] * b.shape[-1] == 0:
            return _nan(b)
        return _hist_kl_impl(a, b, bins, eps_f, ctx.large)

    return _run(impl, x0, x)


def above_jnd(x0: Tensor, x: Tensor, jnd: Tensor | None) -> Tensor:
    r"""Share of values whose change exceeds the human JND threshold map.

    .. math:: \frac{1}{3HW} \#\{i : |x_i - x_{0,i}| > \mathrm{jnd}_i\}

    Args:
        x0: reference ``[B,3,H,W]`` in [0,1].
        x: distorted ``[B,3,H,W]`` in [0,1].
        jnd: per-value visibility threshold ``[B,3,H,W]`` in [0,1] units (e.g. from
            ``jndkit.perception``); a change equal to the threshold is not counted. ``None`` gives
            ``NaN`` (nothing to compare against).

    Returns:
        ``[B]`` float64 in [0, 1], lower is better.
    """
    return _run(_above_jnd, x0, x, jnd)


# --------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class Metric:
    """Declaration of one full-reference metric (torchmetrics style).

    Attributes:
        name: key in :data:`METRICS` and in :func:`compute_metrics`' result.
        fn: the public per-image function ``fn(x0, x) -> Tensor[B]`` (``above_jnd`` also takes ``jnd``).
        higher_is_better: direction of better quality / smaller perturbation.
        is_differentiable: the value carries a usable gradient w.r.t. ``x``.
        unit: unit of the value ("" for dimensionless indices).
        min_size: smallest image side for which the metric is defined; smaller images give NaN.
        needs_jnd: the metric needs a human JND map (``jnd=`` in :func:`compute_metrics`).
    """

    name: str
    fn: Callable[..., Tensor]
    higher_is_better: bool
    is_differentiable: bool
    unit: str
    min_size: int = 1
    needs_jnd: bool = False
    _impl: Callable[[Tensor, Tensor, _Context], Tensor] | None = field(default=None, repr=False, compare=False)


def _metric(
    name: str,
    fn: Callable[..., Tensor],
    impl: Callable[[Tensor, Tensor, _Context], Tensor],
    higher_is_better: bool,
    is_differentiable: bool,
    unit: str,
    min_size: int = 1,
    needs_jnd: bool = False,
) -> Metric:
    return Metric(name, fn, higher_is_better, is_differentiable, unit, min_size, needs_jnd, impl)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        _metric("psnr", psnr, _psnr, True, True, "dB"),
        _metric("ssim", ssim, _ssim, True, True, "", _SSIM_MIN_SIZE),
        _metric("ms_ssim", ms_ssim, _ms_ssim, True, True, "", _MS_SSIM_MIN_SIZE),
        _metric("uqi", uqi, _uqi, True, True, "", _UQI_MIN_SIZE),
        _metric("scc", scc, _scc, True, True, "", _SCC_WINDOW),
        _metric("vifp", vifp, _vifp, True, False, "", _VIF_MIN_SIZE),
        _metric("l0", l0, _l0, False, False, "values"),
        _metric("l1", l1, _l1, False, True, "[0,1] units"),
        _metric("l2", l2, _l2, False, True, "[0,1] units"),
        _metric("l2_squared", l2_squared, _l2_squared, False, True, "[0,1] units squared"),
        _metric("linf", linf, _linf, False, True, "[0,1] units"),
        _metric("mse", mse, _mse, False, True, "[0,1] units squared"),
        _metric("changed_ratio", changed_ratio, _changed_ratio, False, False, "fraction of pixels"),
        _metric("changed_values", changed_values, _changed_values, False, False, "fraction of values"),
        _metric("ciede2000_mean", ciede2000_mean, _ciede2000_mean, False, False, "dE00"),
        _metric("ciede2000_max", ciede2000_max, _ciede2000_max, False, False, "dE00"),
        _metric("hist_kl", hist_kl, _hist_kl, False, False, "nats"),
        _metric("above_jnd", above_jnd, _above_jnd, False, False, "fraction of values", needs_jnd=True),
    )
}
"""All metrics by name, in the order of the papers' tables."""


@overload
def compute_metrics(
    x0: Tensor,
    x: Tensor,
    names: Sequence[str] | None = ...,
    jnd: Tensor | None = ...,
    *,
    return_info: Literal[False] = ...,
) -> dict[str, Tensor]: ...


@overload
def compute_metrics(
    x0: Tensor,
    x: Tensor,
    names: Sequence[str] | None = ...,
    jnd: Tensor | None = ...,
    *,
    return_info: Literal[True],
) -> tuple[dict[str, Tensor], dict[str, str]]: ...


def compute_metrics(
    x0: Tensor,
    x: Tensor,
    names: Sequence[str] | None = None,
    jnd: Tensor | None = None,
    *,
    return_info: bool = False,
) -> dict[str, Tensor] | tuple[dict[str, Tensor], dict[str, str]]:
    """Compute several metrics of a (reference, distorted) batch, validating the input once.

    Memory is bounded whatever the image size (see the module docstring): a batch above
    :data:`FULL_MAX_PIXELS` pixels that needs no gradient is never copied whole to float64; the
    pixel-wise metrics run in strips and SSIM/UQI in tiles (both exact); MS-SSIM, SCC and VIF-P run
    on a copy downscaled by an integer area average.

    Args:
        x0: reference ``[B,3,H,W]`` in [0,1].
        x: distorted ``[B,3,H,W]`` in [0,1], same shape.
        names: metric names from :data:`METRICS`, in the order wanted. ``None``: every metric, except
            that ``above_jnd`` is left out when ``jnd`` is ``None``. A metric named explicitly that
            cannot be computed (``above_jnd`` without ``jnd``; an image below its ``min_size``) is
            ``NaN``.
        jnd: optional human JND threshold map ``[B,3,H,W]`` in [0,1] units, for ``above_jnd``.
        return_info: also return ``{name: how}``, one line per metric saying how it was computed:
            ``"full image"``, ``"full image, in strips of rows"``, ``"tiled 1024 px (exact)"``,
            ``"downscaled 1/7 (571x428 px, area average)"``, ``"not defined below 11 px"`` or
            ``"no JND map given"``, for a report to show beside the value.

    Returns:
        ``{name: Tensor[B] float64}`` on the device of ``x``; with ``return_info``, the pair
        ``(values, info)``.

    Raises:
        InputError: bad shapes or ranges (the message names both shapes), or an unknown name.
    """
    if names is None:
        selected = [n for n, m in METRICS.items() if not (m.needs_jnd and jnd is None)]
    else:
        if isinstance(names, str):
            raise InputError(f"names must be a sequence of metric names, got the string {names!r}")
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise InputError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
        selected = list(dict.fromkeys(names))
    x0d, xd, ctx = _setup(x0, x, jnd)
    out: dict[str, Tensor] = {}
    if xd.shape[0] == 0:
        out = {name: torch.empty(0, dtype=torch.float64, device=xd.device) for name in selected}
        return (out, {name: "empty batch" for name in selected}) if return_info else out
    for name in selected:
        impl = METRICS[name]._impl
        if impl is None:  # pragma: no cover - every registered metric has one
            raise InputError(f"metric {name!r} has no implementation")
        out[name] = impl(x0d, xd, ctx)
    if return_info:
        return out, {name: ctx.info.get(name, "full image") for name in selected}
    return out
