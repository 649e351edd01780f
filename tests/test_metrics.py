"""Tests of jndkit.metrics: reference libraries, hand-computed values, shapes, flags, errors."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from skimage import color as skcolor
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from jndkit import metrics as M
from jndkit.errors import InputError

L = 1.0 / 255  # one 8-bit level


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These tensors are tiny: intra-op threads only add OpenMP overhead (several x on a busy CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _q(x: torch.Tensor) -> torch.Tensor:
    """Quantize to 8-bit levels."""
    return torch.round(x * 255) / 255


def _pair(b: int = 2, h: int = 44, w: int = 48, seed: int = 0, levels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth-ish textured reference and a quantized distorted copy (up to +-levels 8-bit levels)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 3, h // 4 + 1, w // 4 + 1, generator=g, dtype=torch.float64)
    x0 = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    x0 = _q(0.8 * x0 + 0.2 * torch.rand(b, 3, h, w, generator=g, dtype=torch.float64))
    noise = torch.randint(-levels, levels + 1, x0.shape, generator=g).to(torch.float64) * L
    return x0, _q((x0 + noise).clamp(0, 1))


def _astronaut(size: int = 64) -> torch.Tensor:
    img = skdata.astronaut()[100 : 100 + size, 180 : 180 + size]  # face region, uint8
    return torch.from_numpy(img).permute(2, 0, 1)[None].to(torch.float64) / 255


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- reference libraries


def test_psnr_matches_skimage_on_8bit_pairs() -> None:
    x0, x = _pair(levels=6)
    got = M.psnr(x0, x)
    for i in range(2):
        a = np.round(_hwc(x0[i]) * 255).astype(np.uint8)
        b = np.round(_hwc(x[i]) * 255).astype(np.uint8)
        # uint8 input: data_range 255; skimage then computes the MSE in float32, hence 1e-5
        assert got[i].item() == pytest.approx(sk_psnr(a, b), abs=1e-5)
        # float64: torchmetrics takes log(10) in float32, a relative error below 1e-7
        assert got[i].item() == pytest.approx(sk_psnr(_hwc(x0[i]), _hwc(x[i]), data_range=1.0), rel=1e-7)


def test_psnr_identical_is_inf_and_matches_mse() -> None:
    x0, x = _pair()
    assert torch.isinf(M.psnr(x0, x0)).all() and (M.psnr(x0, x0) > 0).all()
    torch.testing.assert_close(M.psnr(x0, x), -10 * torch.log10(M.mse(x0, x)))


@pytest.mark.parametrize("src", ["random", "astronaut"])
def test_ssim_matches_skimage(src: str) -> None:
    if src == "random":
        x0, x = _pair(levels=8)
    else:
        x0 = _astronaut()
        g = torch.Generator().manual_seed(1)
        x = _q((x0 + 0.03 * torch.randn(x0.shape, generator=g, dtype=torch.float64)).clamp(0, 1))
    got = M.ssim(x0, x)
    for i in range(x0.shape[0]):
        ref = sk_ssim(
            _hwc(x0[i]),
            _hwc(x[i]),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=2,
            data_range=1.0,
        )
        # Border cropped like skimage: agreement to float precision, far inside the 1e-3 asked for.
        assert got[i].item() == pytest.approx(ref, abs=1e-6)
    assert (got < 1).all()
    torch.testing.assert_close(M.ssim(x0, x0), torch.ones(x0.shape[0], dtype=torch.float64))


def test_ssim_too_small_is_nan_and_min_size_works() -> None:
    x0, x = _pair(h=10, w=40)
    assert torch.isnan(M.ssim(x0, x)).all()
    x0, x = _pair(h=11, w=11)
    assert torch.isfinite(M.ssim(x0, x)).all()


def test_ms_ssim_nan_below_176_and_defined_above() -> None:
    x0, x = _pair(b=1, h=175, w=200)
    assert torch.isnan(M.ms_ssim(x0, x)).all()
    # batch [noisy, identical] at the smallest defined size; also batch == singles
    x0, x = _pair(b=1, h=176, w=176, levels=4)
    x0, x = torch.cat([x0, x0]), torch.cat([x, x0])
    v = M.ms_ssim(x0, x)
    assert v.shape == (2,) and torch.isfinite(v).all()
    assert 0.5 < v[0].item() < 1 - 1e-4
    assert v[1].item() == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(v[:1], M.ms_ssim(x0[:1], x[:1]))  # batch == single


def test_uqi_scc_vifp_identical_are_one_and_drop_with_noise() -> None:
    x0, x = _pair(levels=10)
    for fn in (M.uqi, M.scc, M.vifp):
        same = fn(x0, x0)
        torch.testing.assert_close(same, torch.ones(2, dtype=torch.float64), atol=1e-6, rtol=0)
        assert (fn(x0, x) < same - 1e-4).all(), fn.__name__


def test_vifp_is_on_8bit_scale() -> None:
    # sigma_n^2 = 2 grey levels^2: 3-level noise must cost clearly more than 1e-3 of VIF.
    x0, x = _pair(levels=3)
    assert (M.vifp(x0, x) < 0.99).all()


# ---------------------------------------------------------------- hand-computed values


def _tiny() -> tuple[torch.Tensor, torch.Tensor]:
    """[1,3,2,2]: R(0,0) +2 levels, G(0,1) +0.4 level (below threshold), B(1,1) -0.1, R(1,1) +1 level."""
    x0 = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    x = x0.clone()
    x[0, 0, 0, 0] += 2 * L
    x[0, 1, 0, 1] += 0.4 * L
    x[0, 2, 1, 1] -= 0.1
    x[0, 0, 1, 1] += 1 * L
    return x0, x


def test_norms_and_counts_on_tiny_tensor() -> None:
    x0, x = _tiny()
    d = [2 * L, 0.4 * L, 0.1, 1 * L]
    assert M.l0(x0, x).item() == 3  # the 0.4-level change does not count
    assert M.l1(x0, x).item() == pytest.approx(sum(d), rel=1e-12)
    assert M.l2(x0, x).item() == pytest.approx(math.sqrt(sum(v * v for v in d)), rel=1e-12)
    assert M.l2_squared(x0, x).item() == pytest.approx(sum(v * v for v in d), rel=1e-12)
    assert M.linf(x0, x).item() == pytest.approx(0.1, rel=1e-12)
    assert M.mse(x0, x).item() == pytest.approx(sum(v * v for v in d) / 12, rel=1e-12)
    # changed positions: (0,0) [R], (1,1) [R and B]; (0,1) only sub-threshold -> 2 of 4
    assert M.changed_ratio(x0, x).item() == 0.5
    assert M.changed_values(x0, x).item() == pytest.approx(3 / 12, rel=1e-12)


def test_change_threshold_is_half_a_level() -> None:
    x0 = torch.full((1, 3, 1, 2), 0.5, dtype=torch.float64)
    x = x0.clone()
    x[0, 0, 0, 0] += 0.51 * L
    x[0, 0, 0, 1] += 0.49 * L
    assert M.l0(x0, x).item() == 1
    assert M.changed_ratio(x0, x).item() == 0.5


def test_hist_kl_identical_zero_and_hand_value() -> None:
    x0, _ = _pair()
    assert torch.equal(M.hist_kl(x0, x0), torch.zeros(2, dtype=torch.float64))
    # R levels: reference {0,0,1,1} -> p = (1/2, 1/2); distorted {0,1,1,1} -> q = (1/4, 3/4); G, B equal.
    a = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    a[0, 0, 1, :] = L
    b = a.clone()
    b[0, 0, 0, 1] = L
    kl_pq = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # = 0.5 ln(4/3)
    kl_qp = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert M.hist_kl(a, b).item() == pytest.approx(kl_pq / 3, abs=1e-8)
    assert M.hist_kl(b, a).item() == pytest.approx(kl_qp / 3, abs=1e-8)  # direction: KL[ref || dist]
    # 2 bins: levels 0 and 1 fall in the same bin -> identical histograms
    assert M.hist_kl(a, b, bins=2).item() == pytest.approx(0.0, abs=1e-12)


def test_hist_kl_missing_level_is_finite() -> None:
    a = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    b = torch.full_like(a, L)  # no overlap at all: KL = ln(1/eps') per channel, finite
    v = M.hist_kl(a, b).item()
    assert math.isfinite(v) and v == pytest.approx(math.log((1 + 256e-10) / 1e-10), rel=1e-6)


@pytest.mark.parametrize("bins", [0, 257, 2.5, True])
def test_hist_kl_bad_bins(bins: object) -> None:
    x0, x = _tiny()
    with pytest.raises(InputError, match="bins"):
        M.hist_kl(x0, x, bins=bins)  # type: ignore[arg-type]


def test_above_jnd_hand_value() -> None:
    x0, x = _tiny()
    jnd = torch.full_like(x0, 1.5 * L)
    jnd[0, 2, 1, 1] = (x - x0).abs()[0, 2, 1, 1]  # exactly equal to the change: not above
    # above: R(0,0) 2 levels > 1.5; R(1,1) 1 level no; G 0.4 no; B(1,1) equal, no -> 1 of 12
    assert M.above_jnd(x0, x, jnd).item() == pytest.approx(1 / 12, rel=1e-12)
    jnd[0, 2, 1, 1] = 0.05
    assert M.above_jnd(x0, x, jnd).item() == pytest.approx(2 / 12, rel=1e-12)
    assert torch.isnan(M.above_jnd(x0, x, None)).all()


def test_compute_metrics_jnd_handling() -> None:
    x0, x = _pair(h=16, w=16)
    jnd = torch.full_like(x0, 1.5 * L)
    assert list(M.compute_metrics(x0, x)) == [n for n in M.METRICS if n != "above_jnd"]
    assert list(M.compute_metrics(x0, x, jnd=jnd)) == list(M.METRICS)
    assert torch.isnan(M.compute_metrics(x0, x, names=["above_jnd"])["above_jnd"]).all()
    got = M.compute_metrics(x0, x, names=["above_jnd", "l1"], jnd=jnd)
    assert list(got) == ["above_jnd", "l1"]
    torch.testing.assert_close(got["above_jnd"], ((x - x0).abs() > jnd).flatten(1).double().mean(1))
    with pytest.raises(InputError, match=r"\[2, 3, 16, 15\].*\[2, 3, 16, 16\]"):
        M.compute_metrics(x0, x, jnd=jnd[..., :-1])


def test_ciede2000_identical_zero_black_white_and_sharma_pairs() -> None:
    x0, _ = _pair()
    assert torch.equal(M.ciede2000_mean(x0, x0), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(M.ciede2000_max(x0, x0), torch.zeros(2, dtype=torch.float64))
    black = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    white = torch.ones_like(black)
    assert M.ciede2000_mean(black, white).item() == pytest.approx(100.0, abs=1e-5)
    # Sharma et al. test pairs 2 and 3 (in sRGB gamut; SPECS.md values from scikit-image 0.26)
    pairs = [
        ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.30648),
        ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.26442),
    ]
    a = torch.stack([torch.from_numpy(skcolor.lab2rgb(np.array([[p[0]]]))) for p in pairs])
    b = torch.stack([torch.from_numpy(skcolor.lab2rgb(np.array([[p[1]]]))) for p in pairs])
    a, b = a.permute(0, 3, 1, 2).contiguous(), b.permute(0, 3, 1, 2).contiguous()
    # one pixel each, plus a second column that does not change: mean halves, max stays
    a2, b2 = torch.cat([a, a], dim=3), torch.cat([b, a], dim=3)
    expected = torch.tensor([p[2] for p in pairs], dtype=torch.float64)
    torch.testing.assert_close(M.ciede2000_max(a2, b2), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(M.ciede2000_mean(a2, b2), expected / 2, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- contract: shape, batch, flags


def _all(x0: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return M.compute_metrics(x0, x, names=list(M.METRICS), jnd=torch.full_like(x0, 1.5 * L))


def test_every_metric_shape_b_and_batch_equals_singles() -> None:
    # 48 px: every metric but ms_ssim (NaN below 176 px, batch checked in its own test) is defined
    x0, x = _pair(b=2, h=48, w=52, levels=2)
    both = _all(x0, x)
    singles = [_all(x0[i : i + 1], x[i : i + 1]) for i in range(2)]
    assert list(both) == list(M.METRICS)
    for name, v in both.items():
        assert v.shape == (2,) and v.dtype == torch.float64, name
        assert torch.isfinite(v).all() or name == "ms_ssim", name
        one_by_one = torch.cat([s[name] for s in singles])
        torch.testing.assert_close(v, one_by_one, rtol=1e-6, atol=1e-9, equal_nan=True, msg=name)


def test_public_functions_agree_with_compute_metrics() -> None:
    x0, x = _pair(levels=2)
    jnd = torch.full_like(x0, 1.5 * L)
    table = M.compute_metrics(x0, x, jnd=jnd)
    for name, m in M.METRICS.items():
        v = m.fn(x0, x, jnd) if m.needs_jnd else m.fn(x0, x)
        assert v.shape == (2,), name
        torch.testing.assert_close(v, table[name], equal_nan=True, msg=name)


def test_float32_input_and_empty_batch() -> None:
    x0, x = _pair(h=16, w=16, levels=2)  # small: ssim, uqi, scc defined, vifp NaN
    a, b = M.compute_metrics(x0.float(), x.float()), M.compute_metrics(x0, x)
    for name in a:
        assert a[name].dtype == torch.float64
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, equal_nan=True, msg=name)
    empty = M.compute_metrics(x0[:0], x[:0])
    assert all(v.shape == (0,) for v in empty.values())
    assert M.psnr(x0[:0], x[:0]).shape == (0,)


def test_registry_flags() -> None:
    higher = {"psnr", "ssim", "ms_ssim", "uqi", "scc", "vifp"}
    for name, m in M.METRICS.items():
        assert m.name == name
        assert m.higher_is_better is (name in higher), name
    diff = {n for n, m in M.METRICS.items() if m.is_differentiable}
    assert diff == {"psnr", "ssim", "ms_ssim", "uqi", "scc", "l1", "l2", "l2_squared", "linf", "mse"}
    assert [n for n, m in M.METRICS.items() if m.needs_jnd] == ["above_jnd"]
    assert M.METRICS["psnr"].unit == "dB" and M.METRICS["ms_ssim"].min_size == 176
    assert M.METRICS["vifp"].min_size == 41


def test_differentiable_flag_means_a_gradient() -> None:
    small, large = _pair(b=1, h=48, w=48, levels=4), _pair(b=1, h=176, w=176, levels=4)
    for name, m in M.METRICS.items():
        if not m.is_differentiable:
            continue
        x0, x = large if m.min_size > 48 else small
        xv = x.clone().requires_grad_(True)
        v = m.fn(x0, xv)
        (g,) = torch.autograd.grad(v.sum(), xv)
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name", list(M.METRICS))
def test_bad_shapes_raise_naming_both(name: str) -> None:
    x0 = torch.rand(1, 3, 16, 16)
    x = torch.rand(1, 3, 16, 15)
    m = M.METRICS[name]
    args = (x0, x, None) if m.needs_jnd else (x0, x)
    with pytest.raises(InputError, match=r"\[1, 3, 16, 16\].*\[1, 3, 16, 15\]"):
        m.fn(*args)
    with pytest.raises(InputError, match=r"\[1, 3, 16, 16\].*\[1, 3, 16, 15\]"):
        M.compute_metrics(x0, x, names=[name])


def test_bad_inputs_raise_input_error() -> None:
    x0 = torch.rand(1, 3, 16, 16)
    with pytest.raises(InputError, match=r"\[1, 1, 16, 16\]"):
        M.psnr(x0[:, :1], x0[:, :1])
    with pytest.raises(InputError, match=r"\[0,1\]"):
        M.ssim(x0, x0 + 2)
    with pytest.raises(InputError, match="torch.Tensor"):
        M.l1(x0, x0.numpy())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown metric"):
        M.compute_metrics(x0, x0, names=["psnr", "lpips"])
    with pytest.raises(InputError, match="sequence"):
        M.compute_metrics(x0, x0, names="psnr")
    assert issubclass(InputError, ValueError)


# ---------------------------------------------------------------- bounded memory: strips, tiles, downscaled copies

_EXACT = [n for n, m in M.METRICS.items() if n not in ("ms_ssim", "scc", "vifp")]


def test_tiled_and_strip_paths_equal_the_whole_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the large-image paths on a medium pair: every exact metric equals the untiled value."""
    x0, x = _pair(b=2, h=150, w=173, levels=3)
    jnd = torch.full_like(x0, 1.5 * L)
    x0[0, :, :20, :20] = 0.0  # flat corner: UQI's 0/0 windows must agree too
    x[0, :, :20, :20] = 0.0
    whole, info_whole = M.compute_metrics(x0, x, names=_EXACT, jnd=jnd, return_info=True)
    assert set(info_whole.values()) == {"full image"}
    monkeypatch.setattr(M, "FULL_MAX_PIXELS", 500)
    monkeypatch.setattr(M, "TILE", 40)  # 4 x 5 tiles with halos: many seams
    monkeypatch.setattr(M, "_STRIP_PIXELS", 700)  # strips of 4 rows
    tiled, info = M.compute_metrics(x0, x, names=_EXACT, jnd=jnd, return_info=True)
    assert info["ssim"] == "tiled 40 px (exact)" and info["uqi"] == "tiled 40 px (exact)"
    assert info["l2"] == "full image, in strips of rows"
    for name in _EXACT:
        rtol = 1e-7 if name == "psnr" else 1e-9  # torchmetrics' PSNR takes log(10) in float32
        torch.testing.assert_close(tiled[name], whole[name], rtol=rtol, atol=1e-9, msg=name)
    assert (whole["ssim"] < 1).all() and (whole["l0"] > 0).all()


