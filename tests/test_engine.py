"""The engine's contract on tiny victims whose answers are known in closed form."""

import pytest
import torch
from torch import nn

from jndkit.attacks import Retry, run_attack
from jndkit.attacks.engine import Delta, GradientDescent, Method, SignStep, project_linf
from jndkit.errors import InputError
from jndkit.goals import Untargeted
from jndkit.losses import margin_loss

LV = 1.0 / 255.0


class MeanShift(nn.Module):
    """logits = [0, 255 * mean(x - base) - threshold]: class 1 wins once the mean change
    exceeds ``threshold`` grey levels. ``threshold`` is per sample, so each sample flips at
    a different iteration."""

    def __init__(self, base: torch.Tensor, threshold: torch.Tensor):
        super().__init__()
        self.base = base
        self.threshold = threshold

    def forward(self, x):
        # identify each row's sample by the pixel (1, 0, 0), which encodes its index and never moves
        match = ((x[:, 1:2, 0, 0] * 255).round().long() == (self.base[:, 1, 0, 0] * 255).round().long()[None]).float()
        thr = (match * self.threshold[None]).sum(1)
        base = match @ self.base.flatten(1)
        s = 255.0 * (x.flatten(1) - base).mean(1) - thr
        return torch.stack([torch.zeros_like(s), s], dim=1)


def batch(n: int) -> torch.Tensor:
    x = torch.full((n, 3, 4, 4), 100 / 255)  # on the 8-bit grid
    for i in range(n):
        x[i, 1, 0, 0] = (10 + i) / 255  # identifies the sample; never moved (see method below)
    return x


def label_zero_goal():
    return Untargeted(labels=torch.zeros(1, dtype=torch.long), kappa=0.05)


def sign_method(max_iter=20):
    return Method(name="toy-sign", loss_terms=((None, margin_loss),), update=SignStep(),
                  params={"alpha": LV, "eps": 1.0}, projection=_freeze_channel1, max_iter=max_iter)


def _freeze_channel1(v, x0, params, extras):
    v = project_linf(v, x0, params, extras)
    v = v.clone()
    v[:, 1] = 0
    return v


def test_each_sample_stops_at_its_first_quantized_success():
    x0 = batch(3)
    # channel 1 frozen: mean change per step = (2/3) level -> flips when (2/3) k > thr + kappa
    thr = torch.tensor([0.5, 1.9, 3.2])
    victim = MeanShift(x0, thr)
    goal = Untargeted(labels=torch.zeros(3, dtype=torch.long), kappa=0.05)
    res = run_attack(sign_method(), victim, goal, x0)
    assert res.success.tolist() == [True, True, True]
    assert res.iterations.tolist() == [1, 3, 5]
    # the saved image of each sample is its first success: k levels on channels 0 and 2
    for i, k in enumerate([1, 3, 5]):
        d = ((res.x_adv[i] - x0[i]) * 255).round()
        assert torch.equal(d[0], torch.full((4, 4), float(k))) and torch.equal(d[1], torch.zeros(4, 4))


def test_float_success_that_vanishes_after_quantization_keeps_iterating():
    x0 = batch(1)
    victim = MeanShift(x0, torch.tensor([0.1]))
    # plain gradient descent on the margin; d(margin)/dx = 255/numel, so lr gives 0.3 level per step
    numel = x0[0].numel()
    lr = 0.3 * LV / (255.0 / numel)
    m = Method(name="toy-gd", loss_terms=((None, margin_loss),), update=GradientDescent(), params={"lr": lr, "eps": 1.0},
               projection=_freeze_channel1, max_iter=10)
    res = run_attack(m, victim, label_zero_goal(), x0)
    # float image after step 1: +0.3 level on 2/3 of the values -> margin 0.2 - 0.1 > kappa (float success),
    # but it rounds to 0 levels; step 2 (+0.6) rounds to 1 level -> first saved success at K = 2
    assert res.success.item() and res.iterations.item() == 2
    assert torch.allclose((res.x_adv - x0)[0, 0] * 255, torch.ones(4, 4))


