"""Training and evaluation runs of the machine JND as ``jndkit machine-jnd train`` and ``eval`` do them.

* :func:`materialise` -- a ``--data`` spec as an in-memory :class:`~jndkit.machine_jnd.ImageSet`
  (a bad file in a folder is reported through a callback and left out);
* :func:`train_and_save` and :func:`training_record` -- train on a seeded split, save the net,
  evaluate it on the held-out share, and the NET.json that records it all;
* :func:`read_training_record` and :func:`inherit_settings` -- evaluation settings taken from
  NET.json (data, size, crops, seed, held-out split), so ``eval --net`` re-measures the paper's
  testing RCA on the very images training held out;
* :func:`evaluate_parts` and :func:`evaluation_report` -- evaluate a net (or the per-image optimiser)
  on the held-out and training parts, and the RESULTS.json of that.

All numbers are on the saved 8-bit images (see :func:`~jndkit.machine_jnd.evaluate_jnd`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import ImageError, InputError
from .apply import REPORT_FORMAT
from .data import ImageSet, batches, load_images, split_holdout
from .evaluate import evaluate_jnd, evaluate_jnd_net
from .net import DMVJNDNet
from .train import TrainConfig, config_dict, optimise_jnd_per_image, save_jnd_net, train_jnd_net

__all__ = [
    "EvalSettings", "TrainRun", "default_size", "evaluate_parts", "evaluation_report", "inherit_settings",
    "materialise", "read_training_record", "train_and_save", "training_record",
]

#: Crops per shipped photo when nothing else says.
DEFAULT_CROPS = 4


def default_size(data: str) -> int:
    """The square side of a ``--data`` spec: 32 for CIFAR-10, else 224."""
    return 32 if data.startswith(("cifar10:", "cifar10-test:")) else 224


def materialise(data: str, size: int, seed: int, crops_per_photo: int,
                on_bad: Callable[[ImageError], None] | None = None) -> tuple[ImageSet, int]:
    """The images of ``data`` (see :func:`~jndkit.machine_jnd.load_images`) held in memory, ``[N,3,size,size]``.

    A file of a folder that cannot be read is passed to ``on_bad`` (in folder order) and left out.

    Returns:
        ``(images, number_of_bad_files)``.

    Raises:
        InputError: ``data`` is unknown or empty, or no file of it is readable.
    """
    ds: Dataset[torch.Tensor] = load_images(data, size=size, seed=seed, crops_per_photo=crops_per_photo)
    if isinstance(ds, ImageSet):
        return ds, 0
    n = len(ds)  # type: ignore[arg-type]
    imgs, names, bad = [], [], 0
    for i, name in enumerate(getattr(ds, "names", [str(i) for i in range(n)])):
        try:
            imgs.append(ds[i])
            names.append(name)
        except ImageError as e:
            if on_bad is not None:
                on_bad(e)
            bad += 1
    if not imgs:
        raise InputError(f"{data}: no readable images")
    return ImageSet(torch.stack(imgs), names), bad


# ---------------------------------------------------------------- train


@dataclass
class TrainRun:
    """What :func:`train_and_save` did: the net (saved), its per-step history, the two parts of the
    images, the held-out evaluation (``None`` without a held-out share) and the training seconds."""

    net: DMVJNDNet
    history: list[dict[str, float]]
    train_set: ImageSet
    held_out: ImageSet | None
    held_out_eval: dict[str, Any] | None
    train_seconds: float


def train_and_save(
    victims: Sequence[nn.Module],
    images: ImageSet,
    output: Path,
    *,
    config: TrainConfig,
    holdout: float,
    seed: int,
    max_steps: int | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    held_out_progress: Callable[[int, int], None] | None = None,
) -> TrainRun:
    """Hold out a seeded share ``holdout`` of ``images`` (0: none), train a DMV-JND-NET on the rest
    (:func:`~jndkit.machine_jnd.train_jnd_net` with ``config``, at most ``max_steps`` steps;
    ``progress(step, total, record)``), save it to ``output`` (never overwriting), then evaluate the
    saved net on the held-out images (``held_out_progress(batches_done, batches)``).

    Raises:
        InputError: too few images to hold some out, a bad setting.
        OutputError: ``output`` exists or cannot be written.
    """
    train_set, held = split_holdout(images, holdout, seed) if holdout > 0 else (images, None)
    t0 = time.perf_counter()
    net, history = train_jnd_net(victims, train_set, progress=progress, config=config, max_steps=max_steps)
    train_seconds = time.perf_counter() - t0
    save_jnd_net(net, output)
    held_eval = None
    if held is not None:
        if held_out_progress is not None:
            held_out_progress(0, math.ceil(len(held) / config.batch_size))
        held_eval = evaluate_jnd_net(net, victims, held, batch_size=config.batch_size, seed=seed,
                                     progress=None if held_out_progress is None
                                     else lambda i, n, _: held_out_progress(i, n))
    return TrainRun(net, history, train_set, held, held_eval, train_seconds)


def training_record(run: TrainRun, *, net_path: Path, data: str, size: int, crops_per_photo: int, seed: int,
                    holdout: float, models: Sequence[str], config_name: str, config: TrainConfig,
                    max_steps: int | None, bad_files: int) -> dict[str, Any]:
    """NET.json of a training run: the data and its split (image names), the settings, the per-step
    history and the held-out evaluation (what :func:`inherit_settings` reads back)."""
    return {
        "format": REPORT_FORMAT,
        "command": "machine-jnd train",
        "net": str(net_path),
        "data": data, "size": size, "crops_per_photo": crops_per_photo, "seed": seed, "holdout": holdout,
        "models": list(models),
        "config_name": config_name, "config": config_dict(config), "max_steps": max_steps,
        "images": {"train": list(run.train_set.names),
                   "held_out": list(run.held_out.names) if run.held_out is not None else []},
        "bad_files": bad_files,
        "steps": len(run.history),
        "train_seconds": run.train_seconds,
        "history": run.history,
        "held_out": run.held_out_eval,
    }


# ---------------------------------------------------------------- eval


def read_training_record(net_path: Path) -> dict[str, Any]:
    """NET.json beside ``net_path`` (``{}`` when there is none).

    Raises:
        InputError: the file exists but is not a JSON object (the message names it).
    """
    record = net_path.with_suffix(".json")
    if not record.is_file():
        return {}
    try:
        meta = json.loads(record.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{record}: not read ({e})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{record}: not read (not a JSON object)")
    return meta


@dataclass(frozen=True)
class EvalSettings:
    """The images an evaluation runs on: ``--data`` spec, square side, crops per shipped photo, seed
    (crops, split, white noise) and held-out share (0: all images as one part)."""

    data: str
    size: int
    crops_per_photo: int
    seed: int
    holdout: float


def inherit_settings(meta: Mapping[str, Any], *, data: str | None = None, size: int | None = None,
                     crops_per_photo: int | None = None, seed: int | None = None,
                     holdout: float | None = None) -> EvalSettings:
    """Evaluation settings: each one given wins; the rest come from ``meta`` (a NET.json, see
    :func:`read_training_record`), else the defaults (shipped, :func:`default_size`, 4 crops, seed 0,
    no hold-out).

    Size, crops and the held-out share are inherited only when the data are the net's own (``data``
    not given or equal to NET.json's): then the split is training's and the held-out numbers are the
    paper's testing RCA. The seed is inherited in any case.
    """
    same_data = data is None or data == meta.get("data")
    spec = str(data or meta.get("data", "shipped"))
    side = size or (meta.get("size") if same_data else None) or default_size(spec)
    crops = crops_per_photo or (meta.get("crops_per_photo") if same_data else None) or DEFAULT_CROPS
    seed_ = seed if seed is not None else int(meta.get("seed", 0))
    share = holdout if holdout is not None else (float(meta.get("holdout", 0.0)) if same_data and meta else 0.0)
    return EvalSettings(spec, int(side), int(crops), seed_, share)


def evaluate_parts(
    victims: Sequence[nn.Module],
    images: ImageSet,
    *,
    holdout: float,
    seed: int,
    net: DMVJNDNet | None = None,
    steps: int = 100,
    batch_size: int = 8,
    progress: Callable[[str, int, int], None] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Evaluate a machine JND on ``images``: with ``holdout`` > 0 the seeded split of
    :func:`~jndkit.machine_jnd.split_holdout` gives the parts ``held_out`` then ``train``, else one part
    ``all``. ``e`` comes from ``net`` or, without one, from the per-image optimiser (``steps``).

    Yields ``(part, evaluation)`` as each part is done: :func:`~jndkit.machine_jnd.evaluate_jnd`'s dict
    plus ``image_names``. ``progress(part, batches_done, batches)`` is called before and during each part.

    Raises:
        InputError: too few images to split, or a bad setting.
    """
    if holdout > 0:
        train_set, held = split_holdout(images, holdout, seed)
        parts = {"held_out": held, "train": train_set}
    else:
        parts = {"all": images}
    for part, subset in parts.items():
        if progress is not None:
            progress(part, 0, math.ceil(len(subset) / batch_size))
        if net is not None:
            ev = evaluate_jnd_net(net, victims, subset, batch_size=batch_size, seed=seed,
                                  progress=None if progress is None else _for_part(progress, part))
        else:
            chunks = batches(subset, batch_size)
            es = []
            for k, xb in enumerate(chunks):
                es.append(optimise_jnd_per_image(victims, xb, steps=steps, seed=seed))
                if progress is not None:
                    progress(part, k + 1, len(chunks))
            ev = evaluate_jnd(victims, torch.cat(chunks), torch.cat(es), seed=seed, batch_size=batch_size)
        ev["image_names"] = list(subset.names)
        yield part, ev


def _for_part(progress: Callable[[str, int, int], None], part: str) -> Callable[[int, int, dict[str, Any]], None]:
    """``progress`` as :func:`~jndkit.machine_jnd.evaluate_jnd_net` calls it, for ``part``."""

    def call(done: int, total: int, _: dict[str, Any]) -> None:
        progress(part, done, total)

    return call


def evaluation_report(results: Mapping[str, dict[str, Any]], settings: EvalSettings, *, net_path: Path | None,
                      models: Sequence[str], steps: int, bad_files: int, seconds: float) -> dict[str, Any]:
    """RESULTS.json of an evaluation: the settings and the evaluation of each part (:func:`evaluate_parts`)."""
    return {
        "format": REPORT_FORMAT, "command": "machine-jnd eval",
        "method": "per-image" if net_path is None else "net", "net": str(net_path) if net_path else None,
        "steps": steps if net_path is None else None,
        "models": list(models), "data": settings.data, "size": settings.size,
        "crops_per_photo": settings.crops_per_photo, "seed": settings.seed, "holdout": settings.holdout,
        "bad_files": bad_files, "seconds": seconds, "results": dict(results),
    }
