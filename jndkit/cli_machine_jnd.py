"""``jndkit machine-jnd``: train, apply and evaluate a machine JND (seed 003) from the command line.

A thin shell over :mod:`jndkit.machine_jnd`; each subcommand is one library call plus file I/O:

* ``train`` -> :func:`~jndkit.machine_jnd.train_jnd_net`, :func:`~jndkit.machine_jnd.save_jnd_net`, and
  :func:`~jndkit.machine_jnd.evaluate_jnd_net` on the held-out split;
* ``apply`` -> :func:`~jndkit.machine_jnd.optimise_jnd_per_image` or :func:`~jndkit.machine_jnd.apply_jnd_net`
  per photo, then :func:`~jndkit.machine_jnd.evaluate_jnd` on the PNG as read back from disk;
* ``eval``  -> :func:`~jndkit.machine_jnd.evaluate_jnd_net` (or the per-image optimiser and
  :func:`~jndkit.machine_jnd.evaluate_jnd` when no net is given).

Nothing is ever overwritten: every output is checked before the work starts and written atomically.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, Optional

import numpy as np
import torch
import torch.nn.functional as F
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import Dataset

from .errors import ImageError, JndkitError, OutputError

ALL_MODELS = "mobilenet_v2,efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"
REPORT_FORMAT = "jndkit-machine-jnd-report/1"

machine_jnd_app = typer.Typer(
    help="Machine JND (seed 003): the largest change of a photo that classifiers tolerate without changing "
    "their answer, measured on the saved 8-bit image.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True, soft_wrap=True)  # one line per message, never wrapped
out = Console(soft_wrap=True)


# ---------------------------------------------------------------- helpers (I/O and reporting only)


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _reflow(doc: str) -> str:
    """A docstring as ``--help`` text: the lines of each paragraph joined (rich re-wraps them)."""
    paras = [" ".join(ln.strip() for ln in p.strip().splitlines()) for p in doc.strip().split("\n\n")]
    return "\n\n".join(paras)


def _jsonable(obj: Any) -> Any:
    """Strict JSON: non-finite floats (PSNR of an unchanged image is inf) become ``null``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return _jsonable(obj.item())
    return obj


