"""Decode, quantize and write images.

Everything inside jndkit works on float RGB tensors ``[3,H,W]`` (or batches
``[B,3,H,W]``) with values in [0,1]. This module is the only place that knows
about files:

* :func:`load_image` decodes PNG, JPEG, WebP and TIFF with Pillow, applies the
  EXIF orientation, converts greyscale, palette, CMYK and 16-bit images to RGB
  and keeps an alpha channel aside so :func:`save_image` can restore it.
* :func:`quantize` rounds to the nearest 1/255 (never truncates): the 8-bit
  image that a saved PNG holds.
* :func:`save_image` writes atomically (temporary file in the target folder,
  then rename) and refuses to overwrite an existing file.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, InputError, OutputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
FORMATS = ("png", "jpg", "webp", "same")
MIN_SIDE = 8
"""Images smaller than this on either side are refused (no classifier sees anything there)."""


@dataclass
class LoadedImage:
    """A decoded photo.

    Attributes:
        rgb: float tensor ``[3,H,W]`` in [0,1] (after EXIF orientation).
        alpha: ``[H,W]`` uint8 alpha channel if the file had one, else ``None``.
        path: where it came from (``None`` for in-memory images).
        format: Pillow's format name of the source (``"PNG"``, ``"JPEG"``, ...).
        info: metadata worth keeping on save (ICC profile).
    """

    rgb: torch.Tensor
    alpha: np.ndarray | None = None
    path: Path | None = None
    format: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow reports it."""
        return int(self.rgb.shape[2]), int(self.rgb.shape[1])


