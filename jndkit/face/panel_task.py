"""Faces against a panel of recognisers as a task of the pipeline (:class:`FacePanelTask`).

:func:`~jndkit.face.panel.protect_faces` attacks every face of the photo (JND-bounded, through the
upload stand-in); the pipeline writes the result, re-reads the file and asks :meth:`FacePanelTask.judge`,
which runs :func:`~jndkit.face.panel.verify_faces` from scratch on the re-read file: every face, every
recogniser of the panel, the saved file and every transform of the upload suite. The record holds one
entry per face with its checks and its face-box PSNR, share above the JND and CIEDE2000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..images import LoadedImage
from ..pipeline import Attempt, ProgressFn, Record
from .panel import (
    DEFAULT_ALIGNMENTS,
    PANEL_JND,
    PANEL_STEPS,
    PANEL_STRENGTHS,
    PanelProtection,
    face_quality,
    protect_faces,
    verify_faces,
)
from .recognisers import parse_recognisers

__all__ = ["FacePanelRecord", "FacePanelTask", "face_attempt"]


def face_attempt(image: LoadedImage, record: Record, result: Any, min_prob: float) -> Attempt:
    """The pipeline's :class:`~jndkit.pipeline.Attempt` for a face result (``faces``, ``image``,
    ``engine_success``, ``strength``; the panel's or the hide's): a photo without a face is ``no-face``
    and nothing is written; otherwise the engine's fields go into ``record`` and ``result`` is the
    attempt's state for ``judge``."""
    if not result.faces:
        return Attempt(None, status="no-face",
                       reason=f"no face detected (MTCNN probability >= {min_prob:g}); nothing written")
    record.success_engine = result.engine_success
    record.strength = result.strength
    return Attempt(result.image, alpha=image.alpha, state=result)


@dataclass
class FacePanelRecord(Record):
    """A photo's record with ``faces``: per face ``box``, ``protected``, ``checks`` (recogniser x
    upload: found, distance, threshold, protected), the ``strength`` its crop was attacked with and
    the face-box ``psnr``, ``above_jnd``,
    ``ciede2000_mean``, ``ciede2000_max``."""

    faces: list[dict[str, Any]] = field(default_factory=list)
    recognisers: list[str] = field(default_factory=list)


@dataclass
class FacePanelTask:
    """``jndkit protect --task face --model dlib,facenet_casia`` for the pipeline."""

    recognisers: str | None = None
    goal: str = "dodge"
    strengths: tuple[float, ...] = PANEL_STRENGTHS
    steps: int = PANEL_STEPS
    suite: str = "social"
    alignments: int = DEFAULT_ALIGNMENTS
    min_prob: float = 0.9
    seed: int = 0
    jnd: str = PANEL_JND
    fmt: str = "png"
    quality: int = 95
    name: str = "face"

    def __post_init__(self) -> None:
        self._members = parse_recognisers(self.recognisers)  # fails early on an unknown name
        from ..perception.jnd import JND_MODELS

        if self.jnd not in JND_MODELS:
            raise InputError(f"JND model must be one of {', '.join(JND_MODELS)}, got {self.jnd!r}")

    def config_json(self) -> dict[str, Any]:
        return {"task": "face", "goal": self.goal, "recognisers": [m.name for m in self._members],
                "thresholds": {m.name: m.threshold for m in self._members},
                "kappa": {m.name: m.kappa for m in self._members}, "strengths": list(self.strengths),
                "steps": self.steps, "suite": self.suite, "alignments": self.alignments, "jnd": self.jnd,
                "min_prob": self.min_prob,
                "seed": self.seed, "format": self.fmt, "quality": self.quality}

    def new_record(self, src: Path) -> FacePanelRecord:
        return FacePanelRecord(input=str(src), task="face", recognisers=[m.name for m in self._members])

    def protect(self, image: LoadedImage, dst: Path, record: Record, progress: ProgressFn | None) -> Attempt:
        # the last strength is judged by :meth:`judge` on the re-read file, not twice
        p = protect_faces(image.rgb, self._members, goal=self.goal, strengths=self.strengths, steps=self.steps,
                          suite=self.suite, alignments=self.alignments, min_prob=self.min_prob, seed=self.seed,
                          verify_last=False, progress=progress, jnd=self.jnd)
        return face_attempt(image, record, p, self.min_prob)

    def judge(self, attempt: Attempt, clean: torch.Tensor, saved: torch.Tensor, record: Record) -> bool:
        """Every face, every recogniser, the saved file and every upload transform, from scratch."""
        assert isinstance(record, FacePanelRecord)
        state: PanelProtection = attempt.state
        checks = verify_faces(saved, clean, self._members, self.suite, min_prob=self.min_prob,
                              clean_faces=state.faces)
        record.faces = [{**c, "strength": st, **face_quality(clean, saved, f.box)}
                        for c, f, st in zip(checks, state.faces, state.face_strengths, strict=True)]
        record.success = all(all(k["protected"] for k in c["checks"] if k["transform"] == "saved") for c in checks)
        record.robust_success = all(c["protected"] for c in checks)
        return bool(record.robust_success)

    def why_not(self, record: Record) -> str:
        for i, face in enumerate(getattr(record, "faces", [])):
            for k in face["checks"]:
                if not k["protected"]:
                    more = ("" if max(self.strengths) >= 10 else
                            f"; a larger --strength than {max(self.strengths):g} may protect it, visibly")
                    return (f"face {i + 1}: {k['recogniser']} still matches after {k['transform']} "
                            f"(distance {k['distance']} < {k['threshold']}){more}")
        return "every face protected"

    def summarise(self, records: Sequence[Record]) -> dict[str, Any]:
        faces = [f for r in records for f in getattr(r, "faces", [])]
        psnr = [f["psnr"] for f in faces if f.get("psnr") is not None]
        jnd = [f["above_jnd"] for f in faces if f.get("above_jnd") is not None]
        return {"faces": len(faces), "faces_protected": sum(bool(f["protected"]) for f in faces),
                "mean_face_psnr": round(sum(psnr) / len(psnr), 3) if psnr else None,
                "mean_face_above_jnd": round(sum(jnd) / len(jnd), 6) if jnd else None}
