"""Protection of large photos on a downscaled proxy (jndkit.attacks.proxy; issue 13 targets, issue 12 item 1)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jndkit.attacks import get_method, run_attack
from jndkit.attacks.engine import Delta, robust_margin
from jndkit.attacks.proxy import (
    FULL_BOUND,
    PROXY_LONG,
    PROXY_X0,
    ProxyDelta,
    ProxyView,
    on_proxy,
    project_proxy_bound,
    proxy_size,
    upscale,
)
from jndkit.attacks.transfer import jnd_budget, project_bound
from jndkit.errors import InputError
from jndkit.goals import PanelGoal, Privacy
from jndkit.images import load_image, quantize, save_image
from jndkit.transforms import UploadStandIn, get_suite


def _big_photo(name: str, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A package-shipped photo resized with Pillow's Lanczos to ``height`` x ``width`` plus a
    little noise (sensor grain), as ``[1,3,H,W]`` on 8-bit levels."""
    from jndkit.samples import sample_array

    img = Image.fromarray(sample_array(name)).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    a = np.asarray(img).astype(np.float32)
    a = np.clip(np.round(a + np.random.default_rng(seed).normal(0.0, 2.0, a.shape)), 0, 255).astype(np.uint8)
    return torch.from_numpy(a).permute(2, 0, 1).float()[None] / 255.0


# ---------------------------------------------------------------------------- sizes and identity
def test_proxy_size_keeps_the_aspect_ratio() -> None:
    assert proxy_size(3000, 4000, 1024) == (768, 1024)
    assert proxy_size(4000, 3000, 1024) == (1024, 768)
    assert proxy_size(1000, 2600, 1024) == (394, 1024)  # 1000 * 1024 / 2600 = 393.8
    assert proxy_size(2048, 2048, 1024) == (1024, 1024)
    assert proxy_size(1024, 700, 1024) == (1024, 700)  # not larger than the proxy: unchanged


def test_small_photo_is_unchanged_by_on_proxy() -> None:
    shield = get_method("shield")
    assert PROXY_LONG == 768
    assert on_proxy(shield, 576, 768) is shield
    assert on_proxy(shield, 768, 768) is shield
    assert on_proxy(shield, 768, 1024, proxy_long=1024) is shield
    assert on_proxy(shield, 300, 400, proxy_long=400) is shield
    big = on_proxy(shield, 3000, 4000)
    assert big is not shield
    assert isinstance(big.parametrisation, ProxyDelta) and big.parametrisation.size == (576, 768)
    assert isinstance(big.input_transform, ProxyView) and big.input_transform.size == (576, 768)
    assert isinstance(big.input_transform.inner, UploadStandIn)  # EOT kept, on the proxy
    assert big.projection is project_proxy_bound
    # everything else of the method is kept
    assert (big.update, big.grad_transforms, big.loss_terms, big.params, big.max_iter, big.check_every) == (
        shield.update, shield.grad_transforms, shield.loss_terms, shield.params, shield.max_iter, shield.check_every)
    assert shield.parametrisation == Delta(grad_at_bounds=True) and shield.projection is project_bound
    assert on_proxy(big, 3000, 4000) is big  # idempotent: a caller may apply it twice
    with pytest.raises(InputError, match=r"already runs on a \(576, 768\) proxy, not \(768, 1024\)"):
        on_proxy(big, 3000, 4000, proxy_long=1024)


def test_on_proxy_refuses_what_it_cannot_do() -> None:
    with pytest.raises(InputError, match="proxy_long must be at least 256"):
        on_proxy(get_method("shield"), 3000, 4000, proxy_long=200)
    with pytest.raises(InputError, match="levels cannot run on a proxy: it steps on the photo's 8-bit grid"):
        on_proxy(get_method("levels"), 3000, 4000)
    with pytest.raises(InputError, match="bim cannot run on a proxy: it has no per-value budget"):
        on_proxy(get_method("bim"), 3000, 4000)
    with pytest.raises(InputError, match="cw cannot run on a proxy: its parametrisation Tanh"):
        on_proxy(get_method("cw"), 3000, 4000)


