"""Per-photo results of face protection: :class:`FaceProtection` (the protected image in memory),
:class:`FaceRecord` (one photo of ``report.json`` of ``jndkit protect --task face``) and their
:func:`summarise`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..attacks import AttackResult
from .detect import Face

__all__ = ["FaceProtection", "FaceRecord", "summarise"]


@dataclass
class FaceProtection:
    """What :meth:`~jndkit.face.protect.FaceProtector.protect_image` gives for one photo.

    Attributes:
        x_adv: ``[3,H,W]`` protected 8-bit image (``None`` when the photo has no face).
        faces: the clean faces that were protected (MTCNN, probability >= ``min_prob``).
        checks: per face, the from-scratch check of the last round (see :class:`FaceRecord`).
        success: every face passed the from-scratch check (after the output encoding, and after the
            robust re-encoding when asked).
        result: the engine's result of the last round.
        rounds: how many engine runs the photo took.
        clean_embeddings: ``[F,128]`` descriptors of the clean faces (the check's own pipeline).
        references: per face, the descriptors ``[k,128]`` it is judged against (its own clean one,
            its gallery identity, or the impersonation target).
        reference_names: per face, the gallery name of its reference (``None``: its own descriptor).
    """

    x_adv: torch.Tensor | None
    faces: list[Face]
    checks: list[dict[str, Any]]
    success: bool
    result: AttackResult | None
    rounds: int
    clean_embeddings: torch.Tensor
    references: list[torch.Tensor]
    reference_names: list[str | None]


@dataclass
class FaceRecord:
    """One photo of ``report.json`` (``jndkit protect --task face``).

    Attributes:
        status: ``protected`` (every face passed the from-scratch check of the written file, and of
            its robust re-encoding when asked; only then does the photo take its output name),
            ``failed`` (some face did not: **nothing is written**, not even the best attempt, so
            ``output`` is ``None``, no unprotected copy can be shared by mistake and ``resume`` tries
            the photo again; the other fields describe the attempt as it would have been saved),
            ``no-face`` (no face found; nothing written; counts as not protected), ``error``
            (unreadable file, existing output, ...), ``skipped`` (``resume`` and the output exists).
        output: the written file, ``None`` unless ``protected``.
        faces: per protected face: ``box``, ``prob`` (clean MTCNN), ``reference`` (the gallery identity it
            is judged against, ``"self"`` for its own clean descriptor), ``distance_before``,
            ``identity_before``/``gallery_distance_before`` (nearest gallery identity), then from the
            written file: ``detected_after``, ``box_after``, ``prob_after``, ``distance_after`` (to the
            reference), ``identity_after``, ``gallery_distance_after``, ``protected``, and with
            ``robust``: ``robust_protected``, ``robust_distance_after``; ``psnr``/``ssim`` over its box.
        success: every face protected in the file as written (re-read, detected and aligned from scratch).
        success_engine: the engine's own verdict on the 8-bit image at its fixed alignments.
        margin: the engine's goal margin (distance units; logit for ``hide``).
        psnr, ssim, l2, linf, changed_values: whole photo, written file against the 8-bit original.
        psnr_faces: the lowest PSNR over the face boxes.
        rounds: engine runs (see :class:`~jndkit.face.protect.FaceProtector`).
    """

    input: str
    output: str | None = None
    status: str = "error"
    error: str | None = None
    goal: str = "dodge"
    method: str = "ddn"
    width: int | None = None
    height: int | None = None
    faces: list[dict[str, Any]] = field(default_factory=list)
    success: bool = False
    success_engine: bool = False
    robust_success: bool | None = None
    margin: float | None = None
    iterations: int | None = None
    tries: int | None = None
    rounds: int | None = None
    seconds: float | None = None
    psnr: float | None = None
    psnr_faces: float | None = None
    ssim: float | None = None
    l2: float | None = None
    linf: float | None = None
    changed_values: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (non-finite numbers become ``None``)."""
        out: dict[str, Any] = _finite(asdict(self))
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FaceRecord:
        rec = cls(input=str(d["input"]))
        for k, v in d.items():
            if hasattr(rec, k):
                setattr(rec, k, v)
        return rec


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def summarise(records: Sequence[FaceRecord]) -> dict[str, Any]:
    """Counts over photos and faces, and means over protected photos.

    ``success_rate`` is protected photos over photos that were attempted or had no face
    (``no-face`` counts as not protected); ``face_success_rate`` is over the faces found.
    """
    done = [r for r in records if r.status in ("protected", "failed", "no-face")]
    ok = [r for r in records if r.status == "protected"]
    faces = [f for r in records if r.status in ("protected", "failed") for f in r.faces]

    def mean(vals: list[float | None]) -> float | None:
        finite = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
        return round(sum(finite) / len(finite), 4) if finite else None

    return {
        "images": len(records),
        "protected": len(ok),
        "failed": sum(r.status == "failed" for r in records),
        "no_face": sum(r.status == "no-face" for r in records),
        "errors": sum(r.status == "error" for r in records),
        "skipped": sum(r.status == "skipped" for r in records),
        "faces": len(faces),
        "faces_protected": sum(bool(f.get("protected")) and f.get("robust_protected", True) is not False for f in faces),
        "success_rate": round(len(ok) / len(done), 4) if done else None,
        "face_success_rate": (round(sum(bool(f.get("protected")) and f.get("robust_protected", True) is not False
                                        for f in faces) / len(faces), 4) if faces else None),
        "mean_psnr": mean([r.psnr for r in ok]),
        "mean_psnr_faces": mean([r.psnr_faces for r in ok]),
        "mean_ssim": mean([r.ssim for r in ok]),
        "mean_seconds": mean([r.seconds for r in done]),
    }
