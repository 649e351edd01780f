"""Seed methods mnd (001), hvs (002) and cv (004): presets, schedules, and success on the *saved* image."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from jndkit.attacks.engine import AttackResult, Method, run_attack
from jndkit.attacks.methods import METHODS, get_method
from jndkit.attacks.seeds import (
    HVS_DEFAULT_JND,
    PRESET_GOALS,
    hvs_retry,
    make_hvs,
    recommended_goal,
)
from jndkit.errors import InputError
from jndkit.goals import Goal, LeastLikely, Untargeted, parse_goal
from jndkit.images import load_image, quantize, save_image
from jndkit.perception import colour_variance_bound, jnd_map

LEVEL = 1.0 / 255.0


def _photo(name: str = "chelsea", size: int = 224) -> torch.Tensor:
    x = torch.from_numpy(np.array(getattr(data, name)(), copy=True)).permute(2, 0, 1).float()[None] / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return quantize(x)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / (a - b).pow(2).mean()))


def _attack_and_recheck(method: Method, victim: torch.nn.Module, goal: Goal, x0: torch.Tensor,
                        tmp_path: Path) -> tuple[AttackResult, torch.Tensor]:
    """Attack, write the PNG, read it back and re-run the victim from scratch at batch 1."""
    res = run_attack(method, victim, goal, x0)
    assert bool(res.success.all()), f"{method.name} failed: margin {res.margin.tolist()}"
    path = save_image(res.x_adv[0], tmp_path / f"{method.name}.png")
    back = load_image(path).rgb[None]
    assert torch.equal(back, res.x_adv), "the saved PNG differs from the returned 8-bit image"
    with torch.no_grad():
        clean = victim(x0)
        out = victim(back)
    bound = goal.bind(clean)
    assert bool(bound.reached(out).all()), f"saved image misses the goal: margin {bound.margin(out).tolist()}"
    assert not torch.equal(back, x0)
    return res, back


# ---------------------------------------------------------------------------------- registry and presets
@pytest.mark.parametrize("name", ["mnd", "hvs", "cv"])
def test_every_preset_builds(name: str) -> None:
    """Each preset names every parameter its method reads (a missing weight would only fail at run time,
    inside the engine), holds finite numbers of its declared type (``n``, cv's window, an int), and an
    override changes that one parameter and nothing else, neither in the built method nor in the registry."""
    spec = METHODS[name]
    assert spec.default == "default"
    ints = {"cv": {"n"}}.get(name, set())
    for preset in spec.presets:
        m = get_method(name, preset)
        values = dict(m.params)
        assert m.name == name
        weight_keys = {k for k, _ in m.loss_terms if k is not None}
        assert weight_keys, f"{name}:{preset} has no weighted loss term"
        assert weight_keys <= set(values), (preset, weight_keys - set(values))
        lr_key = getattr(m.update, "lr_key", None)
        assert lr_key is None or lr_key in values, (preset, lr_key)
        assert {k: type(v) for k, v in values.items()} == {k: int if k in ints else float for k in values}, preset
        assert all(np.isfinite(v) for v in values.values()), preset
        for key in sorted(values):
            changed = get_method(name, preset, **{key: values[key] + 1})
            assert {k for k in values if changed.params[k] != values[k]} == {key}
            assert changed.params[key] == values[key] + 1 and type(changed.params[key]) is type(values[key])
        with pytest.raises(dataclasses.FrozenInstanceError):
            m.params.lr = -1.0  # type: ignore[misc]  # parameters are frozen: a method cannot alter its preset
        assert dict(get_method(name, preset).params) == values  # the overrides left the registry as it was


def test_mnd_presets_follow_the_paper() -> None:
    p = METHODS["mnd"].presets
    assert p["paper-untargeted"] == {"lr": 1e-4, "r": 1.0, "beta1": 100.0, "beta1_l2": 0.0, "beta2": 100.0,
                                     "beta3": 100.0}
    t = p["paper-targeted"]
    assert (t["r"], t["beta1"], t["beta2"], t["beta3"], t["lr"]) == (0.0625, 2.0, 0.1, 2.0, 1e-4)
    on = {k: {b for b in ("beta1", "beta1_l2", "beta2", "beta3") if v[b] > 0} for k, v in p.items()}
    assert on["no-norm"] == set()
    assert on["l1"] == {"beta1"} and on["l2"] == {"beta1_l2"} and on["ssim"] == {"beta2"}
    assert on["l1+ssim"] == {"beta1", "beta2"} and on["l2+ssim"] == {"beta1_l2", "beta2"}
    assert on["full"] == {"beta1", "beta2", "beta3"}
    assert get_method("mnd", "paper-untargeted").max_iter == 1000


def test_hvs_presets_follow_the_paper() -> None:
    p = METHODS["hvs"].presets
    assert (p["paper-untargeted"]["beta1"], p["paper-untargeted"]["delta"]) == (1500.0, -50.0)
    assert (p["paper-targeted"]["beta3"], p["paper-targeted"]["delta"]) == (30.0, -1.0)
    assert (p["default"]["m_r"], p["default"]["m_g"], p["default"]["m_b"]) == (3.0, 5.0, 1.0)
    betas = ("beta1", "beta2", "beta3", "beta1_orig", "beta2_orig")
    on = {k: {b for b in betas if v[b] > 0} for k, v in p.items()}
    assert on["L1"] == {"beta1"} and on["L1-orig"] == {"beta1_orig"}
    assert on["L2"] == {"beta2"} and on["L2-orig"] == {"beta2_orig"}
    assert on["L1+L2"] == {"beta1", "beta2"} and on["L1+L2+G"] == {"beta1", "beta2", "beta3"}


def test_hvs_retry_schedule_ends_with_a_pure_adversarial_try() -> None:
    params = dict(METHODS["hvs"].presets["paper-untargeted"])
    retry = hvs_retry(params)
    assert retry is not None and retry.max_tries == 30  # 1500 / 50
    seen = [params]
    for _ in range(retry.max_tries):
        seen.append(retry.next(seen[-1]))
    assert [s["beta1"] for s in seen[:3]] == [1500.0, 1450.0, 1400.0]
    assert seen[-1]["beta1"] == seen[-1]["beta2"] == seen[-1]["beta3"] == 0.0
    assert seen[-2]["beta1"] == 50.0
    assert seen[-1]["beta1_orig"] == 0.0 and seen[-1]["alpha"] == 1.0
    targeted = hvs_retry(METHODS["hvs"].presets["paper-targeted"])
    assert targeted is not None and targeted.max_tries == 30  # 30 / 1
    assert hvs_retry({**params, "delta": 0.0}) is None
    with pytest.raises(InputError, match="delta"):
        hvs_retry({**params, "delta": 5.0})


def test_hvs_jnd_model_is_a_parameter() -> None:
    x0 = _photo(size=48)
    m = get_method("hvs")
    assert torch.equal(m.prepare(x0, m.params)["jnd"], jnd_map(x0, HVS_DEFAULT_JND))  # type: ignore[misc]
    chou = make_hvs(m.params, "chou")
    assert torch.equal(chou.prepare(x0, chou.params)["jnd"], jnd_map(x0, "chou"))  # type: ignore[misc]
    with pytest.raises(InputError, match="jnd_model"):
        make_hvs(m.params, "nope")


def test_cv_prepares_the_colour_variance_bound_and_names_its_goals() -> None:
    x0 = _photo(size=48)
    m = get_method("cv", "Top1-L1")
    bound = m.prepare(x0, m.params)["bound"]  # type: ignore[misc]
    assert torch.equal(bound, colour_variance_bound(x0, n=5, s=1.0, T=50.0))
    assert get_method("cv", "Top5-noL1").params["alpha"] == 0.0
    assert recommended_goal("cv", "Top5-L1") == "top5"
    assert recommended_goal("cv", "Top1-L1-50") == "relative:0.5"
    assert recommended_goal("mnd", "paper-targeted") == "least-likely"
    assert recommended_goal("mnd") == "untargeted"
    for (method, preset), goal in PRESET_GOALS.items():
        assert preset in METHODS[method].presets
        parse_goal(goal)


# ---------------------------------------------------------------------------------- success on the saved image
def test_mnd_default_fools_mobilenet_on_the_saved_image(mobilenet, tmp_path: Path) -> None:
    x0 = _photo("coffee")  # K = 13 at lr = 1e-3 (chelsea needs 20)
    _, back = _attack_and_recheck(get_method("mnd"), mobilenet, Untargeted(), x0, tmp_path)
    assert _psnr(back, x0) > 50.0


def test_hvs_default_fools_mobilenet_on_the_saved_image(mobilenet, tmp_path: Path) -> None:
    x0 = _photo()
    res, back = _attack_and_recheck(get_method("hvs"), mobilenet, Untargeted(), x0, tmp_path)
    assert int(res.tries[0]) == 1  # the paper's beta = 1500 is enough here
    assert _psnr(back, x0) > 50.0


def test_hvs_retries_lower_beta_until_success(mobilenet) -> None:
    # L2-orig with 2 * beta / N * lr = 1 (N = 3 * 224 * 224): each step lands on x0 - lr * grad, one
    # gradient step from the clean image, which does not fool the model. The retry lowers beta by
    # delta to 0 and the pure cross-entropy run then succeeds.
    x0 = _photo()
    beta = 3 * 224 * 224 / (2 * 0.01)
    m = get_method("hvs", "L2-orig", beta2_orig=beta, delta=-beta, lr=0.01, max_iter=8)
    res = run_attack(m, mobilenet, Untargeted(), x0)
    assert bool(res.success[0])
    assert int(res.tries[0]) == 2  # the first try (beta > 0) failed
    assert res.params[0]["beta2_orig"] == 0.0
    assert int(res.iterations[0]) > 8  # the failed try's budget is counted


def test_cv_default_fools_mobilenet_within_the_bound(mobilenet, tmp_path: Path) -> None:
    x0 = _photo()
    m = get_method("cv")
    _, back = _attack_and_recheck(m, mobilenet, parse_goal(recommended_goal("cv")), x0, tmp_path)
    bound = colour_variance_bound(x0, n=5, s=1.0, T=50.0)
    # clip to +-pT then round to 1/255: at most half a level beyond the bound
    assert bool(((back - x0).abs() <= bound + 0.5 * LEVEL + 1e-6).all())
    assert _psnr(back, x0) > 40.0


@pytest.mark.slow
def test_cv_top5_fools_mobilenet_on_the_saved_image(mobilenet, tmp_path: Path) -> None:
    x0 = _photo()
    _attack_and_recheck(get_method("cv", "Top5-L1"), mobilenet, parse_goal(recommended_goal("cv", "Top5-L1")),
                        x0, tmp_path)


@pytest.mark.slow
def test_mnd_least_likely_targeted_on_the_saved_image(mobilenet, tmp_path: Path) -> None:
    x0 = _photo()
    m = get_method("mnd", "default-targeted")
    _, back = _attack_and_recheck(m, mobilenet, LeastLikely(), x0, tmp_path)
    with torch.no_grad():
        target = mobilenet(x0).argmin(dim=1)
        assert int(mobilenet(back).argmax(dim=1)) == int(target)
