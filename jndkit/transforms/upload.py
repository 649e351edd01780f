"""Real upload transforms (Pillow), versioned suites of them, and the parser of their names.

Not differentiable; success of a protection is decided only on their output (see :mod:`jndkit.transforms`).
Moved verbatim from the former ``jndkit/transforms.py`` (issue 11).

Choices (documented here, tested in ``tests/test_transforms.py``):

* Resize filter: ``PIL.Image.Resampling.LANCZOS`` (platforms downscale with Lanczos or bicubic
  filters; Lanczos is the sharper of the two and Pillow's best downscaler). Photos are never
  upscaled: a long-side transform whose target is not smaller than the photo's long side leaves the
  size alone (:meth:`UploadTransform.applies_to` says whether it resizes at all). The new size is
  ``round(side * scale)`` (at least 1 pixel); for a long-side transform the long side becomes exactly
  ``long_side`` and the other side ``round(other * long_side / long)``.
* JPEG: Pillow (libjpeg-turbo), baseline, ``subsampling=2`` (4:2:0, what platforms serve), no
  ``optimize``/``progressive`` flags. The ``jpeg90`` suite alone keeps 4:4:4 so that it reproduces
  :func:`jndkit.images.jpeg_roundtrip` (the old ``--robust jpeg:90``) bit for bit.
* WebP: Pillow's encoder with ``quality`` and its default method (4), lossy.
* The output of :meth:`UploadTransform.apply` is the decoded image at the *new* size: victims
  resize internally, so sizes may differ from the input.
* Suites carry a version string (``"social-v1"``) that must change whenever a transform changes,
  so stored verdicts say which uploads they were judged after.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import torch
from PIL import Image

from ..errors import InputError
from ..images import decode_bytes, to_uint8

# ---------------------------------------------------------------------------------------------
# Real transforms (Pillow)
# ---------------------------------------------------------------------------------------------

CODECS = ("jpeg", "webp", "none")
RESAMPLE = Image.Resampling.LANCZOS
"""Pillow filter for every downscale of the suite."""


@dataclass(frozen=True)
class UploadTransform:
    """One real upload transform: optional downscale (Pillow Lanczos), then encode and decode.

    Attributes:
        name: canonical name, e.g. ``"jpeg85"``, ``"x0.75+jpeg85"``, ``"long1080+jpeg85"``,
            ``"webp80"`` (see :func:`parse_transform`).
        scale: resize factor in (0, 1] (``None``: no resize by factor).
        long_side: resize so that the long side is this many pixels, only for photos whose long
            side is larger (``None``: no such resize). At most one of ``scale``/``long_side``.
        codec: ``"jpeg"``, ``"webp"`` or ``"none"`` (lossless PNG round trip: only the resize).
        quality: encoder quality 1-100.
        subsampling: Pillow's JPEG chroma subsampling (2 = 4:2:0, 0 = 4:4:4); ignored otherwise.
    """

    name: str
    scale: float | None = None
    long_side: int | None = None
    codec: str = "jpeg"
    quality: int = 85
    subsampling: int = 2

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise InputError(f"upload transform {self.name!r}: codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if not 1 <= int(self.quality) <= 100:
            raise InputError(f"upload transform {self.name!r}: quality must be in 1..100, got {self.quality}")
        if self.scale is not None and not 0.0 < self.scale <= 1.0:
            raise InputError(f"upload transform {self.name!r}: scale must be in (0, 1], got {self.scale}")
        if self.long_side is not None and self.long_side < 8:
            raise InputError(f"upload transform {self.name!r}: long side must be at least 8, got {self.long_side}")
        if self.scale is not None and self.long_side is not None:
            raise InputError(f"upload transform {self.name!r}: give scale or long_side, not both")
        if self.subsampling not in (0, 1, 2):
            raise InputError(f"upload transform {self.name!r}: subsampling must be 0, 1 or 2, got {self.subsampling}")

    def applies_to(self, height: int, width: int) -> bool:
        """Whether this transform is part of the upload of a ``height`` x ``width`` photo.

        Long-side transforms apply only to photos whose long side exceeds ``long_side``
        (platforms do not upscale); all others always apply.
        """
        return self.long_side is None or max(height, width) > self.long_side

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of the decoded result for an input of that size."""
        if self.scale is not None and self.scale != 1.0:
            return max(1, round(height * self.scale)), max(1, round(width * self.scale))
        if self.long_side is not None and max(height, width) > self.long_side:
            f = self.long_side / max(height, width)
            if height >= width:
                return self.long_side, max(1, round(width * f))
            return max(1, round(height * f)), self.long_side
        return height, width

    def factor(self, height: int, width: int) -> float:
        """The resize factor this transform applies to a ``height`` x ``width`` photo (1.0: none)."""
        if self.scale is not None:
            return float(self.scale)
        if self.long_side is not None and max(height, width) > self.long_side:
            return self.long_side / max(height, width)
        return 1.0

    def for_crop_of(self, height: int, width: int) -> UploadTransform:
        """This transform as a crop of a ``height`` x ``width`` photo meets it: the resize becomes the
        whole photo's factor (``long1080`` on a 4000-px photo scales every crop by 0.27), the codec is
        unchanged. With crop corners on a 64-px grid the x0.5 / x0.75 resizes and the 8x8 (16x16 in
        chroma) JPEG blocks of the crop fall where they fall in the whole photo; the long-side factors
        are not on such a grid, so those agree only up to the resampling phase."""
        f = self.factor(height, width)
        return UploadTransform(self.name, scale=None if f == 1.0 else f, codec=self.codec, quality=self.quality,
                               subsampling=self.subsampling)

    def _encode_pil(self, img: Image.Image) -> bytes:
        h, w = img.height, img.width
        oh, ow = self.output_size(h, w)
        if (oh, ow) != (h, w):
            img = img.resize((ow, oh), RESAMPLE)
        buf = io.BytesIO()
        if self.codec == "jpeg":
            img.save(buf, format="JPEG", quality=int(self.quality), subsampling=self.subsampling)
        elif self.codec == "webp":
            img.save(buf, format="WEBP", quality=int(self.quality))
        else:
            img.save(buf, format="PNG")
        return buf.getvalue()

    def apply_bytes(self, x3: torch.Tensor) -> bytes:
        """The file a platform would serve: ``[3,H,W]`` in [0,1] -> encoded bytes.

        The image is first rounded to 8 bits (:func:`jndkit.images.to_uint8`), as the saved
        protected file holds it.
        """
        return self._encode_pil(Image.fromarray(to_uint8(x3), mode="RGB"))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Real transform of a batch: ``[B,3,H,W]`` (or ``[3,H,W]``) in [0,1] -> decoded ``[B,3,h,w]``.

        ``(h, w)`` is :meth:`output_size` of ``(H, W)``. Values are multiples of 1/255 in [0,1],
        on the device and in the dtype of ``x``. Not differentiable (the result is detached).
        """
        single = x.ndim == 3
        xb = x.unsqueeze(0) if single else x
        if xb.ndim != 4 or xb.shape[1] != 3:
            raise InputError(f"upload transform {self.name!r}: expected [B,3,H,W], got {list(x.shape)}")
        out = torch.stack([decode_bytes(self.apply_bytes(xi)) for xi in xb.detach().cpu()])
        out = out.to(device=x.device, dtype=x.dtype)
        return out[0] if single else out


_NAME_RE = re.compile(
    r"^(?:(?:x(?P<scale>\d*\.?\d+)|long(?P<long>\d+))(?:\+|$))?(?:(?P<codec>jpeg|webp)(?P<q>\d+))?$"
)
_NAME_HELP = "expected e.g. jpeg85, webp80, x0.75+jpeg85, long1080+jpeg85 or x0.5"


def parse_transform(name: str) -> UploadTransform:
    """Build a transform from its name.

    Grammar: ``[x<scale>|long<pixels>][+](jpeg|webp)<quality>``, with at least one part;
    a resize alone (``"x0.5"``) has codec ``"none"``. Names are canonicalised
    (``"x.75+jpeg85"`` -> ``"x0.75+jpeg85"``).

    Raises:
        InputError: the name does not follow the grammar or a value is out of range.
    """
    text = name.strip().lower()
    m = _NAME_RE.match(text)
    if not text or m is None or (m.group("codec") is None and m.group("scale") is None and m.group("long") is None):
        raise InputError(f"unknown upload transform {name!r}: {_NAME_HELP}")
    if m.group("codec") is not None and (m.group("scale") or m.group("long")) and "+" not in text:
        raise InputError(f"unknown upload transform {name!r}: {_NAME_HELP}")
    scale = float(m.group("scale")) if m.group("scale") else None
    long_side = int(m.group("long")) if m.group("long") else None
    codec = m.group("codec") or "none"
    quality = int(m.group("q")) if m.group("q") else 100
    parts = []
    if scale is not None:
        parts.append(f"x{scale:g}")
    if long_side is not None:
        parts.append(f"long{long_side}")
    if codec != "none":
        parts.append(f"{codec}{quality}")
    return UploadTransform("+".join(parts), scale=scale, long_side=long_side, codec=codec, quality=quality)


@dataclass(frozen=True)
class UploadSuite:
    """A named, versioned set of real upload transforms.

    Attributes:
        name: e.g. ``"social"``.
        version: changes whenever any transform changes (``"social-v1"``).
        transforms: the transforms, in report order.
        description: one line for reports and ``--help``.
    """

    name: str
    version: str
    transforms: tuple[UploadTransform, ...]
    description: str

    def for_size(self, height: int, width: int) -> tuple[UploadTransform, ...]:
        """The transforms that apply to a ``height`` x ``width`` photo (see :meth:`UploadTransform.applies_to`)."""
        return tuple(t for t in self.transforms if t.applies_to(height, width))

    @property
    def names(self) -> tuple[str, ...]:
        """Names of all transforms, in order."""
        return tuple(t.name for t in self.transforms)


SOCIAL_V1 = (
    "jpeg95", "jpeg85", "jpeg75", "x0.5+jpeg85", "x0.75+jpeg85", "long2048+jpeg85", "long1080+jpeg85", "webp80",
)

SUITES: dict[str, UploadSuite] = {
    "social": UploadSuite(
        name="social",
        version="social-v1",
        transforms=tuple(parse_transform(n) for n in SOCIAL_V1),
        description="what photo platforms do to an upload: JPEG 95/85/75 (4:2:0), x0.5 and x0.75 then JPEG 85, "
        "long side 2048 and 1080 then JPEG 85 (large photos only), WebP 80",
    ),
    "none": UploadSuite(name="none", version="none-v1", transforms=(), description="no upload transform (research setting)"),
    "jpeg90": UploadSuite(
        name="jpeg90",
        version="jpeg90-v1",
        transforms=(UploadTransform("jpeg90", codec="jpeg", quality=90, subsampling=0),),
        description="JPEG 90, 4:4:4, as jndkit.images.jpeg_roundtrip (the former --robust jpeg:90)",
    ),
}


def get_suite(spec: str) -> UploadSuite:
    """A suite by name (``"social"``, ``"none"``, ``"jpeg90"``) or a comma list of transform names.

    A list such as ``"jpeg85,x0.75+jpeg85"`` gives a suite named ``"custom"`` whose version is
    ``"custom:"`` followed by the canonical names, so equal lists compare equal.

    Raises:
        InputError: unknown suite or transform name, empty list, or a name given twice.
    """
    key = spec.strip().lower()
    if key in SUITES:
        return SUITES[key]
    names = [p.strip() for p in key.split(",")]
    if not key or any(not p for p in names):
        raise InputError(
            f"unknown upload suite {spec!r}: use one of {', '.join(SUITES)} or a comma list of transforms ({_NAME_HELP})"
        )
    try:
        transforms = tuple(parse_transform(p) for p in names)
    except InputError as err:
        raise InputError(
            f"unknown upload suite {spec!r}: not a suite name ({', '.join(SUITES)}) and {err}"
        ) from None
    canon = [t.name for t in transforms]
    if len(set(canon)) != len(canon):
        raise InputError(f"upload suite {spec!r} names a transform twice")
    return UploadSuite(
        name="custom", version="custom:" + ",".join(canon), transforms=transforms, description="custom: " + ", ".join(canon)
    )
