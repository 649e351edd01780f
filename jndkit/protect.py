"""Protect photos from classifiers: the ``classify`` task of the pipeline.

This is the library behind ``jndkit protect``. :class:`Protector` holds the victim (a model or a
panel), the method and the goal, and is the pipeline's :class:`~jndkit.pipeline.Task` for
classifiers; :func:`jndkit.pipeline.protect_one` runs it for each photo:

1. decode it (:func:`jndkit.images.load_image`), at its own resolution;
2. run the chosen method through the engine; success is decided on the 8-bit image, after each
   transform of the upload suite (and the output format's own encoding when it is lossy);
3. write it under a hidden name, **re-read the written file** and judge it from scratch at batch
   size 1, after every upload transform: the success reported is this re-check, not the engine's;
4. name it only if that holds; otherwise nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .attacks import METHODS, Method, get_method, run_attack
from .attacks.engine import Transform, robust_margin
from .attacks.proxy import on_proxy
from .attacks.transfer import STRENGTHS, with_jnd_model
from .goals import Goal, PanelGoal, parse_goal
from .images import LoadedImage, load_image, output_path, quantize
from .pipeline import Attempt, ProgressFn, Record, protect_one, run_paths
from .pipeline import summarise as _summarise
from .protect_config import (
    ALPHA_SUFFIXES,
    AUTO_STRENGTHS,
    DEFAULT_BACKGROUNDS,
    DEFAULT_GOAL,
    DEFAULT_METHOD,
    DEFAULT_MODEL,
    DEFAULT_STRENGTH,
    DEFAULT_UPLOAD,
    PROTECTIVE_METHODS,
    RESEARCH,
    ProtectConfig,
    _check_goal_classes,
    parse_robust,
    reencode,
)
from .transforms import UploadSuite, get_suite
from .verify import protection_matrix
from .victims import ClassifierVictim, PanelVictim, is_panel, load_panel, load_victim
from .victims.composite import AlphaComposite, parse_backgrounds

__all__ = [
    "ALPHA_SUFFIXES",
    "AUTO_STRENGTHS",
    "DEFAULT_BACKGROUNDS",
    "DEFAULT_GOAL",
    "DEFAULT_METHOD",
    "DEFAULT_MODEL",
    "DEFAULT_STRENGTH",
    "DEFAULT_UPLOAD",
    "PROTECTIVE_METHODS",
    "RESEARCH",
    "ImageRecord",
    "ProtectConfig",
    "Protector",
    "_check_goal_classes",
    "parse_robust",
    "protect_paths",
    "reencode",
    "summarise",
]


@dataclass
class ImageRecord(Record):
    """One photo of ``report.json`` of the classify task: the common fields of
    :class:`~jndkit.pipeline.Record` and the models' top-5 before and after (on the written file)."""

    clean_top5: list[tuple[str, float]] = field(default_factory=list)
    protected_top5: list[tuple[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        d["clean_top5"] = [{"label": a, "prob": round(b, 6)} for a, b in self.clean_top5]
        d["protected_top5"] = [{"label": a, "prob": round(b, 6)} for a, b in self.protected_top5]
        return d

    @classmethod
    def from_json(cls, d: Any) -> ImageRecord:
        rec = super().from_json(d)
        for k in ("clean_top5", "protected_top5"):
            setattr(rec, k, [(e["label"], e["prob"]) for e in d.get(k, [])])
        return rec

    def caption(self, which: str) -> list[str]:
        top = self.clean_top5 if which == "original" else self.protected_top5
        return [f"{lab} {p:.3f}" for lab, p in top[:3]]



class Protector:
    """Protects photos one at a time with one victim (a model or a panel), method and goal.

    >>> p = Protector(ProtectConfig())                           # doctest: +SKIP
    >>> record = p.protect_file(Path("photo.jpg"), Path("out"))  # doctest: +SKIP
    """

    def __init__(self, config: ProtectConfig | None = None,
                 victim: ClassifierVictim | PanelVictim | None = None) -> None:
        self.config = config or ProtectConfig()
        self.config.validate()
        c = self.config
        if victim is not None:
            self.victim: ClassifierVictim | PanelVictim = victim
        elif is_panel(c.model) or c.protective:
            self.victim = load_panel(c.model, c.device)
        else:
            self.victim = load_victim(c.model, c.weights, c.device)
        self.suite: UploadSuite = get_suite(c.upload)
        self.robust = parse_robust(c.robust)
        strengths = c.strength_values()
        overrides: dict[str, float] = {"strength": strengths[0]} if strengths else {}
        self.method = get_method(c.method, c.preset, **overrides)
        if c.jnd is not None:
            self.method = with_jnd_model(self.method, c.jnd)
        # the budgets tried in turn for a photo not yet protected (--strength auto)
        self.ladder: list[Method] = [self.method] + [self.method.with_params(strength=v) for v in strengths[1:]]
        # One level per value (levels' default) does not survive JPEG/WebP: when the output is
        # lossy or a robust re-encoding / upload suite is asked, a method's lossy preset (levels:
        # `fast`, two levels) is used unless the user chose a preset.
        spec = METHODS[c.method]
        self.lossy_method = (get_method(c.method, spec.lossy_preset, **overrides)
                             if c.preset is None and spec.lossy_preset else self.method)

    @property
    def members(self) -> dict[str, torch.nn.Module]:
        """The models the attack uses, by name."""
        if isinstance(self.victim, PanelVictim):
            return {m.name: m for m in self.victim.members}  # type: ignore[union-attr,misc]
        return {self.victim.name: self.victim}

    def method_for(self, out_fmt: str) -> Method:
        """The method used for an output format (see ``lossy_method``)."""
        lossy = out_fmt in ("jpg", "jpeg", "webp") or self.robust is not None or bool(self.suite.transforms)
        return self.lossy_method if lossy else self.method

    def goal(self, victim: nn.Module | None = None) -> Goal:
        """The goal for ``victim`` (default: the protector's): a :class:`PanelGoal` over a panel's
        members, or over the composites of a transparent photo (:class:`AlphaComposite`)."""
        g = parse_goal(self.config.goal, self.config.kappa)
        v = self.victim if victim is None else victim
        return PanelGoal(inner=g) if isinstance(v, (PanelVictim, AlphaComposite)) else g

    def victim_for(self, alpha: Any = None) -> nn.Module:
        """The victim that judges a photo with this alpha ``[H,W]`` (uint8): the protector's own for
        an opaque photo (no alpha, or alpha 255 everywhere), else the photo as people see it, over
        each background of ``config.background`` (:class:`AlphaComposite`)."""
        if alpha is None or int(torch.as_tensor(alpha).min()) == 255:
            return self.victim
        return AlphaComposite(self.victim, alpha, parse_backgrounds(self.config.background)).to(self.config.device)

    def checks(self, out_fmt: str, height: int, width: int) -> list[Transform]:
        """What success must survive, each on its own: the upload suite's real transforms (those
        that apply at this size) and the robust re-encoding, each applied to the *saved* image (so
        after the output format's own encoding when it is lossy); with a lossy output and no other
        check, the encoding itself."""
        save: Transform | None = reencode(out_fmt, self.config.quality) if out_fmt in ("jpg", "jpeg", "webp") else None
        steps: list[Transform] = [t.apply for t in self.suite.for_size(height, width)]
        if self.robust is not None:
            steps.append(reencode(*self.robust))
        if save is None:
            return steps
        if not steps:
            return [save]

        def after_save(t: Transform) -> Transform:
            return lambda x: t(save(x))

        return [after_save(t) for t in steps]

    def protect_tensor(self, x: torch.Tensor, out_fmt: str = "png",
                       progress: Callable[[int, int, dict[str, Any]], None] | None = None,
                       alpha: Any = None):  # type: ignore[no-untyped-def]
        """Attack one image ``[3,H,W]`` (with its alpha ``[H,W]``, if any: then every composite of
        :meth:`victim_for` must be fooled); returns the engine's :class:`~jndkit.attacks.AttackResult`."""
        x0 = quantize(x.to(self.config.device))[None]
        victim = self.victim_for(alpha)
        ladder = self.ladder if self.method_for(out_fmt) is self.method else [self.method_for(out_fmt)]
        res = None
        for method in ladder:  # smallest budget first; the next only for a photo not yet protected
            if self.config.protective:  # a large photo is optimised on a proxy (jndkit.attacks.proxy)
                method = on_proxy(method, x.shape[-2], x.shape[-1])
            res = run_attack(method, victim, self.goal(victim), x0, max_iter=self.config.max_iter,
                             seed=self.config.seed, robust=self.checks(out_fmt, x.shape[-2], x.shape[-1]),
                             progress=progress)
            if bool(res.success.all()):
                break
        return res

    @torch.no_grad()
    def judge_saved(self, clean: torch.Tensor, saved: torch.Tensor, alpha: Any = None
                    ) -> tuple[bool, float, list[tuple[str, float]], bool | None]:
        """Judge the re-read file ``saved`` ``[3,H,W]`` (written with ``alpha``) at batch 1 against the
        goal bound to ``clean``, on the file itself and after each upload transform / robust
        re-encoding (the engine's own :func:`~jndkit.attacks.engine.robust_margin`, from scratch).

        Returns (success on the file, margin over every check, protected top-5, success after the
        checks or None when there are none).
        """
        reread = saved[None].to(self.config.device)
        victim = self.victim_for(alpha)  # a transparent file is judged as people see it
        x0 = quantize(clean[None].to(self.config.device))
        goal = self.goal(victim).bind(victim(x0), victim)
        out = victim(reread)
        ok = bool(goal.reached(out)[0])
        checks = self.checks("png", reread.shape[-2], reread.shape[-1])  # the file is already encoded
        margin = float(robust_margin(victim, goal, reread, checks, outputs=out)[0])
        robust_ok = (margin > goal.kappa) if checks else None
        top5 = victim.predict(reread)[0]  # type: ignore[operator]
        return ok, (margin if checks else float(goal.margin(out)[0])), top5, robust_ok

    def verify(self, clean: torch.Tensor, saved_path: Path) -> tuple[bool, float, list[tuple[str, float]], bool | None]:
        """:meth:`judge_saved` on the file at ``saved_path``, read back."""
        saved = load_image(saved_path)
        return self.judge_saved(clean, saved.rgb, saved.alpha)

    # -- the pipeline's Task protocol (jndkit.pipeline.Task): run by jndkit.pipeline.protect_one --

    name = "classify"

    @property
    def fmt(self) -> str:
        return self.config.format

    @property
    def quality(self) -> int:
        return self.config.quality

    def config_json(self) -> dict[str, Any]:
        return asdict(self.config)

    def new_record(self, src: Path) -> ImageRecord:
        return ImageRecord(input=str(src))

    def protect(self, image: LoadedImage, dst: Path, record: Record, progress: ProgressFn | None) -> Attempt:
        """Attack one decoded photo to be written to ``dst``; fills the record's engine fields."""
        assert isinstance(record, ImageRecord)
        x, alpha = image.rgb, image.alpha
        if alpha is not None and dst.suffix.lower() not in ALPHA_SUFFIXES:
            # the output format has no alpha: the file shows the photo as flattened on the first
            # background, so that is the image attacked, written and measured
            name, colour = parse_backgrounds(self.config.background)[0]
            x = AlphaComposite(nn.Identity(), alpha, [(name, colour)], stack=False)(x[None])[0]
            alpha = None
        victim = self.victim_for(alpha)
        record.clean_top5 = victim.predict(quantize(x)[None].to(self.config.device))[0]  # type: ignore[operator]
        fmt = dst.suffix.lstrip(".").lower()
        # alpha only when there is one: subclasses written before it (proxy benchmarks) keep working
        res = (self.protect_tensor(x, fmt, progress) if alpha is None
               else self.protect_tensor(x, fmt, progress, alpha=alpha))
        record.success_engine = bool(res.success[0])
        record.iterations = int(res.iterations[0])
        record.strength = res.params[0].get("strength") if self.config.protective else None
        record.tries = int(res.tries[0])
        return Attempt(res.x_adv[0].cpu(), alpha=alpha, reference=x)

    def judge(self, attempt: Attempt, clean: torch.Tensor, saved: torch.Tensor, record: Record) -> bool:
        """The from-scratch verdict on the written file, and its protection matrix."""
        assert isinstance(record, ImageRecord)
        ok, margin, top5, robust_ok = self.judge_saved(clean, saved, attempt.alpha)
        record.success, record.margin, record.protected_top5, record.robust_success = ok, margin, top5, robust_ok
        if self.suite.transforms or self.config.protective:
            judges = self.members
            if self.victim_for(attempt.alpha) is not self.victim:
                judges = {f"{n} on {b}": AlphaComposite(j, attempt.alpha, [(b, c)], stack=False)
                          for b, c in parse_backgrounds(self.config.background) for n, j in self.members.items()}
            m = protection_matrix(clean, saved, judges, self.suite)
            record.matrix = m.to_json()
            record.protection = m.summary()
        return ok and (robust_ok is not False)

    def why_not(self, record: Record) -> str:
        """Which model, after which upload, still sees the photo's class (from the matrix)."""
        where = "after an upload transform" if record.success else "on the saved file"
        if record.matrix:
            cells = record.matrix["cells"]
            bad = [c for c in cells if not c["changed"] or c["in_top5"] or c["clean_prob"] > 0.1]
            if bad:
                c = min(bad, key=lambda c: (c["changed"], -c["clean_prob"]))
                state = ("still answers" if not c["changed"] else "still has in its top-5") + f" {c['clean_label']}"
                return (f"{c['model']} {state} ({c['clean_prob']:.2f}) after {c['transform']}"
                        f" ({len(bad)} of {len(cells)} model x upload checks fail)")
        return f"the goal is not reached {where}"

    def hint(self, record: Record) -> str:
        """What to try for a photo that was not protected."""
        if not self.config.protective:
            return "raise --max-iter or try another --method"
        if record.strength is not None and record.strength < STRENGTHS["strong"]:
            return "--strength strong gives a larger budget, which can show in dark flat areas"
        return "this photo resists the budget; --strength 1.5 or more, or --upload with fewer transforms"

    def summarise(self, records: Sequence[Record]) -> dict[str, Any]:
        return {}

    def protect_file(self, src: Path, out_dir: Path, progress: ProgressFn | None = None,
                     dst: Path | None = None) -> ImageRecord:
        """Protect one file into ``out_dir`` (or to ``dst``) through :func:`jndkit.pipeline.protect_one`:
        errors come back in the record; only a verified protected file takes the output name."""
        rec = protect_one(self, Path(src), Path(dst) if dst is not None else output_path(Path(src), Path(out_dir),
                                                                                            self.config.format), progress)
        assert isinstance(rec, ImageRecord)
        return rec


def summarise(records: Sequence[Record]) -> dict[str, Any]:
    """Counts and means over the records (means over protected photos): :func:`jndkit.pipeline.summarise`."""
    return _summarise(records)


def protect_paths(
    paths: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: ProtectConfig | None = None,
    resume: bool = False,
    protector: Protector | None = None,
    on_start: Callable[[Path, int, int], None] | None = None,
    progress: ProgressFn | None = None,
) -> Iterator[ImageRecord]:
    """Protect files and folders into ``out_dir`` from classifiers, yielding one record per photo:
    :func:`jndkit.pipeline.run_paths` with a :class:`Protector` (see there for resume, the mirrored
    tree and ``report.json``)."""
    protector = protector or Protector(config or ProtectConfig())
    for rec in run_paths(protector, paths, out_dir, resume=resume, on_start=on_start, progress=progress):
        assert isinstance(rec, ImageRecord)
        yield rec
