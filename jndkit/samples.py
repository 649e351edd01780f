"""Sample photos that ship inside installed packages (nothing is downloaded).

``write_samples(folder)`` writes them as PNG (JPEG for the one that ships as JPEG):
scikit-image's coffee, chelsea, astronaut and rocket; scikit-learn's china and
flower (640x427); matplotlib's grace_hopper.jpg.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return np.asarray(getattr(skimage.data, name)())

    return load


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return np.asarray(load_sample_images().images[index])

    return load


SAMPLES: dict[str, Callable[[], np.ndarray]] = {
    "coffee": _skimage("coffee"),
    "chelsea": _skimage("chelsea"),
    "astronaut": _skimage("astronaut"),
    "rocket": _skimage("rocket"),
    "china": _sklearn(0),
    "flower": _sklearn(1),
}


def sample_array(name: str) -> np.ndarray:
    """A package-shipped photo as ``[H,W,3]`` uint8."""
    if name == "grace_hopper":
        from PIL import Image

        with Image.open(grace_hopper_path()) as im:
            return np.asarray(im.convert("RGB"))
    return SAMPLES[name]()


def grace_hopper_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def sample_names() -> list[str]:
    return [*SAMPLES, "grace_hopper"]


def write_samples(folder: str | os.PathLike[str]) -> list[Path]:
    """Write every sample photo into ``folder`` (existing files are left alone)."""
    from PIL import Image

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, load in SAMPLES.items():
        p = out / f"{name}.png"
        if not p.exists():
            Image.fromarray(load()).save(p)
        written.append(p)
    gh = out / "grace_hopper.jpg"
    if not gh.exists():
        shutil.copyfile(grace_hopper_path(), gh)
    written.append(gh)
    return written