def test_tiled_ssim_matches_skimage_on_whole_image(monkeypatch: pytest.MonkeyPatch) -> None:
    x0 = _astronaut(size=120)
    g = torch.Generator().manual_seed(3)
    x = _q((x0 + 0.02 * torch.randn(x0.shape, generator=g, dtype=torch.float64)).clamp(0, 1))
    monkeypatch.setattr(M, "FULL_MAX_PIXELS", 100)
    monkeypatch.setattr(M, "TILE", 32)
    ref = sk_ssim(_hwc(x0[0]), _hwc(x[0]), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                  channel_axis=2, data_range=1.0)
    assert M.ssim(x0, x)[0].item() == pytest.approx(ref, abs=1e-12)


def test_downscaled_metrics_say_so_and_equal_the_library_on_an_area_average(monkeypatch: pytest.MonkeyPatch) -> None:
    x0, x = _pair(b=1, h=360, w=400, levels=4)
    monkeypatch.setattr(M, "FULL_MAX_PIXELS", 200 * 200)  # 144000 px -> factor 2 -> 180 x 200
    vals, info = M.compute_metrics(x0, x, names=["ms_ssim", "scc", "vifp"], return_info=True)
    for name in ("ms_ssim", "scc", "vifp"):
        assert info[name] == "downscaled 1/2 (200x180 px, area average)", name
    a, b = torch.nn.functional.avg_pool2d(x0, 2), torch.nn.functional.avg_pool2d(x, 2)
    monkeypatch.setattr(M, "FULL_MAX_PIXELS", 512 * 512)
    small = M.compute_metrics(a, b, names=["ms_ssim", "scc", "vifp"])
    for name in ("ms_ssim", "scc", "vifp"):
        torch.testing.assert_close(vals[name], small[name], rtol=1e-9, atol=1e-9, msg=name)


