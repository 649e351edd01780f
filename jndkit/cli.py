"""``jndkit`` command line: a thin shell over the library (every command is one library call)."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import JndkitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make photos unreadable to machines while people see no change.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True, soft_wrap=True)  # one line per message, never wrapped
out = Console(soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _resume_command(ctx: typer.Context) -> str:
    """The command line that resumes this run: the arguments and the options given on the command
    line, as given, plus ``--resume`` (built from the parsed parameters, so it is exact under any
    shell or test runner)."""
    words = ["jndkit", ctx.info_name or "protect"]
    options: list[str] = []
    for param in ctx.command.params:
        name = param.name or ""
        value = ctx.params.get(name)
        if param.param_type_name == "argument":
            words += [str(v) for v in (value or [])]
            continue
        source = ctx.get_parameter_source(name)
        if name == "resume" or source is None or source.name != "COMMANDLINE":
            continue
        opt = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            secondary = getattr(param, "secondary_opts", [])
            if secondary:
                options.append(opt if value else max(secondary, key=len))
            elif value:
                options.append(opt)
        else:
            options += [opt, str(value)]
    return shlex.join(words + options + ["--resume"])


def _interrupted(ctx: typer.Context, output: Path, records: list[Any], total: int) -> None:
    """Ctrl-C: one line with the photos finished and the command that resumes the run; exit 130."""
    ok = sum(r.status == "protected" for r in records)
    err.print(f"interrupted: {len(records)}/{total or '?'} photos finished ({ok} protected; the photo in hand "
              f"was not written); report: {Path(output) / 'report.json'}; resume with: {_resume_command(ctx)}",
              highlight=False)
    raise typer.Exit(130)


class _PhotoClock:
    """Time left from the seconds per *finished* photo (iterations stop at the first success, so
    an iteration budget says nothing about the time a photo takes)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def left(self, done: int, total: int) -> str:
        if done == 0 or total <= done:
            return "time left: after the first photo" if done == 0 else ""
        secs = (time.monotonic() - self.start) / done * (total - done)
        return f"about {int(secs // 60)}:{int(secs % 60):02d} left"


