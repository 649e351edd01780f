"""Every method in the registry, one table: each must fool a tiny closed-form victim *as saved*.

The victim is a linear classifier on 16x16 RGB images, ``z = W x + b`` (10 classes), built so that a
textured photo crop is class 0 with a logit margin of 1.0 over the runner-up. Its decision boundary is
known in closed form, so success is judged twice on the PNG read back from disk: by the goal on the
victim's float32 forward, and by ``max_{j != 0} z_j - z_0 > kappa`` recomputed here in float64 NumPy
(Foolbox's ``test_attacks.py`` idea: a table of attacks on tiny models). The table is read from
``jndkit.attacks.METHODS`` at collection time, so a newly registered method is tested by default and
fails here if it does not reach its goal on the saved file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jndkit.attacks import METHODS, get_method, run_attack
from jndkit.goals import DEFAULT_KAPPA, parse_goal
from jndkit.images import load_image, quantize, save_image

SIZE = 16
CLASSES = 10
CLEAN_MARGIN = 1.0  # z_0 - max_{j != 0} z_j on the clean image
# Goal each method is judged on: the one its default preset was made for (the protective method's own
# goal for shield); every other method is judged untargeted, the goal of the papers' main tables.
GOALS = {"shield": "privacy"}


class Linear16(nn.Module):
    """``z = W x + b`` on ``[B,3,16,16]`` images in [0,1]; ``W`` ``[10,768]`` and ``b`` ``[10]`` float64
    kept for the closed-form check, float32 copies used in ``forward``."""

    def __init__(self, w: np.ndarray, b: np.ndarray) -> None:
        super().__init__()
        self.w64, self.b64 = w, b
        self.register_buffer("w", torch.from_numpy(w).float())
        self.register_buffer("b", torch.from_numpy(b).float())
        self.name = "linear16"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (SIZE, SIZE):  # input diversity (DI) feeds resized copies; victims resize inside
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        return x.flatten(1) @ self.w.T + self.b

    def logits64(self, x: torch.Tensor) -> np.ndarray:
        """The closed form in float64, independent of ``forward``: ``[B,10]``."""
        return x.detach().double().flatten(1).numpy() @ self.w64.T + self.b64


def _photo() -> torch.Tensor:
    """A textured, coloured 16x16 crop (scikit-image's astronaut, antialiased), on the 8-bit grid."""
    from skimage import data

    x = torch.from_numpy(np.array(data.astronaut(), copy=True)).permute(2, 0, 1).float()[None] / 255.0
    x = x[:, :, 40:232, 150:342]  # a textured, coloured region, so the JND and colour-variance budgets are not 0
    return quantize(F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False))


def _linear16(x0: torch.Tensor, clean_margin: float = CLEAN_MARGIN) -> Linear16:
    """The victim whose logits on ``x0`` are ``clean_margin``, 0, -0.5, -1, ... (class 0 by ``clean_margin``)."""
    rng = np.random.default_rng(0)
    # rows of +-1: w_j - w_0 is +-2 on about half of the 768 values, so one 8-bit level on each of them
    # moves that logit difference by up to 3. Measured with this victim: every method of the registry
    # succeeds, levels (3 values a step) at K = 45 of its 200, ddn at K = 27 of 100. With weights +-0.25
    # fgv, levels and mnd fail, and with a clean margin of 3 deepfool and levels fail: the table can fail.
    w = rng.choice([-1.0, 1.0], size=(CLASSES, 3 * SIZE * SIZE))
    want = np.array([clean_margin, 0.0] + [-0.5 * k for k in range(1, CLASSES - 1)])
    b = want - x0.double().flatten(1).numpy()[0] @ w.T
    return Linear16(w, b).eval()


@pytest.fixture(scope="module")
def case() -> tuple[Linear16, torch.Tensor]:
    """The victim and its clean image: logits 1.0, 0, -0.5, -1, ... (class 0 by 1.0)."""
    x0 = _photo()
    return _linear16(x0), x0


def test_the_victim_is_the_closed_form(case: tuple[Linear16, torch.Tensor]) -> None:
    victim, x0 = case
    with torch.no_grad():
        z = victim(x0)
    assert z.argmax(1).tolist() == [0]
    assert z[0, :3].tolist() == pytest.approx([1.0, 0.0, -0.5], abs=1e-4)
    np.testing.assert_allclose(victim.logits64(x0), z.double().numpy(), atol=1e-4)


