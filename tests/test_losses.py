import pytest
import torch

from jndkit.losses import bounded_range, squared_l2, total_variation


def test_bounded_range_on_0_255_scale_normalised_by_pixel_count():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0, 0, 0] = -0.1  # p = -25.5 -> 25.5
    x[0, 1, 1, 1] = 1.2  # p = 306 -> 51
    x[0, 2, 0, 1] = 0.5  # inside -> 0
    assert bounded_range(x).item() == pytest.approx((25.5 + 51.0) / 12, rel=1e-5)


def test_total_variation_hand_computed():
    x = torch.tensor([[0.0, 1.0], [2.0, 4.0]]).view(1, 1, 2, 2)
    # horizontal: (1-0)^2 + (4-2)^2 = 5; vertical: (2-0)^2 + (4-1)^2 = 13; / (H*W*C = 4)
    assert total_variation(x).item() == pytest.approx(18 / 4)
    assert total_variation(torch.ones(2, 3, 5, 5)).tolist() == [0.0, 0.0]


def test_squared_l2_per_sample():
    a, b = torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    b[1, 0, 0, 0] = 0.5
    assert squared_l2(b, a).tolist() == [0.0, 0.25]


def test_ssim_change_cost_predicts_the_ssim_drop_of_one_changed_value():
    """The first-order cost map against the real SSIM drop (kornia's windowed SSIM, reflect
    padding) of changing single values: flat areas must cost more, in the predicted ratio."""
    from kornia.metrics import ssim

    from jndkit.losses import ssim_change_cost

    g = torch.Generator().manual_seed(0)
    x = torch.full((1, 1, 40, 40), 0.5, dtype=torch.float64)  # float32 cannot resolve a 1e-7 drop
    x[..., 20:] = 0.5 + 0.15 * torch.randn(1, 1, 40, 20, generator=g, dtype=torch.float64)  # textured
    x = x.clamp(0, 1)
    cost = ssim_change_cost(x)
    assert abs(float(cost.mean()) - 1.0) < 1e-5
    d = 1.0 / 255.0
    drops, preds = [], []
    for (i, j) in [(20, 8), (20, 31), (10, 12), (30, 27)]:
        y = x.clone()
        y[0, 0, i, j] += d
        drops.append(1.0 - float(ssim(y, x, 11, max_val=1.0).mean()))
        preds.append(float(cost[0, 0, i, j]))
    assert drops[0] > 5 * drops[1] and preds[0] > 5 * preds[1]  # flat is dearer than texture
    for k in range(1, 4):
        assert preds[0] / preds[k] == pytest.approx(drops[0] / drops[k], rel=0.05)  # measured: within 1.5 %
