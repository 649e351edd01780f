"""``jndkit bench``: options -> :class:`~jndkit.bench.BenchConfig` -> :func:`~jndkit.bench.run_benchmark` ->
the summary table (or ``--json``), warnings for what was not measured."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import JndkitError
from .common import err, fail, progress_bar, quiet, time_remaining_column, warn
from .common import out as stdout  # `out` is the --out folder here

QUICK_METHODS = "levels,jnd,bim,fgsm"
QUICK_IMAGES = 4
QUICK_MAX_ITER = 30


def bench(
    models: str = typer.Option("mobilenet_v2,efficientnet_lite0", "--models",
                               help="Comma list of victims (see `jndkit models`)."),
    methods: str | None = typer.Option(
        None, "--methods",
        help="all | jndkit | seeds | baselines | comma list of METHOD[:PRESET] (default: all; --quick: "
             f"{QUICK_METHODS})."),
    goal: str = typer.Option("untargeted", "--goal", help="untargeted | least-likely | targeted:CLASS | top5 | ..."),
    images: int | None = typer.Option(None, "--images",
                                      help=f"Images per model (default 32; --quick: {QUICK_IMAGES})."),
    data: Path | None = typer.Option(None, "--data", help="A folder of images instead of the shipped photos."),
    robust: str = typer.Option("none", "--robust", help="none | jpeg:Q | webp:Q: success must survive re-encoding."),
    out: Path = typer.Option(Path("bench-results"), "--out", help="Output folder (CSV, tables.md, figure, caches)."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run (~2 min): few images and methods, small budgets."),
    method_images: str = typer.Option("", "--method-images",
                                      help="Per-method image caps for slow methods, e.g. mnd=8,hvs=8."),
    jobs: int = typer.Option(1, "--jobs", help="Worker processes for the attack runs (each with one torch thread)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per engine call."),
    max_iter: int | None = typer.Option(None, "--max-iter",
                                        help=f"Iteration budget for every method (default: each method's; "
                                             f"--quick: {QUICK_MAX_ITER})."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    kappa: float = typer.Option(0.05, "--kappa", help="Success margin in logits."),
    table3: bool = typer.Option(True, "--table3/--no-table3",
                                help="Seed 000 Table 3: runs to 25 % and 60 % wrong-class confidence."),
    table3_images: int | None = typer.Option(None, "--table3-images", help="Images for Table 3 (default: all)."),
    table3_methods: str | None = typer.Option(None, "--table3-methods",
                                              help="Methods for Table 3 (default: the iterative ones)."),
    figure: bool = typer.Option(True, "--figure/--no-figure", help="Seed 000 Figure 4 (confidence.png)."),
    transfer: bool = typer.Option(True, "--transfer/--no-transfer", help="Transfer matrix over --models."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON on stdout instead of the table."),
) -> None:
    """Benchmark attack methods on a deterministic set: success after save, quality, distances, time.

    Writes results.csv, thresholds.csv, transfer.csv, confidence.png and tables.md to OUT; a rerun
    reuses every finished image.
    """
    import dataclasses

    from ..bench import BenchConfig, parse_method_images, resolve_methods, run_benchmark, summary_table

    try:
        chosen = resolve_methods(methods or (QUICK_METHODS if quick else "all"))
        config = BenchConfig(
            models=[m.strip() for m in models.split(",") if m.strip()], methods=chosen, goal=goal,
            n=images if images is not None else (QUICK_IMAGES if quick else 32), robust=robust,
            data=str(data) if data else None, kappa=kappa, seed=seed, batch_size=batch_size,
            max_iter=max_iter if max_iter is not None else (QUICK_MAX_ITER if quick else None),
            threshold_goals=(("margin:0.25", "margin:0.6") if table3 else ()),
            threshold_methods=resolve_methods(table3_methods) if table3_methods else None,
            threshold_n=table3_images if table3_images is not None else (2 if quick else None),
            figure_images=(1 if quick else 2) if figure else 0, figure_iters=20 if quick else 100,
            transfer=transfer, jobs=jobs, method_images=parse_method_images(method_images))
        config.validate()
    except JndkitError as e:
        fail(str(e))
    if data is not None and not data.exists():
        fail(f"{data}: no such folder")
    with progress_bar(quiet(as_json), time_remaining_column()) as bar:
        task = bar.add_task("images", total=None)

        def on_progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        try:
            result = run_benchmark(config, out, progress=on_progress)
        except JndkitError as e:
            fail(str(e), 1)
    if as_json:
        stdout.print_json(json.dumps({"rows": [dataclasses.asdict(r) for r in result.rows],
                                       "threshold_rows": [dataclasses.asdict(r) for r in result.threshold_rows],
                                       "errors": result.errors}, default=str))
    else:
        stdout.print(summary_table(result.rows), highlight=False)
    for problem in result.errors:
        warn(f"not measured: {problem}")
    err.print(f"{len(result.rows)} rows in {result.seconds:.0f} s; tables: {Path(out) / 'tables.md'}, "
              f"rows: {Path(out) / 'results.csv'}" + (f", figure: {result.figure}" if result.figure else ""),
              highlight=False)
    raise typer.Exit(1 if result.errors else 0)
