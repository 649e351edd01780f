"""Detection as a task of the pipeline (:class:`DetectTask`): ``jndkit protect --task detect``.

:class:`~jndkit.detect.protect.DetectProtector` attacks the photo; the pipeline writes it, re-reads
the file and asks :meth:`DetectTask.judge` for the from-scratch verdict (the detector on the file and
on each upload of it, box by box). :class:`DetectRecord` keeps the boxes before and after, so the
report can draw them (:func:`jndkit.detect.draw.draw_boxes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..images import LoadedImage
from ..pipeline import Attempt, ProgressFn, Record
from .protect import DetectConfig, DetectProtector

__all__ = ["DetectRecord", "DetectTask"]


@dataclass
class DetectRecord(Record):
    """A photo of a detection run: the goal, the boxes (``{"label", "name", "score", "box"}``, box in
    pixels ``x1, y1, x2, y2``) the detector finds on the clean photo and on the written file, and the
    detector's answer after each upload (``uploads``: transform, reached, margin, boxes)."""

    task: str = "detect"
    goal: str | None = None
    method: str | None = None
    boxes_before: list[dict[str, Any]] = field(default_factory=list)
    boxes_after: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)

    def caption(self, which: str) -> list[str]:
        boxes = self.boxes_before if which == "original" else self.boxes_after
        if not boxes:
            return ["detector: no box"]
        return ["detector: " + ", ".join(f"{b['name']} {b['score']:.2f}" for b in boxes)]

    def draw(self, image: Any, which: str) -> Any:
        """The picture with the detector's boxes (clean photo / written file) drawn on it."""
        import numpy as np
        import torch

        from .draw import draw_boxes

        boxes = self.boxes_before if which == "original" else self.boxes_after
        if not boxes:
            return image
        pic = np.asarray(draw_boxes(image, boxes), dtype=np.float32) / 255.0
        return torch.from_numpy(pic).permute(2, 0, 1).contiguous()


@dataclass
class DetectTask:
    """The pipeline's view of a :class:`DetectProtector` (``protector``)."""

    protector: DetectProtector
    name: str = "detect"

    @classmethod
    def from_config(cls, config: DetectConfig) -> DetectTask:
        return cls(DetectProtector(config))

    @property
    def fmt(self) -> str:
        return self.protector.config.format

    @property
    def quality(self) -> int:
        return int(self.protector.config.quality)

    def config_json(self) -> dict[str, Any]:
        c = self.protector.config
        return {"task": "detect", "model": self.protector.victim.name, "goal": c.goal, "method": c.method,
                "preset": c.preset, "strength": c.strength or ("auto" if c.method == "shield" else None),
                "kappa": c.kappa, "score_threshold": c.score_threshold, "max_iter": c.max_iter,
                "upload": self.protector.suite.version, "format": c.format, "quality": c.quality, "seed": c.seed}

    def new_record(self, src: Path) -> DetectRecord:
        c = self.protector.config
        return DetectRecord(input=str(src), goal=c.goal, method=c.method)

    def protect(self, image: LoadedImage, dst: Path, record: Record, progress: ProgressFn | None) -> Attempt:
        """Attack the photo; nothing to protect (the goal holds on the clean photo): nothing written."""
        p = self.protector
        x = image.rgb
        why = p.nothing_to_protect(x)
        if why is not None:
            return Attempt(None, status="no-detection", reason=f"{why}; nothing written")
        res = p.protect_tensor(x, dst.suffix.lstrip(".").lower(), progress)
        record.success_engine = bool(res.success[0])
        record.iterations, record.tries = int(res.iterations[0]), int(res.tries[0])
        record.strength = res.params[0].get("strength") if p.config.method == "shield" else None
        return Attempt(res.x_adv[0].cpu(), alpha=image.alpha)

    def judge(self, attempt: Attempt, clean: torch.Tensor, saved: torch.Tensor, record: Record) -> bool:
        """The detector from scratch on the re-read file and each upload of it (box by box)."""
        assert isinstance(record, DetectRecord)
        v = self.protector.judge_tensor(clean, saved)
        record.success, record.robust_success, record.margin = v.success, v.robust_success, round(v.margin, 5)
        record.boxes_before = [d.to_json() for d in v.boxes_before]
        record.boxes_after = [d.to_json() for d in v.boxes_after]
        record.uploads = [c.to_json() for c in v.checks[1:]]
        seen = [c for c in v.checks if not c.reached]
        record.protection = (f"{self.protector.goal().describe()}: holds on the file and after "
                             f"{len(v.checks) - 1} upload(s)" if not seen else
                             f"{self.protector.goal().describe()}: fails on {len(seen)} of {len(v.checks)} versions")
        return v.success and v.robust_success is not False

    def why_not(self, record: Record) -> str:
        assert isinstance(record, DetectRecord)
        versions = [{"transform": "file", "reached": record.success, "boxes": record.boxes_after}, *record.uploads]
        bad = [u for u in versions if not u["reached"]]
        if not bad:
            return "the goal is not reached"
        u = bad[0]
        boxes = ", ".join(f"{b['name']} {b['score']:.2f}" for b in u["boxes"]) or "boxes near the threshold"
        return (f"{self.protector.victim.name} still finds {boxes} after {u['transform']} "
                f"({len(bad)} of {len(versions)} versions fail)")

    def hint(self, record: Record) -> str:
        if self.protector.config.method == "shield":
            return "every strength was tried; --strength 1.5 or an --upload with fewer transforms"
        return "raise --max-iter or try --method shield"

    def summarise(self, records: Sequence[Record]) -> dict[str, Any]:
        recs = [r for r in records if isinstance(r, DetectRecord)]
        return {"no_detection": sum(r.status == "no-detection" for r in recs),
                "boxes_before": sum(len(r.boxes_before) for r in recs),
                "boxes_after": sum(len(r.boxes_after) for r in recs)}
