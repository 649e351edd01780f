"""Seed methods mnd (seed 001), hvs (seed 002) and cv (seed 004), registered into the method registry.

Each is a configuration of the one engine (:mod:`jndkit.attacks.engine`): loss terms from
:mod:`jndkit.losses`, an update rule, a projection, per-image extras computed once in
``prepare`` and, for hvs, the retry schedule. Presets reproduce the papers' settings and
ablations by name; a ``default`` preset per method was chosen by measurement so that the
attack succeeds on the *saved* 8-bit image (see each section).

Measured with mobilenet_v2 on ``skimage.data`` photos resized to 224 x 224 (chelsea, coffee,
astronaut, rocket), untargeted unless stated, success checked on the quantized image:
see the ``*_PRESETS`` comments and ``tests/test_seed_methods.py``.

Goals: the methods never look at a goal's type. The goal each paper run was made for is
listed in :data:`PRESET_GOALS` (``recommended_goal(method, preset)`` gives its CLI spelling,
for :func:`jndkit.goals.parse_goal`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .. import losses
from ..errors import InputError
from ..perception import JND_MODELS, colour_variance_bound, jnd_map
from .engine import Adam, Delta, GradientDescent, Method, Prepare, Retry, project_bound_round
from .registry import MethodSpec, Params, register

# ---------------------------------------------------------------------------------- mnd (seed 001)
MND_TEXT = ("Seed 001 MND: gradient descent on L_adv (eq. 3 untargeted <y_gt, softmax+logits>, eq. 4 targeted "
            "-<y_t, softmax^r>) + b1*mean|Z-X| + b1_l2*rms(Z-X) + b2*(1-SSIM) + b3*mean|Sobel(Z)-Sobel(X)|")


@dataclass(frozen=True, eq=False)
class MNDParams(Params):
    """Seed 001: step ``lr``, targeted exponent ``r`` and the weights ``beta1`` (L1), ``beta1_l2`` (L2),
    ``beta2`` (SSIM), ``beta3`` (Sobel). Defaults: the paper's untargeted setting with ``lr = 1e-3``
    (the ``default`` preset, see :data:`MND_PRESETS`)."""

    lr: float = 1e-3
    r: float = 1.0
    beta1: float = 100.0
    beta1_l2: float = 0.0
    beta2: float = 100.0
    beta3: float = 100.0


def _mnd(params: MNDParams) -> Method:
    """Seed 001, eq. 1: ``min_Z L_adv(Z) + L_pqp(Z, X)`` by plain gradient descent (eq. 21).

    * ``L_adv`` (eq. 3-6): :func:`jndkit.losses.mnd_adversarial` with the goal's class weights:
      untargeted ``<y_gt, softmax(u) + u>``, targeted ``-<y_t, softmax(u)^r>`` (``params['r']``);
      the least-likely target of eq. 5 is the goal :class:`~jndkit.goals.LeastLikely`.
    * ``L_pqp`` (eq. 7): ``beta1 * ||Z-X||_1 - beta2 * SSIM(Z,X) + beta3 * ||g(Z)-g(X)||_1``, with
      the norms as means over the values (see :mod:`jndkit.losses`), SSIM as ``1 - SSIM`` (same
      gradient), ``g`` the unnormalised Sobel magnitude of eq. 15-17. ``beta1_l2`` weighs the l2
      deviation of eq. 9 (the ``l2`` ablations use it instead of ``beta1``).
    * Update (eq. 21): ``Z <- Z - lr * dL/dZ``; the image is kept in [0,1] (the final
      "projection into the feasible space") and every iterate is judged on its 8-bit rounding.
    """
    return Method(
        name="mnd",
        loss_terms=((None, losses.term_mnd_adversarial), ("beta1", losses.term_mean_l1),
                    ("beta1_l2", losses.term_rms_l2), ("beta2", losses.term_ssim),
                    ("beta3", losses.term_sobel)),
        update=GradientDescent(lr_key="lr"),
        params=params,
        max_iter=1000,
        description=MND_TEXT,
    )


_MND_U = MNDParams(lr=1e-4)
"""Seed 001 Sec. IV-B: untargeted beta1 = beta2 = beta3 = 100, learning rate 1e-4, at most 1000 iterations."""


def _mnd_ablation(beta1: float = 0.0, beta1_l2: float = 0.0, beta2: float = 0.0, beta3: float = 0.0) -> MNDParams:
    return _MND_U.replace(beta1=beta1, beta1_l2=beta1_l2, beta2=beta2, beta3=beta3)


MND_PRESETS: dict[str, MNDParams] = {
    # Measured: the paper's step 1e-4 moves most values by far less than one 8-bit level (0.0039)
    # per iteration. "default" keeps the paper's untargeted weights with a 10x step, lr = 1e-3:
    # on chelsea / coffee / astronaut / rocket (224 px, mobilenet_v2) it succeeds on the 8-bit
    # image after K = 20 / 13 / 6 / 2 iterations, PSNR 60.9 / 60.1 / 70.3 / 75.5 dB. lr = 3e-3 needs
    # K <= 7 at 58-68 dB, lr = 1e-2 K <= 2 at 53-60 dB.
    "default": _MND_U.replace(lr=1e-3),
    # Targeted, measured: the paper's targeted weights with lr = 0.1 reach the least-likely class of
    # chelsea / coffee on the 8-bit image at K = 23 / 19, PSNR 51.6 / 52.9 dB (lr = 1e-2 had not
    # reached it after 100 iterations). Use with the goal least-likely (or any targeted goal).
    "default-targeted": _MND_U.replace(lr=0.1, r=0.0625, beta1=2.0, beta2=0.1, beta3=2.0),
    "paper-untargeted": _MND_U,
    # Sec. IV-B: targeted (least-likely target, eq. 5), r = 0.0625, beta1 = beta3 = 2, beta2 = 0.1.
    "paper-targeted": _MND_U.replace(r=0.0625, beta1=2.0, beta2=0.1, beta3=2.0),
    # Sec. IV-C (face identification, targeted): beta1 = beta3 = 1, beta2 = 0.1.
    "paper-face-targeted": _MND_U.replace(r=0.0625, beta1=1.0, beta2=0.1, beta3=1.0),
    # Ablations of Sec. IV-A-2 with the untargeted weights (Tables I, II, VI, VII). The text of
    # "l1-norm + SSIM" says "the first and the third item ... beta2 = 0" and that of "l2-norm + SSIM"
    # "beta1 = 0"; both contradict their names and the tables' order, so the names are followed.
    "no-norm": _mnd_ablation(),
    "l1": _mnd_ablation(beta1=100.0),
    "l2": _mnd_ablation(beta1_l2=100.0),
    "ssim": _mnd_ablation(beta2=100.0),
    "l1+ssim": _mnd_ablation(beta1=100.0, beta2=100.0),
    "l2+ssim": _mnd_ablation(beta1_l2=100.0, beta2=100.0),
    "full": _mnd_ablation(beta1=100.0, beta2=100.0, beta3=100.0),
}


# ---------------------------------------------------------------------------------- hvs (seed 002)
HVS_DEFAULT_JND = "wu"
"""Seed 002 uses the learned RGB HVS-SD JND [38], which ships nowhere offline. The stand-in is Wu et
al.'s pattern-complexity model (cited by seed 002 as [33], the newest hand-crafted model), run per
RGB channel, so ``J`` has a threshold per colour channel as HVS-SD's three-channel map does."""