# ---------------------------------------------------------------------------- the parametrisation
def test_upscale_is_pillows_bilinear() -> None:
    v = torch.rand(1, 1, 37, 53, generator=torch.Generator().manual_seed(3))
    ours = upscale(v, (150, 211))[0, 0].numpy()
    pil = np.asarray(Image.fromarray(v[0, 0].numpy(), mode="F").resize((211, 150), Image.Resampling.BILINEAR))
    assert np.abs(ours - pil).max() < 1e-5


def test_proxy_image_never_exceeds_the_budget_on_the_saved_file(tmp_path: Path) -> None:
    x0 = quantize(_big_photo("chelsea", 450, 600))
    method = on_proxy(get_method("shield"), 450, 600, proxy_long=256)
    extras = method.prepare(x0, method.params)  # type: ignore[misc]
    full = jnd_budget("namm")(x0, method.params)["bound"]  # the budget computed independently
    assert torch.equal(extras[FULL_BOUND], full)
    assert extras["bound"].shape == (1, 3, 192, 256) and extras[PROXY_X0].shape == (1, 3, 192, 256)
    # the proxy budget is the full budget area-averaged: compare one block's mean by hand
    rows, cols = slice(10 * 450 // 192, -(-11 * 450 // 192)), slice(20 * 600 // 256, -(-21 * 600 // 256))
    assert float(extras["bound"][0, 1, 10, 20]) == pytest.approx(float(full[0, 1, rows, cols].mean()), rel=1e-5)
    p = method.parametrisation
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(p.init(x0, method.params, extras, gen), torch.zeros(1, 3, 192, 256))
    # a variable far outside the budget (the projection would never allow it): the image still keeps it
    v = (torch.rand(1, 3, 192, 256, generator=gen) * 2 - 1) * 0.2
    x = p.image(v, x0)
    path = tmp_path / "proxy.png"
    save_image(quantize(x[0]), path)
    saved = load_image(path).rgb[None]
    over = (saved - x0).abs() - full
    assert float(over.max()) <= 1e-6  # never above the budget, after the 8-bit save
    at_bound = (over.abs() <= 1e-6) & (full > 0)
    assert float(at_bound.float().mean()) > 0.3  # and the clamp is what holds it there
    assert float(((saved - x0).abs() > 0).float().mean()) > 0.5


def test_proxy_image_gradient_reaches_the_proxy_and_matches_autograd_by_hand() -> None:
    x0 = quantize(torch.rand(1, 3, 60, 80, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1)
    full = torch.full_like(x0, 3 / 255)
    p = ProxyDelta((15, 20))
    p.init(x0, {}, {FULL_BOUND: full, "bound": full[..., ::4, ::4]}, torch.Generator())
    v = (torch.full((1, 3, 15, 20), 1 / 255)).requires_grad_(True)  # inside the budget everywhere
    w = torch.randn(1, 3, 60, 80, generator=torch.Generator().manual_seed(2))
    (p.image(v, x0) * w).sum().backward()
    # inside the budget and the box, d image / d v is the bilinear upsampling, whose adjoint is
    # the sum of w over each proxy value's bilinear weights: check against the transpose of upscale
    u = torch.zeros(1, 3, 15, 20, requires_grad=True)
    (upscale(u, (60, 80)) * w).sum().backward()
    assert torch.allclose(v.grad, u.grad, atol=1e-5)  # type: ignore[arg-type]
    assert float(v.grad.abs().sum()) > 0  # type: ignore[union-attr]


def test_saturated_pixels_keep_their_full_gradient_and_the_image_stays_in_the_box() -> None:
    x0 = torch.zeros(1, 3, 40, 40)
    x0[..., :20] = 1.0  # white half, black half: every change on one side is clipped by the box
    x0[..., 20:, :] = 254 / 255
    full = torch.full_like(x0, 4 / 255)
    p = ProxyDelta((10, 10))
    p.init(x0, {}, {FULL_BOUND: full}, torch.Generator())
    v = torch.zeros(1, 3, 10, 10, requires_grad=True)  # on the limit where x0 is 0 or 1
    w = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(7))
    (p.image(v, x0) * w).sum().backward()
    u = torch.zeros(1, 3, 10, 10, requires_grad=True)
    (upscale(u, (40, 40)) * w).sum().backward()
    assert torch.allclose(v.grad, u.grad, atol=1e-6)  # the full gradient, not half of it  # type: ignore[arg-type]
    with torch.no_grad():
        up = p.image(torch.ones(1, 3, 10, 10), x0)
        down = p.image(-torch.ones(1, 3, 10, 10), x0)
    assert float(up.max()) == 1.0 and float(down.min()) == 0.0  # exactly inside [0,1]
    assert torch.allclose(up[..., 20:, 20:], torch.ones(1, 3, 20, 20))  # 254 + 4 levels clipped at 255
    assert torch.allclose(down[..., 20:, 20:], torch.full((1, 3, 20, 20), 250 / 255))


def test_proxy_delta_finds_each_photo_after_compaction_and_refuses_strangers() -> None:
    g = torch.Generator().manual_seed(4)
    x0 = quantize(torch.rand(3, 3, 40, 40, generator=g))
    full = torch.stack([torch.full((3, 40, 40), k / 255) for k in (1, 2, 3)])
    p = ProxyDelta((10, 10))
    p.init(x0, {}, {FULL_BOUND: full}, g)
    v = torch.ones(2, 3, 10, 10)  # far outside: the image sits at each photo's own bound
    x = p.image(v, x0[[2, 0]])
    d = (x - x0[[2, 0]]).amax(dim=(1, 2, 3))
    assert torch.allclose(d, torch.tensor([3 / 255, 1 / 255]))
    with pytest.raises(InputError, match="not given to init"):
        p.image(v[:1], quantize(torch.rand(1, 3, 40, 40, generator=g)))


def test_proxy_projection_clips_to_the_proxy_budget_and_the_box() -> None:
    p0 = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    b = torch.full((1, 3, 2, 2), 4 / 255)
    v = torch.tensor([-0.1, 0.1, 0.1]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = project_proxy_bound(v, torch.zeros(1, 3, 8, 8), {}, {"bound": b, PROXY_X0: p0})
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.0, 4 / 255, 0.0]))


