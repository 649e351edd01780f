"""Benchmarks on a deterministic evaluation set, with success judged on the saved image.

The default evaluation set is made of crops and flips of the photos that ship inside
scikit-image, scikit-learn and matplotlib, resized to the model's input size, keeping
those the model itself labels with confidence >= ``min_confidence`` (seed 003's
classifier-generated labels). Each method runs through the one engine; every
adversarial image is then written as PNG, read back from the file (and re-encoded as
JPEG when asked), and judged by the victim at batch size 1. The quality metrics are
computed on the image read back from the file.

:func:`run_benchmark` runs a whole benchmark into a folder, reusing finished rows (one
cache per model, method, preset, goal and robustness setting, one row per image) and
returns what the tables need:

* :func:`summary_table` success after save, iterations, time, PSNR and SSIM (mean ± std,
  seed 001 Tables I-II);
* :func:`quality_table` PSNR, SSIM, MS-SSIM, UQI, SCC, VIFP (seed 000 Tables 1 and 4);
* :func:`distance_table` L0, L1, L2, L∞, changed ratio, CIEDE2000, histogram KL, share
  above the human JND (seed 000 Tables 2 and 5);
* :func:`threshold_table` iterations, SSIM and L2 to reach a wrong-class confidence
  (seed 000 Table 3, goals ``margin:0.25`` and ``margin:0.6``);
* :func:`transfer_matrix` / :func:`transfer_table` images protected against model A,
  judged by model B;
* :func:`confidence_curves` / :func:`plot_confidence` the confidence along the
  iterations (seed 000 Figure 4).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attacks import METHODS, get_method, run_attack
from .errors import InputError, JndkitError
from .goals import DEFAULT_KAPPA, parse_goal
from .images import decode_bytes, encode_image, load_image, quantize
from .victims import ClassifierVictim

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, description)``: images done out of the whole benchmark."""

THRESHOLD_GOALS = ("margin:0.25", "margin:0.6")
"""Seed 000 Table 3: the wrong class must reach 25 % and 60 % confidence."""

FAMILY_ORDER = {"jndkit": 0, "seed": 1, "baseline": 2}


# ----------------------------------------------------------------------------------
# The evaluation set
# ----------------------------------------------------------------------------------
def _crops(arr: np.ndarray, size: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Deterministic square crops (3 scales x 5 positions) and their mirror images."""
    x = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float()[None] / 255.0
    h, w = x.shape[-2:]
    short = min(h, w)
    for scale in (1.0, 0.75, 0.55):
        s = int(short * scale)
        for pos, (top, left) in {
            "c": ((h - s) // 2, (w - s) // 2), "tl": (0, 0), "tr": (0, w - s), "bl": (h - s, 0), "br": (h - s, w - s),
        }.items():
            if scale == 1.0 and pos != "c" and (h == w):
                continue
            c = x[..., top : top + s, left : left + s]
            c = F.interpolate(c, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            c = quantize(c)
            yield f"s{scale:g}-{pos}", c
            yield f"s{scale:g}-{pos}-flip", c.flip(-1)


def evaluation_set(victim: ClassifierVictim, n: int = 32, size: int | None = None, min_confidence: float = 0.5,
                   data: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` images ``[n,3,S,S]`` with the victim's own confident labels, and their names.

    With ``data``, the images are the files of that folder (recursively, sorted), resized to
    ``S``; otherwise crops of the package-shipped photos. Deterministic: same inputs, same set.
    """
    from .images import find_images
    from .samples import sample_array, sample_names

    s = size or (victim.input_size[0] if victim.input_size else 224)
    candidates: list[tuple[str, torch.Tensor]] = []
    if data is not None:
        for p in find_images([data]):
            try:
                x = load_image(p).rgb[None]
            except JndkitError:  # unreadable files are left out of the set
                continue
            x = quantize(F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False))
            candidates.append((str(Path(p).relative_to(data)) if Path(data).is_dir() else p.name, x))
    else:
        # interleave photos so that a small n still spans several scenes
        per_photo = [[(f"{name}/{tag}", c) for tag, c in _crops(sample_array(name), s)] for name in sample_names()]
        for i in range(max(len(p) for p in per_photo)):
            for p in per_photo:
                if i < len(p):
                    candidates.append(p[i])
    keep_x, keep_y, names = [], [], []
    with torch.no_grad():
        for start in range(0, len(candidates), 32):
            chunk = candidates[start : start + 32]
            xb = torch.cat([c for _, c in chunk])
            probs = victim(xb).softmax(1)
            conf, lab = probs.max(1)
            for (name, x), c, y in zip(chunk, conf.tolist(), lab.tolist()):
                if c >= min_confidence:
                    keep_x.append(x)
                    keep_y.append(y)
                    names.append(name)
            if len(keep_x) >= n:
                break
    if len(keep_x) < n:
        raise InputError(f"only {len(keep_x)} images reach confidence {min_confidence} under {victim.name}; "
                         f"asked for {n}")
    return torch.cat(keep_x[:n]), torch.tensor(keep_y[:n]), names[:n]


