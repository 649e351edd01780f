"""The report page of a protection run, for every task (``OUT.report/report.html``), and JND-map images."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ImageError
from ..images import load_image, save_image
from ..pipeline import Record, summarise

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


def report_dir(out_dir: Path) -> Path:
    """Where ``report.html`` and its images go: ``OUT.report/`` beside the output folder, never
    inside it, so the folder people share holds protected photos only (the report shows the
    originals)."""
    out_dir = Path(out_dir)
    return out_dir.parent / (out_dir.name + ".report")


def _matrix_html(matrix: dict[str, Any] | None) -> str:
    """The protection matrix: one row per model, one column per upload transform; green = top-1
    changed and the clean class out of the top-5, amber = top-1 changed only, red = recognised."""
    if not matrix:
        return ""
    cells = {(c["model"], c["transform"]): c for c in matrix["cells"]}
    head = "".join(f"<th>{html.escape(t)}</th>" for t in matrix["transforms"])
    rows = []
    for m in matrix["models"]:
        tds = []
        for t in matrix["transforms"]:
            c = cells[(m, t)]
            cls = "hid" if c["changed"] and not c["in_top5"] else ("chg" if c["changed"] else "rec")
            tds.append(f"<td class={cls} title='clean class {html.escape(c['clean_label'])}: {c['clean_prob']:.3f}'>"
                       f"{html.escape(c['label'])} {c['confidence']:.2f}</td>")
        rows.append(f"<tr><th>{html.escape(m)}</th>{''.join(tds)}</tr>")
    return (f"<table class=mx><tr><th>{html.escape(matrix['suite'])}</th>{head}</tr>{''.join(rows)}</table>"
            f"<div>{html.escape(matrix.get('summary', ''))}</div>")


def write_html_report(out_dir: Path, records: Sequence[Record], record_type: type[Record] | None = None) -> Path:
    """Write ``OUT.report/report.html`` (thumbnails beside it) for the records of a run of any task.

    The page shows the records of ``OUT/report.json`` when it exists (the truth of the folder:
    earlier runs' photos included; read as ``record_type``, by default the type of ``records``),
    else ``records``. What a task adds (top-5 lists, faces, boxes) comes from
    :meth:`~jndkit.pipeline.Record.caption`.
    """
    out_dir = Path(out_dir)
    rp = out_dir / "report.json"
    kind = record_type or (type(records[0]) if records else Record)
    if rp.exists():
        try:
            records = [kind.from_json(d) for d in json.loads(rp.read_text()).get("images", [])]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    folder = report_dir(out_dir)
    assets = folder / "assets"
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
        a = _write(_thumb(r.draw(orig, "original")), assets / f"{stem}_original.png")
        b = _write(_thumb(r.draw(adv, "protected")), assets / f"{stem}_protected.png")
        c = _write(_diff_image(orig, adv), assets / f"{stem}_difference.png")

        def top(rec: Record, which: str) -> str:
            return "<br>".join(html.escape(line) for line in rec.caption(which))

        ok = "✓ protected" if r.status == "protected" else "✗ not protected"
        psnr = "unchanged" if r.psnr is None else f"{r.psnr:.2f} dB"
        extra = ""
        if r.ciede2000_mean is not None:
            extra += f"<br>CIEDE2000 {r.ciede2000_mean:.2f} mean, {r.ciede2000_max:.1f} max"
        if r.above_jnd is not None:
            extra += f"<br>{r.above_jnd:.2%} of pixels above the JND"
        rows.append(
            f"<tr><td><b>{name}</b><br>{r.width}×{r.height}<br><span class={'ok' if r.status == 'protected' else 'err'}>"
            f"{ok}</span><br>PSNR {psnr}<br>SSIM {r.ssim:.5f}<br>L∞ {(r.linf or 0) * 255:.0f}/255{extra}<br>"
            f"{r.changed_values} values changed<br>K = {r.iterations}, {r.seconds:.1f} s</td>"
            f"<td><img src='assets/{a}'><br>{top(r, 'original')}</td>"
            f"<td><img src='assets/{b}'><br>{top(r, 'protected')}</td>"
            f"<td><img src='assets/{c}'><br>difference × {AMPLIFY:g} (grey = unchanged)</td></tr>"
            + (f"<tr><td></td><td colspan=3>{_matrix_html(r.matrix)}</td></tr>" if r.matrix else "")
        )
    s = summarise(records)
    legend = ("<p>Protection matrix: green = top-1 changed and the clean class out of the top-5; amber = top-1 "
              "changed only; red = still recognised.</p>" if any(r.matrix for r in records) else "")
    quality = (f"; mean PSNR {s['mean_psnr']:.2f} dB, mean SSIM {s['mean_ssim']:.4f}"
               if s["mean_psnr"] is not None and s["mean_ssim"] is not None else "")
    page = f"""<!doctype html><meta charset=utf-8><title>jndkit report</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{vertical-align:top;padding:6px;font-size:13px}}
