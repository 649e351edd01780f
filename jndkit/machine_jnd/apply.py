"""Apply a machine JND to photo files and judge it on the saved file (``jndkit machine-jnd apply``).

For each photo: decode, optionally work on a downscaled copy, compute ``e`` (a trained net or the
per-image optimiser), write ``x + e`` as an 8-bit PNG, read it back, and evaluate the change the
*file* holds (``e_file = reread - x``, not the float ``e``). Beside it go a picture of ``|e_file|``
and the raw ``e_file`` as ``.npy``. Nothing is ever overwritten: every output of a photo is checked
before the work starts, and written atomically.

* :func:`downscale` -- the antialiased 8-bit copy with a long side of at most ``max_side`` pixels;
* :func:`jnd_picture` -- the grey picture of ``|e|`` and the 8-bit level its white stands for;
* :func:`apply_to_file` / :func:`apply_to_files` -- one photo / many (a bad photo becomes an error
  record, the others go on);
* :func:`apply_report` -- report.json of a run (settings, summary, per-photo records).
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import JndkitError, OutputError
from ..images import load_image, quantize, save_image
from ..jsonio import write_bytes_atomic
from .evaluate import evaluate_jnd
from .net import DMVJNDNet
from .train import apply_jnd_net, optimise_jnd_per_image

__all__ = [
    "ALL_CLASSIFIERS", "REPORT_FORMAT", "apply_report", "apply_to_file", "apply_to_files", "downscale",
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


def apply_to_file(
    src: Path,
    output: Path,
    victims: Sequence[nn.Module],
    names: Sequence[str],
    *,
    net: DMVJNDNet | None = None,
    steps: int = 100,
    lr: float = 0.05,
    seed: int = 0,
    max_side: int | None = None,
    progress: StepFn | None = None,
) -> dict[str, Any]:
    """Machine JND of the photo ``src`` into the folder ``output``: ``<stem>.png`` (``x + e`` as saved),
    ``<stem>_jnd.png`` (:func:`jnd_picture` of the saved change) and ``<stem>_jnd.npy`` (float32
    ``[3,H,W]``, [0,1] units: the PNG as read back minus the input).

    ``e`` comes from ``net`` (:func:`~jndkit.machine_jnd.apply_jnd_net`) or, without one, from
    :func:`~jndkit.machine_jnd.optimise_jnd_per_image` (``steps``, ``lr``, ``seed``; ``progress(step,
    steps)`` after each step). ``names`` are the classifiers' names in ``victims``' order.

    Returns the photo's record (``status`` ``done``): sizes, whether the file holds exactly the
    computed ``x + e``, the white level of the picture, each classifier's clean and saved top-1
    label, :func:`~jndkit.machine_jnd.evaluate_jnd` of the saved change, and the seconds taken.

    Raises:
        OutputError: one of the three outputs exists already (nothing is written).
        ImageError: ``src`` cannot be read as an image.
    """
    t0 = time.perf_counter()
    dst = output / (src.stem + ".png")
    vis_path = output / (src.stem + "_jnd.png")
    npy_path = output / (src.stem + "_jnd.npy")
    for p in (dst, vis_path, npy_path):
        if p.exists():
            raise OutputError(p, f"already exists; not overwritten, {src.name} skipped "
                              "(choose another output folder or remove it)")
    img = load_image(src)
    x, alpha = downscale(img.rgb[None], img.alpha, max_side)
    if net is not None:
        e = apply_jnd_net(net, victims, x, batch_size=1)
    else:
        e = optimise_jnd_per_image(victims, x, steps=steps, lr=lr, seed=seed,
                                   progress=None if progress is None else lambda s, n, _: progress(s, n))
    save_image(quantize(x + e)[0], dst, alpha=alpha, info=img.info)
    reread = load_image(dst).rgb[None]
    e_file = reread - x  # what the file holds, not what was computed
    pic, white = jnd_picture(e_file[0])
    save_image(pic, vis_path)
    write_bytes_atomic(_npy_bytes(e_file[0].numpy().astype(np.float32)), npy_path, overwrite=False)
    ev = evaluate_jnd(victims, x, e_file, seed=seed, batch_size=1)
    with torch.no_grad():
        labels = {str(getattr(v, "name", n)): {"clean": _label(v, x), "saved": _label(v, reread)}
                  for v, n in zip(victims, names, strict=True)}
    return {
        "input": str(src), "status": "done",
        "output": str(dst), "jnd_png": str(vis_path), "jnd_npy": str(npy_path),
        "size": [int(img.rgb.shape[2]), int(img.rgb.shape[1])],
        "work_size": [int(x.shape[3]), int(x.shape[2])],
        "file_matches_computation": bool(torch.equal(quantize(x + e), reread)),
        "jnd_png_white_levels": white,
        "labels": labels,
        "evaluation": ev,
        "seconds": time.perf_counter() - t0,
    }


def apply_to_files(
    files: Sequence[Path],
    output: Path,
    victims: Sequence[nn.Module],
    names: Sequence[str],
    *,
    net: DMVJNDNet | None = None,
    steps: int = 100,
    lr: float = 0.05,
    seed: int = 0,
    max_side: int | None = None,
    on_start: Callable[[Path, int, int], None] | None = None,
    progress: StepFn | None = None,
) -> Iterator[dict[str, Any]]:
    """:func:`apply_to_file` for each of ``files`` in turn, yielding one record per photo.

    A photo that fails (unreadable, an output exists, out of memory, a write error) yields
    ``{"input", "status": "error", "error"}`` with a one-line message naming the file; the others
    go on. ``on_start(path, i, n)`` is called before photo ``i`` of ``n``.
    """
    for i, src in enumerate(files):
        if on_start is not None:
            on_start(src, i, len(files))
        try:
            yield apply_to_file(src, output, victims, names, net=net, steps=steps, lr=lr, seed=seed,
                                max_side=max_side, progress=progress)
        except (JndkitError, OSError, MemoryError) as exc:  # one record for this photo; the others go on
            msg = str(exc) if isinstance(exc, JndkitError) else f"{src}: {type(exc).__name__}: {exc}"
            yield {"input": str(src), "status": "error", "error": msg}


def apply_report(records: Sequence[dict[str, Any]], *, net_path: Path | None, models: Sequence[str], steps: int,
                 lr: float, seed: int, max_side: int | None) -> dict[str, Any]:
    """report.json of an apply run: the settings, a summary (photos done and failed, mean RCA, mean
    finite PSNR) and the per-photo records of :func:`apply_to_files`. ``net_path`` ``None``: the
    per-image optimiser (``steps`` and ``lr`` are recorded only then)."""
    done = [r for r in records if r["status"] == "done"]
    summary = {
        "images": len(records), "done": len(done), "errors": len(records) - len(done),
        "rca_mean": float(np.mean([r["evaluation"]["rca"]["mean"] for r in done])) if done else None,
        "psnr_mean": mean_finite([r["evaluation"]["psnr_mean"] for r in done]),
    }
    per_image = net_path is None
    return {
        "format": REPORT_FORMAT, "command": "machine-jnd apply",
        "method": "per-image" if per_image else "net",
        "net": None if per_image else str(net_path), "models": list(models),
        "steps": steps if per_image else None, "lr": lr if per_image else None, "seed": seed,
        "max_side": max_side,
        "jnd_png_scale": "grey = max over R,G,B of |e| / jnd_png_white_levels (per image); black = unchanged",
        "summary": summary, "images": list(records),
    }
