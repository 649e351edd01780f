"""``jndkit jnd-map``: :func:`~jndkit.report.save_jnd_map` of one photo -> a PNG and the raw ``.npy`` map."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import JndkitError
from .common import fail, out


def jnd_map(
    image: Path = typer.Argument(..., help="Input photo."),
    output: Path = typer.Option(..., "-o", "--output",
                                help="Output PNG, or an existing folder (gets IMAGE's name .png); a .npy with the raw "
                                     "map is written beside. Existing files are never overwritten."),
    model: str = typer.Option("namm", "--model", help="chou | namm | namm-colour | wu | colour-variance"),
) -> None:
    """Write a human JND threshold map of IMAGE (brighter = a larger change goes unnoticed)."""
    from ..images import load_image
    from ..report import save_jnd_map

    try:
        img = load_image(image)
        info = save_jnd_map(img.rgb, output, model, stem=image.stem)
    except JndkitError as e:
        fail(str(e), 1)
    out.print(f"{info['png']}: {model} JND map, mean {info['mean_levels']:.2f} grey levels "
              f"(min {info['min_levels']:.2f}, max {info['max_levels']:.2f}); raw map: {info['npy']}", highlight=False)
