"""Baselines: cross-checks against torchattacks, and the DeepFool / C&W / DDN configurations.

Cross-check protocol (FGSM, BIM, MI-FGSM, DI²-FGSM). jndkit quantizes and stops each sample at its
first saved success; torchattacks returns the float image after a fixed number of steps. To compare
the two, the engine runs with a goal that cannot be reached (``kappa = 1e9``: no sample stops), and
the float iterate is read from a recording wrapper around the method's projection (the last
operation of every step of these methods: its output is the float image ``x0 + v``). Both sides see
the same victim (torchattacks gets the :class:`ClassifierVictim`, which normalises inside its
forward, so torchattacks' own normalisation must stay off: asserted).

Which victim. MobileNetV2 is piecewise linear (ReLU6): a 1-ulp difference in the input (jndkit
stores ``v = x - x0`` and feeds ``x0 + v``, torchattacks feeds ``x`` itself) can flip a unit across
a kink and change the gradient by O(1), so after a few steps a few values differ by ``2·alpha``.
The 1e-6 checks therefore run on a small *smooth* CNN (GELU) wrapped in the same
``ClassifierVictim`` at 224×224; on MobileNetV2, FGSM (one step from the exact clean image) must
match to 1e-6 (measured: MI-FGSM with 4 steps differs on 0.26 % of the values by 2·alpha there).

Success comparisons on real photos (PGD, C&W, DeepFool, DDN vs torchattacks) quantize
torchattacks' output and judge success at batch 1 (design note: first-flip images sit on the
boundary).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

torchattacks = pytest.importorskip("torchattacks")

from jndkit.attacks import get_method, run_attack  # noqa: E402
from jndkit.attacks.baselines import DDNStep, DeepFoolStep, cw_f  # noqa: E402
from jndkit.attacks.engine import Context, Delta, Method, StepInfo, Tanh, input_diversity  # noqa: E402
from jndkit.errors import InputError  # noqa: E402
from jndkit.goals import Targeted, Untargeted  # noqa: E402
from jndkit.images import quantize  # noqa: E402
from jndkit.victims.classifier import ClassifierVictim  # noqa: E402

L = 1.0 / 255.0
NEVER = Untargeted(kappa=1e9)  # a goal no sample reaches: the engine runs every step


# ------------------------------------------------------------------------------------------ fixtures
class SmoothNet(nn.Module):
    """A small smooth CNN (GELU, average pooling) with fixed random weights: 10 classes."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.f = nn.Sequential(
            nn.Conv2d(3, 8, 7, stride=4, padding=3), nn.GELU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


@pytest.fixture(scope="module")
def smooth_victim() -> ClassifierVictim:
    return ClassifierVictim(SmoothNet(), input_size=(224, 224), name="smooth").eval()


