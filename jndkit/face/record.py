"""Per-photo results of face protection: :class:`FaceProtection` (the protected image in memory),
:class:`FaceRecord` (one photo of ``report.json`` of ``jndkit protect --task face``) and their
:func:`summarise`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attacks import AttackResult
from ..pipeline import Record
from ..pipeline import summarise as summarise_records
from .detect import Face

__all__ = ["FaceProtection", "FaceRecord", "face_summary", "summarise"]


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
class FaceRecord(Record):
    """One photo of ``report.json`` of ``jndkit protect --task face``: the common fields of
    :class:`~jndkit.pipeline.Record` (status, quality numbers of the whole photo, written file
    against the 8-bit original) and the faces.

    Attributes:
        goal, method: the face goal and the attack method.
        faces: per protected face: ``box``, ``prob`` (clean MTCNN), ``reference`` (the gallery identity it
            is judged against, ``"self"`` for its own clean descriptor), ``distance_before``,
            ``identity_before``/``gallery_distance_before`` (nearest gallery identity), then from the
            written file: ``detected_after``, ``box_after``, ``prob_after``, ``distance_after`` (to the
            reference), ``identity_after``, ``gallery_distance_after``, ``protected``, and with
            ``robust``: ``robust_protected``, ``robust_distance_after``; ``psnr``/``ssim`` over its box.
        psnr_faces: the lowest PSNR over the face boxes.
        rounds: engine runs (see :class:`~jndkit.face.protect.FaceProtector`).
    """

    task: str = "face"
    goal: str = "dodge"
    method: str = "ddn"
    faces: list[dict[str, Any]] = field(default_factory=list)
    rounds: int | None = None
    psnr_faces: float | None = None

    def caption(self, which: str) -> list[str]:
        lines = []
        for i, f in enumerate(self.faces, 1):
            if which == "original":
                lines.append(f"face {i}: {f.get('reference')} (distance {f.get('distance_before')})")
            else:
                d = f.get("distance_after")
                state = "protected" if f.get("protected") else "recognised"
                lines.append(f"face {i}: {state}" + (f", distance {d:.3f}" if isinstance(d, (int, float)) else ""))
        return lines


def summarise(records: Sequence[Record]) -> dict[str, Any]:
    """Counts over photos and faces, and means over protected photos.

    ``success_rate`` is protected photos over photos that were attempted or had no face
    (``no-face`` counts as not protected); ``face_success_rate`` is over the faces found.
    """
    out = summarise_records(records)
    out.update(face_summary(records))
    return out


def face_summary(records: Sequence[Record]) -> dict[str, Any]:
    """What the face task adds to :func:`jndkit.pipeline.summarise`: face counts and face PSNR."""
    faces = [f for r in records if r.status in ("protected", "failed") for f in getattr(r, "faces", [])]
    ok_faces = sum(bool(f.get("protected")) and f.get("robust_protected", True) is not False for f in faces)
    psnr_faces = [float(v) for r in records if r.status == "protected"
                  and (v := getattr(r, "psnr_faces", None)) is not None and math.isfinite(float(v))]
    return {
        "no_face": sum(r.status == "no-face" for r in records),
        "faces": len(faces),
        "faces_protected": ok_faces,
        "face_success_rate": round(ok_faces / len(faces), 4) if faces else None,
        "mean_psnr_faces": round(sum(psnr_faces) / len(psnr_faces), 4) if psnr_faces else None,
    }
