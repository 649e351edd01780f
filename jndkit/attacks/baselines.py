"""Baselines beyond the sign-gradient family: DeepFool, C&W-L2 and DDN (a minimum-norm L2 attack).

Each is a configuration of the one engine (:mod:`jndkit.attacks.engine`); nothing here loops over
iterations, checks success or keeps best-so-far images. Like every jndkit method, a sample stops at
its first *quantized* success (the 8-bit image that would be saved), so the minimum-norm methods
below are judged on the image a user gets, not on a float tensor.

=========  ===============================================================  =========================
name       update                                                           reference
=========  ===============================================================  =========================
deepfool   :class:`DeepFoolStep` (linearise the top-k logits, step to the    Moosavi-Dezfooli et al.,
           nearest linearised boundary, overshoot)                          CVPR 2016
cw         Adam on ``tanh`` variable, ``||x-x0||² + c·f(x)``, c ×10 retries  Carlini & Wagner, S&P 2017
ddn        :class:`DDNStep` (normalised gradient step, L2 radius schedule)   Rony et al., CVPR 2019
=========  ===============================================================  =========================

Measured (mobilenet_v2, untargeted, default goal margin 0.05; skimage coffee, chelsea, astronaut,
rocket resized to 224x224; saved-image success re-judged at batch 1; PSNR of the saved image, dB):

====================  =======  =================================
method (preset)       success  PSNR coffee/chelsea/astronaut/rocket
====================  =======  =================================
deepfool (default)    4/4      61.6 / 65.6 / 73.9 / 78.7
cw (default)          4/4      49.5 / 48.2 / 49.6 / 48.5
cw (pruned)           4/4      55.6 / 61.1 / 68.4 / 72.3
ddn (default)         4/4      61.1 / 64.7 / 71.2 / 69.9
ddn (pruned)          4/4      62.1 / 65.7 / 73.2 / 76.9
pgd (eps 4/255)       4/4      40.4 / 40.4 / 40.7 / 40.4
====================  =======  =================================

C&W's Adam moves every value by about ``lr`` in ``w`` at its first steps whatever ``c`` is, so its
first saved success comes early and dense (K = 1 on all four); the pruning pass is what makes it
competitive. DeepFool costs ``k + 2`` victim passes per step (about 6x DDN per photo here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .. import losses
from ..errors import InputError
from ..images import quantize
from .engine import Adam, Context, Delta, Method, Retry, StepInfo, Tanh, l2_sphere_step
from .registry import MethodSpec, Params, register

__all__ = ["CWParams", "DDNParams", "DDNStep", "DeepFoolParams", "DeepFoolStep", "cw", "cw_f", "ddn", "deepfool"]


# ---------------------------------------------------------------------------------- DeepFool
@dataclass(frozen=True)
class DeepFoolStep:
    r"""DeepFool's update (Moosavi-Dezfooli et al. 2016, Algorithm 2), over the top-k classes.

    With ``y`` the true class and ``C`` the ``k - 1`` classes ranked highest after ``y`` by the
    *clean* logits (fixed for the run, as in the authors' code, ``num_classes=10``), each step
    linearises ``f_j(x) = z_j(x) - z_y(x)`` at the current *saved* image ``q_i = quantize(x_i)``:

    .. math::
        w_j = \nabla_x f_j(q_i), \quad
        l = \arg\min_{j \in C} \frac{\kappa - f_j(q_i)}{\|w_j\|_2}, \quad
        r_i = \frac{\kappa - f_l(q_i) + 10^{-4}}{\|w_l\|_2^2}\, w_l,

    accumulates ``r_tot += r_i`` and sets ``x_{i+1} = clip(x0 + (1 + overshoot) r_tot, 0, 1)``.

    Three departures from the paper, all from jndkit's rule that only the saved image counts:

    * the linearisation point is the quantized iterate, not the float one. DeepFool's float
      iterate converges onto the boundary with a perturbation mostly below half an 8-bit level,
      which rounding erases (measured: coffee/mobilenet_v2 stalls at a saved margin of -3 while
      the float image sits on the boundary). Linearising at the saved image keeps stepping until
      the *saved* image crosses;
    * the boundary is the goal's, ``margin = kappa`` (the goal's success margin), so the paper's
      ``|f_l|`` (distance to ``f = 0``) becomes ``kappa - f_l``. While a sample runs its saved
      image has ``f_j <= margin <= kappa`` for every ``j``, so both agree in sign with the paper;
    * when ``patience`` steps in a row leave the saved image unchanged short of ``kappa`` (its rounding
      stalls while the float iterate is past the boundary), the step is completed on the 8-bit grid: the values of
      largest ``|w_l|`` move one more level until the linearised ``f_l`` reaches ``kappa``
      (:meth:`_complete`). Runs without such a stall are unchanged.

    Cost per step: one forward and ``k`` backward passes of the victim (``k = 1000`` on ImageNet
    is about 100x the cost of one gradient step, hence the top-k restriction).

    Parameters read from ``params``: ``k`` (classes considered, the true class included),
    ``overshoot``.

    Goals: the true class is read from the goal's ``weights()`` (``away`` one-hot), so this is
    the *untargeted* DeepFool. Any goal with a class to leave works (untargeted, top-k, margin
    goals; the steps keep going until the goal's own margin is reached). Goals without one
    (targeted, least-likely) are an :class:`~jndkit.errors.InputError`.
    """

    patience: int = 10
    """Steps in a row that leave the saved image unchanged before the step is completed on the grid.
    Measured on mobilenet_v2 (coffee, chelsea, astronaut, rocket at 224 px): completing at the first
    such step ends astronaut and rocket at K = 8 instead of 12 and 17 but at 73.3 / 77.0 dB instead of
    73.9 / 78.7 (the slow creep finds a less visible crossing); with 10 the four are bit for bit
    unchanged, and a linear victim stalled for good (see :meth:`_complete`) is completed 10 steps late."""

    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"r_total": torch.zeros_like(v)}

    def step(self, v: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor],
             params: Mapping[str, float], it: int, info: StepInfo) -> torch.Tensor:
        if info.victim is None or info.goal is None:
            raise InputError("deepfool needs the victim and the goal in StepInfo")
        k = int(params["k"])
        x = quantize(info.x.detach()).requires_grad_(True)
        kappa = float(info.goal.kappa)
        with torch.enable_grad():
            z = info.victim(x)
            n_classes = z.shape[1]
            if k < 2 or k > n_classes:
                raise InputError(f"deepfool k must be in 2..{n_classes} (classes considered, true class "
                                 f"included), got {k}")
            w = info.goal.weights(n_classes)
            if w is None or bool((w[0].sum(dim=1) == 0).any()):
                raise InputError("deepfool is untargeted: its goal needs a true class to leave "
                                 f"(untargeted, topK, margin goals), got {info.goal.describe()}")
            away = w[0].bool()
            y = away.float().argmax(dim=1)
            if "candidates" not in state:  # the first step sees the clean image: fix the classes
                state["candidates"] = z.detach().masked_fill(away, float("-inf")).topk(k - 1, dim=1).indices
            cls = torch.cat([y.view(-1, 1), state["candidates"]], dim=1)  # [b, k], true class first
            zk = z.gather(1, cls)
            grads = []
            for j in range(k):
                (gj,) = torch.autograd.grad(zk[:, j].sum(), x, retain_graph=j < k - 1)
                grads.append(gj.flatten(1))
        jac = torch.stack(grads, dim=1)  # [b, k, n]
        f = (zk[:, 1:] - zk[:, :1]).detach()  # [b, k-1]: f_j at the saved image
        gap = (kappa - f).clamp_min(0.0)  # [b, k-1]: kappa - f_j
        wdiff = jac[:, 1:] - jac[:, :1]  # [b, k-1, n]
        wnorm = wdiff.norm(dim=2).clamp_min(1e-12)
        best = (gap / wnorm).argmin(dim=1)
        idx = torch.arange(best.numel(), device=best.device)
        wl = wdiff[idx, best]
        coef = (gap[idx, best] + 1e-4) / wnorm[idx, best].pow(2)
        state["r_total"] += (coef.view(-1, 1) * wl).view_as(v)
        out = (1.0 + float(params["overshoot"])) * state["r_total"]
        q = x.detach()
        same = (state["last_q"].eq(q).flatten(1).all(dim=1) if "last_q" in state
                else torch.zeros_like(idx, dtype=torch.bool))  # the last step left the saved image as it was
        state["last_q"] = q.clone()
        state["stalls"] = torch.where(same, state.get("stalls", torch.zeros_like(f[:, 0])) + 1, 0.0)
        stalled = state["stalls"] >= self.patience
        if bool(stalled.any()):
            out = self._complete(out, stalled, q, info.x0, wl, f[idx, best], kappa, state, float(params["overshoot"]))
        return out

    @staticmethod
    def _complete(out: torch.Tensor, stalled: torch.Tensor, q: torch.Tensor, x0: torch.Tensor, wl: torch.Tensor,
                  f_l: torch.Tensor, kappa: float, state: dict[str, torch.Tensor], overshoot: float) -> torch.Tensor:
        """For the samples whose saved image did not change at the last step (``stalled``), the step on the
        8-bit grid: round ``x0 + out``, then move by one more level, in the direction of ``w_l``, the values
        of largest ``|w_l|`` until the linearised ``f_l`` reaches ``kappa`` (greedy: fewest values).

        Why: the float iterate can sit past the boundary while its rounding does not (on a linear victim
        with equal weights, every value at just above one level rounds to one level and the saved margin
        stays at 0.035 < kappa 0.05 for 48 steps: each step adds only ``(kappa - f(q)) / |w|^2``, far
        below the half level a value needs to round up). The accumulated ``r_total`` is set to the
        returned grid step (over ``1 + overshoot``), so the next step starts from the saved image.
        """
        view = (-1,) + (1,) * (out.ndim - 1)
        cur = (x0 + torch.round(out * 255.0) / 255.0).clamp(0.0, 1.0)  # the engine's saved image of ``out``
        w = wl.view_as(out)
        pred = f_l + (w * (cur - q)).flatten(1).sum(dim=1)  # linearised f_l at ``cur``
        need = (kappa + 1e-4 - pred) * stalled  # [b], <= 0 where nothing is needed
        step = w.sign() / 255.0
        nxt = cur + step
        ok = (nxt >= 0.0) & (nxt <= 1.0) & (w != 0)
        gain = (w.abs() / 255.0 * ok).flatten(1)
        vals, order = gain.sort(dim=1, descending=True)
        take = ((vals.cumsum(dim=1) - vals) < need.view(-1, 1)) & (vals > 0)
        mask = torch.zeros_like(gain).scatter(1, order, take.to(gain.dtype)).view_as(out)
        completed = torch.round((cur + mask * step - x0) * 255.0) / 255.0
        sel = (need > 0).view(view)  # stalled short of kappa (``need`` is 0 for the others)
        state["r_total"] = torch.where(sel, completed / (1.0 + overshoot), state["r_total"])
        return torch.where(sel, completed, out)


@dataclass(frozen=True, eq=False)
class DeepFoolParams(Params):
    """DeepFool: ``k`` classes considered (the true class included), ``overshoot``, at most ``steps`` steps."""

    k: int = 10
    overshoot: float = 0.02
    steps: int = 50


def deepfool(params: DeepFoolParams) -> Method:
    """DeepFool-L2 over the top-``k`` classes as an engine configuration.

    The engine's own loss gradient is not used by :class:`DeepFoolStep` (it queries the victim
    itself); the loss term is the goal margin only because the engine needs one. That costs one
    extra forward/backward per step, about ``1/k`` of the step's cost.
    """
    return Method(
        name="deepfool",
        loss_terms=((None, losses.margin_loss),),
        update=DeepFoolStep(),
        params=params,
        parametrisation=Delta(grad_at_bounds=True),
        max_iter=params.steps,
        description=BASELINE_TEXT["deepfool"],
    )


# ---------------------------------------------------------------------------------- C&W-L2
def cw_f(ctx: Context) -> torch.Tensor:
    r"""C&W's ``f_6`` for any goal: ``f(x) = max(-margin(z), -confidence)``.

    For the untargeted goal ``margin = max_{j≠y} z_j - z_y`` with the true logit masked by
    ``-inf`` (not by 0: with all other logits negative, a 0 mask would make the "best other
    class" the true class itself; torchattacks' issue #184), so
    ``f = max(z_y - max_{j≠y} z_j, -κ)``; for a targeted goal ``f = max(max_{j≠t} z_j - z_t, -κ)``,
    C&W eq. (6) exactly. ``κ = params['confidence']`` (logits) is C&W's confidence, not the
    goal's success margin ``kappa``.
    """
    return (-ctx.goal.margin(ctx.outputs)).clamp_min(-float(ctx.params["confidence"]))


@dataclass(frozen=True, eq=False)
class CWParams(Params):
    """C&W-L2: initial ``c``, C&W's ``confidence`` (logits), Adam's ``lr``, ``steps`` per try, ``retries``
    with ``c`` x 10, and whether to ``prune`` after success."""

    c: float = 0.1
    confidence: float = 0.0
    lr: float = 0.01
    steps: int = 100
    retries: int = 3
    prune: bool = False


def cw(params: CWParams) -> Method:
    r"""Carlini & Wagner L2 as an engine configuration.

    .. math::
        \min_w \; \|x(w) - x_0\|_2^2 + c \cdot f(x(w)), \qquad x(w) = \tfrac12(\tanh w + 1)

    with Adam (``lr``) on ``w`` (:class:`~jndkit.attacks.engine.Tanh`: ``atanh`` of the image
    shrunk by ``1 - 1e-6``, so exact 0 and 1 stay finite) and :func:`cw_f`.

    **The search over c.** C&W run a per-sample binary search (9 steps of 10 000 iterations)
    that lowers ``c`` after a success to find a smaller perturbation. jndkit stops a sample at
    its first quantized success, so a success is never re-run with a lower ``c``; what remains of
    the search is the upward half, expressed with the engine's :class:`Retry`: a sample that fails
    within ``steps`` iterations is re-attacked from ``x0`` with ``c × 10`` (``retries`` times).
    Start ``c`` low to keep the search meaningful. ``prune=1`` runs the engine's pruning pass
    (undo the changed values the saved success does not need).
    """
    return Method(
        name="cw",
        loss_terms=((None, losses.term_l2), ("c", cw_f)),
        update=Adam(),
        params=params,
        parametrisation=Tanh(),
        retry=Retry(scale={"c": 10.0}, max_tries=params.retries),
        max_iter=params.steps,
        prune=params.prune,
        description=BASELINE_TEXT["cw"],
    )


# ---------------------------------------------------------------------------------- DDN
@dataclass(frozen=True)
class DDNStep:
    r"""Decoupled Direction and Norm (Rony et al. 2019, Algorithm 1), as an update rule.

    Per sample, with ``g`` the gradient of the goal loss (to be minimised), ``n`` the number of
    values and ``ε`` the current L2 radius:

    .. math::
        \delta \leftarrow \delta - \alpha_t\,\varepsilon\,\frac{g}{\|g\|_2}, \quad
        \varepsilon \leftarrow (1 \pm \gamma)\,\varepsilon, \quad
        \delta \leftarrow \varepsilon\,\frac{\delta}{\|\delta\|_2}, \quad
        \delta \leftarrow \mathrm{clip}(x_0 + \delta, 0, 1) - x_0,

    ``α_t`` cosine-annealed from ``alpha`` to ``alpha_min`` over ``steps``. DDN lowers ``ε`` (−γ)
    when the current image is adversarial and raises it (+γ) otherwise. In jndkit a sample whose
    saved image is adversarial has already stopped, so every sample still running takes the +γ
    branch: ``ε_t = ε_0 (1 + γ)^t`` and the first quantized success is found at the smallest
    radius on this schedule (within a factor ``1 + γ``).

    Two adaptations, both because here ``ε`` starts small rather than at DDN's ``ε_0 = 1``:
    ``ε_0 = init_rms / 255 · sqrt(n)`` (a root-mean-square change of ``init_rms`` 8-bit levels,
    so the same setting fits any resolution), and the step is ``α_t ε`` (relative to the radius)
    instead of an absolute ``α_t``, which at ``ε ≪ 1`` would discard the accumulated direction
    at every projection.

    Parameters read from ``params``: ``init_rms``, ``gamma``, ``alpha``, ``alpha_min``, ``steps``.
    """

    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"eps": torch.full((v.shape[0],), float("nan"), device=v.device, dtype=v.dtype)}

    def step(self, v: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor],
             params: Mapping[str, float], it: int, info: StepInfo) -> torch.Tensor:
        n = v[0].numel()
        eps = state["eps"]
        eps[eps.isnan()] = float(params["init_rms"]) / 255.0 * math.sqrt(n)
        steps = max(1, int(params.get("steps", 100)))
        a0, a1 = float(params["alpha"]), float(params["alpha_min"])
        alpha = a1 + (a0 - a1) * 0.5 * (1.0 + math.cos(math.pi * min(it, steps) / steps))
        step_eps = eps.clone()
        eps.mul_(1.0 + float(params["gamma"]))
        return l2_sphere_step(v, g, alpha, step_eps, info.x0, eps)


@dataclass(frozen=True, eq=False)
class DDNParams(Params):
    """DDN: the first radius as an RMS change ``init_rms`` (8-bit levels), its growth ``gamma`` per step,
    the step fraction ``alpha`` cosine-annealed to ``alpha_min`` over ``steps``, ``refine`` steps of
    decreasing radius after success, and whether to ``prune``."""

    init_rms: float = 0.1
    gamma: float = 0.05
    alpha: float = 1.0
    alpha_min: float = 0.01
    steps: int = 100
    refine: int = 0
    prune: bool = False


def ddn(params: DDNParams) -> Method:
    """DDN-L2 (Rony et al. 2019) as an engine configuration: :class:`DDNStep` on the goal's
    cross-entropy loss, from ``x0``."""
    return Method(
        name="ddn",
        loss_terms=((None, losses.goal_loss),),
        update=DDNStep(),
        params=params,
        parametrisation=Delta(grad_at_bounds=True),
        max_iter=params.steps,
        refine=params.refine,
        prune=params.prune,
        description=BASELINE_TEXT["ddn"],
    )


# ---------------------------------------------------------------------------------- registry
BASELINE_TEXT = {
    "deepfool": "DeepFool-L2 (Moosavi-Dezfooli 2016) over the top-k classes: step to the nearest "
    "linearised boundary, overshoot; untargeted",
    "cw": "C&W-L2 (Carlini & Wagner 2017): Adam on tanh variable, ||x-x0||^2 + c*max(-margin, -confidence), "
    "c x10 for failures",
    "ddn": "DDN-L2 (Rony 2019): normalised gradient steps on an L2 sphere whose radius grows until the "
    "saved image fools the model",
}

DEEPFOOL_PRESETS: dict[str, DeepFoolParams] = {
    "default": DeepFoolParams(),
    "fast": DeepFoolParams(k=4),
}
CW_PRESETS: dict[str, CWParams] = {
    "default": CWParams(),
    "pruned": CWParams(prune=True),
    "torchattacks": CWParams(c=1.0, steps=50, retries=0),
}
DDN_PRESETS: dict[str, DDNParams] = {
    "default": DDNParams(),
    "pruned": DDNParams(prune=True),
    # DDN's decreasing radius after the first saved success (engine.refine), then pruning
    "refined": DDNParams(refine=100, prune=True),
}

register(MethodSpec("deepfool", deepfool, DEEPFOOL_PRESETS, "default", BASELINE_TEXT["deepfool"], "baseline"))
register(MethodSpec("cw", cw, CW_PRESETS, "default", BASELINE_TEXT["cw"], "baseline"))
register(MethodSpec("ddn", ddn, DDN_PRESETS, "default", BASELINE_TEXT["ddn"], "baseline"))