def _smooth_images(b: int = 2, seed: int = 1) -> torch.Tensor:
    """Textured 8-bit images with some saturated values (0 and 1) to exercise the box."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 3, 28, 28, generator=g)
    x = F.interpolate(base, size=(224, 224), mode="bilinear", align_corners=False)
    x = (x * 1.3 - 0.15).clamp(0, 1)
    return quantize(x)


@pytest.fixture(scope="module")
def mobilenet() -> ClassifierVictim:
    from jndkit.victims import load_victim

    try:
        v = load_victim("mobilenet_v2")
    except Exception as e:  # weights package not installed
        pytest.skip(f"mobilenet_v2 not available: {e}")
    # ClassifierVictim puts only the inner model in eval mode; torchattacks saves the wrapper's
    # `training` flag (True) and restores it with .train() after each call, which switches
    # BatchNorm to batch statistics. Put the wrapper itself in eval mode.
    return v.eval()


def _photos(names: tuple[str, ...] = ("coffee", "chelsea", "astronaut", "rocket")) -> torch.Tensor:
    skdata = pytest.importorskip("skimage.data")
    xs = []
    for n in names:
        a = torch.from_numpy(getattr(skdata, n)()[..., :3].copy()).permute(2, 0, 1).float() / 255
        a = F.interpolate(a[None], size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        xs.append(quantize(a.clamp(0, 1)))
    return torch.cat(xs)


def _recording(method: Method) -> tuple[Method, dict[str, torch.Tensor]]:
    """The method with its projection wrapped to keep the last float image ``x0 + v``."""
    box: dict[str, torch.Tensor] = {}
    proj = method.projection
    assert proj is not None

    def rec(v: torch.Tensor, x0: torch.Tensor, params: Mapping[str, float],
            extras: dict[str, torch.Tensor]) -> torch.Tensor:
        v = proj(v, x0, params, extras)
        box["x"] = (x0 + v).clamp(0, 1)
        return v

    return dataclasses.replace(method, projection=rec, check_every=10**6), box


def _engine_float(method: Method, victim: nn.Module, x0: torch.Tensor) -> torch.Tensor:
    m, box = _recording(method)
    r = run_attack(m, victim, NEVER, x0)
    assert not r.success.any()
    return box["x"]


def _fixed_diversity(x: torch.Tensor) -> torch.Tensor:
    """One fixed draw of DI's resize-and-pad: nearest resize to 203, pad (left 9, top 5) to 224."""
    r = F.interpolate(x, size=(203, 203), mode="nearest")
    return F.pad(r, (9, 224 - 203 - 9, 5, 224 - 203 - 5), value=0.0)


E, A, S = 4 * L, 1 * L, 4


def _pair(name: str, victim: nn.Module) -> tuple[Method, Any]:
    """(our method, torchattacks attack) with the same parameters and no random start."""
    if name == "fgsm":
        return get_method("fgsm", eps=E), torchattacks.FGSM(victim, eps=E)
    if name == "bim":
        return get_method("bim", eps=E, alpha=A, steps=S), torchattacks.BIM(victim, eps=E, alpha=A, steps=S)
    if name == "mifgsm":
        return (get_method("mifgsm", eps=E, alpha=A, steps=S, mu=1.0),
                torchattacks.MIFGSM(victim, eps=E, alpha=A, steps=S, decay=1.0))
    if name == "difgsm-p0":  # diversity never applied: MI + the DI code path
        return (get_method("difgsm", eps=E, alpha=A, steps=S, mu=1.0, diversity_prob=0.0),
                torchattacks.DIFGSM(victim, eps=E, alpha=A, steps=S, decay=1.0, diversity_prob=0.0))
    if name == "difgsm-fixed":  # diversity applied at every step, the same fixed draw on both sides
        ours = dataclasses.replace(get_method("difgsm", eps=E, alpha=A, steps=S, mu=1.0, diversity_prob=1.0),
                                   input_transform=lambda x, p, g: _fixed_diversity(x))
        atk = torchattacks.DIFGSM(victim, eps=E, alpha=A, steps=S, decay=1.0, diversity_prob=1.0)
        atk.input_diversity = _fixed_diversity  # instance attribute shadows the random method
        return ours, atk
    raise AssertionError(name)


# ------------------------------------------------------------------------------------------ cross-checks
@pytest.mark.parametrize("name", ["fgsm", "bim", "mifgsm", "difgsm-p0", "difgsm-fixed"])
def test_sign_methods_match_torchattacks_before_quantization(name: str, smooth_victim: ClassifierVictim) -> None:
    x0 = _smooth_images()
    with torch.no_grad():
        y = smooth_victim(x0).argmax(1)
    ours, atk = _pair(name, smooth_victim)
    assert atk.normalization_used is None  # our victim normalises; torchattacks must not again
    ta = atk(x0, y)
    mine = _engine_float(ours, smooth_victim, x0)
    assert torch.allclose(mine, ta, rtol=0, atol=1e-6), float((mine - ta).abs().max())
    # the check can fail: the attack moved values by whole steps, inside the eps box
    moved = (ta - x0).abs()
    assert float(moved.max()) == pytest.approx(E if name == "fgsm" else min(E, S * A), abs=1e-6)
    assert float((moved > 0.5 * L).float().mean()) > 0.5