def test_budget_exhausted_reports_failure_and_best_image():
    x0 = batch(1)
    res = run_attack(sign_method(max_iter=2), MeanShift(x0, torch.tensor([10.0])), label_zero_goal(), x0)
    assert not res.success.item() and res.iterations.item() == 2
    assert res.margin.item() == pytest.approx(2 * 2 / 3 - 10.0, abs=1e-4)


def test_already_reached_is_iteration_zero():
    x0 = batch(1)
    res = run_attack(sign_method(), MeanShift(x0, torch.tensor([-1.0])), label_zero_goal(), x0)
    assert res.success.item() and res.iterations.item() == 0 and torch.equal(res.x_adv, x0)


def test_retry_weakens_the_perceptual_weight_only_for_failures():
    x0 = batch(2)
    victim = MeanShift(x0, torch.tensor([0.5, 4.0]))

    def l2(ctx):
        return (ctx.x - ctx.x0).pow(2).flatten(1).sum(1) * 255.0**2

    # d(margin)/dx = 255/48 per value; with the L2 pull the change settles at 255/48 / (2 beta 255^2)
    # = 2.2 levels for beta = 0.00473: enough for sample 0 (needs a mean of 0.55 level), not for
    # sample 1 (needs 4.05); the retry with beta = 0 removes the pull.
    m = Method(name="toy-retry", loss_terms=((None, margin_loss), ("beta", l2)), update=GradientDescent(),
               params={"lr": 2e-4, "beta": 0.00473, "eps": 1.0}, projection=_freeze_channel1, max_iter=40,
               retry=Retry(scale={"beta": 0.0}, max_tries=1))
    goal = Untargeted(labels=torch.zeros(2, dtype=torch.long), kappa=0.05)
    res = run_attack(m, victim, goal, x0)
    assert res.success.tolist() == [True, True]
    assert res.tries.tolist() == [1, 2]
    assert res.params[0]["beta"] == 0.00473 and res.params[1]["beta"] == 0.0
    no_retry = run_attack(m, victim, goal, x0, retries=False)
    assert no_retry.success.tolist() == [True, False]


def test_same_seed_same_output_and_input_validation():
    x0 = batch(1)
    m = Method(name="rand", loss_terms=((None, margin_loss),), update=SignStep(), parametrisation=Delta(),
               params={"alpha": LV, "eps": 4 * LV, "random_start": 4 * LV}, projection=_freeze_channel1, max_iter=3)
    v = MeanShift(x0, torch.tensor([50.0]))
    a = run_attack(m, v, label_zero_goal(), x0, seed=7).x_adv
    b = run_attack(m, v, label_zero_goal(), x0, seed=7).x_adv
    c = run_attack(m, v, label_zero_goal(), x0, seed=8).x_adv
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(InputError, match=r"\[B,3,H,W\]"):
        run_attack(m, v, label_zero_goal(), torch.zeros(3, 4, 4))
    with pytest.raises(InputError, match="lie in"):
        run_attack(m, v, label_zero_goal(), x0 + 1.0)


def test_levels_method_on_a_real_photo_is_saved_success(mobilenet, photo_fn, tmp_path):
    from jndkit.attacks import get_method
    from jndkit.images import load_image, save_image

    x0 = photo_fn("astronaut")
    res = run_attack(get_method("levels"), mobilenet, Untargeted(), x0)
    assert res.success.item()
    # every change is a whole 8-bit level and pruning kept the change small
    d = (res.x_adv - x0) * 255
    assert torch.allclose(d, d.round(), atol=1e-4) and float(d.abs().max()) <= 1.0 + 1e-4
    p = save_image(res.x_adv[0], tmp_path / "a.png")
    reread = load_image(p).rgb[None]
    with torch.no_grad():
        clean, adv = mobilenet(x0).argmax(1), mobilenet(reread)
    assert Untargeted(labels=clean).bind(adv).reached(adv).item()