_HVS_BETAS = ("beta1", "beta2", "beta3", "beta1_orig", "beta2_orig")

HVS_TEXT = ("Seed 002 HVS-JND: gradient descent on alpha*CE + b1*L1 beyond J + b2*L2 beyond J + b3*Sobel beyond J, "
            "channel weights M = (3,5,1); failures retried with beta += delta until beta = 0")


def _hvs_prepare(jnd_model: str) -> Prepare:
    def prepare(x0: torch.Tensor, params: Mapping[str, float]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"jnd": jnd_map(x0, jnd_model).to(x0.dtype)}

    return prepare


def hvs_retry(params: Mapping[str, float]) -> Retry | None:
    """Seed 002 eq. 8: re-attack the failures with ``beta_i += delta`` for every non-zero ``beta_i``.

    ``max_tries = ceil(max beta / |delta|)``, floored at 0, so the last try has every beta at 0:
    a pure adversarial run (``alpha * L_adv``), the case that makes success 100 % by construction
    (as far as that run reaches the goal within the iteration budget). ``delta = 0`` disables retries.
    """
    delta = float(params.get("delta", 0.0))
    top = max(float(params.get(k, 0.0)) for k in _HVS_BETAS)
    if delta >= 0.0 or top <= 0.0:
        if delta > 0.0:
            raise InputError(f"hvs: delta must be <= 0 (beta decreases on failure), got {delta}")
        return None
    return Retry(shift=dict.fromkeys(_HVS_BETAS, delta), max_tries=math.ceil(top / -delta - 1e-9), floor=0.0)


