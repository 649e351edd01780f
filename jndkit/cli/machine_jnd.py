"""``jndkit machine-jnd``: train, apply and evaluate a machine JND (seed 003) from the command line.

Each subcommand checks its options, makes one library call and prints the outcome:

* ``train`` -> :func:`jndkit.machine_jnd.runs.train_and_save` (train, save the net, evaluate the held-out
  share) and NET.json from :func:`~jndkit.machine_jnd.runs.training_record`;
* ``apply`` -> :func:`jndkit.machine_jnd.apply.apply_to_files` (the task ``machine-jnd`` of the one
  pipeline: per photo the per-image optimiser or a trained net, the PNG written, read back and
  evaluated) and report.json;
* ``eval``  -> :func:`jndkit.machine_jnd.runs.evaluate_parts`, with the settings NET.json records
  (:func:`~jndkit.machine_jnd.runs.inherit_settings`).

Nothing is ever overwritten: every output is checked before the work starts and written atomically.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import typer

from ..errors import ImageError, JndkitError
from ..jsonio import dumps, write_json_atomic
from ..machine_jnd.apply import ALL_CLASSIFIERS
from .common import err, fail, out, progress_bar, quiet, reflow, time_remaining_column, warn

ALL_MODELS = ",".join(ALL_CLASSIFIERS)

machine_jnd_app = typer.Typer(
    help="Machine JND (seed 003): the largest change of a photo that classifiers tolerate without changing "
    "their answer, measured on the saved 8-bit image.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# ---------------------------------------------------------------- helpers (options and printing only)


def _write_json(path: Path, obj: Any) -> None:
    try:
        write_json_atomic(obj, path, overwrite=False)
    except JndkitError as e:
        fail(str(e))


def _refuse_existing(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            fail(f"{p}: already exists; not overwritten (choose another output or remove it)")


def _model_names(models: str) -> list[str]:
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        fail("--models needs at least one classifier name (see `jndkit models`)")
    return names


def _load_victims(names: list[str]) -> list[torch.nn.Module]:
    from ..victims import load_victim

    try:
        return [load_victim(n) for n in names]
    except JndkitError as e:
        fail(str(e))


def _bad_file(e: ImageError) -> None:
    err.print(f"[red]✗[/red] {e}", highlight=False)


def _materialise(data: str, size: int, seed: int, crops_per_photo: int) -> tuple[Any, int]:
    from ..machine_jnd.runs import materialise

    try:
        return materialise(data, size, seed, crops_per_photo, on_bad=_bad_file)
    except JndkitError as e:
        fail(str(e))


def _fmt_eval(ev: dict[str, Any]) -> str:
    per = ", ".join(f"{k} {v:.1f}" for k, v in ev["rca"]["per_classifier"].items())
    psnr = ev["psnr_mean"]
    homo = ev["homogeneity"]
    return (f"RCA {ev['rca']['mean']:.1f}% ({per}), PSNR "
            + (f"{psnr:.2f} dB" if psnr is not None and math.isfinite(psnr) else "inf (unchanged)")
            + f", mean |e| {255 * ev['mean_abs_e']:.1f} levels, white-noise RCA {ev['white_noise']['rca']:.1f}%, "
            + f"homogeneity {'pass' if homo['pass'] else 'FAIL'} (min {homo['min_scaled']:.1f}%)")


# ---------------------------------------------------------------- train


_TRAIN_HELP = """Train a DMV-JND-NET; write the net and NET.json (settings, per-step history, held-out evaluation).

