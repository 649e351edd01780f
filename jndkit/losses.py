"""Loss terms of the papers' objectives, as functions of tensors and as engine terms.

Each ``*_loss`` function takes tensors and returns a per-sample value ``[B]``;
the ``term_*`` wrappers adapt them to the engine's :class:`~jndkit.attacks.engine.Context`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the engine imports nothing from here; avoid a cycle at run time
    from .attacks.engine import Context


def bounded_range(x: torch.Tensor) -> torch.Tensor:
    """Seed 000 eq. 5, BR, on the 0-255 scale, normalised by the pixel count.

    ``BR(p) = -p if p <= 0; p - 255 if p >= 255; 0 otherwise`` with ``p = 255 x``,
    summed over all values and divided by ``H*W*C``. Returns ``[B]``.
    """
    p = x * 255.0
    br = torch.relu(-p) + torch.relu(p - 255.0)
    return br.flatten(1).sum(dim=1) / x[0].numel()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Seed 000 eq. 6, TV (Mahendran & Vedaldi's squared form), on the [0,1] scale:

    ``TV = 1/(HWC) * sum_{u,v,k} (x[v,u+1,k] - x[v,u,k])^2 + (x[v+1,u,k] - x[v,u,k])^2``,
    differences taken only where the neighbour exists. Returns ``[B]``.
    """
    dh = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).sum(dim=1)
    dv = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).sum(dim=1)
    return (dh + dv) / x[0].numel()