def test_result_carries_final_top5(mobilenet, photo_fn):
    from jndkit.attacks import get_method

    x0 = photo_fn("chelsea")
    res = run_attack(get_method("levels"), mobilenet, Untargeted(), x0)
    top = res.topk(5, mobilenet.labels)[0]
    assert len(top) == 5 and top == sorted(top, key=lambda t: -t[1])
    assert top[0][0] != mobilenet.predict(x0)[0][0][0]  # the answer changed
    assert top[0][0] == mobilenet.predict(res.x_adv)[0][0][0]


def test_level_step_moves_the_best_value_per_unit_of_cost():
    """LevelStep moves the values with the largest |g| / ((2u + 1) * cost), by one level each,
    against the gradient, and only within bounds and max_levels."""
    from jndkit.attacks.engine import LEVEL, LevelStep, StepInfo

    x0 = torch.full((1, 1, 2, 4), 0.5)
    x0[0, 0, 0, 0] = 1.0  # at the upper bound: may not go up
    g = -torch.tensor([[[[9.0, 1.0, 2.0, 3.0], [4.0, 5.0, 11.0, 7.0]]]])  # descent moves every value up
    cost = torch.ones_like(x0)
    cost[0, 0, 1, 3] = 10.0  # the best remaining gradient, but a dear value
    v = torch.zeros_like(x0)
    v[0, 0, 1, 2] = LEVEL  # already one level up: a second level costs 3x
    info = StepInfo(x0=x0, x=x0 + v, extras={"cost": cost})
    out = LevelStep().step(v, g, {}, {"fraction": 2 / 8, "max_levels": 2.0}, 0, info)
    moved = ((out - v) * 255).round().flatten().tolist()
    # scores: [blocked, 1, 2, 3, 4, 5, 11/3 = 3.7, 7/10]: the two best are 5 and 4 (with
    # 1 + u instead of 2u + 1, 11/2 would win; without the cost, 7 would)
    assert moved == [0, 0, 0, 0, 1, 1, 0, 0]
    out1 = LevelStep().step(v, g, {}, {"fraction": 3 / 8, "max_levels": 1.0}, 0, info)
    assert ((out1 - v) * 255).round().flatten().tolist() == [0, 0, 0, 1, 1, 1, 0, 0]  # [1,2] is at its cap
    assert torch.equal(out, torch.round(out * 255) / 255)  # still exactly on the 8-bit grid


class Hyperplane(nn.Module):
    """logits = [0, 255 * w.(x - x0) - t]: class 1 wins once the change along the unit vector
    ``w`` exceeds ``t`` grey levels, so the smallest L2 change that flips it is known: ``t/255``
    along ``w``."""

    def __init__(self, x0: torch.Tensor, w: torch.Tensor, t: float):
        super().__init__()
        self.x0, self.w, self.t = x0.flatten(1), w.flatten() / w.norm(), t

    def forward(self, x):
        s = 255.0 * (x.flatten(1) - self.x0) @ self.w - self.t
        return torch.stack([torch.zeros_like(s), s], dim=1)


def test_refine_walks_a_wasteful_success_down_to_the_smallest_norm():
    from jndkit.attacks.engine import refine
    from jndkit.images import quantize

    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((1, 3, 32, 32), 128 / 255)
    w = torch.randn(3 * 32 * 32, generator=gen)
    t = 40.0  # grey levels along w: an RMS change of 0.72 level
    victim = Hyperplane(x0, w, t)
    goal = label_zero_goal().bind(victim(x0))
    unit = (w / w.norm()).view_as(x0)
    noise = torch.randn(x0.shape, generator=gen) * 3 / 255
    wasteful = quantize(x0 + unit * (1.5 * t / 255) + noise)  # succeeds, at about 3.5 times the smallest norm
    assert bool(goal.margin(victim(wasteful)) > goal.kappa)
    n_wasteful = float((wasteful - x0).norm()) * 255
    assert n_wasteful > 3 * t

    out = refine(victim, goal, x0, wasteful, steps=100)
    n = float((out - x0).norm()) * 255
    assert torch.equal(out, quantize(out))  # an 8-bit image
    assert bool(goal.margin(victim(out)) > goal.kappa)  # still reaches the goal
    # the 8-bit grid adds a little to the closed-form minimum (t + kappa along w)
    assert t + 0.05 <= n <= 1.1 * (t + 0.05), (n, n_wasteful)
    assert torch.equal(refine(victim, goal, x0, wasteful, steps=0), wasteful)


