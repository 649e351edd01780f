"""Protect photos: attack, save, and prove the protection holds on the saved file.

This is the library behind ``jndkit protect``. For each photo:

1. decode it (:func:`jndkit.images.load_image`), at its own resolution;
2. run the chosen method through the engine; success is decided on the 8-bit
   image, and on the re-encoded image when the output format is lossy
   (JPEG/WebP) or ``robust="jpeg:Q"`` is asked;
3. write it atomically, never over an existing file;
4. **re-read the written file** and run the victim on it from scratch at
   batch size 1: the success reported is this re-check, not the engine's.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .attacks import METHODS, Method, get_method, run_attack
from .errors import InputError, JndkitError, OutputError
from .goals import DEFAULT_KAPPA, Goal, PanelGoal, parse_goal
from .images import (
    LoadedImage,
    decode_bytes,
    encode_image,
    load_image,
    output_path,
    quantize,
    save_image,
)
from .attacks.engine import Transform, robust_margin
from .attacks.proxy import on_proxy
from .attacks.transfer import STRENGTHS, with_jnd_model
from .perception import JND_MODELS
from .transforms import UploadSuite, get_suite
from .pipeline import (
    _link_into_place,
    check_report_path,
    plan_outputs,
    prepare_run,
    write_json_atomic,
)
from .victims import ClassifierVictim, PanelVictim, is_panel, load_panel, load_victim
from .victims.composite import AlphaComposite, parse_backgrounds

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
    def research(cls, **changes: Any) -> "ProtectConfig":
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
        spec = self.strength or DEFAULT_STRENGTH
        if spec == "auto":
            return [STRENGTHS[n] for n in AUTO_STRENGTHS]
        if spec in STRENGTHS:
            return [STRENGTHS[spec]]
        try:
            v = float(spec)
        except ValueError:
            raise InputError(f"strength must be auto, {', '.join(STRENGTHS)} or a number, got {spec!r}") from None
        if not 0 < v <= 10:
            raise InputError(f"strength must be in (0, 10] times the JND, got {spec!r}")
        return [v]

    def strength_value(self) -> float | None:
        """The first budget tried (``None`` for research methods)."""
        v = self.strength_values()
        return v[0] if v else None

    def validate(self) -> None:
        if self.format not in ("png", "jpg", "webp", "same"):
            raise InputError(f"format must be png, jpg, webp or same, got {self.format!r}")
        if not 1 <= int(self.quality) <= 100:
            raise InputError(f"quality must be in 1..100, got {self.quality}")
        if self.max_iter is not None and self.max_iter < 1:
            raise InputError(f"max_iter must be >= 1 (0 iterations would write the photo unprotected), got {self.max_iter}")
        if self.kappa < 0:
            raise InputError(f"kappa must be >= 0, got {self.kappa}")
        if not self.protective and (self.strength is not None or self.jnd is not None):
            opt = "--strength" if self.strength is not None else "--jnd"
            raise InputError(f"{opt} sets the human-JND budget of the protective method ({', '.join(PROTECTIVE_METHODS)}); "
                             f"method {self.method} has none")
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
        hint = f"; did you mean: {', '.join(names)}?" if names else "; see the ImageNet-1k class names (jndkit.victims.imagenet_labels())"
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


@dataclass
class ImageRecord:
    """One line of ``report.json``."""

    input: str
    output: str | None = None
    status: str = "error"  # "protected", "failed" (written but not fooled), "error", "skipped"
    error: str | None = None
    width: int | None = None
    height: int | None = None
    clean_top5: list[tuple[str, float]] = field(default_factory=list)
    protected_top5: list[tuple[str, float]] = field(default_factory=list)
    success: bool = False
    success_engine: bool = False
    margin: float | None = None
    robust_success: bool | None = None
    iterations: int | None = None
    tries: int | None = None
    seconds: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    l2: float | None = None
    linf: float | None = None
    changed_values: int | None = None
    strength: float | None = None
    """The budget that protected the photo, as a multiple of the human JND map (protective mode)."""
    ciede2000_mean: float | None = None
    ciede2000_max: float | None = None
    above_jnd: float | None = None
    """Share of pixels whose luma change exceeds the Chou-Li JND of the clean photo (SPECS.md §6)."""
    protection: str | None = None
    """``protection holds for m/n models after k/k uploads`` (models of the attack's panel)."""
    matrix: dict[str, Any] | None = None
    """:meth:`jndkit.verify.Matrix.to_json`: per model and upload transform, top-1 and top-5."""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["clean_top5"] = [{"label": a, "prob": round(b, 6)} for a, b in self.clean_top5]
        d["protected_top5"] = [{"label": a, "prob": round(b, 6)} for a, b in self.protected_top5]
        return d


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
    def verify(self, clean: torch.Tensor, saved_path: Path) -> tuple[bool, float, list[tuple[str, float]], bool | None]:
        """Re-read ``saved_path`` and judge it at batch 1 against the goal bound to ``clean``,
        on the file itself and after each upload transform / robust re-encoding (the engine's own
        :func:`~jndkit.attacks.engine.robust_margin`, run from scratch on the re-read file).

        Returns (success on the file, margin over every check, protected top-5, success after the
        checks or None when there are none).
        """
        saved = load_image(saved_path)
        reread = saved.rgb[None].to(self.config.device)
        victim = self.victim_for(saved.alpha)  # a transparent file is judged as people see it
        x0 = quantize(clean[None].to(self.config.device))
        goal = self.goal(victim).bind(victim(x0), victim)
        out = victim(reread)
        ok = bool(goal.reached(out)[0])
        checks = self.checks("png", reread.shape[-2], reread.shape[-1])  # the file is already encoded
        margin = float(robust_margin(victim, goal, reread, checks, outputs=out)[0])
        robust_ok = (margin > goal.kappa) if checks else None
        top5 = victim.predict(reread)[0]  # type: ignore[operator]
        return ok, (margin if checks else float(goal.margin(out)[0])), top5, robust_ok

    def protect_file(self, src: Path, out_dir: Path,
                     progress: Callable[[int, int, dict[str, Any]], None] | None = None,
                     dst: Path | None = None) -> ImageRecord:
        """Protect one file into ``out_dir`` (or to ``dst``); errors come back in the record, never raised.

        Only a verified protected file takes the output name: the image is written under a
        hidden temporary name in the output folder, re-read and judged from scratch, and linked
        to its name only if the protection holds. A failure leaves nothing there.
        """
        rec = ImageRecord(input=str(src))
        t0 = time.perf_counter()
        tmp: Path | None = None
        try:
            dst = dst or output_path(src, out_dir, self.config.format)
            rec.output = str(dst)
            if dst.exists():
                raise OutputError(dst, "already exists; not overwritten (use --resume to skip done photos)")
            if dst.resolve() == src.resolve():
                raise OutputError(dst, "output would replace the input")
            img: LoadedImage = load_image(src)
            rec.width, rec.height = img.size
            x, alpha = img.rgb, img.alpha
            if alpha is not None and dst.suffix.lower() not in ALPHA_SUFFIXES:
                # the output format has no alpha: the file shows the photo as flattened on the first
                # background, so that is the image attacked and written
                name, colour = parse_backgrounds(self.config.background)[0]
                x = AlphaComposite(nn.Identity(), alpha, [(name, colour)], stack=False)(x[None])[0]
                alpha = None
            victim = self.victim_for(alpha)
            rec.clean_top5 = victim.predict(quantize(x)[None].to(self.config.device))[0]  # type: ignore[operator]
            fmt = dst.suffix.lstrip(".").lower()
            # alpha only when there is one: subclasses written before it (proxy benchmarks) keep working
            res = (self.protect_tensor(x, fmt, progress) if alpha is None
                   else self.protect_tensor(x, fmt, progress, alpha=alpha))
            adv = res.x_adv[0].cpu()
            tmp = dst.with_name(f".{dst.stem}.jndkit-unverified{dst.suffix}")
            if tmp.exists():
                tmp.unlink()
            save_image(adv, tmp, quality=self.config.quality, alpha=alpha, info=img.info)
            rec.success_engine = bool(res.success[0])
            rec.iterations = int(res.iterations[0])
            rec.strength = res.params[0].get("strength") if self.config.protective else None
            rec.tries = int(res.tries[0])
            ok, margin, top5, robust_ok = self.verify(x, tmp)
            rec.success, rec.margin, rec.protected_top5, rec.robust_success = ok, margin, top5, robust_ok
            saved = load_image(tmp).rgb
            if alpha is None:
                self._measure(rec, quantize(x), saved)
            else:
                self._measure(rec, quantize(x), saved, alpha)
            fooled = ok and (robust_ok is not False)
            if fooled:
                _link_into_place(tmp, dst)
                rec.status = "protected"
            else:
                rec.status, rec.output = "failed", None
                rec.error = f"{src}: not protected: {self._why_not(rec, ok)}; nothing written ({self._hint(rec)})"
        except JndkitError as e:
            rec.status, rec.error = "error", str(e)
        except (OSError, ValueError, RuntimeError) as e:  # anything unexpected about this one file
            rec.status, rec.error = "error", f"{src}: {type(e).__name__}: {e}"
        finally:
            if tmp is not None and tmp.exists():
                tmp.unlink()
        rec.seconds = round(time.perf_counter() - t0, 3)
        return rec

    def _why_not(self, rec: ImageRecord, ok_on_file: bool) -> str:
        """Which model, after which upload, still sees the photo's class (from the matrix)."""
        where = "on the saved file" if not ok_on_file else "after an upload transform"
        if rec.matrix:
            bad = [c for c in rec.matrix["cells"] if not c["changed"] or c["in_top5"] or c["clean_prob"] > 0.1]
            if bad:
                c = min(bad, key=lambda c: (c["changed"], -c["clean_prob"]))
                state = ("still answers" if not c["changed"] else "still has in its top-5") + f" {c['clean_label']}"
                return (f"{c['model']} {state} ({c['clean_prob']:.2f}) after {c['transform']}"
                        f" ({len(bad)} of {len(rec.matrix['cells'])} model x upload checks fail)")
        return f"the goal is not reached {where}"

    def _hint(self, rec: ImageRecord) -> str:
        if not self.config.protective:
            return "raise --max-iter or try another --method"
        if rec.strength is not None and rec.strength < STRENGTHS["strong"]:
            return "--strength strong gives a larger budget, which can show in dark flat areas"
        return "this photo resists the budget; --strength 1.5 or more, or --upload with fewer transforms"

    def _measure(self, rec: ImageRecord, ref: torch.Tensor, saved: torch.Tensor, alpha: Any = None) -> None:
        """Quality numbers of the saved image (its colour channels) and its protection matrix (for a
        transparent photo, one row per model and background: ``mobilenet_v2 on white``)."""
        from . import metrics
        from .perception.jnd import share_above_jnd
        from .verify import protection_matrix

        vals = metrics.compute_metrics(ref[None], saved[None], names=["psnr", "ssim", "l2", "linf", "l0",
                                                                       "ciede2000_mean", "ciede2000_max"])
        rec.psnr = _finite(vals["psnr"][0])
        rec.ssim = float(vals["ssim"][0])
        rec.l2 = float(vals["l2"][0])
        rec.linf = float(vals["linf"][0])
        rec.changed_values = int(vals["l0"][0])
        rec.ciede2000_mean = float(vals["ciede2000_mean"][0])
        rec.ciede2000_max = float(vals["ciede2000_max"][0])
        rec.above_jnd = float(share_above_jnd(ref[None], saved[None], "chou")[0])
        if self.suite.transforms or self.config.protective:
            judges = self.members
            if self.victim_for(alpha) is not self.victim:
                judges = {f"{n} on {b}": AlphaComposite(j, alpha, [(b, c)], stack=False)
                          for b, c in parse_backgrounds(self.config.background) for n, j in self.members.items()}
            m = protection_matrix(ref, saved, judges, self.suite)
            rec.matrix = m.to_json()
            rec.protection = m.summary()


def _finite(v: Any) -> float | None:
    """``None`` for an infinite or NaN value (an unchanged photo has PSNR = inf), else the float."""
    f = float(v)
    return f if math.isfinite(f) else None


def summarise(records: list[ImageRecord]) -> dict[str, Any]:
    """Counts and means over the records (means over protected photos)."""
    done = [r for r in records if r.status in ("protected", "failed")]
    ok = [r for r in records if r.status == "protected"]

    def mean(vals: list[float]) -> float | None:
        finite = [v for v in vals if v is not None and v == v and abs(v) != float("inf")]
        return round(sum(finite) / len(finite), 4) if finite else None

    return {
        "images": len(records),
        "protected": len(ok),
        "failed": sum(r.status == "failed" for r in records),
        "errors": sum(r.status == "error" for r in records),
        "skipped": sum(r.status == "skipped" for r in records),
        "success_rate": round(len(ok) / len(done), 4) if done else None,
        "mean_psnr": mean([r.psnr for r in ok if r.psnr is not None]),
        "mean_ssim": mean([r.ssim for r in ok if r.ssim is not None]),
        "mean_iterations": mean([float(r.iterations) for r in ok if r.iterations is not None]),
        "mean_seconds": mean([r.seconds for r in done if r.seconds is not None]),
    }


def report_dict(config: ProtectConfig, records: list[ImageRecord]) -> dict[str, Any]:
    return {
        "jndkit": __version__,
        "torch": torch.__version__,
        "config": asdict(config),
        "summary": summarise(records),
        "images": [r.to_json() for r in records],
    }


def protect_paths(
    paths: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: ProtectConfig | None = None,
    resume: bool = False,
    protector: Protector | None = None,
    on_start: Callable[[Path, int, int], None] | None = None,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> Iterator[ImageRecord]:
    """Protect files and folders into ``out_dir``, yielding one record per photo as it is done.

    Folders are searched recursively and the output mirrors their tree (``photos/trip/a.jpg`` ->
    ``OUT/trip/a.png``). ``report.json`` in ``out_dir`` is rewritten after every photo, so a crash
    loses at most the photo in hand; it is the truth of the folder: a photo whose verified output
    is there keeps its record (also when ``resume`` skips it), a photo that failed has no output.
    With ``resume``, photos whose output exists are skipped; failures are tried again.

    Raises:
        OutputError: ``out_dir`` cannot be created or written, or holds a ``report.json`` that
            jndkit did not write (checked before any work).
        InputError: no image, or two inputs with the same output name.
    """
    config = config or ProtectConfig()
    out, _ = prepare_run(paths, out_dir)
    plan = plan_outputs(paths, out, config.format)
    report_path = out / "report.json"
    check_report_path(report_path)
    protector = protector or Protector(config)
    previous: dict[str, ImageRecord] = {}
    if report_path.exists():
        try:
            for item in json.loads(report_path.read_text()).get("images", []):
                previous[item["input"]] = _record_from_json(item)
        except (OSError, ValueError, KeyError, TypeError):
            previous = {}
    # the truth of the folder: earlier records only for photos whose verified output is still there
    merged: dict[str, ImageRecord] = {k: r for k, r in previous.items()
                                      if r.status == "protected" and r.output and Path(r.output).exists()}
    for i, (src, dst) in enumerate(plan):
        if on_start is not None:
            on_start(src, i, len(plan))
        old = merged.get(str(src))
        if resume and dst.exists():
            rec = ImageRecord(input=str(src), output=str(dst), status="skipped", error="output exists (resume)")
            if old is None:
                merged[str(src)] = rec
            yield rec
            continue
        rec = protector.protect_file(src, out, progress, dst=dst)
        refused = rec.status == "error" and dst.exists()
        if not (refused and old is not None):
            merged[str(src)] = rec
        write_json_atomic(report_dict(config, list(merged.values())), report_path)
        yield rec
    write_json_atomic(report_dict(config, list(merged.values())), report_path)


def _record_from_json(d: dict[str, Any]) -> ImageRecord:
    rec = ImageRecord(input=d["input"])
    for k, v in d.items():
        if k in ("clean_top5", "protected_top5"):
            v = [(e["label"], e["prob"]) for e in v]
        if hasattr(rec, k):
            setattr(rec, k, v)
    return rec
