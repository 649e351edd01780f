"""Tests of jndkit.perception.color against scikit-image and the worked values of SPECS.md §2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import deltaE_ciede2000, rgb2lab

from jndkit.errors import InputError
from jndkit.perception import ciede2000, colour_variance, colour_variance_bound, jnd_map, rgb_to_lab

# ----------------------------------------------------------------------------------------------
# rgb_to_lab


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rgb_to_lab_matches_skimage(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 20, 24, generator=g, dtype=torch.float64)
    x[0, :, 0, :4] = torch.tensor([0.0, 1.0, 0.02, 0.04045])[None, :]  # saturated and knee values
    ref = np.stack([rgb2lab(im.permute(1, 2, 0).numpy()) for im in x]).transpose(0, 3, 1, 2)
    out = rgb_to_lab(x.to(dtype))
    assert out.shape == x.shape and out.dtype == dtype
    np.testing.assert_allclose(out.double().numpy(), ref, atol=1e-4, rtol=0)


def test_rgb_to_lab_gradient_reaches_saturated_pixels() -> None:
    x = torch.tensor([0.0, 1.0, 0.5, 0.003]).view(1, 1, 2, 2).expand(1, 3, 2, 2).clone()
    x = x.double().requires_grad_(True)
    rgb_to_lab(x)[:, 0].sum().backward()  # L rises with every channel
    assert x.grad is not None
    assert bool(torch.isfinite(x.grad).all()) and bool((x.grad > 0).all())


def test_rgb_to_lab_gradcheck() -> None:
    x = torch.rand(1, 3, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.autograd.gradcheck(rgb_to_lab, (x.requires_grad_(True),), eps=1e-7, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# ciede2000

SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.04246),
    ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.30648),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.26442),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ciede2000_sharma_pairs(dtype: torch.dtype) -> None:
    lab1 = torch.tensor([p[0] for p in SHARMA], dtype=dtype)
    lab2 = torch.tensor([p[1] for p in SHARMA], dtype=dtype)
    out = ciede2000(lab1, lab2)
    assert out.shape == (3,)
    np.testing.assert_allclose(out.double().numpy(), [p[2] for p in SHARMA], atol=1e-4, rtol=0)
    # Symmetric in its arguments.
    np.testing.assert_allclose(ciede2000(lab2, lab1).double().numpy(), out.double().numpy(), atol=1e-5)


def _random_lab_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)

    def draw() -> np.ndarray:
        return np.stack([rng.uniform(0, 100, n), rng.uniform(-128, 127, n), rng.uniform(-128, 127, n)], 1)

    a, b = draw(), draw()
    k = n // 10
    a[:k, 1:] = 0.0  # zero chroma on one side
    a[k : 2 * k, 1:] = 0.0  # ... and on both
    b[k : 2 * k, 1:] = 0.0
    # Hues near the 0/360 wrap-around: small b* of either sign with positive a*.
    a[2 * k : 3 * k, 1] = rng.uniform(1, 60, k)
    a[2 * k : 3 * k, 2] = rng.uniform(-2, 2, k)
    b[2 * k : 3 * k, 1] = rng.uniform(1, 60, k)
    b[2 * k : 3 * k, 2] = rng.uniform(-2, 2, k)
    b[3 * k : 4 * k] = a[3 * k : 4 * k]  # identical colours
    b[4 * k : 5 * k] = a[4 * k : 5 * k] + rng.normal(0, 0.5, (k, 3))  # near-identical
    return a, b


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ciede2000_matches_skimage_on_10000_pairs(dtype: torch.dtype) -> None:
    a, b = _random_lab_pairs(10_000, seed=2)
    ref = deltaE_ciede2000(a, b)
    out = ciede2000(torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)).double().numpy()
    assert float(np.abs(out - ref).max()) < 1e-3


def test_ciede2000_image_shape_and_broadcast() -> None:
    g = torch.Generator().manual_seed(3)
    lab1 = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64) * torch.tensor([100.0, 60, 60]).view(1, 3, 1, 1)
    lab2 = lab1.flip(-1)
    out = ciede2000(lab1, lab2)
    assert out.shape == (2, 4, 5)
    flat1 = lab1.permute(0, 2, 3, 1).reshape(-1, 3)
    flat2 = lab2.permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.allclose(out.reshape(-1), ciede2000(flat1, flat2))
    ref = deltaE_ciede2000(flat1.numpy(), flat2.numpy())
    np.testing.assert_allclose(out.reshape(-1).numpy(), ref, atol=1e-9)
    # One colour against many.
    one = torch.tensor([[50.0, 10.0, -10.0]], dtype=torch.float64)
    assert ciede2000(one, flat2).shape == (flat2.shape[0],)


@pytest.mark.parametrize(
    "lab1, lab2",
    [
        ((50.0, 0.0, 0.0), (60.0, 0.0, 0.0)),  # zero chroma on both
        ((50.0, 0.0, 0.0), (50.0, 0.0, 0.0)),  # identical greys
        ((50.0, 0.0, 0.0), (55.0, 3.0, -4.0)),  # zero chroma on one side
        ((50.0, 20.0, 1e-4), (52.0, 20.0, -1e-4)),  # hue just above 0 vs just below 360
        ((50.0, 20.0, 0.0), (52.0, 25.0, -0.0)),  # hue exactly 0
        ((40.0, 30.0, 20.0), (40.0, 30.0, 20.0)),  # identical colours
        ((50.0, -20.0, 1e-4), (50.0, -20.0, -1e-4)),  # hue wrap at 180
    ],
)
def test_ciede2000_gradients_finite(lab1: tuple[float, ...], lab2: tuple[float, ...]) -> None:
    a = torch.tensor([lab1], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([lab2], dtype=torch.float64, requires_grad=True)
    ciede2000(a, b).sum().backward()
    assert a.grad is not None and b.grad is not None
    assert bool(torch.isfinite(a.grad).all()) and bool(torch.isfinite(b.grad).all())
    # float32 too
    a32 = a.detach().float().requires_grad_(True)
    b32 = b.detach().float().requires_grad_(True)
    ciede2000(a32, b32).sum().backward()
    assert a32.grad is not None and bool(torch.isfinite(a32.grad).all())


def test_ciede2000_gradients_across_wrap_are_continuous() -> None:
    # Moving b* of one colour through 0 (hue 359.99 -> 0.01) changes dE smoothly.
    ref = torch.tensor([[50.0, 20.0, 3.0]], dtype=torch.float64)
    grads = []
    for bstar in (-1e-3, 1e-3):
        q = torch.tensor([[52.0, 22.0, bstar]], dtype=torch.float64, requires_grad=True)
        ciede2000(ref, q).sum().backward()
        assert q.grad is not None
        grads.append(q.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-3)


def test_ciede2000_gradcheck() -> None:
    g = torch.Generator().manual_seed(4)
    scale = torch.tensor([100.0, 120.0, 120.0], dtype=torch.float64)
    a = (torch.rand(16, 3, generator=g, dtype=torch.float64) * scale - torch.tensor([0.0, 60, 60])).requires_grad_(True)
    b = (torch.rand(16, 3, generator=g, dtype=torch.float64) * scale - torch.tensor([0.0, 60, 60])).requires_grad_(True)
    assert torch.autograd.gradcheck(ciede2000, (a, b), eps=1e-6, atol=1e-5)


def test_ciede2000_bad_input() -> None:
    with pytest.raises(InputError, match=r"lab1 must have its 3 Lab channels on dim 1.*got \[4, 2\]"):
        ciede2000(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(InputError, match=r"broadcastable shapes, got \[4, 3\] and \[5, 3\]"):
        ciede2000(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(InputError, match="lab2 must be a floating tensor"):
        ciede2000(torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.int64))


# ----------------------------------------------------------------------------------------------
# colour variance

SIDE_W, DIAG_W = 0.096532, 0.058550


def _grey(v: float) -> np.ndarray:
    return np.full((1, 1, 3), v)


def _de_grey(v0: float, v1: float) -> float:
    return float(deltaE_ciede2000(rgb2lab(_grey(v0)), rgb2lab(_grey(v1)))[0, 0])


def _grey_at_de(v0: float, target: float) -> float:
    """Grey value whose CIEDE2000 distance to grey v0 is ``target`` (bisection with skimage)."""
    lo, hi = v0, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _de_grey(v0, mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def test_colour_variance_worked_value() -> None:
    v0 = 0.3
    v1 = _grey_at_de(v0, 10.0)
    assert _de_grey(v0, v1) == pytest.approx(10.0, abs=1e-9)
    x = torch.full((1, 3, 3, 3), v1, dtype=torch.float64)
    x[..., 1, 1] = v0  # interior pixel, all 8 neighbours at dE00 = 10
    v = colour_variance(x, normalise=False)
    assert v.shape == (1, 1, 3, 3)
    expected = math.sqrt((4 * (10 * SIDE_W) ** 2 + 4 * (10 * DIAG_W) ** 2) / 8)
    assert expected == pytest.approx(0.79833, abs=1e-5)
    assert float(v[0, 0, 1, 1]) == pytest.approx(0.79833, abs=1e-4)
    # Weights: a single differing side / diagonal neighbour.
    for pos, wgt in (((1, 2), SIDE_W), ((2, 2), DIAG_W)):
        y = torch.full((1, 3, 3, 3), v0, dtype=torch.float64)
        y[..., pos[0], pos[1]] = v1
        val = float(colour_variance(y, normalise=False)[0, 0, 1, 1])
        assert val == pytest.approx(math.sqrt((10 * wgt) ** 2 / 8), abs=1e-5)


def _brute_force_variance(img: np.ndarray, n: int, s: float) -> np.ndarray:
    """Per-pixel loop as in the reference color_var.py (skimage Lab and deltaE_ciede2000)."""
    lab = rgb2lab(img)
    h, w = img.shape[:2]
    r = n // 2
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            total, count = 0.0, 0
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    ii, jj = i + dy, j + dx
                    if (dy == 0 and dx == 0) or not (0 <= ii < h and 0 <= jj < w):
                        continue
                    de = float(deltaE_ciede2000(lab[i, j], lab[ii, jj]))
                    gw = math.exp(-(dx * dx + dy * dy) / (2 * s * s)) / (2 * math.pi * s * s)
                    total += (gw * de) ** 2
                    count += 1
            out[i, j] = math.sqrt(total / count)
    return out


@pytest.mark.parametrize("n, s", [(3, 1.0), (5, 1.5)])
def test_colour_variance_matches_brute_force(n: int, s: float) -> None:
    size = 16 if n == 3 else 9
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 3, size, size, generator=g, dtype=torch.float64)
    x[..., :4, :4] = 0.4  # a flat patch
    ref = _brute_force_variance(x[0].permute(1, 2, 0).numpy(), n, s)
    raw = colour_variance(x, n=n, s=s, normalise=False)[0, 0].numpy()
    np.testing.assert_allclose(raw, ref, atol=1e-4, rtol=0)
    norm = colour_variance(x, n=n, s=s)[0, 0].numpy()
    np.testing.assert_allclose(norm, ref / ref.max(), atol=1e-4, rtol=0)
    # float32 agrees too.
    np.testing.assert_allclose(
        colour_variance(x.float(), n=n, s=s, normalise=False)[0, 0].double().numpy(), ref, atol=1e-3, rtol=0
    )


def test_colour_variance_bound_and_flat_image() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 3, 8, 9, generator=g)
    cv = colour_variance(x)
    bound = colour_variance_bound(x, T=50)
    assert cv.shape == (2, 1, 8, 9) and bound.shape == (2, 3, 8, 9)
    assert torch.allclose(bound, (cv * 50 / 255).expand(-1, 3, -1, -1))
    assert torch.allclose(bound.amax(dim=(1, 2, 3)), torch.full((2,), 50 / 255))
    assert torch.equal(jnd_map(x, "colour-variance"), colour_variance_bound(x))
    flat = torch.full((1, 3, 6, 6), 0.5)
    assert torch.equal(colour_variance(flat), torch.zeros(1, 1, 6, 6))


def test_colour_variance_gradients_finite_with_flat_areas() -> None:
    x = torch.full((1, 3, 6, 6), 0.5, dtype=torch.float64)
    x[..., 3:, :] = torch.rand(1, 3, 3, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x.requires_grad_(True)
    colour_variance(x).sum().backward()
    assert x.grad is not None
    assert bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0


def test_colour_variance_bad_parameters() -> None:
    x = torch.rand(1, 3, 5, 5)
    with pytest.raises(InputError, match="n must be an odd integer >= 3, got 4"):
        colour_variance(x, n=4)
    with pytest.raises(InputError, match="n must be an odd integer >= 3, got 1"):
        colour_variance(x, n=1)
    with pytest.raises(InputError, match="s must be > 0, got 0"):
        colour_variance(x, s=0.0)
    with pytest.raises(InputError, match="T must be > 0, got -1"):
        colour_variance_bound(x, T=-1)
    with pytest.raises(InputError, match=r"lie in \[0,1\], got range"):
        colour_variance(x * 2)
    with pytest.raises(InputError, match=r"shape \[B,3,H,W\], got \[3, 5, 5\]"):
        rgb_to_lab(x[0])
