"""What a task is to the pipeline: a small object that attacks one photo and judges the written
file. Classify (:class:`jndkit.protect.ClassifyTask`), face (:class:`jndkit.face.task.FaceTask`),
and later detection and text are tasks; :func:`jndkit.pipeline.run_paths` is the one loop over
photos, :func:`jndkit.pipeline.protect_one` the one write -> re-read -> judge -> name step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ..images import LoadedImage
from .record import Record

__all__ = ["Attempt", "ProgressFn", "Task"]

ProgressFn = Callable[[int, int, dict[str, Any]], None]
"""``progress(step, total, info)`` from the engine."""


@dataclass
class Attempt:
    """What :meth:`Task.protect` gives for one photo.

    Attributes:
        image: ``[3,H,W]`` protected image in ``[0,1]`` (8-bit values) to write; ``None`` when the
            photo has nothing to protect (then ``status`` says what, e.g. ``no-face``, and ``reason``
            why, and nothing is written).
        alpha: ``[H,W]`` uint8 alpha (a NumPy array, as :class:`~jndkit.images.LoadedImage` has it) to
            write with it, if any.
        reference: ``[3,H,W]`` the 8-bit image the written file is measured against (default: the
            photo as decoded; a transparent photo flattened for a format without alpha differs).
        state: private to the task, handed back to :meth:`Task.judge`.
    """

    image: torch.Tensor | None
    alpha: Any = None
    status: str | None = None
    reason: str | None = None
    reference: torch.Tensor | None = None
    state: Any = None


@runtime_checkable
class Task(Protocol):
    """A kind of protection (classify, face, detect, text) as the pipeline sees it."""

    name: str

    @property
    def fmt(self) -> str:
        """Output format: ``png``, ``jpg``, ``webp`` or ``same``."""
        ...

    @property
    def quality(self) -> int:
        """JPEG/WebP quality of the output."""
        ...

    def config_json(self) -> dict[str, Any]:
        """The run's settings, for ``report.json``."""
        ...

    def new_record(self, src: Path) -> Record:
        """An empty record of the task's type for ``src``."""
        ...

    def protect(self, image: LoadedImage, dst: Path, record: Record, progress: ProgressFn | None) -> Attempt:
        """Attack ``image`` (to be written to ``dst``); fill the engine's fields of ``record``."""
        ...

    def judge(self, attempt: Attempt, clean: torch.Tensor, saved: torch.Tensor, record: Record) -> bool:
        """From scratch, on the re-read written file ``saved`` ``[3,H,W]`` against the 8-bit ``clean``:
        is the photo protected (after the upload suite)? Fills the task's fields of ``record``."""
        ...

    def why_not(self, record: Record) -> str:
        """One line: which model, after which transform, still sees through the protection."""
        ...

    def summarise(self, records: Sequence[Record]) -> dict[str, Any]:
        """The task's own counts for the report's summary (added to :func:`~jndkit.pipeline.record.summarise`)."""
        ...