@app.command()
def protect(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Photos or folders of photos (folders are searched recursively)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (created if missing)."),
    model: Optional[str] = typer.Option(None, "--model",
                                        help="Victim: a model, a comma list or a panel (default: imagenet = every "
                                             "offline ImageNet classifier; see `jndkit models`)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Weight file for torchvision:/timm: models."),
    method: Optional[str] = typer.Option(None, "--method",
                                         help="Attack method (see `jndkit methods`); default: shield for classify "
                                              "(levels with --research), ddn for face."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Method preset (default: the method's default)."),
    task: str = typer.Option("classify", "--task", help="classify (image classifier) | face (face recognition)."),
    goal: Optional[str] = typer.Option(None, "--goal",
                                       help="classify: privacy (default: clean class out of every model's top-5) | "
                                            "untargeted (default with --research) | untargeted:CLASS | targeted:CLASS | "
                                            "least-likely | top5 | margin:C | relative:G;  "
                                            "face: dodge (default) | impersonate:NAME | hide"),
    gallery: Optional[Path] = typer.Option(None, "--gallery",
                                           help="face: folder of known people (one sub-folder or photo each)."),
    strength: Optional[str] = typer.Option(None, "--strength",
                                           help="invisible (default, 1x the human JND) | subtle (1.5x) | strong (2.5x) "
                                                "| a number: the perturbation budget of the protective method."),
    jnd: Optional[str] = typer.Option(None, "--jnd", help="Human JND map of the budget: namm (default) | chou | "
                                                          "namm-colour | wu | colour-variance."),
    upload: Optional[str] = typer.Option(None, "--upload",
                                         help="Upload suite the protection must survive, checked with the real "
                                              "transforms on the saved file: social (default) | none | jpeg90 | a "
                                              "comma list such as jpeg85,x0.75+jpeg85."),
    research: bool = typer.Option(False, "--research",
                                  help="The papers' setting: mobilenet_v2, levels, untargeted, --upload none "
                                       "(least change that fools one known model on the untouched file)."),
    kappa: Optional[float] = typer.Option(None, "--kappa", help="Success margin in logits (default 0.05)."),
    max_iter: Optional[int] = typer.Option(None, "--max-iter", help="Iteration budget (default: the method's)."),
    fmt: str = typer.Option("png", "--format", help="png | jpg | webp | same"),
    quality: int = typer.Option(95, "--quality", help="JPEG/WebP quality (success is checked after encoding)."),
    robust: str = typer.Option("none", "--robust", help="none | jpeg:Q | webp:Q: must also survive re-encoding."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same input: same output)."),
    resume: bool = typer.Option(False, "--resume", help="Skip photos whose output already exists."),
    html: bool = typer.Option(True, "--html/--no-html", help="Also write OUT.report/report.html (beside the output folder: it shows the originals)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    background: Optional[str] = typer.Option(None, "--background",
                                             help="Colours a transparent photo is judged and attacked on, as people "
                                                  "see it (default: white,black; a name, #RRGGBB or a comma list)."),
) -> None:
    """Protect photos: write perturbed copies to OUTPUT with report.json (success re-checked from the files).

    Ctrl-C stops after saying how many photos are finished and the command that resumes the run."""
    if task == "face":
        given = {"--model": model, "--weights": weights, "--strength": strength, "--jnd": jnd, "--upload": upload,
                 "--background": background,
                 "--research": research or None, "--no-html": None if html else True}
        bad = [k for k, v in given.items() if v is not None]
        if bad:
            _fail(f"{', '.join(bad)} do{'es' if len(bad) == 1 else ''} not apply to --task face "
                  "(face protection uses MTCNN and dlib's recogniser and writes report.json only)")
        face_records: list[Any] = []
        face_total = [0]
        try:
            _protect_faces(paths, output, goal or "dodge", gallery, method or "ddn", preset, max_iter, seed, fmt, quality,
                           robust, resume, kappa, as_json, face_records, face_total)
        except KeyboardInterrupt:
            _interrupted(ctx, output, face_records, face_total[0])
        return
    if task != "classify":
        _fail(f"--task must be classify or face, got {task!r}")
    if gallery is not None:
        _fail("--gallery is for --task face")
    from .protect import ProtectConfig, Protector, summarise

    base = ProtectConfig.research() if research else ProtectConfig()
    changes: dict[str, Any] = {k: v for k, v in {
        "model": model, "method": method, "goal": goal, "upload": upload, "strength": strength, "jnd": jnd,
        "kappa": kappa, "background": background}.items() if v is not None}
    config = dataclasses.replace(base, weights=str(weights) if weights else None, preset=preset, max_iter=max_iter,
                                 format=fmt, quality=quality, robust=robust, seed=seed, **changes)
    records: list[Any] = []
    total = [0]
    try:
        try:
            config.validate()
            protector = Protector(config)
        except JndkitError as e:
            _fail(str(e))
        _run_protect(paths, output, config, resume, protector, as_json, records, total)
    except KeyboardInterrupt:
        _interrupted(ctx, output, records, total[0])
    if html:
        from .report import write_html_report

        try:
            page = write_html_report(Path(output), records)
            if not as_json:
                err.print(f"report page: {page}", highlight=False)
        except (OSError, JndkitError) as e:  # the photos and report.json are written; say so and go on
            err.print(f"[yellow]warning:[/yellow] report.html not written: {e}", highlight=False)
    summary = summarise(records)
    if as_json:
        from .jsonio import dumps
        from .protect import report_dict

        out.print_json(dumps(report_dict(config, records)))
    line = (f"{summary['protected']}/{summary['images']} protected"
            + (f", {summary['failed']} not protected (nothing written)" if summary["failed"] else "")
            + (f", {summary['errors']} errors" if summary["errors"] else "")
            + (f", {summary['skipped']} skipped" if summary["skipped"] else "")
            + (f"; mean PSNR {summary['mean_psnr']:.1f} dB, SSIM {summary['mean_ssim']:.4f}" if summary["mean_psnr"]
               else "")
            + f"; report: {Path(output) / 'report.json'}")
    err.print(line, highlight=False)
    bad = summary["failed"] + summary["errors"]
    raise typer.Exit(1 if bad else 0)


def _run_protect(paths: list[Path], output: Path, config: Any, resume: bool, protector: Any, as_json: bool,
                 records: list[Any], total: list[int]) -> None:
    """The photo loop of ``protect``: a progress display on a terminal (photos done / total, elapsed,
    time left from the seconds per finished photo; iterations of the photo in hand, which stop at
    its first success), one record line per photo (plain text when stderr is not a terminal, so logs
    show progress). Appends to ``records``; ``total[0]`` is the number of photos once known."""
    from .protect import protect_paths

    clock = _PhotoClock()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[left]}"), console=err, disable=not sys.stderr.isatty(),
                  transient=True) as bar:
        files_task = bar.add_task("photos", total=None, left="")
        iter_task = bar.add_task("iterations (at most)", total=None, left="")

        def on_start(path: Path, i: int, n: int) -> None:
            total[0] = n
            bar.update(files_task, total=n, completed=i, description=f"{path.name}", left=clock.left(i, n))
            bar.reset(iter_task)

        def on_progress(step: int, limit: int, info: dict[str, Any]) -> None:
            bar.update(iter_task, total=limit, completed=step)

        try:
            for rec in protect_paths(paths, output, config, resume=resume, protector=protector,
                                     on_start=on_start, progress=on_progress):
                records.append(rec)
                if not as_json:
                    _print_record(rec, f"[{len(records)}/{total[0]}] ")
        except JndkitError as e:
            _fail(str(e))