def test_refine_runs_after_success_inside_the_engine():
    from jndkit.attacks import get_method

    gen = torch.Generator().manual_seed(1)
    x0 = torch.full((2, 3, 16, 16), 100 / 255)
    w = torch.randn(3 * 16 * 16, generator=gen)
    victim = Hyperplane(x0[:1], w, 20.0)
    plain = run_attack(get_method("ddn"), victim, label_zero_goal(), x0)
    refined = run_attack(get_method("ddn", "refined"), victim, label_zero_goal(), x0)
    assert bool(plain.success.all()) and bool(refined.success.all())
    n_plain = (plain.x_adv - x0).flatten(1).norm(dim=1) * 255
    n_ref = (refined.x_adv - x0).flatten(1).norm(dim=1) * 255
    assert bool((n_ref <= n_plain).all())
    assert bool((n_ref <= 1.1 * 20.05).all()), n_ref
    assert bool((refined.margin > 0.05).all())  # the margin is that of the returned image
    assert torch.allclose(refined.margin, label_zero_goal().bind(victim(x0)).margin(victim(refined.x_adv)))


# ---------------------------------------------------------------------------------- active set and hook
def _hook_calls(method, victim, goal, x0, **kw):
    from jndkit.attacks.engine import IterationInfo

    calls: list[IterationInfo] = []
    res = run_attack(method, victim, goal, x0, on_iteration=calls.append, **kw)
    return res, calls


def _same_result(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("x_adv", "success", "iterations", "margin", "tries"))


def test_hook_sees_each_sample_at_every_step_until_its_first_saved_success():
    x0 = batch(3)
    thr = torch.tensor([0.5, 1.9, 3.2])  # K = 1, 3, 5 (see the first test)
    victim = MeanShift(x0, thr)
    goal = Untargeted(labels=torch.zeros(3, dtype=torch.long), kappa=0.05)
    res, calls = _hook_calls(sign_method(), victim, goal, x0)
    assert _same_result(res, run_attack(sign_method(), victim, goal, x0))  # the hook only observes
    # a sample with K takes K gradient steps (iterations 0 .. K-1), then leaves the batch
    assert [(c.iteration, c.attempt, c.active.tolist()) for c in calls] == [
        (0, 0, [0, 1, 2]), (1, 0, [1, 2]), (2, 0, [1, 2]), (3, 0, [2]), (4, 0, [2])]
    for c in calls:
        assert c.x.shape[0] == c.outputs.shape[0] == c.active.numel() and not c.x.requires_grad
        # row i is sample active[i], after `iteration` sign steps of one level on channels 0 and 2
        d = ((c.x - x0[c.active]) * 255).round()
        assert torch.equal(d[:, 0], torch.full_like(d[:, 0], float(c.iteration)))
        # its margin in closed form: mean change (2/3 level per step) minus the sample's threshold
        assert torch.allclose(c.margin(), 2 / 3 * c.iteration - thr[c.active], atol=1e-4)
        assert torch.allclose(c.outputs, victim(c.x))