def make_hvs(params: Mapping[str, float], jnd_model: str = HVS_DEFAULT_JND) -> Method:
    """Seed 002, eq. 1-2: ``min_Z alpha * L_adv + beta1 * L1(Z,X,J) + beta2 * L2(Z,X,J) + beta3 * G(Z,X,J)``.

    * ``L_adv``: the goal's cross-entropy loss (untargeted ``-CE(y)``, targeted ``CE(t)``), ``alpha = 1``.
    * ``L1`` (eq. 3-4, 7): ``mean M(n) * relu(|Z-X| - J)``; ``L2`` (eq. 5): its square;
      ``G`` (eq. 6): the same on Sobel magnitudes; ``M(r), M(g), M(b) = m_r, m_g, m_b`` (3, 5, 1).
      ``beta1_orig`` / ``beta2_orig`` weigh the plain ``mean |Z-X|`` / ``mean (Z-X)^2`` of the
      ``L1-orig`` / ``L2-orig`` ablations (no JND, no channel weights).
    * ``J = jnd_map(x0, jnd_model)`` is computed once per image (``extras['jnd']``).
    * Gradient descent ``Z <- Z - lr * grad`` (seed 002 gives no step size; ``lr`` was measured).
    * Failures are retried with ``beta += delta`` (eq. 8) until success, see :func:`hvs_retry`.

    Args:
        params: the parameters (see :data:`HVS_PRESETS`).
        jnd_model: one of :data:`jndkit.perception.JND_MODELS`.
    """
    if jnd_model not in JND_MODELS:
        raise InputError(f"hvs: jnd_model must be one of {', '.join(JND_MODELS)}, got {jnd_model!r}")
    return Method(
        name="hvs",
        loss_terms=(("alpha", losses.goal_loss), ("beta1", losses.term_jnd_l1), ("beta2", losses.term_jnd_l2),
                    ("beta3", losses.term_jnd_gradient), ("beta1_orig", losses.term_mean_l1),
                    ("beta2_orig", losses.term_mean_l2)),
        update=GradientDescent(lr_key="lr"),
        params=params if isinstance(params, Params) else dict(params),
        prepare=_hvs_prepare(jnd_model),
        retry=hvs_retry(params),
        max_iter=100,
        description=HVS_TEXT + f" (J: {jnd_model})",
    )


