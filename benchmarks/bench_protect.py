"""The protection benchmark behind docs/benchmarks.md (see benchmarks/README.md for the method).

    python benchmarks/bench_protect.py --write-docs          # the documented run, rewrites docs/benchmarks.md
    python benchmarks/bench_protect.py --quick               # ~2-minute smoke run into benchmarks/results/quick

Two configurations, both through :func:`jndkit.bench.run_benchmark` (the library call behind
``jndkit bench``), both over ``--models``:

1. untargeted, every registered method with its default preset (``--methods``), ``--images``
   images per model, with seed 000 Table 3 (levels, jnd, bim on ``--table3-images`` images),
   Figure 4 and the transfer matrix;
2. the same goal with ``--robust jpeg:90`` (levels' fast preset, jnd, ddn and bim on ``--robust-images`` images).

Results are cached per (model, method, preset, goal, robust, image) under
benchmarks/results/bench/: a rerun reuses every finished image (``--fresh`` deletes the cache).
With ``--write-docs`` the section between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` of
docs/benchmarks.md is replaced; other sections are kept.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
TAG = "bench"
# levels' default moves a value by one level at most, which JPEG-90 erases; its `fast` preset
# (two levels) is what `jndkit protect --robust jpeg:90` uses.
ROBUST_METHODS = "levels:fast,jnd,ddn,bim"
# mnd and hvs take minutes per image on the shared 2-core machine (docs/seeds_benchmarks.md).
SLOW_METHOD_IMAGES = "mnd=16,hvs=16"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_lite0")
    ap.add_argument("--methods", default="all", help="all | jndkit | seeds | baselines | METHOD[:PRESET],...")
    ap.add_argument("--robust-methods", default=ROBUST_METHODS, help="methods of the jpeg:90 run ('' to skip)")
    ap.add_argument("--goal", default="untargeted")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--table3-images", type=int, default=8)
    ap.add_argument("--method-images", default=SLOW_METHOD_IMAGES,
                    help="per-method image caps for the slow methods (METHOD=N,...; '' for none)")
    ap.add_argument("--robust-images", type=int, default=8, help="images per model of the jpeg:90 run")
    ap.add_argument("--table3-methods", default="levels,jnd,bim", help="'' for no Table 3")
    ap.add_argument("--figure-methods", default="levels,jnd,bim", help="'' for no Figure 4")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on the shared 2-core machine)")
    ap.add_argument("--out", default=None, help="cache and output folder (default benchmarks/results/bench)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 images, 4 methods, budget 30")
    ap.add_argument("--fresh", action="store_true", help="delete the cache first")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the bench section of docs/benchmarks.md")
    ap.add_argument("--note", default="", help="a paragraph put under the header (machine load, what is missing)")
    args = ap.parse_args(argv)

    from jndkit.bench import (
        BenchConfig,
        parse_method_images,
        report_markdown,
        resolve_methods,
        run_benchmark,
    )

    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / ("quick" if args.quick else "bench")
    if args.fresh and out.exists():
        shutil.rmtree(out)
    models = [m for m in args.models.split(",") if m]
    n = 4 if args.quick else args.images
    methods = resolve_methods("levels,jnd,bim,fgsm" if args.quick else args.methods)
    budget = 30 if args.quick else None
    caps = parse_method_images(args.method_images)
    configs = [("untargeted", BenchConfig(
        models=models, methods=methods, goal=args.goal, n=n, batch_size=args.batch_size, max_iter=budget,
        method_images=caps,
        threshold_goals=("margin:0.25", "margin:0.6") if args.table3_methods else (),
        threshold_methods=[m for m in resolve_methods(args.table3_methods) if m in methods] if args.table3_methods
        else None,
        threshold_n=2 if args.quick else args.table3_images,
        figure_methods=[m for m in resolve_methods(args.figure_methods) if m in methods] if args.figure_methods else [],
        figure_images=1 if args.quick else 2,
        figure_iters=20 if args.quick else 100))]
    if args.robust_methods:
        configs.append(("jpeg:90", BenchConfig(
            models=models, methods=resolve_methods(args.robust_methods), goal=args.goal,
            n=min(n, args.robust_images), robust="jpeg:90", method_images=caps,
            batch_size=args.batch_size, max_iter=budget, threshold_goals=(), figure_images=0)))
    shown = list(argv if argv is not None else sys.argv[1:])
    if "--note" in shown:  # the note is printed on its own
        i = shown.index("--note")
        shown[i : i + 2] = ["--note", "..."]
    cmd = "python benchmarks/bench_protect.py " + shlex.join(shown)
    blocks = []
    t0 = time.perf_counter()
    for label, config in configs:
        def progress(done: int, total: int, what: str, label: str = label) -> None:
            print(f"[{label}] {done}/{total} {what}", file=sys.stderr, flush=True)

        sub = out  # one cache for both: rows are keyed by robust
        result = run_benchmark(config, sub, progress=progress)
        fig = None
        if result.figure is not None:
            keep = sub / "confidence.png"
            fig = f"../{keep.relative_to(ROOT)}" if keep.is_relative_to(ROOT) else str(keep)
        blocks.append(f"## {config.goal}, robust {config.robust}\n\n"
                      + report_markdown(result, figure=fig, command=cmd.strip())
                      .replace("### ", "#### "))
        (sub / f"tables_{re.sub(r'[^a-z0-9]+', '-', label)}.md").write_text(blocks[-1])
        # both configurations share the cache folder, and run_benchmark writes results.csv and
        # thresholds.csv there: keep each configuration's copy under its own name
        slug = re.sub(r'[^a-z0-9]+', '-', label)
        for name in ("results", "thresholds"):
            if (sub / f"{name}.csv").exists():
                shutil.copyfile(sub / f"{name}.csv", sub / f"{name}_{slug}.csv")
    text = (f"<!-- {TAG}:start -->\n_Generated by `{cmd.strip()}` in {time.perf_counter() - t0:.0f} s "
            f"(cached rows are reused; see benchmarks/README.md for the method)._\n\n"
            + (f"{args.note}\n\n" if args.note else "") + "\n\n".join(blocks)
            + f"\n<!-- {TAG}:end -->")
    print(text)
    if args.write_docs:
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        doc = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
        pat = re.compile(rf"<!-- {re.escape(TAG)}:start -->.*?<!-- {re.escape(TAG)}:end -->", re.DOTALL)
        doc = pat.sub(lambda _: text, doc) if pat.search(doc) else doc.rstrip() + "\n\n" + text + "\n"
        DOCS.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
