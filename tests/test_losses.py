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
