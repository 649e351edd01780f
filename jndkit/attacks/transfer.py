"""Pieces for protection that transfers and survives uploads, and the protective method ``shield``.

Each piece plugs into the one engine (:mod:`.engine`); none is a new loop:

* :class:`BoundSignStep`: a sign step scaled per value by the perceptual budget
  (``v <- v - alpha * bound * sign(g)``), so every value moves in proportion to how much
  change the eye tolerates there;
* :func:`project_bound`: the projection onto the human-JND budget, ``|x - x0| <= bound``
  with ``bound`` floored to whole 8-bit levels, so the *saved* image never exceeds the map;
* :class:`TranslationInvariance`: TI-FGSM's gradient smoothing (Dong et al. 2019), a Gaussian
  whose width is given in the *model's* pixels and scaled to the photo's size;
* :func:`jnd_budget`: a ``prepare`` that computes the budget once per photo from a human JND
  map (:func:`jndkit.perception.jnd_map`) times ``strength``;
* the input transform is the upload suite's differentiable stand-in
  (:class:`jndkit.transforms.UploadStandIn`, expectation over transformation), and momentum is
  the engine's :class:`~.engine.Momentum`.

``shield`` composes them: the default of ``jndkit protect`` (see :data:`STRENGTHS`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .. import losses
from ..errors import InputError
from .engine import Delta, InputTransform, Method, Momentum, Prepare
from .registry import MethodSpec, Params, register

STRENGTHS: dict[str, float] = {"invisible": 0.5, "subtle": 0.75, "strong": 1.0}
"""``--strength``: the budget as a multiple of the human JND map (NAMM by default), per value.

Chosen by measurement (benchmarks/bench_world.py, docs/world.md), judged by the share of pixels
whose luma change exceeds the Chou-Li JND (SPECS.md §6) and by looking at the photos:

* ``invisible`` (0.5): no pixel above the Chou-Li JND, about 38 dB on 224-px crops;
* ``subtle`` (0.75): about 1 % of pixels above the Chou-Li JND, about 34.5 dB;
* ``strong`` (1.0, the whole NAMM map): 11-28 % of pixels above the Chou-Li JND, about 32 dB, and
  visible as a faint pattern in dark flat areas (NAMM's luminance adaptation allows 15-20 levels
  near black, which a modern display shows).

The full map is not the default because NAMM's threshold is the *sum* of luminance and texture
masking (less an overlap), which lies above Chou-Li's *maximum* rule almost everywhere.
"""

MODEL_SIZE = 224
"""TI's kernel width is given in pixels of a 224-px model input and scaled to the photo."""


def strength_ladder(spec: str | None, auto: Sequence[str]) -> list[float]:
    """The budgets to try for a ``--strength`` value, smallest first, as multiples of the human JND
    map: ``auto`` (or ``None``) gives :data:`STRENGTHS` of the names in ``auto``; a name or a number in
    (0, 10] is tried alone.

    Raises:
        InputError: not ``auto``, a name of :data:`STRENGTHS` or such a number.
    """
    spec = spec or "auto"
    if spec == "auto":
        return [STRENGTHS[n] for n in auto]
    if spec in STRENGTHS:
        return [STRENGTHS[spec]]
    try:
        v = float(spec)
    except ValueError:
        raise InputError(f"strength must be auto, {', '.join(STRENGTHS)} or a number, got {spec!r}") from None
    if not 0 < v <= 10:
        raise InputError(f"strength must be in (0, 10] times the JND, got {spec!r}")
    return [v]


