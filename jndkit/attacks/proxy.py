"""Protect large photos by optimising the perturbation on a downscaled proxy.

The protective method (``shield``, :mod:`.transfer`) keeps its perturbation at the photo's own
size, so on a 12-megapixel photo every step pays full-resolution work: the upload stand-in's JPEG,
TI's gradient smoothing (a Gaussian about 18 px wide at 4000 px) and the momentum and sign step on
36 million values. The victims never see that resolution: each resizes the photo to 224-260 px
inside its forward. :func:`on_proxy` therefore moves the *variable* to a proxy of long side
``proxy_long`` (768 by default) and leaves everything that decides success at full resolution:

* :class:`ProxyDelta`, the parametrisation: ``v`` is ``[B,3,h,w]`` at the proxy size and
  ``image(v, x0) = clamp(x0 + clamp(up(v), -bound, bound), 0, 1)`` with ``up`` bilinear
  (differentiable) to the photo's size and ``bound`` the full-resolution budget. The budget is
  whole 8-bit levels and ``x0`` is an 8-bit image, so the saved 8-bit file never leaves it,
  whatever ``v`` holds;
* the step and the projection work on the proxy's budget (``extras['bound']`` becomes the
  full-resolution budget area-downscaled to the proxy; the full one is kept as
  ``extras['full_bound']``), so :class:`~.transfer.BoundSignStep` and momentum run unchanged on
  ``h*w`` values; TI smoothing runs on the proxy's gradient and its width, given in pixels of a
  224-px model input, is scaled by the gradient's own size, so the same Gaussian in photo
  coordinates runs on 1/27 of the values (4000x3000 -> 768x576) with a kernel 5x narrower;
* :class:`ProxyView`, the input transform: the candidate is downscaled to the proxy size
  (antialiased bilinear, the victims' own resize) before the upload stand-in (EOT) and the
  victims, which then resize proxy -> model input: the victims see what they see of the
  full photo (checked in ``tests/test_proxy.py``), and the stand-in's JPEG and resize run on the
  proxy;
* success is still decided by the engine on the full-resolution 8-bit image after the real
  upload transforms (:func:`~.engine.robust_margin`); nothing here touches that.

Photos whose long side is at most ``proxy_long`` are not changed (:func:`on_proxy` returns the
method itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError
from .engine import Delta, InputTransform, LevelStep, Method, Prepare

PROXY_LONG = 768
"""Default long side of the proxy, in pixels, chosen by measurement (``benchmarks/bench_large.py``:
``Protector(ProtectConfig()).protect_file``, the defaults, one core, a loaded 2-core machine;
chelsea upscaled with Lanczos + noise of 2 levels, seed 0):

============  =======  ==========  =============  ==========  =====  ========  =========
photo         proxy    seconds     of which       peak RSS    K      PSNR dB   above JND
                                   attack
============  =======  ==========  =============  ==========  =====  ========  =========
12 MP         full     139.5       92.5           5792 MB     8      36.58     3.10 %
12 MP         1024     88.0        40.1           4174 MB     8      36.87     2.11 %
12 MP         768      78.3        32.2           4254 MB     8      36.99     1.78 %
12 MP         512      80.2        33.3           4171 MB     8      37.12     1.41 %
1.9 MP        full     22.7        13.2           2593 MB     8      36.07     10.98 %
1.9 MP        1024     23.8        13.8           2184 MB     8      36.35     9.33 %
1.9 MP        768      18.9        9.0            2203 MB     8      36.52     8.40 %
1.9 MP        512      18.4        8.4            2043 MB     8      36.65     7.29 %
============  =======  ==========  =============  ==========  =====  ========  =========