def test_without_grad_at_bounds_saturated_values_never_move(smooth_victim: ClassifierVictim) -> None:
    """The bug fixed in the sign family: through a plain clamp, values at exactly 0 or 1 get no
    gradient, so FGSM cannot move them inward (torchattacks does)."""
    x0 = _smooth_images()
    with torch.no_grad():
        y = smooth_victim(x0).argmax(1)
    ta = torchattacks.FGSM(smooth_victim, eps=E)(x0, y)
    old = dataclasses.replace(get_method("fgsm", eps=E), parametrisation=Delta())
    mine_old = _engine_float(old, smooth_victim, x0)
    sat = (x0 == 0) | (x0 == 1)
    assert sat.sum() > 100
    assert torch.equal(mine_old[sat], x0[sat])  # stuck
    assert ((ta - x0).abs()[sat] > 0.5 * L).sum() > 50  # torchattacks moves many of them


def test_fgsm_on_mobilenet(mobilenet: ClassifierVictim) -> None:
    x0 = _photos(("coffee",))
    with torch.no_grad():
        y = mobilenet(x0).argmax(1)
    ours, atk = _pair("fgsm", mobilenet)
    assert atk.normalization_used is None
    ta = atk(x0, y)
    mine = _engine_float(ours, mobilenet, x0)
    assert torch.allclose(mine, ta, rtol=0, atol=1e-6), float((mine - ta).abs().max())
    assert float((ta - x0).abs().max()) == pytest.approx(E, abs=1e-6)


# ------------------------------------------------------------------------------------------ pieces
def test_grad_at_bounds_gradient_and_value() -> None:
    x0 = torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0]).view(1, 5, 1, 1)
    v = torch.tensor([0.0, 0.1, 0.0, 0.2, -0.3]).view(1, 5, 1, 1).requires_grad_(True)
    x = Delta(grad_at_bounds=True).image(v, x0)
    assert torch.equal(x.detach(), (x0 + v.detach()).clamp(0, 1))
    (g,) = torch.autograd.grad(x.sum(), v)
    assert g.flatten().tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]  # bounds included, beyond excluded
    (g0,) = torch.autograd.grad(Delta().image(v, x0).sum(), v)
    assert g0.flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]  # the default keeps torch.clamp's


def test_input_diversity_draws() -> None:
    x = torch.rand(1, 3, 224, 224)
    gen = torch.Generator().manual_seed(0)
    assert input_diversity(x, {"diversity_prob": 0.0, "resize_rate": 0.9}, gen) is x
    for _ in range(5):
        out = input_diversity(x, {"diversity_prob": 1.0, "resize_rate": 0.9}, gen)
        assert out.shape == x.shape
        assert (out == 0).all(dim=1).any()  # some zero padding
        assert not torch.equal(out, x)


def test_cw_f_masks_true_logit_with_minus_inf() -> None:
    z = torch.tensor([[-1.0, -5.0, -3.0], [4.0, 2.0, 1.0]])
    goal = Untargeted(labels=torch.tensor([0, 1])).bind(z)
    ctx = Context(x=torch.zeros(2, 3, 1, 1), x0=torch.zeros(2, 3, 1, 1), outputs=z, goal=goal,
                  params={"confidence": 0.5}, extras={}, iteration=0)
    # f = max(z_y - max_{j != y} z_j, -conf): sample 0: -1 - (-3) = 2 (a 0 mask would give -1 - 0 = -1);
    # sample 1 is already adversarial: 2 - 4 = -2, clamped at -conf
    assert cw_f(ctx).tolist() == [2.0, -0.5]
    tgt = Targeted(target=2).bind(z)
    ctx = dataclasses.replace(ctx, goal=tgt, params={"confidence": 10.0})
    assert cw_f(ctx).tolist() == [-1.0 - -3.0, 4.0 - 1.0]  # max_{j != t} z_j - z_t, unclamped


