"""The one attack engine.

Every method (the seeds' and the baselines) is a :class:`Method`: a small
configuration of loss terms, an update rule, gradient transforms and a
projection. :func:`run_attack` owns everything else, once:

* a batched loop with a per-sample *active* mask; finished samples leave the
  batch (every per-sample tensor, optimiser state included, is compacted);
* success is decided on the **quantized** image (round to 1/255, what a saved
  PNG holds), optionally also after a robustness transform (JPEG re-encoding);
  a sample stops at its first quantized success and its iteration ``K`` is
  recorded (seed 000's JND image). A sample whose float image would succeed
  but whose quantized image does not keeps iterating;
* the quantized check is skipped for a sample whose quantized image did not
  change since its last check (its answer cannot have changed), which makes
  methods with sub-level steps nearly free to check;
* best-so-far per sample (the highest-margin quantized image) for samples that
  never succeed;
* retries with weaker perceptual weight for samples that failed (seed 002's
  ``beta += delta`` schedule, generalised: :class:`Retry`);
* an optional refinement pass that keeps lowering the L2 norm of a success,
  DDN's decreasing radius (:func:`refine`);
* an optional pruning pass that undoes changed values the success does not
  need (:func:`prune`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from .._checks import check_image_batch
from ..errors import InputError
from ..goals import Goal
from ..images import quantize

LEVEL = 1.0 / 255.0

ProgressFn = Callable[[int, int, dict[str, Any]], None]


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
             params: Mapping[str, float], it: int, ctx: "StepInfo") -> torch.Tensor: ...


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
    """``v <- v - alpha * sign(g)`` (FGSM, BIM, PGD, MI-FGSM, DI²-FGSM)."""

    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def step(self, v, g, state, params, it, ctx):  # type: ignore[no-untyped-def]
        return v - float(params["alpha"]) * g.sign()


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

    def __call__(self, g: torch.Tensor, state: dict[str, torch.Tensor], params: Mapping[str, float]) -> torch.Tensor: ...


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


# ----------------------------------------------------------------------------------
# Methods and retries
# ----------------------------------------------------------------------------------
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

    def next(self, params: Mapping[str, float]) -> dict[str, float]:
        out = dict(params)
        for k, d in self.shift.items():
            if out.get(k, 0.0) != 0.0:
                out[k] = max(self.floor, out[k] + d)
        for k, s in self.scale.items():
            out[k] = out.get(k, 0.0) * s
        return out


Prepare = Callable[[torch.Tensor, Mapping[str, float]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Method:
    """A method is a configuration of the engine.

    Args:
        name: its name in reports.
        loss_terms: ``(weight_key, term)`` pairs; the objective is
            ``sum(params[weight_key] * term(ctx))`` (``weight_key=None`` means weight 1).
        update: the update rule.
        params: scalar parameters (weights, steps, eps, ...).
        parametrisation: how the variable maps to the image (:class:`Delta` or :class:`Tanh`).
        projection: applied to the variable after each update (optional).
        grad_transforms: applied to the gradient in order (momentum, ...).
        input_transform: applied to the image before the victim, for the gradient only (DI).
        prepare: computes per-sample extras once from the clean batch (JND maps, bounds).
        retry: what to change when re-attacking the failures.
        max_iter: default iteration budget.
        refine: after success, this many steps of :func:`refine` (0: none).
        prune: undo changed values that success does not need, after success (and refinement).
        check_every: quantized success check period (1 = every iteration).
        on_grid: the candidate image is always an exact 8-bit image (e.g. one-level steps from a
            quantized x0), so the gradient forward doubles as the success check.
        description: one line for ``jndkit methods``.
    """

    name: str
    loss_terms: tuple[tuple[str | None, LossTerm], ...]
    update: Any
    params: Mapping[str, float] = field(default_factory=dict)
    parametrisation: Any = Delta()
    projection: Projection | None = None
    grad_transforms: tuple[Any, ...] = ()
    input_transform: InputTransform | None = None
    prepare: Prepare | None = None
    retry: Retry | None = None
    max_iter: int = 100
    refine: int = 0
    prune: bool = False
    check_every: int = 1
    on_grid: bool = False
    description: str = ""

    def with_params(self, **changes: float) -> "Method":
        """A copy with some parameters changed (unknown names are an error)."""
        unknown = set(changes) - set(self.params)
        if unknown:
            raise InputError(f"method {self.name} has no parameter(s) {sorted(unknown)}; it has {sorted(self.params)}")
        return dataclasses.replace(self, params={**self.params, **changes})

    def objective(self, ctx: Context) -> torch.Tensor:
        total = torch.zeros(ctx.x.shape[0], device=ctx.x.device)
        for key, term in self.loss_terms:
            w = 1.0 if key is None else float(ctx.params[key])
            if w != 0.0:
                total = total + w * term(ctx)
        return total


# ----------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------
@dataclass
class AttackResult:
    """Per-batch result of :func:`run_attack`; index ``i`` is sample ``i`` of the input.

    Attributes:
        x_adv: ``[B,3,H,W]`` adversarial images, already quantized (the 8-bit image to save).
        success: ``bool[B]``: the quantized image reaches the goal (and survives the robustness
            transform, if one was given).
        iterations: ``[B]`` iteration ``K`` of the first quantized success (seed 000's JND
            image), counted over all tries; the budget used for failures.
        margin: ``[B]`` goal margin of ``x_adv`` (logits; > kappa means reached).
        tries: ``[B]`` how many runs the sample needed (1 = no retry).
        seconds: wall time of the whole batch divided by the batch size.
        params: per sample, the parameters of the run that produced ``x_adv``.
        history: per iteration, the mean goal margin over the samples still running
            (for confidence-along-iterations plots) when ``record_history`` was asked.
        outputs: the victim's outputs on ``x_adv`` (logits for classifiers); ``topk()`` reads
            the final top-5 with probabilities from them.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    iterations: torch.Tensor
    margin: torch.Tensor
    tries: torch.Tensor
    seconds: float
    params: list[dict[str, float]]
    history: list[list[float]] = field(default_factory=list)
    outputs: torch.Tensor | None = None

    def topk(self, k: int = 5, labels: list[str] | None = None) -> list[list[tuple[str, float]]]:
        """Per sample, the victim's top-``k`` (label, probability) on ``x_adv`` (class outputs only)."""
        if self.outputs is None or self.outputs.ndim != 2:
            return [[] for _ in range(self.x_adv.shape[0])]
        probs = self.outputs.float().softmax(dim=1)
        vals, idx = probs.topk(min(k, probs.shape[1]), dim=1)
        return [[(labels[j] if labels is not None else str(j), p) for j, p in zip(i, v)]
                for v, i in zip(vals.tolist(), idx.tolist())]


