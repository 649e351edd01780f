"""Hide objects from the detector: attack one photo with the engine, judge a saved file from scratch.

:class:`DetectProtector` is the library behind ``jndkit protect --task detect``:

* :meth:`DetectProtector.protect_tensor` runs :func:`jndkit.attacks.run_attack` (``jnd``: seed 000's
  first-flip method; ``shield``: jndkit's JND-bounded protective method, its strengths tried smallest
  first) on the 8-bit photo; success is decided on the quantized image **after every real transform
  of the upload suite** (the same checks as :meth:`jndkit.protect.Protector.checks`);
* :meth:`DetectProtector.judge_tensor` re-runs the detector from scratch on the re-read file and on
  each upload of it, with NMS, and says, box by box, whether the goal holds (:class:`DetectVerdict`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attacks import AttackResult, Method, get_method, run_attack
from ..attacks.transfer import strength_ladder
from ..errors import InputError
from ..goals import Goal
from ..images import decode_bytes, encode_image, quantize
from ..transforms import UploadSuite, get_suite
from .goals import DEFAULT_DETECT_KAPPA, MATCH_IOU, DetectorVictim, Mislabel, Vanish, box_iou, parse_detect_goal
from .ssd import DEFAULT_SCORE_THRESHOLD, Detection

__all__ = ["DETECT_PARAMS", "DetectConfig", "DetectProtector", "DetectVerdict", "UploadCheck"]

Transform = Callable[[torch.Tensor], torch.Tensor]

DETECT_PARAMS: dict[str, dict[str, float]] = {
    "jnd": {"alpha": 1e-3},
}
"""Method parameters on detection goals when no preset is named (see docs/detect.md for the
measurement): the classifier default step 1e-4 moves the detector's hinge loss too little within
300 iterations on most photos."""

DETECT_STRENGTHS = ("invisible", "subtle", "strong")
"""``shield``'s budgets tried in turn by default (``--strength auto``), smallest first."""


@dataclass
class DetectConfig:
    """Everything that decides the output of a detection run.

    ``goal``: ``vanish`` (person), ``vanish:CLASS``, ``vanish-all``, ``mislabel:CLASS``;
    ``method``: ``shield`` (default) or any engine method (``jnd``: seed 000);
    ``strength``: ``auto`` (invisible, subtle, strong in turn), a name or a number (shield only);
    ``upload``: the upload suite success must survive (``none`` for the untouched file).
    """

    goal: str = "vanish"
    method: str = "shield"
    preset: str | None = None
    strength: str | None = None
    kappa: float = DEFAULT_DETECT_KAPPA
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    max_iter: int | None = None
    upload: str = "social"
    format: str = "png"
    quality: int = 95
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> None:
        from ..pipeline.files import check_output_settings

        check_output_settings(self.format, self.quality, self.max_iter)
        if self.strength is not None and self.method != "shield":
            raise InputError(f"--strength sets the human-JND budget of shield; method {self.method} has none")
        get_suite(self.upload)
        self.strengths()
        parse_detect_goal(self.goal, self.kappa)

    def strengths(self) -> list[float]:
        """The budgets to try (multiples of the human JND map), smallest first; ``[]`` for other methods."""
        if self.method != "shield":
            return []
        return strength_ladder(self.strength, DETECT_STRENGTHS)

@dataclass
class UploadCheck:
    """The detector's answer on one version of the saved file (``file`` itself, or an upload)."""

    transform: str
    reached: bool
    margin: float
    boxes: list[Detection] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"transform": self.transform, "reached": self.reached, "margin": round(self.margin, 5),
                "boxes": [b.to_json() for b in self.boxes]}


@dataclass
class DetectVerdict:
    """From-scratch judgement of a saved file: ``success`` on the file, ``robust_success`` after every
    upload (``None``: no upload suite), ``margin`` (smallest, score units), the boxes before and after
    (on the file), and one :class:`UploadCheck` per version."""

    success: bool
    robust_success: bool | None
    margin: float
    boxes_before: list[Detection]
    boxes_after: list[Detection]
    checks: list[UploadCheck]


