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

Layout (issue 11): the shared operators and Canny helpers live in :mod:`jndkit.perception.jnd_ops`,
Wu's model in :mod:`jndkit.perception.jnd_wu`; this module holds Chou-Li, NAMM, the dispatch by
name and :func:`share_above_jnd`, and re-exports the others' names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from .._checks import check_image_batch
from ..errors import InputError
from .color import colour_variance_bound
from .jnd_ops import (
    _NAMM_BETA,
    _NAMM_C,
    _YCBCR_FROM_RGB,
    _namm_edge_weights,
    _ycbcr,
    background_luminance,
    contrast_masking,
    luma,
    luminance_adaptation,
    max_gradient,
)
from .jnd_wu import _pattern_complexity as _pattern_complexity  # tests reach it through this module
from .jnd_wu import wu_pattern

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