# ---------------------------------------------------------------------------- what the victims see
def test_the_victims_see_the_proxy_as_they_see_the_photo(mobilenet) -> None:  # type: ignore[no-untyped-def]
    x = _big_photo("chelsea", 1200, 1600)
    view = ProxyView(proxy_size(1200, 1600, 512))
    with torch.no_grad():
        full = mobilenet(x)
        proxy = mobilenet(view(x, {}, torch.Generator()))
    assert int(full.argmax()) == int(proxy.argmax())
    p, q = full.softmax(1), proxy.softmax(1)
    assert float((p - q).abs().sum()) < 0.1  # total variation of the class distributions
    assert float((full - proxy).abs().max()) < 1.0


# ---------------------------------------------------------------------------- the proxy attack works
def test_proxy_shield_reaches_privacy_after_jpeg_on_the_saved_file(tmp_path: Path) -> None:
    from jndkit.victims import PanelVictim, load_victim

    panel = PanelVictim([load_victim("mobilenet_v2")])
    x0 = quantize(_big_photo("chelsea", 768, 1024))
    suite = get_suite("jpeg85")
    checks = [t.apply for t in suite.for_size(768, 1024)]
    method = on_proxy(get_method("shield"), 768, 1024, proxy_long=512)
    assert method.parametrisation.size == (384, 512)
    res = run_attack(method, panel, PanelGoal(inner=Privacy()), x0, seed=0, robust=checks)
    assert bool(res.success[0])
    path = tmp_path / "protected.png"
    save_image(res.x_adv[0], path)
    saved = load_image(path).rgb[None]
    # re-judged from scratch on the re-read file, after the real JPEG 85 (Pillow)
    goal = PanelGoal(inner=Privacy()).bind(panel(x0), panel)
    assert float(robust_margin(panel, goal, saved, checks)[0]) > goal.kappa
    clean_label = int(panel(x0)[0, 0].argmax())
    assert clean_label not in panel(suite.transforms[0].apply(saved))[0, 0].topk(5).indices.tolist()
    # inside the full-resolution human-JND budget, value by value
    bound = jnd_budget("namm")(x0, method.params)["bound"]
    assert float(((saved - x0).abs() - bound).max()) <= 1e-6
    assert int(res.iterations[0]) <= method.max_iter


