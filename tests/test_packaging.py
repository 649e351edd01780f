"""jndkit's declared runtime dependencies cover what its weight packages import (issue 11).

The Makefile installs facenet-pytorch and efficientnet-lite-pytorch with ``--no-deps`` (their metadata
pins torch < 2.3), so their own requirements never arrive on their own: jndkit must declare each of
them, or ``jndkit protect --task face`` fails on a fresh install (``No module named 'requests'``).
"""

from __future__ import annotations

import importlib.metadata as md
import re

import pytest


def _names(requirements: list[str] | None, extras: bool) -> set[str]:
    """Canonical distribution names (PEP 503) of requirement strings; with ``extras=False`` only the
    unconditional ones (no ``extra == ...`` marker)."""
    out = set()
    for req in requirements or []:
        if not extras and "extra ==" in req.replace("extra==", "extra =="):
            continue
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        assert name is not None, req
        out.add(re.sub(r"[-_.]+", "-", name.group(0)).lower())
    return out


def test_runtime_requirements_include_requests_and_tqdm() -> None:
    runtime = _names(md.requires("jndkit"), extras=False)
    assert {"requests", "tqdm"} <= runtime, sorted(runtime)
    # the test tools stay out of the runtime set
    assert not {"pytest", "ruff", "mypy", "torchattacks"} & runtime


@pytest.mark.parametrize("package", ["facenet-pytorch", "efficientnet-lite-pytorch"])
def test_requirements_of_no_deps_weight_packages_are_declared_by_jndkit(package: str) -> None:
    try:
        needed = _names(md.requires(package), extras=False)
    except md.PackageNotFoundError:
        pytest.skip(f"{package} is not installed (make install puts it in)")
    missing = needed - _names(md.requires("jndkit"), extras=False)
    assert not missing, f"{package} imports {sorted(missing)}, which jndkit does not declare"
