"""Human-readable outputs: the HTML report of a protect run and JND-map images."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageError
from .images import load_image, save_image

THUMB = 360
AMPLIFY = 40.0
"""Difference images show ``0.5 + AMPLIFY * (protected - original)``: one 8-bit level becomes 40 levels."""


def _thumb(x: torch.Tensor, size: int = THUMB) -> torch.Tensor:
    h, w = x.shape[-2:]
    s = min(1.0, size / max(h, w))
    if s < 1.0:
        x = F.interpolate(x[None], size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")[0]
    return x.clamp(0, 1)


def _diff_image(orig: torch.Tensor, adv: torch.Tensor, size: int = THUMB) -> torch.Tensor:
    """Amplified signed difference; max-pooled when shrunk so isolated changed pixels stay visible."""
    d = adv - orig
    h, w = d.shape[-2:]
    k = max(1, int(np.ceil(max(h, w) / size)))
    if k > 1:
        pos = F.max_pool2d(d.clamp(min=0)[None], k, ceil_mode=True)[0]
        neg = F.max_pool2d((-d).clamp(min=0)[None], k, ceil_mode=True)[0]
        d = torch.where(pos >= neg, pos, -neg)
    return (0.5 + AMPLIFY * d).clamp(0, 1)


def _write(x: torch.Tensor, path: Path) -> str:
    save_image(x, path, overwrite=True)
    return path.name


def write_html_report(out_dir: Path, records: list[Any]) -> Path:
    """Write ``report.html`` (and thumbnails in ``report_assets/``) for protect records."""
    from .protect import summarise

    assets = out_dir / "report_assets"
    assets.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, r in enumerate(records):
        name = html.escape(Path(r.input).name)
        if r.status not in ("protected", "failed") or not r.output:
            rows.append(f"<tr><td>{name}</td><td colspan=4 class=err>{html.escape(str(r.error or r.status))}</td></tr>")
            continue
        try:
            orig = load_image(r.input).rgb
            adv = load_image(r.output).rgb
        except ImageError as e:
            rows.append(f"<tr><td>{name}</td><td colspan=4 class=err>{html.escape(str(e))}</td></tr>")
            continue
        stem = f"{i:04d}"
        a = _write(_thumb(orig), assets / f"{stem}_original.png")
        b = _write(_thumb(adv), assets / f"{stem}_protected.png")
        c = _write(_diff_image(orig, adv), assets / f"{stem}_difference.png")

        def top(t: list[Any]) -> str:
            return "<br>".join(f"{html.escape(str(lab))} {p:.3f}" for lab, p in t[:3])

        ok = "✓ fooled" if r.status == "protected" else "✗ still recognised"
        rows.append(
            f"<tr><td><b>{name}</b><br>{r.width}×{r.height}<br><span class={'ok' if r.status == 'protected' else 'err'}>"
            f"{ok}</span><br>PSNR {r.psnr:.2f} dB<br>SSIM {r.ssim:.5f}<br>L∞ {r.linf * 255:.0f}/255<br>"
            f"{r.changed_values} values changed<br>K = {r.iterations}, {r.seconds:.1f} s</td>"
            f"<td><img src='report_assets/{a}'><br>{top(r.clean_top5)}</td>"
            f"<td><img src='report_assets/{b}'><br>{top(r.protected_top5)}</td>"
            f"<td><img src='report_assets/{c}'><br>difference × {AMPLIFY:g} (grey = unchanged)</td></tr>"
        )
    s = summarise(records)
    page = f"""<!doctype html><meta charset=utf-8><title>jndkit report</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{vertical-align:top;padding:6px;font-size:13px}}
img{{max-width:{THUMB}px}}.ok{{color:#070}}.err{{color:#b00}}table{{border-collapse:collapse}}
tr{{border-bottom:1px solid #ddd}}</style>
<h1>jndkit protection report</h1>
<p>{s['protected']}/{s['images']} photos protected (success re-checked by reading each written file back and
running the model on it); mean PSNR {s['mean_psnr']} dB, mean SSIM {s['mean_ssim']}.</p>
<table><tr><th>photo</th><th>original (model's top-3)</th><th>protected (model's top-3 on the saved file)</th>
<th>amplified difference</th></tr>
{''.join(rows)}</table>"""
    path = out_dir / "report.html"
    tmp = out_dir / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def save_jnd_map(rgb: torch.Tensor, output: Path, model: str = "namm") -> dict[str, Any]:
    """Compute a human JND map of ``rgb`` ``[3,H,W]`` and write it as a PNG (scaled so 20 grey
    levels is white) plus the raw map ``[3,H,W]`` in [0,1] units as ``.npy``."""
    from .perception import jnd_map

    with torch.no_grad():
        j = jnd_map(rgb[None], model)[0]
    levels = j * 255.0
    img = (levels / 20.0).clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    output = Path(output)
    if output.suffix.lower() not in (".png", ".tif", ".tiff", ".webp"):
        output = output.with_suffix(".png")
    save_image(img, output)
    npy = output.with_suffix(".npy")
    np.save(npy, j.cpu().numpy())
    return {"png": str(output), "npy": str(npy), "mean_levels": float(levels.mean()),
            "min_levels": float(levels.min()), "max_levels": float(levels.max())}