def test_tanh_init_finite_at_0_and_1() -> None:
    x0 = torch.tensor([0.0, 1.0, 0.5]).view(1, 3, 1, 1)
    v = Tanh().init(x0, {}, {}, torch.Generator())
    assert torch.isfinite(v).all()
    assert torch.allclose(Tanh().image(v, x0), x0, atol=1e-6)


class _Linear(nn.Module):
    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def test_deepfool_step_reaches_nearest_linear_boundary() -> None:
    """On an affine classifier one DeepFool step (overshoot 0, goal margin 0) lands on the nearest
    boundary: ``r = (|f_l| + 1e-4) / ||w_l||^2 w_l`` with ``l = argmin |f_j| / ||w_j - w_y||``;
    with a goal margin kappa it lands on ``f_l = kappa``."""
    torch.manual_seed(0)
    n, c = 12, 5
    w, b = torch.randn(c, n), torch.randn(c)
    victim = _Linear(w, b)
    x0 = quantize(torch.rand(3, 3, 2, 2))  # the step linearises at the saved (8-bit) image
    z0 = victim(x0)
    goal = Untargeted(kappa=0.0).bind(z0)  # kappa 0: the paper's boundary f = 0
    y = z0.argmax(1)
    rule = DeepFoolStep()
    v = torch.zeros_like(x0)
    state = rule.init(v)
    info = StepInfo(x0=x0, x=x0, extras={}, victim=victim, goal=goal)
    v1 = rule.step(v, torch.zeros_like(v), state, {"k": float(c), "overshoot": 0.0}, 0, info)
    for i in range(3):
        f = z0[i] - z0[i, y[i]]
        wd = w - w[y[i]]
        d = f.abs() / wd.norm(dim=1)
        d[y[i]] = float("inf")
        l = int(d.argmin())
        expect = (f[l].abs() + 1e-4) / wd[l].norm() ** 2 * wd[l]
        assert torch.allclose(v1[i].flatten(), expect, atol=1e-5)
        z1 = victim(x0[i : i + 1] + v1[i : i + 1])[0]
        assert float(z1[l] - z1[y[i]]) == pytest.approx(1e-4, abs=1e-4)  # on the boundary (+1e-4)
    assert state["candidates"].shape == (3, c - 1)
    goal_k = Untargeted(kappa=0.5).bind(z0)
    v2 = rule.step(v, v, rule.init(v), {"k": float(c), "overshoot": 0.0}, 0, dataclasses.replace(info, goal=goal_k))
    margin = goal_k.margin(victim(x0 + v2))
    assert torch.allclose(margin, torch.full_like(margin, 0.5 + 1e-4), atol=1e-4)
    with pytest.raises(InputError, match="untargeted"):
        rule.step(v, v, rule.init(v), {"k": 3.0, "overshoot": 0.0}, 0,
                  dataclasses.replace(info, goal=Targeted(target=1).bind(z0)))


def test_ddn_step_radius_and_box() -> None:
    x0 = torch.full((2, 3, 8, 8), 0.5)
    x0[1, 0] = 1.0  # saturated channel: the box clip shrinks the norm below the radius
    g = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    rule = DDNStep()
    state = rule.init(x0)
    p = {"init_rms": 1.0, "gamma": 0.05, "alpha": 1.0, "alpha_min": 0.01, "steps": 10.0}
    info = StepInfo(x0=x0, x=x0, extras={})
    v = rule.step(torch.zeros_like(x0), g, state, p, 0, info)
    eps0 = 1.0 / 255 * math.sqrt(3 * 64)
    assert torch.allclose(state["eps"], torch.full((2,), eps0 * 1.05))
    assert float(v[0].norm()) == pytest.approx(eps0 * 1.05, rel=1e-5)
    assert torch.allclose(v[0], -g[0] / g[0].norm() * eps0 * 1.05, atol=1e-6)  # descent direction
    assert float(v[1].norm()) < eps0 * 1.05 and float((x0[1] + v[1]).max()) <= 1.0


