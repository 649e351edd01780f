"""``jndkit verify``: :func:`~jndkit.verify.verify_files` -> the protection matrix (model x upload) as a table or
``--json``; exit 0 when the protection holds for every model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..errors import JndkitError
from .common import err, fail, out


def verify(
    original: Path = typer.Argument(..., help="The original photo."),
    protected: Path = typer.Argument(..., help="Its protected copy (jndkit's or any other tool's)."),
    model: str = typer.Option("imagenet", "--model", help="Judges: a panel (imagenet) or a comma list of models."),
    upload: str = typer.Option("social", "--upload", help="Upload suite: social | none | jpeg90 | a comma list."),
    as_json: bool = typer.Option(False, "--json", help="Print the matrix as JSON on stdout."),
) -> None:
    """Judge PROTECTED against ORIGINAL: every model after every upload transform (top-1, top-5, confidence)."""
    from ..verify import load_judges, verify_files

    try:
        m = verify_files(original, protected, load_judges(model), upload)
    except JndkitError as e:
        fail(str(e), 1)
    if as_json:
        from ..jsonio import dumps

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