def _take(d: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in d.items()}


def _victim_of(victim: nn.Module, idx: torch.Tensor) -> nn.Module:
    """The victim of samples ``idx``.

    A victim with per-sample state (a face victim holds each photo's landmarks; a detector
    victim each photo's boxes) says so with a true ``per_sample`` attribute and supports
    ``victim[idx]``, like a bound goal; the engine then indexes it wherever it indexes the goal.
    Any other victim is the same function for every sample and is returned as it is.
    """
    return victim[idx] if getattr(victim, "per_sample", False) else victim  # type: ignore[index]


@dataclass
class _ActiveSet:
    """The samples of one run still iterating, and everything held per sample for them.

    Every field is indexed by position in the active set; ``take(idx)`` keeps positions ``idx``
    (in that order) of all of them at once, so no per-sample tensor can be forgotten when the
    batch shrinks (the optimiser and gradient-transform states included).

    Attributes:
        index: ``long[b]`` position of each sample in the run's batch.
        v: ``[b,...]`` the optimised variable (detached).
        x0: ``[b,3,H,W]`` clean images.
        goal: the bound goal restricted to these samples.
        victim: the victim of these samples (:func:`_victim_of`).
        extras: per-sample tensors of the method (JND maps, bounds).
        state: the update rule's per-sample state (Adam moments).
        tstates: one per-sample state per gradient transform (momentum).
        last_q: ``[b,3,H,W]`` the 8-bit image of each sample at its last check.
    """

    index: torch.Tensor
    v: torch.Tensor
    x0: torch.Tensor
    goal: Goal
    victim: nn.Module
    extras: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    tstates: list[dict[str, torch.Tensor]]
    last_q: torch.Tensor

    def __len__(self) -> int:
        return int(self.index.numel())

    def take(self, idx: torch.Tensor) -> "_ActiveSet":
        """The samples at positions ``idx`` (``long[k]``) of this set."""
        return _ActiveSet(index=self.index[idx], v=self.v.detach()[idx], x0=self.x0[idx], goal=self.goal[idx],
                          victim=_victim_of(self.victim, idx), extras=_take(self.extras, idx),
                          state=_take(self.state, idx), tstates=[_take(st, idx) for st in self.tstates],
                          last_q=self.last_q[idx])


