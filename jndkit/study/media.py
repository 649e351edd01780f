"""The pictures a study shows: originals, protected photos and noise catch images, as PNG bytes.

Every picture is decoded with :func:`jndkit.images.load_image` (EXIF orientation, 16-bit, CMYK are
handled as everywhere in jndkit), centre-cropped when the study asks for it, and re-encoded as
lossless PNG so the browser shows exactly the 8-bit values of the file (a JPEG would be shown as
decoded by the browser, which may differ by one level from Pillow's decoder).
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache

import numpy as np
from PIL import Image

from ..images import load_image, to_uint8
from .design import Study

__all__ = ["centre_crop", "noise_image", "picture_png"]


def centre_crop(arr: np.ndarray, side: int) -> np.ndarray:
    """The centre ``side x side`` crop of an ``[H,W,C]`` array (the whole array if smaller or ``side == 0``).

    Each dimension is cropped on its own, so a 300x100 photo cropped to 200 gives 200x100.
    """
    if side <= 0:
        return arr
    h, w = arr.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return arr[top : top + min(side, h), left : left + min(side, w)]


def noise_image(arr: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``arr`` (uint8 ``[H,W,3]``) plus Gaussian noise of standard deviation ``sigma`` levels, rounded and clipped.

    The noise catch trial of the study: with the default sigma of 40 levels (PSNR about 16 dB, 20 log10(255/40)) anyone
    who looks sees it.
    """
    rng = np.random.default_rng(seed)
    noisy = arr.astype(np.float64) + rng.normal(0.0, sigma, size=arr.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _seed_of(study: Study, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{study.seed}:noise:{key}".encode()).digest()[:8], "big")


@lru_cache(maxsize=8)  # a 12 MP photo is 36 MB decoded; a trial shows at most 2 files
def _load(path: str, crop: int) -> np.ndarray:
    return centre_crop(to_uint8(load_image(path).rgb), crop)


def picture_png(study: Study, key: str, role: str) -> bytes:
    """PNG bytes of one picture of image ``key``.

    Args:
        study: the study (its crop, noise sigma and seed apply).
        key: the image key.
        role: ``original``, ``noise`` or a method name (the protected photo of that method).

    Raises:
        KeyError: no such image or role.
        jndkit.errors.ImageError: the file cannot be read.
    """
    im = study.image(key)
    if role == "original":
        return _png(_load(str(im.original), study.crop))
    if role == "noise":
        return _png(noise_image(_load(str(im.original), study.crop), study.noise_sigma, _seed_of(study, key)))
    return _png(_load(str(im.protected[role]), study.crop))
