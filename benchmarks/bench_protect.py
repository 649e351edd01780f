"""Protection benchmark: success after 8-bit save, PSNR/SSIM, iterations and time per image.

    python benchmarks/bench_protect.py --models mobilenet_v2 --methods levels,jnd,bim --n 32
    python benchmarks/bench_protect.py --write-docs        # the full default run, into docs/benchmarks.md

Each (model, method, goal) result is cached as CSV under benchmarks/results/ and reused on a rerun
(delete the file, or pass --fresh, to measure again).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"

DEFAULT_METHODS = "levels,jnd,jnd:paper-imagenet,jnd-baseline,fgsm,fgv,bim,pgd,mifgsm,difgsm"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2")
    ap.add_argument("--methods", default=DEFAULT_METHODS, help="comma list of METHOD or METHOD:PRESET")
    ap.add_argument("--goal", default="untargeted")
    ap.add_argument("--robust", default="none")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--fresh", action="store_true", help="ignore cached CSVs")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the protect section of docs/benchmarks.md")
    ap.add_argument("--tag", default="protect", help="section name in docs/benchmarks.md")
    args = ap.parse_args(argv)

    from jndkit.bench import evaluation_set, machine_info, read_csv, run_method, summary_table, write_csv
    from jndkit.victims import load_victim

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for model in args.models.split(","):
        victim = load_victim(model)
        x0, labels, names = evaluation_set(victim, args.n)
        for spec in args.methods.split(","):
            method, _, preset = spec.partition(":")
            tag = f"{model}_{method}_{preset or 'default'}_{args.goal}_{args.robust}_n{args.n}".replace(":", "-")
            path = RESULTS / f"{tag}.csv"
            if path.exists() and not args.fresh:
                part = read_csv(path)
            else:
                t0 = time.perf_counter()
                part = run_method(victim, x0, names, method, preset or None, goal=args.goal, robust=args.robust,
                                  batch_size=args.batch_size)
                write_csv(part, path)
                print(f"{tag}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            rows.extend(part)
    table = summary_table(rows)
    info = machine_info()
    cmd = "python benchmarks/bench_protect.py " + " ".join(argv if argv is not None else sys.argv[1:])
    block = (f"<!-- {args.tag}:start -->\n"
             f"Command: `{cmd.strip()}`  \n"
             f"Machine: {info['cpu']}, {info['cores']} cores, torch threads {info['threads']}; "
             f"jndkit {info['jndkit']}, torch {info['torch']}, torchvision {info['torchvision']}, "
             f"Python {info['python']}.  \n"
             f"Set: {args.n} crops of the package-shipped photos per model, label = the model's own prediction "
             f"(confidence ≥ 0.5); goal {args.goal}; success judged on the PNG-decoded image at batch 1"
             f"{'' if args.robust == 'none' else f', after {args.robust} re-encoding'}. Quality columns average the "
             f"successful images.\n\n{table}\n<!-- {args.tag}:end -->")
    print(block)
    if args.write_docs:
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
        pat = re.compile(rf"<!-- {re.escape(args.tag)}:start -->.*?<!-- {re.escape(args.tag)}:end -->", re.S)
        if pat.search(text):
            text = pat.sub(lambda _: block, text)
        else:
            text = text.rstrip() + f"\n\n## {args.tag}\n\n" + block + "\n"
        DOCS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
