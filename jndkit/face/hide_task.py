"""Hiding faces inside the JND budget as a task of the pipeline (:class:`HideTask`).

``jndkit protect --task face --goal hide`` (without ``--research``): :func:`~jndkit.face.hide.hide_faces`
attacks every face of the photo (shield, JND-bounded, against MTCNN, through the upload suite); the
pipeline writes the result, re-reads the file and asks :meth:`HideTask.judge`, which judges the
re-read file from scratch: a fresh stock MTCNN on the file and after every transform of the upload
suite, and the held-out detectors (dlib's HOG and CNN detectors, :mod:`jndkit.face.judges`, never
attacked) on the same images. The file takes its output name only when the verdict holds.

**What "hidden" means.** By default (``require_held_out=True``) a face is hidden only when MTCNN *and*
every held-out detector that finds it on the clean photo no longer find it, on the file and after every
upload transform: a user asking to hide a face expects it hidden from face detectors in general, not
from the one the attack used. Measured (docs/face-hide.md): within the JND budget (up to 1 x NAMM)
MTCNN itself is not hidden on any test photo measured, and dlib's HOG detector still finds obama's face
even at 4 x NAMM (22.7 dB over the face), so with the default **nothing is written** for these photos
within the budget; the record says which detector still finds which face after which transform, with
its score.
``require_held_out=False`` (Python API) asks MTCNN only and still reports the held-out detectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..images import LoadedImage
from ..pipeline import Attempt, ProgressFn, Record
from .hide import HIDE_STRENGTHS, HideResult, hide_faces, judge_held_out, judge_hidden
from .judges import HELD_OUT, load_judges
from .panel import face_quality
from .panel_task import face_attempt

__all__ = ["HideRecord", "HideTask"]


@dataclass
class HideRecord(Record):
    """A photo's record with ``faces``: per face ``box``, ``hidden`` (the task's verdict), ``mtcnn``
    (``hidden`` and per transform ``found``/``prob``), ``held_out`` (per detector: ``clean_found``,
    ``clean_score``, ``hidden`` and per transform ``found``/``score``), and the face-box ``psnr``,
    ``above_jnd``, ``ciede2000_mean``, ``ciede2000_max``; ``judges``: the held-out detectors."""

    faces: list[dict[str, Any]] = field(default_factory=list)
    judges: list[str] = field(default_factory=list)


@dataclass
class HideTask:
    """``jndkit protect --task face --goal hide`` for the pipeline (see the module doc)."""

    strengths: tuple[float, ...] = HIDE_STRENGTHS
    steps: int = 60
    rounds: int = 3
    suite: str = "social"
    jnd: str = "namm"
    judges: tuple[str, ...] = HELD_OUT
    require_held_out: bool = True
    min_prob: float = 0.9
    seed: int = 0
    fmt: str = "png"
    quality: int = 95
    name: str = "face"

    def __post_init__(self) -> None:
        self._judges = load_judges(list(self.judges))  # fails early without dlib or an unknown name

    def config_json(self) -> dict[str, Any]:
        return {"task": "face", "goal": "hide", "strengths": list(self.strengths), "jnd": self.jnd,
                "steps": self.steps, "rounds": self.rounds, "suite": self.suite, "judges": list(self.judges),
                "require_held_out": self.require_held_out, "min_prob": self.min_prob, "seed": self.seed,
                "format": self.fmt, "quality": self.quality}

    def new_record(self, src: Path) -> HideRecord:
        return HideRecord(input=str(src), task="face", judges=list(self.judges))

    def protect(self, image: LoadedImage, dst: Path, record: Record, progress: ProgressFn | None) -> Attempt:
        r = hide_faces(image.rgb, self.strengths, self.steps, self.suite, self.seed, jnd=self.jnd,
                       judges=self._judges, require_held_out=self.require_held_out, rounds=self.rounds,
                       min_prob=self.min_prob)
        return face_attempt(image, record, r, self.min_prob)

    def judge(self, attempt: Attempt, clean: torch.Tensor, saved: torch.Tensor, record: Record) -> bool:
        """MTCNN and the held-out detectors, from scratch, on the re-read file and after every upload transform."""
        assert isinstance(record, HideRecord)
        state: HideResult = attempt.state
        mtcnn = judge_hidden(saved, state.faces, self.suite)
        held = judge_held_out(saved, clean, state.faces, self.suite, self._judges) if self._judges else []
        faces = []
        for i, f in enumerate(state.faces):
            h = held[i] if held else {}
            ok = mtcnn[i]["hidden"] and (not self.require_held_out or all(d["hidden"] is not False for d in h.values()))
            faces.append({"box": [round(v, 1) for v in f.box], "hidden": bool(ok), "mtcnn": mtcnn[i], "held_out": h,
                          **face_quality(clean, saved, f.box)})
        record.faces = faces
        record.success = all(all(not c["found"] for c in m["checks"] if c["transform"] == "saved") for m in mtcnn)
        record.robust_success = all(f["hidden"] for f in faces)
        return bool(record.robust_success)

    def why_not(self, record: Record) -> str:
        for i, face in enumerate(getattr(record, "faces", [])):
            for c in face["mtcnn"]["checks"]:
                if c["found"]:
                    return f"face {i + 1}: MTCNN still finds it after {c['transform']} (probability {c['prob']})"
            for name, d in face["held_out"].items():
                for c in d["checks"]:
                    if self.require_held_out and c["found"]:
                        return (f"face {i + 1}: held-out detector {name} still finds it after {c['transform']} "
                                f"(score {c['score']})")
        return "every face hidden"

    def summarise(self, records: Sequence[Record]) -> dict[str, Any]:
        faces = [f for r in records for f in getattr(r, "faces", [])]
        psnr = [f["psnr"] for f in faces if f.get("psnr") is not None]
        jnd = [f["above_jnd"] for f in faces if f.get("above_jnd") is not None]
        return {"faces": len(faces), "faces_protected": sum(bool(f["hidden"]) for f in faces),
                "faces_hidden_mtcnn": sum(bool(f["mtcnn"]["hidden"]) for f in faces),
                "mean_face_psnr": round(sum(psnr) / len(psnr), 3) if psnr else None,
                "mean_face_above_jnd": round(sum(jnd) / len(jnd), 6) if jnd else None}
