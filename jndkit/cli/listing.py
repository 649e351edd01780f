"""``jndkit models``, ``jndkit methods``, ``jndkit samples``: what is available, and the sample photos."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import out


def models() -> None:
    """List the available victim models and where their weights come from."""
    from ..victims import available_models

    table = Table(title="victims")
    for col in ("name", "input", "description", "weights"):
        table.add_column(col)
    for row in available_models():
        table.add_row(row["name"], row["input"], row["description"], row["weights"])
    out.print(table)


def methods() -> None:
    """List the attack methods, their presets and what they are."""
    from ..attacks import METHODS

    table = Table(title="methods")
    for col in ("name", "family", "presets", "description"):
        table.add_column(col)
    for name, spec in sorted(METHODS.items(), key=lambda kv: (kv[1].family != "jndkit", kv[1].family, kv[0])):
        presets = ", ".join(f"[b]{p}[/b]" if p == spec.default else p for p in spec.presets)
        table.add_row(name, spec.family, presets, spec.description)
    out.print(table)


def samples(folder: Path = typer.Argument(Path("samples"), help="Where to write the sample photos.")) -> None:
    """Write the sample photos that ship inside installed packages (no download)."""
    from ..samples import write_samples

    for p in write_samples(folder):
        out.print(str(p), highlight=False)
