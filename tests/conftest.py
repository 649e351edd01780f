"""Shared fixtures: offline victims and package-shipped photos (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jndkit.images import quantize

FACE_PHOTOS = ("obama", "obama2", "obama3", "biden")


@pytest.fixture(scope="session")
def mobilenet():
    from jndkit.victims import load_victim

    return load_victim("mobilenet_v2")


@pytest.fixture(scope="session")
def lite0():
    from jndkit.victims import load_victim

    return load_victim("efficientnet_lite0")


def photo(name: str, size: int | None = 224) -> torch.Tensor:
    """A package-shipped photo as ``[1,3,H,W]`` in [0,1], resized (antialiased) and quantized."""
    from jndkit.samples import sample_array

    arr = sample_array(name)
    x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float()[None] / 255.0
    if size is not None:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return quantize(x)


@pytest.fixture
def photo_fn():
    return photo


@pytest.fixture(scope="session")
def photo_paths():
    """The face_recognition 1.3.0 sdist test photos, fetched with pip from the package registry
    into .cache/face_photos (never committed); the tests that need them skip if pip cannot."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cache = root / ".cache" / "face_photos"
    script = root / "scripts" / "fetch_face_test_photos.py"
    proc = subprocess.run([sys.executable, str(script), str(cache)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"face test photos unavailable (pip could not fetch face_recognition==1.3.0): {proc.stderr.strip()}")
    return {n: cache / f"{n}.jpg" for n in FACE_PHOTOS}