def _to_rgb_float(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert any Pillow mode to float RGB in [0,1] plus an optional uint8 alpha."""
    alpha: np.ndarray | None = None
    mode = img.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba)[:, :, 3].copy()
        img = rgba.convert("RGB")
        mode = "RGB"
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) greyscale: scale by the type's maximum.
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / top, 0.0, 1.0)
        return np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32), alpha
    if mode == "F":
        grey = np.clip(np.asarray(img).astype(np.float64), 0.0, 1.0 if np.asarray(img).max() <= 1 else 255.0)
        if grey.max() > 1:
            grey = grey / 255.0
        return np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32), alpha
    if mode in ("RGB;16", "RGB;16B"):  # pragma: no cover - Pillow rarely exposes these
        img = img.convert("RGB")
    if mode != "RGB":
        img = img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    arr = np.asarray(img).astype(np.float32) / 255.0
    return arr, alpha


def _read_16bit_rgb(path: Path) -> np.ndarray | None:
    """Pillow reads 16-bit RGB PNG/TIFF as 8-bit; read full depth with scikit-image if possible."""
    try:
        from skimage import io as skio

        arr = skio.imread(str(path))
    except Exception:
        return None
    if arr.dtype == np.uint16 and arr.ndim == 3 and arr.shape[2] in (3, 4):
        return (arr[:, :, :3].astype(np.float64) / 65535.0).astype(np.float32)
    return None


def load_image(path: str | os.PathLike[str]) -> LoadedImage:
    """Read an image file as RGB float ``[3,H,W]`` in [0,1].

    Raises:
        ImageError: the file is missing, unreadable, not an image, truncated, or
            smaller than ``MIN_SIDE`` pixels on a side. The message names the file.
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(p, "no such file")
    if p.is_dir():
        raise ImageError(p, "is a folder, not an image")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageError(p, f"cannot be read ({e.strerror or e})") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.load()  # forces full decode: truncated files fail here
            icc = im.info.get("icc_profile")
            mode16 = im.mode
            im = ImageOps.exif_transpose(im)
            rgb, alpha = _to_rgb_float(im)
    except UnidentifiedImageError:
        raise ImageError(p, "not an image (Pillow cannot identify the format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e)
        reason = "truncated or corrupt image" if "truncat" in msg.lower() or "broken" in msg.lower() else f"cannot decode ({msg})"
        raise ImageError(p, reason) from None
    except Image.DecompressionBombError as e:
        raise ImageError(p, f"too large to decode safely ({e})") from None
    if mode16 in ("RGB", "RGBA") and fmt in ("PNG", "TIFF"):
        deep = _read_16bit_rgb(p)
        if deep is not None and deep.shape[:2] == rgb.shape[:2]:
            rgb = deep
    h, w = rgb.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ImageError(p, f"too small ({w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} needed)")
    tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()
    info = {"icc_profile": icc} if icc else {}
    return LoadedImage(rgb=tensor, alpha=alpha, path=p, format=fmt, info=info)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest 8-bit level: ``round(clamp(x,0,1) * 255) / 255``.

    Ties (exactly k + 0.5 levels) round half to even, as ``torch.round`` does;
    values are never truncated, so 0.6/255 becomes 1/255 and 0.4/255 becomes 0.
    This is the image that an 8-bit PNG holds.
    """
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[3,H,W]`` float in [0,1] -> ``[H,W,3]`` uint8 by rounding (see :func:`quantize`)."""
    if x.ndim != 3 or x.shape[0] != 3:
        raise InputError(f"expected an image of shape [3,H,W], got {list(x.shape)}")
    arr = torch.round(x.detach().clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


def output_path(src: Path, out_dir: Path, fmt: str) -> Path:
    """Where the protected copy of ``src`` goes: same stem, suffix by ``fmt``."""
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "same":
        suffix = src.suffix.lower() or ".png"
        if suffix not in IMAGE_SUFFIXES:
            suffix = ".png"
    else:
        suffix = "." + fmt
    return out_dir / (src.stem + suffix)


def encode_image(
    x: torch.Tensor,
    fmt: str = "png",
    quality: int = 95,
    alpha: np.ndarray | None = None,
    info: dict[str, Any] | None = None,
) -> bytes:
    """Encode ``[3,H,W]`` in [0,1] to bytes in ``fmt`` (png, jpg/jpeg, webp, tif/tiff, bmp).

    PNG, TIFF and BMP are lossless: decoding gives back :func:`quantize` of ``x``.
    JPEG and WebP use ``quality``; WebP with ``quality=100`` is lossless.
    """
    arr = to_uint8(x)
    fmt = fmt.lower().lstrip(".")
    if alpha is not None and fmt in ("png", "webp", "tif", "tiff"):
        img = Image.fromarray(np.dstack([arr, alpha]), mode="RGBA")
    else:
        img = Image.fromarray(arr, mode="RGB")
    kwargs: dict[str, Any] = {}
    if info and info.get("icc_profile"):
        kwargs["icc_profile"] = info["icc_profile"]
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", **kwargs)
    elif fmt in ("jpg", "jpeg"):
        img.save(buf, format="JPEG", quality=int(quality), subsampling=0 if quality >= 90 else 2, **kwargs)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=int(quality), lossless=quality >= 100, **kwargs)
    elif fmt in ("tif", "tiff"):
        img.save(buf, format="TIFF", **kwargs)
    elif fmt == "bmp":
        img.save(buf, format="BMP")
    else:
        raise InputError(f"cannot write format {fmt!r}; use png, jpg, webp or tiff")
    return buf.getvalue()


def decode_bytes(data: bytes) -> torch.Tensor:
    """Decode encoded image bytes to ``[3,H,W]`` float in [0,1] (no orientation change)."""
    with Image.open(io.BytesIO(data)) as im:
        rgb, _ = _to_rgb_float(im)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()


def jpeg_roundtrip(x: torch.Tensor, quality: int = 90) -> torch.Tensor:
    """What a JPEG re-encode at ``quality`` makes of a batch ``[B,3,H,W]`` (or ``[3,H,W]``)."""
    if x.ndim == 3:
        return decode_bytes(encode_image(x, "jpg", quality)).to(x.device)
    return torch.stack([decode_bytes(encode_image(xi, "jpg", quality)) for xi in x]).to(x.device)


def save_image(
    x: torch.Tensor,
    path: str | os.PathLike[str],
    quality: int = 95,
    alpha: np.ndarray | None = None,
    info: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``[3,H,W]`` in [0,1] atomically; the format follows the suffix.

    The image is encoded in memory, written to a temporary file in the same
    folder and renamed into place, so a crash never leaves a half-written file.

    Raises:
        OutputError: the file exists (and ``overwrite`` is false) or the folder
            cannot be written.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputError(p, "already exists; not overwritten (choose another output folder or remove it)")
    data = encode_image(x, p.suffix.lstrip(".") or "png", quality=quality, alpha=alpha, info=info)
    folder = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + p.name + ".", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OutputError(folder, f"cannot write to this folder ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, p)
        else:
            # link() fails if the target appeared meanwhile: never clobber.
            try:
                os.link(tmp, p)
            except FileExistsError:
                raise OutputError(p, "already exists; not overwritten") from None
            except OSError:
                if p.exists():
                    raise OutputError(p, "already exists; not overwritten") from None
                os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def find_images(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (not recursive into hidden folders) into a sorted list of paths.

    Files given explicitly are kept whatever their suffix (so a bad file is
    reported, not silently skipped); files found in folders are kept only if
    their suffix is an image suffix.
    """
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES and not any(
                    part.startswith(".") for part in q.relative_to(p).parts
                ):
                    found.append(q)
        else:
            found.append(p)
    return found
