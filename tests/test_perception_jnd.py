"""Tests of jndkit.perception.jnd: worked values (SPECS.md §1), an independent NumPy per-pixel
reference, batch consistency, input errors and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.feature import canny

from jndkit.errors import InputError
from jndkit.perception import (
    JND_MODELS,
    background_luminance,
    chou_li,
    contrast_masking,
    jnd_map,
    luma,
    luminance_adaptation,
    max_gradient,
    namm,
    rgb_box_from_ycbcr,
    wu_pattern,
)

# ----------------------------------------------------------------------------------------------
# Independent NumPy reference: per-pixel double loops over the SPECS.md §1 formulas

B_NP = np.array(
    [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]], dtype=float
)
G_NP = [
    np.array([[0, 0, 0, 0, 0], [1, 3, 8, 3, 1], [0, 0, 0, 0, 0], [-1, -3, -8, -3, -1], [0, 0, 0, 0, 0]], float),
    np.array([[0, 0, 1, 0, 0], [0, 8, 3, 0, 0], [1, 3, 0, -3, -1], [0, 0, -3, -8, 0], [0, 0, -1, 0, 0]], float),
    np.array([[0, 0, 1, 0, 0], [0, 0, 3, 8, 0], [-1, -3, 0, 3, 1], [0, -8, -3, 0, 0], [0, 0, -1, 0, 0]], float),
    np.array([[0, 1, 0, -1, 0], [0, 3, 0, -3, 0], [0, 8, 0, -8, 0], [0, 3, 0, -3, 0], [0, 1, 0, -1, 0]], float),
]
M_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def np_bg_mg(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape
    p = np.pad(img, 2)
    bg = np.zeros((h, w))
    mg = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            win = p[i : i + 5, j : j + 5]
            bg[i, j] = float((win * B_NP).sum()) / 32.0
            mg[i, j] = max(abs(float((win * g).sum())) / 16.0 for g in G_NP)
    return bg, mg


def np_f2(b: float) -> float:
    return 17.0 * (1.0 - math.sqrt(b / 127.0)) + 3.0 if b <= 127 else 3.0 / 128.0 * (b - 127.0) + 3.0


def np_f1(b: float, m: float) -> float:
    return m * (0.0001 * b + 0.115) + (0.5 - 0.01 * b)


def np_gauss_filter(img: np.ndarray, size: int, sigma: float) -> np.ndarray:
    r = size // 2
    t = np.arange(size) - r
    k = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    k /= k.sum()
    p = np.pad(img, r)
    out = np.zeros_like(img)
    for i in range(img.shape[0]):
        for j in range(img.shape[1]):
            out[i, j] = float((p[i : i + size, j : j + size] * k).sum())
    return out


def np_namm_weights(y: np.ndarray) -> np.ndarray:
    """The documented recipe: skimage Canny (sigma sqrt 2, 'nearest'), thresholds 0.5 / 0.2 of the
    maximum gradient magnitude, 0.1 on edges, 7x7 Gaussian sigma 0.8 with zero padding."""
    sm = ndi.gaussian_filter(y, math.sqrt(2), mode="nearest")
    mmax = np.hypot(ndi.sobel(sm, 0), ndi.sobel(sm, 1)).max()
    e = canny(y, sigma=math.sqrt(2), low_threshold=0.2 * mmax, high_threshold=0.5 * mmax, mode="nearest")
    return np_gauss_filter(np.where(e, 0.1, 1.0), 7, 0.8)


def np_chou(rgb: np.ndarray) -> np.ndarray:
    y = 255.0 * np.tensordot(M_YCC[0], rgb, axes=1)
    bg, mg = np_bg_mg(y)
    out = np.zeros_like(y)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            out[i, j] = max(np_f1(bg[i, j], mg[i, j]), np_f2(bg[i, j]))
    return out


def np_namm(rgb: np.ndarray, weights: np.ndarray | None, colour: bool) -> np.ndarray:
    """Grey levels; [H,W] for luma (reference texture form), [3,H,W] RGB bounds for colour."""
    ycc = 255.0 * np.tensordot(M_YCC, rgb, axes=1)
    bg, mg_y = np_bg_mg(ycc[0])
    h, w = mg_y.shape
    wt = np.ones((h, w)) if weights is None else weights
    if not colour:
        out = np.zeros((h, w))
        for i in range(h):
            for j in range(w):
                tl = np_f2(bg[i, j])
                tt = np_f1(bg[i, j], mg_y[i, j] * wt[i, j])
                out[i, j] = tl + tt - 0.3 * min(tl, tt)
        return out
    mgs = [mg_y, np_bg_mg(ycc[1])[1], np_bg_mg(ycc[2])[1]]
    cs, betas = (0.3, 0.25, 0.2), (0.117, 0.65, 0.45)
    m_abs, minv_abs = np.abs(M_YCC), np.abs(np.linalg.inv(M_YCC))
    out = np.zeros((3, h, w))
    for i in range(h):
        for j in range(w):
            tl = np_f2(bg[i, j])
            t = np.zeros(3)
            for ch in range(3):
                tt = betas[ch] * mgs[ch][i, j] * wt[i, j]
                t[ch] = tl + tt - cs[ch] * min(tl, tt)
            a = minv_abs @ t
            s = min(t[k] / (m_abs @ a)[k] for k in range(3))
            out[:, i, j] = s * a
    return out


# ----------------------------------------------------------------------------------------------
# Worked values (SPECS.md §1), interior pixel, to 1e-3 grey levels


def _uniform(v: float, dtype: torch.dtype, size: int = 16) -> torch.Tensor:
    return torch.full((1, 3, size, size), v / 255.0, dtype=dtype)


def _step(dtype: torch.dtype, size: int = 16) -> torch.Tensor:
    x = torch.zeros(1, 3, size, size, dtype=dtype)
    x[..., size // 2 :] = 100.0 / 255.0
    return x


WORKED = [
    # name, image factory, bg, mg, f1, f2, chou, namm (no edge mask), wu LA (None: not given)
    ("uniform64", lambda d: _uniform(64, d), 64.0, 0.0, -0.14, 7.9320, 7.9320, 7.8340, 4.5553),
    ("uniform200", lambda d: _uniform(200, d), 200.0, 0.0, -1.5, 4.7109, 4.7109, 3.6609, 3.2977),
    ("step0to100", _step, 59.375, 100.0, 12.000, 8.3762, 12.000, 17.8633, None),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", WORKED, ids=[c[0] for c in WORKED])
def test_worked_values(case: tuple, dtype: torch.dtype) -> None:  # type: ignore[type-arg]
    _, make, bg_e, mg_e, f1_e, f2_e, chou_e, namm_e, wu_la_e = case
    x = make(dtype)
    i, j = 8, 8  # interior; for the step the first column on the 100 side
    y = luma(x)
    bg = background_luminance(y)
    mg = max_gradient(y)
    tol = 1e-3
    assert float(bg[0, 0, i, j]) == pytest.approx(bg_e, abs=tol)
    assert float(mg[0, 0, i, j]) == pytest.approx(mg_e, abs=tol)
    assert float(contrast_masking(bg, mg)[0, 0, i, j]) == pytest.approx(f1_e, abs=tol)
    assert float(luminance_adaptation(bg)[0, 0, i, j]) == pytest.approx(f2_e, abs=tol)
    chou = chou_li(x)
    assert float(chou[0, 0, i, j]) * 255 == pytest.approx(chou_e, abs=tol)
    assert torch.equal(chou[:, 0], chou[:, 1]) and torch.equal(chou[:, 0], chou[:, 2])
    n = namm(x, edge_mask=False)
    assert float(n[0, 0, i, j]) * 255 == pytest.approx(namm_e, abs=tol)
    if wu_la_e is not None:
        # On a uniform image Lc = 0, so VM = 0 and Wu's JND is its LA term.
        wu = wu_pattern(x)
        assert float(wu[0, 0, i, j]) * 255 == pytest.approx(wu_la_e, abs=tol)
        assert torch.allclose(wu[0, :, i, j], wu[0, 0, i, j].expand(3))


def test_uniform_namm_edge_mask_has_no_effect_inside() -> None:
    x = _uniform(64, torch.float64)
    assert torch.allclose(namm(x)[..., 3:-3, 3:-3], namm(x, edge_mask=False)[..., 3:-3, 3:-3])


# ----------------------------------------------------------------------------------------------
# Agreement with the NumPy per-pixel reference on a random image (1e-4 grey levels)


@pytest.fixture(scope="module")
def rand12() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 12, 12, generator=g, dtype=torch.float64)


def test_chou_matches_numpy_loop(rand12: torch.Tensor) -> None:
    ref = np_chou(rand12[0].numpy())
    out = chou_li(rand12)[0].numpy() * 255
    for c in range(3):
        np.testing.assert_allclose(out[c], ref, atol=1e-4, rtol=0)


def test_namm_matches_numpy_loop_without_edge_mask(rand12: torch.Tensor) -> None:
    ref = np_namm(rand12[0].numpy(), None, colour=False)
    out = namm(rand12, edge_mask=False)[0].numpy() * 255
    np.testing.assert_allclose(out[0], ref, atol=1e-4, rtol=0)


def test_namm_matches_numpy_loop_with_edge_mask() -> None:
    x = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    x[..., 5:11, 5:11] = 0.8  # a bright square: Canny edges along its outline
    x = x + 0.05 * torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rgb = x[0].numpy()
    y = 255.0 * np.tensordot(M_YCC[0], rgb, axes=1)
    wts = np_namm_weights(y)
    assert wts.min() < 0.7  # edges were found
    ref = np_namm(rgb, wts, colour=False)
    out = namm(x, edge_mask=True)[0, 0].numpy() * 255
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    # The weights only lower the texture threshold.
    assert bool((namm(x) <= namm(x, edge_mask=False) + 1e-12).all())


def test_namm_colour_matches_numpy_loop(rand12: torch.Tensor) -> None:
    ref = np_namm(rand12[0].numpy(), None, colour=True)
    out = namm(rand12, colour=True, edge_mask=False)[0].numpy() * 255
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_namm_colour_reference_texture_keeps_luma_form(rand12: torch.Tensor) -> None:
    a = namm(rand12, colour=True, edge_mask=False, texture="reference")
    b = namm(rand12, colour=True, edge_mask=False, texture="paper")
    assert a.shape == b.shape == rand12.shape
    assert not torch.allclose(a, b)


def test_namm_c1_form_is_chou_max_rule(rand12: torch.Tensor) -> None:
    # The reference texture form is Chou's f1: T_l + T_t - C min with C = 0.3 lies between
    # max(T_l, T_t) (C = 1, Chou) and T_l + T_t.
    y = luma(rand12)
    bg, mg = background_luminance(y), max_gradient(y)
    tl, tt = luminance_adaptation(bg), contrast_masking(bg, mg)
    n = namm(rand12, edge_mask=False)[:, :1] * 255
    assert torch.allclose(chou_li(rand12)[:, :1] * 255, torch.maximum(tl, tt))
    assert torch.allclose(n, tl + tt - 0.3 * torch.minimum(tl, tt))


# ----------------------------------------------------------------------------------------------
# YCbCr thresholds -> RGB box


def test_rgb_box_from_ycbcr_is_inside_and_tight() -> None:
    g = torch.Generator().manual_seed(1)
    t = 1.0 + 30.0 * torch.rand(4, 3, 5, 5, generator=g, dtype=torch.float64)
    box = rgb_box_from_ycbcr(t)
    assert bool((box > 0).all())
    m = torch.tensor(M_YCC)
    reach = torch.zeros_like(t)
    for signs in torch.cartesian_prod(*([torch.tensor([-1.0, 1.0], dtype=torch.float64)] * 3)):
        corner = box * signs.view(1, 3, 1, 1)
        reach = torch.maximum(reach, torch.einsum("ij,bjhw->bihw", m, corner).abs())
    assert bool((reach <= t * (1 + 1e-12)).all())  # every corner within all thresholds
    tight = ((reach - t).abs() < 1e-9 * t).any(dim=1)
    assert bool(tight.all())  # and it cannot be scaled up
    # Its shape is |M^-1| T.
    a = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m).abs(), t)
    ratio = box / a
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))


def test_rgb_box_from_ycbcr_rejects_bad_input() -> None:
    with pytest.raises(InputError, match=r"dim 1.*got \[2, 4\]"):
        rgb_box_from_ycbcr(torch.ones(2, 4))
    with pytest.raises(InputError, match="must be >= 0"):
        rgb_box_from_ycbcr(-torch.ones(1, 3, 2, 2))


def test_namm_colour_bounds_keep_ycbcr_within_thresholds(rand12: torch.Tensor) -> None:
    # Luma-only NAMM bound on Y is at least the colour model's Y reach where texture is 0 (flat).
    x = _uniform(120, torch.float64)
    box = namm(x, colour=True)[0, :, 8, 8] * 255
    dy = float((torch.tensor(M_YCC[0]).abs() * box).sum())
    tl = float(luminance_adaptation(background_luminance(luma(x)))[0, 0, 8, 8])
    assert dy <= tl + 1e-9
    assert bool((namm(rand12, colour=True) > 0).all())


# ----------------------------------------------------------------------------------------------
# Wu pattern complexity


def test_wu_finite_positive_and_larger_on_texture() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.full((1, 3, 32, 32), 0.5, dtype=torch.float32)
    x[..., 16:] = torch.rand(1, 3, 32, 16, generator=g)  # right half textured
    out = wu_pattern(x)
    assert out.shape == x.shape
    assert bool(torch.isfinite(out).all()) and bool((out > 0).all())
    flat = out[..., 4:-4, 3:12].mean()
    tex = out[..., 4:-4, 20:-3].mean()
    assert float(tex) > 1.5 * float(flat)
    # The texture half exceeds the luminance adaptation floor of a flat 0.5 area.
    assert float(out[..., 4:-4, 20:-3].min()) > float(out[..., 8, 8].max())


def test_wu_has_gradient_through_contrast_term() -> None:
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x.requires_grad_(True)
    wu_pattern(x).sum().backward()
    assert x.grad is not None
    assert bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0


# ----------------------------------------------------------------------------------------------
# Dispatch, batch consistency, errors


@pytest.mark.parametrize("model", JND_MODELS)
def test_batch_of_two_equals_two_singles(model: str) -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 14, 17, generator=g)
    both = jnd_map(x, model)
    assert both.shape == x.shape and both.dtype == x.dtype
    for k in range(2):
        assert torch.allclose(both[k : k + 1], jnd_map(x[k : k + 1], model), atol=1e-6)
    assert bool(torch.isfinite(both).all()) and bool((both >= 0).all()) and float(both.max()) < 1


def test_jnd_map_dispatch() -> None:
    x = torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.equal(jnd_map(x, "chou"), chou_li(x))
    assert torch.equal(jnd_map(x, "namm"), namm(x))
    assert torch.equal(jnd_map(x, "namm-colour"), namm(x, colour=True))
    assert torch.equal(jnd_map(x), namm(x))
    assert torch.equal(jnd_map(x, "wu"), wu_pattern(x))
    with pytest.raises(InputError, match=r"model must be one of chou, namm.*got 'yang'"):
        jnd_map(x, "yang")


@pytest.mark.parametrize("fn", [chou_li, namm, wu_pattern, lambda x: jnd_map(x, "colour-variance")])
def test_bad_input_raises(fn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=r"shape \[B,3,H,W\], got \[3, 8, 8\]"):
        fn(torch.rand(3, 8, 8))
    with pytest.raises(InputError, match=r"shape \[B,3,H,W\], got \[1, 1, 8, 8\]"):
        fn(torch.rand(1, 1, 8, 8))
    with pytest.raises(InputError, match=r"lie in \[0,1\], got range \[0, 255\]"):
        fn(torch.linspace(0, 255, 192).view(1, 3, 8, 8))
    with pytest.raises(InputError, match="floating"):
        fn(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_namm_bad_texture() -> None:
    with pytest.raises(InputError, match="texture must be 'reference' or 'paper', got 'yang'"):
        namm(torch.rand(1, 3, 8, 8), texture="yang")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize(
    "fn",
    [
        chou_li,
        lambda x: namm(x, edge_mask=False),
        namm,
        lambda x: namm(x, colour=True),
    ],
    ids=["chou", "namm-no-mask", "namm", "namm-colour"],
)
def test_gradcheck(fn) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(7)
    x = (0.2 + 0.6 * torch.rand(1, 3, 6, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_gradients_finite_on_black_and_white(value: float) -> None:
    # On black, f2 has an infinite slope at bg = 0 (taken as 0) and every |gradient| is at its
    # kink, so only finiteness is asserted there; on white the gradient is finite and non-zero.
    for fn in (chou_li, namm, lambda x: namm(x, colour=True)):
        x = torch.full((1, 3, 8, 8), value, dtype=torch.float64, requires_grad=True)
        fn(x).sum().backward()
        assert x.grad is not None and bool(torch.isfinite(x.grad).all())
        if value > 0:
            assert float(x.grad.abs().sum()) > 0


def _np_round(v: float) -> float:
    return math.copysign(math.floor(abs(v) + 0.5), v)


def np_pattern_complexity(img: np.ndarray) -> np.ndarray:
    """Per-pixel loop of Wu's orientation-bin count (MATLAB func_cmlx_num_compute), then the 3x3
    Gaussian (sigma 1, zero padding)."""
    h, w = img.shape
    p = np.pad(img, 1, mode="symmetric")
    bins = np.zeros((h, w), dtype=int)
    textured = np.zeros((h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            win = p[i : i + 3, j : j + 3]
            gx = float(win[:, 2].sum() - win[:, 0].sum()) / 3.0
            gy = float(win[2, :].sum() - win[0, :].sum()) / 3.0
            textured[i, j] = math.hypot(gx, gy) >= 5.0
            theta = _np_round(math.degrees(math.atan2(gy, gx)))
            if theta > 90:
                theta -= 180
            if theta < -90:
                theta += 180
            theta = theta + 90 if textured[i, j] else 192.0
            bins[i, j] = int(_np_round(theta / 12.0))
    count = np.ones((h, w))
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            if textured[i, j]:
                count[i, j] = len({bins[i + di, j + dj] for di in (-1, 0, 1) for dj in (-1, 0, 1)})
    return np_gauss_filter(count, 3, 1.0)


def test_wu_pattern_complexity_matches_numpy_loop() -> None:
    from jndkit.perception.jnd import _pattern_complexity

    rng = np.random.default_rng(8)
    img = np.full((14, 14), 100.0)
    img[:, 7:] = rng.integers(0, 256, (14, 7)).astype(float)  # half flat, half texture
    img[2:5, 1:6] = 10.0 * np.arange(5)[None, :]  # a ramp: one orientation
    ref = np_pattern_complexity(img)
    out = _pattern_complexity(torch.tensor(img).view(1, 1, 14, 14))[0, 0].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-12)
    assert ref[5:-5, 9:-2].mean() > 2.0  # textured pixels see several orientations
