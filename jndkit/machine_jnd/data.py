"""Training and evaluation images for the machine JND (seed 003).

The paper trains on CIFAR-10; jndkit works offline, so the default data are
deterministic crops and flips of the photos that ship inside installed packages
(scikit-image's ``astronaut``, ``coffee``, ``chelsea``, ``rocket``, the left image of
``stereo_motorcycle``, ``hubble_deep_field``, ``immunohistochemistry``, ``colorwheel``;
scikit-learn's ``china`` and ``flower``). Three sources:

* :func:`shipped_crops` -- the package photos, ``crops_per_photo`` square crops each;
* :func:`folder_images` -- every image under a folder (flat or one folder per class,
  like ``torchvision.datasets.ImageFolder``), resized and centre-cropped;
* :func:`cifar10_images` -- CIFAR-10 from files the user already has
  (``torchvision.datasets.CIFAR10(root, download=False)``).

:func:`load_images` picks one of them from a spec string (the CLI's ``--data``).
Every dataset yields ``[3,S,S]`` float tensors in [0,1], already 8-bit (so ``x`` is
what a PNG holds). There are no human labels: each classifier's own clean
prediction is the label (section III-A of the paper).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import InputError
from ..images import find_images, load_image, quantize

SHIPPED_PHOTOS: tuple[str, ...] = (
    "skimage:astronaut",
    "skimage:coffee",
    "skimage:chelsea",
    "skimage:rocket",
    "skimage:stereo_motorcycle",
    "skimage:hubble_deep_field",
    "skimage:immunohistochemistry",
    "skimage:colorwheel",
    "sklearn:china",
    "sklearn:flower",
)
"""Photos that ship inside scikit-image / scikit-learn (no download)."""


def _load_shipped(name: str) -> np.ndarray | None:
    """``[H,W,3]`` uint8 for a shipped photo, or ``None`` if it is not on disk."""
    src, key = name.split(":", 1)
    try:
        if src == "skimage":
            import skimage.data as skd

            arr = getattr(skd, key)()
            if isinstance(arr, tuple):  # stereo_motorcycle -> (left, right, disparity)
                arr = arr[0]
        elif src == "sklearn":
            from sklearn.datasets import load_sample_image

            arr = load_sample_image(f"{key}.jpg")
        else:
            return None
    except Exception:  # missing optional data file (skimage's pooch-only images), old versions
        return None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3 or arr.dtype != np.uint8:
        return None
    return np.ascontiguousarray(arr[:, :, :3])


def shipped_photos(names: Sequence[str] = SHIPPED_PHOTOS) -> list[tuple[str, torch.Tensor]]:
    """The shipped photos that are on disk, as ``(name, [3,H,W] float in [0,1])``.

    Raises:
        InputError: none of ``names`` could be loaded.
    """
    out = []
    for n in names:
        arr = _load_shipped(n)
        if arr is not None:
            out.append((n, torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0))
    if not out:
        raise InputError(f"none of the shipped photos could be loaded ({', '.join(names)}); install scikit-image")
    return out


def _resize_short(x: torch.Tensor, short: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    s = short / min(h, w)
    size = (max(short, round(h * s)), max(short, round(w * s)))
    if size == (h, w):
        return x
    return F.interpolate(x.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]


@dataclass
class ImageSet(Dataset[torch.Tensor]):
    """An in-memory image set: ``images[i]`` ``[3,S,S]`` in [0,1] and ``names[i]``."""

    images: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]

    def subset(self, index: Sequence[int]) -> ImageSet:
        idx = list(index)
        return ImageSet(self.images[idx], [self.names[i] for i in idx])


def shipped_crops(
    size: int = 224,
    crops_per_photo: int = 4,
    seed: int = 0,
    photos: Sequence[str] = SHIPPED_PHOTOS,
    scales: Sequence[float] = (1.0, 1.5),
) -> ImageSet:
    """Deterministic square crops and flips of the shipped photos.

    Each photo is resized (antialiased) so its short side is ``size * scale`` for each
    ``scale`` in turn; crop positions come from a ``torch.Generator`` seeded with
    ``seed``; every other crop is mirrored left-right (the paper's horizontal flip,
    made deterministic). Values are rounded to 8 bits.

    Returns:
        :class:`ImageSet` of ``len(photos_on_disk) * crops_per_photo`` images ``[3,size,size]``,
        named ``"skimage:astronaut#0"``, ... (``#k`` = crop number, ``f`` suffix = flipped).
    """
    if size < 16:
        raise InputError(f"crop size must be >= 16 pixels, got {size}")
    if crops_per_photo < 1:
        raise InputError(f"crops_per_photo must be >= 1, got {crops_per_photo}")
    gen = torch.Generator().manual_seed(seed)
    imgs, names = [], []
    for name, photo in shipped_photos(photos):
        for k in range(crops_per_photo):
            scale = float(scales[k % len(scales)])
            big = _resize_short(photo, max(size, round(size * scale)))
            h, w = big.shape[-2:]
            top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
            crop = big[:, top : top + size, left : left + size]
            flip = k % 2 == 1
            if flip:
                crop = crop.flip(-1)
            imgs.append(quantize(crop))
            names.append(f"{name}#{k}{'f' if flip else ''}")
    return ImageSet(torch.stack(imgs), names)


def _centre_square(x: torch.Tensor, size: int) -> torch.Tensor:
    big = _resize_short(x, size)
    h, w = big.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return quantize(big[:, top : top + size, left : left + size])


class FolderImages(Dataset[torch.Tensor]):
    """Every image under ``root`` (recursively; class sub-folders allowed, hidden ones skipped),
    decoded with :func:`jndkit.images.load_image`, resized to short side ``size`` and centre-cropped.

    Files are read lazily; a bad file raises :class:`~jndkit.errors.ImageError` naming it.
    """

    def __init__(self, root: str | os.PathLike[str], size: int = 224) -> None:
        p = Path(root)
        if not p.is_dir():
            raise InputError(f"{p}: not a folder")
        self.paths = find_images([p])
        if not self.paths:
            raise InputError(f"{p}: no images found (png, jpg, webp, tif, bmp)")
        self.size = int(size)
        self.names = [str(q.relative_to(p)) for q in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return _centre_square(load_image(self.paths[i]).rgb, self.size)


def folder_images(root: str | os.PathLike[str], size: int = 224) -> FolderImages:
    """Images under ``root`` as ``[3,size,size]`` tensors (see :class:`FolderImages`)."""
    return FolderImages(root, size)


def cifar10_images(
    root: str | os.PathLike[str], train: bool = True, limit: int | None = None, size: int | None = None
) -> ImageSet:
    """CIFAR-10 (the paper's data set) from files the user has; never downloads.

    Args:
        root: the folder holding ``cifar-10-batches-py`` (as torchvision expects).
        train: the 50,000 training images (else the 10,000 test images).
        limit: keep only the first ``limit`` images.
        size: resize the 32x32 images (bilinear) to ``size`` if given.

    Raises:
        InputError: the files are missing or corrupt (with how to get them).
    """
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root), train=train, download=False)
    except RuntimeError as e:
        raise InputError(
            f"{root}: CIFAR-10 not found ({e}); put the extracted cifar-10-batches-py folder there "
            "(https://www.cs.toronto.edu/~kriz/cifar.html) -- jndkit never downloads"
        ) from None
    data = np.asarray(ds.data)
    if limit is not None:
        data = data[: int(limit)]
    x = torch.from_numpy(data).permute(0, 3, 1, 2).float() / 255.0
    if size is not None and size != x.shape[-1]:
        x = quantize(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
    split = "train" if train else "test"
    return ImageSet(x, [f"cifar10:{split}#{i}" for i in range(x.shape[0])])


def load_images(spec: str = "shipped", size: int = 224, seed: int = 0, crops_per_photo: int = 4) -> Dataset[torch.Tensor]:
    """One call for the CLI's ``--data``.

    * ``"shipped"``: :func:`shipped_crops` (``size``, ``crops_per_photo``, ``seed``);
    * ``"cifar10:ROOT"`` / ``"cifar10-test:ROOT"``: :func:`cifar10_images` (resized to ``size``);
    * any folder path: :func:`folder_images`.
    """
    if spec == "shipped":
        return shipped_crops(size=size, crops_per_photo=crops_per_photo, seed=seed)
    for prefix, train in (("cifar10:", True), ("cifar10-test:", False)):
        if spec.startswith(prefix):
            return cifar10_images(spec[len(prefix) :], train=train, size=size)
    if Path(spec).is_dir():
        return folder_images(spec, size)
    raise InputError(f"unknown data {spec!r}: use 'shipped', 'cifar10:ROOT', 'cifar10-test:ROOT' or a folder")


def split_holdout(data: ImageSet, holdout: float = 0.25, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split ``data`` into (train, held-out) by a seeded permutation of whole images.

    ``holdout`` is the held-out share (at least one image each side).
    """
    n = len(data)
    if n < 2:
        raise InputError(f"need at least 2 images to hold some out, got {n}")
    if not 0 < holdout < 1:
        raise InputError(f"holdout must be in (0,1), got {holdout}")
    k = min(n - 1, max(1, round(n * holdout)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return data.subset(sorted(perm[k:])), data.subset(sorted(perm[:k]))


def batches(
    data: Dataset[torch.Tensor], batch_size: int, order: Sequence[int] | None = None
) -> list[torch.Tensor]:
    """Stack ``data`` into ``[b,3,S,S]`` batches of at most ``batch_size`` (in ``order`` if given)."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    idx = list(order) if order is not None else list(range(len(data)))  # type: ignore[arg-type]
    return [torch.stack([data[i] for i in idx[s : s + batch_size]]) for s in range(0, len(idx), batch_size)]

