"""What every ``jndkit`` command shares: the two consoles, errors and exit codes, the progress bar,
the one-line-per-photo records, and Ctrl-C handling (``protect --task classify`` and ``--task face``).

Output conventions: messages, progress and per-photo lines go to stderr (one line each, never
wrapped), results (tables, ``--json``) to stdout. Exit codes: 0 done, 1 some photos failed or a
check did not hold, 2 bad options or input refused before any work, 130 interrupted.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from ..pipeline import Record

__all__ = [
    "PhotoClock", "err", "fail", "interrupted", "out", "print_record", "progress_bar", "quiet",
    "reflow", "resume_command", "time_left_column", "time_remaining_column",
]

err = Console(stderr=True, soft_wrap=True)  # one line per message, never wrapped
out = Console(soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: MESSAGE`` on stderr and exit with ``code`` (2: refused before any work)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print ``warning: MESSAGE`` on stderr; the command goes on."""
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)


def reflow(doc: str) -> str:
    """A docstring as ``--help`` text: the lines of each paragraph joined (rich re-wraps them)."""
    paras = [" ".join(ln.strip() for ln in p.strip().splitlines()) for p in doc.strip().split("\n\n")]
    return "\n\n".join(paras)


def quiet(as_json: bool) -> bool:
    """No progress display with ``--json`` or when stderr is not a terminal (a log, a pipe)."""
    return as_json or not sys.stderr.isatty()


def time_left_column() -> ProgressColumn:
    """The ``left`` field of a task (see :class:`PhotoClock`)."""
    return TextColumn("{task.fields[left]}")


def time_remaining_column() -> ProgressColumn:
    """rich's estimate from the completed share of a task."""
    return TimeRemainingColumn()


def progress_bar(disable: bool, *extra: ProgressColumn) -> Progress:
    """The progress display of every command on stderr: description, bar, done/total, elapsed, then ``extra``.

    Transient (it disappears when the run ends, leaving the per-photo lines); ``disable`` turns it off.
    """
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), *extra,
                    console=err, disable=disable, transient=True)


class PhotoClock:
    """Time left from the seconds per *finished* photo (iterations stop at the first success, so
    an iteration budget says nothing about the time a photo takes)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def left(self, done: int, total: int) -> str:
        """``about M:SS left`` after ``done`` of ``total`` photos ('' once all are done)."""
        if done == 0 or total <= done:
            return "time left: after the first photo" if done == 0 else ""
        secs = (time.monotonic() - self.start) / done * (total - done)
        return f"about {int(secs // 60)}:{int(secs % 60):02d} left"


def resume_command(ctx: typer.Context) -> str:
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


def interrupted(ctx: typer.Context, output: Path, records: Sequence[Record], total: int) -> NoReturn:
    """Ctrl-C: one line with the photos finished and the command that resumes the run; exit 130."""
    ok = sum(r.status == "protected" for r in records)
    err.print(f"interrupted: {len(records)}/{total or '?'} photos finished ({ok} protected; the photo in hand "
              f"was not written); report: {Path(output) / 'report.json'}; resume with: {resume_command(ctx)}",
              highlight=False)
    raise typer.Exit(130)


def print_record(rec: Record, count: str = "") -> None:
    """One line per photo of any task (``count``: its ``[i/n]`` position, so a log shows progress)."""
    name = escape(Path(rec.input).name)  # file names and messages are text, not rich markup ("x[1].png")
    error = escape(str(rec.error))
    if rec.status == "error":
        err.print(f"{count}[red]✗[/red] {error}", highlight=False)
    elif rec.status == "skipped":
        err.print(f"{count}[dim]- {name}: skipped (output exists)[/dim]", highlight=False)
    elif rec.status.startswith("no-"):
        err.print(f"{count}[yellow]![/yellow] {name}: {error if rec.error else rec.status}", highlight=False)
    else:
        mark = "[green]✓[/green]" if rec.status == "protected" else "[yellow]![/yellow]"
        psnr = "unchanged" if rec.psnr is None else f"{rec.psnr:.1f} dB"
        err.print(f"{count}{mark} {name}: {escape(_what(rec))}  PSNR {psnr}  SSIM {rec.ssim:.4f}  "
                  + (f"above JND {rec.above_jnd:.2%}  " if rec.above_jnd is not None else "")
                  + (f"budget {rec.strength:g}x JND  " if rec.strength is not None else "")
                  + (f"K={rec.iterations}  " if rec.iterations is not None else "") + f"{rec.seconds:.1f}s"
                  + (f"  {escape(rec.protection)}" if rec.protection else "")
                  + ("" if rec.status == "protected" else f"  ({error})"), highlight=False)


def _what(rec: Record) -> str:
    """The task's few words: ``tabby → toaster`` (classify), ``2/2 faces protected (faces 44.1 dB)`` (face)."""
    faces = getattr(rec, "faces", None)
    if faces is not None:
        ok = sum(bool(f.get("protected")) for f in faces)
        pf = getattr(rec, "psnr_faces", None)
        return f"{ok}/{len(faces)} faces protected" + (f" (faces {pf:.1f} dB)" if pf is not None else "")
    before, after = getattr(rec, "clean_top5", None), getattr(rec, "protected_top5", None)
    if before is not None:
        return f"{before[0][0] if before else '?'} → {after[0][0] if after else '?'}"
    return rec.protection or ""
