"""Boxes drawn on a photo for the report: :func:`draw_boxes`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import InputError
from ..images import to_uint8
from .ssd import Detection

__all__ = ["BOX_COLOUR", "draw_boxes"]

BOX_COLOUR = (255, 32, 32)
"""Outline and label background of a box (red, seen on most photos)."""


def _as_box(b: Detection | Mapping[str, Any]) -> tuple[str, float, tuple[float, float, float, float]]:
    if isinstance(b, Detection):
        return b.name, b.score, b.box
    try:
        x1, y1, x2, y2 = (float(v) for v in b["box"])
        return str(b.get("name", b.get("label", "?"))), float(b["score"]), (x1, y1, x2, y2)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"a box needs name/label, score and box [x1, y1, x2, y2], got {b!r}") from e


def draw_boxes(image: torch.Tensor | np.ndarray | Image.Image,
               boxes: Sequence[Detection | Mapping[str, Any]], width: int | None = None) -> Image.Image:
    """``image`` (``[3,H,W]`` tensor in [0,1], ``[H,W,3]`` uint8 array or a PIL image) with each box
    outlined and labelled ``name score`` (boxes in pixels of the image: :class:`Detection` or their
    JSON form ``{"name", "score", "box"}``, as in ``report.json``'s ``boxes_before``/``boxes_after``).

    Returns a new RGB image; the input is not changed. ``width``: outline width (default: 1/250 of the
    long side, at least 2 px).
    """
    if isinstance(image, Image.Image):
        im = image.convert("RGB")
    elif isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise InputError(f"draw_boxes needs an image [3,H,W], got {list(image.shape)}")
        im = Image.fromarray(to_uint8(image), mode="RGB")
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise InputError(f"draw_boxes needs an array [H,W,3] uint8, got {arr.shape} {arr.dtype}")
        im = Image.fromarray(arr, mode="RGB")
    w = width if width is not None else max(2, max(im.size) // 250)
    draw = ImageDraw.Draw(im)
    for b in boxes:
        name, score, (x1, y1, x2, y2) = _as_box(b)
        draw.rectangle((x1, y1, x2, y2), outline=BOX_COLOUR, width=w)
        text = f"{name} {score:.2f}"
        _, _, tw, th = draw.textbbox((0, 0), text)
        ty = y1 - th - 3 if y1 - th - 3 >= 0 else y1  # above the box, or inside it at the top edge
        draw.rectangle((x1, ty, x1 + tw + 4, ty + th + 3), fill=BOX_COLOUR)
        draw.text((x1 + 2, ty + 1), text, fill=(255, 255, 255))
    return im