def _protect_faces(paths: list[Path], output: Path, goal: str, gallery: Optional[Path], method: str,
                   preset: Optional[str], max_iter: Optional[int], seed: int, fmt: str, quality: int, robust: str,
                   resume: bool, kappa: Optional[float], as_json: bool, records: list[Any],
                   total: list[int]) -> None:
    """``protect --task face``: one library call (:func:`jndkit.face.protect.protect_face_paths`).
    Appends to ``records``; ``total[0]`` is the number of photos once known (for Ctrl-C)."""
    from .face.protect import protect_face_paths, summarise

    quiet = as_json or not sys.stderr.isatty()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, disable=quiet, transient=True) as bar:
            files_task = bar.add_task("photos", total=None)
            iter_task = bar.add_task("iterations", total=None)

            def on_start(path: Path, i: int, n: int) -> None:
                total[0] = n
                bar.update(files_task, total=n, completed=i, description=path.name)
                bar.reset(iter_task)

            def on_progress(step: int, total: int, info: dict[str, Any]) -> None:
                bar.update(iter_task, total=total, completed=step)

            for rec in protect_face_paths(paths, output, goal=goal, gallery=gallery, method=method, preset=preset,
                                          max_iter=max_iter, seed=seed, fmt=fmt, quality=quality, robust=robust,
                                          progress=on_progress, resume=resume, on_start=on_start, kappa=kappa):
                records.append(rec)
                if not as_json:
                    _print_face_record(rec)
    except JndkitError as e:
        _fail(str(e))
    summary = summarise(records)
    if as_json:
        out.print_json(json.dumps({"summary": summary, "images": [r.to_json() for r in records]}, default=str))
    err.print(f"{summary['protected']}/{summary['images']} photos protected, {summary['faces_protected']}/"
              f"{summary['faces']} faces"
              + (f", {summary['no_face']} without a face" if summary["no_face"] else "")
              + (f", {summary['errors']} errors" if summary["errors"] else "")
              + (f"; mean PSNR {summary['mean_psnr']:.1f} dB (faces {summary['mean_psnr_faces']:.1f} dB)"
                 if summary["mean_psnr"] else "")
              + f"; report: {Path(output) / 'report.json'}", highlight=False)
    bad = summary["failed"] + summary["errors"] + summary["no_face"]
    raise typer.Exit(1 if bad else 0)


def _print_face_record(rec: Any) -> None:
    name = Path(rec.input).name
    if rec.status == "error":
        err.print(f"[red]✗[/red] {rec.error}", highlight=False)
    elif rec.status == "skipped":
        err.print(f"[dim]- {name}: skipped (output exists)[/dim]", highlight=False)
    elif rec.status == "no-face":
        err.print(f"[yellow]![/yellow] {name}: no face detected; nothing written", highlight=False)
    else:
        n = len(rec.faces)
        ok = sum(bool(f.get("protected")) for f in rec.faces)
        mark = "[green]✓[/green]" if rec.status == "protected" else "[yellow]![/yellow]"
        err.print(f"{mark} {name}: {ok}/{n} faces protected  PSNR {rec.psnr:.1f} dB (faces {rec.psnr_faces:.1f} dB)  "
                  f"{rec.seconds:.1f}s" + ("" if rec.status == "protected" else f"  ({rec.error})"), highlight=False)


def _print_record(rec: Any, count: str = "") -> None:
    """One line per photo (``count``: its ``[i/n]`` position, so a log shows progress)."""
    name = Path(rec.input).name
    if rec.status == "error":
        err.print(f"{count}[red]✗[/red] {rec.error}", highlight=False)
    elif rec.status == "skipped":
        err.print(f"{count}[dim]- {name}: skipped (output exists)[/dim]", highlight=False)
    else:
        before = rec.clean_top5[0][0] if rec.clean_top5 else "?"
        after = rec.protected_top5[0][0] if rec.protected_top5 else "?"
        mark = "[green]✓[/green]" if rec.status == "protected" else "[yellow]![/yellow]"
        psnr = "unchanged" if rec.psnr is None else f"{rec.psnr:.1f} dB"
        err.print(f"{count}{mark} {name}: {before} → {after}  PSNR {psnr}  SSIM {rec.ssim:.4f}  "
                  + (f"above JND {rec.above_jnd:.2%}  " if rec.above_jnd is not None else "")
                  + f"K={rec.iterations}  {rec.seconds:.1f}s"
                  + (f"  {rec.protection}" if rec.protection else "")
                  + ("" if rec.status == "protected" else f"  ({rec.error})"), highlight=False)