def _reached_closed_form(goal: str, z: np.ndarray, kappa: float) -> bool:
    """``goal`` on float64 logits ``[10]`` of an image whose clean class is 0."""
    others = np.delete(z, 0)
    if goal == "untargeted":
        return bool(others.max() - z[0] > kappa)
    if goal == "privacy":  # class 0 out of the top-5 and log p_0 <= log 0.05, both by kappa
        log_p0 = z[0] - z.max() - np.log(np.exp(z - z.max()).sum())
        fifth = np.sort(others)[-5]
        return bool(min(fifth - z[0], np.log(0.05) - log_p0) > kappa)
    raise AssertionError(f"no closed form for goal {goal!r}")


def _check_saved_success(name: str, victim: Linear16, x0: torch.Tensor, tmp_path: Path) -> None:
    """Run method ``name`` (default preset) and assert its goal holds on the PNG read back from disk."""
    goal_spec = GOALS.get(name, "untargeted")
    goal = parse_goal(goal_spec, DEFAULT_KAPPA)
    res = run_attack(get_method(name), victim, goal, x0, seed=0)
    assert bool(res.success[0]), f"{name}: engine reports failure, margin {res.margin.tolist()}"
    assert torch.equal(res.x_adv, quantize(res.x_adv)), f"{name}: x_adv is not an 8-bit image"
    assert not torch.equal(res.x_adv, x0)

    path = save_image(res.x_adv[0], tmp_path / f"{name}.png")
    back = load_image(path).rgb[None]
    assert torch.equal(back, res.x_adv), f"{name}: the PNG read back differs from x_adv"
    with torch.no_grad():  # re-judged from scratch on the file, at batch 1
        bound = goal.bind(victim(x0), victim)
        out = victim(back)
    assert bool(bound.reached(out)[0]), f"{name}: saved file misses {goal_spec}: margin {bound.margin(out).tolist()}"
    z = victim.logits64(back)[0]
    assert _reached_closed_form(goal_spec, z, DEFAULT_KAPPA - 1e-4), f"{name}: closed-form logits {z.round(3)}"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_fools_the_victim_on_the_saved_file(
    name: str, case: tuple[Linear16, torch.Tensor], tmp_path: Path
) -> None:
    victim, x0 = case
    _check_saved_success(name, victim, x0, tmp_path)


def test_the_table_fails_a_method_that_does_not_reach_its_goal(
    case: tuple[Linear16, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A method registered with too small a budget (FGSM at a quarter level: nothing survives rounding)
    is caught by the same check the table runs."""
    victim, x0 = case
    fgsm = METHODS["fgsm"]
    weak = dataclasses.replace(fgsm, name="weak", presets={"default": {"eps": 0.25 / 255}})
    monkeypatch.setitem(METHODS, "weak", weak)
    with pytest.raises(AssertionError, match="weak: engine reports failure"):
        _check_saved_success("weak", victim, x0, tmp_path)


def test_deepfool_reaches_kappa_when_rounding_stalls_the_saved_image(tmp_path: Path) -> None:
    """Clean margin 3: DeepFool's first step puts the 387 values where ``w_1 - w_0 = ±2`` just above one
    level, so the saved image has margin 0.035 < kappa = 0.05 while the float one is past it. Each later
    step adds only ``(kappa - 0.035) / |w|^2`` per value, far from the half level a value needs to round
    up, so DeepFool used to end its 50 steps at margin 0.035 (kappa was applied: the float iterate reached
    0.81). After 10 stalled steps (DeepFoolStep.patience) the step completes on the 8-bit grid: two
    values move to a second level (2 x 2/255 = 0.0157 > 0.0147 missing), the fewest that reach kappa."""
    x0 = _photo()
    victim = _linear16(x0, clean_margin=3.0)
    goal = parse_goal("untargeted", DEFAULT_KAPPA)
    res = run_attack(get_method("deepfool"), victim, goal, x0, seed=0)
    assert bool(res.success[0]), f"margin {res.margin.tolist()}"
    assert int(res.iterations[0]) == 12  # step 1 rounds to 0.035, 10 stalled steps (patience), then the completion
    path = save_image(res.x_adv[0], tmp_path / "deepfool.png")
    back = load_image(path).rgb[None]
    z = victim.logits64(back)[0]
    assert np.delete(z, 0).max() - z[0] == pytest.approx(-3.0 + (387 + 2) * 2 / 255, abs=1e-4)  # 0.0510 > kappa
    levels = ((back - x0).abs() * 255).round()
    assert int((levels == 1).sum()) == 385 and int((levels == 2).sum()) == 2 and int((levels > 2).sum()) == 0