def _reencode(fmt: str, quality: int) -> Transform:
    def transform(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([decode_bytes(encode_image(xi, fmt, quality)) for xi in x.detach().cpu()]).to(x)

    return transform


class DetectProtector:
    """Protects photos from the SSD detector with one method and goal.

    >>> p = DetectProtector(DetectConfig(goal="vanish:person", method="jnd", upload="none"))  # doctest: +SKIP
    >>> res = p.protect_tensor(photo)                # photo [3,H,W] in [0,1]                   # doctest: +SKIP
    >>> p.judge_tensor(photo, quantize(res.x_adv[0])).success                                  # doctest: +SKIP
    """

    def __init__(self, config: DetectConfig | None = None, victim: DetectorVictim | None = None) -> None:
        self.config = config or DetectConfig()
        self.config.validate()
        c = self.config
        self.victim = victim if victim is not None else DetectorVictim(score_threshold=c.score_threshold)
        self.victim.to(c.device)
        self.suite: UploadSuite = get_suite(c.upload)
        strengths = c.strengths()
        params: dict[str, float] = {}
        if c.preset is None:
            params.update(DETECT_PARAMS.get(c.method, {}))
        if strengths:
            params["strength"] = strengths[0]
        base = get_method(c.method, c.preset, **params)
        self.ladder: list[Method] = [base] + [base.with_params(strength=v) for v in strengths[1:]]

    def goal(self) -> Goal:
        """The configured goal (unbound), at the configured score threshold."""
        g = parse_detect_goal(self.config.goal, self.config.kappa)
        if isinstance(g, (Vanish, Mislabel)):
            g = dataclasses.replace(g, threshold=self.config.score_threshold)
        return g

    def checks(self, out_fmt: str, height: int, width: int) -> list[Transform]:
        """The real transforms success must survive, each applied to the saved image (after the
        output format's own encoding when it is lossy), as :meth:`jndkit.protect.Protector.checks`."""
        steps: list[Transform] = [t.apply for t in self.suite.for_size(height, width)]
        if out_fmt not in ("jpg", "jpeg", "webp"):
            return steps
        save = _reencode(out_fmt, self.config.quality)
        if not steps:
            return [save]
        return [(lambda x, t=t: t(save(x))) for t in steps]  # type: ignore[misc]

    def nothing_to_protect(self, x: torch.Tensor) -> str | None:
        """Why the 8-bit photo ``[3,H,W]`` has nothing to protect (the goal already holds: no box of the
        class, or no box at all to relabel), else ``None``."""
        x0 = quantize(x.to(self.config.device))[None]
        with torch.no_grad():
            out = self.victim(x0)
        goal = self.goal().bind(out, self.victim)
        if isinstance(goal, Mislabel) and not bool((goal.labels >= 0).any()):
            return f"no box above {self.config.score_threshold:g} to relabel as {goal.describe().split(':')[1]}"
        if bool(goal.reached(out)[0]) or (isinstance(goal, Vanish) and float(goal.margin(out)[0]) > 0):
            return f"the detector finds no box for {goal.describe()} above {self.config.score_threshold:g}"
        return None

    def protect_tensor(self, x: torch.Tensor, out_fmt: str = "png",
                       progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> AttackResult:
        """Attack one photo ``[3,H,W]`` in [0,1]; the engine's result (``x_adv`` quantized, success after
        every upload check). ``shield`` tries its strengths in turn until one protects the photo."""
        x0 = quantize(x.to(self.config.device))[None]
        checks = self.checks(out_fmt, x.shape[-2], x.shape[-1])
        res: AttackResult | None = None
        for method in self.ladder:
            res = run_attack(method, self.victim, self.goal(), x0, max_iter=self.config.max_iter,
                             seed=self.config.seed, robust=checks or None, progress=progress)
            if bool(res.success.all()):
                break
        assert res is not None  # the ladder holds at least one method
        return res

    @torch.no_grad()
    def judge_tensor(self, clean: torch.Tensor, saved: torch.Tensor) -> DetectVerdict:
        """From scratch: the detector on the 8-bit ``clean`` ``[3,H,W]`` binds the goal; then the saved
        file ``saved`` ``[3,H,W]`` (as re-read) and every upload of it are judged box by box (NMS)."""
        dev = self.config.device
        x0 = quantize(clean.to(dev))[None]
        clean_out = self.victim(x0)
        goal = self.goal().bind(clean_out, self.victim)
        before = self.victim.detect(x0)[0]
        versions: list[tuple[str, torch.Tensor]] = [("file", saved.to(dev)[None])]
        for t in self.suite.for_size(saved.shape[-2], saved.shape[-1]):
            versions.append((t.name, t.apply(saved.to(dev)[None])))
        results = []
        for name, img in versions:
            out = self.victim(img)
            dets = self.victim.detect(img)[0]
            size = (img.shape[-2], img.shape[-1])
            reached = self._box_verdict(goal, dets, size) and bool(goal.margin(out)[0] > 0)
            results.append(UploadCheck(name, reached, float(goal.margin(out)[0]), dets))
        ok = results[0].reached
        robust = all(r.reached for r in results[1:]) if len(results) > 1 else None
        return DetectVerdict(ok, robust, min(r.margin for r in results), before, results[0].boxes, results)

    def _box_verdict(self, goal: Goal, dets: Sequence[Detection], size: tuple[int, int]) -> bool:
        """The goal on the boxes a person is shown: ``vanish``: none of its classes; ``mislabel``: at
        each clean box, a box of the target and none of the clean class (IoU >= 0.5)."""
        if isinstance(goal, Vanish):
            return not any(d.label in goal.ids for d in dets)
        if isinstance(goal, Mislabel):
            h, w = size
            boxes = torch.tensor([[d.box[0] / w, d.box[1] / h, d.box[2] / w, d.box[3] / h] for d in dets]
                                 ).reshape(-1, 4)
            labels = [d.label for d in dets]
            for cb, cl in zip(goal.boxes[0].cpu(), goal.labels[0].tolist(), strict=True):
                if cl < 0:
                    continue
                iou = box_iou(cb[None].float(), boxes)[0] if len(dets) else torch.zeros(0)
                at = [labels[i] for i in range(len(dets)) if float(iou[i]) >= MATCH_IOU]
                if goal.target_id not in at or cl in at:
                    return False
            return True
        raise InputError(f"no box verdict for goal {goal.describe()}")