@app.command()
def verify(
    original: Path = typer.Argument(..., help="The original photo."),
    protected: Path = typer.Argument(..., help="Its protected copy (jndkit's or any other tool's)."),
    model: str = typer.Option("imagenet", "--model", help="Judges: a panel (imagenet) or a comma list of models."),
    upload: str = typer.Option("social", "--upload", help="Upload suite: social | none | jpeg90 | a comma list."),
    as_json: bool = typer.Option(False, "--json", help="Print the matrix as JSON on stdout."),
) -> None:
    """Judge PROTECTED against ORIGINAL: every model after every upload transform (top-1, top-5, confidence)."""
    from .verify import load_judges, verify_files

    try:
        m = verify_files(original, protected, load_judges(model), upload)
    except JndkitError as e:
        _fail(str(e), 1)
    if as_json:
        from .jsonio import dumps

        out.print_json(dumps(m.to_json()))
    else:
        table = Table(title=f"{protected.name}: {m.summary()} ({m.suite})")
        table.add_column("upload")
        for name in m.models:
            table.add_column(f"{name}\n[dim]clean: {m.cell(name, m.transforms[0]).clean_label}[/dim]")
        for t in m.transforms:
            row = [t]
            for name in m.models:
                c = m.cell(name, t)
                colour = "green" if c.hidden else ("yellow" if c.changed else "red")
                row.append(f"[{colour}]{c.label} {c.confidence:.2f}[/{colour}]"
                           f"[dim] (clean {c.clean_prob:.2f}{', top-5' if c.in_top5 else ''})[/dim]")
            table.add_row(*row)
        out.print(table)
        err.print("green: top-1 changed and the clean class out of the top-5; yellow: top-1 changed only; "
                  "red: still recognised", highlight=False)
    raise typer.Exit(0 if all(m.holds(n) for n in m.models) else 1)


@app.command()
def models() -> None:
    """List the available victim models and where their weights come from."""
    from .victims import available_models

    table = Table(title="victims")
    for col in ("name", "input", "description", "weights"):
        table.add_column(col)
    for row in available_models():
        table.add_row(row["name"], row["input"], row["description"], row["weights"])
    out.print(table)


@app.command()
def methods() -> None:
    """List the attack methods, their presets and what they are."""
    from .attacks import METHODS

    table = Table(title="methods")
    for col in ("name", "family", "presets", "description"):
        table.add_column(col)
    for name, spec in sorted(METHODS.items(), key=lambda kv: (kv[1].family != "jndkit", kv[1].family, kv[0])):
        presets = ", ".join(f"[b]{p}[/b]" if p == spec.default else p for p in spec.presets)
        table.add_row(name, spec.family, presets, spec.description)
    out.print(table)


@app.command()
def samples(folder: Path = typer.Argument(Path("samples"), help="Where to write the sample photos.")) -> None:
    """Write the sample photos that ship inside installed packages (no download)."""
    from .samples import write_samples

    for p in write_samples(folder):
        out.print(str(p), highlight=False)


@app.command("jnd-map")
def jnd_map_cmd(
    image: Path = typer.Argument(..., help="Input photo."),
    output: Path = typer.Option(..., "-o", "--output",
                                help="Output PNG, or an existing folder (gets IMAGE's name .png); a .npy with the raw "
                                     "map is written beside. Existing files are never overwritten."),
    model: str = typer.Option("namm", "--model", help="chou | namm | namm-colour | wu | colour-variance"),
) -> None:
    """Write a human JND threshold map of IMAGE (brighter = a larger change goes unnoticed)."""
    from .images import load_image
    from .report import save_jnd_map

    try:
        img = load_image(image)
        info = save_jnd_map(img.rgb, output, model, stem=image.stem)
    except JndkitError as e:
        _fail(str(e), 1)
    out.print(f"{info['png']}: {model} JND map, mean {info['mean_levels']:.2f} grey levels "
              f"(min {info['min_levels']:.2f}, max {info['max_levels']:.2f}); raw map: {info['npy']}", highlight=False)


from .cli_machine_jnd import machine_jnd_app  # noqa: E402
app.add_typer(machine_jnd_app, name="machine-jnd")


from .cli_bench import bench as _bench  # noqa: E402
app.command("bench")(_bench)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