img{{max-width:{THUMB}px}}.ok{{color:#070}}.err{{color:#b00}}table{{border-collapse:collapse}}
tr{{border-bottom:1px solid #ddd}}.mx td,.mx th{{font-size:12px;padding:3px 6px;border:1px solid #ccc}}
.hid{{background:#c8efc8}}.chg{{background:#f6e3a1}}.rec{{background:#f4c0c0}}</style>
<h1>jndkit protection report</h1>
<p>{s['protected']}/{s['images']} photos protected in {html.escape(str(out_dir))} (success re-checked by reading
each written file back and running the models on it, after every upload transform){quality}.
This page and its images live outside the output folder: they show the originals.</p>
{legend}
<table><tr><th>photo</th><th>original</th><th>protected (judged on the saved file)</th>
<th>amplified difference</th></tr>
{''.join(rows)}</table>"""
    path = folder / "report.html"
    tmp = folder / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def save_jnd_map(rgb: torch.Tensor, output: Path, model: str = "namm", *, stem: str = "jnd_map") -> dict[str, Any]:
    """Compute a human JND map of ``rgb`` ``[3,H,W]`` and write it as a PNG (scaled so 20 grey
    levels is white) plus the raw map ``[3,H,W]`` in [0,1] units as ``.npy`` beside it.

    ``output`` is the image path (a suffix other than .png/.tif/.tiff/.webp becomes .png) or an
    existing folder, which then receives ``<stem>.png`` and ``<stem>.npy``. Nothing is ever
    overwritten: both names are checked before anything is written, and each file is written
    atomically (a temporary file renamed into place).

    Returns:
        ``png`` and ``npy`` paths, ``mean_levels``, ``min_levels``, ``max_levels`` (grey levels).

    Raises:
        OutputError: the PNG or the .npy exists already (naming it), or the folder cannot be written.
    """
    import io

    from ..errors import OutputError
    from ..jsonio import write_bytes_atomic
    from ..perception import jnd_map

    output = Path(output)
    if output.is_dir():
        output = output / f"{stem}.png"
    elif output.suffix.lower() not in (".png", ".tif", ".tiff", ".webp"):
        output = output.with_suffix(".png")
    npy = output.with_suffix(".npy")
    for path in (output, npy):
        if path.exists():
            raise OutputError(path, "already exists; not overwritten (choose another -o or remove it)")
    with torch.no_grad():
        j = jnd_map(rgb[None], model)[0]
    levels = j * 255.0
    img = (levels / 20.0).clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    buf = io.BytesIO()
    np.save(buf, j.cpu().numpy())
    save_image(img, output)
    write_bytes_atomic(buf.getvalue(), npy, overwrite=False)
    return {"png": str(output), "npy": str(npy), "mean_levels": float(levels.mean()),
            "min_levels": float(levels.min()), "max_levels": float(levels.max())}