def squared_l2(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``||x - x0||_2^2`` per sample on the [0,1] scale (seed 000 eq. 2, second term)."""
    return (x - x0).pow(2).flatten(1).sum(dim=1)


def l1(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``||x - x0||_1`` per sample."""
    return (x - x0).abs().flatten(1).sum(dim=1)


def margin_loss(ctx: "Context") -> torch.Tensor:
    """Minus the goal margin (C&W-style): decreasing it pushes past the decision boundary."""
    return -ctx.goal.margin(ctx.outputs)


def goal_loss(ctx: "Context") -> torch.Tensor:
    """The goal's own differentiable loss (cross-entropy form)."""
    return ctx.goal.loss(ctx.outputs)


def term_l2(ctx: "Context") -> torch.Tensor:
    return squared_l2(ctx.x, ctx.x0)


def term_br(ctx: "Context") -> torch.Tensor:
    return bounded_range(ctx.x)


def term_tv(ctx: "Context") -> torch.Tensor:
    return total_variation(ctx.x)


# ==================================================================================
# Seed 001 (MND), seed 002 (HVS-JND) and seed 004 (colour variance) terms
# ==================================================================================
# The papers write their perceptual terms as sums over all ``n*h*w`` values. Here they are
# *means* over the values of each sample (``torch.nn.L1Loss``'s default), so that the papers'
# weights (beta = 100 for MND, 1500 for HVS) keep the same meaning at any image size and do
# not drown the adversarial term: with sums, beta1 = 100 and MND's step 1e-4 would move every
# value by 0.01 per iteration whatever the classifier's gradient says.

SSIM_WINDOW = 11
"""SSIM window (Wang et al. 2004: 11 x 11 Gaussian, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2)."""

SOBEL_EPS = 1e-6
"""Added under the square root of the Sobel magnitude so that it is differentiable at a flat patch."""

HVS_CHANNEL_WEIGHTS = (3.0, 5.0, 1.0)
"""Seed 002 eq. 7: perturbation adjustment ``M(r) = 3, M(g) = 5, M(b) = 1`` (green is the most sensitive)."""


def _per_sample_mean(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).mean(dim=1)


def mnd_adversarial(logits: torch.Tensor, away: torch.Tensor, toward: torch.Tensor, r: float = 1.0) -> torch.Tensor:
    """Seed 001's adversarial loss, eq. 3 and eq. 4-6, for any class goal. Returns ``[B]``.

    ``L_adv = <away, softmax(u) + u> - <toward, softmax(u)^r>``

    * untargeted (eq. 3): ``away = y_gt`` (one-hot of the true class), ``toward = 0``:
      the true class's probability *plus its logit* is pushed down (the logit keeps the
      gradient alive when the probability saturates at 1, the paper's reason for dropping the log);
    * targeted (eq. 4): ``away = 0``, ``toward = y_t`` (one-hot of the target, eq. 5's
      least-likely class for :class:`~jndkit.goals.LeastLikely`), power ``r`` (0.0625 in the paper).

    Eq. 6 repeats the untargeted case as ``<y_gt, softmax^r>``; this follows eq. 3, the loss the
    paper defines and motivates. ``softmax^r`` is computed as ``exp(r * log_softmax)`` so a
    target probability that underflows to 0 still has a finite gradient.

    Args:
        logits: ``[B,C]`` victim logits ``u``.
        away, toward: ``[B,C]`` class weights (``Goal.weights``).
        r: power of the targeted term.
    """
    p = logits.softmax(dim=1)
    p_r = torch.exp(r * logits.log_softmax(dim=1))
    return (away * (p + logits)).sum(dim=1) - (toward * p_r).sum(dim=1)


def mean_abs_deviation(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Seed 001 eq. 8 (deviation loss) as a mean: ``mean |Z - X|`` over the values of each sample."""
    return _per_sample_mean((x - x0).abs())


def rms_deviation(x: torch.Tensor, x0: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Seed 001 eq. 9 (the l2 variant of the deviation loss) as a mean: ``sqrt(mean (Z - X)^2 + eps)``.

    ``eps`` keeps the gradient finite at ``Z = X`` (the start of the attack).
    """
    return torch.sqrt(_per_sample_mean((x - x0).pow(2)) + eps)


def mean_squared_deviation(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``mean (Z - X)^2`` per sample (seed 002's plain fidelity loss ``L2_ori``)."""
    return _per_sample_mean((x - x0).pow(2))


def ssim_index(x: torch.Tensor, x0: torch.Tensor, window: int = SSIM_WINDOW) -> torch.Tensor:
    """Mean SSIM (seed 001 eq. 10, Wang et al. 2004) per sample, differentiable (``kornia.metrics.ssim``).

    Local statistics over an ``window x window`` Gaussian window (sigma 1.5, reflect padding),
    ``SSIM = (2 mu_z mu_x + C1)(2 s_zx + C2) / ((mu_z^2 + mu_x^2 + C1)(s_z^2 + s_x^2 + C2))``
    with ``C1 = 0.01^2``, ``C2 = 0.03^2`` on the [0,1] scale, averaged over pixels and channels.
    (Eq. 11-14 of seed 001 write global statistics; the cited SSIM [22] is this windowed index.)
    """
    from kornia.metrics import ssim

    return _per_sample_mean(ssim(x, x0, window, max_val=1.0))


def ssim_loss(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Seed 001 eq. 7, structural term: ``1 - SSIM(Z, X)``.

    The paper writes ``-beta2 * SSIM``; the constant 1 changes neither the gradient nor the
    minimiser and makes the term 0 at ``Z = X``.
    """
    return 1.0 - ssim_index(x, x0)


def sobel_magnitude(x: torch.Tensor, eps: float = SOBEL_EPS) -> torch.Tensor:
    """Seed 001 eq. 15-17: ``g(X) = sqrt(Gx^2 + Gy^2 + eps)`` per channel, ``[B,C,H,W]``.

    ``Gx``, ``Gy`` use the paper's unnormalised Sobel kernels (``[1 2 1]`` smoothing, ``[1 0 -1]``
    difference, ``kornia.filters.sobel(normalized=False)``), replicate padding at the border.
    """
    from kornia.filters import sobel

    return sobel(x, normalized=False, eps=eps)


def sobel_deviation(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Seed 001 eq. 18 (gradient similarity loss) as a mean: ``mean |g(Z) - g(X)|`` per sample."""
    return _per_sample_mean((sobel_magnitude(x) - sobel_magnitude(x0)).abs())


def _channel_weights(m: tuple[float, float, float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(m, dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)
    return w


def jnd_excess_l1(x: torch.Tensor, x0: torch.Tensor, jnd: torch.Tensor,
                  m: tuple[float, float, float] | torch.Tensor = HVS_CHANNEL_WEIGHTS) -> torch.Tensor:
    """Seed 002 eq. 3 with eq. 7 (deviation beyond the JND), as a mean over values:

    ``L1(Z,X,J) = mean_{n,h,w} (|Z - X| - J) * lambda``, ``lambda = M(n)`` where ``|Z - X| > J``
    and 0 elsewhere, i.e. ``mean M(n) * relu(|Z - X| - J)``. Returns ``[B]``.

    Args:
        x, x0: ``[B,3,H,W]`` adversarial and clean images.
        jnd: ``[B,3,H,W]`` JND thresholds ``J`` in the same units.
        m: per-channel weights ``M`` (``(1, 1, 1)`` gives eq. 4's plain indicator).
    """
    return _per_sample_mean(_channel_weights(m, x) * torch.relu((x - x0).abs() - jnd))


def jnd_excess_l2(x: torch.Tensor, x0: torch.Tensor, jnd: torch.Tensor,
                  m: tuple[float, float, float] | torch.Tensor = HVS_CHANNEL_WEIGHTS) -> torch.Tensor:
    """Seed 002 eq. 5 with eq. 7 (fidelity beyond the JND): ``mean M(n) * relu(|Z - X| - J)^2``. ``[B]``."""
    return _per_sample_mean(_channel_weights(m, x) * torch.relu((x - x0).abs() - jnd).pow(2))


def jnd_excess_gradient(x: torch.Tensor, x0: torch.Tensor, jnd: torch.Tensor,
                        m: tuple[float, float, float] | torch.Tensor = HVS_CHANNEL_WEIGHTS) -> torch.Tensor:
    """Seed 002 eq. 6 (gradient loss beyond the JND): eq. 3 applied to Sobel magnitudes,

    ``G(Z,X,J) = mean M(n) * relu(|g(Z) - g(X)| - g(J))`` with ``g`` = :func:`sobel_magnitude`
    (seed 001 eq. 15-17, the same authors' Sobel operator). Returns ``[B]``.
    """
    d = (sobel_magnitude(x) - sobel_magnitude(x0)).abs()
    return _per_sample_mean(_channel_weights(m, x) * torch.relu(d - sobel_magnitude(jnd)))


def bound_l1_ratio(x: torch.Tensor, x0: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """Seed 004 Algorithm 1, L1 norm loss: ``||v||_1 / ||pT||_1`` per sample, ``v = Z - X``.

    Args:
        bound: ``[B,3,H,W]`` per-value threshold ``pT`` (> 0 somewhere).
    """
    return (x - x0).abs().flatten(1).sum(dim=1) / bound.flatten(1).sum(dim=1).clamp_min(1e-12)


# ---------------------------------------------------------------------------------- engine terms
def _hvs_m(ctx: "Context") -> tuple[float, float, float]:
    p = ctx.params
    return (float(p.get("m_r", HVS_CHANNEL_WEIGHTS[0])), float(p.get("m_g", HVS_CHANNEL_WEIGHTS[1])),
            float(p.get("m_b", HVS_CHANNEL_WEIGHTS[2])))


def term_mnd_adversarial(ctx: "Context") -> torch.Tensor:
    """:func:`mnd_adversarial` with the goal's class weights and ``params['r']`` (default 1)."""
    from .errors import InputError

    w = ctx.goal.weights(ctx.outputs.shape[1])
    if w is None:
        raise InputError(f"the MND adversarial loss needs a class goal; {ctx.goal.describe()} has no class weights")
    away, toward = w
    return mnd_adversarial(ctx.outputs, away, toward, float(ctx.params.get("r", 1.0)))


def term_mean_l1(ctx: "Context") -> torch.Tensor:
    return mean_abs_deviation(ctx.x, ctx.x0)


def term_rms_l2(ctx: "Context") -> torch.Tensor:
    return rms_deviation(ctx.x, ctx.x0)


def term_mean_l2(ctx: "Context") -> torch.Tensor:
    return mean_squared_deviation(ctx.x, ctx.x0)


def term_ssim(ctx: "Context") -> torch.Tensor:
    return ssim_loss(ctx.x, ctx.x0)


def term_sobel(ctx: "Context") -> torch.Tensor:
    return sobel_deviation(ctx.x, ctx.x0)


def term_jnd_l1(ctx: "Context") -> torch.Tensor:
    """:func:`jnd_excess_l1` with ``extras['jnd']`` and ``M`` from ``params['m_r'|'m_g'|'m_b']``."""
    return jnd_excess_l1(ctx.x, ctx.x0, ctx.extras["jnd"], _hvs_m(ctx))


def term_jnd_l2(ctx: "Context") -> torch.Tensor:
    return jnd_excess_l2(ctx.x, ctx.x0, ctx.extras["jnd"], _hvs_m(ctx))


def term_jnd_gradient(ctx: "Context") -> torch.Tensor:
    return jnd_excess_gradient(ctx.x, ctx.x0, ctx.extras["jnd"], _hvs_m(ctx))


def term_bound_l1(ctx: "Context") -> torch.Tensor:
    """:func:`bound_l1_ratio` with ``extras['bound']``."""
    return bound_l1_ratio(ctx.x, ctx.x0, ctx.extras["bound"])


def ssim_change_cost(x0: torch.Tensor, window: int = SSIM_WINDOW, sigma: float = 1.5,
                     c2: float = 0.03**2) -> torch.Tensor:
    """Per-value first-order SSIM cost of a small change, ``[B,C,H,W]``, mean 1 per sample.

    For a small change ``d`` uncorrelated with the image, the contrast-structure term of SSIM in
    a window centred at ``q`` drops by about ``var_w(d) / (2 var_q(x) + C2)``. Summed over the
    windows that contain value ``p`` (Gaussian weights ``w``; the weighted variance of a lone
    change ``d`` at ``p`` is ``w(q - p) d^2`` to first order), changing ``p`` alone by ``d``
    costs about ``d^2 * sum_q w(q - p) / (2 var_q(x) + C2)``: cheap in texture, dear on flat
    areas. This is that sum (up to a constant; normalised to mean 1), for selection rules that
    trade the goal's gradient against visibility. The luminance term is left out: with
    ``C1 = 0.01^2`` it is a hundred times smaller than this one except on near-black areas.
    """
    from kornia.filters import filter2d, get_gaussian_kernel2d

    k = get_gaussian_kernel2d((window, window), (sigma, sigma)).to(x0)
    mu = filter2d(x0, k, border_type="reflect")
    var = (filter2d(x0 * x0, k, border_type="reflect") - mu * mu).clamp_min(0.0)
    cost = filter2d(1.0 / (2.0 * var + c2), k, border_type="reflect")
    return cost / cost.flatten(1).mean(dim=1).view(-1, 1, 1, 1)
