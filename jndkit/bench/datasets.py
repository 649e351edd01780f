"""The evaluation set: deterministic, model-labelled crops of the package-shipped photos (or a folder).

The default set is made of crops and flips of the photos that ship inside scikit-image,
scikit-learn and matplotlib, resized to the model's input size, keeping those the model
itself labels with confidence >= ``min_confidence`` (seed 003's classifier-generated labels).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, JndkitError
from ..images import load_image, quantize
from ..victims import ClassifierVictim


def _crops(arr: np.ndarray, size: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Deterministic square crops (3 scales x 5 positions) and their mirror images."""
    x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float()[None] / 255.0
    h, w = x.shape[-2:]
    short = min(h, w)
    for scale in (1.0, 0.75, 0.55):
        s = int(short * scale)
        for pos, (top, left) in {
            "c": ((h - s) // 2, (w - s) // 2), "tl": (0, 0), "tr": (0, w - s), "bl": (h - s, 0), "br": (h - s, w - s),
        }.items():
            if scale == 1.0 and pos != "c" and (h == w):
                continue
            c = x[..., top : top + s, left : left + s]
            c = F.interpolate(c, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            c = quantize(c)
            yield f"s{scale:g}-{pos}", c
            yield f"s{scale:g}-{pos}-flip", c.flip(-1)


def evaluation_set(victim: ClassifierVictim, n: int = 32, size: int | None = None, min_confidence: float = 0.5,
                   data: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` images ``[n,3,S,S]`` with the victim's own confident labels, and their names.

    With ``data``, the images are the files of that folder (recursively, sorted), resized to
    ``S``; otherwise crops of the package-shipped photos. Deterministic: same inputs, same set.
    """
    from ..images import find_images
    from ..samples import sample_array, sample_names

    s = size or (victim.input_size[0] if victim.input_size else 224)
    candidates: list[tuple[str, torch.Tensor]] = []
    if data is not None:
        for path in find_images([data]):
            try:
                x = load_image(path).rgb[None]
            except JndkitError:  # unreadable files are left out of the set
                continue
            x = quantize(F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False))
            candidates.append((str(Path(path).relative_to(data)) if Path(data).is_dir() else path.name, x))
    else:
        # interleave photos so that a small n still spans several scenes
        per_photo = [[(f"{name}/{tag}", c) for tag, c in _crops(sample_array(name), s)] for name in sample_names()]
        for i in range(max(len(p) for p in per_photo)):
            for p in per_photo:
                if i < len(p):
                    candidates.append(p[i])
    keep_x, keep_y, names = [], [], []
    with torch.no_grad():
        for start in range(0, len(candidates), 32):
            chunk = candidates[start : start + 32]
            xb = torch.cat([c for _, c in chunk])
            probs = victim(xb).softmax(1)
            conf, lab = probs.max(1)
            for (name, x), c, y in zip(chunk, conf.tolist(), lab.tolist(), strict=True):
                if c >= min_confidence:
                    keep_x.append(x)
                    keep_y.append(y)
                    names.append(name)
            if len(keep_x) >= n:
                break
    if len(keep_x) < n:
        raise InputError(f"only {len(keep_x)} images reach confidence {min_confidence} under {victim.name}; "
                         f"asked for {n}")
    return torch.cat(keep_x[:n]), torch.tensor(keep_y[:n]), names[:n]


def image_hash(x: torch.Tensor) -> str:
    """Short fingerprint of one 8-bit image ``[3,H,W]`` (a cached row is reused only for the same image)."""
    arr = (x.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:12]

