"""Judge a protected photo in the world: every model, after every upload transform.

:func:`protection_matrix` is the one judge of classifier protection: ``jndkit verify``,
``jndkit protect``'s report and ``benchmarks/bench_world.py`` all call it. For a photo and its
protected copy it gives, per model and per transform (the saved file itself, then each real
transform of the upload suite), whether the model's top-1 changed, whether the clean class is
still in its top-5 and with what probability.

The *clean class* of a model is its own top-1 on the original photo (no transform): protection
means the model no longer says what it said of the untouched photo. Beside each cell the matrix
keeps the clean photo's own answer after the same transform (``clean_changed``): about 6 % of
crops already change label after JPEG 75 alone, and a protected rate means little without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InputError
from .images import load_image, quantize
from .transforms import UploadSuite, get_suite

SAVED = "saved"
"""Name of the no-transform column: the saved file as it is."""


@dataclass
class Cell:
    """One model after one transform.

    Attributes:
        model: the model's name.
        transform: ``"saved"`` or a transform name of the suite.
        clean_label: the model's top-1 on the original photo (the class to hide).
        label: its top-1 on the transformed protected photo.
        confidence: the probability of ``label``.
        clean_prob: the probability it still gives the clean class.
        changed: ``label != clean_label``.
        in_top5: the clean class is still among its top-5.
        clean_changed: the *original* photo after the same transform already changes top-1.
    """

    model: str
    transform: str
    clean_label: str
    label: str
    confidence: float
    clean_prob: float
    changed: bool
    in_top5: bool
    clean_changed: bool

    @property
    def hidden(self) -> bool:
        """Top-1 changed and the clean class out of the top-5."""
        return self.changed and not self.in_top5


@dataclass
class Matrix:
    """Per-photo protection matrix (models x transforms) and its one-line verdict."""

    models: list[str]
    transforms: list[str]
    suite: str
    cells: list[Cell] = field(default_factory=list)

    def cell(self, model: str, transform: str) -> Cell:
        for c in self.cells:
            if c.model == model and c.transform == transform:
                return c
        raise KeyError((model, transform))

    def holds(self, model: str, criterion: str = "changed") -> bool:
        """Whether protection holds for ``model`` after every transform (``changed`` or ``hidden``)."""
        return all(getattr(c, criterion) for c in self.cells if c.model == model)

    def summary(self) -> str:
        """The report's one line: ``protection holds for m/n models after k/k uploads (clean class
        out of the top-5 for h/n)``; a model counts when its top-1 changed after every upload."""
        n_t = len(self.transforms)
        ok = sum(self.holds(m, "changed") for m in self.models)
        hidden = sum(self.holds(m, "hidden") for m in self.models)
        return (f"protection holds for {ok}/{len(self.models)} models after {n_t}/{n_t} uploads "
                f"(clean class out of the top-5 for {hidden}/{len(self.models)})")

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "models": self.models, "transforms": self.transforms,
                "summary": self.summary(), "cells": [asdict(c) for c in self.cells]}


def _columns(suite: UploadSuite, h: int, w: int) -> list[tuple[str, Any]]:
    return [(SAVED, None)] + [(t.name, t) for t in suite.for_size(h, w)]


@torch.no_grad()
def judge_batch(x0: torch.Tensor, x: torch.Tensor, models: Mapping[str, nn.Module],
                suite: UploadSuite | str = "social") -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    """Batched judge: ``x0`` originals and ``x`` protected ``[B,3,H,W]`` (8-bit values).

    Returns, per ``(model, transform)``, tensors ``[B]``: ``changed``, ``in_top5``,
    ``clean_prob``, ``confidence``, ``label``, ``clean_label`` (indices) and ``clean_changed``.
    Models map ``[B,3,H,W]`` to logits ``[B,C]``.
    """
    if x0.shape != x.shape:
        raise InputError(f"original and protected must have the same shape, got {list(x0.shape)} and {list(x.shape)}")
    s = get_suite(suite) if isinstance(suite, str) else suite
    x0, x = quantize(x0), quantize(x)
    cols = _columns(s, x0.shape[-2], x0.shape[-1])
    imgs = {name: (x0, x) if t is None else (t.apply(x0), t.apply(x)) for name, t in cols}
    out: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for mname, model in models.items():
        clean_label = model(x0).argmax(dim=1)
        for tname, (c, p) in imgs.items():
            probs = model(p).float().softmax(dim=1)
            conf, label = probs.max(dim=1)
            top5 = probs.topk(min(5, probs.shape[1]), dim=1).indices
            clean_t = model(c).argmax(dim=1) if tname != SAVED else clean_label
            out[(mname, tname)] = {
                "changed": label != clean_label,
                "in_top5": (top5 == clean_label[:, None]).any(dim=1),
                "clean_prob": probs.gather(1, clean_label[:, None]).squeeze(1),
                "confidence": conf,
                "label": label,
                "clean_label": clean_label,
                "clean_changed": clean_t != clean_label,
            }
    return out


def protection_matrix(original: torch.Tensor, protected: torch.Tensor, models: Mapping[str, nn.Module],
                      suite: UploadSuite | str = "social") -> Matrix:
    """The matrix of one photo: ``original`` and ``protected`` ``[3,H,W]`` in [0,1]."""
    s = get_suite(suite) if isinstance(suite, str) else suite
    res = judge_batch(original[None], protected[None], models, s)
    cols = [name for name, _ in _columns(s, original.shape[-2], original.shape[-1])]
    m = Matrix(models=list(models), transforms=cols, suite=s.version)
    for (mname, tname), r in res.items():
        model = models[mname]
        lab = getattr(model, "label", lambda i: str(i))
        m.cells.append(Cell(model=mname, transform=tname, clean_label=lab(int(r["clean_label"][0])),
                            label=lab(int(r["label"][0])), confidence=round(float(r["confidence"][0]), 6),
                            clean_prob=round(float(r["clean_prob"][0]), 6), changed=bool(r["changed"][0]),
                            in_top5=bool(r["in_top5"][0]), clean_changed=bool(r["clean_changed"][0])))
    return m


def load_judges(names: Sequence[str] | str = "imagenet", device: str = "cpu") -> dict[str, nn.Module]:
    """The models that judge: a panel name or a list of model names (offline weights only)."""
    from .victims import load_victim, panel_members

    spec = names if isinstance(names, str) else ",".join(names)
    return {n: load_victim(n, device=device) for n in panel_members(spec)}


def verify_files(original: str | os.PathLike[str], protected: str | os.PathLike[str],
                 models: Mapping[str, nn.Module] | None = None, suite: str = "social") -> Matrix:
    """Judge any protected file (jndkit's or another tool's) against its original.

    Raises:
        ImageError: a file cannot be read.
        InputError: the two photos differ in size.
    """
    a = load_image(original)
    b = load_image(protected)
    if a.rgb.shape != b.rgb.shape:
        raise InputError(f"{protected}: size {b.size[0]}x{b.size[1]} differs from the original's "
                         f"{a.size[0]}x{a.size[1]} ({Path(original).name}); compare a photo with its own protected copy")
    return protection_matrix(a.rgb, b.rgb, models if models is not None else load_judges(), suite)
