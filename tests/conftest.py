"""Shared fixtures: offline victims and package-shipped photos (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jndkit.images import quantize


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