Every image is a square of --size pixels (folders: resized and centre-cropped). With --holdout F a
seeded share F of the images is kept out of training and the saved net is evaluated on it (the
paper's testing RCA). A bad file in a --data folder gets one line, is left out, and the exit code is 1.
"""


@machine_jnd_app.command(help=reflow(_TRAIN_HELP))
def train(
    output: Path = typer.Option(..., "-o", "--output", help="The net file to write (NET.pt); NET.json goes beside it."),
    data: str = typer.Option("shipped", "--data", help="shipped | FOLDER | cifar10:ROOT | cifar10-test:ROOT"),
    models: str = typer.Option(ALL_MODELS, "--models", help="Comma-separated classifiers (see `jndkit models`)."),
    config: str = typer.Option("cpu", "--config", help="cpu (batch 8, lr 3e-3, 40 epochs) | paper (batch 50, "
                               "lr 1e-5, 200 epochs; section V-A, meant for a GPU)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs (default: the config's)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size (default: the config's)."),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (default: the config's)."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many optimiser steps."),
    holdout: float = typer.Option(0.25, "--holdout", help="Share of images held out for evaluation (0: none)."),
    size: int | None = typer.Option(None, "--size", help="Square image side (default 224; 32 for CIFAR-10)."),
    crops_per_photo: int = typer.Option(4, "--crops-per-photo", help="Crops per shipped photo (--data shipped)."),
    seed: int = typer.Option(0, "--seed", help="Seed of crops, hold-out split, net init and flips."),
    as_json: bool = typer.Option(False, "--json", help="Print NET.json on stdout."),
) -> None:
    """See ``_TRAIN_HELP``."""
    from ..machine_jnd import CPU_CONFIG, PAPER_CONFIG
    from ..machine_jnd.runs import default_size, train_and_save, training_record

    record_path = output.with_suffix(".json")
    if record_path == output:
        fail(f"{output}: the net file needs a suffix other than .json (NET.json is written beside it)")
    _refuse_existing(output, record_path)
    if config not in ("cpu", "paper"):
        fail(f"--config must be cpu or paper, got {config!r}")
    if not 0 <= holdout < 1:
        fail(f"--holdout must be in [0,1), got {holdout}")
    if max_steps is not None and max_steps < 1:
        fail(f"--max-steps must be >= 1, got {max_steps}")
    base = CPU_CONFIG if config == "cpu" else PAPER_CONFIG
    cfg = replace(base, epochs=base.epochs if epochs is None else epochs,
                  batch_size=base.batch_size if batch_size is None else batch_size,
                  lr=base.lr if lr is None else lr, seed=seed)
    names = _model_names(models)
    victims = _load_victims(names)
    side = size or default_size(data)
    images, bad = _materialise(data, side, seed, crops_per_photo)
    with progress_bar(quiet(as_json), time_remaining_column()) as bar:
        task = bar.add_task("training", total=None)
        held_task: list[Any] = []

        def on_step(step: int, total: int, rec: dict[str, float]) -> None:
            bar.update(task, total=total, completed=step, description=f"training  loss {rec['loss']:.3f}  "
                       f"RCA {rec['rca']:.0f}%  PSNR {rec['psnr']:.1f} dB")

        def on_held_out(done: int, total: int) -> None:
            if not held_task:
                held_task.append(bar.add_task("held-out evaluation", total=None))
            bar.update(held_task[0], total=total, completed=done)

        try:
            run = train_and_save(victims, images, output, config=cfg, holdout=holdout, seed=seed,
                                 max_steps=max_steps, progress=on_step, held_out_progress=on_held_out)
        except JndkitError as e:
            fail(str(e))
    record = training_record(run, net_path=output, data=data, size=side, crops_per_photo=crops_per_photo, seed=seed,
                             holdout=holdout, models=names, config_name=config, config=cfg, max_steps=max_steps,
                             bad_files=bad)
    _write_json(record_path, record)
    if as_json:
        out.print_json(dumps(record))
    last = run.history[-1] if run.history else {}
    line = (f"trained {len(run.history)} steps on {len(run.train_set)} images in {run.train_seconds:.1f}s"
            + (f" (last batch: RCA {last['rca']:.1f}%, PSNR {last['psnr']:.2f} dB)" if last else ""))
    if run.held_out is not None and run.held_out_eval is not None:
        line += f"; held out ({len(run.held_out)} images): {_fmt_eval(run.held_out_eval)}"
    err.print(line + f"; net: {output}; record: {record_path}", highlight=False)
    raise typer.Exit(1 if bad else 0)


# ---------------------------------------------------------------- apply


_APPLY_HELP = """Write the machine JND of each photo: OUT/<stem>.png, <stem>_jnd.png, <stem>_jnd.npy and
OUT/report.json.

<stem>.png is the distorted photo x+e as saved (8-bit PNG). <stem>_jnd.npy is the raw change e
(float32 [3,H,W], [0,1] units) = that PNG as read back minus the input. <stem>_jnd.png shows |e|:
grey = max over R,G,B of |e|, black = unchanged, white = the photo's largest |e| (its value in 8-bit
levels is jnd_png_white_levels in report.json). report.json holds evaluate_jnd's numbers (RCA per
classifier, PSNR, white-noise RCA, homogeneity) computed from the PNG read back from disk.