Every row is protected (4/4 models of the ``imagenet`` panel after every upload of ``social``, clean
class out of every top-5); shield then had colour steps, strength 1.0, 20 steps, checks every 4.
With grey steps, checks every 3 and ``--strength 1.0`` (K = 6): 12 MP at 768, median of 3, 72.7 s
(attack 28.8 s, verify 9.9 s, report metrics and matrix 26.4 s, decode/encode 6.7 s), 4191 MB,
37.08 dB, 1.79 % above the JND; at full resolution (one run, machine more loaded) 226 s (attack
143.8 s), 5694 MB, 36.66 dB, 3.03 %. On astronaut at 1.9 MP: full 18.7 s / 32.24 dB / 15.7 %, 1024 16.9 s /
32.60 dB / 13.2 %, 768 16.2 s / 32.68 dB / 12.4 % (all K = 4). Below 768 the attack is no faster
at 12 MP (its full-size passes dominate) and the victims' view of the proxy drifts further from
their view of the photo (``tests/test_proxy.py``: class distributions within 0.005-0.09 in total
variation at 768, 0.007-0.19 at 512), so 768.
"""

MIN_PROXY_LONG = 256
"""The proxy must stay larger than every victim's input (224-260 px), or the victims' view changes."""

FULL_BOUND = "full_bound"
"""``extras`` key of the full-resolution budget ``[B,3,H,W]`` (``extras['bound']`` is the proxy's)."""

PROXY_X0 = "proxy_x0"
"""``extras`` key of the clean photo downscaled to the proxy ``[B,3,h,w]`` (for the projection)."""


def proxy_size(height: int, width: int, proxy_long: int = PROXY_LONG) -> tuple[int, int]:
    """``(h, w)`` of the proxy of a ``height`` x ``width`` photo: the long side becomes
    ``proxy_long`` and the other ``round(side * proxy_long / long)`` (at least 1); a photo whose
    long side is at most ``proxy_long`` keeps its size."""
    long = max(height, width)
    if long <= proxy_long:
        return height, width
    f = proxy_long / long
    return (proxy_long if height >= width else max(1, round(height * f)),
            proxy_long if width > height else max(1, round(width * f)))


def downscale(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """``[B,C,H,W]`` -> ``[B,C,h,w]``, differentiable.

    ``mode="bilinear"``: antialiased bilinear, as the victims resize (what they see).
    ``mode="area"``: the mean over each output pixel's footprint (``F.interpolate(mode="area")``,
    an adaptive average pool), used for the budget: a proxy value spreads over that footprint.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def upscale(v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling ``[B,C,h,w]`` -> ``[B,C,H,W]`` (``align_corners=False``), differentiable."""
    if tuple(v.shape[-2:]) == tuple(size):
        return v
    return F.interpolate(v, size=size, mode="bilinear", align_corners=False)


class _ClampInto(torch.autograd.Function):
    """``clamp(u, lo, hi)`` with tensor limits, whose gradient is the identity wherever
    ``lo <= u <= hi`` (limits included) and zero outside.

    Written out because ``torch.clamp`` with tensor limits halves the gradient at a tie (it
    shares it with the limits), and a value sitting exactly on a limit (a saturated pixel with
    ``v = 0``) must keep its full gradient to move back inside, as :class:`~.engine.Delta` with
    ``grad_at_bounds`` does. One pass forward, one masked pass backward (at 12 MP each full-size
    pass costs about 60 ms on one core, so the count matters).
    """

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(u, lo, hi)
        return torch.clamp(u, lo, hi)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        u, lo, hi = ctx.saved_tensors
        return g * ((u >= lo) & (u <= hi)), None, None


def change_limits(x0: torch.Tensor, bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)`` with ``clamp(x0 + clamp(d, -bound, bound), 0, 1) == x0 + clamp(d, lo, hi)``:
    ``lo = max(-bound, -x0)``, ``hi = min(bound, 1 - x0)`` (both intervals hold 0, so the two
    clamps fold into one). ``hi`` is lowered by one float step where ``x0 + hi`` would round
    above 1, so the image stays inside [0,1] exactly."""
    lo = torch.maximum(-bound, -x0)
    hi = torch.minimum(bound, 1.0 - x0)
    over = (x0 + hi) > 1.0
    if bool(over.any()):
        hi = torch.where(over, torch.nextafter(hi, torch.full_like(hi, -1.0)), hi)
    return lo, hi


class ProxyDelta:
    """The engine parametrisation of a perturbation optimised on a proxy.

    ``v`` is ``[B,3,h,w]`` (proxy size ``size``) and
    ``image(v, x0) = clamp(x0 + clamp(upscale(v), -bound, bound), 0, 1)`` at the size of ``x0``
    ``[B,3,H,W]``, where ``bound`` is the full-resolution budget ``extras['full_bound']`` that
    :meth:`init` receives (a whole number of 8-bit levels per value, see
    :func:`~.transfer.jnd_budget`), so rounding the image to 8 bits keeps ``|x - x0| <= bound``.
    It is computed as ``x0 + clamp(upscale(v), lo, hi)`` (:func:`change_limits`, the same
    value in three full-size passes instead of six). The gradient is the identity wherever the
    change is inside its limits, limits included (as :class:`~.engine.Delta` with
    ``grad_at_bounds=True``), and zero where the budget or the [0,1] box clips it.

    The engine's ``image(v, x0)`` gets no extras, so :meth:`init` remembers each clean photo with
    its limits and :meth:`image` finds a photo's limits by comparing pixel values (the engine hands
    it row subsets of the batch that :meth:`init` saw, in any order after compaction). The memory is
    replaced at every :meth:`init` (one run of the engine); it holds the photo and its limits
    (three full-size tensors), so a method made by :func:`on_proxy` is meant for one photo and
    dropped after its run.

    Args:
        size: ``(h, w)`` of the proxy.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        if len(size) != 2 or min(size) < 1:
            raise InputError(f"proxy size must be (h, w) with h, w >= 1, got {size!r}")
        self.size = (int(size[0]), int(size[1]))
        self._photos: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._last: tuple[torch.Tensor, int, torch.Tensor, torch.Tensor] | None = None

    def __repr__(self) -> str:
        return f"ProxyDelta(size={self.size})"

    def init(self, x0: torch.Tensor, params: Mapping[str, float], extras: dict[str, torch.Tensor],
             gen: torch.Generator) -> torch.Tensor:
        """Remember ``x0`` ``[B,3,H,W]`` with the limits of ``extras['full_bound']`` and return the
        starting ``v`` ``[B,3,h,w]``: zero, or uniform in ``±random_start``, or in ``±init_scale *
        extras['bound']`` (the proxy budget), drawing from ``gen`` exactly as :class:`~.engine.Delta`."""
        full = extras.get(FULL_BOUND)
        if full is None or full.shape != x0.shape:
            got = "none" if full is None else list(full.shape)
            raise InputError(f"ProxyDelta needs extras[{FULL_BOUND!r}] shaped like the photo {list(x0.shape)}, "
                             f"got {got} (build the method with on_proxy)")
        self._photos = []
        self._last = None
        for i in range(x0.shape[0]):
            lo, hi = change_limits(x0[i], full[i].to(x0.dtype))
            self._photos.append((x0[i], lo, hi))
        shape = (x0.shape[0], x0.shape[1], *self.size)
        r = float(params.get("random_start", 0.0))
        s = float(params.get("init_scale", 0.0))
        if r > 0:
            u = torch.rand(shape, generator=gen, device=gen.device).to(x0.device)
            return (2 * u - 1) * r
        if s > 0 and "bound" in extras:
            u = torch.rand(shape, generator=gen, device=gen.device).to(x0.device)
            return (2 * u - 1) * s * extras["bound"]
        return torch.zeros(shape, dtype=x0.dtype, device=x0.device)

    def limits_for(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lo, hi)`` ``[B,3,H,W]`` of the photos ``x0`` (rows of the batch that :meth:`init`
        saw, in any order): the change ``x - x0`` allowed per value.

        Raises:
            InputError: a photo that :meth:`init` did not see.
        """
        last = self._last
        if last is not None and last[0] is x0 and last[1] == x0._version:
            return last[2], last[3]
        los: list[torch.Tensor] = []
        his: list[torch.Tensor] = []
        for i in range(x0.shape[0]):
            found = None
            # the engine keeps rows in order, so try the same position first
            order = ([i] if i < len(self._photos) else []) + list(range(len(self._photos)))
            for j in order:
                p = self._photos[j]
                if p[0].shape == x0[i].shape and torch.equal(p[0], x0[i]):
                    found = p
                    break
            if found is None:
                raise InputError(f"ProxyDelta.image: photo {i} of the batch was not given to init (call init first)")
            los.append(found[1])
            his.append(found[2])
        if len(los) == 1:
            lo, hi = los[0][None], his[0][None]
        else:
            lo, hi = torch.stack(los), torch.stack(his)
        lo, hi = lo.to(device=x0.device, dtype=x0.dtype), hi.to(device=x0.device, dtype=x0.dtype)
        self._last = (x0, x0._version, lo, hi)
        return lo, hi

    def image(self, v: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """``clamp(x0 + clamp(upscale(v), -bound, bound), 0, 1)``: ``v`` ``[B,3,h,w]``, ``x0`` and
        the result ``[B,3,H,W]`` in [0,1]."""
        lo, hi = self.limits_for(x0)
        u = upscale(v, (int(x0.shape[-2]), int(x0.shape[-1])))
        return _ClampInto.apply(u, lo, hi) + x0  # type: ignore[no-any-return]


@dataclasses.dataclass(frozen=True)
class ProxyView:
    """Input transform: downscale the candidate to the proxy size (antialiased bilinear, the
    victims' own resize), then apply ``inner`` (the upload stand-in, EOT) if any.

    ``[B,3,H,W]`` -> ``[B,3,h,w]`` (or smaller, after the stand-in's random resize).
    """

    size: tuple[int, int]
    inner: InputTransform | None = None

    def __call__(self, x: torch.Tensor, params: Mapping[str, float], gen: torch.Generator) -> torch.Tensor:
        xs = downscale(x, self.size, "bilinear")
        return self.inner(xs, params, gen) if self.inner is not None else xs


def project_proxy_bound(v: torch.Tensor, x0: torch.Tensor, params: Mapping[str, float],
                        extras: dict[str, torch.Tensor]) -> torch.Tensor:
    """The projection on the proxy: clip ``v`` ``[B,3,h,w]`` to ``±extras['bound']`` (the proxy
    budget) and keep ``extras['proxy_x0'] + v`` in [0,1]. ``x0`` (full resolution) is not used:
    :class:`ProxyDelta` clips to the full-resolution budget when it makes the image."""
    b = extras["bound"].to(v.dtype)
    p0 = extras[PROXY_X0].to(v.dtype)
    return (p0 + torch.maximum(torch.minimum(v, b), -b)).clamp(0.0, 1.0) - p0


def _proxy_prepare(inner: Prepare, size: tuple[int, int]) -> Prepare:
    def prepare(x0: torch.Tensor, params: Mapping[str, float]) -> dict[str, torch.Tensor]:
        extras = dict(inner(x0, params))
        if "bound" not in extras:
            raise InputError("a proxy needs the method's per-value budget (extras['bound'], e.g. transfer.jnd_budget)")
        full = extras.pop("bound")
        extras[FULL_BOUND] = full
        extras["bound"] = downscale(full, size, "area")
        extras[PROXY_X0] = downscale(x0, size, "area")
        return extras

    return prepare


def on_proxy(method: Method, height: int, width: int, proxy_long: int = PROXY_LONG) -> Method:
    """``method`` reconfigured to optimise on a proxy of long side ``proxy_long`` for a
    ``height`` x ``width`` photo (see the module docstring), or ``method`` itself when the
    photo's long side is at most ``proxy_long`` or the method already runs on that proxy.

    The method must be a budgeted ``Delta`` method (a ``prepare`` giving ``extras['bound']``, such
    as ``shield``); its update rule, gradient transforms, loss and checks are kept, and run on the
    proxy's ``[B,3,h,w]`` variable.

    Raises:
        InputError: ``proxy_long`` below :data:`MIN_PROXY_LONG`, or a method that cannot run on
            a proxy (level steps on the 8-bit grid, another parametrisation, no budget).
    """
    if int(proxy_long) < MIN_PROXY_LONG:
        raise InputError(f"proxy_long must be at least {MIN_PROXY_LONG} px (the victims' input), got {proxy_long}")
    if height < 1 or width < 1:
        raise InputError(f"photo size must be positive, got {height}x{width}")
    if max(height, width) <= proxy_long:
        return method
    size = proxy_size(height, width, int(proxy_long))
    if isinstance(method.parametrisation, ProxyDelta):  # already on a proxy: idempotent
        if method.parametrisation.size == size:
            return method
        raise InputError(f"method {method.name} already runs on a {method.parametrisation.size} proxy, not {size}")
    if not isinstance(method.parametrisation, Delta):
        raise InputError(f"method {method.name} cannot run on a proxy: its parametrisation "
                         f"{type(method.parametrisation).__name__} is not an additive perturbation (Delta)")
    if method.on_grid or isinstance(method.update, LevelStep):
        raise InputError(f"method {method.name} cannot run on a proxy: it steps on the photo's 8-bit grid")
    if method.prepare is None:
        raise InputError(f"method {method.name} cannot run on a proxy: it has no per-value budget (extras['bound'])")
    return dataclasses.replace(
        method,
        parametrisation=ProxyDelta(size),
        projection=project_proxy_bound,
        prepare=_proxy_prepare(method.prepare, size),
        input_transform=ProxyView(size, method.input_transform),
        description=f"{method.description} (optimised on a {size[1]}x{size[0]} proxy, upsampled into the "
        "full-resolution budget)",
    )
