"""Loss terms of seeds 001 (MND), 002 (HVS-JND) and 004 (colour variance) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from jndkit import losses
from jndkit.attacks.engine import Context
from jndkit.errors import InputError
from jndkit.goals import Goal, LeastLikely, Untargeted

EPS = losses.SOBEL_EPS


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


# ---------------------------------------------------------------------------------- MND adversarial loss
def test_mnd_adversarial_untargeted_eq3_is_probability_plus_logit() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0]])
    away = torch.tensor([[0.0, 1.0, 0.0]])
    p = _softmax([1.0, 2.0, 0.0])
    got = losses.mnd_adversarial(logits, away, torch.zeros_like(away), r=0.5)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(p[1] + 2.0, rel=1e-6)  # 0.665241 + 2


def test_mnd_adversarial_targeted_eq4_is_minus_probability_to_the_r() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    toward = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    got = losses.mnd_adversarial(logits, torch.zeros_like(toward), toward, r=0.0625)
    p = _softmax([1.0, 2.0, 0.0])
    assert got[0].item() == pytest.approx(-(p[2] ** 0.0625), rel=1e-6)  # -(0.090031)^0.0625
    assert got[1].item() == pytest.approx(-((1 / 3) ** 0.0625), rel=1e-6)


def test_mnd_adversarial_gradient_finite_when_target_probability_underflows() -> None:
    logits = torch.tensor([[0.0, 150.0, -150.0]], requires_grad=True)  # p_2 = e^-300 = 0 in float32
    toward = torch.tensor([[0.0, 0.0, 1.0]])
    loss = losses.mnd_adversarial(logits, torch.zeros_like(toward), toward, r=0.0625)
    (g,) = torch.autograd.grad(loss.sum(), logits)
    assert torch.isfinite(g).all()


def test_mnd_adversarial_gradcheck() -> None:
    logits = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    away = torch.eye(5, dtype=torch.float64)[[1, 3]]
    toward = torch.eye(5, dtype=torch.float64)[[4, 0]]
    assert torch.autograd.gradcheck(lambda z: losses.mnd_adversarial(z, away, toward, 0.0625), (logits,))


def _ctx(x: torch.Tensor, x0: torch.Tensor, outputs: torch.Tensor, goal: Goal, **extras: torch.Tensor) -> Context:
    return Context(x=x, x0=x0, outputs=outputs, goal=goal, params={"r": 0.0625}, extras=dict(extras), iteration=0)


def test_term_mnd_adversarial_takes_the_class_from_the_goal() -> None:
    clean = torch.tensor([[1.0, 3.0, 0.0, 2.0]])
    x = torch.zeros(1, 3, 4, 4)
    out = torch.tensor([[1.0, 2.0, 0.5, 0.0]])
    p = _softmax([1.0, 2.0, 0.5, 0.0])
    untargeted = losses.term_mnd_adversarial(_ctx(x, x, out, Untargeted().bind(clean)))
    assert untargeted.item() == pytest.approx(p[1] + 2.0, rel=1e-6)  # the clean top-1 is class 1
    least = losses.term_mnd_adversarial(_ctx(x, x, out, LeastLikely().bind(clean)))
    assert least.item() == pytest.approx(-(p[2] ** 0.0625), rel=1e-6)  # the clean least likely is class 2


def test_term_mnd_adversarial_rejects_goals_without_classes() -> None:
    class Embedding(Goal):
        def _bind(self, clean: torch.Tensor, victim: object) -> None:
            pass

    x = torch.zeros(1, 3, 4, 4)
    goal = Embedding().bind(torch.zeros(1, 4))
    with pytest.raises(InputError, match="class goal"):
        losses.term_mnd_adversarial(_ctx(x, x, torch.zeros(1, 4), goal))


# ---------------------------------------------------------------------------------- MND perceptual terms
def test_mean_abs_and_rms_deviation() -> None:
    x0 = torch.full((2, 3, 1, 2), 0.5)
    x = x0.clone()
    x[0, 0, 0, 0] = 0.8  # |d| = 0.3
    x[0, 2, 0, 1] = 0.4  # |d| = 0.1
    assert losses.mean_abs_deviation(x, x0).tolist() == pytest.approx([0.4 / 6, 0.0], abs=1e-7)
    assert losses.rms_deviation(x, x0)[0].item() == pytest.approx(math.sqrt(0.1 / 6 + 1e-12), rel=1e-6)
    assert losses.rms_deviation(x, x0)[1].item() == pytest.approx(1e-6, rel=1e-3)  # sqrt(eps)
    assert losses.mean_squared_deviation(x, x0)[0].item() == pytest.approx(0.1 / 6, rel=1e-6)


def test_rms_deviation_gradient_finite_at_zero() -> None:
    x0 = torch.rand(1, 3, 4, 4)
    x = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(losses.rms_deviation(x, x0).sum(), x)
    assert torch.isfinite(g).all()


def test_ssim_of_two_constant_images() -> None:
    # sigma = 0 for both, so SSIM = (2 mu_z mu_x + C1) / (mu_z^2 + mu_x^2 + C1). float64: in float32
    # E[x^2] - mu^2 leaves a 1e-8 variance that moves the value by 3e-5.
    x0 = torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64)
    x = torch.full((1, 3, 16, 16), 0.6, dtype=torch.float64)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1)  # 0.983609...
    assert losses.ssim_index(x, x0).item() == pytest.approx(expected, rel=1e-5)
    assert losses.ssim_loss(x, x0).item() == pytest.approx(1 - expected, rel=1e-4)
    assert losses.ssim_loss(x0, x0).item() == pytest.approx(0.0, abs=1e-6)


def test_ssim_matches_scikit_image_away_from_the_border() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 1, 40, 40, generator=g, dtype=torch.float64)
    x = (x0 + 0.1 * torch.randn(1, 1, 40, 40, generator=g, dtype=torch.float64)).clamp(0, 1)
    from kornia.metrics import ssim

    ours = ssim(x, x0, losses.SSIM_WINDOW)[0, 0, 5:-5, 5:-5].numpy()
    _, ref = structural_similarity(x[0, 0].numpy(), x0[0, 0].numpy(), data_range=1.0, gaussian_weights=True,
                                   sigma=1.5, use_sample_covariance=False, full=True)
    np.testing.assert_allclose(ours, ref[5:-5, 5:-5], atol=1e-6)


def test_sobel_magnitude_uses_the_unnormalised_kernels_of_eq_15_16() -> None:
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 10.0]])
    x = v.expand(1, 3, 3, 3)
    # centre: Gx = (3-1) + 2(6-4) + (10-7) = 9, Gy = (7 + 16 + 10) - (1 + 4 + 3) = 25
    got = losses.sobel_magnitude(x)[0, :, 1, 1]
    assert got.tolist() == pytest.approx([math.sqrt(81 + 625 + EPS)] * 3, rel=1e-6)


def _ramp(a: float, channels: int = 3) -> torch.Tensor:
    # x[i, j] = a * j on a 4 x 4 image: Gx = 4 * (x[j+1] - x[j-1]) = 8a inside, 4a on the first and
    # last column (replicate border), Gy = 0.
    return (a * torch.arange(4.0)).expand(1, channels, 4, 4).contiguous()


def test_sobel_deviation_on_a_ramp() -> None:
    x0 = torch.zeros(1, 3, 4, 4)
    edge, inner = math.sqrt((4 * 0.1) ** 2 + EPS), math.sqrt((8 * 0.1) ** 2 + EPS)
    expected = (edge + inner) / 2 - math.sqrt(EPS)  # 0.599001
    assert losses.sobel_deviation(_ramp(0.1), x0).item() == pytest.approx(expected, rel=1e-5)
    assert losses.sobel_deviation(x0 + 0.2, x0).item() == pytest.approx(0.0, abs=1e-7)  # a shift keeps gradients


# ---------------------------------------------------------------------------------- HVS-JND terms
def _hvs_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x0 = torch.full((1, 3, 1, 2), 0.5)
    d = torch.tensor([[0.3, 0.1], [-0.2, 0.05], [0.5, 0.0]]).view(1, 3, 1, 2)
    jnd = torch.full_like(x0, 0.1)
    return x0 + d, x0, jnd


def test_jnd_excess_l1_eq3_eq7() -> None:
    x, x0, jnd = _hvs_example()
    # beyond J: R 0.2, G 0.1, B 0.4 (one value each); M = (3, 5, 1): 0.6 + 0.5 + 0.4 = 1.5 over 6 values
    assert losses.jnd_excess_l1(x, x0, jnd).item() == pytest.approx(0.25, rel=1e-5)
    assert losses.jnd_excess_l1(x, x0, jnd, (1.0, 1.0, 1.0)).item() == pytest.approx(0.7 / 6, rel=1e-5)  # eq. 4


def test_jnd_excess_l2_eq5_eq7() -> None:
    x, x0, jnd = _hvs_example()
    # 3 * 0.04 + 5 * 0.01 + 1 * 0.16 = 0.33 over 6 values
    assert losses.jnd_excess_l2(x, x0, jnd).item() == pytest.approx(0.055, rel=1e-5)


def test_jnd_excess_under_the_threshold_is_free() -> None:
    x0 = torch.full((1, 3, 4, 4), 0.5)
    jnd = torch.full_like(x0, 0.05)
    x = (x0 + 0.049 * torch.sign(torch.randn_like(x0))).requires_grad_(True)
    loss = losses.jnd_excess_l1(x, x0, jnd) + losses.jnd_excess_l2(x, x0, jnd)
    assert loss.item() == 0.0
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert g.abs().max().item() == 0.0


def test_jnd_excess_gradient_eq6_on_a_ramp() -> None:
    x0 = torch.zeros(1, 3, 4, 4)
    jnd = torch.full_like(x0, 0.02)  # flat: g(J) = sqrt(eps)
    s = math.sqrt(EPS)
    edge, inner = math.sqrt((4 * 0.1) ** 2 + EPS), math.sqrt((8 * 0.1) ** 2 + EPS)
    per_pixel = (edge + inner) / 2 - 2 * s  # |g(Z) - g(X)| - g(J), averaged over the columns
    expected = (3 + 5 + 1) / 3 * per_pixel  # 1.794003
    assert losses.jnd_excess_gradient(_ramp(0.1), x0, jnd).item() == pytest.approx(expected, rel=1e-5)


def test_term_jnd_reads_extras_and_channel_weights_from_params() -> None:
    x, x0, jnd = _hvs_example()
    ctx = Context(x=x, x0=x0, outputs=torch.zeros(1, 2), goal=Untargeted(), extras={"jnd": jnd}, iteration=0,
                  params={"m_r": 1.0, "m_g": 1.0, "m_b": 1.0})
    assert losses.term_jnd_l1(ctx).item() == pytest.approx(0.7 / 6, rel=1e-5)
    ctx.params = {}
    assert losses.term_jnd_l1(ctx).item() == pytest.approx(0.25, rel=1e-5)  # defaults M = (3, 5, 1)


# ---------------------------------------------------------------------------------- colour variance
def test_bound_l1_ratio() -> None:
    x0 = torch.full((2, 3, 2, 2), 0.5)
    bound = torch.full_like(x0, 2 / 255)
    x = x0.clone()
    x[0, :, 0, 0] += 1 / 255  # 3 values at one level: ||v||_1 = 3/255, ||pT||_1 = 12 * 2/255
    assert losses.bound_l1_ratio(x, x0, bound).tolist() == pytest.approx([3 / 24, 0.0], rel=1e-5)
    ctx = Context(x=x, x0=x0, outputs=torch.zeros(2, 2), goal=Untargeted(), params={}, extras={"bound": bound},
                  iteration=0)
    assert losses.term_bound_l1(ctx).tolist() == pytest.approx([3 / 24, 0.0], rel=1e-5)
