"""Apply a machine JND to photo files and judge it on the saved file (``jndkit machine-jnd apply``).

For each photo: decode, optionally work on a downscaled copy, compute ``e`` (a trained net or the
per-image optimiser), write ``x + e`` as an 8-bit PNG, read it back, and evaluate the change the
*file* holds (``e_file = reread - x``, not the float ``e``). Beside it go a picture of ``|e_file|``
and the raw ``e_file`` as ``.npy``. Nothing is ever overwritten: every output of a photo is checked
before the work starts, and written atomically.

* :func:`downscale` -- the antialiased 8-bit copy with a long side of at most ``max_side`` pixels;
* :func:`jnd_picture` -- the grey picture of ``|e|`` and the 8-bit level its white stands for;
* :class:`MachineJndTask` -- the per-photo work as a task of the one pipeline (:mod:`jndkit.pipeline`:
  the same write -> re-read step and report.json as protection), :class:`JndRecord` its record;
* :func:`apply_to_files` -- photos and folders through :func:`jndkit.pipeline.run_paths` (a bad photo
  becomes an error record, the others go on).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OutputError
from ..images import LoadedImage, quantize, save_image
from ..jsonio import write_bytes_atomic
from ..pipeline import Attempt, ProgressFn, Record, run_paths
from .evaluate import evaluate_jnd
from .net import DMVJNDNet
from .train import apply_jnd_net, optimise_jnd_per_image

__all__ = [
    "ALL_CLASSIFIERS", "REPORT_FORMAT", "JndRecord", "MachineJndTask", "apply_to_files", "downscale",
    "jnd_picture", "mean_finite",
]

#: The offline ImageNet classifiers a machine JND is measured against by default.
ALL_CLASSIFIERS: tuple[str, ...] = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: ``format`` of every report.json / NET.json / RESULTS.json the machine-JND runs write.
REPORT_FORMAT = "jndkit-machine-jnd-report/1"

StepFn = Callable[[int, int], None]


def downscale(x: torch.Tensor, alpha: np.ndarray | None,
              max_side: int | None) -> tuple[torch.Tensor, np.ndarray | None]:
    """``x`` ``[1,3,H,W]`` resized (bilinear, antialiased, quantized to 8 bits) so its long side is at
    most ``max_side`` pixels; ``alpha`` (``[H,W]`` uint8 or ``None``) follows. Unchanged when ``max_side``
    is ``None`` or the photo is already small enough. Sides are rounded, at least 1 pixel."""
    h, w = x.shape[-2:]
    if max_side is None or max(h, w) <= max_side:
        return x, alpha
    s = max_side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    small = quantize(F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False))
    if alpha is not None:
        a = torch.from_numpy(alpha.astype(np.float32))[None, None]
        a = F.interpolate(a, size=size, mode="bilinear", antialias=True, align_corners=False)
        alpha = a[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    return small, alpha


def jnd_picture(e: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Grey picture ``[3,H,W]`` in [0,1] of ``|e|`` (``e``: ``[3,H,W]``, [0,1] units): the max over R,G,B
    of ``|e|``, divided by its largest value (white; all black when ``e`` is zero).

    Returns the picture and the 8-bit level that white stands for (``255 * max |e|``).
    """
    m = e.abs().amax(dim=0, keepdim=True)
    peak = float(m.max())
    pic = m / peak if peak > 0 else torch.zeros_like(m)
    return pic.expand(3, -1, -1), 255.0 * peak


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _label(victim: nn.Module, x: torch.Tensor) -> str:
    """The victim's top-1 answer for ``x`` ``[1,3,H,W]``: its label name if it has one, else the index."""
    idx = int(victim(x).argmax(dim=1)[0])
    label = getattr(victim, "label", None)
    return str(label(idx)) if callable(label) else str(idx)


