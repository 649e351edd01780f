"""Peak memory and time of ``jndkit.metrics.compute_metrics`` on 1, 12 and 50 megapixel pairs.

Issue 12 item 1: the SSIM of a 4000x3000 photo asked for 58 GB. This measures what the report's
metrics cost now. Each size runs in a fresh Python process (``ru_maxrss`` is a process-wide peak):

* the pair is synthetic and deterministic: a smooth colour image (sums of sines, float32, built
  strip by strip so that building it costs no more than holding it) and a copy with uniform noise of
  up to +-2 8-bit levels, both rounded to 8-bit levels as a saved photo is; the JND map for
  ``above_jnd`` is a smooth map between 1.5 and 4.5 levels;
* ``inputs MB`` is the resident memory once the three tensors exist (Python, torch and jndkit
  imported); ``peak MB`` the largest resident memory during ``compute_metrics``; ``extra MB`` their
  difference, the cost of the metrics themselves;
* seconds are wall-clock for one ``compute_metrics`` call (no warm-up needed: nothing is cached
  across calls), on as many threads as ``OMP_NUM_THREADS`` allows.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_memory.py`` (a few minutes), which prints a
markdown table for docs/benchmarks.md; ``--sizes 1,12`` to choose, ``--json FILE`` to keep the rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

NAMES = ["psnr", "ssim", "l2", "linf", "l0", "ciede2000_mean", "ciede2000_max", "above_jnd"]
SHAPES = {1: (1000, 1000), 12: (3000, 4000), 50: (6000, 8333)}  # megapixels -> (H, W)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def _current_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _make_pair(h: int, w: int):  # type: ignore[no-untyped-def]
    import torch

    x0 = torch.empty(1, 3, h, w)
    x = torch.empty(1, 3, h, w)
    jnd = torch.empty(1, 3, h, w)
    g = torch.Generator().manual_seed(0)
    cols = torch.arange(w, dtype=torch.float32)
    step = max(1, (1 << 19) // w)
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        rows = torch.arange(r0, r1, dtype=torch.float32)[:, None]
        for c in range(3):
            smooth = 0.5 + 0.25 * torch.sin(rows / (97.0 + 31 * c) + cols / (143.0 - 17 * c)) + 0.15 * torch.cos(
                (rows - cols) / (61.0 + 7 * c)
            )
            clean = torch.round(smooth.clamp(0, 1) * 255) / 255
            noise = torch.randint(-2, 3, clean.shape, generator=g).float() / 255
            x0[0, c, r0:r1] = clean
            x[0, c, r0:r1] = (clean + noise).clamp(0, 1)
            jnd[0, c, r0:r1] = (3.0 + 1.5 * torch.sin(rows / 50.0 + cols / 70.0)) / 255
    return x0, x, jnd


def run_one(mp: int) -> dict[str, object]:
    """Measure one size in this process; returns one row."""
    import torch

    from jndkit import metrics

    h, w = SHAPES[mp]
    x0, x, jnd = _make_pair(h, w)
    inputs = _current_mb()
    t = time.perf_counter()
    vals, info = metrics.compute_metrics(x0, x, names=NAMES, jnd=jnd, return_info=True)
    seconds = time.perf_counter() - t
    peak = _rss_mb()
    return {
        "megapixels": round(h * w / 1e6, 1),
        "shape": f"{w}x{h}",
        "inputs_mb": round(inputs),
        "peak_mb": round(peak),
        "extra_mb": round(peak - inputs),
        "seconds": round(seconds, 1),
        "values": {k: float(v[0]) for k, v in vals.items()},
        "how": info,
        "threads": torch.get_num_threads(),
    }


def _table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| photo | pixels | inputs MB | peak MB | extra MB | seconds | PSNR dB | SSIM | SSIM computed | ΔE00 mean / max | above JND |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        v = r["values"]
        how = r["how"]
        assert isinstance(v, dict) and isinstance(how, dict)
        lines.append(
            f"| {r['megapixels']} MP | {r['shape']} | {r['inputs_mb']} | {r['peak_mb']} | {r['extra_mb']} | "
            f"{r['seconds']} | {v['psnr']:.2f} | {v['ssim']:.5f} | {how['ssim']} | "
            f"{v['ciede2000_mean']:.3f} / {v['ciede2000_max']:.2f} | {100 * v['above_jnd']:.2f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,12,50", help="megapixels, from 1, 12, 50 (default: all)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args.one)))
        return 0
    rows = []
    for mp in (int(s) for s in args.sizes.split(",")):
        if mp not in SHAPES:
            ap.error(f"size {mp} MP not one of {sorted(SHAPES)}")
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(mp)], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            print(f"{mp} MP failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(_table(rows))
    how = rows[-1]["how"]
    assert isinstance(how, dict)
    print()
    print("How each metric was computed at the largest size: " + "; ".join(f"{k}: {v}" for k, v in how.items()))
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"torch threads {rows[-1]['threads']}, Python {platform.python_version()}."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, allow_nan=False)
    return 0 if all(math.isfinite(float(r["seconds"])) for r in rows) else 1  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