Full resolution by default: the perturbation lives at the photo's own size and the classifiers
resize inside. The per-image optimiser costs about 0.2 s per step and classifier up to ~0.3
megapixels and grows with the pixel count beyond (~0.9 s at 2 MP, one CPU core), so 100 steps x 4
classifiers on a 12 MP photo take about half an hour; --max-side 1024 (say) works on a smaller copy.
"""


@machine_jnd_app.command(help=reflow(_APPLY_HELP))
def apply(
    paths: list[Path] = typer.Argument(..., help="Photos or folders of photos."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (created if missing)."),
    net_path: Path | None = typer.Option(None, "--net", help="A net written by `machine-jnd train`."),
    per_image: bool = typer.Option(False, "--per-image", help="Optimise e for each photo (no net; the default "
                                   "when --net is not given)."),
    models: str | None = typer.Option(None, "--models", help="Comma-separated classifiers (default: the net's; "
                                      f"with --per-image {ALL_MODELS})."),
    steps: int = typer.Option(100, "--steps", help="Per-image optimiser steps."),
    lr: float = typer.Option(0.05, "--lr", help="Per-image optimiser learning rate (Adam)."),
    max_side: int | None = typer.Option(None, "--max-side", help="Work on a copy downscaled so its long side is "
                                        "at most N pixels (outputs are at that size). Default: full resolution."),
    seed: int = typer.Option(0, "--seed", help="Seed of the optimiser's start and of the white-noise check."),
    resume: bool = typer.Option(False, "--resume", help="Skip photos whose output already exists."),
    as_json: bool = typer.Option(False, "--json", help="Print report.json on stdout."),
) -> None:
    """See ``_APPLY_HELP``."""
    from ..machine_jnd import load_jnd_net
    from ..machine_jnd.apply import MachineJndTask, apply_to_files
    from ..pipeline import prepare_run, report_dict

    if net_path is not None and per_image:
        fail("choose one of --net NET.pt and --per-image")
    if steps < 1:
        fail(f"--steps must be >= 1, got {steps}")
    if max_side is not None and max_side < 8:
        fail(f"--max-side must be >= 8, got {max_side}")
    report_path = output / "report.json"
    if output.exists() and not output.is_dir():
        fail(f"{output}: exists and is not a folder")
    try:
        prepare_run(list(paths), output)  # no image, or a folder that cannot be written: said before any model loads
    except JndkitError as e:
        fail(str(e))
    net = None
    if net_path is not None:
        try:
            net = load_jnd_net(net_path)
        except JndkitError as e:
            fail(str(e))
        names = _model_names(models) if models else list(net.victim_names)
        if not names:
            fail(f"{net_path}: the net names no classifiers; give --models")
        if models and names != list(net.victim_names):
            warn(f"{net_path} was trained with {','.join(net.victim_names)}; using {','.join(names)}")
    else:
        names = _model_names(models or ALL_MODELS)
    victims = _load_victims(names)

    records: list[Any] = []
    with progress_bar(quiet(as_json), time_remaining_column()) as bar:
        files_task = bar.add_task("photos", total=None)
        step_task = bar.add_task("steps", total=None, visible=net is None)

        def on_start(src: Path, i: int, n: int) -> None:
            bar.update(files_task, total=n, completed=i, description=src.name)
            bar.reset(step_task)

        try:
            for rec in apply_to_files(list(paths), output, victims, names, net=net, net_path=net_path, steps=steps,
                                      lr=lr, seed=seed, max_side=max_side, resume=resume, on_start=on_start,
                                      progress=lambda s, n: bar.update(step_task, total=n, completed=s)):
                if rec.status == "error":
                    err.print(f"[red]✗[/red] {rec.error}", highlight=False)
                elif rec.status == "skipped":
                    err.print(f"[dim]- {Path(rec.input).name}: skipped (output exists)[/dim]", highlight=False)
                elif not as_json and rec.evaluation is not None:
                    err.print(f"[green]✓[/green] {Path(rec.input).name}: {_fmt_eval(rec.evaluation)}  "
                              f"{rec.seconds:.1f}s", highlight=False)
                records.append(rec)
        except JndkitError as e:
            fail(str(e))
        bar.update(files_task, completed=len(records))

    report = report_dict(MachineJndTask(victims, names, net, net_path, steps, lr, seed, max_side), records)
    if as_json:
        out.print_json(dumps(report))
    summary = report["summary"]
    line = f"{summary['done']}/{summary['images']} done" + (f", {summary['errors']} errors" if summary["errors"]
                                                            else "")
    if summary["done"]:
        line += f"; mean RCA {summary['rca_mean']:.1f}%"
        if summary["psnr_mean"] is not None:
            line += f", mean PSNR {summary['psnr_mean']:.2f} dB"
    err.print(line + f"; report: {report_path}", highlight=False)
    raise typer.Exit(1 if summary["errors"] else 0)


# ---------------------------------------------------------------- eval


_EVAL_HELP = """Evaluate a machine JND on a data set: RCA per classifier, PSNR, white-noise RCA, homogeneity.

