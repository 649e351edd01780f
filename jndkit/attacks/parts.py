"""The pieces a :class:`~jndkit.attacks.engine.Method` is made of.

Parametrisations (:class:`Delta`, :class:`Tanh`), update rules with per-sample state
(:class:`GradientDescent`, :class:`SignStep`, :class:`ValueStep`, :class:`Adam`,
:class:`LevelStep`, DDN's :func:`l2_sphere_step`), gradient and input transforms
(:class:`Momentum`, :func:`input_diversity`), projections (:func:`project_linf`,
:func:`project_bound_round`) and the retry schedule (:class:`Retry`), with the :class:`Context`
the loss terms see. Moved out of ``engine.py`` unchanged (issue 11: no module above 500 lines);
``jndkit.attacks.engine`` re-exports every name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from ..goals import Goal
from ..images import quantize
from .registry import Params

LEVEL = 1.0 / 255.0


# ----------------------------------------------------------------------------------
# Context handed to the pieces of a method
# ----------------------------------------------------------------------------------
@dataclass
class Context:
    """What the loss terms and projections of a method see at one iteration.

    Attributes:
        x: candidate image ``[b,3,H,W]`` (differentiable) of the active samples.
        x0: their clean images.
        outputs: victim outputs on ``x`` (after the input transform, if any).
        goal: the bound goal restricted to the active samples.
        params: the method's scalar parameters (weights, step sizes), after retries.
        extras: per-sample tensors prepared once (JND maps, bounds), compacted with the batch.
        iteration: 0-based iteration number.
    """

    x: torch.Tensor
    x0: torch.Tensor
    outputs: torch.Tensor
    goal: Goal
    params: Mapping[str, float]
    extras: dict[str, torch.Tensor]
    iteration: int


LossTerm = Callable[[Context], torch.Tensor]
"""A loss term maps a context to a per-sample loss ``[b]`` (to be minimised)."""


class Parametrisation(Protocol):
    """How the optimised variable ``v`` maps to the image."""

    def init(self, x0: torch.Tensor, params: Mapping[str, float], extras: dict[str, torch.Tensor],
             gen: torch.Generator) -> torch.Tensor: ...

    def image(self, v: torch.Tensor, x0: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Delta:
    """``x = clamp(x0 + v, 0, 1)``. ``init`` is zero, or uniform in ``±random_start`` (``params`` key,
    in [0,1] units), or uniform in ``±init_scale * extras['bound']`` (seed 004).

    Args:
        grad_at_bounds: ``torch.clamp`` gives *no* gradient to a value exactly at 0 or 1, so a
            saturated pixel (white sky, black shadow, or a value a projection just put on the
            box) gets ``sign(0) = 0`` and can never move back inside. With ``True`` the values in
            ``[-1e-6, 1 + 1e-6]`` keep the identity gradient (the image is the same clamped
            value); values further out still get none. This is what torchattacks and Foolbox do
            (they differentiate the image itself, not a clamp of it). Default ``False`` keeps
            the original behaviour for the methods configured before the flag existed.
    """

    grad_at_bounds: bool = False

    def init(self, x0: torch.Tensor, params: Mapping[str, float], extras: dict[str, torch.Tensor],
             gen: torch.Generator) -> torch.Tensor:
        r = float(params.get("random_start", 0.0))
        s = float(params.get("init_scale", 0.0))
        if r > 0:
            u = torch.rand(x0.shape, generator=gen, device=gen.device).to(x0.device)
            return (2 * u - 1) * r
        if s > 0 and "bound" in extras:
            u = torch.rand(x0.shape, generator=gen, device=gen.device).to(x0.device)
            return (2 * u - 1) * s * extras["bound"]
        return torch.zeros_like(x0)

    def image(self, v: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        y = x0 + v
        if not self.grad_at_bounds:
            return y.clamp(0.0, 1.0)
        inside = ((y >= -1e-6) & (y <= 1.0 + 1e-6)).to(y.dtype)
        # value: exactly clamp(y); gradient: identity inside the box (bounds included), 0 outside
        return y.detach().clamp(0.0, 1.0) + (y - y.detach()) * inside


@dataclass(frozen=True)
class Tanh:
    """C&W's change of variable ``x = (tanh(w) + 1) / 2`` (box constraint without clipping).

    ``init`` uses ``atanh`` of the image shrunk by ``1 - 1e-6`` so that exact 0 and 1 stay finite.
    """

    def init(self, x0: torch.Tensor, params: Mapping[str, float], extras: dict[str, torch.Tensor],
             gen: torch.Generator) -> torch.Tensor:
        return torch.atanh((2 * x0 - 1) * (1 - 1e-6))

    def image(self, v: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(v) + 1) / 2


# ----------------------------------------------------------------------------------
# Update rules: per-sample state as tensors, so the batch can be compacted
# ----------------------------------------------------------------------------------
class UpdateRule(Protocol):
    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def step(self, v: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor],
             params: Mapping[str, float], it: int, ctx: StepInfo) -> torch.Tensor: ...


@dataclass
class StepInfo:
    """Extra facts an update rule may use: the clean image, the candidate's current image,
    the victim and the bound goal of the active samples (DeepFool-style rules need the victim)."""

    x0: torch.Tensor
    x: torch.Tensor
    extras: dict[str, torch.Tensor]
    victim: nn.Module | None = None
    goal: Goal | None = None


@dataclass(frozen=True)
class GradientDescent:
    """``v <- v - lr * g`` (seed 000 eq. 3-4: plain gradient descent with step ``alpha``)."""

    lr_key: str = "lr"

    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def step(self, v, g, state, params, it, ctx):  # type: ignore[no-untyped-def]
        return v - float(params[self.lr_key]) * g


@dataclass(frozen=True)
class SignStep:
    """``v <- v - alpha * sign(g)`` (FGSM, BIM, PGD, MI-FGSM, DI²-FGSM); ``alpha = params[alpha_key]``
    (FGSM steps by its radius: ``alpha_key="eps"``)."""

    alpha_key: str = "alpha"

    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def step(self, v, g, state, params, it, ctx):  # type: ignore[no-untyped-def]
        return v - float(params[self.alpha_key]) * g.sign()


@dataclass(frozen=True)
class ValueStep:
    """FGV (seed 000 eq. 8): ``v <- v - alpha * g / max|g|`` per sample (the gradient's values, scaled)."""

    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def step(self, v, g, state, params, it, ctx):  # type: ignore[no-untyped-def]
        scale = g.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return v - float(params["alpha"]) * g / scale


@dataclass(frozen=True)
class Adam:
    """Adam with per-sample state (bias-corrected), written out so the batch can shrink."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"m": torch.zeros_like(v), "s": torch.zeros_like(v)}

    def step(self, v, g, state, params, it, ctx):  # type: ignore[no-untyped-def]
        t = it + 1
        state["m"].mul_(self.beta1).add_(g, alpha=1 - self.beta1)
        state["s"].mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        mhat = state["m"] / (1 - self.beta1**t)
        shat = state["s"] / (1 - self.beta2**t)
        return v - float(params["lr"]) * mhat / (shat.sqrt() + self.eps)


@dataclass(frozen=True)
class LevelStep:
    """Quantization-aware step: move only the ``n`` values with the largest ``|g|`` by one 8-bit level.

    ``n = max(1, fraction * numel)`` per sample, where ``fraction = params['fraction']``.
    A value moves only if it stays in [0,1] and within ``params['max_levels']`` levels of the
    clean value. The image is therefore always exactly an 8-bit image.
    """

    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def step(self, v, g, state, params, it, ctx):  # type: ignore[no-untyped-def]
        b = v.shape[0]
        direction = -g.sign()
        new = v + direction * LEVEL
        x_new = ctx.x0 + new
        max_levels = float(params.get("max_levels", 1.0))
        ok = (x_new >= -1e-6) & (x_new <= 1 + 1e-6) & (new.abs() <= max_levels * LEVEL + 1e-6) & (g != 0)
        # score = gain per unit of squared error: taking a value from u to u + 1 levels adds
        # (u + 1)^2 - u^2 = 2u + 1 to its squared error (a fresh value: 1)
        used = (v.abs() * 255.0).round()
        score = g.abs() * ok / (1.0 + 2.0 * used)
        cost = ctx.extras.get("cost")
        if cost is not None:  # trade gradient against visibility (see losses.ssim_change_cost)
            score = score / cost
        score = score.flatten(1)
        n = max(1, int(float(params["fraction"]) * score.shape[1]))
        top = score.topk(n, dim=1)
        mask = torch.zeros_like(score)
        mask.scatter_(1, top.indices, (top.values > 0).to(mask.dtype))
        mask = mask.view_as(v)
        out = v + mask * direction * LEVEL
        # keep v on the exact level grid relative to the (already 8-bit) clean image
        return torch.round(out * 255.0) / 255.0 if b else out


# ----------------------------------------------------------------------------------
# Gradient and input transforms (composable: momentum + input diversity + ...)
# ----------------------------------------------------------------------------------
class GradTransform(Protocol):
    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def __call__(self, g: torch.Tensor, state: dict[str, torch.Tensor],
                 params: Mapping[str, float]) -> torch.Tensor: ...


@dataclass(frozen=True)
class Momentum:
    """MI-FGSM: ``g_t = mu * g_{t-1} + g / ||g||_1`` (per sample)."""

    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"momentum": torch.zeros_like(v)}

    def __call__(self, g, state, params):  # type: ignore[no-untyped-def]
        norm = g.abs().flatten(1).mean(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))
        state["momentum"].mul_(float(params.get("mu", 1.0))).add_(g / norm)
        return state["momentum"].clone()


InputTransform = Callable[[torch.Tensor, Mapping[str, float], torch.Generator], torch.Tensor]


def input_diversity(x: torch.Tensor, params: Mapping[str, float], gen: torch.Generator) -> torch.Tensor:
    """DI²-FGSM's random resize-and-pad, applied with probability ``diversity_prob``.

    The image is resized to a random ``rnd`` in ``[size, size * resize_rate)`` (nearest) and
    zero-padded at a random place to ``size * resize_rate``, then used as the victim's input.
    """
    p = float(params.get("diversity_prob", 0.5))
    rate = float(params.get("resize_rate", 0.9))
    if torch.rand((), generator=gen, device=gen.device).item() >= p:
        return x
    h, w = x.shape[-2:]
    size = min(h, w)
    small, big = (int(size * rate), size) if rate < 1 else (size, int(size * rate))
    rnd = int(torch.randint(small, big, (), generator=gen, device=gen.device).item())
    resized = nn.functional.interpolate(x, size=(rnd, rnd), mode="nearest")
    rem = big - rnd
    top = int(torch.randint(0, rem + 1, (), generator=gen, device=gen.device).item())
    left = int(torch.randint(0, rem + 1, (), generator=gen, device=gen.device).item())
    return nn.functional.pad(resized, (left, rem - left, top, rem - top), value=0.0)


# ----------------------------------------------------------------------------------
# Projections
# ----------------------------------------------------------------------------------
Projection = Callable[[torch.Tensor, torch.Tensor, Mapping[str, float], dict[str, torch.Tensor]], torch.Tensor]


def project_linf(v: torch.Tensor, x0: torch.Tensor, params: Mapping[str, float],
                 extras: dict[str, torch.Tensor]) -> torch.Tensor:
    """Clip ``v`` to ``±eps`` and keep ``x0 + v`` in [0,1]."""
    eps = float(params["eps"])
    return (x0 + v.clamp(-eps, eps)).clamp(0, 1) - x0


def project_bound_round(v: torch.Tensor, x0: torch.Tensor, params: Mapping[str, float],
                        extras: dict[str, torch.Tensor]) -> torch.Tensor:
    """Seed 004: clip to the per-pixel bound ``±extras['bound']``, keep [0,1], round to 1/255."""
    b = extras["bound"]
    v = torch.maximum(torch.minimum(v, b), -b)
    x = quantize((x0 + v).clamp(0, 1))
    return x - x0


Prepare = Callable[[torch.Tensor, Mapping[str, float]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Retry:
    """Re-attack the samples that failed with changed parameters (seed 002 eq. 8).

    Each retry sets ``params[k] += shift[k]`` for the keys in ``shift`` whose value is
    non-zero (and keeps them at or above ``floor``), and ``params[k] *= scale[k]``.
    """

    shift: Mapping[str, float] = field(default_factory=dict)
    scale: Mapping[str, float] = field(default_factory=dict)
    max_tries: int = 10
    floor: float = 0.0

    def next(self, params: Mapping[str, float]) -> Mapping[str, float]:
        """The parameters of the next try: a copy of ``params`` of the same kind (typed parameters
        stay typed; a plain mapping gives a dict)."""
        out = dict(params)
        for k, d in self.shift.items():
            if out.get(k, 0.0) != 0.0:
                out[k] = max(self.floor, out[k] + d)
        for k, s in self.scale.items():
            out[k] = out.get(k, 0.0) * s
        if isinstance(params, Params):
            return params.updated({k: v for k, v in out.items() if k not in params or params[k] != v})
        return out


def l2_sphere_step(delta: torch.Tensor, g: torch.Tensor, alpha: float, eps_step: torch.Tensor, x0: torch.Tensor,
                   eps: torch.Tensor | None = None) -> torch.Tensor:
    """DDN's move (Rony et al. 2019, Algorithm 1), per sample: ``δ - α ε_step g/|g|``, rescaled to
    the L2 radius ``eps`` (default ``eps_step``), then clipped so that ``x0 + δ`` stays in [0,1]."""
    view = (delta.shape[0],) + (1,) * (delta.ndim - 1)
    eps = eps_step if eps is None else eps
    gn = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
    delta = delta - alpha * eps_step.view(view) * g / gn
    delta = delta * (eps.view(view) / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(view))
    return (x0 + delta).clamp(0.0, 1.0) - x0