def _write_new(path: Path, data: bytes) -> Path:
    """Write ``data`` atomically to ``path`` (temporary file + link); never replaces an existing file."""
    if path.exists():
        raise OutputError(path, "already exists; not overwritten (choose another output or remove it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(path.parent, f"cannot be written ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise OutputError(path, "already exists; not overwritten") from None
        except OSError:  # file systems without hard links
            if path.exists():
                raise OutputError(path, "already exists; not overwritten") from None
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write_json(path: Path, obj: Any) -> Path:
    return _write_new(path, (json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n").encode())


def _refuse_existing(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            _fail(f"{p}: already exists; not overwritten (choose another output or remove it)")


def _model_names(models: str) -> list[str]:
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        _fail("--models needs at least one classifier name (see `jndkit models`)")
    return names


def _load_victims(names: list[str]) -> list[torch.nn.Module]:
    from .victims import load_victim

    try:
        return [load_victim(n) for n in names]
    except JndkitError as e:
        _fail(str(e))


@contextmanager
def _bar(quiet: bool) -> Iterator[Progress]:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err, disable=quiet, transient=True) as bar:
        yield bar


def _quiet(as_json: bool) -> bool:
    return as_json or not sys.stderr.isatty()


def _default_size(data: str) -> int:
    return 32 if data.startswith(("cifar10:", "cifar10-test:")) else 224


def _materialise(data: str, size: int, seed: int, crops_per_photo: int) -> tuple[Any, int]:
    """The ``--data`` images as an in-memory ``ImageSet``; a bad file in a folder gets one line and is left out.

    Returns ``(imageset, number_of_bad_files)``.
    """
    from .machine_jnd import ImageSet, load_images

    try:
        ds: Dataset[torch.Tensor] = load_images(data, size=size, seed=seed, crops_per_photo=crops_per_photo)
    except JndkitError as e:
        _fail(str(e))
    if isinstance(ds, ImageSet):
        return ds, 0
    imgs, names, bad = [], [], 0
    for i, name in enumerate(getattr(ds, "names", [str(i) for i in range(len(ds))])):  # type: ignore[arg-type]
        try:
            imgs.append(ds[i])
            names.append(name)
        except ImageError as e:
            err.print(f"[red]✗[/red] {e}", highlight=False)
            bad += 1
    if not imgs:
        _fail(f"{data}: no readable images")
    return ImageSet(torch.stack(imgs), names), bad


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


@machine_jnd_app.command(help=_reflow(_TRAIN_HELP))
def train(
    output: Path = typer.Option(..., "-o", "--output", help="The net file to write (NET.pt); NET.json goes beside it."),
    data: str = typer.Option("shipped", "--data", help="shipped | FOLDER | cifar10:ROOT | cifar10-test:ROOT"),
    models: str = typer.Option(ALL_MODELS, "--models", help="Comma-separated classifiers (see `jndkit models`)."),
    config: str = typer.Option("cpu", "--config", help="cpu (batch 8, lr 3e-3, 40 epochs) | paper (batch 50, "
                               "lr 1e-5, 200 epochs; section V-A, meant for a GPU)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (default: the config's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size (default: the config's)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default: the config's)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimiser steps."),
    holdout: float = typer.Option(0.25, "--holdout", help="Share of images held out for evaluation (0: none)."),
    size: Optional[int] = typer.Option(None, "--size", help="Square image side (default 224; 32 for CIFAR-10)."),
    crops_per_photo: int = typer.Option(4, "--crops-per-photo", help="Crops per shipped photo (--data shipped)."),
    seed: int = typer.Option(0, "--seed", help="Seed of crops, hold-out split, net init and flips."),
    as_json: bool = typer.Option(False, "--json", help="Print NET.json on stdout."),
) -> None:
    """See ``_TRAIN_HELP``."""
    from .machine_jnd import CPU_CONFIG, PAPER_CONFIG, evaluate_jnd_net, save_jnd_net, split_holdout, train_jnd_net
    from .machine_jnd.train import config_dict

    record_path = output.with_suffix(".json")
    if record_path == output:
        _fail(f"{output}: the net file needs a suffix other than .json (NET.json is written beside it)")
    _refuse_existing(output, record_path)
    if config not in ("cpu", "paper"):
        _fail(f"--config must be cpu or paper, got {config!r}")
    if not 0 <= holdout < 1:
        _fail(f"--holdout must be in [0,1), got {holdout}")
    if max_steps is not None and max_steps < 1:
        _fail(f"--max-steps must be >= 1, got {max_steps}")
    base = CPU_CONFIG if config == "cpu" else PAPER_CONFIG
    overrides = dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    cfg = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    names = _model_names(models)
    victims = _load_victims(names)
    side = size or _default_size(data)
    images, bad = _materialise(data, side, seed, crops_per_photo)
    try:
        train_set, held = split_holdout(images, holdout, seed) if holdout > 0 else (images, None)
    except JndkitError as e:
        _fail(str(e))
    t0 = time.perf_counter()
    with _bar(_quiet(as_json)) as bar:
        task = bar.add_task("training", total=None)

        def on_step(step: int, total: int, rec: dict[str, float]) -> None:
            bar.update(task, total=total, completed=step,
                       description=f"training  loss {rec['loss']:.3f}  RCA {rec['rca']:.0f}%  PSNR {rec['psnr']:.1f} dB")

        try:
            net, history = train_jnd_net(victims, train_set, progress=on_step, config=cfg, max_steps=max_steps)
            train_seconds = time.perf_counter() - t0
            save_jnd_net(net, output)
            held_eval = None
            if held is not None:
                ev_task = bar.add_task("held-out evaluation", total=None)
                held_eval = evaluate_jnd_net(net, victims, held, batch_size=cfg.batch_size, seed=seed,
                                             progress=lambda i, n, _: bar.update(ev_task, total=n, completed=i))
        except JndkitError as e:
            _fail(str(e))
    record = {
        "format": REPORT_FORMAT,
        "command": "machine-jnd train",
        "net": str(output),
        "data": data, "size": side, "crops_per_photo": crops_per_photo, "seed": seed, "holdout": holdout,
        "models": names,
        "config_name": config, "config": config_dict(cfg), "max_steps": max_steps,
        "images": {"train": list(train_set.names), "held_out": list(held.names) if held is not None else []},
        "bad_files": bad,
        "steps": len(history),
        "train_seconds": train_seconds,
        "history": history,
        "held_out": held_eval,
    }
    try:
        _write_json(record_path, record)
    except JndkitError as e:
        _fail(str(e))
    if as_json:
        out.print_json(json.dumps(_jsonable(record)))
    last = history[-1] if history else {}
    line = (f"trained {len(history)} steps on {len(train_set)} images in {train_seconds:.1f}s"
            + (f" (last batch: RCA {last['rca']:.1f}%, PSNR {last['psnr']:.2f} dB)" if last else ""))
    if held_eval is not None:
        line += f"; held out ({len(held)} images): {_fmt_eval(held_eval)}"  # type: ignore[arg-type]
    err.print(line + f"; net: {output}; record: {record_path}", highlight=False)
    raise typer.Exit(1 if bad else 0)


# ---------------------------------------------------------------- apply


def _downscale(x: torch.Tensor, alpha: np.ndarray | None, max_side: int | None) -> tuple[torch.Tensor, np.ndarray | None]:
    """``x`` ``[1,3,H,W]`` resized (antialiased, 8-bit) so its long side is at most ``max_side``."""
    from .images import quantize

    h, w = x.shape[-2:]
    if max_side is None or max(h, w) <= max_side:
        return x, alpha
    s = max_side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    small = quantize(F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False))
    if alpha is not None:
        a = torch.from_numpy(alpha.astype(np.float32))[None, None]
        a = F.interpolate(a, size=size, mode="bilinear", antialias=True, align_corners=False)
        alpha = a[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    return small, alpha


def _jnd_picture(e: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Grey picture of ``|e|`` ``[3,H,W]``: max over R,G,B of ``|e|``, divided by its largest value (white).

    Returns the picture and the 8-bit level that white stands for.
    """
    m = e.abs().amax(dim=0, keepdim=True)
    peak = float(m.max())
    pic = m / peak if peak > 0 else torch.zeros_like(m)
    return pic.expand(3, -1, -1), 255.0 * peak


_APPLY_HELP = """Write the machine JND of each photo: OUT/<stem>.png, <stem>_jnd.png, <stem>_jnd.npy and OUT/report.json.

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


@machine_jnd_app.command(help=_reflow(_APPLY_HELP))
def apply(
    paths: list[Path] = typer.Argument(..., help="Photos or folders of photos."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (created if missing)."),
    net_path: Optional[Path] = typer.Option(None, "--net", help="A net written by `machine-jnd train`."),
    per_image: bool = typer.Option(False, "--per-image", help="Optimise e for each photo (no net; the default "
                                   "when --net is not given)."),
    models: Optional[str] = typer.Option(None, "--models", help="Comma-separated classifiers (default: the net's; "
                                         f"with --per-image {ALL_MODELS})."),
    steps: int = typer.Option(100, "--steps", help="Per-image optimiser steps."),
    lr: float = typer.Option(0.05, "--lr", help="Per-image optimiser learning rate (Adam)."),
    max_side: Optional[int] = typer.Option(None, "--max-side", help="Work on a copy downscaled so its long side is "
                                           "at most N pixels (outputs are at that size). Default: full resolution."),
    seed: int = typer.Option(0, "--seed", help="Seed of the optimiser's start and of the white-noise check."),
    as_json: bool = typer.Option(False, "--json", help="Print report.json on stdout."),
) -> None:
    """See ``_APPLY_HELP``."""
    from .images import find_images, load_image, quantize, save_image
    from .machine_jnd import apply_jnd_net, evaluate_jnd, load_jnd_net, optimise_jnd_per_image

    if net_path is not None and per_image:
        _fail("choose one of --net NET.pt and --per-image")
    if steps < 1:
        _fail(f"--steps must be >= 1, got {steps}")
    if max_side is not None and max_side < 8:
        _fail(f"--max-side must be >= 8, got {max_side}")
    report_path = output / "report.json"
    _refuse_existing(report_path)
    if output.exists() and not output.is_dir():
        _fail(f"{output}: exists and is not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _fail(f"{output}: cannot be written ({e.strerror or e})")
    net = None
    if net_path is not None:
        try:
            net = load_jnd_net(net_path)
        except JndkitError as e:
            _fail(str(e))
        names = _model_names(models) if models else list(net.victim_names)
        if not names:
            _fail(f"{net_path}: the net names no classifiers; give --models")
        if models and names != list(net.victim_names):
            err.print(f"[yellow]warning:[/yellow] {net_path} was trained with {','.join(net.victim_names)}; "
                      f"using {','.join(names)}", highlight=False)
    else:
        names = _model_names(models or ALL_MODELS)
    victims = _load_victims(names)
    files = find_images(list(paths))
    if not files:
        _fail("no images found in " + ", ".join(str(p) for p in paths))

    records: list[dict[str, Any]] = []
    with _bar(_quiet(as_json)) as bar:
        files_task = bar.add_task("photos", total=len(files))
        step_task = bar.add_task("steps", total=None, visible=net is None)
        for i, src in enumerate(files):
            bar.update(files_task, completed=i, description=src.name)
            bar.reset(step_task)
            t0 = time.perf_counter()
            dst = output / (src.stem + ".png")
            vis_path = output / (src.stem + "_jnd.png")
            npy_path = output / (src.stem + "_jnd.npy")
            try:
                for p in (dst, vis_path, npy_path):
                    if p.exists():
                        raise OutputError(p, f"already exists; not overwritten, {src.name} skipped "
                                          "(choose another output folder or remove it)")
                img = load_image(src)
                x, alpha = _downscale(img.rgb[None], img.alpha, max_side)
                if net is not None:
                    e = apply_jnd_net(net, victims, x, batch_size=1)
                else:
                    e = optimise_jnd_per_image(victims, x, steps=steps, lr=lr, seed=seed,
                                               progress=lambda s, n, _: bar.update(step_task, total=n, completed=s))
                save_image(quantize(x + e)[0], dst, alpha=alpha, info=img.info)
                reread = load_image(dst).rgb[None]
                e_file = reread - x  # what the file holds, not what was computed
                pic, white = _jnd_picture(e_file[0])
                save_image(pic, vis_path)
                buf = _npy_bytes(e_file[0].numpy().astype(np.float32))
                _write_new(npy_path, buf)
                ev = evaluate_jnd(victims, x, e_file, seed=seed, batch_size=1)
                with torch.no_grad():
                    labels = {str(getattr(v, "name", n)): {"clean": _label(v, x), "saved": _label(v, reread)}
                              for v, n in zip(victims, names)}
                rec: dict[str, Any] = {
                    "input": str(src), "status": "done",
                    "output": str(dst), "jnd_png": str(vis_path), "jnd_npy": str(npy_path),
                    "size": [int(img.rgb.shape[2]), int(img.rgb.shape[1])],
                    "work_size": [int(x.shape[3]), int(x.shape[2])],
                    "file_matches_computation": bool(torch.equal(quantize(x + e), reread)),
                    "jnd_png_white_levels": white,
                    "labels": labels,
                    "evaluation": ev,
                    "seconds": time.perf_counter() - t0,
                }
                if not as_json:
                    err.print(f"[green]✓[/green] {src.name}: {_fmt_eval(ev)}  {rec['seconds']:.1f}s", highlight=False)
            except (JndkitError, OSError, MemoryError) as exc:  # one line for this photo; the others go on
                msg = str(exc) if isinstance(exc, JndkitError) else f"{src}: {type(exc).__name__}: {exc}"
                rec = {"input": str(src), "status": "error", "error": msg}
                err.print(f"[red]✗[/red] {msg}", highlight=False)
            records.append(rec)
        bar.update(files_task, completed=len(files))

    done = [r for r in records if r["status"] == "done"]
    summary = {
        "images": len(records), "done": len(done), "errors": len(records) - len(done),
        "rca_mean": float(np.mean([r["evaluation"]["rca"]["mean"] for r in done])) if done else None,
        "psnr_mean": _mean_finite([r["evaluation"]["psnr_mean"] for r in done]),
    }
    report = {
        "format": REPORT_FORMAT, "command": "machine-jnd apply",
        "method": "net" if net is not None else "per-image",
        "net": str(net_path) if net_path is not None else None, "models": names,
        "steps": steps if net is None else None, "lr": lr if net is None else None, "seed": seed,
        "max_side": max_side,
        "jnd_png_scale": "grey = max over R,G,B of |e| / jnd_png_white_levels (per image); black = unchanged",
        "summary": summary, "images": records,
    }
    try:
        _write_json(report_path, report)
    except JndkitError as e:
        _fail(str(e))
    if as_json:
        out.print_json(json.dumps(_jsonable(report)))
    line = f"{summary['done']}/{summary['images']} done" + (f", {summary['errors']} errors" if summary["errors"] else "")
    if done:
        line += f"; mean RCA {summary['rca_mean']:.1f}%"
        if summary["psnr_mean"] is not None:
            line += f", mean PSNR {summary['psnr_mean']:.2f} dB"
    err.print(line + f"; report: {report_path}", highlight=False)
    raise typer.Exit(1 if summary["errors"] else 0)


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _label(victim: torch.nn.Module, x: torch.Tensor) -> str:
    idx = int(victim(x).argmax(dim=1)[0])
    label = getattr(victim, "label", None)
    return str(label(idx)) if callable(label) else str(idx)


def _mean_finite(values: list[Any]) -> float | None:
    v = [float(a) for a in values if a is not None and math.isfinite(float(a))]
    return float(np.mean(v)) if v else None


# ---------------------------------------------------------------- eval


_EVAL_HELP = """Evaluate a machine JND on a data set: RCA per classifier, PSNR, white-noise RCA, homogeneity.

With --net, NET.json beside the net (if present) supplies the data, size, seed and held-out split of
training, so the held-out numbers are the paper's testing RCA. All numbers are on the saved 8-bit images.
"""


@machine_jnd_app.command("eval", help=_reflow(_EVAL_HELP))
def eval_cmd(
    output: Path = typer.Option(..., "-o", "--output", help="The results file to write (RESULTS.json)."),
    net_path: Optional[Path] = typer.Option(None, "--net", help="A net written by `machine-jnd train` "
                                            "(without it: the per-image optimiser on every image)."),
    data: Optional[str] = typer.Option(None, "--data", help="shipped | FOLDER | cifar10:ROOT | cifar10-test:ROOT "
                                       "(default: the net's training data from NET.json, else shipped)."),
    models: Optional[str] = typer.Option(None, "--models", help=f"Comma-separated classifiers (default: the net's; "
                                         f"without a net {ALL_MODELS})."),
    holdout: Optional[float] = typer.Option(None, "--holdout", help="Evaluate the held-out and training splits "
                                            "separately (default: NET.json's split for its own data, else 0 = all)."),
    size: Optional[int] = typer.Option(None, "--size", help="Square image side (default: NET.json's, else 224; "
                                       "32 for CIFAR-10)."),
    crops_per_photo: Optional[int] = typer.Option(None, "--crops-per-photo", help="Crops per shipped photo "
                                                  "(default: NET.json's, else 4)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of crops, split and white noise "
                                       "(default: NET.json's, else 0)."),
    steps: int = typer.Option(100, "--steps", help="Per-image optimiser steps (without --net)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per batch."),
    as_json: bool = typer.Option(False, "--json", help="Print the results on stdout."),
) -> None:
    """See ``_EVAL_HELP``."""
    from .machine_jnd import evaluate_jnd, evaluate_jnd_net, load_jnd_net, optimise_jnd_per_image, split_holdout
    from .machine_jnd.data import batches

    _refuse_existing(output)
    if batch_size < 1 or steps < 1:
        _fail(f"--batch-size and --steps must be >= 1, got {batch_size} and {steps}")
    net = None
    meta: dict[str, Any] = {}
    if net_path is not None:
        try:
            net = load_jnd_net(net_path)
        except JndkitError as e:
            _fail(str(e))
        record = net_path.with_suffix(".json")
        if record.is_file():
            try:
                meta = json.loads(record.read_text())
            except (OSError, ValueError) as e:
                err.print(f"[yellow]warning:[/yellow] {record}: not read ({e}); using the defaults", highlight=False)
    names = _model_names(models) if models else (list(net.victim_names) if net is not None and net.victim_names
                                                 else _model_names(ALL_MODELS))
    same_data = data is None or data == meta.get("data")
    spec = data or meta.get("data", "shipped")
    side = size or (meta.get("size") if same_data else None) or _default_size(spec)
    crops = crops_per_photo or (meta.get("crops_per_photo") if same_data else None) or 4
    seed_ = seed if seed is not None else int(meta.get("seed", 0))
    share = holdout if holdout is not None else (float(meta.get("holdout", 0.0)) if same_data and meta else 0.0)
    if not 0 <= share < 1:
        _fail(f"--holdout must be in [0,1), got {share}")
    victims = _load_victims(names)
    images, bad = _materialise(spec, int(side), seed_, int(crops))
    try:
        splits = dict(zip(("train", "held_out"), split_holdout(images, share, seed_))) if share > 0 else {"all": images}
    except JndkitError as e:
        _fail(str(e))
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    with _bar(_quiet(as_json)) as bar:
        for part in ("held_out", "train", "all"):
            if part not in splits:
                continue
            task = bar.add_task(part.replace("_", "-"), total=None)
            subset = splits[part]
            try:
                if net is not None:
                    ev = evaluate_jnd_net(net, victims, subset, batch_size=batch_size, seed=seed_,
                                          progress=lambda i, n, _, t=task: bar.update(t, total=n, completed=i))
                else:
                    chunks = batches(subset, batch_size)
                    es = []
                    for k, xb in enumerate(chunks):
                        es.append(optimise_jnd_per_image(victims, xb, steps=steps, seed=seed_))
                        bar.update(task, total=len(chunks), completed=k + 1)
                    ev = evaluate_jnd(victims, torch.cat(chunks), torch.cat(es), seed=seed_, batch_size=batch_size)
            except JndkitError as e:
                _fail(str(e))
            ev["image_names"] = list(subset.names)
            results[part] = ev
            if not as_json:
                err.print(f"{part.replace('_', '-')} ({len(subset)} images): {_fmt_eval(ev)}", highlight=False)
    report = {
        "format": REPORT_FORMAT, "command": "machine-jnd eval",
        "method": "net" if net is not None else "per-image", "net": str(net_path) if net_path else None,
        "steps": None if net is not None else steps,
        "models": names, "data": spec, "size": side, "crops_per_photo": crops, "seed": seed_, "holdout": share,
        "bad_files": bad, "seconds": time.perf_counter() - t0, "results": results,
    }
    try:
        _write_json(output, report)
    except JndkitError as e:
        _fail(str(e))
    if as_json:
        out.print_json(json.dumps(_jsonable(report)))
    err.print(f"results: {output}", highlight=False)
    raise typer.Exit(1 if bad else 0)