@dataclass(frozen=True)
class IterationInfo:
    """What :func:`run_attack`'s ``on_iteration`` hook sees at each gradient step of a run.

    A sample is reported at iterations ``0 .. K-1`` when its first saved success comes at
    ``K`` (checked after update ``K``). With the fused check (``Method.on_grid``) the forward of
    iteration ``K`` is itself that check, so the sample is reported once more, at ``K``.

    Attributes:
        iteration: updates applied so far in this run (0 = the starting image).
        attempt: 0 for the first run, ``k`` for the ``k``-th retry.
        active: ``long[b]`` indices, in the batch given to :func:`run_attack`, of the samples
            still running (row ``i`` of the tensors below is sample ``active[i]``).
        x: ``[b,3,H,W]`` the candidate images in [0,1] (float: not yet quantized; detached).
        outputs: the victim's outputs on the candidates (after the method's input transform,
            if it has one), detached: the forward pass of this gradient step, no extra cost.
        goal: the bound goal restricted to the active samples.
    """

    iteration: int
    attempt: int
    active: torch.Tensor
    x: torch.Tensor
    outputs: torch.Tensor
    goal: Goal

    def margin(self) -> torch.Tensor:
        """``[b]`` the goal margin of ``outputs`` (> ``goal.kappa`` means the float candidate reaches it)."""
        return self.goal.margin(self.outputs)


IterationFn = Callable[[IterationInfo], None]
"""``on_iteration(info)``: called once per gradient step with :class:`IterationInfo`."""


Transform = Callable[[torch.Tensor], torch.Tensor]
Robust = Transform | Sequence[Transform] | None
"""What success must survive: nothing, one transform of the 8-bit image (a JPEG re-encoding), or a
sequence of them (an upload suite: success must hold after *each*)."""


def _transforms(robust: Robust) -> tuple[Transform, ...]:
    if robust is None:
        return ()
    if callable(robust):
        return (robust,)
    return tuple(robust)


@torch.no_grad()
def robust_margin(victim: nn.Module, goal: Goal, xq: torch.Tensor, robust: Robust,
                  outputs: torch.Tensor | None = None) -> torch.Tensor:
    """The goal margin of the 8-bit images ``xq`` that must also hold after each transform of
    ``robust``: the minimum over the image itself and every transform of it. This is the one
    place the engine (checks, refinement, pruning, final margins) computes it.

    ``outputs``: the victim's outputs on ``xq`` when already computed. A sample whose margin is
    already below ``goal.kappa`` is not transformed further (it failed whatever the rest
    gives), so for failing samples the value is the minimum over the transforms evaluated so far:
    an upper bound of the full minimum, and exact for every sample that reaches the goal.
    """
    m = goal.margin(victim(xq) if outputs is None else outputs).clone()
    for t in _transforms(robust):
        alive = (m > goal.kappa).nonzero().squeeze(1)
        if alive.numel() == 0:
            break
        mt = goal[alive].margin(_victim_of(victim, alive)(t(xq[alive])))
        m[alive] = torch.minimum(m[alive], mt)
    return m


@torch.no_grad()
def _evaluate(victim: nn.Module, goal: Goal, xq: torch.Tensor,
              robust: Robust) -> tuple[torch.Tensor, torch.Tensor]:
    """Margin and reached on the quantized image (and after each robust transform: all must hold)."""
    margin = robust_margin(victim, goal, xq, robust)
    return margin, margin > goal.kappa


