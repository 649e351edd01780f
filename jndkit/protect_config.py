"""The settings of ``jndkit protect`` for classifiers: :class:`ProtectConfig`, its defaults (the
protective mode) and :data:`RESEARCH` (the papers' setting), and the re-encoding helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .attacks import get_method
from .attacks.transfer import strength_ladder
from .errors import InputError
from .goals import DEFAULT_KAPPA, Goal, parse_goal
from .images import decode_bytes, encode_image
from .perception import JND_MODELS
from .transforms import get_suite
from .victims import is_panel
from .victims.composite import parse_backgrounds

DEFAULT_MODEL = "imagenet"
DEFAULT_METHOD = "shield"
DEFAULT_GOAL = "privacy"
DEFAULT_UPLOAD = "social"
DEFAULT_STRENGTH = "auto"
AUTO_STRENGTHS = ("invisible", "subtle")
"""``--strength auto``: a photo that ``invisible`` cannot protect is tried again at ``subtle``
(about 1 % of pixels above the Chou-Li JND); ``strong`` is used only when asked (docs/world.md)."""
DEFAULT_BACKGROUNDS = "white,black"
"""What a transparent photo is judged on: people see it over a page, usually light or dark."""
ALPHA_SUFFIXES = (".png", ".webp", ".tif", ".tiff")
"""Output formats that keep the alpha channel (:func:`jndkit.images.encode_image`)."""
PROTECTIVE_METHODS = ("shield",)
"""Methods with a human-JND budget (``strength``, ``jnd``); the others are the research setting."""

RESEARCH = {"model": "mobilenet_v2", "method": "levels", "goal": "untargeted", "upload": "none"}
"""``--research``: the papers' least-change setting (one known model, first flip, the untouched file)."""


@dataclass
class ProtectConfig:
    """Everything that decides the output of ``protect`` (same config + seed = same bytes).

    The defaults are the protective mode: a panel of every offline ImageNet classifier
    (``imagenet``), the ``shield`` method inside the human JND (``strength``), the ``privacy`` goal
    (clean class out of every member's top-5) decided on the saved file after every transform
    of the ``social`` upload suite. :data:`RESEARCH` gives the papers' setting.
    """

    model: str = DEFAULT_MODEL
    weights: str | None = None
    method: str = DEFAULT_METHOD
    preset: str | None = None
    goal: str = DEFAULT_GOAL
    kappa: float = DEFAULT_KAPPA
    max_iter: int | None = None
    format: str = "png"
    quality: int = 95
    robust: str = "none"
    upload: str = DEFAULT_UPLOAD
    strength: str | None = None
    jnd: str | None = None
    seed: int = 0
    device: str = "cpu"
    background: str = DEFAULT_BACKGROUNDS
    """Colours a transparent photo is judged (and attacked) on, a comma list (:func:`parse_backgrounds`)."""

    @classmethod
    def research(cls, **changes: Any) -> ProtectConfig:
        """The research setting (:data:`RESEARCH`) with ``changes`` on top."""
        return cls(**{**RESEARCH, **changes})

    @property
    def protective(self) -> bool:
        return self.method in PROTECTIVE_METHODS

    def strength_values(self) -> list[float]:
        """The budgets to try, as multiples of the human JND, smallest first (``[]`` for research
        methods). ``auto`` (the default) tries ``invisible`` and, for a photo it cannot protect,
        ``subtle``; a named strength or a number is tried alone."""
        if not self.protective:
            return []
        return strength_ladder(self.strength or DEFAULT_STRENGTH, AUTO_STRENGTHS)

    def strength_value(self) -> float | None:
        """The first budget tried (``None`` for research methods)."""
        v = self.strength_values()
        return v[0] if v else None

    def validate(self) -> None:
        from .pipeline.files import check_output_settings

        check_output_settings(self.format, self.quality, self.max_iter)
        if self.kappa < 0:
            raise InputError(f"kappa must be >= 0, got {self.kappa}")
        if not self.protective and (self.strength is not None or self.jnd is not None):
            opt = "--strength" if self.strength is not None else "--jnd"
            raise InputError(f"{opt} sets the human-JND budget of the protective method "
                             f"({', '.join(PROTECTIVE_METHODS)}); method {self.method} has none")
        if self.weights is not None and is_panel(self.model):
            raise InputError(f"--weights is for a single model, not the panel {self.model!r}")
        parse_robust(self.robust)
        get_suite(self.upload)
        parse_backgrounds(self.background)
        self.strength_value()
        if self.jnd is not None and self.jnd not in JND_MODELS:
            raise InputError(f"jnd must be one of {', '.join(JND_MODELS)}, got {self.jnd!r}")
        _check_goal_classes(self.goal, parse_goal(self.goal, self.kappa), self.model)
        get_method(self.method, self.preset)


def _check_goal_classes(spec: str, goal: Goal, model: str) -> None:
    """Resolve the class a goal names (``targeted:CLASS``, ``untargeted:CLASS``) before any work.

    Every built-in model, ``torchvision:`` model and 1000-class ``timm:`` model answers in the
    ImageNet-1k classes (:func:`jndkit.victims.imagenet_labels`), matched as the victims match them
    (case-blind, ``_`` for a space). A ``timm:`` model may have other classes, so only its class
    names are left to the victim.

    Raises:
        InputError: the class is unknown (naming the goal and suggesting close class names) or its
            index is out of range.
    """
    import difflib

    from .victims import imagenet_labels

    if any(m.strip().startswith("timm:") for m in model.split(",")):
        return
    for attr in ("target", "labels"):
        value = getattr(goal, attr, None)
        if isinstance(value, int) and not 0 <= value < 1000:
            raise InputError(f"goal {spec!r}: class index {value} is out of range 0..999 (ImageNet-1k)")
        if not isinstance(value, str):
            continue
        labels = imagenet_labels()
        key = value.strip().lower().replace("_", " ")
        lower = [lab.lower() for lab in labels]
        if key in lower:
            continue
        # difflib for spelling slips ("espressso"), substrings for partial names ("retriever")
        close = [lab for lab in lower if key and key in lab]
        close += [lab for lab in difflib.get_close_matches(key, lower, n=5, cutoff=0.6) if lab not in close]
        names = [labels[lower.index(c)] for c in close[:5]]
        hint = (f"; did you mean: {', '.join(names)}?" if names
                else "; see the ImageNet-1k class names (jndkit.victims.imagenet_labels())")
        raise InputError(f"goal {spec!r}: unknown ImageNet class {value!r}{hint}")


def parse_robust(spec: str) -> tuple[str, int] | None:
    """``none`` -> None; ``jpeg:Q`` / ``webp:Q`` -> (format, quality)."""
    s = (spec or "none").strip().lower()
    if s == "none":
        return None
    fmt, _, q = s.partition(":")
    if fmt in ("jpeg", "jpg", "webp") and q.isdigit() and 1 <= int(q) <= 100:
        return ("jpg" if fmt in ("jpeg", "jpg") else "webp", int(q))
    raise InputError(f"robust must be none, jpeg:Q or webp:Q with Q in 1..100, got {spec!r}")


def reencode(fmt: str, quality: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A transform ``[B,3,H,W] -> [B,3,H,W]``: what encoding in ``fmt`` at ``quality`` and decoding gives."""

    def transform(x: torch.Tensor) -> torch.Tensor:
        out = [decode_bytes(encode_image(xi, fmt, quality)) for xi in x]
        return torch.stack(out).to(x.device)

    return transform
