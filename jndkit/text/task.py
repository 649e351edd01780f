"""Text as a task of the pipeline (:class:`TextTask`): :func:`~jndkit.text.protect.attack_text`
makes the target text of a photo unreadable to easyocr; the pipeline writes it, re-reads the file and
asks :meth:`TextTask.judge` for the from-scratch verdict (easyocr's own detection and reading on the
file and after each upload transform, Tesseract as the independent judge), as for every task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..images import LoadedImage
from ..pipeline import Attempt, ProgressFn, Record
from .goals import UNREADABLE_CER, TextGoalSpec
from .protect import DEFAULT_SUITE, TextAttack, attack_text, find_regions, judge_text

__all__ = ["TextRecord", "TextTask", "text_summary"]


@dataclass
class TextRecord(Record):
    """A photo of a text run: :class:`~jndkit.pipeline.Record` plus the goal and one entry per text
    region (``box``, ``target``, ``text_before``, ``text_after``, ``cer``, ``cer_upload``, ``unreadable``
    and, with Tesseract, ``tesseract_before``, ``tesseract_after``, ``tesseract_cer``)."""

    task: str = "text"
    goal: str = "unreadable"
    method: str = "shield"
    regions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TextTask:
    """``jndkit protect --task text`` for the pipeline.

    Attributes:
        goal: ``unreadable`` or ``redact:REGEX`` (:class:`~jndkit.text.goals.TextGoalSpec` or its spelling).
        method, preset, params: the engine method and its overrides (see :func:`attack_text`).
        suite: upload transforms success must survive (default ``x0.75+jpeg85``).
        tesseract: also read with Tesseract (recorded; the verdict is easyocr's).
        detector, ctc_weight, craft_weight: attack easyocr's CRAFT detector as well, and the weights of
            the recogniser's and the detector's terms (see :func:`attack_text`; docs/text.md measures them).
    """

    goal: TextGoalSpec | str = "unreadable"
    method: str = "shield"
    preset: str | None = None
    params: dict[str, float] = field(default_factory=dict)
    suite: str = DEFAULT_SUITE
    jitter: int = 2
    pad: int = 4
    seed: int = 0
    tesseract: bool = False
    fmt: str = "png"
    quality: int = 95
    name: str = "text"
    detector: bool = False
    ctc_weight: float = 1.0
    craft_weight: float = 100.0

    def __post_init__(self) -> None:
        if isinstance(self.goal, str):
            from ..goals import parse_goal

            self.goal = parse_goal(self.goal, task="text")
        if not isinstance(self.goal, TextGoalSpec):
            raise InputError(f"a text task needs a text goal, got {self.goal!r}")

    @property
    def spec(self) -> TextGoalSpec:
        assert isinstance(self.goal, TextGoalSpec)
        return self.goal

    def config_json(self) -> dict[str, Any]:
        return {"task": "text", "goal": self.spec.spec, "kappa": self.spec.kappa, "method": self.method,
                "preset": self.preset, "params": dict(self.params), "upload": self.suite, "jitter": self.jitter,
                "pad": self.pad, "seed": self.seed, "tesseract": self.tesseract, "format": self.fmt,
                "quality": self.quality, "unreadable_cer": UNREADABLE_CER, "detector": self.detector,
                "ctc_weight": self.ctc_weight, "craft_weight": self.craft_weight}

    def new_record(self, src: Path) -> TextRecord:
        return TextRecord(input=str(src), goal=self.spec.spec, method=self.method)

    def protect(self, image: LoadedImage, dst: Path, record: Record, progress: ProgressFn | None) -> Attempt:
        """Read the photo, attack its target regions; no text (or none matching): nothing to write."""
        regions = find_regions(image.rgb, self.spec)
        if not any(r.target for r in regions):
            why = "easyocr finds no text" if not regions else f"no text matches {self.spec.pattern!r}"
            return Attempt(None, status="no-text", reason=f"{why}; nothing written")
        res = attack_text(image.rgb, self.spec, regions=regions, method=self.method, preset=self.preset,
                          params=self.params, suite=self.suite, jitter=self.jitter, pad=self.pad, seed=self.seed,
                          progress=progress, detector=self.detector, ctc_weight=self.ctc_weight,
                          craft_weight=self.craft_weight)
        record.success_engine = res.success
        record.margin = round(res.margin, 4)
        record.iterations, record.tries, record.strength = res.iterations, res.tries, res.strength
        return Attempt(res.image, alpha=image.alpha, state=res)

    def judge(self, attempt: Attempt, clean: torch.Tensor, saved: torch.Tensor, record: Record) -> bool:
        """easyocr from scratch on the re-read file and after each upload transform."""
        assert isinstance(record, TextRecord)
        res: TextAttack = attempt.state
        v = judge_text(saved, res.regions, suite=self.suite, clean=clean, tesseract=self.tesseract)
        record.regions = v.regions
        record.success = all(d["cer"] >= UNREADABLE_CER if d["target"] else d["cer"] < UNREADABLE_CER
                             for d in v.regions)
        record.robust_success = v.protected if len(v.views) > 1 else None
        record.protection = v.why_not()
        if not v.protected:
            record.error = v.why_not()
        return v.protected

    def why_not(self, record: Record) -> str:
        for d in getattr(record, "regions", []):
            if d["target"] and not d["unreadable"]:
                return (f"easyocr still reads {d['text_before']!r} (as {d.get('read_as')!r}, CER "
                        f"{d.get('worst_cer', 0.0):.2f}) after {d.get('worst_view', 'file')}")
            if not d["target"] and d["cer"] >= UNREADABLE_CER:
                return f"the kept text {d['text_before']!r} became unreadable"
        return "protected"

    def summarise(self, records: Sequence[Record]) -> dict[str, Any]:
        return text_summary(records)


def text_summary(records: Sequence[Record]) -> dict[str, Any]:
    """Counts over the target regions of a run: how many, how many unreadable to easyocr (on every view)
    and to Tesseract (where it read the clean text)."""
    regs = [d for r in records for d in getattr(r, "regions", []) if d.get("target")]
    tess = [d for d in regs if d.get("tesseract_cer") is not None]
    return {
        "text_regions": len(regs),
        "unreadable_easyocr": sum(bool(d["unreadable"]) for d in regs),
        "tesseract_regions": len(tess),
        "unreadable_tesseract": sum(d["tesseract_cer"] >= UNREADABLE_CER for d in tess),
    }
