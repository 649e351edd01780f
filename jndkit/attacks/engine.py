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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._checks import check_image_batch
from ..errors import InputError
from ..goals import Goal
from ..images import quantize

# The pieces of a method and the success checks live in .parts and .polish (issue 11: no module
# above 500 lines); every name is re-exported here (``X as X``) so existing imports keep working.
from .parts import LEVEL as LEVEL
from .parts import Adam as Adam
from .parts import Context as Context
from .parts import Delta as Delta
from .parts import GradientDescent as GradientDescent
from .parts import GradTransform as GradTransform
from .parts import InputTransform as InputTransform
from .parts import LevelStep as LevelStep
from .parts import LossTerm as LossTerm
from .parts import Momentum as Momentum
from .parts import Parametrisation as Parametrisation
from .parts import Prepare as Prepare
from .parts import Projection as Projection
from .parts import Retry as Retry
from .parts import SignStep as SignStep
from .parts import StepInfo as StepInfo
from .parts import Tanh as Tanh
from .parts import UpdateRule as UpdateRule
from .parts import ValueStep as ValueStep
from .parts import input_diversity as input_diversity
from .parts import l2_sphere_step as l2_sphere_step
from .parts import project_bound_round as project_bound_round
from .parts import project_linf as project_linf
from .polish import ProgressFn as ProgressFn
from .polish import Robust as Robust
from .polish import Transform as Transform
from .polish import _evaluate as _evaluate
from .polish import _take as _take
from .polish import _transforms as _transforms
from .polish import _victim_of as _victim_of
from .polish import prune as prune
from .polish import refine as refine
from .polish import robust_margin as robust_margin
from .registry import Params


# ----------------------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------------------
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
    parametrisation: Any = Delta()  # noqa: RUF009 (Delta is a frozen dataclass: immutable, safe to share)
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

    def with_params(self, **changes: float) -> Method:
        """A copy with some parameters changed (unknown names are an error; typed parameters keep
        their types, see :class:`~jndkit.attacks.registry.Params`)."""
        unknown = set(changes) - set(self.params)
        if unknown:
            raise InputError(f"method {self.name} has no parameter(s) {sorted(unknown)}; it has {sorted(self.params)}")
        if isinstance(self.params, Params):
            return dataclasses.replace(self, params=self.params.updated(changes, self.name))
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
        return [[(labels[j] if labels is not None else str(j), p) for j, p in zip(i, v, strict=True)]
                for v, i in zip(vals.tolist(), idx.tolist(), strict=True)]


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

    def take(self, idx: torch.Tensor) -> _ActiveSet:
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
        for t, st in zip(method.grad_transforms, aset.tstates, strict=True):
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
    # typed parameters are immutable (retries make copies); a plain mapping is copied as before
    params: Mapping[str, float] = method.params if isinstance(method.params, Params) else dict(method.params)
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
        xa, s, it_k, m = _run_once(method, _victim_of(victim, failed), goal[failed], x0[failed], params,
                                   _take(extras, failed), budget,
                                   gen, robust, progress, k * budget, total, history,
                                   clean[failed] if on_grid else None,
                                   on_iteration=on_iteration, attempt=k, index_map=failed)
        x_adv[failed] = torch.where(s.view(-1, 1, 1, 1) | (m > margin[failed]).view(-1, 1, 1, 1), xa, x_adv[failed])
        margin[failed] = torch.where(s | (m > margin[failed]), m, margin[failed])
        success[failed] = s
        spent[failed] = spent[failed] + it_k
        tries[failed] = k + 1
        for i in failed.tolist():
            used[i] = dict(params)
    if method.refine > 0 and bool(success.any()):
        done = success.nonzero().squeeze(1)
        on_refine: ProgressFn | None = None
        if progress is not None:
            report_to = progress

            def on_refine(step: int, _n: int, info: dict[str, Any]) -> None:
                report_to(total - method.refine + step, total, info)

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
    return AttackResult(outputs=final_outputs, x_adv=x_adv, success=success, iterations=spent, margin=margin,
                        tries=tries,
                        seconds=seconds, params=used, history=history or [])