With --net, NET.json beside the net (if present) supplies the data, size, seed and held-out split of
training, so the held-out numbers are the paper's testing RCA. All numbers are on the saved 8-bit images.
"""


@machine_jnd_app.command("eval", help=reflow(_EVAL_HELP))
def eval_cmd(
    output: Path = typer.Option(..., "-o", "--output", help="The results file to write (RESULTS.json)."),
    net_path: Path | None = typer.Option(None, "--net", help="A net written by `machine-jnd train` "
                                         "(without it: the per-image optimiser on every image)."),
    data: str | None = typer.Option(None, "--data", help="shipped | FOLDER | cifar10:ROOT | cifar10-test:ROOT "
                                    "(default: the net's training data from NET.json, else shipped)."),
    models: str | None = typer.Option(None, "--models", help=f"Comma-separated classifiers (default: the net's; "
                                      f"without a net {ALL_MODELS})."),
    holdout: float | None = typer.Option(None, "--holdout", help="Evaluate the held-out and training splits "
                                         "separately (default: NET.json's split for its own data, else 0 = all)."),
    size: int | None = typer.Option(None, "--size", help="Square image side (default: NET.json's, else 224; "
                                    "32 for CIFAR-10)."),
    crops_per_photo: int | None = typer.Option(None, "--crops-per-photo", help="Crops per shipped photo "
                                               "(default: NET.json's, else 4)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of crops, split and white noise "
                                    "(default: NET.json's, else 0)."),
    steps: int = typer.Option(100, "--steps", help="Per-image optimiser steps (without --net)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per batch."),
    as_json: bool = typer.Option(False, "--json", help="Print the results on stdout."),
) -> None:
    """See ``_EVAL_HELP``."""
    from ..machine_jnd import load_jnd_net
    from ..machine_jnd.runs import evaluate_parts, evaluation_report, inherit_settings, read_training_record

    _refuse_existing(output)
    if batch_size < 1 or steps < 1:
        fail(f"--batch-size and --steps must be >= 1, got {batch_size} and {steps}")
    net = None
    meta: dict[str, Any] = {}
    if net_path is not None:
        try:
            net = load_jnd_net(net_path)
        except JndkitError as e:
            fail(str(e))
        try:
            meta = read_training_record(net_path)
        except JndkitError as e:
            warn(f"{e}; using the defaults")
    names = _model_names(models) if models else (list(net.victim_names) if net is not None and net.victim_names
                                                 else _model_names(ALL_MODELS))
    settings = inherit_settings(meta, data=data, size=size, crops_per_photo=crops_per_photo, seed=seed,
                                holdout=holdout)
    if not 0 <= settings.holdout < 1:
        fail(f"--holdout must be in [0,1), got {settings.holdout}")
    victims = _load_victims(names)
    images, bad = _materialise(settings.data, settings.size, settings.seed, settings.crops_per_photo)
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    with progress_bar(quiet(as_json), time_remaining_column()) as bar:
        tasks: dict[str, Any] = {}

        def on_progress(part: str, done: int, total: int) -> None:
            if part not in tasks:
                tasks[part] = bar.add_task(part.replace("_", "-"), total=None)
            bar.update(tasks[part], total=total, completed=done)

        try:
            for part, ev in evaluate_parts(victims, images, holdout=settings.holdout, seed=settings.seed, net=net,
                                           steps=steps, batch_size=batch_size, progress=on_progress):
                results[part] = ev
                if not as_json:
                    err.print(f"{part.replace('_', '-')} ({ev['images']} images): {_fmt_eval(ev)}", highlight=False)
        except JndkitError as e:
            fail(str(e))
    report = evaluation_report(results, settings, net_path=net_path, models=names, steps=steps, bad_files=bad,
                               seconds=time.perf_counter() - t0)
    _write_json(output, report)
    if as_json:
        out.print_json(dumps(report))
    err.print(f"results: {output}", highlight=False)
    raise typer.Exit(1 if bad else 0)
