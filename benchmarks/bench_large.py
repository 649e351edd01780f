"""Seconds and peak memory of the protective mode on large photos, at full resolution and on a proxy.

Issue 13 ("a 12-megapixel photo in <= 60 s") and issue 12 item 1. Each run is one call of
``Protector(ProtectConfig()).protect_file`` (the defaults: the ``imagenet`` panel, ``shield`` inside
the human JND, the ``privacy`` goal, success decided on the saved file after every transform of the
``social`` upload suite, the report's metrics and protection matrix), in a fresh Python process so
that ``ru_maxrss`` is that run's peak. Rows:

* ``full``: the method as it is (the perturbation optimised at the photo's size);
* ``proxy N``: the same method through :func:`jndkit.attacks.proxy.on_proxy` with long side ``N``
  (the call ``Protector.protect_tensor`` makes once integrated; here a subclass makes it).

Photos (built once, deterministic): ``skimage.data.chelsea`` (or ``astronaut``) resized with Pillow's
Lanczos to 4000x3000 (12 MP) or 1600x1200 (1.9 MP), plus Gaussian noise of 2 grey levels (seed 0),
saved as PNG. Phases: ``attack`` (``protect_tensor``: JND budget, iterations, checks after the real
uploads), ``verify`` (re-read file, every upload transform), ``measure`` (metrics and the protection
matrix), ``other`` (decode, clean prediction, PNG encode). Wall-clock seconds with
``OMP_NUM_THREADS`` threads (2 on the reference machine), median over ``--repeat`` runs.

Run::

    OMP_NUM_THREADS=2 python benchmarks/bench_large.py --sizes 12 --modes full,768 --repeat 1
    OMP_NUM_THREADS=2 python benchmarks/bench_large.py --sizes 2 --modes full,512,768,1024 --repeat 3
    OMP_NUM_THREADS=2 python benchmarks/bench_large.py --sizes 12 --modes 768 --profile prof.txt
    OMP_NUM_THREADS=2 python benchmarks/bench_large.py --sizes 12 --modes 768 --strength 1.0

prints a markdown table (``--json FILE`` keeps the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = {12: (3000, 4000), 2: (1200, 1600)}  # megapixels -> (H, W)


def make_photo(path: Path, height: int, width: int, name: str = "chelsea", seed: int = 0) -> Path:
    """Write the benchmark photo (Lanczos upscale of a scikit-image photo + noise) as PNG."""
    import numpy as np
    from PIL import Image
    from skimage import data

    if path.exists():
        return path
    img = Image.fromarray(getattr(data, name)()).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    a = np.asarray(img).astype(np.float32)
    a = np.clip(np.round(a + np.random.default_rng(seed).normal(0.0, 2.0, a.shape)), 0, 255).astype(np.uint8)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(a).save(tmp)
    os.replace(tmp, path)
    return path


def run_one(src: Path, mode: str, profile: str | None, strength: str | None = None) -> dict[str, Any]:
    """One ``protect_file`` in this process; returns one row."""
    import torch

    from jndkit.attacks.proxy import on_proxy
    from jndkit.protect import ProtectConfig, Protector

    phases: dict[str, float] = {"attack": 0.0, "verify": 0.0, "measure": 0.0}
    proxy_long = None if mode == "full" else int(mode)

    class Timed(Protector):
        size: tuple[int, int] = (0, 0)

        def protect_tensor(self, x, *args, **kwargs):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            self.size = (int(x.shape[-2]), int(x.shape[-1]))
            res = super().protect_tensor(x, *args, **kwargs)
            phases["attack"] += time.perf_counter() - t
            return res

        def method_for(self, out_fmt):  # type: ignore[no-untyped-def]
            method = super().method_for(out_fmt)
            return method if proxy_long is None else on_proxy(method, *self.size, proxy_long)

        def judge(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            # the from-scratch verdict on the re-read file and its protection matrix
            t = time.perf_counter()
            out = super().judge(*args, **kwargs)
            phases["verify"] += time.perf_counter() - t
            return out

    import jndkit.pipeline.run as pipeline_run

    real_measure = pipeline_run.measure

    def timed_measure(*args, **kwargs):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        real_measure(*args, **kwargs)
        phases["measure"] += time.perf_counter() - t

    pipeline_run.measure = timed_measure  # the quality numbers of the written file, timed

    torch.manual_seed(0)
    p = Timed(ProtectConfig(strength=strength))
    out = Path(tempfile.mkdtemp(prefix="bench-large-"))
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t = time.perf_counter()
    rec = p.protect_file(src, out)
    seconds = time.perf_counter() - t
    if prof is not None:
        import pstats

        prof.disable()
        with open(profile, "w") as f:
            pstats.Stats(prof, stream=f).sort_stats("cumulative").print_stats(60)
            pstats.Stats(prof, stream=f).sort_stats("tottime").print_stats(30)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "photo": src.name, "mode": mode, "strength": strength or "default", "seconds": round(seconds, 2),
        "attack_s": round(phases["attack"], 2), "verify_s": round(phases["verify"], 2),
        "measure_s": round(phases["measure"], 2),
        "other_s": round(seconds - sum(phases.values()), 2),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
        "status": rec.status, "success": rec.success, "robust_success": rec.robust_success,
        "iterations": rec.iterations, "psnr": rec.psnr, "ssim": rec.ssim, "above_jnd": rec.above_jnd,
        "ciede2000_mean": rec.ciede2000_mean, "linf": rec.linf, "protection": rec.protection,
        "error": rec.error,
    }


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(rows[len(rows) // 2])
    for k in ("seconds", "attack_s", "verify_s", "measure_s", "other_s", "peak_mb"):
        out[k] = round(statistics.median(r[k] for r in rows), 2)
    out["runs"] = len(rows)
    out["seconds_all"] = [r["seconds"] for r in rows]
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| photo | mode | strength | runs | seconds (median) | attack | verify | measure | other | peak MB | "
            "status | iterations | PSNR dB | SSIM | above JND | protection |")
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        psnr = f"{r['psnr']:.2f}" if r["psnr"] is not None else "-"
        ssim = f"{r['ssim']:.6f}" if r["ssim"] is not None else "-"
        above = f"{100 * r['above_jnd']:.3f} %" if r["above_jnd"] is not None else "-"
        lines.append(f"| {r['photo']} | {r['mode']} | {r['strength']} | {r.get('runs', 1)} | {r['seconds']} | "
                     f"{r['attack_s']} | {r['verify_s']} | {r['measure_s']} | {r['other_s']} | {r['peak_mb']} | "
                     f"{r['status']} | {r['iterations']} | {psnr} | {ssim} | {above} | {r['protection']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="12,2", help="comma list of megapixels among 12, 2")
    ap.add_argument("--modes", default="full,1024", help="comma list: full and/or proxy long sides")
    ap.add_argument("--photo", default="chelsea", help="scikit-image photo (chelsea or astronaut)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--strength", default=None, help="--strength of protect (default: ProtectConfig's)")
    ap.add_argument("--dir", default=None, help="where the photos are built (default: a temp folder)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", default=None, help="cProfile output file (first run of each row)")
    ap.add_argument("--one", nargs=2, metavar=("SRC", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), args.one[1], args.profile, args.strength)))
        return
    folder = Path(args.dir or tempfile.gettempdir()) / "jndkit-bench-large"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for mp in [int(s) for s in args.sizes.split(",")]:
        h, w = SIZES[mp]
        src = make_photo(folder / f"{args.photo}_{w}x{h}.png", h, w, args.photo)
        for mode in args.modes.split(","):
            runs = []
            for k in range(args.repeat):
                cmd = [sys.executable, __file__, "--one", str(src), mode]
                if args.strength is not None:
                    cmd += ["--strength", args.strength]
                if args.profile and k == 0:
                    cmd += ["--profile", f"{args.profile}.{mp}mp.{mode}.txt"]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"{src} {mode}: exit {done.returncode}\n{done.stderr[-3000:]}")
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
            rows.append(_median_row(sorted(runs, key=lambda r: r["seconds"])))
    import torch

    print(f"jndkit bench_large: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