def _run_once(method: Method, victim: nn.Module, goal: Goal, x0: torch.Tensor, params: Mapping[str, float],
              extras: dict[str, torch.Tensor], max_iter: int, gen: torch.Generator,
              robust: Robust, progress: ProgressFn | None,
              offset: int, total: int, history: list[list[float]] | None,
              clean_out: torch.Tensor | None = None,
              on_iteration: IterationFn | None = None, attempt: int = 0,
              index_map: torch.Tensor | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One run over the batch. Returns (x_adv quantized, success, K, margin).

    ``clean_out``: the victim's outputs on ``x0`` when ``x0`` is already an 8-bit image (then
    they are its answer at iteration 0, and that check needs no forward pass of its own).
    ``on_iteration``, ``attempt``: the hook of :func:`run_attack` and the retry number it reports;
    ``index_map`` ``long[B]``: the caller's index of each sample of this run (default: itself).
    """
    b = x0.shape[0]
    dev = x0.device
    if index_map is None:
        index_map = torch.arange(b, device=dev)
    x_best = quantize(x0).clone()
    success = torch.zeros(b, dtype=torch.bool, device=dev)
    iters = torch.full((b,), max_iter, dtype=torch.long, device=dev)
    best_margin = torch.full((b,), float("-inf"), device=dev)

    # Iteration 0: the clean (quantized) image may already satisfy the goal.
    if clean_out is not None and robust is None:
        m0 = goal.margin(clean_out)
        r0 = m0 > goal.kappa
    else:
        m0, r0 = _evaluate(victim, goal, x_best, robust)
    best_margin.copy_(m0)
    success |= r0
    iters[r0] = 0

    active = (~success).nonzero().squeeze(1)
    v = method.parametrisation.init(x0[active], params, _take(extras, active), gen)
    aset = _ActiveSet(index=active, v=v, x0=x0[active], goal=goal[active], victim=_victim_of(victim, active),
                      extras=_take(extras, active), state=method.update.init(v),
                      tstates=[t.init(v) for t in method.grad_transforms], last_q=x_best[active].clone())

    # Fused check: when the candidate image is always exactly an 8-bit image (``method.on_grid``,
    # a quantized x0, no robustness transform, no input transform), the forward pass that
    # computes the gradient at iteration ``it`` already is the victim's answer on the saved image
    # after ``it`` updates, so the separate check forward is skipped.
    fused = (method.on_grid and robust is None and method.input_transform is None
             and bool(torch.equal(x0, quantize(x0))))

    def record(cidx: torch.Tensor, m: torch.Tensor, r: torch.Tensor, xq: torch.Tensor, k: int) -> None:
        """Book the checked samples ``cidx`` (positions in the active set) at iteration ``k``."""
        orig = aset.index[cidx]
        better = m > best_margin[orig]
        upd = better | r
        x_best[orig[upd]] = xq[upd]
        best_margin[orig] = torch.maximum(best_margin[orig], m)
        best_margin[orig[r]] = m[r]
        success[orig[r]] = True
        iters[orig[r]] = k
        if history is not None:
            history.append([float(m.mean())])

    def report(it: int) -> None:
        if progress is not None:
            progress(offset + it + 1, total, {"active": len(aset), "succeeded": int(success.sum())})

    it = 0
    for it in range(max_iter):
        if len(aset) == 0:
            break
        v = aset.v.detach().requires_grad_(True)
        x = method.parametrisation.image(v, aset.x0)
        x_in = method.input_transform(x, params, gen) if method.input_transform else x
        with torch.enable_grad():
            outputs = aset.victim(x_in)
        if on_iteration is not None:
            on_iteration(IterationInfo(iteration=it, attempt=attempt, active=index_map[aset.index],
                                       x=x.detach(), outputs=outputs.detach(), goal=aset.goal))
        # the samples this forward already shows reached (fused check) leave before the gradient
        cur = aset
        if fused and it > 0:
            with torch.no_grad():
                m = aset.goal.margin(outputs.detach())
                r = m > aset.goal.kappa
                record(torch.arange(len(aset), device=dev), m, r, quantize(x.detach()), it)
            if r.any():
                keep = (~r).nonzero().squeeze(1)
                cur = aset.take(keep)
                if len(cur) == 0:
                    aset = cur
                    break
                outputs = outputs[keep]  # still differentiable: the gradient is of the full v
                x = x[keep]
        with torch.enable_grad():
            ctx = Context(x=x, x0=cur.x0, outputs=outputs, goal=cur.goal, params=params, extras=cur.extras,
                          iteration=it)
            loss = method.objective(ctx)
            (g,) = torch.autograd.grad(loss.sum(), v)
        g = g.detach()
        if cur is not aset:  # drop the samples that just succeeded
            g = g[keep]
        aset = cur
        for t, st in zip(method.grad_transforms, aset.tstates):
            g = t(g, st, params)
        with torch.no_grad():
            info = StepInfo(x0=aset.x0, x=x.detach(), extras=aset.extras, victim=aset.victim, goal=aset.goal)
            v = method.update.step(aset.v.detach(), g, aset.state, params, it, info)
            if method.projection is not None:
                v = method.projection(v, aset.x0, params, aset.extras)
            aset.v = v

            last = it + 1 == max_iter
            if (fused and not last) or ((it + 1) % method.check_every and not last):
                report(it)
                continue
            xq = quantize(method.parametrisation.image(v, aset.x0))
            changed = (xq != aset.last_q).flatten(1).any(dim=1)
            if changed.any():
                cidx = changed.nonzero().squeeze(1)
                m, r = _evaluate(_victim_of(aset.victim, cidx), aset.goal[cidx], xq[cidx], robust)
                aset.last_q[cidx] = xq[cidx]
                record(cidx, m, r, xq[cidx], it + 1)
                if r.any():
                    keep_full = torch.ones(len(aset), dtype=torch.bool, device=dev)
                    keep_full[cidx[r]] = False
                    aset = aset.take(keep_full.nonzero().squeeze(1))
            report(it)
    return x_best, success, iters, best_margin


def run_attack(
    method: Method,
    victim: nn.Module,
    goal: Goal,
    x0: torch.Tensor,
    max_iter: int | None = None,
    seed: int = 0,
    robust: Robust = None,
    retries: bool = True,
    progress: ProgressFn | None = None,
    record_history: bool = False,
    on_iteration: IterationFn | None = None,
) -> AttackResult:
    """Attack a batch ``x0`` ``[B,3,H,W]`` in [0,1] and return the quantized adversarial images.

    Args:
        method: the method configuration.
        victim: maps images to outputs (logits, embeddings). A victim with per-sample state
            (landmarks or boxes per photo) sets ``per_sample = True`` and supports ``victim[idx]``;
            the engine then restricts it to the samples it evaluates, as it does the goal.
        goal: an unbound goal (bound here to the clean outputs) or one already bound.
        max_iter: iteration budget per run (default: the method's).
        seed: seeds a private ``torch.Generator`` (random starts, input diversity): same seed,
            same input, same output.
        robust: optional transform of the quantized image (e.g. JPEG re-encoding) that must also
            reach the goal.
        retries: run the method's :class:`Retry` schedule on the failures.
        progress: ``progress(step, total, info)`` callback (no printing in the library).
        record_history: keep the mean margin along iterations.
        on_iteration: ``on_iteration(info)`` called at every gradient step of every run (retries
            included) with an :class:`IterationInfo`: the iteration, the indices (in ``x0``) of the
            samples still running, their candidate images and the victim's outputs on them. It
            observes only: the result is the same with or without it.
    """
    check_image_batch(x0, "x0")
    t0 = time.perf_counter()
    budget = int(max_iter if max_iter is not None else method.max_iter)
    if budget < 0:
        raise InputError(f"max_iter must be >= 0, got {budget}")
    x0 = x0.detach()
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        clean = victim(x0)
    if not goal.bound:
        goal = goal.bind(clean, victim)
    extras = method.prepare(x0, method.params) if method.prepare else {}
    b = x0.shape[0]
    params = dict(method.params)
    max_tries = 1 + (method.retry.max_tries if (retries and method.retry) else 0)
    total = budget * max_tries + max(0, method.refine)
    history: list[list[float]] | None = [] if record_history else None

    on_grid = bool(torch.equal(x0, quantize(x0)))
    x_adv, success, iters, margin = _run_once(method, victim, goal, x0, params, extras, budget, gen, robust,
                                              progress, 0, total, history, clean if on_grid else None,
                                              on_iteration=on_iteration)
    tries = torch.ones(b, dtype=torch.long)
    used = [dict(params) for _ in range(b)]
    spent = iters.clone()
    for k in range(1, max_tries):
        failed = (~success).nonzero().squeeze(1)
        if failed.numel() == 0:
            break
        params = method.retry.next(params)  # type: ignore[union-attr]
        xa, s, it_k, m = _run_once(method, _victim_of(victim, failed), goal[failed], x0[failed], params, _take(extras, failed), budget,
                                   gen, robust, progress, k * budget, total, history,
                                   clean[failed] if on_grid else None,
                                   on_iteration=on_iteration, attempt=k, index_map=failed)
        x_adv[failed] = torch.where(s.view(-1, 1, 1, 1) | (m > margin[failed]).view(-1, 1, 1, 1), xa, x_adv[failed])
        margin[failed] = torch.where(s | (m > margin[failed]), m, margin[failed])
        success[failed] = s
        spent[failed] = spent[failed] + it_k
        tries[failed] = k + 1
        for j, i in enumerate(failed.tolist()):
            used[i] = dict(params)
    if method.refine > 0 and bool(success.any()):
        done = success.nonzero().squeeze(1)
        on_refine = None if progress is None else (
            lambda step, _n, info: progress(total - method.refine + step, total, info))  # type: ignore[misc]
        x_adv[done] = refine(_victim_of(victim, done), goal[done], x0[done], x_adv[done], steps=method.refine,
                             robust=robust, progress=on_refine)
    ok = success.nonzero().squeeze(1) if method.prune else success[:0].nonzero().squeeze(1)
    changed = success.nonzero().squeeze(1) if (method.prune or method.refine > 0) else ok
    if ok.numel():
        cost = extras["cost"][ok] if "cost" in extras else None
        x_adv[ok] = prune(_victim_of(victim, ok), goal[ok], x0[ok], x_adv[ok], robust=robust, cost=cost)
    with torch.no_grad():
        final_outputs = victim(x_adv)
        if changed.numel():  # every refined or pruned state was checked; this is its margin on the final image
            margin[changed] = robust_margin(_victim_of(victim, changed), goal[changed], x_adv[changed], robust,
                                            outputs=final_outputs[changed])
    seconds = (time.perf_counter() - t0) / max(b, 1)
    return AttackResult(outputs=final_outputs, x_adv=x_adv, success=success, iterations=spent, margin=margin, tries=tries,
                        seconds=seconds, params=used, history=history or [])


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


def refine(victim: nn.Module, goal: Goal, x0: torch.Tensor, x_adv: torch.Tensor, steps: int = 100,
           gamma: float = 0.05, alpha: float = 0.5, alpha_min: float = 0.01,
           robust: Robust = None,
           progress: ProgressFn | None = None) -> torch.Tensor:
    """Lower the L2 norm of successful 8-bit images: the second half of DDN (Rony et al. 2019).

    The engine stops a sample at its first saved success, on a growing radius. From there DDN's
    own rule goes on: per sample, with ``ε`` the current radius (starting at ``|x_adv - x0|``)
    and ``g`` the goal loss's gradient at the current 8-bit image,
    ``δ ← δ - α_t ε g/|g|``, then ``ε ← (1 - γ) ε`` when that 8-bit image reaches the goal (and
    after ``robust``) and ``(1 + γ) ε`` when it does not, ``δ ← ε δ/|δ|``, clipped to the
    image. ``α_t`` is cosine-annealed from ``alpha`` to ``alpha_min``. It returns, per sample, the
    smallest-norm 8-bit image that was checked to reach the goal (``x_adv`` itself if none is
    smaller), so the output reaches the goal by construction. One victim pass per step (two with
    ``robust``), batched over samples.

    Measured on face descriptors, where the first success lies well above the minimum norm
    (dodging obama2.jpg: 100 steps lowered the norm by 0.7-2.2 dB, 300 steps by 0.1 dB more; over
    12 face samples +1.0 dB on average, docs/face.md), and on mobilenet_v2 (16 crops, untargeted:
    ``ddn:refined`` 69.24 dB against 67.13 for ``ddn``, at ten times the time; docs/benchmarks.md).
    Methods ask for it with ``Method.refine`` (``ddn:refined``; ``ddn`` on face goals).
    """
    if steps <= 0 or x_adv.shape[0] == 0:
        return x_adv
    q0 = quantize(x0)
    b = x_adv.shape[0]
    best = x_adv.clone()
    best_norm = (x_adv - q0).flatten(1).norm(dim=1)
    eps = best_norm.clone()
    delta = (x_adv - q0).clone()
    for t in range(steps):
        xq = quantize(q0 + delta).requires_grad_(True)
        with torch.enable_grad():
            out = victim(xq)
            (g,) = torch.autograd.grad(goal.loss(out).sum(), xq)
        with torch.no_grad():
            m = robust_margin(victim, goal, xq.detach(), robust, outputs=out.detach())
            reached = m > goal.kappa
            norm = (xq.detach() - q0).flatten(1).norm(dim=1)
            better = reached & (norm < best_norm)
            best[better] = xq.detach()[better]
            best_norm = torch.where(better, norm, best_norm)
            a = alpha_min + (alpha - alpha_min) * 0.5 * (1.0 + math.cos(math.pi * t / steps))
            eps = torch.where(reached, eps * (1.0 - gamma), eps * (1.0 + gamma))
            delta = l2_sphere_step(delta, g, a, eps, q0)
        if progress is not None:
            progress(t + 1, steps, {"phase": "refine", "active": b, "succeeded": b})
    return best


@torch.no_grad()
def prune(victim: nn.Module, goal: Goal, x0: torch.Tensor, x_adv: torch.Tensor,
          robust: Robust = None, max_evals: int = 14,
          cost: torch.Tensor | None = None, tolerance: float = 1 / 256) -> torch.Tensor:
    """Undo changed values that the success does not need (batched over samples).

    Per sample, the changed values are ranked by how much they help the goal, to first order
    (``grad(margin) * (x_adv - x0)`` per value, least useful first). A binary search then finds
    the largest ``k`` such that restoring the ``k`` least useful changes to their clean value
    still reaches the goal on the 8-bit image (and after ``robust``). Every accepted state was
    checked, so the output reaches the goal by construction. ``max_evals`` bounds the checks
    (a binary search over ``n`` changes needs ``log2(n)``: 14 covers 16k changed values); a
    sample stops searching once its bracket is narrower than ``tolerance * n`` changes (1/256:
    about 8 checks, for at most 0.4 % of the changes kept in excess; measured on 32 crops with
    mobilenet_v2: 67.37 dB against 67.38 dB for the full search).
    ``cost`` (``[B,C,H,W]``, positive), when given, divides the usefulness, so that of two
    changes that help equally the more visible one is undone first.
    """
    q0 = quantize(x0)
    b = x_adv.shape[0]
    if b == 0:
        return x_adv
    with torch.enable_grad():
        z = x_adv.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(goal.margin(victim(z)).sum(), z)
    diff = (x_adv - q0).flatten(1)
    changed = diff != 0
    useful = g.flatten(1) * diff
    if cost is not None:
        useful = useful / cost.flatten(1)
    useful = useful.masked_fill(~changed, float("inf"))
    order = useful.argsort(dim=1)  # least useful changed values first, unchanged last
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order).contiguous())
    n = changed.sum(dim=1)
    lo = torch.zeros(b, dtype=torch.long, device=x_adv.device)  # restoring lo changes is known to work
    hi = n.clone()  # restoring more than hi is known (or assumed) to fail
    slack = (n.to(torch.float64) * tolerance).floor().to(torch.long)
    flat_adv, flat_q0 = x_adv.flatten(1), q0.flatten(1)
    for _ in range(max_evals):
        todo = (hi - lo > slack).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        mid = (lo[todo] + hi[todo] + 1) // 2
        cand = torch.where(rank[todo] < mid[:, None], flat_q0[todo], flat_adv[todo]).view_as(x_adv[todo])
        _, r = _evaluate(_victim_of(victim, todo), goal[todo], cand, robust)
        lo[todo] = torch.where(r, mid, lo[todo])
        hi[todo] = torch.where(r, hi[todo], mid - 1)
    out = torch.where(rank < lo[:, None], flat_q0, flat_adv)
    return out.view_as(x_adv)
