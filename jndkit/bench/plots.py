"""Seed 000 Figure 4: the victim's confidence on the saved (8-bit) iterate along the iterations.

:func:`confidence_curve` measures one curve through the engine's per-iteration hook
(``run_attack(..., on_iteration=...)``); :func:`plot_confidence` draws the panels;
:func:`confidence_figure` does both for a benchmark, with a cache of curves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from ..attacks import METHODS, get_method, run_attack
from ..attacks.engine import IterationInfo
from ..goals import DEFAULT_KAPPA, parse_goal
from ..images import quantize
from ..victims import ClassifierVictim
from .config import BenchConfig
from .datasets import image_hash
from .records import _settings


def confidence_curve(victim: ClassifierVictim, x0: torch.Tensor, method: str, preset: str | None = None,
                     goal: str = "untargeted", kappa: float = DEFAULT_KAPPA, max_iter: int = 100,
                     seed: int = 0) -> dict[str, Any]:
    """The victim's confidence on the saved (8-bit) iterate of one image ``[3,H,W]`` along the iterations.

    The method runs for the whole budget, past its first success (the goal's margin is made
    unreachable; its loss is unchanged), so the curve shows what happens after the JND image.
    At every gradient step the engine's hook hands over the candidate image; its 8-bit version
    is judged by the victim (one extra forward pass per step, batch 1).

    Returns:
        ``{"method", "preset", "label", "true": [...], "wrong": [...], "K": int | None}``: per
        iteration (index k = the image after k updates, ``max_iter`` of them) the probability of
        the clean label and of the top wrong class; ``K`` the first iteration whose quantized
        image reaches the goal with margin ``kappa`` (the JND image), ``None`` if none does.
    """
    with torch.no_grad():
        clean = victim(x0[None])
    bound = parse_goal(goal, kappa).bind(clean, victim)
    never = dataclasses.replace(bound, kappa=math.inf)
    probs: list[torch.Tensor] = []  # probs[k]: the 8-bit image after k updates (k = 0: the start)

    def on_iteration(info: IterationInfo) -> None:
        with torch.no_grad():
            probs.append(victim(quantize(info.x)).softmax(1)[0].clone())

    run_attack(get_method(method, preset), victim, never, x0[None], max_iter=max_iter, seed=seed, retries=False,
               on_iteration=on_iteration)
    y = int(clean.argmax(1)[0])
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
    for ax, (key, cs) in zip(axes.flat, panels, strict=False):
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



def confidence_figure(config: BenchConfig, prepared: dict[str, tuple[ClassifierVictim, torch.Tensor, list[str]]],
                      out: Path, errors: list[str]) -> tuple[dict[str, list[dict[str, Any]]], Path | None]:
    """The curves of Figure 4 for a benchmark, and the figure ``out/confidence.png``.

    Args:
        config: the benchmark (figure methods, images, iterations, goal, kappa, seed).
        prepared: per model, its victim, evaluation set ``[n,3,S,S]`` and image names.
        out: the benchmark folder; ``curves.json`` there caches every curve by model, method,
            preset, goal, image content, iterations and settings.
        errors: a curve that raises is reported here and left out.

    Returns:
        ``({"model · image": [curve, ...]}, path of the figure)``; ``({}, None)`` when the
        benchmark asks for no figure.
    """
    fig_methods = config.fig_methods()
    if not fig_methods or config.figure_images <= 0:
        return {}, None
    result: dict[str, list[dict[str, Any]]] = {}
    cache_path = out / "curves.json"
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for model in config.models:
        victim, x0, names = prepared[model]
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
            result[key] = curves
    cache_path.write_text(json.dumps(cache))
    return result, plot_confidence(result, out / "confidence.png")
