"""Strict JSON for reports and ``--json`` output.

Python's ``json`` writes ``Infinity`` and ``NaN`` by default, which strict parsers (JavaScript's
``JSON.parse``, ``jq``, Go, Rust's serde) refuse. jndkit has such values: the PSNR of an unchanged
image is ``+inf`` and a metric undefined for a small image is ``NaN``. Here every non-finite float
becomes ``null`` (the value does not exist as a finite number; a report states why next to it, e.g.
"PSNR infinite: the image is unchanged"), and the final ``json.dumps`` runs with
``allow_nan=False``, so a stray infinity can never reach a file.

* :func:`to_jsonable` turns dataclasses, mappings, tuples, sets, paths, enums, NumPy and torch
  scalars and arrays into plain JSON types;
* :func:`dumps` is the text for ``--json`` output;
* :func:`write_json_atomic` writes a file the way :func:`jndkit.images.save_image` writes images:
  a temporary file in the target folder, renamed into place (never half a file), refusing to
  replace an existing file unless asked, with the mode the user's umask gives (``0o666 & ~umask``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from .errors import InputError, OutputError

__all__ = ["dumps", "to_jsonable", "umask_mode", "write_bytes_atomic", "write_json_atomic"]

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def to_jsonable(obj: Any) -> JsonValue:
    """Convert ``obj`` to plain JSON types; ``inf``, ``-inf`` and ``nan`` become ``None``.

    Handles ``None``, bool, int, float, str; dataclass instances (their fields, recursively);
    mappings (keys become strings); lists, tuples, sets (sets sorted by their JSON text, so output
    is stable); :class:`pathlib.PurePath` (as a string); :class:`enum.Enum` (its value); NumPy and
    torch scalars, 0-d and n-d arrays (as numbers and nested lists).

    Raises:
        InputError: an object of another type (naming the type), rather than a silent ``str()``.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [to_jsonable(v) for v in obj]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    tolist = _array_tolist(obj)
    if tolist is not _NOT_ARRAY:
        return to_jsonable(tolist)
    raise InputError(f"cannot write a {type(obj).__module__}.{type(obj).__qualname__} as JSON")


_NOT_ARRAY = object()


def _array_tolist(obj: Any) -> Any:
    """``obj.tolist()`` / ``obj.item()`` for NumPy and torch values, else :data:`_NOT_ARRAY`."""
    module = type(obj).__module__
    if module.startswith(("numpy", "torch")):
        if hasattr(obj, "detach"):
            obj = obj.detach().cpu()
        if hasattr(obj, "tolist"):
            return obj.tolist()  # numpy scalars and arrays, torch tensors: Python numbers / lists
        if hasattr(obj, "item"):
            return obj.item()
    return _NOT_ARRAY


def dumps(data: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of ``data`` (via :func:`to_jsonable`; never ``Infinity`` or ``NaN``)."""
    return json.dumps(to_jsonable(data), indent=indent, allow_nan=False, ensure_ascii=False)


def umask_mode(base: int = 0o666) -> int:
    """The mode a newly created file gets under the current umask: ``base & ~umask``.

    ``os.umask`` can only be read by setting it; it is set back at once (process-wide, so call
    this from one thread at a time, as file creation itself would be).
    """
    current = os.umask(0o022)
    os.umask(current)
    return base & ~current


def write_json_atomic(data: Any, path: str | os.PathLike[str], *, overwrite: bool, indent: int | None = 2) -> Path:
    """Write ``data`` as strict JSON (a trailing newline) to ``path``, atomically.

    The text is produced first (so a conversion error writes nothing), written to a temporary file
    in the same folder, flushed to disk, given the mode ``0o666 & ~umask`` and renamed into place.
    With ``overwrite=False`` an existing ``path`` is never replaced, even if it appears while writing.

    Raises:
        OutputError: ``path`` exists and ``overwrite`` is false, or the folder cannot be written.
        InputError: ``data`` holds a value that is not JSON (see :func:`to_jsonable`).
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputError(p, "already exists; not overwritten (choose another output or remove it)")
    text = dumps(data, indent=indent) + "\n"
    write_bytes_atomic(text.encode("utf-8"), p, overwrite=overwrite)
    return p


def write_bytes_atomic(data: bytes, path: Path, *, overwrite: bool) -> None:
    """Temporary file in ``path``'s folder, fsync, umask mode, then rename (or link, never clobbering)."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OutputError(folder, f"cannot write to this folder ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())  # mkstemp creates 0600; a user's file follows the umask
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the target appeared meanwhile: never clobber.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputError(path, "already exists; not overwritten") from None
            except OSError:
                if path.exists():
                    raise OutputError(path, "already exists; not overwritten") from None
                os.replace(tmp, path)
    except OSError as e:
        if isinstance(e, OutputError):
            raise
        raise OutputError(path, f"cannot be written ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
