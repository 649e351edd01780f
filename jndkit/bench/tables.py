"""Markdown tables of a benchmark (the papers' tables) and the whole ``tables.md`` report.

* :func:`summary_table` success after save, iterations, time, PSNR and SSIM (mean ± std,
  seed 001 Tables I-II);
* :func:`quality_table` PSNR, SSIM, MS-SSIM, UQI, SCC, VIFP (seed 000 Tables 1 and 4);
* :func:`distance_table` L0, L1, L2, L∞, changed ratio, CIEDE2000, histogram KL, share
  above the human JND (seed 000 Tables 2 and 5);
* :func:`threshold_table` iterations, SSIM and L2 to reach a wrong-class confidence
  (seed 000 Table 3, goals ``margin:0.25`` and ``margin:0.6``);
* :func:`transfer_table` images protected against model A, judged by model B;
* :func:`ranking_table` the methods at full saved success, by PSNR.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..attacks import METHODS
from .config import BenchResult
from .records import BenchRow, machine_info


def _stats(vals: Sequence[float]) -> tuple[float, float, int]:
    v = np.array([x for x in vals if math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std()), int(v.size)


def _ms(vals: Sequence[float], digits: int, scale: float = 1.0) -> str:
    mean, std, k = _stats([x * scale for x in vals])
    if k == 0:
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _groups(rows: Sequence[BenchRow]) -> dict[tuple[str, str, str, str, str], list[BenchRow]]:
    out: dict[tuple[str, str, str, str, str], list[BenchRow]] = {}
    for r in rows:
        out.setdefault(r.key(), []).append(r)
    return out


def _pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:.1f} %" if n else "–"


# (column title, row field, digits, scale) of each table; quality averages the successful images.
SUMMARY_COLUMNS = (("PSNR dB", "psnr", 2, 1.0), ("SSIM", "ssim", 5, 1.0), ("iterations K", "iterations", 1, 1.0))
QUALITY_COLUMNS = (("PSNR dB", "psnr", 2, 1.0), ("SSIM", "ssim", 5, 1.0), ("MS-SSIM", "ms_ssim", 5, 1.0),
                   ("UQI", "uqi", 5, 1.0), ("SCC", "scc", 4, 1.0), ("VIFP", "vifp", 4, 1.0))
DISTANCE_COLUMNS = (("L0 (values)", "l0", 0, 1.0), ("L1", "l1", 2, 1.0), ("L2", "l2", 3, 1.0),
                    ("L∞ (levels)", "linf", 2, 255.0), ("changed pixels %", "changed_ratio", 2, 100.0),
                    ("ΔE00 mean", "ciede2000_mean", 4, 1.0), ("ΔE00 max", "ciede2000_max", 2, 1.0),
                    ("hist KL", "hist_kl", 6, 1.0), ("above JND %", "above_jnd", 3, 100.0))
THRESHOLD_COLUMNS = (("iterations", "iterations", 1, 1.0), ("SSIM", "ssim", 5, 1.0), ("L2", "l2", 3, 1.0))


def _metric_table(rows: Sequence[BenchRow], columns: Sequence[tuple[str, str, int, float]], lead: Sequence[str],
                  extra: Callable[[list[BenchRow]], list[str]] | None = None, extra_head: Sequence[str] = ()) -> str:
    head = ["model", "method", "preset", "goal", "robust"]
    keep = [i for i, h in enumerate(head) if h in lead]
    titles = [head[i] for i in keep] + ["n", "saved success", *extra_head] + [c[0] for c in columns]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for key, rs in _groups(rows).items():
        ok = [r for r in rs if r.success]
        cells = [key[i] for i in keep] + [str(len(rs)), _pct(len(ok), len(rs))]
        cells += extra(rs) if extra else []
        cells += [_ms([float(getattr(r, f)) for r in ok], d, s) for _, f, d, s in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(rows: Sequence[BenchRow]) -> str:
    """Success after save, PSNR and SSIM (mean ± std, seed 001 Tables I-II), iterations and time.

    One line per (model, method, preset, goal, robust). Quality and iterations average the
    images whose saved file reaches the goal; seconds per image average all images.
    """
    def extra(rs: list[BenchRow]) -> list[str]:
        return [_pct(sum(r.success_engine for r in rs), len(rs))]

    table = _metric_table(rows, SUMMARY_COLUMNS, ("model", "method", "preset", "goal", "robust"), extra,
                          ("engine success",))
    lines = table.split("\n")
    lines[0] += " s / image |"
    lines[1] += "---|"
    for i, (_, rs) in enumerate(_groups(rows).items()):
        lines[2 + i] += f" {_ms([r.seconds for r in rs], 3)} |"
    return "\n".join(lines)


def quality_table(rows: Sequence[BenchRow]) -> str:
    """Seed 000 Tables 1 and 4: PSNR, SSIM, MS-SSIM, UQI, SCC, VIFP (higher is better), mean ± std
    over the successful images."""
    return _metric_table(rows, QUALITY_COLUMNS, ("model", "method", "preset", "robust"))


def distance_table(rows: Sequence[BenchRow]) -> str:
    """Seed 000 Tables 2 and 5 and more: L0 (changed values), L1, L2 (in [0,1] units), L∞ (8-bit levels),
    changed pixels, CIEDE2000, colour-histogram KL, values above the NAMM JND (lower is better)."""
    return _metric_table(rows, DISTANCE_COLUMNS, ("model", "method", "preset", "robust"))


def threshold_table(rows: Sequence[BenchRow]) -> str:
    """Seed 000 Table 3: iterations, SSIM and L2 when the wrong class reaches a confidence
    (goals ``margin:C``), averaged over the images that reach it."""
    ordered = sorted(rows, key=lambda r: (r.model, r.goal, r.method))
    return _metric_table(ordered, THRESHOLD_COLUMNS, ("model", "method", "preset", "goal", "robust"))


def transfer_table(matrix: dict[tuple[str, str, str, str], dict[tuple[str, str], float]]) -> str:
    """One line per (method, protected-against model): saved success on every model."""
    targets = sorted({b for m in matrix.values() for (_, b) in m})
    lines = ["| method | preset | goal | robust | protected against | " + " | ".join(f"success on {b}" for b in targets)
             + " |", "|" + "---|" * (5 + len(targets))]
    for (method, preset, goal, robust), m in matrix.items():
        for a in sorted({a for (a, _) in m}):
            cells = [f"{100 * m[(a, b)]:.1f} %" if (a, b) in m else "–" for b in targets]
            lines.append(f"| {method} | {preset} | {goal} | {robust} | {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ranking_table(rows: Sequence[BenchRow]) -> str:
    """Per model and robustness setting, the methods whose saved files all succeed, best mean PSNR first,
    with each one's PSNR and SSIM difference to the best of the *other* families (jndkit vs the rest)."""
    head = ("| model | robust | rank | method | family | PSNR dB | SSIM | ΔPSNR to best other family | "
            "ΔSSIM to best other family |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    by: dict[tuple[str, str], list[tuple[str, str, float, float]]] = {}
    for (model, method, preset, _goal, robust), rs in _groups(rows).items():
        if rs and all(r.success for r in rs):
            fam = METHODS[method].family if method in METHODS else "?"
            by.setdefault((model, robust), []).append((f"{method}:{preset}", fam, _stats([r.psnr for r in rs])[0],
                                                       _stats([r.ssim for r in rs])[0]))
    for (model, robust), ms in by.items():
        ms.sort(key=lambda t: -t[2])
        for i, (name, fam, p, q) in enumerate(ms, 1):
            other = [t for t in ms if (t[1] == "jndkit") != (fam == "jndkit")]
            dp = f"{p - max(t[2] for t in other):+.2f}" if other else "–"
            dq = f"{q - max(t[3] for t in other):+.5f}" if other else "–"
            lines.append(f"| {model} | {robust} | {i} | {name} | {fam} | {p:.2f} | {q:.5f} | {dp} | {dq} |")
    return "\n".join(lines)


def report_markdown(result: BenchResult, figure: str | None = None, command: str | None = None) -> str:
    """All the tables of a benchmark as one Markdown text (what ``tables.md`` holds)."""
    c = result.config
    info = result.info or machine_info()
    parts = []
    if command:
        parts.append(f"Command: `{command}`  ")
    parts.append(f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores, torch threads "
                 f"{info.get('threads', '?')}, load average {info.get('load', '?')}; jndkit {info.get('jndkit', '?')}, "
                 f"torch {info.get('torch', '?')}, torchvision {info.get('torchvision', '?')}, "
                 f"Python {info.get('python', '?')}.  ")
    source = "files of " + c.data if c.data else "crops of the package-shipped photos"
    parts.append(f"Set: {c.n} images per model ({source}"
                 f"), label = the model's own prediction (confidence ≥ 0.5); goal {c.goal}, κ = {c.kappa:g}; "
                 f"success judged on the PNG read back from disk at batch 1"
                 f"{'' if c.robust == 'none' else f', after {c.robust} re-encoding'}. Quality columns: mean ± std "
                 f"over the images whose saved file succeeds; s / image: attack wall time per image.\n")
    if result.errors:
        parts.append("Not measured (errors): " + "; ".join(result.errors) + "\n")
    parts += ["### Success, PSNR, SSIM, iterations and time (seed 001 Tables I-II)\n", summary_table(result.rows), ""]
    parts += ["### Methods at 100 % saved success, by PSNR\n", ranking_table(result.rows), ""]
    parts += ["### Image quality, higher is better (seed 000 Tables 1 and 4)\n", quality_table(result.rows), ""]
    parts += ["### Distances, lower is better (seed 000 Tables 2 and 5)\n", distance_table(result.rows), ""]
    if result.threshold_rows:
        parts += ["### Reaching a wrong-class confidence (seed 000 Table 3)\n", threshold_table(result.threshold_rows),
                  ""]
    if result.transfer:
        parts += ["### Transfer: protected against one model, judged by another (saved success)\n",
                  transfer_table(result.transfer), ""]
    if figure:
        parts += ["### Confidence along the iterations (seed 000 Figure 4)\n",
                  f"![confidence along the iterations]({figure})\n",
                  ("Solid: probability of the top wrong class on the 8-bit iterate; dashed: the clean label; "
                   "dot: K, the first iteration whose saved image fools the model (the JND image). The method "
                   "runs past K to its budget."), ""]
    return "\n".join(parts)
