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
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .attacks import METHODS, Method, get_method, run_attack
from .errors import InputError, JndkitError, OutputError
from .goals import DEFAULT_KAPPA, Goal, parse_goal
from .images import (
    LoadedImage,
    decode_bytes,
    encode_image,
    find_images,
    load_image,
    output_path,
    quantize,
    save_image,
)
from .victims import ClassifierVictim, load_victim

DEFAULT_MODEL = "mobilenet_v2"
DEFAULT_METHOD = "levels"


@dataclass
class ProtectConfig:
    """Everything that decides the output of ``protect`` (same config + seed = same bytes)."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    method: str = DEFAULT_METHOD
    preset: str | None = None
    goal: str = "untargeted"
    kappa: float = DEFAULT_KAPPA
    max_iter: int | None = None
    format: str = "png"
    quality: int = 95
    robust: str = "none"
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> None:
        if self.format not in ("png", "jpg", "webp", "same"):
            raise InputError(f"format must be png, jpg, webp or same, got {self.format!r}")
        if not 1 <= int(self.quality) <= 100:
            raise InputError(f"quality must be in 1..100, got {self.quality}")
        if self.max_iter is not None and self.max_iter < 0:
            raise InputError(f"max_iter must be >= 0, got {self.max_iter}")
        if self.kappa < 0:
            raise InputError(f"kappa must be >= 0, got {self.kappa}")
        parse_robust(self.robust)
        parse_goal(self.goal, self.kappa)
        get_method(self.method, self.preset)


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

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["clean_top5"] = [{"label": a, "prob": round(b, 6)} for a, b in self.clean_top5]
        d["protected_top5"] = [{"label": a, "prob": round(b, 6)} for a, b in self.protected_top5]
        return d


class Protector:
    """Protects photos one at a time with one victim, method and goal.

    >>> p = Protector(ProtectConfig(model="mobilenet_v2"))      # doctest: +SKIP
    >>> record = p.protect_file(Path("photo.jpg"), Path("out"))  # doctest: +SKIP
    """

    def __init__(self, config: ProtectConfig | None = None, victim: ClassifierVictim | None = None) -> None:
        self.config = config or ProtectConfig()
        self.config.validate()
        self.victim = victim if victim is not None else load_victim(self.config.model, self.config.weights,
                                                                     self.config.device)
        self.method = get_method(self.config.method, self.config.preset)
        self.robust = parse_robust(self.config.robust)
        # One level per value (levels' default) does not survive JPEG/WebP: when the output is
        # lossy or a robust re-encoding is asked, a method's lossy preset (levels: `fast`, two
        # levels) is used unless the user chose a preset.
        spec = METHODS[self.config.method]
        self.lossy_method = (get_method(self.config.method, spec.lossy_preset)
                             if self.config.preset is None and spec.lossy_preset else self.method)

    def method_for(self, out_fmt: str) -> Method:
        """The method used for an output format (see ``lossy_method``)."""
        lossy = out_fmt in ("jpg", "jpeg", "webp") or self.robust is not None
        return self.lossy_method if lossy else self.method

    def goal(self) -> Goal:
        return parse_goal(self.config.goal, self.config.kappa)

    def _check_transform(self, out_fmt: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """What success must survive: the lossy output format itself, and/or the robust re-encoding."""
        steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
        if out_fmt in ("jpg", "jpeg", "webp"):
            steps.append(reencode(out_fmt, self.config.quality))
        if self.robust is not None:
            steps.append(reencode(*self.robust))
        if not steps:
            return None
        if len(steps) == 1:
            return steps[0]

        def both(x: torch.Tensor) -> torch.Tensor:
            # the saved lossy image, then its robust re-encoding: checking the latter implies
            # both hold only approximately, so the engine checks the composition
            for s in steps:
                x = s(x)
            return x

        return both

    def protect_tensor(self, x: torch.Tensor, out_fmt: str = "png",
                       progress: Callable[[int, int, dict[str, Any]], None] | None = None):  # type: ignore[no-untyped-def]
        """Attack one image ``[3,H,W]``; returns the engine's :class:`~jndkit.attacks.AttackResult`."""
        x0 = quantize(x.to(self.config.device))[None]
        return run_attack(self.method_for(out_fmt), self.victim, self.goal(), x0, max_iter=self.config.max_iter,
                          seed=self.config.seed, robust=self._check_transform(out_fmt), progress=progress)

    @torch.no_grad()
    def verify(self, clean: torch.Tensor, saved_path: Path) -> tuple[bool, float, list[tuple[str, float]], bool | None]:
        """Re-read ``saved_path`` and judge it at batch 1 against the goal bound to ``clean``.

        Returns (success, margin, protected top-5, robust success or None).
        """
        reread = load_image(saved_path).rgb[None].to(self.config.device)
        x0 = quantize(clean[None].to(self.config.device))
        goal = self.goal().bind(self.victim(x0), self.victim)
        out = self.victim(reread)
        margin = float(goal.margin(out)[0])
        ok = bool(goal.reached(out)[0])
        robust_ok: bool | None = None
        if self.robust is not None:
            rob = reencode(*self.robust)(reread)
            robust_ok = bool(goal.reached(self.victim(rob))[0])
        return ok, margin, self.victim.predict(reread)[0], robust_ok

    def protect_file(self, src: Path, out_dir: Path,
                     progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> ImageRecord:
        """Protect one file into ``out_dir``; errors come back in the record, never raised."""
        from . import metrics

        rec = ImageRecord(input=str(src))
        t0 = time.perf_counter()
        try:
            dst = output_path(src, out_dir, self.config.format)
            rec.output = str(dst)
            if dst.exists():
                raise OutputError(dst, "already exists; not overwritten (use --resume to skip done photos)")
            if dst.resolve() == src.resolve():
                raise OutputError(dst, "output would replace the input")
            img: LoadedImage = load_image(src)
            rec.width, rec.height = img.size
            x = img.rgb
            rec.clean_top5 = self.victim.predict(quantize(x)[None].to(self.config.device))[0]
            fmt = dst.suffix.lstrip(".").lower()
            res = self.protect_tensor(x, fmt, progress)
            adv = res.x_adv[0].cpu()
            save_image(adv, dst, quality=self.config.quality, alpha=img.alpha, info=img.info)
            rec.success_engine = bool(res.success[0])
            rec.iterations = int(res.iterations[0])
            rec.tries = int(res.tries[0])
            ok, margin, top5, robust_ok = self.verify(x, dst)
            rec.success, rec.margin, rec.protected_top5, rec.robust_success = ok, margin, top5, robust_ok
            saved = load_image(dst).rgb[None]
            ref = quantize(x)[None]
            vals = metrics.compute_metrics(ref, saved, names=["psnr", "ssim", "l2", "linf", "l0"])
            rec.psnr = float(vals["psnr"][0])
            rec.ssim = float(vals["ssim"][0])
            rec.l2 = float(vals["l2"][0])
            rec.linf = float(vals["linf"][0])
            rec.changed_values = int(vals["l0"][0])
            fooled = ok and (robust_ok is not False)
            rec.status = "protected" if fooled else "failed"
            if not fooled:
                rec.error = "saved image still recognised (raise --max-iter or try another method)"
        except JndkitError as e:
            rec.status, rec.error = "error", str(e)
        except (OSError, ValueError, RuntimeError) as e:  # anything unexpected about this one file
            rec.status, rec.error = "error", f"{src}: {type(e).__name__}: {e}"
        rec.seconds = round(time.perf_counter() - t0, 3)
        return rec


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


def write_json_atomic(data: Any, path: Path) -> None:
    """Write JSON through a temporary file and a rename (the report may be replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def report_dict(config: ProtectConfig, records: list[ImageRecord]) -> dict[str, Any]:
    return {
        "jndkit": __version__,
        "torch": torch.__version__,
        "config": asdict(config),
        "summary": summarise(records),
        "images": [r.to_json() for r in records],
    }


def prepare_run(paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """Check the output folder can be written and expand the inputs, before any work is done.

    Raises:
        OutputError: ``out_dir`` cannot be created or written.
        InputError: no image among ``paths``.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".jndkit-probe-", delete=True)
        probe.close()
    except OSError as e:
        raise OutputError(out, f"output folder cannot be written ({e.strerror or e})") from None
    files = find_images(list(paths))
    if not files:
        raise InputError("no images found in " + ", ".join(str(p) for p in paths))
    return out, files


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

    ``report.json`` in ``out_dir`` is rewritten after every photo, so a crash loses at most
    the photo in hand. With ``resume``, photos whose output exists are skipped and their
    earlier records kept.

    Raises:
        OutputError: ``out_dir`` cannot be created or written (checked before any work).
    """
    config = config or ProtectConfig()
    out, files = prepare_run(paths, out_dir)
    protector = protector or Protector(config)
    report_path = out / "report.json"
    # report.json describes the output folder: earlier records are kept, and a record is replaced
    # only by real work on that photo (an "already exists" refusal does not erase a good record).
    previous: dict[str, ImageRecord] = {}
    if report_path.exists():
        try:
            for item in json.loads(report_path.read_text()).get("images", []):
                previous[item["input"]] = _record_from_json(item)
        except (OSError, ValueError, KeyError, TypeError):
            previous = {}
    merged: dict[str, ImageRecord] = dict(previous)
    for i, src in enumerate(files):
        if on_start is not None:
            on_start(src, i, len(files))
        dst = output_path(src, out, config.format)
        old = previous.get(str(src))
        if resume and dst.exists():
            rec = ImageRecord(input=str(src), output=str(dst), status="skipped", error="output exists (resume)")
            if old is None or old.status == "error":
                merged[str(src)] = rec
            yield rec
            continue
        rec = protector.protect_file(src, out, progress)
        refused = rec.status == "error" and dst.exists()
        if not (refused and old is not None and old.status in ("protected", "failed")):
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
