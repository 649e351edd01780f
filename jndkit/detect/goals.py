"""The detection victim and its goals: make boxes vanish, or change their label (seed 000, section 5.3).

:class:`DetectorVictim` maps images ``[B,3,H,W]`` in [0,1] to one tensor ``[B,A,4+91]`` per anchor:
the decoded box ``(x1, y1, x2, y2)`` in [0,1] and the 91 class logits (sigmoid = score). The goals
read it. Margins are in **score units** (0..1) against the detector's score threshold ``t``
(default 0.5): positive past the decision, reached above ``kappa``.

* :class:`Vanish` (``vanish``, ``vanish:CLASS``, ``vanish-all``): no box of the class(es) scores
  above ``t``. Per-class NMS always keeps a class's best-scoring box, so "no box above ``t`` after
  NMS" is exactly "no anchor's score above ``t``": ``margin = t - max_anchors score``.
* :class:`Mislabel` (``mislabel:CLASS``): every box the clean photo shows (above ``t``, of another
  class than ``CLASS``) is found as ``CLASS`` instead, at the same place (IoU >= 0.5), and no longer
  as its clean class there. ``margin = min over clean boxes of min(best CLASS score - t,
  t - best clean-class score)`` over the anchors whose current box overlaps the clean box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..goals import Goal, register_goal
from .labels import COCO_NAMES, coco_index
from .ssd import DEFAULT_SCORE_THRESHOLD, Detection, SSDMobileNetV2, load_ssd, nms_detections

__all__ = ["DEFAULT_DETECT_KAPPA", "MATCH_IOU", "DetectorVictim", "Mislabel", "Vanish", "box_iou"]

DEFAULT_DETECT_KAPPA = 0.05
"""Safety margin in score: ``vanish`` asks every score of the class below 0.45 (threshold 0.5)."""
MATCH_IOU = 0.5
"""Two boxes are the same object at IoU >= 0.5 (COCO's detection criterion)."""


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a [...,N,4]`` with ``b [...,M,4]`` (``x1, y1, x2, y2``) -> ``[...,N,M]``."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter).clamp(min=1e-12)


class DetectorVictim(nn.Module):
    """The SSD detector as an attack victim: ``forward(x) -> [B,A,4+91]`` (boxes in [0,1], logits).

    ``detect(x)`` gives the boxes a person would be shown (NMS, above ``score_threshold``), in pixels.
    """

    def __init__(self, model: SSDMobileNetV2 | None = None, score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> None:
        super().__init__()
        if not 0.0 < score_threshold < 1.0:
            raise InputError(f"score threshold must be in (0,1), got {score_threshold}")
        self.model = model if model is not None else load_ssd()
        self.score_threshold = score_threshold
        self.name = "ssd_mobilenet_v2_coco"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        boxes, logits = self.model(x)
        return torch.cat([boxes, logits], dim=-1)

    @torch.no_grad()
    def detect(self, x: torch.Tensor, score_threshold: float | None = None) -> list[list[Detection]]:
        """Detections of each image ``[B,3,H,W]``, best first, boxes in pixels."""
        return self.model.detect(x, self.score_threshold if score_threshold is None else score_threshold)

    def class_index(self, name: str | int) -> int:
        return coco_index(name)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass
class Vanish(Goal):
    """No box of ``classes`` (COCO ids or names; ``None``: every class) above ``threshold``.

    ``margin = threshold - max score`` of those classes over every anchor (see the module doc);
    loss: ``sum relu(logit - logit(threshold - 2 kappa))`` over anchors and classes: every score not
    yet safely below pushes down.
    """

    kappa: float = DEFAULT_DETECT_KAPPA
    classes: Any = "person"
    threshold: float = DEFAULT_SCORE_THRESHOLD
    ids: tuple[int, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        if not (self.threshold - 2 * self.kappa > 0.0 and self.threshold < 1.0):
            raise InputError(f"threshold - 2 kappa must be in (0,1), got {self.threshold} and kappa {self.kappa}")
        if self.classes is None:
            self.ids = tuple(range(1, len(COCO_NAMES)))
        else:
            names = self.classes if isinstance(self.classes, (list, tuple)) else [self.classes]
            self.ids = tuple(coco_index(c) for c in names)

    def _bind(self, clean: torch.Tensor, victim: Any) -> None:
        if clean.ndim != 3 or clean.shape[-1] != 4 + len(COCO_NAMES):
            raise InputError(f"detection goals need outputs [B,A,{4 + len(COCO_NAMES)}], got {list(clean.shape)}")

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """``[B]`` best score of the goal's classes over every anchor."""
        return outputs[..., 4:][..., list(self.ids)].sigmoid().flatten(1).amax(dim=1)

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        return self.threshold - self.scores(outputs)

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        z = outputs[..., 4:][..., list(self.ids)]
        return torch.relu(z - _logit(self.threshold - 2 * self.kappa)).flatten(1).sum(dim=1)

    def describe(self) -> str:
        if len(self.ids) == len(COCO_NAMES) - 1:
            return "vanish-all"
        return "vanish:" + ",".join(COCO_NAMES[i] for i in self.ids)


@dataclass
class Mislabel(Goal):
    """Every clean box (above ``threshold``, of another class than ``target``) found as ``target``.

    Bound to the clean outputs: the clean detections (NMS) per sample, padded ``[B,D,4]`` boxes and
    ``[B,D]`` labels (``-1``: padding). See the module doc for the margin. Loss per clean box, over
    the anchors overlapping it: ``-logsumexp(target logits) + sum relu(clean-class logit -
    logit(threshold - 2 kappa))``.
    """

    kappa: float = DEFAULT_DETECT_KAPPA
    target: Any = None
    threshold: float = DEFAULT_SCORE_THRESHOLD
    boxes: Any = None
    labels: Any = None
    target_id: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.target is None:
            raise InputError("mislabel needs a COCO class: mislabel:CLASS")
        self.target_id = coco_index(self.target)

    def _bind(self, clean: torch.Tensor, victim: Any) -> None:
        Vanish._bind(self, clean, victim)  # type: ignore[arg-type]
        per: list[list[Detection]] = [
            [d for d in nms_detections(o[:, :4], o[:, 4:].sigmoid(), self.threshold) if d.label != self.target_id]
            for o in clean]
        d = max(1, max(len(p) for p in per))
        self.boxes = torch.zeros(clean.shape[0], d, 4, dtype=clean.dtype, device=clean.device)
        self.labels = torch.full((clean.shape[0], d), -1, dtype=torch.long, device=clean.device)
        for i, p in enumerate(per):
            for j, det in enumerate(p):
                self.boxes[i, j] = torch.tensor(det.box, dtype=clean.dtype)  # size (1, 1): in [0,1]
                self.labels[i, j] = det.label

    def _parts(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per clean box ``[B,D]``: the target's and the clean class's logits ``[B,D,A]``, the overlap
        mask ``[B,D,A]`` (anchors whose current box has IoU >= 0.5 with it) and the validity ``[B,D]``."""
        self._need_bound()
        with torch.no_grad():
            near = box_iou(self.boxes, outputs[..., :4].detach()) >= MATCH_IOU  # [B,D,A]
        logits = outputs[..., 4:]  # [B,A,C]
        valid = self.labels >= 0
        t = logits[..., self.target_id][:, None, :].expand_as(near)
        own = logits.gather(2, self.labels.clamp(min=0)[:, None, :].expand(-1, logits.shape[1], -1))  # [B,A,D]
        return t, own.transpose(1, 2), near, valid

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        t, own, near, valid = self._parts(outputs)
        s_t = t.sigmoid().masked_fill(~near, 0.0).amax(dim=2)
        s_own = own.sigmoid().masked_fill(~near, 0.0).amax(dim=2)
        per = torch.minimum(s_t - self.threshold, self.threshold - s_own)
        per = per.masked_fill(~near.any(dim=2), -1.0).masked_fill(~valid, float("inf"))
        m = per.amin(dim=1)
        return torch.where(valid.any(dim=1), m, torch.full_like(m, -1.0))

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        t, own, near, valid = self._parts(outputs)
        pull = -torch.logsumexp(t.masked_fill(~near, -1e4), dim=2)
        push = (torch.relu(own - _logit(self.threshold - 2 * self.kappa)) * near).sum(dim=2)
        per = (pull * near.any(dim=2) + push) * valid
        return per.sum(dim=1)

    def describe(self) -> str:
        return f"mislabel:{COCO_NAMES[self.target_id]}"


def _register() -> None:
    register_goal("vanish", lambda arg, kappa: Vanish(kappa=kappa), task="detect")
    # "vanish:CLASS" is registered apart: a registered prefix takes either no argument or one
    register_goal("vanish-all", lambda arg, kappa: Vanish(kappa=kappa, classes=None), task="detect")
    register_goal("mislabel", lambda arg, kappa: Mislabel(kappa=kappa, target=arg), task="detect",
                  argument="CLASS", meaning="a COCO class")


def parse_detect_goal(spec: str, kappa: float = DEFAULT_DETECT_KAPPA) -> Goal:
    """A detection goal from its CLI spelling: ``vanish`` (person), ``vanish:CLASS[,CLASS...]``,
    ``vanish-all``, ``mislabel:CLASS``.

    Raises:
        InputError: unknown spelling or class.
    """
    from ..goals import parse_goal

    s = (spec or "").strip()
    head, colon, arg = s.partition(":")
    if head.lower() == "vanish" and colon:
        names = [a.strip() for a in arg.split(",") if a.strip()]
        if not names:
            raise InputError("vanish:CLASS needs a COCO class")
        return Vanish(kappa=kappa, classes=names)
    goal: Goal = parse_goal(s, kappa, task="detect")
    return goal


_register()
