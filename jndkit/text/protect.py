"""Protect the text of one image from OCR, and judge a protected image from scratch.

:func:`find_regions` reads the clean image with easyocr (the text regions and what they say);
:func:`attack_text` runs the one engine (:func:`jndkit.attacks.run_attack`, method ``shield`` or
``jnd``) against :class:`~jndkit.text.victim.TextVictim` with an
:class:`~jndkit.text.goals.Unreadable` goal, the perturbation confined to the target boxes (grown by
``pad`` pixels) and, for ``shield``, to the human JND budget; success is decided on the 8-bit image
after every transform of the upload suite (default ``x0.75+jpeg85``). :func:`judge_text` re-reads a
protected image with easyocr run from scratch (its own detection, its own boxes) on the image and
after each upload transform, and optionally with Tesseract, and gives the per-region verdicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InputError
from ..transforms import UploadSuite, get_suite
from .goals import UNREADABLE_CER, TextGoalSpec
from .ocr import Word, cer, load_reader, read_easyocr, read_tesseract, region_reading
from .victim import TextVictim

__all__ = [
    "DEFAULT_SUITE",
    "Region",
    "TextAttack",
    "TextVerdict",
    "attack_text",
    "find_regions",
    "judge_text",
    "text_mask",
]

DEFAULT_SUITE = "x0.75+jpeg85"
"""The upload the protection must survive by default (issue 15's target)."""

ProgressFn = Callable[[int, int, dict[str, Any]], None]


@dataclass
class Region:
    """One text region of the clean image: ``box`` ``(x_min, x_max, y_min, y_max)`` in pixels, easyocr's
    clean reading ``text``, and whether the goal targets it."""

    box: tuple[int, int, int, int]
    text: str
    target: bool = True


def find_regions(image: torch.Tensor, spec: TextGoalSpec, reader: Any = None) -> list[Region]:
    """easyocr's regions of the clean ``image`` ``[3,H,W]`` with the goal's target flags (empty: no text)."""
    words = read_easyocr(image, reader)
    flags = spec.targets([w.text for w in words])
    return [Region(w.box, w.text, f) for w, f in zip(words, flags, strict=True)]


def text_mask(regions: Sequence[Region], size: tuple[int, int], pad: int = 4) -> torch.Tensor:
    """``[1,1,H,W]`` 1 inside every target box grown by ``pad`` pixels, 0 elsewhere."""
    h, w = size
    m = torch.zeros(1, 1, h, w)
    for r in regions:
        if r.target:
            x0, x1, y0, y1 = r.box
            m[..., max(0, y0 - pad):min(h, y1 + pad), max(0, x0 - pad):min(w, x1 + pad)] = 1.0
    return m


def _masked(method: Any, mask: torch.Tensor) -> Any:
    """``method`` whose perturbation is zero outside ``mask``: the budget (``extras['bound']``) is
    multiplied by it, and so is the variable after the method's own projection."""
    prepare, projection = method.prepare, method.projection

    def prep(x0: torch.Tensor, params: Mapping[str, float]) -> dict[str, torch.Tensor]:
        extras = dict(prepare(x0, params)) if prepare is not None else {}
        m = mask.to(x0).expand(x0.shape[0], 1, -1, -1)
        if "bound" in extras:
            extras["bound"] = extras["bound"] * m
        extras["text_mask"] = m
        return extras

    def proj(v: torch.Tensor, x0: torch.Tensor, params: Mapping[str, float],
             extras: dict[str, torch.Tensor]) -> torch.Tensor:
        if projection is not None:
            v = projection(v, x0, params, extras)
        return v * extras["text_mask"]

    return dataclasses.replace(method, prepare=prep, projection=proj)


@dataclass
class TextAttack:
    """What :func:`attack_text` gives for one image.

    Attributes:
        image: ``[3,H,W]`` the protected 8-bit image (the clean one when nothing was attacked).
        regions: the clean regions and their target flags.
        success: the engine's verdict (fixed boxes, after every upload transform).
        margin, iterations, tries, seconds: the engine's numbers.
        readings: per victim row, the recogniser's reading of ``image`` on the fixed boxes.
        strength: the JND budget multiple used (``shield``), else ``None``.
    """

    image: torch.Tensor
    regions: list[Region]
    success: bool
    margin: float
    iterations: int
    tries: int
    seconds: float
    readings: list[str] = field(default_factory=list)
    strength: float | None = None


def attack_text(image: torch.Tensor, spec: TextGoalSpec, regions: Sequence[Region] | None = None,
                method: str = "shield", preset: str | None = None, params: Mapping[str, float] | None = None,
                suite: UploadSuite | str = DEFAULT_SUITE, jitter: int = 2, pad: int = 4, detector: bool = False,
                seed: int = 0, progress: ProgressFn | None = None, reader: Any = None,
                ctc_weight: float = 1.0, craft_weight: float = 100.0, jnd_model: str = "namm") -> TextAttack:
    """Make the target text of ``image`` ``[3,H,W]`` (an 8-bit image in [0,1]) unreadable to easyocr.

    Args:
        spec: the goal (``unreadable`` or ``redact:REGEX``).
        regions: the clean regions (default: :func:`find_regions`).
        method, preset, params: the engine method (``shield``: JND-bounded sign steps; ``jnd``: seed 000)
            and parameter overrides (``max_iter`` sets the iteration budget).
        suite: the upload transforms success must survive (each on its own).
        jitter: extra boxes per region the victim reads (:func:`~jndkit.text.victim.jitter_boxes`).
        pad: pixels around each target box the perturbation may also change.
        detector: attack CRAFT's region score as well (about 2-3x the time on a CPU): a region whose
            CRAFT peak falls below easyocr's ``text_threshold`` gets no box and is not read at all.
        ctc_weight, craft_weight: weights of the recogniser's CTC term and of the CRAFT term in the goal's
            loss (:class:`~jndkit.text.goals.Unreadable`; ``ctc_weight=0``: the detector alone).
        jnd_model: the human JND map the budget is a multiple of (``namm``, ``chou``, ...), for methods with a
            JND budget.

    Measured (docs/text.md): within 1 x NAMM neither term makes easyocr lose the text after x0.75 + JPEG 85;
    about 8 x NAMM (15-17 dB, visible) does, and there the CRAFT term removes the boxes.

    Raises:
        InputError: no region to attack (no text, or no region matching the redact pattern).
    """
    from ..attacks import get_method, run_attack
    from ..attacks.transfer import with_jnd_model

    if image.ndim != 3 or image.shape[0] != 3:
        raise InputError(f"attack_text takes one image [3,H,W], got {list(image.shape)}")
    r = reader if reader is not None else load_reader()
    regs = list(regions) if regions is not None else find_regions(image, spec, r)
    if not any(g.target for g in regs):
        what = "no text found" if not regs else f"no text region matches {spec.pattern!r}"
        raise InputError(f"nothing to make unreadable: {what}")
    h, w = image.shape[-2:]
    victim = TextVictim(r, [g.box for g in regs], (h, w), jitter=jitter, detector=detector)
    goal = dataclasses.replace(spec.goal([g.target for g in regs]), ctc_weight=float(ctc_weight),
                               craft_weight=float(craft_weight))
    m = get_method(method, preset, **dict(params or {}))
    if jnd_model != "namm":
        if m.prepare is None or "strength" not in m.params:
            raise InputError(f"method {method} has no human JND budget to take from {jnd_model!r}")
        m = with_jnd_model(m, jnd_model)
    m = _masked(m, text_mask(regs, (h, w), pad))
    s = get_suite(suite) if isinstance(suite, str) else suite
    robust = [t.apply for t in s.for_size(h, w)] or None
    x0 = image[None].detach().float()
    res = run_attack(m, victim, goal, x0, seed=seed, robust=robust, progress=progress)
    with torch.no_grad():
        readings = victim.read(victim(res.x_adv))[0]
    strength = getattr(m, "params", {})
    st = strength.get("strength") if isinstance(strength, Mapping) else getattr(strength, "strength", None)
    return TextAttack(image=res.x_adv[0], regions=regs, success=bool(res.success[0]), margin=float(res.margin[0]),
                      iterations=int(res.iterations[0]), tries=int(res.tries[0]), seconds=float(res.seconds),
                      readings=readings, strength=None if st is None else float(st))


@dataclass
class TextVerdict:
    """:func:`judge_text`'s verdict on one protected image.

    Attributes:
        protected: every target region unreadable to easyocr on the image and after every upload
            transform, and every other region still readable on the image itself.
        regions: per region ``box``, ``target``, ``text_before``, ``text_after`` (easyocr on the image),
            ``cer`` (its CER), ``cer_upload`` (the smallest CER over the upload transforms), ``unreadable``;
            with Tesseract also ``tesseract_before``, ``tesseract_after`` (on the last upload transform,
            or the image without a suite), ``tesseract_cer`` (``None`` where Tesseract read nothing
            before: the region does not count for it).
        views: the names of the judged views (``file`` then the upload transforms).
    """

    protected: bool
    regions: list[dict[str, Any]]
    views: list[str]

    def why_not(self) -> str:
        """One line: which region is still read, and where."""
        for r in self.regions:
            if r["target"] and not r["unreadable"]:
                read_as, worst = r.get("read_as", r["text_after"]), r.get("worst_cer", r["cer"])
                return (f"easyocr still reads {r['text_before']!r} as {read_as!r} "
                        f"(CER {worst:.2f} < {UNREADABLE_CER}) after {r.get('worst_view', 'file')}")
            if not r["target"] and r["cer"] >= UNREADABLE_CER:
                return f"the kept text {r['text_before']!r} became unreadable ({r['text_after']!r})"
        return "protected"


def _views(saved: torch.Tensor, suite: UploadSuite) -> list[tuple[str, torch.Tensor]]:
    h, w = saved.shape[-2:]
    return [("file", saved)] + [(t.name, t.apply(saved)) for t in suite.for_size(h, w)]


def judge_text(saved: torch.Tensor, regions: Sequence[Region], suite: UploadSuite | str = DEFAULT_SUITE,
               clean: torch.Tensor | None = None, tesseract: bool = False, reader: Any = None) -> TextVerdict:
    """From scratch: does easyocr (its own detection and boxes) still read the target text of ``saved``
    ``[3,H,W]``, on the image and after each upload transform? Each region's reading is the words
    found mostly inside its clean box (:func:`~jndkit.text.ocr.region_reading`).

    With ``tesseract=True`` (needs ``clean``) Tesseract reads the clean image and the last view too,
    as the independent judge; it does not change ``protected``.
    """
    s = get_suite(suite) if isinstance(suite, str) else suite
    r = reader if reader is not None else load_reader()
    h, w = saved.shape[-2:]
    views = _views(saved, s)
    readings: list[tuple[str, list[Word], tuple[float, float]]] = []
    for name, img in views:
        readings.append((name, read_easyocr(img, r), (img.shape[-1] / w, img.shape[-2] / h)))
    out: list[dict[str, Any]] = []
    for reg in regions:
        texts = [(name, region_reading(words, reg.box, sc)) for name, words, sc in readings]
        cers = [(cer(t, reg.text), name, t) for name, t in texts]
        worst = min(cers)
        d: dict[str, Any] = {"box": list(reg.box), "target": reg.target, "text_before": reg.text,
                             "text_after": texts[0][1], "cer": round(cers[0][0], 4),
                             "cer_upload": round(min(c for c, _, _ in cers[1:]), 4) if len(cers) > 1 else None,
                             "unreadable": worst[0] >= UNREADABLE_CER, "worst_view": worst[1],
                             "worst_cer": round(worst[0], 4), "read_as": worst[2]}
        out.append(d)
    if tesseract:
        if clean is None:
            raise InputError("judge_text(tesseract=True) needs the clean image")
        before = read_tesseract(clean)
        name, img = views[-1]
        after = read_tesseract(img)
        sc = (img.shape[-1] / w, img.shape[-2] / h)
        for reg, d in zip(regions, out, strict=True):
            tb = region_reading(before, reg.box)
            ta = region_reading(after, reg.box, sc)
            d["tesseract_before"], d["tesseract_after"], d["tesseract_view"] = tb, ta, name
            d["tesseract_cer"] = round(cer(ta, tb), 4) if tb else None
    ok = all(d["unreadable"] if d["target"] else d["cer"] < UNREADABLE_CER for d in out)
    return TextVerdict(protected=ok, regions=out, views=[n for n, _ in views])
