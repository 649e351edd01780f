"""Shared machinery of the metrics: validation, the per-call context and bounded memory.

A batch above :data:`FULL_MAX_PIXELS` pixels that needs no gradient is never copied whole to
float64: pixel-wise metrics run over strips of rows (:func:`_strips`, :func:`_pixel_stats`), SSIM
and UQI over tiles with a halo (:func:`_valid_window_mean`), MS-SSIM, SCC and VIF-P on an
integer-factor area-averaged copy (:func:`_on_downscaled`). Moved verbatim from the former
``jndkit/metrics.py`` (issue 11); the public names are re-exported by :mod:`jndkit.metrics`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .._checks import check_image_batch, check_same_shape

CHANGE_THRESHOLD: float = 0.5 / 255
"""A value counts as changed when ``|x - x0|`` exceeds half an 8-bit level."""

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