def test_info_for_undefined_metrics_and_missing_jnd() -> None:
    x0, x = _pair(b=1, h=20, w=20)
    _, info = M.compute_metrics(x0, x, names=["ms_ssim", "above_jnd", "psnr"], return_info=True)
    assert info == {"ms_ssim": "not defined below 176 px", "above_jnd": "no JND map given", "psnr": "full image"}


def test_large_path_psnr_inf_and_linf_of_identical_images(monkeypatch: pytest.MonkeyPatch) -> None:
    x0, _ = _pair(b=1, h=64, w=64)
    monkeypatch.setattr(M, "FULL_MAX_PIXELS", 100)
    v = M.compute_metrics(x0, x0, names=["psnr", "linf", "l0", "hist_kl", "ciede2000_max"])
    assert math.isinf(v["psnr"].item()) and v["psnr"].item() > 0
    assert v["linf"].item() == 0 and v["l0"].item() == 0 and v["hist_kl"].item() == 0
    assert v["ciede2000_max"].item() == 0


@pytest.mark.slow
def test_12_megapixel_pair_stays_within_a_few_gb() -> None:
    """Issue 12 item 1: SSIM of a 4000x3000 photo asked for 58 GB. Peak RSS of a fresh process < 4 GB."""
    import subprocess
    import sys

    code = (
        "import resource, torch\n"
        "from jndkit import metrics as M\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x0 = torch.nn.functional.interpolate(torch.rand(1, 3, 30, 40, generator=g), size=(3000, 4000), mode='bilinear')\n"
        "x = (torch.round((x0 + (torch.rand(x0.shape, generator=g) - 0.5) * 0.02) * 255) / 255).clamp(0, 1)\n"
        "x0 = torch.round(x0 * 255) / 255\n"
        "v, info = M.compute_metrics(x0, x, names=['psnr', 'ssim', 'l2', 'linf', 'l0'], return_info=True)\n"
        "print(v['ssim'].item(), v['psnr'].item(), info['ssim'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    ssim_v, psnr_v, peak_kb = float(out[0]), float(out[1]), int(out[-1])
    assert 0.9 < ssim_v < 1 and 40 < psnr_v < 60
    assert " ".join(out[2:-1]) == "tiled 1024 px (exact)"
    assert peak_kb < 4 * 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
