"""The one flow every task goes through: plan outputs, then per photo load -> attack -> write under
a hidden name -> re-read -> measure -> judge from scratch -> name it only if protected, with one
``report.json`` kept up to date after every photo.

Only a verified protected file ever takes an output name: the image is written as
``.NAME.jndkit-unverified.EXT`` in the output folder, read back, judged by the task as a third party
would, and hard-linked to its name (never over an existing file) only when the task says it is
protected; otherwise it is removed and the record says which model still sees through it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import JndkitError, OutputError
from ..images import load_image, quantize
from .files import (
    _link_into_place,
    check_report_path,
    plan_outputs,
    prepare_run,
    write_and_reread,
    write_json_atomic,
)
from .record import Record, summarise
from .task import ProgressFn, Task

__all__ = ["Stream", "measure", "one_by_one", "protect_one", "report_dict", "run_paths"]

QUALITY_METRICS = ("psnr", "ssim", "l2", "linf", "l0", "ciede2000_mean", "ciede2000_max")


def _finite(v: Any) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


def measure(record: Record, clean: torch.Tensor, saved: torch.Tensor) -> None:
    """Fill ``record``'s quality numbers: the written file ``saved`` against the 8-bit ``clean``
    (both ``[3,H,W]``): PSNR, SSIM, L2, Linf, changed values, CIEDE2000 mean/max and the share of
    pixels above the Chou-Li JND (metrics in bounded memory: :mod:`jndkit.metrics`)."""
    from .. import metrics
    from ..perception.jnd import share_above_jnd

    vals = metrics.compute_metrics(clean[None], saved[None], names=list(QUALITY_METRICS))
    record.psnr = _finite(vals["psnr"][0])
    record.ssim = float(vals["ssim"][0])
    record.l2 = float(vals["l2"][0])
    record.linf = float(vals["linf"][0])
    record.changed_values = int(vals["l0"][0])
    record.ciede2000_mean = float(vals["ciede2000_mean"][0])
    record.ciede2000_max = float(vals["ciede2000_max"][0])
    record.above_jnd = float(share_above_jnd(clean[None], saved[None], "chou")[0])


def _unverified_name(dst: Path) -> Path:
    return dst.with_name(f".{dst.stem}.jndkit-unverified{dst.suffix}")


def protect_one(task: Task, src: Path, dst: Path, progress: ProgressFn | None = None) -> Record:
    """Protect ``src`` into ``dst`` with ``task``; errors come back in the record, never raised.

    The one place a protected file is written and re-checked, for every task (see the module doc).
    """
    src, dst = Path(src), Path(dst)
    rec = task.new_record(src)
    rec.task, rec.output = task.name, str(dst)
    t0 = time.perf_counter()
    tmp: Path | None = None
    try:
        if dst.exists():
            raise OutputError(dst, "already exists; not overwritten (use --resume to skip done photos)")
        if dst.resolve() == src.resolve():
            raise OutputError(dst, "output would replace the input")
        img = load_image(src)
        rec.width, rec.height = img.size
        attempt = task.protect(img, dst, rec, progress)
        if attempt.image is None:
            rec.status, rec.output = attempt.status or "failed", None
            rec.error = attempt.reason
        else:
            tmp = _unverified_name(dst)
            if tmp.exists():
                tmp.unlink()
            saved = write_and_reread(attempt.image, tmp, quality=task.quality, alpha=attempt.alpha, info=img.info).rgb
            clean = quantize(attempt.reference if attempt.reference is not None else img.rgb)
            measure(rec, clean, saved)
            if task.judge(attempt, clean, saved, rec):
                _link_into_place(tmp, dst)
                rec.status = getattr(task, "done_status", "protected")  # a measuring task says "done"
            else:
                rec.status, rec.output = "failed", None
                hint = getattr(task, "hint", None)
                tail = f" ({hint(rec)})" if callable(hint) and hint(rec) else ""
                rec.error = f"{src}: not protected: {task.why_not(rec)}; nothing written{tail}"
    except JndkitError as e:
        rec.status, rec.error = "error", str(e)
    except (OSError, ValueError, RuntimeError) as e:  # anything unexpected about this one file
        rec.status, rec.error = "error", f"{src}: {type(e).__name__}: {e}"
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    rec.seconds = round(time.perf_counter() - t0, 3)
    return rec


def report_dict(task: Task, records: Sequence[Record]) -> dict[str, Any]:
    """``report.json``: versions, the task and its settings, the summary and one entry per photo."""
    summary = summarise(records)
    summary.update(task.summarise(records))
    return {
        "jndkit": __version__,
        "torch": torch.__version__,
        "task": task.name,
        "config": task.config_json(),
        "summary": summary,
        "images": [r.to_json() for r in records],
    }


def read_records(task: Task, report_path: Path) -> dict[str, Record]:
    """The records of an earlier ``report.json`` by input (empty when absent or unreadable)."""
    if not report_path.exists():
        return {}
    try:
        data = json.loads(report_path.read_text())
        if data.get("task", task.name) != task.name:
            return {}
        out: dict[str, Record] = {}
        for item in data.get("images", []):
            out[item["input"]] = type(task.new_record(Path(item["input"]))).from_json(item)
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


Stream = Callable[[Task, list[tuple[Path, Path]], "ProgressFn | None"], Iterator[Record]]
"""Protects the planned ``(input, output)`` pairs and yields their records in the same order (lazily:
:func:`run_paths` asks for the next record right after saying which photo is next)."""


def one_by_one(task: Task, todo: list[tuple[Path, Path]], progress: ProgressFn | None) -> Iterator[Record]:
    """The default :data:`Stream`: :func:`protect_one` for each pair in turn, in this process."""
    for src, dst in todo:
        yield protect_one(task, src, dst, progress)


def run_paths(
    task: Task,
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    on_start: Callable[[Path, int, int], None] | None = None,
    progress: ProgressFn | None = None,
    stream: Stream | None = None,
) -> Iterator[Record]:
    """Protect files and folders into ``out_dir`` with ``task``, yielding one record per photo.

    Folders are searched recursively and the output mirrors their tree (``photos/trip/a.jpg`` ->
    ``OUT/trip/a.png``). ``report.json`` in ``out_dir`` is rewritten after every photo, so a crash
    loses at most the photo in hand; it is the truth of the folder: a photo whose verified output
    is there keeps its record (also when ``resume`` skips it), a photo that failed has no output.
    With ``resume``, photos whose output exists are skipped (decided once, before any work, so an
    output written during the run never reads as done); failures are tried again. ``stream`` does
    the photos to be done (default :func:`one_by_one`; :mod:`jndkit.distributed` passes Ray workers).

    Raises:
        OutputError: ``out_dir`` cannot be created or written, or holds a ``report.json`` that
            jndkit did not write (checked before any work).
        InputError: no image, or two inputs with the same output name.
    """
    out, _ = prepare_run(paths, out_dir)
    plan = plan_outputs(paths, out, task.fmt)
    report_path = out / "report.json"
    check_report_path(report_path)
    # the truth of the folder: earlier records only for photos whose verified output is still there
    ok = getattr(task, "done_status", "protected")
    merged: dict[str, Record] = {k: r for k, r in read_records(task, report_path).items()
                                 if r.status == ok and r.output and Path(r.output).exists()}
    skip = {str(src) for src, dst in plan if resume and dst.exists()}
    todo = [(src, dst) for src, dst in plan if str(src) not in skip]
    results = (stream or one_by_one)(task, todo, progress)
    for i, (src, dst) in enumerate(plan):
        if on_start is not None:
            on_start(src, i, len(plan))
        old = merged.get(str(src))
        if str(src) in skip:
            rec = task.new_record(src)
            rec.task, rec.output, rec.status, rec.error = task.name, str(dst), "skipped", "output exists (resume)"
            if old is None:
                merged[str(src)] = rec
            yield rec
            continue
        rec = next(results)
        if rec.input != str(src):
            raise RuntimeError(f"the photo stream returned {rec.input} where {src} was expected")
        refused = rec.status == "error" and dst.exists()
        if not (refused and old is not None):
            merged[str(src)] = rec
        write_json_atomic(report_dict(task, list(merged.values())), report_path)
        yield rec
    # read the stream to its end (a distributed one cleans up then; it must hold no more records)
    if next(results, None) is not None:
        raise RuntimeError("the photo stream returned more records than the plan has")
    write_json_atomic(report_dict(task, list(merged.values())), report_path)
