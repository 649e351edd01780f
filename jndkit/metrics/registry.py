"""The metric registry: :class:`Metric` declarations in :data:`METRICS` and :func:`compute_metrics`.

Moved verbatim from the former ``jndkit/metrics.py`` (issue 11).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

import torch
from torch import Tensor

from ..errors import InputError
from .bounded import _Context, _setup
from .full import (
    above_jnd,
    changed_ratio,
    changed_values,
    ciede2000_max,
    ciede2000_mean,
    hist_kl,
    l0,
    l1,
    l2,
    l2_squared,
    linf,
    ms_ssim,
    mse,
    psnr,
    scc,
    ssim,
    uqi,
    vifp,
)
from .impl import (
    _MS_SSIM_MIN_SIZE,
    _SCC_WINDOW,
    _SSIM_MIN_SIZE,
    _UQI_MIN_SIZE,
    _VIF_MIN_SIZE,
    _above_jnd,
    _changed_ratio,
    _changed_values,
    _ciede2000_max,
    _ciede2000_mean,
    _hist_kl,
    _l0,
    _l1,
    _l2,
    _l2_squared,
    _linf,
    _ms_ssim,
    _mse,
    _psnr,
    _scc,
    _ssim,
    _uqi,
    _vifp,
)

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
