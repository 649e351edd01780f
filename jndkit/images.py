"""Decode, quantize and write images.

Everything inside jndkit works on float RGB tensors ``[3,H,W]`` (or batches
``[B,3,H,W]``) with values in [0,1]. This module is the only place that knows
about files:

* :func:`load_image` decodes the formats of :data:`IMAGE_SUFFIXES` (one list, used
  for folder scans and named files alike) with Pillow, applies the EXIF
  orientation, converts greyscale, palette, CMYK (through its ICC profile, to
  sRGB) and 16-bit images to 8-bit RGB levels (16-bit values rounded,
  ``round(v * 255 / 65535)``) and keeps an alpha channel aside so
  :func:`save_image` can restore it. Animated images and multi-page TIFFs are
  refused: jndkit protects still images only.
* :func:`quantize` rounds to the nearest 1/255 (never truncates): the 8-bit
  image that a saved PNG holds.
* :func:`save_image` writes atomically (temporary file in the target folder,
  then rename), refuses to overwrite an existing file, gives the file the mode
  the user's umask asks for, writes greyscale sources back as greyscale when
  the three channels are still equal, and embeds an ICC profile only when it
  describes the written colour space (never a CMYK profile in an RGB file).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError, features

from .errors import ImageError, InputError, OutputError
from .jsonio import write_bytes_atomic

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif") + (
    (".avif",) if features.check("avif") else ()
)
"""Every suffix jndkit reads: folder scans keep these files, and a named file must decode to one of
their formats (:data:`READ_FORMATS`). ``.avif`` only where this Pillow was built with AVIF."""
READ_FORMATS: frozenset[str] = frozenset(
    {fmt for ext, fmt in Image.registered_extensions().items() if ext in IMAGE_SUFFIXES} | {"MPO"}
)
"""Pillow format names of :data:`IMAGE_SUFFIXES` (``MPO`` is how Pillow names many camera JPEGs)."""
WRITE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
"""Suffixes :func:`save_image` writes. GIF (256 colours) would destroy the perturbation and AVIF is
not written: ``output_path(..., "same")`` gives ``.png`` for those."""
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
        info: what :func:`save_image` needs to write it back faithfully: ``icc_profile`` (bytes;
            only a profile that describes ``rgb``, never a CMYK one) and ``grey`` (``True`` when
            the source was greyscale, so an output whose channels are still equal is written as
            greyscale). Pass it on as ``save_image(..., info=img.info)``.
        mode: Pillow's mode of the source (``"RGB"``, ``"L"``, ``"I;16"``, ``"CMYK"``, ``"P"`` ...).
        bit_depth: bits per sample of the source (8 or 16); 16-bit values are rounded to 8-bit levels.
        notes: one line per conversion a report may want to show (16-bit rounded, CMYK converted
            with its ICC profile, MPO primary image kept).
    """

    rgb: torch.Tensor
    alpha: np.ndarray | None = None
    path: Path | None = None
    format: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    mode: str = "RGB"
    bit_depth: int = 8
    notes: tuple[str, ...] = ()

    @property
    def grey(self) -> bool:
        """The source was greyscale (``L``, ``LA``, ``1``, ``I;16``, ``I``, ``F``)."""
        return bool(self.info.get("grey", False))

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
        ints = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or ints.max() > 255 else 255.0
        int_levels = np.round(np.clip(ints / top, 0.0, 1.0) * 255.0)  # round(v*255/65535), not v >> 8
        return np.repeat(int_levels[:, :, None] / 255.0, 3, axis=2).astype(np.float32), alpha
    if mode == "F":
        values = np.asarray(img).astype(np.float64)
        scale = 255.0 if values.max() <= 1 else 1.0  # floats in [0,1], or already grey levels
        levels = np.round(np.clip(values * scale, 0.0, 255.0))
        return np.repeat(levels[:, :, None] / 255.0, 3, axis=2).astype(np.float32), alpha
    if mode in ("RGB;16", "RGB;16B"):  # pragma: no cover - Pillow rarely exposes these
        img = img.convert("RGB")
    if mode != "RGB":
        img = img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.asarray(img).astype(np.float32) / 255.0, alpha


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# EXIF orientation -> the numpy operation that displays the stored array upright (EXIF 2.3, tag 0x0112);
# the same mapping as ImageOps.exif_transpose, needed here for 16-bit arrays Pillow cannot hold.
_ORIENT: dict[int, Any] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``[H,W,...]`` array."""
    op = _ORIENT.get(int(orientation))
    return np.ascontiguousarray(op(arr)) if op else arr


def _read_16bit_rgb(data: bytes, fmt: str | None) -> np.ndarray | None:
    """Full-depth ``[H,W,3|4]`` uint16 samples of a 16-bit RGB(A) PNG or TIFF, else ``None``.

    Pillow holds RGB in 8 bits and cuts the low byte of each 16-bit sample (29 % of values one
    level off the rounded value). PNG is decoded with ``torchvision.io.decode_png`` (libpng, keeps
    16 bits), TIFF with ``tifffile`` (a scikit-image dependency).
    """
    if fmt == "PNG":
        # IHDR: bit depth at byte 24, colour type at 25 (2 = RGB, 6 = RGBA)
        if len(data) < 26 or data[24] != 16 or data[25] not in (2, 6):
            return None
        # torchvision 0.29 warns at each call that its codecs move to torchcodec; while they are
        # there they are the one 16-bit PNG decoder among our dependencies.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                from torchvision.io import ImageReadMode, decode_png

                raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                t = decode_png(raw, mode=ImageReadMode.UNCHANGED)
            except (ImportError, RuntimeError):  # pragma: no cover - no codecs: Pillow's 8 bits
                return None
        return t.permute(1, 2, 0).numpy().astype(np.uint16)
    if fmt == "TIFF":
        try:
            import tifffile

            arr = tifffile.imread(io.BytesIO(data))
        except (OSError, ValueError, KeyError):  # TiffFileError is a ValueError
            return None
        if arr.dtype == np.uint16 and arr.ndim == 3 and arr.shape[2] in (3, 4):
            return arr
    return None


def _cmyk_to_srgb(im: Image.Image, icc: bytes) -> Image.Image | None:
    """Convert a CMYK image to sRGB through its embedded profile (LittleCMS); ``None`` if the profile is unusable."""
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if _icc_space(icc) != "CMYK":
            return None
        out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None
    return out if isinstance(out, Image.Image) else None


def _icc_space(icc: bytes | None) -> str | None:
    """Colour space signature of an ICC profile (header bytes 16-19: ``RGB``, ``GRAY``, ``CMYK`` ...)."""
    if not icc or len(icc) < 20:
        return None
    return icc[16:20].decode("ascii", "replace").strip()


def load_image(path: str | os.PathLike[str]) -> LoadedImage:
    """Read an image file as RGB float ``[3,H,W]`` in [0,1], on 8-bit levels.

    Conversions (each recorded in :attr:`LoadedImage.notes`): EXIF orientation applied; 16-bit
    samples rounded to 8-bit levels (``round(v * 255 / 65535)``); CMYK with an ICC profile
    converted to sRGB through it (without one, Pillow's plain conversion), and the CMYK profile
    dropped; an MPO (camera JPEG with extra pictures) keeps its primary image.

    Raises:
        ImageError: the file is missing, unreadable, not an image, in a format outside
            :data:`IMAGE_SUFFIXES`, animated or multi-page, truncated, or smaller than
            ``MIN_SIDE`` pixels on a side. The message names the file and the reason.
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
    notes: list[str] = []
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            if fmt not in READ_FORMATS:
                raise ImageError(p, f"format {fmt} not supported (jndkit reads {', '.join(IMAGE_SUFFIXES)})")
            frames = int(getattr(im, "n_frames", 1) or 1)
            if frames > 1 and fmt == "MPO":
                notes.append(f"MPO with {frames} pictures: the primary image is protected")
            elif frames > 1:
                what = "multi-page TIFF" if fmt == "TIFF" else "animated image"
                raise ImageError(p, f"{what} with {frames} frames; jndkit protects still images only")
            im.load()  # forces full decode: truncated files fail here
            icc = im.info.get("icc_profile")
            mode = im.mode
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            deep = _read_16bit_rgb(data, fmt) if mode in ("RGB", "RGBA") else None
            converted = None
            if mode == "CMYK" and icc:
                converted = _cmyk_to_srgb(im, icc)
                notes.append(
                    "CMYK converted to sRGB with its ICC profile" if converted is not None
                    else "CMYK ICC profile unusable: plain CMYK to RGB conversion"
                )
                icc = None  # a CMYK profile never travels into an RGB file
            pic: Image.Image = im
            if mode == "CMYK" and converted is not None:
                converted.info["exif"] = im.info.get("exif", b"")
                pic = converted
            if deep is None:
                rgb, alpha = _to_rgb_float(ImageOps.exif_transpose(pic))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(p, "not an image (Pillow cannot identify the format)") from None
    except (OSError, SyntaxError, ValueError, RuntimeError) as e:
        msg = str(e)
        reason = "truncated or corrupt image" if "truncat" in msg.lower() or "broken" in msg.lower() else f"cannot decode ({msg})"
        raise ImageError(p, reason) from None
    except Image.DecompressionBombError as e:
        raise ImageError(p, f"too large to decode safely ({e})") from None
    bit_depth = 16 if deep is not None or mode.startswith("I;16") else 8
    if deep is not None:
        deep = _orient(deep, orientation)
        levels = np.round(deep.astype(np.float64) / 257.0)  # v * 255 / 65535, rounded
        rgb = (levels[:, :, :3] / 255.0).astype(np.float32)
        alpha = levels[:, :, 3].astype(np.uint8) if deep.shape[2] == 4 else None
    if bit_depth == 16:
        notes.append("16-bit samples rounded to 8-bit levels")
    h, w = rgb.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ImageError(p, f"too small ({w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} needed)")
    tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()
    info: dict[str, Any] = {}
    grey = mode in _GREY_MODES
    if icc and _icc_space(icc) == ("GRAY" if grey else "RGB"):
        info["icc_profile"] = icc
    if grey:
        info["grey"] = True
    return LoadedImage(
        rgb=tensor, alpha=alpha, path=p, format=fmt, info=info, mode=mode, bit_depth=bit_depth, notes=tuple(notes)
    )


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
        if suffix not in WRITE_SUFFIXES:
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
    With ``info["grey"]`` (a greyscale source, see :class:`LoadedImage`) and three equal channels,
    the image is written as greyscale (``L``/``LA``; BMP and WebP have none and stay RGB).
    ``info["icc_profile"]`` is embedded only if it describes the written colour space (RGB or GRAY).
    """
    arr = to_uint8(x)
    fmt = fmt.lower().lstrip(".")
    grey = bool(info and info.get("grey")) and fmt in ("png", "jpg", "jpeg", "tif", "tiff") and bool(
        np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 0], arr[:, :, 2])
    )
    if grey:
        img = Image.fromarray(arr[:, :, 0], mode="L")
        if alpha is not None and fmt in ("png", "tif", "tiff"):
            img = Image.merge("LA", (img, Image.fromarray(alpha, mode="L")))
    elif alpha is not None and fmt in ("png", "webp", "tif", "tiff"):
        img = Image.fromarray(np.dstack([arr, alpha]), mode="RGBA")
    else:
        img = Image.fromarray(arr, mode="RGB")
    kwargs: dict[str, Any] = {}
    icc = info.get("icc_profile") if info else None
    if icc and _icc_space(icc) == ("GRAY" if grey else "RGB"):
        kwargs["icc_profile"] = icc
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

    The image is encoded in memory (see :func:`encode_image` for greyscale and ICC
    profiles), written to a temporary file in the same folder and renamed into
    place, so a crash never leaves a half-written file. The file gets the mode
    ``0o666 & ~umask``, like any file the user writes (not mkstemp's 0600).

    Raises:
        OutputError: the file exists (and ``overwrite`` is false) or the folder
            cannot be written.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputError(p, "already exists; not overwritten (choose another output folder or remove it)")
    data = encode_image(x, p.suffix.lstrip(".") or "png", quality=quality, alpha=alpha, info=info)
    write_bytes_atomic(data, p, overwrite=overwrite)
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
