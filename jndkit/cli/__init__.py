"""``jndkit`` command line: a thin shell over the library (every command is one library call).

One module per command -- :mod:`.protect` (``protect``, classify and face), :mod:`.verify`,
:mod:`.listing` (``models``, ``methods``, ``samples``), :mod:`.jnd_map`, :mod:`.machine_jnd`
(``machine-jnd train|apply|eval``), :mod:`.bench` -- and :mod:`.common` for what they share
(consoles, errors and exit codes, progress, per-photo lines, Ctrl-C). ``jndkit.cli:app`` is the
console entry point.
"""

from __future__ import annotations

import typer

from . import bench, jnd_map, listing, machine_jnd, protect, study, verify
from .serve import serve

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make photos unreadable to machines while people see no change.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("protect")(protect.protect)
app.command("verify")(verify.verify)
app.command("models")(listing.models)
app.command("methods")(listing.methods)
app.command("samples")(listing.samples)
app.command("jnd-map")(jnd_map.jnd_map)
app.add_typer(machine_jnd.machine_jnd_app, name="machine-jnd")
app.command("bench")(bench.bench)
app.command("serve")(serve)
app.add_typer(study.study_app, name="study")


def main() -> None:  # pragma: no cover
    """Run the ``jndkit`` command (``python -m jndkit.cli``)."""
    app()