# ------------------------------------------------------------------------------------------ real photos
def _success_b1(victim: nn.Module, x0: torch.Tensor, xq: torch.Tensor, y: torch.Tensor) -> list[bool]:
    """Saved-image success judged one image at a time (batch 1), with the default margin."""
    out = []
    with torch.no_grad():
        for i in range(x0.shape[0]):
            goal = Untargeted(labels=y[i : i + 1]).bind(victim(x0[i : i + 1]))
            out.append(bool(goal.reached(victim(xq[i : i + 1]))[0]))
    return out


def _psnr(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return [10 * math.log10(1.0 / max(float((a[i] - b[i]).pow(2).mean()), 1e-12)) for i in range(a.shape[0])]


def _compare(victim: ClassifierVictim, x0: torch.Tensor, ours: Method,
             theirs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[list[bool], list[float]]:
    with torch.no_grad():
        y = victim(x0).argmax(1)
    torch.manual_seed(0)
    ta = quantize(theirs(x0, y))
    ta_ok = _success_b1(victim, x0, ta, y)
    r = run_attack(ours, victim, Untargeted(), x0)
    ok = _success_b1(victim, x0, r.x_adv, y)
    assert r.success.tolist() == ok  # the engine's verdict holds at batch 1
    assert all(o or not t for o, t in zip(ok, ta_ok)), (ok, ta_ok)
    assert torch.equal(r.x_adv, quantize(r.x_adv))
    return ok, _psnr(r.x_adv, x0)


def test_pgd_success_on_a_photo(mobilenet: ClassifierVictim) -> None:
    x0 = _photos(("chelsea",))
    ours = get_method("pgd", eps=E, alpha=A, steps=10, random_start=E)
    ok, _ = _compare(mobilenet, x0, ours, torchattacks.PGD(mobilenet, eps=E, alpha=A, steps=10))
    assert all(ok)


def test_ddn_and_cw_succeed_with_small_changes(mobilenet: ClassifierVictim) -> None:
    x0 = _photos(("astronaut",))
    with torch.no_grad():
        y = mobilenet(x0).argmax(1)
    for name, floor in (("ddn", 55.0), ("cw", 45.0)):
        r = run_attack(get_method(name), mobilenet, Untargeted(), x0)
        assert r.success.all() and all(_success_b1(mobilenet, x0, r.x_adv, y))
        assert min(_psnr(r.x_adv, x0)) > floor, (name, _psnr(r.x_adv, x0))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pgd", "cw", "deepfool", "ddn"])
def test_success_at_least_torchattacks_on_four_photos(name: str, mobilenet: ClassifierVictim) -> None:
    x0 = _photos()
    if name == "pgd":
        ours = get_method("pgd", eps=E, alpha=A, steps=10, random_start=E)
        theirs = torchattacks.PGD(mobilenet, eps=E, alpha=A, steps=10)
    elif name == "cw":
        ours = get_method("cw")
        theirs = torchattacks.CW(mobilenet, c=1.0, kappa=0.0, steps=50, lr=0.01)
    elif name == "deepfool":
        ours = get_method("deepfool")
        theirs = torchattacks.DeepFool(mobilenet, steps=50, overshoot=0.02)
    else:  # torchattacks has no DDN: hold it to C&W's success
        ours = get_method("ddn")
        theirs = torchattacks.CW(mobilenet, c=1.0, kappa=0.0, steps=50, lr=0.01)
    ok, _ = _compare(mobilenet, x0, ours, theirs)
    assert all(ok)