@dataclass(frozen=True, eq=False)
class HVSParams(Params):
    """Seed 002: step ``lr``, adversarial weight ``alpha``, channel weights ``m_r, m_g, m_b``, the weights
    ``beta1..3`` (L1, L2, Sobel beyond the JND map) and ``beta1_orig, beta2_orig`` (plain L1, L2 of the
    ablations), and the retry shift ``delta`` (eq. 8). Defaults: the ``default`` preset."""

    lr: float = 0.01
    alpha: float = 1.0
    m_r: float = 3.0
    m_g: float = 5.0
    m_b: float = 1.0
    beta1: float = 1500.0
    beta2: float = 1500.0
    beta3: float = 1500.0
    beta1_orig: float = 0.0
    beta2_orig: float = 0.0
    delta: float = -50.0


def _hvs(params: HVSParams) -> Method:
    return make_hvs(params, HVS_DEFAULT_JND)


_HVS_BASE = HVSParams(beta1=0.0, beta2=0.0, beta3=0.0)


def _hvs_run(beta: float, delta: float, *keys: str) -> HVSParams:
    return _HVS_BASE.updated({"delta": delta, **dict.fromkeys(keys, beta)})


_HVS_FULL = ("beta1", "beta2", "beta3")
HVS_PRESETS: dict[str, HVSParams] = {
    # Seed 002 gives no step size. Measured (chelsea / coffee / astronaut / rocket, 224 px,
    # mobilenet_v2, J = Wu): lr = 0.01 succeeds in the first try after K = 4 / 25 / 1 / 1 iterations,
    # PSNR 62.4 / 57.5 / 67.1 / 62.9 dB; lr = 0.1 gives 38-58 dB and lr = 1 23-39 dB (the
    # cross-entropy gradient reaches ~4 per value on mobilenet_v2). lr = 0.01 for every preset.
    "default": _hvs_run(1500.0, -50.0, *_HVS_FULL),
    # Sec. 4.1: untargeted beta_i = 1500, delta = -50; targeted beta_i = 30, delta = -1; alpha = 1.
    "paper-untargeted": _hvs_run(1500.0, -50.0, *_HVS_FULL),
    "paper-targeted": _hvs_run(30.0, -1.0, *_HVS_FULL),
    # Ablations of Sec. 4.1 (Table 1), untargeted weights. "-orig" = the plain loss without JND.
    "L1": _hvs_run(1500.0, -50.0, "beta1"),
    "L1-orig": _hvs_run(1500.0, -50.0, "beta1_orig"),
    "L2": _hvs_run(1500.0, -50.0, "beta2"),
    "L2-orig": _hvs_run(1500.0, -50.0, "beta2_orig"),
    "L1+L2": _hvs_run(1500.0, -50.0, "beta1", "beta2"),
    "L1+L2+G": _hvs_run(1500.0, -50.0, *_HVS_FULL),
}


# ---------------------------------------------------------------------------------- cv (seed 004)
CV_TEXT = ("Seed 004 colour variance: Adam on -CE + alpha*||v||_1/||pT||_1, v clipped to the CIEDE2000 "
           "colour-variance bound pT = m*cV and rounded to 1/255 every step")


