"""The parts of a protection run that do not depend on the task: planning outputs (the input tree
mirrored, collisions refused up front), the output-folder checks, the atomic, strict-JSON report
writer, and giving a verified file its name without ever replacing a file.

Used by ``jndkit protect`` for classifiers (:mod:`jndkit.protect`) and faces (:mod:`jndkit.face.protect`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, OutputError
from ..images import LoadedImage, find_images, load_image, output_path, save_image


def write_json_atomic(data: Any, path: Path) -> None:
    """Write strict JSON (no ``Infinity``/``NaN``: they become ``null``) through a temporary file and a
    rename. Used for jndkit's own reports, which a run keeps up to date (:func:`check_report_path`
    refuses to replace a ``report.json`` that jndkit did not write)."""
    from ..jsonio import write_json_atomic as _write

    _write(data, path, overwrite=True)


def check_report_path(path: Path) -> None:
    """Refuse to replace a file at ``path`` that is not a jndkit report (never overwrite a user's file)."""
    if not path.exists():
        return
    try:
        ours = "jndkit" in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise OutputError(path, "exists and is not a jndkit report; not overwritten (choose another output folder)")


def _expand(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, Path]]:
    """``(file, relative output stem path)`` per photo: files found in a folder keep their path
    below that folder (the output mirrors the input tree); a file named directly keeps its name.
    The same file given twice is kept once."""
    seen: set[Path] = set()
    out: list[tuple[Path, Path]] = []
    for raw in paths:
        p = Path(raw)
        found = find_images([p])
        for f in found:
            key = f.resolve() if f.exists() else f.absolute()
            if key in seen:
                continue
            seen.add(key)
            out.append((f, f.relative_to(p) if p.is_dir() else Path(f.name)))
    return out


def plan_outputs(paths: Sequence[str | os.PathLike[str]], out_dir: Path, fmt: str) -> list[tuple[Path, Path]]:
    """``(input, output)`` per photo, decided before any work.

    Raises:
        InputError: two inputs would get the same output name (e.g. ``a.png`` and ``a.jpg``
            with ``--format png``), naming both; or no image among ``paths``.
    """
    plan: list[tuple[Path, Path]] = []
    taken: dict[Path, Path] = {}
    for src, rel in _expand(paths):
        dst = output_path(rel, out_dir / rel.parent, fmt) if rel.parent != Path(".") else output_path(rel, out_dir, fmt)
        if dst in taken:
            raise InputError(f"{src} and {taken[dst]} would both be written to {dst}; "
                             "rename one or protect them into different folders")
        taken[dst] = src
        plan.append((src, dst))
    if not plan:
        raise InputError("no images found in " + ", ".join(str(p) for p in paths))
    return plan


def prepare_run(paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """Expand the inputs, then check the output folder can be written, before any work is done
    (an empty input creates no output folder).

    Raises:
        OutputError: ``out_dir`` cannot be created or written.
        InputError: no image among ``paths``.
    """
    files = [f for f, _ in _expand(paths)]
    if not files:
        raise InputError("no images found in " + ", ".join(str(p) for p in paths))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".jndkit-probe-", delete=True):
            pass
    except OSError as e:
        raise OutputError(out, f"output folder cannot be written ({e.strerror or e})") from None
    return out, files


def _link_into_place(tmp: Path, dst: Path) -> None:
    """Give the verified file its name without ever replacing an existing file."""
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise OutputError(dst, "already exists; not overwritten") from None
    except OSError:  # file systems without hard links
        if dst.exists():
            raise OutputError(dst, "already exists; not overwritten") from None
        os.rename(tmp, dst)


def write_and_reread(image: Any, path: Path, *, quality: int = 95, alpha: Any = None,
                     info: dict[str, Any] | None = None, overwrite: bool = False) -> LoadedImage:
    """Write ``image`` ``[3,H,W]`` to ``path`` (atomically, :func:`jndkit.images.save_image`) and read it
    back from disk: every check of a written file (the pipeline's, the benchmark's) judges what this
    returns, never the tensor that was meant to be written."""
    save_image(image, path, quality=quality, alpha=alpha, info=info, overwrite=overwrite)
    return load_image(path)


OUTPUT_FORMATS = ("png", "jpg", "webp", "same")


def check_output_settings(fmt: str, quality: int, max_iter: int | None = None) -> None:
    """The output settings every task shares, checked before any work.

    Raises:
        InputError: a format other than :data:`OUTPUT_FORMATS`, a quality outside 1..100, or an
            iteration budget below 1 (0 iterations would write the photo unprotected).
    """
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"format must be png, jpg, webp or same, got {fmt!r}")
    if not 1 <= int(quality) <= 100:
        raise InputError(f"quality must be in 1..100, got {quality}")
    if max_iter is not None and max_iter < 1:
        raise InputError(f"max_iter must be >= 1 (0 iterations would write the photo unprotected), got {max_iter}")