def image_hash(x: torch.Tensor) -> str:
    """Short fingerprint of one 8-bit image ``[3,H,W]`` (a cached row is reused only for the same image)."""
    arr = (x.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------
# Method selection
# ----------------------------------------------------------------------------------
def parse_method_images(spec: str) -> dict[str, int]:
    """``"mnd=8,hvs=8"`` -> ``{"mnd": 8, "hvs": 8}`` (per-method image caps of :class:`BenchConfig`).

    Raises:
        InputError: an item that is not ``METHOD=N`` with a known method and an integer N.
    """
    out: dict[str, int] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, eq, num = item.partition("=")
        if not eq or not num.strip().isdigit():
            raise InputError(f"bad per-method image count {item!r}: expected METHOD=N, e.g. mnd=8")
        if name.strip() not in METHODS:
            raise InputError(f"unknown method {name.strip()!r} in {item!r}; available: {', '.join(sorted(METHODS))}")
        out[name.strip()] = int(num)
    return out


def resolve_methods(spec: str | Sequence[str]) -> list[tuple[str, str]]:
    """``(name, preset)`` pairs from a method list.

    Items (comma separated): ``all`` (every registered method with its default preset),
    a family (``jndkit``, ``seeds``, ``baselines``), ``NAME`` (default preset) or
    ``NAME:PRESET``. Order: as given; a family expands in registry order, jndkit first.
    Duplicates are dropped.

    Raises:
        InputError: an unknown method, family or preset.
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise InputError("no methods given")
    ordered = sorted(METHODS.values(), key=lambda m: FAMILY_ORDER.get(m.family, 9))
    families = {"all": None, "jndkit": "jndkit", "seeds": "seed", "seed": "seed", "baselines": "baseline",
                "baseline": "baseline"}
    out: list[tuple[str, str]] = []
    for item in items:
        key = item.lower()
        if key in families:
            fam = families[key]
            out += [(m.name, m.default) for m in ordered if fam is None or m.family == fam]
            continue
        name, _, preset = item.partition(":")
        if name not in METHODS:
            raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))} "
                             f"or all, jndkit, seeds, baselines")
        spec_ = METHODS[name]
        preset = preset or spec_.default
        if preset not in spec_.presets:
            raise InputError(f"method {name} has no preset {preset!r}; presets: {', '.join(spec_.presets)}")
        out.append((name, preset))
    return list(dict.fromkeys(out))


def is_iterative(method: str, preset: str | None = None) -> bool:
    """A method with more than one step (the ones seed 000 Table 3 compares)."""
    return get_method(method, preset).max_iter > 1


# ----------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------
ROW_METRICS = ("psnr", "ssim", "ms_ssim", "uqi", "scc", "vifp", "l0", "l1", "l2", "linf", "changed_ratio",
               "changed_values", "ciede2000_mean", "ciede2000_max", "hist_kl", "above_jnd")
"""The metrics of every row (names of :data:`jndkit.metrics.METRICS`), measured on the saved file."""


@dataclass
class BenchRow:
    """One image, one method: what was measured on the saved image.

    ``success`` is the victim's verdict on the PNG read back from ``path`` (after the
    ``robust`` re-encoding, if any) at batch size 1; ``success_engine`` the engine's own
    verdict during the attack. ``iterations`` is K, the iteration of the first quantized
    success (the budget for a failure); ``seconds`` the attack's wall time per image of its
    batch. Metric columns follow :data:`ROW_METRICS`; ``l0`` counts changed values.
    """

    model: str
    method: str
    preset: str
    goal: str
    robust: str
    image: str
    success: bool
    success_engine: bool
    iterations: int
    seconds: float
    label: int = -1
    adv_label: int = -1
    confidence: float = math.nan  # probability of the top wrong class on the saved image
    psnr: float = math.nan
    ssim: float = math.nan
    ms_ssim: float = math.nan
    uqi: float = math.nan
    scc: float = math.nan
    vifp: float = math.nan
    l0: float = math.nan
    l1: float = math.nan
    l2: float = math.nan
    linf: float = math.nan
    changed_ratio: float = math.nan
    changed_values: float = math.nan
    ciede2000_mean: float = math.nan
    ciede2000_max: float = math.nan
    hist_kl: float = math.nan
    above_jnd: float = math.nan
    image_hash: str = ""
    settings: str = ""
    path: str = ""

    def key(self) -> tuple[str, str, str, str, str]:
        return (self.model, self.method, self.preset, self.goal, self.robust)


def _robust_transform(robust: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    from .protect import parse_robust, reencode

    rob = parse_robust(robust)
    return reencode(*rob) if rob else None


@torch.no_grad()
def judge_saved(victim: nn.Module, goal_spec: str, kappa: float, x0: torch.Tensor, saved: torch.Tensor,
                robust: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[bool, int, float]:
    """Judge one decoded image ``saved`` ``[3,H,W]`` at batch size 1 against the goal bound to its
    clean image ``x0`` ``[3,H,W]`` (after ``robust`` when given).

    Returns:
        ``(reached, predicted class, probability of the top wrong class)``.
    """
    clean = victim(x0[None])
    goal = parse_goal(goal_spec, kappa).bind(clean, victim)
    s = saved[None]
    if robust is not None:
        s = robust(s)
    out = victim(s)
    p = out.softmax(1)[0]
    y = int(clean.argmax(1)[0])
    wrong = torch.cat([p[:y], p[y + 1 :]]).max()
    return bool(goal.reached(out)[0]), int(out.argmax(1)[0]), float(wrong)


def saved_success(victim: ClassifierVictim, goal_spec: str, kappa: float, x0: torch.Tensor, x_adv: torch.Tensor,
                  robust: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[bool]:
    """Encode each adversarial image as PNG, decode it, optionally re-encode (``robust``) and judge
    it at batch size 1 against the goal bound to its clean image."""
    return [judge_saved(victim, goal_spec, kappa, x0[i], decode_bytes(encode_image(x_adv[i], "png")), robust)[0]
            for i in range(x0.shape[0])]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"


def _settings(kappa: float, seed: int, max_iter: int | None) -> str:
    return f"kappa={kappa:g};seed={seed};max_iter={'default' if max_iter is None else max_iter}"


def warm_up(victim: nn.Module, x: torch.Tensor) -> None:
    """One forward and backward pass, so that the first timed attack does not pay for allocation."""
    v = x[:2].clone().requires_grad_(True)
    with torch.enable_grad():
        victim(v).logsumexp(1).sum().backward()


def run_method(victim: ClassifierVictim, x0: torch.Tensor, names: Sequence[str], method: str, preset: str | None,
               goal: str = "untargeted", kappa: float = DEFAULT_KAPPA, robust: str = "none", seed: int = 0,
               batch_size: int = 16, max_iter: int | None = None, out_dir: str | os.PathLike[str] | None = None,
               jnd: torch.Tensor | None = None, on_image: Callable[[int], None] | None = None) -> list[BenchRow]:
    """Run one method over the set in batches, write each adversarial image as PNG and measure the file.

    Args:
        victim, x0, names: the evaluation set ``[n,3,S,S]`` and its image names.
        method, preset: a registered method (``None``: its default preset).
        goal, kappa: the goal (CLI spelling) and its success margin.
        robust: ``none`` or ``jpeg:Q`` / ``webp:Q``: success must also survive that re-encoding.
        batch_size: images per engine call.
        max_iter: iteration budget (``None``: the method's).
        out_dir: where the PNGs go (``<out_dir>/<image>.png``); ``None`` keeps them in memory only.
        jnd: human JND maps ``[n,3,S,S]`` for ``above_jnd`` (``None``: computed with NAMM).
        on_image: called with the number of images just finished (for progress bars).
    """
    from . import metrics
    from .perception import jnd_map

    preset = preset or METHODS[method].default
    m = get_method(method, preset)
    transform = _robust_transform(robust)
    if jnd is None:
        jnd = jnd_map(x0, "namm")
    settings = _settings(kappa, seed, max_iter)
    rows: list[BenchRow] = []
    for start in range(0, x0.shape[0], batch_size):
        xb = x0[start : start + batch_size]
        res = run_attack(m, victim, parse_goal(goal, kappa), xb, max_iter=max_iter, seed=seed, robust=transform)
        saved_list = []
        paths = []
        for j in range(xb.shape[0]):
            data = encode_image(res.x_adv[j], "png")
            path = ""
            if out_dir is not None:
                p = Path(out_dir) / f"{_slug(names[start + j])}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                tmp = p.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, p)
                data = p.read_bytes()  # judge what the file holds
                path = str(p)
            saved_list.append(decode_bytes(data))
            paths.append(path)
        saved = torch.stack(saved_list)
        vals = metrics.compute_metrics(xb, saved, names=list(ROW_METRICS), jnd=jnd[start : start + batch_size])
        for j in range(xb.shape[0]):
            ok, adv, conf = judge_saved(victim, goal, kappa, xb[j], saved[j], transform)
            rows.append(BenchRow(
                model=victim.name, method=method, preset=preset, goal=goal, robust=robust, image=names[start + j],
                success=ok, success_engine=bool(res.success[j]), iterations=int(res.iterations[j]),
                seconds=float(res.seconds), label=_label(victim, xb[j]),
                adv_label=adv, confidence=conf, image_hash=image_hash(xb[j]), settings=settings, path=paths[j],
                **{k: float(vals[k][j]) for k in ROW_METRICS}))
        if on_image is not None:
            on_image(xb.shape[0])
    return rows


@torch.no_grad()
def _label(victim: nn.Module, x: torch.Tensor) -> int:
    return int(victim(x[None]).argmax(1)[0])


# ----------------------------------------------------------------------------------
# Cached runs (resumable per model, method, preset, goal, robust and image)
# ----------------------------------------------------------------------------------
def cache_name(model: str, method: str, preset: str, goal: str, robust: str) -> str:
    """File-system name of one (model, method, preset, goal, robust) combination."""
    return "_".join(_slug(s) for s in (model, method, preset, goal, robust))


def run_cached(victim: ClassifierVictim, x0: torch.Tensor, names: Sequence[str], method: str, preset: str,
               goal: str, robust: str, out: str | os.PathLike[str], kappa: float = DEFAULT_KAPPA, seed: int = 0,
               batch_size: int = 16, max_iter: int | None = None, jnd: torch.Tensor | None = None,
               on_image: Callable[[int], None] | None = None) -> list[BenchRow]:
    """:func:`run_method` with a per-image cache under ``out``.

    Rows live in ``<out>/rows/<model>/<combination>.csv`` and images in
    ``<out>/images/<model>/<combination>/``. A row is reused when its image has the same
    content (``image_hash``), the same settings (kappa, seed, budget) and its PNG is still
    there; only the other images are attacked. The CSV is rewritten after every batch, so an
    interrupted run loses at most one batch.
    """
    combo = cache_name(victim.name, method, preset, goal, robust)
    csv_path = Path(out) / "rows" / _slug(victim.name) / f"{combo}.csv"
    img_dir = Path(out) / "images" / _slug(victim.name) / combo
    settings = _settings(kappa, seed, max_iter)
    done: dict[str, BenchRow] = {}
    if csv_path.exists():
        for r in read_csv(csv_path):
            if r.settings == settings and (not r.path or Path(r.path).exists()):
                done[r.image] = r
    hashes = [image_hash(x) for x in x0]
    todo = [i for i, (nm, h) in enumerate(zip(names, hashes)) if nm not in done or done[nm].image_hash != h]
    if len(todo) < len(names) and on_image is not None:
        on_image(len(names) - len(todo))
    if todo:
        from .perception import jnd_map

        jnd_all = jnd if jnd is not None else jnd_map(x0, "namm")
        for start in range(0, len(todo), batch_size):
            idx = todo[start : start + batch_size]
            sel = torch.tensor(idx)
            new = run_method(victim, x0[sel], [names[i] for i in idx], method, preset, goal=goal, kappa=kappa,
                             robust=robust, seed=seed, batch_size=batch_size, max_iter=max_iter, out_dir=img_dir,
                             jnd=jnd_all[sel], on_image=on_image)
            for r in new:
                done[r.image] = r
            write_csv([done[n] for n in names if n in done] + [r for k, r in done.items() if k not in names],
                      csv_path)
    return [done[n] for n in names]


# ----------------------------------------------------------------------------------
# Confidence along the iterations (seed 000 Figure 4)
# ----------------------------------------------------------------------------------
class _Recorder(nn.Module):
    """Wraps a victim; at every gradient forward (one per iteration) also judges the quantized iterate."""

    def __init__(self, victim: nn.Module) -> None:
        super().__init__()
        self.victim = victim
        self.name = getattr(victim, "name", "victim")
        self.probs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.victim(x)
        if torch.is_grad_enabled() and x.requires_grad:
            with torch.no_grad():
                self.probs.append(self.victim(quantize(x.detach())).softmax(1)[0].clone())
        return out


def confidence_curve(victim: ClassifierVictim, x0: torch.Tensor, method: str, preset: str | None = None,
                     goal: str = "untargeted", kappa: float = DEFAULT_KAPPA, max_iter: int = 100,
                     seed: int = 0) -> dict[str, Any]:
    """The victim's confidence on the saved (8-bit) iterate of one image ``[3,H,W]`` along the iterations.

    The method runs for the whole budget, past its first success (the goal's margin is made
    unreachable; its loss is unchanged), so the curve shows what happens after the JND image.

    Returns:
        ``{"true": [...], "wrong": [...], "K": int | None, "label": int}``: per iteration
        (index k = the image after k updates, ``max_iter`` of them) the probability of the clean label and of the top wrong
        class; ``K`` the first iteration whose quantized image reaches the goal with margin
        ``kappa`` (the JND image), ``None`` if none does.
    """
    rec = _Recorder(victim)
    with torch.no_grad():
        clean = victim(x0[None])
    bound = parse_goal(goal, kappa).bind(clean, victim)
    never = dataclasses.replace(bound, kappa=math.inf)
    m = get_method(method, preset)
    run_attack(m, rec, never, x0[None], max_iter=max_iter, seed=seed, retries=False)
    y = int(clean.argmax(1)[0])
    probs = rec.probs  # probs[k]: the 8-bit image after k updates (k = 0: the start, clean or random start)
    true = [float(p[y]) for p in probs]
    wrong = [float(torch.cat([p[:y], p[y + 1 :]]).max()) for p in probs]
    k = None
    for i, p in enumerate(probs):
        if bool(bound.reached(p.log()[None])[0]):
            k = i
            break
    return {"method": method, "preset": preset or METHODS[method].default, "label": y, "true": true,
            "wrong": wrong, "K": k}


def plot_confidence(curves: dict[str, list[dict[str, Any]]], path: str | os.PathLike[str]) -> Path:
    """Seed 000 Figure 4: one panel per (model, image), the top wrong-class probability (solid) and
    the clean label's probability (dashed) along the iterations, a dot at the JND image K."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    panels = [(key, cs) for key, cs in curves.items() if cs]
    n = max(1, len(panels))
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, cs) in zip(axes.flat, panels):
        for i, c in enumerate(cs):
            col = colours[i % len(colours)]
            it = list(range(len(c["wrong"])))
            ax.plot(it, c["wrong"], color=col, label=f"{c['method']}" + (f" (K={c['K']})" if c["K"] is not None
                                                                        else " (no flip)"))
            ax.plot(it, c["true"], color=col, linestyle="--", linewidth=0.8)
            if c["K"] is not None:
                ax.plot([c["K"]], [c["wrong"][c["K"]]], "o", color=col)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("confidence (8-bit image)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="center right")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


# ----------------------------------------------------------------------------------
# Transfer
# ----------------------------------------------------------------------------------
def transfer_matrix(rows: Sequence[BenchRow], victims: dict[str, nn.Module], clean: dict[str, dict[str, torch.Tensor]],
                    kappa: float = DEFAULT_KAPPA) -> dict[tuple[str, str, str, str], dict[tuple[str, str], float]]:
    """Saved success of images protected against model A, judged by model B.

    Args:
        rows: benchmark rows with their PNG ``path``.
        victims: model name -> victim.
        clean: model name -> image name -> clean image ``[3,H,W]`` (the set of that model).

    Returns:
        ``{(method, preset, goal, robust): {(A, B): fraction}}``. B's goal is bound to B's own
        answer on the clean image; the file is read back and re-encoded as the row's ``robust``
        says, as for the per-model success (so the diagonal equals it).
    """
    out: dict[tuple[str, str, str, str], dict[tuple[str, str], float]] = {}
    groups: dict[tuple[str, str, str, str, str], list[BenchRow]] = {}
    for r in rows:
        if r.path and r.model in victims:
            groups.setdefault((r.model, r.method, r.preset, r.goal, r.robust), []).append(r)
    for (a, method, preset, goal, robust), rs in groups.items():
        transform = _robust_transform(robust)
        saved = [decode_bytes(Path(r.path).read_bytes()) for r in rs]
        for b, vb in victims.items():
            ok = [judge_saved(vb, goal, kappa, clean[a][r.image], s, transform)[0] for r, s in zip(rs, saved)]
            out.setdefault((method, preset, goal, robust), {})[(a, b)] = sum(ok) / len(ok)
    return out


# ----------------------------------------------------------------------------------
# Whole benchmark
# ----------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    """What :func:`run_benchmark` measures.

    Attributes:
        models: victim names (:func:`jndkit.victims.load_victim`).
        methods: ``(name, preset)`` pairs (:func:`resolve_methods`).
        goal: goal of the main tables (``untargeted``, ``least-likely``, ...).
        n: images per model.
        robust: ``none`` or ``jpeg:Q``: success must also survive that re-encoding.
        data: a folder of images instead of the package-shipped crops.
        threshold_goals: seed 000 Table 3 goals (empty: no Table 3).
        threshold_methods: methods for Table 3 (``None``: the iterative ones among ``methods``).
        threshold_n: images for Table 3 (``None``: all ``n``).
        figure_methods: methods for Figure 4 (``None``: levels, jnd and bim if selected, else the
            first iterative method); empty: no figure.
        figure_images: images per model in Figure 4; figure_iters: its iterations.
        transfer: measure the transfer matrix (needs two or more models).
        jobs: worker processes for the attack runs (1: in this process).
        method_images: per method name, at most this many images (the first ones of the set),
            for methods too slow to run on all ``n`` (the tables give each row's n).
    """

    models: list[str]
    methods: list[tuple[str, str]]
    goal: str = "untargeted"
    n: int = 32
    robust: str = "none"
    data: str | None = None
    kappa: float = DEFAULT_KAPPA
    seed: int = 0
    batch_size: int = 16
    max_iter: int | None = None
    threshold_goals: tuple[str, ...] = THRESHOLD_GOALS
    threshold_methods: list[tuple[str, str]] | None = None
    threshold_n: int | None = None
    figure_methods: list[tuple[str, str]] | None = None
    figure_images: int = 2
    figure_iters: int = 100
    transfer: bool = True
    jobs: int = 1
    method_images: dict[str, int] = field(default_factory=dict)

    def validate(self) -> None:
        from .protect import parse_robust

        if not self.models:
            raise InputError("no models given")
        if self.n < 1:
            raise InputError(f"images must be >= 1, got {self.n}")
        if self.jobs < 1:
            raise InputError(f"jobs must be >= 1, got {self.jobs}")
        if self.threshold_n is not None and self.threshold_n < 1:
            raise InputError(f"Table 3 images must be >= 1, got {self.threshold_n}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        for name, k in self.method_images.items():
            if k < 1:
                raise InputError(f"images for {name} must be >= 1, got {k}")
        parse_goal(self.goal, self.kappa)
        for g in self.threshold_goals:
            parse_goal(g, self.kappa)
        parse_robust(self.robust)

    def table3_methods(self) -> list[tuple[str, str]]:
        if not self.threshold_goals:
            return []
        if self.threshold_methods is not None:
            return list(self.threshold_methods)
        return [(m, p) for m, p in self.methods if is_iterative(m, p)]

    def fig_methods(self) -> list[tuple[str, str]]:
        if self.figure_methods is not None:
            return list(self.figure_methods)
        chosen = [(m, p) for m, p in self.methods if m in ("levels", "jnd", "bim")]
        if not chosen:
            chosen = [(m, p) for m, p in self.methods if is_iterative(m, p)][:1]
        return chosen


@dataclass
class BenchResult:
    """Everything :func:`run_benchmark` measured (also written under its ``out`` folder)."""

    config: BenchConfig
    rows: list[BenchRow]
    threshold_rows: list[BenchRow] = field(default_factory=list)
    transfer: dict[tuple[str, str, str, str], dict[tuple[str, str], float]] = field(default_factory=dict)
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figure: Path | None = None
    errors: list[str] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _tasks(config: BenchConfig, n_threshold: int) -> list[tuple[str, str, str, str, int]]:
    """(model, method, preset, goal, images) for every attack run of the benchmark."""
    tasks = []
    for model in config.models:
        for m, p in config.methods:
            tasks.append((model, m, p, config.goal, min(config.n, config.method_images.get(m, config.n))))
        for g in config.threshold_goals:
            for m, p in config.table3_methods():
                tasks.append((model, m, p, g, min(n_threshold, config.method_images.get(m, n_threshold))))
    return tasks


def _prepare_model(model: str, config: BenchConfig, victims: dict[str, ClassifierVictim] | None
                   ) -> tuple[ClassifierVictim, torch.Tensor, list[str], torch.Tensor]:
    from .perception import jnd_map
    from .victims import load_victim

    victim = victims[model] if victims and model in victims else load_victim(model)
    victim.eval()
    x0, _, names = evaluation_set(victim, config.n, data=config.data)
    return victim, x0, names, jnd_map(x0, "namm")


def _worker(config: BenchConfig, out: str, task: tuple[str, str, str, str, int]) -> str:
    """Run one task in a worker process (one torch thread); returns an error line or ''."""
    torch.set_num_threads(1)
    model, m, p, g, k = task
    try:
        victim, x0, names, jnd = _prepare_model(model, config, None)
        warm_up(victim, x0)
        run_cached(victim, x0[:k], names[:k], m, p, g, config.robust, out, kappa=config.kappa, seed=config.seed,
                   batch_size=config.batch_size, max_iter=config.max_iter, jnd=jnd[:k])
        return ""
    except Exception as e:  # noqa: BLE001 - a method that breaks must not stop the others; reported by the caller
        return f"{model} {m}:{p} {g}: {type(e).__name__}: {e}"


def run_benchmark(config: BenchConfig, out: str | os.PathLike[str], progress: ProgressFn | None = None,
                  victims: dict[str, ClassifierVictim] | None = None) -> BenchResult:
    """Run (or resume) a benchmark into folder ``out`` and write its CSVs, tables and figure.

    Files: ``results.csv`` (one row per model, method and image), ``thresholds.csv`` (Table 3),
    ``transfer.csv``, ``curves.json`` and ``confidence.png`` (Figure 4), ``tables.md``, and the
    caches ``rows/`` and ``images/`` that make a rerun reuse every finished image.

    A method that raises is reported in ``errors`` and left out; the others go on.
    """
    config.validate()
    t_start = time.perf_counter()
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    n_thr = config.n if config.threshold_n is None else min(config.n, config.threshold_n)
    tasks = _tasks(config, n_thr)
    total = sum(t[4] for t in tasks)
    done = 0
    errors: list[str] = []

    def tick(k: int, what: str) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(done, total, what)

    if config.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=config.jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_worker, config, str(outp), t): t for t in tasks}
            for f in as_completed(futs):
                t = futs[f]
                msg = f.result()
                if msg:
                    errors.append(msg)
                tick(t[4], f"{t[0]} {t[1]} {t[3]}")
        done = 0  # the collection pass below finds every row in the cache

    rows: list[BenchRow] = []
    thr_rows: list[BenchRow] = []
    prepared: dict[str, tuple[ClassifierVictim, torch.Tensor, list[str], torch.Tensor]] = {}
    for model in config.models:
        victim, x0, names, jnd = prepared[model] = _prepare_model(model, config, victims)
        warm_up(victim, x0)
        for model_, m, p, g, k in [t for t in tasks if t[0] == model]:
            what = f"{model} {m} {g}"
            try:
                part = run_cached(victim, x0[:k], names[:k], m, p, g, config.robust, outp, kappa=config.kappa,
                                  seed=config.seed, batch_size=config.batch_size, max_iter=config.max_iter,
                                  jnd=jnd[:k], on_image=lambda j, w=what: tick(j, w) if config.jobs == 1 else None)
            except Exception as e:  # noqa: BLE001 - reported, the other methods go on
                msg = f"{model} {m}:{p} {g}: {type(e).__name__}: {e}"
                if msg not in errors:
                    errors.append(msg)
                continue
            (rows if g == config.goal else thr_rows).extend(part)
    write_csv(rows, outp / "results.csv")
    write_csv(thr_rows, outp / "thresholds.csv")

    result = BenchResult(config=config, rows=rows, threshold_rows=thr_rows, errors=errors, info=machine_info())
    if config.transfer and len(config.models) > 1:
        vic = {m: prepared[m][0] for m in config.models}
        clean = {m: dict(zip(prepared[m][2], prepared[m][1])) for m in config.models}
        result.transfer = transfer_matrix(rows, vic, clean, config.kappa)
        write_transfer_csv(result.transfer, outp / "transfer.csv")

    fig_methods = config.fig_methods()
    if fig_methods and config.figure_images > 0:
        cache_path = outp / "curves.json"
        cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
        for model in config.models:
            victim, x0, names, _ = prepared[model]
            for i in range(min(config.figure_images, x0.shape[0])):
                key = f"{model} · {names[i]}"
                curves = []
                for m, p in fig_methods:
                    ck = "|".join([model, m, p, config.goal, image_hash(x0[i]), str(config.figure_iters),
                                   _settings(config.kappa, config.seed, None)])
                    if ck not in cache:
                        try:
                            cache[ck] = confidence_curve(victim, x0[i], m, p, config.goal, config.kappa,
                                                         config.figure_iters, config.seed)
                        except Exception as e:  # noqa: BLE001 - reported, the figure goes on without it
                            errors.append(f"figure {model} {m}:{p}: {type(e).__name__}: {e}")
                            continue
                    curves.append(cache[ck])
                result.curves[key] = curves
        cache_path.write_text(json.dumps(cache))
        result.figure = plot_confidence(result.curves, outp / "confidence.png")
    result.seconds = time.perf_counter() - t_start
    (outp / "tables.md").write_text(report_markdown(result, figure=result.figure.name if result.figure else None))
    return result


# ----------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------
def _stats(vals: Sequence[float]) -> tuple[float, float, int]:
    v = np.array([x for x in vals if math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std()), int(v.size)


def _ms(vals: Sequence[float], digits: int, scale: float = 1.0) -> str:
    mean, std, k = _stats([x * scale for x in vals])
    if k == 0:
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _groups(rows: Sequence[BenchRow]) -> dict[tuple[str, str, str, str, str], list[BenchRow]]:
    out: dict[tuple[str, str, str, str, str], list[BenchRow]] = {}
    for r in rows:
        out.setdefault(r.key(), []).append(r)
    return out


def _pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:.1f} %" if n else "–"


# (column title, row field, digits, scale) of each table; quality averages the successful images.
SUMMARY_COLUMNS = (("PSNR dB", "psnr", 2, 1.0), ("SSIM", "ssim", 5, 1.0), ("iterations K", "iterations", 1, 1.0))
QUALITY_COLUMNS = (("PSNR dB", "psnr", 2, 1.0), ("SSIM", "ssim", 5, 1.0), ("MS-SSIM", "ms_ssim", 5, 1.0),
                   ("UQI", "uqi", 5, 1.0), ("SCC", "scc", 4, 1.0), ("VIFP", "vifp", 4, 1.0))
DISTANCE_COLUMNS = (("L0 (values)", "l0", 0, 1.0), ("L1", "l1", 2, 1.0), ("L2", "l2", 3, 1.0),
                    ("L∞ (levels)", "linf", 2, 255.0), ("changed pixels %", "changed_ratio", 2, 100.0),
                    ("ΔE00 mean", "ciede2000_mean", 4, 1.0), ("ΔE00 max", "ciede2000_max", 2, 1.0),
                    ("hist KL", "hist_kl", 6, 1.0), ("above JND %", "above_jnd", 3, 100.0))
THRESHOLD_COLUMNS = (("iterations", "iterations", 1, 1.0), ("SSIM", "ssim", 5, 1.0), ("L2", "l2", 3, 1.0))


def _metric_table(rows: Sequence[BenchRow], columns: Sequence[tuple[str, str, int, float]], lead: Sequence[str],
                  extra: Callable[[list[BenchRow]], list[str]] | None = None, extra_head: Sequence[str] = ()) -> str:
    head = ["model", "method", "preset", "goal", "robust"]
    keep = [i for i, h in enumerate(head) if h in lead]
    titles = [head[i] for i in keep] + ["n", "saved success", *extra_head] + [c[0] for c in columns]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for key, rs in _groups(rows).items():
        ok = [r for r in rs if r.success]
        cells = [key[i] for i in keep] + [str(len(rs)), _pct(len(ok), len(rs))]
        cells += extra(rs) if extra else []
        cells += [_ms([float(getattr(r, f)) for r in ok], d, s) for _, f, d, s in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(rows: Sequence[BenchRow]) -> str:
    """Success after save, PSNR and SSIM (mean ± std, seed 001 Tables I-II), iterations and time.

    One line per (model, method, preset, goal, robust). Quality and iterations average the
    images whose saved file reaches the goal; seconds per image average all images.
    """
    def extra(rs: list[BenchRow]) -> list[str]:
        return [_pct(sum(r.success_engine for r in rs), len(rs))]

    table = _metric_table(rows, SUMMARY_COLUMNS, ("model", "method", "preset", "goal", "robust"), extra,
                          ("engine success",))
    lines = table.split("\n")
    lines[0] += " s / image |"
    lines[1] += "---|"
    for i, (_, rs) in enumerate(_groups(rows).items()):
        lines[2 + i] += f" {_ms([r.seconds for r in rs], 3)} |"
    return "\n".join(lines)


def quality_table(rows: Sequence[BenchRow]) -> str:
    """Seed 000 Tables 1 and 4: PSNR, SSIM, MS-SSIM, UQI, SCC, VIFP (higher is better), mean ± std
    over the successful images."""
    return _metric_table(rows, QUALITY_COLUMNS, ("model", "method", "preset", "robust"))


def distance_table(rows: Sequence[BenchRow]) -> str:
    """Seed 000 Tables 2 and 5 and more: L0 (changed values), L1, L2 (in [0,1] units), L∞ (8-bit levels),
    changed pixels, CIEDE2000, colour-histogram KL, values above the NAMM JND (lower is better)."""
    return _metric_table(rows, DISTANCE_COLUMNS, ("model", "method", "preset", "robust"))


def threshold_table(rows: Sequence[BenchRow]) -> str:
    """Seed 000 Table 3: iterations, SSIM and L2 when the wrong class reaches a confidence
    (goals ``margin:C``), averaged over the images that reach it."""
    ordered = sorted(rows, key=lambda r: (r.model, r.goal, r.method))
    return _metric_table(ordered, THRESHOLD_COLUMNS, ("model", "method", "preset", "goal", "robust"))


def transfer_table(matrix: dict[tuple[str, str, str, str], dict[tuple[str, str], float]]) -> str:
    """One line per (method, protected-against model): saved success on every model."""
    targets = sorted({b for m in matrix.values() for (_, b) in m})
    lines = ["| method | preset | goal | robust | protected against | " + " | ".join(f"success on {b}" for b in targets)
             + " |", "|" + "---|" * (5 + len(targets))]
    for (method, preset, goal, robust), m in matrix.items():
        for a in sorted({a for (a, _) in m}):
            cells = [f"{100 * m[(a, b)]:.1f} %" if (a, b) in m else "–" for b in targets]
            lines.append(f"| {method} | {preset} | {goal} | {robust} | {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ranking_table(rows: Sequence[BenchRow]) -> str:
    """Per model and robustness setting, the methods whose saved files all succeed, best mean PSNR first,
    with each one's PSNR and SSIM difference to the best of the *other* families (jndkit vs the rest)."""
    head = ("| model | robust | rank | method | family | PSNR dB | SSIM | ΔPSNR to best other family | "
            "ΔSSIM to best other family |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    by: dict[tuple[str, str], list[tuple[str, str, float, float]]] = {}
    for (model, method, preset, _goal, robust), rs in _groups(rows).items():
        if rs and all(r.success for r in rs):
            fam = METHODS[method].family if method in METHODS else "?"
            by.setdefault((model, robust), []).append((f"{method}:{preset}", fam, _stats([r.psnr for r in rs])[0],
                                                       _stats([r.ssim for r in rs])[0]))
    for (model, robust), ms in by.items():
        ms.sort(key=lambda t: -t[2])
        for i, (name, fam, p, q) in enumerate(ms, 1):
            other = [t for t in ms if (t[1] == "jndkit") != (fam == "jndkit")]
            dp = f"{p - max(t[2] for t in other):+.2f}" if other else "–"
            dq = f"{q - max(t[3] for t in other):+.5f}" if other else "–"
            lines.append(f"| {model} | {robust} | {i} | {name} | {fam} | {p:.2f} | {q:.5f} | {dp} | {dq} |")
    return "\n".join(lines)


def report_markdown(result: BenchResult, figure: str | None = None, command: str | None = None) -> str:
    """All the tables of a benchmark as one Markdown text (what ``tables.md`` holds)."""
    c = result.config
    info = result.info or machine_info()
    parts = []
    if command:
        parts.append(f"Command: `{command}`  ")
    parts.append(f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores, torch threads "
                 f"{info.get('threads', '?')}, load average {info.get('load', '?')}; jndkit {info.get('jndkit', '?')}, "
                 f"torch {info.get('torch', '?')}, torchvision {info.get('torchvision', '?')}, "
                 f"Python {info.get('python', '?')}.  ")
    parts.append(f"Set: {c.n} images per model ({'files of ' + c.data if c.data else 'crops of the package-shipped photos'}"
                 f"), label = the model's own prediction (confidence ≥ 0.5); goal {c.goal}, κ = {c.kappa:g}; "
                 f"success judged on the PNG read back from disk at batch 1"
                 f"{'' if c.robust == 'none' else f', after {c.robust} re-encoding'}. Quality columns: mean ± std "
                 f"over the images whose saved file succeeds; s / image: attack wall time per image.\n")
    if result.errors:
        parts.append("Not measured (errors): " + "; ".join(result.errors) + "\n")
    parts += ["### Success, PSNR, SSIM, iterations and time (seed 001 Tables I-II)\n", summary_table(result.rows), ""]
    parts += ["### Methods at 100 % saved success, by PSNR\n", ranking_table(result.rows), ""]
    parts += ["### Image quality, higher is better (seed 000 Tables 1 and 4)\n", quality_table(result.rows), ""]
    parts += ["### Distances, lower is better (seed 000 Tables 2 and 5)\n", distance_table(result.rows), ""]
    if result.threshold_rows:
        parts += ["### Reaching a wrong-class confidence (seed 000 Table 3)\n", threshold_table(result.threshold_rows),
                  ""]
    if result.transfer:
        parts += ["### Transfer: protected against one model, judged by another (saved success)\n",
                  transfer_table(result.transfer), ""]
    if figure:
        parts += ["### Confidence along the iterations (seed 000 Figure 4)\n",
                  f"![confidence along the iterations]({figure})\n",
                  ("Solid: probability of the top wrong class on the 8-bit iterate; dashed: the clean label; "
                   "dot: K, the first iteration whose saved image fools the model (the JND image). The method "
                   "runs past K to its budget."), ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------
def write_csv(rows: Sequence[BenchRow], path: str | os.PathLike[str]) -> None:
    """Write rows as CSV atomically (a temporary file renamed into place)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fields = list(BenchRow.__dataclass_fields__)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in dataclasses.asdict(r).items()})
    os.replace(tmp, p)


def read_csv(path: str | os.PathLike[str]) -> list[BenchRow]:
    rows = []
    with open(path, newline="") as f:
        for d in csv.DictReader(f):
            conv: dict[str, Any] = {}
            for k, fdef in BenchRow.__dataclass_fields__.items():
                if k not in d:
                    continue
                v = d[k]
                t = fdef.type
                if t in ("bool", bool):
                    conv[k] = v == "True"
                elif t in ("int", int):
                    conv[k] = int(v)
                elif t in ("float", float):
                    conv[k] = float(v)
                else:
                    conv[k] = v
            rows.append(BenchRow(**conv))
    return rows


def write_transfer_csv(matrix: dict[tuple[str, str, str, str], dict[tuple[str, str], float]],
                       path: str | os.PathLike[str]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "preset", "goal", "robust", "source", "target", "success"])
        for (method, preset, goal, robust), m in matrix.items():
            for (a, b), v in m.items():
                w.writerow([method, preset, goal, robust, a, b, repr(v)])


def machine_info() -> dict[str, str]:
    """Versions and machine, for the benchmark record."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torchvision

    from . import __version__

    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {"jndkit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "cpu": cpu, "cores": str(os.cpu_count()),
            "threads": str(torch.get_num_threads()), "load": load}
