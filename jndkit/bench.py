"""Benchmarks on a deterministic evaluation set, with success judged on the saved image.

The default evaluation set is made of crops and flips of the photos that ship inside
scikit-image, scikit-learn and matplotlib, resized to the model's input size, keeping
those the model itself labels with confidence >= ``min_confidence`` (seed 003's
classifier-generated labels). Each method runs through the one engine; every
adversarial image is then encoded as PNG (and re-encoded as JPEG when asked),
decoded, and judged by the victim at batch size 1.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .attacks import get_method, run_attack
from .errors import InputError, JndkitError
from .goals import DEFAULT_KAPPA, parse_goal
from .images import decode_bytes, encode_image, load_image, quantize
from .victims import ClassifierVictim


def _crops(arr: np.ndarray, size: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Deterministic square crops (3 scales x 5 positions) and their mirror images."""
    x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float()[None] / 255.0
    h, w = x.shape[-2:]
    short = min(h, w)
    for scale in (1.0, 0.75, 0.55):
        s = int(short * scale)
        for pos, (top, left) in {
            "c": ((h - s) // 2, (w - s) // 2), "tl": (0, 0), "tr": (0, w - s), "bl": (h - s, 0), "br": (h - s, w - s),
        }.items():
            if scale == 1.0 and pos != "c" and (h == w):
                continue
            c = x[..., top : top + s, left : left + s]
            c = F.interpolate(c, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            c = quantize(c)
            yield f"s{scale:g}-{pos}", c
            yield f"s{scale:g}-{pos}-flip", c.flip(-1)


def evaluation_set(victim: ClassifierVictim, n: int = 32, size: int | None = None, min_confidence: float = 0.5,
                   data: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` images ``[n,3,S,S]`` with the victim's own confident labels, and their names.

    With ``data``, the images are the files of that folder (recursively, sorted), resized to
    ``S``; otherwise crops of the package-shipped photos. Deterministic: same inputs, same set.
    """
    from .images import find_images
    from .samples import sample_array, sample_names

    s = size or (victim.input_size[0] if victim.input_size else 224)
    candidates: list[tuple[str, torch.Tensor]] = []
    if data is not None:
        for p in find_images([data]):
            try:
                x = load_image(p).rgb[None]
            except JndkitError:  # unreadable files are left out of the set
                continue
            x = quantize(F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False))
            candidates.append((str(Path(p).relative_to(data)) if Path(data).is_dir() else p.name, x))
    else:
        # interleave photos so that a small n still spans several scenes
        per_photo = [[(f"{name}/{tag}", c) for tag, c in _crops(sample_array(name), s)] for name in sample_names()]
        for i in range(max(len(p) for p in per_photo)):
            for p in per_photo:
                if i < len(p):
                    candidates.append(p[i])
    keep_x, keep_y, names = [], [], []
    with torch.no_grad():
        for start in range(0, len(candidates), 32):
            chunk = candidates[start : start + 32]
            xb = torch.cat([c for _, c in chunk])
            probs = victim(xb).softmax(1)
            conf, lab = probs.max(1)
            for (name, x), c, y in zip(chunk, conf.tolist(), lab.tolist()):
                if c >= min_confidence:
                    keep_x.append(x)
                    keep_y.append(y)
                    names.append(name)
            if len(keep_x) >= n:
                break
    if len(keep_x) < n:
        raise InputError(f"only {len(keep_x)} images reach confidence {min_confidence} under {victim.name}; "
                         f"asked for {n}")
    return torch.cat(keep_x[:n]), torch.tensor(keep_y[:n]), names[:n]


@dataclass
class BenchRow:
    """One image, one method: what was measured on the saved image."""

    model: str
    method: str
    preset: str
    goal: str
    image: str
    success: bool
    success_float_engine: bool
    iterations: int
    seconds: float
    psnr: float
    ssim: float
    l2: float
    linf: float
    changed_values: int
    robust: str = "none"


def saved_success(victim: ClassifierVictim, goal_spec: str, kappa: float, x0: torch.Tensor, x_adv: torch.Tensor,
                  robust: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[bool]:
    """Encode each adversarial image as PNG, decode it, optionally re-encode (``robust``) and judge
    it at batch size 1 against the goal bound to its clean image."""
    out = []
    with torch.no_grad():
        for i in range(x0.shape[0]):
            goal = parse_goal(goal_spec, kappa).bind(victim(x0[i : i + 1]), victim)
            saved = decode_bytes(encode_image(x_adv[i], "png"))[None]
            if robust is not None:
                saved = robust(saved)
            out.append(bool(goal.reached(victim(saved))[0]))
    return out


def run_method(victim: ClassifierVictim, x0: torch.Tensor, names: Sequence[str], method: str, preset: str | None,
               goal: str = "untargeted", kappa: float = DEFAULT_KAPPA, robust: str = "none", seed: int = 0,
               batch_size: int = 16, max_iter: int | None = None) -> list[BenchRow]:
    """Run one method over the set in batches and measure every saved image."""
    from . import metrics
    from .protect import parse_robust, reencode

    m = get_method(method, preset)
    rob = parse_robust(robust)
    transform = reencode(*rob) if rob else None
    rows: list[BenchRow] = []
    for start in range(0, x0.shape[0], batch_size):
        xb = x0[start : start + batch_size]
        t0 = time.perf_counter()
        res = run_attack(m, victim, parse_goal(goal, kappa), xb, max_iter=max_iter, seed=seed, robust=transform)
        secs = (time.perf_counter() - t0) / xb.shape[0]
        ok = saved_success(victim, goal, kappa, xb, res.x_adv, transform)
        vals = metrics.compute_metrics(xb, res.x_adv, names=["psnr", "ssim", "l2", "linf", "l0"])
        for j in range(xb.shape[0]):
            rows.append(BenchRow(
                model=victim.name, method=method, preset=preset or "default", goal=goal, image=names[start + j],
                success=ok[j], success_float_engine=bool(res.success[j]), iterations=int(res.iterations[j]),
                seconds=secs, psnr=float(vals["psnr"][j]), ssim=float(vals["ssim"][j]), l2=float(vals["l2"][j]),
                linf=float(vals["linf"][j]), changed_values=int(vals["l0"][j]), robust=robust))
    return rows


def _ms(vals: list[float], digits: int) -> str:
    v = [x for x in vals if math.isfinite(x)]
    if not v:
        return "–"
    a = np.array(v)
    return f"{a.mean():.{digits}f} ± {a.std():.{digits}f}"


def summary_table(rows: list[BenchRow]) -> str:
    """Markdown: one line per (model, method, preset, goal, robust); quality over successful images."""
    keys: dict[tuple[str, ...], list[BenchRow]] = {}
    for r in rows:
        keys.setdefault((r.model, r.method, r.preset, r.goal, r.robust), []).append(r)
    lines = ["| model | method | preset | goal | robust | n | saved success | PSNR dB | SSIM | L∞ (levels) "
             "| changed values | iterations K | s / image |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (model, method, preset, goal, robust), rs in keys.items():
        ok = [r for r in rs if r.success]
        lines.append(
            f"| {model} | {method} | {preset} | {goal} | {robust} | {len(rs)} | {100 * len(ok) / len(rs):.1f} % "
            f"| {_ms([r.psnr for r in ok], 2)} | {_ms([r.ssim for r in ok], 5)} "
            f"| {_ms([r.linf * 255 for r in ok], 1)} | {_ms([float(r.changed_values) for r in ok], 0)} "
            f"| {_ms([float(r.iterations) for r in ok], 1)} | {np.mean([r.seconds for r in rs]):.2f} |")
    return "\n".join(lines)


def write_csv(rows: list[BenchRow], path: str | os.PathLike[str]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fields = list(BenchRow.__dataclass_fields__)
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: getattr(r, k) for k in fields})


def read_csv(path: str | os.PathLike[str]) -> list[BenchRow]:
    rows = []
    with open(path, newline="") as f:
        for d in csv.DictReader(f):
            conv: dict[str, Any] = {}
            for k, fdef in BenchRow.__dataclass_fields__.items():
                v = d[k]
                t = fdef.type
                if t in ("bool", bool):
                    conv[k] = v == "True"
                elif t in ("int", int):
                    conv[k] = int(v)
                elif t in ("float", float):
                    conv[k] = float(v)
                else:
                    conv[k] = v
            rows.append(BenchRow(**conv))
    return rows


def machine_info() -> dict[str, str]:
    """Versions and machine, for the benchmark record."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torchvision

    from . import __version__

    return {"jndkit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "cpu": cpu, "cores": str(os.cpu_count()),
            "threads": str(torch.get_num_threads())}
