"""Shared fixtures: offline victims and package-shipped photos (nothing is downloaded)."""

from __future__ import annotations

import hashlib
from pathlib import Path

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


# SHA-256 of the shipped face photos (tests/data/face_photos/README.md gives source and licence).
FACE_PHOTO_SHA256 = {
    "obama": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    "obama2": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    "obama3": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    "biden": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
}
FACE_PHOTO_DIR = Path(__file__).resolve().parent / "data" / "face_photos"


@pytest.fixture(scope="session")
def photo_paths() -> dict[str, Path]:
    """The four face_recognition 1.3.0 sdist test photos (MIT), shipped in ``tests/data/face_photos``.

    Returns ``{name: path}`` for obama, obama2, obama3 and biden. Nothing is downloaded; a missing or
    altered file fails the test (it is part of the repository), it never skips.
    """
    paths = {n: FACE_PHOTO_DIR / f"{n}.jpg" for n in FACE_PHOTOS}
    for name, path in paths.items():
        if not path.is_file():
            pytest.fail(f"{path}: face test photo missing from the repository")
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != FACE_PHOTO_SHA256[name]:
            pytest.fail(f"{path}: SHA-256 {got} differs from the shipped {FACE_PHOTO_SHA256[name]}")
    return paths
