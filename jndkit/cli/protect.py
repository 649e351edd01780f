"""``jndkit protect``: options -> a task (:class:`~jndkit.protect.Protector` for ``--task classify``,
:class:`~jndkit.face.task.FaceTask` for ``--task face``) -> :func:`jndkit.pipeline.run_paths` -> one line per
photo, a summary line, report.json, report.html and ``--json``, the same for every task."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import InputError, JndkitError
from .common import (
    PhotoClock,
    err,
    fail,
    interrupted,
    out,
    print_record,
    progress_bar,
    quiet,
    time_left_column,
    warn,
)

if TYPE_CHECKING:
    from ..pipeline import Record, Task


def protect(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Photos or folders of photos (folders are searched recursively)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (created if missing)."),
    model: str | None = typer.Option(None, "--model",
                                     help="Victim: a model, a comma list or a panel (default: imagenet = every "
                                          "offline ImageNet classifier; see `jndkit models`)."),
    weights: Path | None = typer.Option(None, "--weights", help="Weight file for torchvision:/timm: models."),
    method: str | None = typer.Option(None, "--method",
                                      help="Attack method (see `jndkit methods`); default: shield for classify "
                                           "(levels with --research), ddn for face."),
    preset: str | None = typer.Option(None, "--preset", help="Method preset (default: the method's default)."),
    task: str = typer.Option("classify", "--task", help="classify (image classifiers) | face (face recognition) | "
                                                        "detect (object detector: SSD-MobileNetV2, COCO) | "
                                                        "text (OCR: easyocr; see docs/text.md for where it stands)."),
    goal: str | None = typer.Option(None, "--goal",
                                    help="classify: privacy (default: clean class out of every model's top-5) | "
                                         "untargeted (default with --research) | untargeted:CLASS | targeted:CLASS | "
                                         "least-likely | top5 | margin:C | relative:G;  "
                                         "face: dodge (default) | impersonate:NAME | hide;  "
                                         "detect: vanish (default: no person box) | vanish:CLASS[,CLASS] | "
                                         "vanish-all | mislabel:CLASS;  text: unreadable (default) | redact:REGEX"),
    gallery: Path | None = typer.Option(None, "--gallery",
                                        help="face: folder of known people (one sub-folder or photo each)."),
    strength: str | None = typer.Option(None, "--strength",
                                        help="auto (default: invisible, then subtle for a photo invisible "
                                             "cannot protect; faces: strong) | invisible (0.5x the NAMM human "
                                             "JND) | subtle (0.75x) | strong (1x) "
                                             "| a number: the perturbation budget of the protective method."),
    jnd: str | None = typer.Option(None, "--jnd", help="Human JND map of the budget: namm (default) | chou | "
                                                       "namm-colour | wu | colour-variance."),
    upload: str | None = typer.Option(None, "--upload",
                                      help="Upload suite the protection must survive, checked with the real "
                                           "transforms on the saved file: social (default) | none | jpeg90 | a "
                                           "comma list such as jpeg85,x0.75+jpeg85."),
    research: bool = typer.Option(False, "--research",
                                  help="The papers' setting: mobilenet_v2, levels, untargeted, --upload none "
                                       "(least change that fools one known model on the untouched file)."),
    kappa: float | None = typer.Option(None, "--kappa", help="Success margin in logits (default 0.05)."),
    max_iter: int | None = typer.Option(None, "--max-iter", help="Iteration budget (default: the method's)."),
    fmt: str = typer.Option("png", "--format", help="png | jpg | webp | same"),
    quality: int = typer.Option(95, "--quality", help="JPEG/WebP quality (success is checked after encoding)."),
    robust: str = typer.Option("none", "--robust", help="none | jpeg:Q | webp:Q: must also survive re-encoding."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same input: same output)."),
    resume: bool = typer.Option(False, "--resume", help="Skip photos whose output already exists."),
    engine: str = typer.Option("local", "--engine",
                               help="local (this process) | ray: photos spread over Ray Data workers, each loading "
                                    "the models once (pip install 'jndkit[ray]'; RAY_ADDRESS for a cluster; "
                                    "docs/distributed.md)."),
    workers: int = typer.Option(2, "--workers", help="--engine ray: Ray workers (one CPU each)."),
    html: bool = typer.Option(True, "--html/--no-html",
                              help="Also write OUT.report/report.html (beside the output folder: it shows the "
                                   "originals)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    background: str | None = typer.Option(None, "--background",
                                          help="Colours a transparent photo is judged and attacked on, as people "
                                               "see it (default: white,black; a name, #RRGGBB or a comma list)."),
) -> None:
    """Protect photos: write perturbed copies to OUTPUT with report.json (success re-checked from the files).

    Ctrl-C stops after saying how many photos are finished and the command that resumes the run."""
    if task not in TASK_OPTIONS:
        fail(f"--task must be {', '.join(TASK_OPTIONS)}, got {task!r}")
    given = {"--model": model, "--weights": weights, "--strength": strength, "--jnd": jnd, "--upload": upload,
             "--background": background, "--research": research or None, "--gallery": gallery,
             "--robust": None if robust == "none" else robust}
    bad = [k for k, v in given.items() if v is not None and k not in TASK_OPTIONS[task]]
    if bad:
        fail(f"{', '.join(bad)} do{'es' if len(bad) == 1 else ''} not apply to --task {task} "
             f"(it takes {', '.join(sorted(TASK_OPTIONS[task])) or 'none of them'})")
    if engine not in ("local", "ray") or workers < 1:
        fail(f"--engine must be local or ray and --workers >= 1, got {engine!r} and {workers}")
    records: list[Record] = []
    total = [0]
    try:
        try:
            if engine == "ray":  # before any model loads: say what to install
                from ..distributed import import_ray

                import_ray()
            if task == "face":
                runner = _face_task(paths, output, goal or "dodge", gallery, method, preset, max_iter, seed,
                                    fmt, quality, robust, kappa, research, model, upload, strength, jnd)
            elif task == "detect":
                runner = _detect_task(goal, method, preset, strength, upload, kappa, max_iter, fmt, quality, seed)
            elif task == "text":
                runner = _text_task(goal, method, preset, strength, upload, fmt, quality, seed)
            else:
                runner = _classify_task(model, weights, method, preset, goal, strength, jnd, upload, research, kappa,
                                        max_iter, fmt, quality, robust, seed, background)
        except JndkitError as e:
            fail(str(e))
        _run(runner, paths, output, resume, as_json, records, total, engine, workers)
    except KeyboardInterrupt:
        interrupted(ctx, output, records, total[0])
    if html:
        from ..report import write_html_report

        try:
            page = write_html_report(Path(output), records, type(runner.new_record(Path("-"))))
            if not as_json:
                err.print(f"report page: {page}", highlight=False)
        except (OSError, JndkitError) as e:  # the photos and report.json are written; say so and go on
            warn(f"report.html not written: {e}")
    from ..pipeline import report_dict

    report = report_dict(runner, records)
    summary = report["summary"]
    if as_json:
        from ..jsonio import dumps

        out.print_json(dumps(report))
    err.print(summary_line(summary, runner.name) + f"; report: {Path(output) / 'report.json'}", highlight=False)
    nothing = sum(v for k, v in summary.items() if k.startswith("no_") and isinstance(v, int))
    raise typer.Exit(1 if summary["failed"] + summary["errors"] + nothing else 0)


NOTHING = {"no_face": "without a face", "no_detection": "without a detection of the goal's class",
           "no_text": "without text"}
"""How the summary line names the photos a task found nothing to protect in."""

TASK_OPTIONS: dict[str, set[str]] = {
    "classify": {"--model", "--weights", "--strength", "--jnd", "--upload", "--background", "--research", "--robust"},
    "face": {"--gallery", "--robust", "--model", "--upload", "--strength", "--jnd", "--research"},
    "detect": {"--strength", "--upload"},
    "text": {"--strength", "--upload"},
}
"""The task-specific options each task takes (an option given to a task that ignores it is an error)."""


def _detect_task(goal: str | None, method: str | None, preset: str | None, strength: str | None,
                 upload: str | None, kappa: float | None, max_iter: int | None, fmt: str, quality: int,
                 seed: int) -> Task:
    """Options -> :class:`~jndkit.detect.protect.DetectConfig` -> the detect task (SSD-MobileNetV2, COCO)."""
    from ..detect.protect import DetectConfig
    from ..detect.task import DetectTask

    changes: dict[str, Any] = {k: v for k, v in {"goal": goal, "method": method, "upload": upload,
                                                 "kappa": kappa}.items() if v is not None}
    config = DetectConfig(preset=preset, strength=strength, max_iter=max_iter, format=fmt, quality=quality, seed=seed,
                          **changes)
    config.validate()
    return DetectTask.from_config(config)


def _text_task(goal: str | None, method: str | None, preset: str | None, strength: str | None,
               upload: str | None, fmt: str, quality: int, seed: int) -> Task:
    """Options -> the text task (easyocr's CRAFT + English recogniser; :class:`~jndkit.text.task.TextTask`)."""
    from ..attacks.transfer import strength_ladder
    from ..pipeline import check_output_settings
    from ..text.task import TextTask
    from ..transforms import get_suite

    params = {"strength": strength_ladder(strength, ("invisible",))[0]} if strength is not None else {}
    if upload is not None:
        get_suite(upload)
    check_output_settings(fmt, quality)
    changes: dict[str, Any] = {k: v for k, v in {"goal": goal, "method": method, "suite": upload}.items()
                               if v is not None}
    return TextTask(preset=preset, params=params, seed=seed, fmt=fmt, quality=quality, **changes)


def summary_line(summary: dict[str, Any], task: str) -> str:
    """The run's last line: photos (and faces) protected, failures, mean quality."""
    line = f"{summary['protected']}/{summary['images']} " + ("photos protected" if task == "face" else "protected")
    if task == "face":
        line += f", {summary['faces_protected']}/{summary['faces']} faces"
    line += ((f", {summary['failed']} not protected (nothing written)" if summary["failed"] else "")
             + "".join(f", {v} {NOTHING.get(k, k.replace('_', ' '))}" for k, v in summary.items()
                       if k.startswith("no_") and isinstance(v, int) and v)
             + (f", {summary['errors']} errors" if summary["errors"] else "")
             + (f", {summary['skipped']} skipped" if summary["skipped"] else ""))
    if summary["mean_psnr"]:
        line += f"; mean PSNR {summary['mean_psnr']:.1f} dB"
        if task == "face" and summary.get("mean_psnr_faces"):
            line += f" (faces {summary['mean_psnr_faces']:.1f} dB)"
        else:
            line += f", SSIM {summary['mean_ssim']:.4f}"
    return line


def _classify_task(model: str | None, weights: Path | None, method: str | None, preset: str | None,
                   goal: str | None, strength: str | None, jnd: str | None, upload: str | None, research: bool,
                   kappa: float | None, max_iter: int | None, fmt: str, quality: int, robust: str, seed: int,
                   background: str | None) -> Task:
    """Options -> :class:`~jndkit.protect.ProtectConfig` -> the classify task (:class:`~jndkit.protect.Protector`)."""
    from ..protect import ProtectConfig, Protector

    base = ProtectConfig.research() if research else ProtectConfig()
    changes: dict[str, Any] = {k: v for k, v in {
        "model": model, "method": method, "goal": goal, "upload": upload, "strength": strength, "jnd": jnd,
        "kappa": kappa, "background": background}.items() if v is not None}
    config = dataclasses.replace(base, weights=str(weights) if weights else None, preset=preset, max_iter=max_iter,
                                 format=fmt, quality=quality, robust=robust, seed=seed, **changes)
    config.validate()
    return Protector(config)


def _face_task(paths: list[Path], output: Path, goal: str, gallery: Path | None, method: str | None,
               preset: str | None, max_iter: int | None, seed: int, fmt: str, quality: int, robust: str,
               kappa: float | None, research: bool, model: str | None, upload: str | None,
               strength: str | None, jnd: str | None = None) -> Task:
    """Options -> a face task; settings checked before the models load.

    Dodging (the default) is protected against a panel of recognisers (``--model``, default every
    offline one: dlib, facenet_casia) inside the human JND budget, after the upload suite
    (:class:`~jndkit.face.panel_task.FacePanelTask`). ``--research``, impersonation, hiding, a gallery
    or a chosen method use dlib's recogniser alone on the untouched file (or ``--robust``), with the
    method's least change (:class:`~jndkit.face.task.FaceTask`).
    """
    from ..face.protect import FaceProtector, check_face_run
    from ..face.task import FaceTask

    single = {"--research": research or None, "--gallery": gallery, "--method": method, "--preset": preset,
              "--kappa": kappa, "--max-iter": max_iter, "--robust": None if robust == "none" else robust,
              "--goal " + goal: None if goal == "dodge" else goal}
    panel = {"--model": model, "--upload": upload, "--strength": strength, "--jnd": jnd}
    chosen_single = [k for k, v in single.items() if v is not None]
    chosen_panel = [k for k, v in panel.items() if v is not None]
    if jnd is not None:
        from ..perception.jnd import JND_MODELS

        if jnd not in JND_MODELS:  # refused before check_face_run makes the output folder
            raise InputError(f"JND model must be one of {', '.join(JND_MODELS)}, got {jnd!r}")
    check_face_run(list(paths), output, goal, fmt, quality, robust)
    if goal.lower() == "hide" and chosen_single == ["--goal " + goal] and model is None and upload is None:
        # hiding inside the JND budget after the social suite, judged by MTCNN and held-out detectors
        # (docs/face-hide.md); --research (or a method, kappa...) keeps dlib mode's least-change hide
        from ..attacks.transfer import strength_ladder
        from ..face.hide import HIDE_STRENGTHS
        from ..face.hide_task import HideTask

        hs = tuple(strength_ladder(strength, ("invisible", "subtle", "strong"))) if strength else HIDE_STRENGTHS
        return HideTask(strengths=hs, seed=seed, fmt=fmt, quality=quality, jnd=jnd or "namm")
    if chosen_single:
        if chosen_panel:
            raise InputError(f"{', '.join(chosen_panel)} set the recogniser panel of face dodging; "
                             f"{', '.join(chosen_single)} ask for the single-recogniser (dlib) mode")
        protector = FaceProtector(goal, gallery, method or "ddn", preset, max_iter, seed, kappa=kappa)
        return FaceTask(protector, fmt, quality, robust)
    from ..attacks.transfer import strength_ladder
    from ..face.panel import PANEL_JND, PANEL_STRENGTHS
    from ..face.panel_task import FacePanelTask
    from ..transforms import get_suite

    get_suite(upload or "social")
    strengths = tuple(strength_ladder(strength, ("strong",))) if strength is not None else PANEL_STRENGTHS
    return FacePanelTask(recognisers=model, strengths=strengths, suite=upload or "social", seed=seed, fmt=fmt,
                         quality=quality, jnd=jnd or PANEL_JND)


def _run(task: Task, paths: list[Path], output: Path, resume: bool, as_json: bool, records: list[Record],
         total: list[int], engine: str = "local", workers: int = 2) -> None:
    """The photo loop of ``protect`` (:func:`jndkit.pipeline.run_paths`, any task): a progress display on a
    terminal (photos done / total, elapsed, time left from the seconds per finished photo; iterations of
    the photo in hand, which stop at its first success), one record line per photo (plain text when
    stderr is not a terminal, so logs show progress). Appends to ``records``; ``total[0]`` is the number
    of photos once known."""
    from ..pipeline import run_paths

    clock = PhotoClock()
    with progress_bar(quiet(as_json), time_left_column()) as bar:
        files_task = bar.add_task("photos", total=None, left="")
        iter_task = bar.add_task("iterations (at most)", total=None, left="")

        def on_start(path: Path, i: int, n: int) -> None:
            total[0] = n
            bar.update(files_task, total=n, completed=i, description=f"{path.name}", left=clock.left(i, n))
            bar.reset(iter_task)

        def on_progress(step: int, limit: int, info: dict[str, Any]) -> None:
            bar.update(iter_task, total=limit, completed=step)

        try:
            if engine == "ray":  # the same loop, photos protected on Ray workers (jndkit.distributed)
                from ..distributed import protect_paths_ray, task_factory

                loop = protect_paths_ray(task_factory(task), list(paths), output, resume=resume, workers=workers,
                                         task=task, on_start=on_start)
            else:
                loop = run_paths(task, list(paths), output, resume=resume, on_start=on_start, progress=on_progress)
            for rec in loop:
                records.append(rec)
                if not as_json:
                    print_record(rec, f"[{len(records)}/{total[0]}] ")
        except JndkitError as e:
            fail(str(e))