def _bound(extras: Mapping[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    b = extras.get("bound")
    if b is None:
        raise InputError("this method needs a per-value budget (extras['bound']): build it with jnd_budget")
    return b.to(like.dtype)


@dataclasses.dataclass(frozen=True)
class BoundSignStep:
    """``v <- v - alpha * bound * sign(g)``: a sign step whose size is a fraction ``alpha``
    (``params['alpha']``) of each value's budget.

    With ``params['grey'] > 0`` the step is achromatic: the gradient is summed over R, G and B
    and the same change is made to the three channels of a pixel. The luma JND maps bound the
    change of luma only (the same threshold is repeated on the three channels); independent
    signs on R, G and B would add chroma changes no luma threshold covers, which show as
    coloured blotches in dark, flat regions (seen on scikit-image's coffee at half the NAMM
    budget). A grey change of ``d`` on every channel changes luma by exactly ``d`` and chroma not
    at all, so the luma budget is the whole budget.
    """

    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def step(self, v, g, state, params, it, ctx):  # type: ignore[no-untyped-def]
        if float(params.get("grey", 0.0)) > 0:
            g = g.sum(dim=1, keepdim=True).expand_as(g)
        return v - float(params["alpha"]) * _bound(ctx.extras, v) * g.sign()


def project_bound(v: torch.Tensor, x0: torch.Tensor, params: Mapping[str, float],
                  extras: dict[str, torch.Tensor]) -> torch.Tensor:
    """Clip ``v`` to ``±extras['bound']`` and keep ``x0 + v`` in [0,1].

    ``bound`` is a whole number of 8-bit levels (:func:`jnd_budget` floors it), and ``x0`` is an
    8-bit image, so rounding ``x0 + v`` to 8 bits never leaves the budget: the saved file
    satisfies ``|x - x0| <= bound`` exactly.
    """
    b = _bound(extras, v)
    return (x0 + torch.maximum(torch.minimum(v, b), -b)).clamp(0.0, 1.0) - x0


def _gauss1d(sigma: float, radius: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def smooth(g: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``[B,C,H,W]`` (reflect padding), ``sigma`` in pixels."""
    if sigma <= 0:
        return g
    radius = max(1, math.ceil(2.5 * sigma))
    radius = min(radius, g.shape[-1] - 1, g.shape[-2] - 1)
    if radius < 1:
        return g
    k = _gauss1d(sigma, radius, g)
    c = g.shape[1]
    kx = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    g = F.conv2d(F.pad(g, (radius, radius, 0, 0), mode="reflect"), kx, groups=c)
    return F.conv2d(F.pad(g, (0, 0, radius, radius), mode="reflect"), ky, groups=c)


@dataclasses.dataclass(frozen=True)
class TranslationInvariance:
    """TI-FGSM (Dong et al. 2019): smooth the gradient with a Gaussian, so the perturbation does
    not depend on the exact pixel grid of the attacked models (it transfers better, and survives
    resizing). ``params['ti_sigma']`` is the width in pixels of a 224-px model input; on a photo
    of long side ``L`` it is ``ti_sigma * L / 224`` (0 switches it off)."""

    def init(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def __call__(self, g, state, params):  # type: ignore[no-untyped-def]
        sigma = float(params.get("ti_sigma", 0.0))
        if sigma <= 0:
            return g
        return smooth(g, sigma * max(g.shape[-2:]) / MODEL_SIZE)


def jnd_budget(model: str = "namm") -> Prepare:
    """A ``prepare`` giving ``extras['bound'] = floor(strength * JND * 255) / 255`` per value,
    from the human JND map ``model`` of the clean photo (``params['strength']``).

    Flooring to whole levels keeps the 8-bit saved image inside ``strength * JND`` (the JND maps
    are 3-20 grey levels, so at most one level is lost to the floor).
    """
    from ..perception import jnd_map

    def prepare(x0: torch.Tensor, params: Mapping[str, float]) -> dict[str, torch.Tensor]:
        s = float(params.get("strength", 1.0))
        if s <= 0:
            raise InputError(f"strength must be > 0, got {s}")
        with torch.no_grad():
            jnd = jnd_map(x0.clamp(0, 1), model)
        return {"bound": torch.floor(jnd * s * 255.0 + 1e-6) / 255.0}

    return prepare


def fixed_budget(bound: torch.Tensor) -> Prepare:
    """A ``prepare`` that hands the engine a budget computed beforehand: ``extras['bound'] = bound``.

    For attacks on a crop of a photo: the budget is the *whole* photo's (``jnd_budget``'s formula on
    the whole photo, then cropped), so the JND map's neighbourhoods at the crop's edges are the
    photo's, not zero padding."""

    def prepare(x0: torch.Tensor, params: Mapping[str, float]) -> dict[str, torch.Tensor]:
        if bound.shape[-2:] != x0.shape[-2:]:
            raise InputError(f"budget of shape {list(bound.shape)} for images of shape {list(x0.shape)}")
        return {"bound": bound.to(x0).expand_as(x0)}

    return prepare


@dataclasses.dataclass(frozen=True, eq=False)
class ShieldParams(Params):
    """``shield``: the budget ``strength`` (multiple of the human JND map), the step ``alpha`` (share of
    the budget), momentum ``mu``, TI width ``ti_sigma`` (pixels of a 224-px input; 0: off), ``eot`` (0:
    no upload stand-in), ``grey`` (achromatic steps), ``steps`` and the saved-file check period
    ``check_every``."""

    strength: float = 0.5
    alpha: float = 0.25
    mu: float = 1.0
    ti_sigma: float = 1.0
    eot: int = 1
    grey: bool = True
    steps: int = 12
    check_every: int = 3


def _stand_in(params: Mapping[str, float]) -> InputTransform | None:
    if params.get("eot", 1.0) <= 0:
        return None
    from ..transforms import UploadStandIn

    stand_in: InputTransform = UploadStandIn()
    return stand_in


def _shield(params: ShieldParams) -> Method:
    return Method(
        name="shield",
        loss_terms=((None, losses.goal_loss),),
        update=BoundSignStep(),
        params=params,
        parametrisation=Delta(grad_at_bounds=True),
        projection=project_bound,
        grad_transforms=(TranslationInvariance(), Momentum()),
        input_transform=_stand_in(params),
        prepare=jnd_budget("namm"),
        max_iter=params.steps,
        check_every=params.check_every,
        description="jndkit's protective method: sign steps scaled by the human JND map (NAMM x strength), "
        "through the upload suite's differentiable stand-ins (EOT), TI gradient smoothing and momentum, "
        "against a panel; success checked on the saved file after every real upload transform",
    )


SHIELD_PRESETS: dict[str, ShieldParams] = {
    "default": ShieldParams(),
}


def with_jnd_model(method: Method, model: str) -> Method:
    """``method`` with its budget taken from another human JND map (``chou``, ``namm``,
    ``namm-colour``, ``wu``, ``colour-variance``)."""
    from ..perception.jnd import JND_MODELS

    if model not in JND_MODELS:
        raise InputError(f"JND model must be one of {', '.join(JND_MODELS)}, got {model!r}")
    return dataclasses.replace(method, prepare=jnd_budget(model))


register(MethodSpec("shield", _shield, SHIELD_PRESETS, "default",
                    "jndkit's protective method (the default of `jndkit protect`): JND-bounded, through the "
                    "upload suite (EOT), TI + momentum, against a panel", "jndkit"))