def _cv_prepare(x0: torch.Tensor, params: Mapping[str, float]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        bound = colour_variance_bound(x0, n=int(params["n"]), s=float(params["s"]), T=float(params["m"]))
    return {"bound": bound.to(x0.dtype)}


@dataclass(frozen=True, eq=False)
class CVParams(Params):
    """Seed 004: bound ``m`` (grey levels at the pixel of largest colour variance), window ``n`` (odd),
    Gaussian sigma ``s``, random start ``init_scale`` (share of the bound), Adam's ``lr`` and the L1
    weight ``alpha``."""

    m: float = 50.0
    n: int = 5
    s: float = 1.0
    init_scale: float = 0.01
    lr: float = 0.003
    alpha: float = 1.0


def _cv(params: CVParams) -> Method:
    """Seed 004, Algorithm 1.

    * ``pT = m * cV``: :func:`~jndkit.perception.colour_variance_bound` with window ``n``, sigma
      ``s`` and ``T = m`` grey levels at the pixel of largest colour variance (``extras['bound']``).
    * ``v`` starts uniform in ``±init_scale * pT`` (``init_scale = 0.01``).
    * Adam (``lr``) on ``-CE(f(clamp(X + v)), c0) + alpha * ||v||_1 / ||pT||_1`` (the goal's loss is
      the cross-entropy term), then ``v <- round(clip(v, -pT, pT) * 255) / 255`` with the image
      kept in [0,1] (:func:`~jndkit.attacks.engine.project_bound_round`).
    * The stop condition is the goal: top-1 (``untargeted``), top-5 (``top5``), top-1 with a 50 %
      relative confidence gap (``relative:0.5``); see :data:`PRESET_GOALS`.
    """
    return Method(
        name="cv",
        loss_terms=((None, losses.goal_loss), ("alpha", losses.term_bound_l1)),
        update=Adam(),
        params=params,
        parametrisation=Delta(),
        projection=project_bound_round,
        prepare=_cv_prepare,
        max_iter=500,
        description=CV_TEXT,
    )


# The working note gives no values for m, alpha, the learning rate or T; the reference code's best
# run used a 5 x 5 window, s = 1, T = 50 grey levels (SPECS.md section 2). lr and alpha were measured.
# With rounding to 1/255 after every step, an Adam step below half a level (lr < 0.002) never moves a
# value, and Adam's first step has size lr for every value whatever its gradient: lr = 0.003 (0.77
# level) moves nearly every value with a non-zero bound by one level at the first step. On chelsea /
# coffee / astronaut / rocket (224 px, mobilenet_v2, untargeted) that succeeds at K = 1 / 2 / 1 / 1,
# PSNR 48.1 / 45.7 / 48.6 / 49.3 dB; lr = 0.01 gives 39-43 dB; alpha = 10 instead of 1 changed only
# coffee (K = 4, 49.4 dB).
_CV_BASE = CVParams()
CV_PRESETS: dict[str, CVParams] = {
    "default": _CV_BASE,
    "Top1-L1": _CV_BASE,
    "Top1-L1-50": _CV_BASE,
    "Top1-noL1": _CV_BASE.replace(alpha=0.0),
    "Top5-L1": _CV_BASE,
    "Top5-noL1": _CV_BASE.replace(alpha=0.0),
}


# ---------------------------------------------------------------------------------- goals of the paper runs
PRESET_GOALS: dict[tuple[str, str], str] = {
    ("mnd", "default-targeted"): "least-likely",
    ("mnd", "paper-targeted"): "least-likely",
    ("mnd", "paper-face-targeted"): "least-likely",
    ("hvs", "paper-targeted"): "least-likely",
    ("cv", "Top1-L1"): "untargeted",
    ("cv", "Top1-L1-50"): "relative:0.5",
    ("cv", "Top1-noL1"): "untargeted",
    ("cv", "Top5-L1"): "top5",
    ("cv", "Top5-noL1"): "top5",
}
"""The goal (CLI spelling, :func:`jndkit.goals.parse_goal`) each paper run was made for. Presets not
listed are meant for ``untargeted``. Seed 002 does not name its targeted class; least-likely is
seed 001's choice by the same authors."""


def recommended_goal(method: str, preset: str | None = None) -> str:
    """The goal a preset was made for (``"untargeted"`` unless :data:`PRESET_GOALS` says otherwise)."""
    return PRESET_GOALS.get((method, preset or "default"), "untargeted")


register(MethodSpec("mnd", _mnd, MND_PRESETS, "default", "Seed 001 MND (adversarial + L1 + SSIM + Sobel losses)"))
register(MethodSpec("hvs", _hvs, HVS_PRESETS, "default",
                    "Seed 002 HVS-JND (losses beyond a JND map, channel weights, beta retries)"))
register(MethodSpec("cv", _cv, CV_PRESETS, "default", "Seed 004 colour-variance bound (Algorithm 1)"))
