"""Held-out face detectors: they only **judge** hidden faces, no attack ever sees them.

Hiding a face from MTCNN (:mod:`jndkit.face.hide`) means little if any other detector still finds
it, so every hidden face is also judged by detectors from another family, through dlib (the
``dlib-bin`` wheel, the same dlib ``face_recognition`` calls):

* ``dlib_hog``: ``dlib.get_frontal_face_detector()``, HOG features + a linear SVM over a sliding
  window pyramid (5 frontal/profile filters). Its score is the SVM's decision value; dlib reports a
  window when it is above 0. It is asked with ``adjust_threshold = -1`` so the record also shows
  how far below 0 a hidden face's best window is (the "by how much" of a hidden face).
* ``dlib_cnn``: ``dlib.cnn_face_detection_model_v1`` with ``mmod_human_face_detector.dat`` (a CNN
  trained with max-margin object detection), the file shipped in the ``face_recognition_models``
  package (found with :func:`importlib.util.find_spec`; the package itself is never imported). It
  reports a detection's confidence only above its own threshold (0).

Both run on the 8-bit image (``[3,H,W]`` in [0,1] rounded to uint8 RGB, as a decoded file holds it)
with ``upsample`` image doublings (``face_recognition``'s default is 1 for both; 1 finds faces of
about 40 px and more with HOG, 0 about 80 px).

Which detection is which face: :func:`found` (a box over the clean face: IoU >= 0.3 or its centre
inside, :func:`jndkit.face.boxes.over`, the rule the MTCNN checks use).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, WeightsNotFoundError
from .boxes import iou, over

__all__ = [
    "HELD_OUT",
    "HOG_REPORT_FLOOR",
    "Detection",
    "HeldOutDetector",
    "best_over",
    "dlib_cnn",
    "dlib_hog",
    "find_mmod_model",
    "found",
    "held_out_faces",
    "load_judges",
]

HELD_OUT = ("dlib_hog", "dlib_cnn")
"""The held-out detectors by name (:func:`load_judges`)."""

HOG_REPORT_FLOOR = -1.0
"""HOG windows down to this score are reported (dlib's own threshold is 0: a face is found above it)."""

MMOD_FILE = "mmod_human_face_detector.dat"
_INSTALL = ("install them with `pip install --no-deps dlib-bin==20.0.1.post1` and "
            "`pip install --no-deps face-recognition-models==0.3.0`")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    """One window of a held-out detector: ``box`` ``(x1, y1, x2, y2)`` in pixels, ``score`` (HOG: SVM
    value, CNN: MMOD confidence) and ``found`` (the detector reports it: score above its threshold)."""

    box: Box
    score: float
    found: bool


@dataclass(frozen=True)
class HeldOutDetector:
    """A detector that judges and is never attacked: ``name``, ``upsample`` and the call
    ``run(uint8 [H,W,3]) -> detections``."""

    name: str
    upsample: int
    run: Callable[[np.ndarray], list[Detection]]

    def __call__(self, image: torch.Tensor) -> list[Detection]:
        return held_out_faces(image, self)


def _dlib() -> Any:
    try:
        return importlib.import_module("dlib")  # optional: dlib-bin, no type stubs
    except ImportError:
        raise WeightsNotFoundError(f"dlib is not installed; {_INSTALL}") from None


def find_mmod_model() -> Path:
    """``mmod_human_face_detector.dat`` inside the installed ``face_recognition_models`` package.

    Raises:
        WeightsNotFoundError: the package (or the file in it) is not installed.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    for loc in list(spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(loc) / "models" / MMOD_FILE
        if p.is_file():
            return p
    raise WeightsNotFoundError(f"{MMOD_FILE} not found; {_INSTALL}")


def _box(r: Any) -> Box:
    return (float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1))


@functools.lru_cache(maxsize=4)
def dlib_hog(upsample: int = 1) -> HeldOutDetector:
    """dlib's HOG frontal face detector (``face_recognition``'s ``model="hog"``), windows with a score
    down to :data:`HOG_REPORT_FLOOR`.

    Raises:
        WeightsNotFoundError: dlib is not installed.
    """
    dlib = _dlib()
    det = dlib.get_frontal_face_detector()

    def run(img: np.ndarray) -> list[Detection]:
        rects, scores, _ = det.run(img, upsample, HOG_REPORT_FLOOR)
        return [Detection(_box(r), float(s), float(s) > 0.0) for r, s in zip(rects, scores, strict=True)]

    return HeldOutDetector("dlib_hog", int(upsample), run)


@functools.lru_cache(maxsize=4)
def dlib_cnn(upsample: int = 1) -> HeldOutDetector:
    """dlib's CNN MMOD face detector (``face_recognition``'s ``model="cnn"``); only its detections
    (confidence above its own threshold) are reported.

    Raises:
        WeightsNotFoundError: dlib or the model file is not installed.
    """
    dlib = _dlib()
    det = dlib.cnn_face_detection_model_v1(str(find_mmod_model()))

    def run(img: np.ndarray) -> list[Detection]:
        return [Detection(_box(d.rect), float(d.confidence), True) for d in det(img, upsample)]

    return HeldOutDetector("dlib_cnn", int(upsample), run)


def load_judges(names: str | Sequence[str] | None = HELD_OUT, upsample: int = 1) -> list[HeldOutDetector]:
    """Held-out detectors by name (``"dlib_hog,dlib_cnn"``, a list, or ``None``/``""`` for none).

    Raises:
        InputError: an unknown name. WeightsNotFoundError: dlib or the CNN's file is missing.
    """
    if names is None:
        return []
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n) for n in names]
    items = [n for n in items if n]
    bad = [n for n in items if n not in HELD_OUT]
    if bad:
        raise InputError(f"unknown held-out detector {bad[0]!r}: use {', '.join(HELD_OUT)}")
    return [dlib_hog(upsample) if n == "dlib_hog" else dlib_cnn(upsample) for n in items]


def held_out_faces(image: torch.Tensor, detector: HeldOutDetector) -> list[Detection]:
    """The windows ``detector`` reports on ``image`` ``[3,H,W]`` in [0,1] (rounded to 8 bits first),
    best score first. Only those with ``found`` true are faces the detector reports.

    Raises:
        InputError: ``image`` is not ``[3,H,W]``.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        got = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"image must be a tensor of shape [3,H,W], got {got}")
    img = np.ascontiguousarray(
        torch.round(image.detach().clamp(0, 1) * 255.0).to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    return sorted(detector.run(img), key=lambda d: -d.score)


def best_over(clean_box: Sequence[float], dets: Sequence[Detection], scale: float = 1.0) -> Detection | None:
    """The best-scoring window of ``dets`` over ``clean_box`` (given in the clean photo's pixels; the
    detections in a photo resized by ``scale``), reported or not; ``None`` when none lies over it."""
    b = [v * scale for v in clean_box]
    hits = [d for d in dets if over(b, d.box)]
    return max(hits, key=lambda d: (d.score, iou(b, d.box))) if hits else None


def found(clean_box: Sequence[float], boxes: Sequence[Detection] | Sequence[Sequence[float]],
          scale: float = 1.0) -> bool:
    """Whether a reported detection lies over the clean face ``clean_box`` (IoU >= 0.3 or its centre
    inside, :func:`jndkit.face.boxes.over`); ``boxes`` are :class:`Detection` (only ``found`` ones
    count) or plain ``(x1, y1, x2, y2)`` boxes, in a photo resized by ``scale``."""
    b = [v * scale for v in clean_box]
    for d in boxes:
        if isinstance(d, Detection):
            if d.found and over(b, d.box):
                return True
        elif over(b, d):
            return True
    return False