def mean_finite(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values (``None`` and ``inf`` -- the PSNR of an unchanged image -- left out)."""
    v = [float(a) for a in values if a is not None and math.isfinite(float(a))]
    return float(np.mean(v)) if v else None


@dataclass
class JndRecord(Record):
    """One photo of a ``machine-jnd apply`` run (status ``done`` once measured).

    Attributes:
        jnd_png, jnd_npy: the picture of ``|e_file|`` and the raw ``e_file`` (float32 ``[3,H,W]``, [0,1]).
        size, work_size: ``[W,H]`` of the photo and of the copy worked on (``max_side``).
        file_matches_computation: the file holds exactly the computed ``quantize(x + e)``.
        jnd_png_white_levels: the 8-bit level the picture's white stands for.
        labels: per classifier, its top-1 label on the clean photo and on the saved file.
        evaluation: :func:`~jndkit.machine_jnd.evaluate_jnd` of the change the file holds.
    """

    task: str = "machine-jnd"
    jnd_png: str | None = None
    jnd_npy: str | None = None
    size: list[int] | None = None
    work_size: list[int] | None = None
    file_matches_computation: bool | None = None
    jnd_png_white_levels: float | None = None
    labels: dict[str, dict[str, str]] | None = None
    evaluation: dict[str, Any] | None = None


def _side_paths(dst: Path) -> tuple[Path, Path]:
    return dst.with_name(dst.stem + "_jnd.png"), dst.with_name(dst.stem + "_jnd.npy")


@dataclass
class MachineJndTask:
    """``machine-jnd apply`` as a task of the pipeline (:func:`jndkit.pipeline.run_paths`): ``e`` from
    ``net`` (:func:`~jndkit.machine_jnd.apply_jnd_net`) or, without one, the per-image optimiser
    (``steps``, ``lr``, ``seed``); the pipeline writes ``x + e`` as a PNG, reads it back, and
    :meth:`judge` evaluates the change the *file* holds and writes the picture and ``.npy`` beside it.
    A measurement, not a protection: every photo measured is ``done``."""

    victims: Sequence[nn.Module]
    names: Sequence[str]
    net: DMVJNDNet | None = None
    net_path: Path | None = None
    steps: int = 100
    lr: float = 0.05
    seed: int = 0
    max_side: int | None = None
    name: str = "machine-jnd"
    fmt: str = "png"
    quality: int = 95
    done_status: str = "done"

    def config_json(self) -> dict[str, Any]:
        per_image = self.net is None
        return {
            "format": REPORT_FORMAT, "command": "machine-jnd apply", "method": "per-image" if per_image else "net",
            "net": None if per_image else str(self.net_path), "models": list(self.names),
            "steps": self.steps if per_image else None, "lr": self.lr if per_image else None, "seed": self.seed,
            "max_side": self.max_side,
            "jnd_png_scale": "grey = max over R,G,B of |e| / jnd_png_white_levels (per image); black = unchanged",
        }

    def new_record(self, src: Path) -> JndRecord:
        return JndRecord(input=str(src))

    def protect(self, image: LoadedImage, dst: Path, record: Record, progress: ProgressFn | None) -> Attempt:
        for p in _side_paths(dst):
            if p.exists():
                raise OutputError(p, "already exists; not overwritten (choose another output folder or remove it)")
        assert isinstance(record, JndRecord)
        x, alpha = downscale(image.rgb[None], image.alpha, self.max_side)
        if self.net is not None:
            e = apply_jnd_net(self.net, self.victims, x, batch_size=1)
        else:
            e = optimise_jnd_per_image(self.victims, x, steps=self.steps, lr=self.lr, seed=self.seed,
                                       progress=None if progress is None else lambda s, n, _: progress(s, n, {}))
        record.size = [int(image.rgb.shape[2]), int(image.rgb.shape[1])]
        record.work_size = [int(x.shape[3]), int(x.shape[2])]
        return Attempt(quantize(x + e)[0], alpha=alpha, reference=x[0], state=(x, e, dst))

    def judge(self, attempt: Attempt, clean: torch.Tensor, saved: torch.Tensor, record: Record) -> bool:
        """Evaluate the change the re-read file holds; write its picture and raw ``.npy`` beside it."""
        assert isinstance(record, JndRecord)
        x, e, dst = attempt.state
        reread = saved[None]
        e_file = reread - x  # what the file holds, not what was computed
        vis_path, npy_path = _side_paths(dst)
        pic, white = jnd_picture(e_file[0])
        save_image(pic, vis_path)
        write_bytes_atomic(_npy_bytes(e_file[0].numpy().astype(np.float32)), npy_path, overwrite=False)
        record.evaluation = evaluate_jnd(self.victims, x, e_file, seed=self.seed, batch_size=1)
        with torch.no_grad():
            record.labels = {str(getattr(v, "name", n)): {"clean": _label(v, x), "saved": _label(v, reread)}
                             for v, n in zip(self.victims, self.names, strict=True)}
        record.jnd_png, record.jnd_npy = str(vis_path), str(npy_path)
        record.file_matches_computation = bool(torch.equal(quantize(x + e), reread))
        record.jnd_png_white_levels = white
        record.success = True
        return True

    def why_not(self, record: Record) -> str:
        return "not measured"

    def summarise(self, records: Sequence[Record]) -> dict[str, Any]:
        done = [r for r in records if isinstance(r, JndRecord) and r.status == "done" and r.evaluation]
        return {
            "done": len(done),
            "rca_mean": float(np.mean([r.evaluation["rca"]["mean"] for r in done if r.evaluation])) if done else None,
            "psnr_mean": mean_finite([r.evaluation["psnr_mean"] for r in done if r.evaluation]),
        }


def apply_to_files(
    paths: Sequence[Path],
    output: Path,
    victims: Sequence[nn.Module],
    names: Sequence[str],
    *,
    net: DMVJNDNet | None = None,
    net_path: Path | None = None,
    steps: int = 100,
    lr: float = 0.05,
    seed: int = 0,
    max_side: int | None = None,
    resume: bool = False,
    on_start: Callable[[Path, int, int], None] | None = None,
    progress: StepFn | None = None,
) -> Iterator[JndRecord]:
    """Machine JND of each photo of ``paths`` (files or folders) into the folder ``output``, through the
    pipeline (:func:`jndkit.pipeline.run_paths`): ``<stem>.png`` (``x + e`` as saved, the input tree
    mirrored), ``<stem>_jnd.png`` (:func:`jnd_picture` of the saved change) and ``<stem>_jnd.npy``
    (float32 ``[3,H,W]``, [0,1] units: the PNG as read back minus the input); ``report.json`` kept up
    to date after every photo. A photo that fails (unreadable, an output exists, out of memory, a write
    error) yields an ``error`` record with a one-line message naming the file; the others go on.
    ``progress(step, steps)`` after each optimiser step."""
    task = MachineJndTask(victims, names, net, net_path, steps, lr, seed, max_side)
    step = None if progress is None else (lambda s, n, _info: progress(s, n))
    for rec in run_paths(task, paths, output, resume=resume, on_start=on_start, progress=step):
        assert isinstance(rec, JndRecord)
        yield rec