def test_proxy_attack_is_deterministic() -> None:
    from jndkit.victims import PanelVictim, load_victim

    panel = PanelVictim([load_victim("mobilenet_v2")])
    x0 = quantize(_big_photo("astronaut", 600, 600))
    method = on_proxy(dataclasses.replace(get_method("shield"), max_iter=4), 600, 600, proxy_long=300)
    a = run_attack(method, panel, PanelGoal(inner=Privacy()), x0, seed=5, robust=None)
    b = run_attack(method, panel, PanelGoal(inner=Privacy()), x0, seed=5, robust=None)
    assert torch.equal(a.x_adv, b.x_adv)
    assert int((a.x_adv != x0).sum()) > 0


# ---------------------------------------------------------------------------- 12 megapixels, end to end
@pytest.mark.slow
def test_twelve_megapixel_photo_is_protected_end_to_end(tmp_path: Path) -> None:
    """A 4000x3000 photo through ``protect_paths`` (defaults, budget 1x NAMM), the attack on a proxy
    (the call the lead adds to ``Protector.protect_tensor``, here in a subclass)."""
    import time

    from jndkit.protect import ProtectConfig, Protector, protect_paths

    class ProxyProtector(Protector):
        size: tuple[int, int] | None = None

        def protect_tensor(self, x, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.size = (x.shape[-2], x.shape[-1])
            return super().protect_tensor(x, *args, **kwargs)

        def method_for(self, out_fmt):  # type: ignore[no-untyped-def]
            assert self.size is not None
            return on_proxy(super().method_for(out_fmt), *self.size)

    x = _big_photo("chelsea", 3000, 4000)
    src = tmp_path / "big.png"
    Image.fromarray((x[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(src)
    out = tmp_path / "out"
    t = time.perf_counter()
    # the whole NAMM map as the budget (strength 1.0), pinned so the test does not follow preset changes
    cfg = ProtectConfig(strength="1.0")
    protector = ProxyProtector(cfg)
    (rec,) = list(protect_paths([src], out, cfg, protector=protector))
    seconds = time.perf_counter() - t
    assert rec.status == "protected", rec.error
    assert (rec.width, rec.height) == (4000, 3000)
    saved = load_image(out / "big.png").rgb
    assert saved.shape == (3, 3000, 4000)
    bound = jnd_budget("namm")(quantize(x), {"strength": 1.0})["bound"][0]
    assert float(((saved - quantize(x)[0]).abs() - bound).max()) <= 1e-6
    # the budget (1x the NAMM JND) costs about 37 dB on this photo (benchmarks/bench_large.py)
    assert rec.psnr is not None and 35.0 < rec.psnr < 45.0
    n = len(protector.members)
    assert rec.protection is not None and rec.protection.startswith(f"protection holds for {n}/{n} models")
    print(f"12 MP end to end: {seconds:.1f} s, PSNR {rec.psnr:.2f} dB, above JND {rec.above_jnd}, {rec.protection}")
