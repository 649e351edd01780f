"""Tests of jndkit.jsonio: strict JSON (no Infinity/NaN), conversions, atomic writes, umask."""

from __future__ import annotations

import enum
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from jndkit.errors import InputError, OutputError
from jndkit.jsonio import dumps, to_jsonable, umask_mode, write_json_atomic


def _strict_loads(text: str) -> object:
    """A strict parser: Python's json accepts Infinity/NaN unless told otherwise."""

    def refuse(name: str) -> float:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


class Colour(enum.Enum):
    RED = "red"


@dataclass
class Record:
    name: str
    psnr: float
    path: Path
    shape: tuple[int, int]
    extra: dict[str, object]


def test_non_finite_floats_become_null_everywhere() -> None:
    data = {
        "psnr": math.inf,
        "neg": -math.inf,
        "nan": math.nan,
        "np": np.float32("inf"),
        "np64": np.float64("nan"),
        "t": torch.tensor(float("inf")),
        "arr": np.array([1.5, np.inf, np.nan]),
        "tens": torch.tensor([[0.25, float("-inf")]]),
        "nested": [(1, math.inf)],
    }
    text = dumps(data)
    assert "Infinity" not in text and "NaN" not in text
    assert _strict_loads(text) == {
        "psnr": None,
        "neg": None,
        "nan": None,
        "np": None,
        "np64": None,
        "t": None,
        "arr": [1.5, None, None],
        "tens": [[0.25, None]],
        "nested": [[1, None]],
    }
    # the stdlib default writes invalid JSON for the same data: this is what the module fixes
    assert "Infinity" in json.dumps({"psnr": math.inf})


def test_dataclasses_paths_enums_numpy_torch_scalars() -> None:
    rec = Record("a.png", 41.25, Path("/tmp/x/a.png"), (3, 4), {"c": Colour.RED, "n": np.int64(7), "b": np.bool_(True)})
    got = to_jsonable({"rec": rec, "s": {3, 1, 2}, "i": torch.tensor(5), "f": np.float32(0.5)})
    assert got == {
        "rec": {
            "name": "a.png",
            "psnr": 41.25,
            "path": "/tmp/x/a.png",
            "shape": [3, 4],
            "extra": {"c": "red", "n": 7, "b": True},
        },
        "s": [1, 2, 3],
        "i": 5,
        "f": 0.5,
    }
    assert type(got["i"]) is int and type(got["rec"]["extra"]["n"]) is int  # type: ignore[index]


def test_unknown_type_is_an_input_error_naming_it() -> None:
    with pytest.raises(InputError, match="object"):
        to_jsonable({"x": object()})


def test_write_atomic_refuses_existing_and_overwrites_when_asked(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "report.json"
    write_json_atomic({"psnr": math.inf, "n": 2}, p, overwrite=False)
    assert _strict_loads(p.read_text()) == {"psnr": None, "n": 2}
    assert p.read_text().endswith("\n")
    before = p.read_bytes()
    with pytest.raises(OutputError, match="already exists") as e:
        write_json_atomic({"n": 3}, p, overwrite=False)
    assert str(p) in str(e.value)
    assert p.read_bytes() == before
    write_json_atomic({"n": 3}, p, overwrite=True)
    assert _strict_loads(p.read_text()) == {"n": 3}
    assert sorted(f.name for f in p.parent.iterdir()) == ["report.json"]  # no temporary left


def test_bad_data_writes_nothing(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    with pytest.raises(InputError):
        write_json_atomic({"x": object()}, p, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_is_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        write_json_atomic({}, blocker / "r.json", overwrite=False)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_file_mode_follows_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        assert umask_mode() == mode
        p = write_json_atomic({"a": 1}, tmp_path / "r.json", overwrite=False)
        q = write_json_atomic({"a": 2}, p, overwrite=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(q.stat().st_mode) == mode
