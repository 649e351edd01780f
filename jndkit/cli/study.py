"""``jndkit study``: a subjective visibility study on one's own screen (seeds 001 and 002).

* ``jndkit study ORIGINALS PROTECTED [PROTECTED2 ...]`` (the ``run`` subcommand, the default):
  :func:`jndkit.study.match_folders` then :func:`jndkit.study.server.serve_study` -- prints the URL and
  serves the page until Ctrl-C;
* ``jndkit study report CSV...``: :func:`jndkit.study.read_answers` -> :func:`jndkit.study.study_report`
  -> tables (or ``--json``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from ..errors import JndkitError
from .common import err, fail, out

__all__ = ["report", "run", "study_app"]


class _DefaultRun(TyperGroup):
    """A group whose first argument, when it is not a subcommand, belongs to ``run``:
    ``jndkit study A B`` is ``jndkit study run A B``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: typer's own (vendored) click Context
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


study_app = typer.Typer(
    cls=_DefaultRun,
    help="Subjective visibility study: a flicker test and a BT.500 impairment rating in the browser "
    "(`jndkit study ORIGINALS PROTECTED...`), and `jndkit study report CSV...` for MOS and detection tables.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@study_app.command("run")
def run(
    originals: Path = typer.Argument(..., help="Folder of the original photos (searched recursively)."),
    protected: list[Path] = typer.Argument(..., help="One folder of protected photos per method, named after it."),
    results: Path = typer.Option(Path("study-results"), "--results", help="Folder of the per-participant CSVs."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8765, "--port", help="Port (0: any free port)."),
    seed: int = typer.Option(0, "--seed", help="Study seed: a participant's order depends on (seed, id) only."),
    catch: int = typer.Option(1, "--catch", help="Catch trials of each kind (noise, identical) per part."),
    noise: float = typer.Option(40.0, "--noise", help="Noise catch trials: Gaussian sigma in 8-bit levels."),
    flicker_ms: int = typer.Option(200, "--flicker-ms", help="Flicker: time each frame is shown, milliseconds."),
    crop: int = typer.Option(0, "--crop", help="Show the centre SIZE x SIZE crop (0: whole photos)."),
    intersection: bool = typer.Option(
        False, "--intersection", help="Use the photos present in every folder instead of refusing unmatched ones."
    ),
) -> None:
    """(The default command.) Serve the study page: ORIGINALS against each PROTECTED folder (photos matched by
    relative path without suffix). Each answer is appended to RESULTS/<participant>.csv at once; the same id
    resumes."""
    from ..study import match_folders
    from ..study.server import serve_study

    if catch < 0 or noise <= 0 or flicker_ms < 20 or crop < 0 or not 0 <= port <= 65535:
        fail("--catch and --crop must be >= 0, --noise > 0, --flicker-ms >= 20, --port 0-65535")
    try:
        study = replace(match_folders(originals, protected, intersection=intersection), seed=seed, catch=catch,
                        noise_sigma=noise, flicker_ms=flicker_ms, crop=crop)
    except JndkitError as e:
        fail(str(e))
    n = len(study.images) * len(study.methods) + 2 * catch
    err.print(f"{len(study.images)} photo(s) x {len(study.methods)} method(s) ({', '.join(study.methods)}): "
              f"{2 * n} trials per participant; answers go to {results}/", highlight=False)

    def ready(url: str) -> None:
        out.print(f"Study page: {url}  (Ctrl-C to stop)", highlight=False)

    try:
        serve_study(study, results, host=host, port=port, on_ready=ready)
    except JndkitError as e:
        fail(str(e))


@study_app.command("report")
def report(
    csvs: list[Path] = typer.Argument(..., help="Answer files (RESULTS/<participant>.csv)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    exclude_failed: bool = typer.Option(False, "--exclude-failed",
                                        help="Drop every answer of a participant who failed a catch trial."),
) -> None:
    """MOS ± 95 % CI per method and per photo, flicker detection against chance (binomial test), catch trials.
    Exit 1 when a catch trial failed."""
    from ..study import format_report, read_answers, study_report

    try:
        rep = study_report(read_answers(csvs), exclude_failed=exclude_failed)
    except JndkitError as e:
        fail(str(e))
    if as_json:
        from ..jsonio import dumps

        out.print_json(dumps(rep.to_dict()))
    else:
        out.print(format_report(rep), highlight=False, markup=False)
    if rep.failures:
        raise typer.Exit(1)