def test_hook_reports_retries_with_their_attempt_and_the_caller_indices():
    x0 = batch(2)
    victim = MeanShift(x0, torch.tensor([0.5, 4.0]))

    def l2(ctx):
        return (ctx.x - ctx.x0).pow(2).flatten(1).sum(1) * 255.0**2

    m = Method(name="toy-retry", loss_terms=((None, margin_loss), ("beta", l2)), update=GradientDescent(),
               params={"lr": 2e-4, "beta": 0.00473, "eps": 1.0}, projection=_freeze_channel1, max_iter=40,
               retry=Retry(scale={"beta": 0.0}, max_tries=1))
    goal = Untargeted(labels=torch.zeros(2, dtype=torch.long), kappa=0.05)
    res, calls = _hook_calls(m, victim, goal, x0)
    assert _same_result(res, run_attack(m, victim, goal, x0))
    assert res.tries.tolist() == [1, 2]  # sample 1 fails the first run (see the retry test)
    first = [c for c in calls if c.attempt == 0]
    retry = [c for c in calls if c.attempt == 1]
    assert [c.iteration for c in first] == list(range(40)) and first[0].active.tolist() == [0, 1]
    assert first[-1].active.tolist() == [1]  # sample 0 succeeded on the way
    # the retry runs sample 1 alone, reported under its index in the caller's batch, from the clean image
    assert retry and all(c.active.tolist() == [1] for c in retry)
    assert [c.iteration for c in retry] == list(range(len(retry))) and len(retry) == int(res.iterations[1]) - 40
    assert torch.equal(retry[0].x, x0[1:2])
    assert {c.attempt for c in calls} == {0, 1}


def test_fused_check_runs_are_the_same_as_separate_checks():
    """A one-level sign step is on the 8-bit grid, so with ``on_grid`` the gradient forward doubles as
    the check (the sample leaves at the forward that shows its success): same K, images and margins."""
    import dataclasses

    from jndkit.attacks.engine import LevelStep

    x0 = batch(3)
    thr = torch.tensor([0.5, 1.9, 3.2])
    victim = MeanShift(x0, thr)
    goal = Untargeted(labels=torch.zeros(3, dtype=torch.long), kappa=0.05)
    # fraction 1: every value with a gradient moves one level (channel 1 is put back by the projection)
    m = Method(name="toy-level", loss_terms=((None, margin_loss),), update=LevelStep(),
               params={"fraction": 1.0, "max_levels": 255.0, "eps": 1.0}, projection=_freeze_channel1, max_iter=20)
    fused, calls = _hook_calls(dataclasses.replace(m, on_grid=True), victim, goal, x0)
    separate = run_attack(m, victim, goal, x0)
    assert fused.iterations.tolist() == separate.iterations.tolist() == [1, 3, 5]
    assert _same_result(fused, separate)
    # the fused check is the forward of iteration K itself: the hook sees a sample there once more
    seen = [sum(int(i) in c.active.tolist() for c in calls) for i in range(3)]
    assert seen == [2, 4, 6]


def test_active_set_take_keeps_every_per_sample_field_aligned():
    from jndkit.attacks.engine import _ActiveSet

    n = 4
    rows = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()
    goal = Untargeted(kappa=0.05).bind(10 * torch.eye(n))  # sample i: clean label i
    s = _ActiveSet(index=torch.tensor([5, 6, 7, 8]), v=rows.clone().requires_grad_(True), x0=rows + 10,
                   goal=goal, victim=nn.Identity(), extras={"bound": rows + 20}, state={"m": rows + 30},
                   tstates=[{"momentum": rows + 40}], last_q=rows + 50)
    t = s.take(torch.tensor([2, 0]))
    assert len(t) == 2 and t.index.tolist() == [7, 5] and t.goal.labels.tolist() == [2, 0]
    for value, offset in ((t.v, 0), (t.x0, 10), (t.extras["bound"], 20), (t.state["m"], 30),
                          (t.tstates[0]["momentum"], 40), (t.last_q, 50)):
        assert value[:, 0, 0, 0].tolist() == [2 + offset, 0 + offset]
    assert not t.v.requires_grad
    t.state["m"].zero_()  # the taken state is a copy: an in-place optimiser update leaves the original
    assert s.state["m"][:, 0, 0, 0].tolist() == [30, 31, 32, 33]
    assert len(t.take(torch.tensor([], dtype=torch.long))) == 0
