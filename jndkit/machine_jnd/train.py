"""Training the DMV-JND-NET, and the per-image path that needs no training (seed 003).

* :func:`train_jnd_net` -- unsupervised training of ``E`` (Fig. 3): for each batch,
  clean labels and the merged CAM come from the frozen classifiers, ``e = E(x, c)``,
  and Adam minimises eq. 7 on the saved (8-bit) ``x + e``.
* :func:`optimise_jnd_per_image` -- the same objective optimised directly over ``e``
  for the photos in hand (no network): the practical path for one photo.
* :func:`apply_jnd_net` -- run a trained net on photos of any size.
* :func:`save_jnd_net` / :func:`load_jnd_net` -- state dict plus constructor arguments.

"Saved" means quantized: the classifiers see ``quantize(x + e)`` in the forward pass
and the gradient passes straight through the rounding (straight-through estimator),
so Loss1 judges the image a PNG would hold.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import InputError, OutputError
from ..images import quantize
from .cam import merged_cam, merged_cam_and_logits
from .data import batches
from .losses import Q_DEFAULT, jnd_objective
from .net import DMVJNDNet, bounded_perturbation, make_jnd_net

Progress = Callable[[int, int, dict[str, float]], None]
NET_FORMAT = "jndkit-dmv-jnd-net/1"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train_jnd_net`.

    The defaults (:data:`PAPER_CONFIG`) are section V-A of the paper: Adam, batch 50,
    learning rate 1e-5, weight decay 1e-3, alpha = beta = 1, random horizontal flips;
    the paper trains 200 epochs on the 50,000 CIFAR-10 images (~200,000 steps) on a GPU.
    """

    epochs: int = 200
    batch_size: int = 50
    lr: float = 1e-5
    weight_decay: float = 1e-3
    alpha: float = 1.0
    beta: float = 1.0
    q: float = Q_DEFAULT
    e_scale: float = 2.0
    width: int = 16
    amplitude: float = 1.0
    flip: bool = True
    seed: int = 0


PAPER_CONFIG = TrainConfig()
"""Section V-A: Adam, batch 50, lr 1e-5, weight decay 1e-3, alpha = beta = 1, 200 epochs."""

CPU_CONFIG = TrainConfig(epochs=40, batch_size=8, lr=3e-3, weight_decay=1e-4)
"""For a CPU and a few dozen photos. The paper's ~200,000 Adam steps at lr 1e-5 become a
few dozen to a few hundred steps, so the learning rate is 300x larger (3e-3: with it a
net reaches N0 ~ N at 100% training RCA in ~10 steps on 4 crops, see the tests) and weight
decay 10x smaller (1e-4, else it dominates the few steps); batch 8 because every step
runs each classifier forward and backward on each image (0.1-0.3 s per image and
classifier on one core)."""


def ste_quantize(x: torch.Tensor) -> torch.Tensor:
    """``quantize(x)`` in the forward pass, identity in the backward pass (straight-through)."""
    return x + (quantize(x) - x).detach()


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"x must have shape [B,3,H,W], got {shape}")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise InputError(f"x must lie in [0,1], got range [{float(x.min()):.4g}, {float(x.max()):.4g}]")


def _psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _victim_list(victims: Sequence[nn.Module] | nn.Module) -> list[nn.Module]:
    vs = [victims] if isinstance(victims, nn.Module) else list(victims)
    if not vs:
        raise InputError("need at least one classifier")
    for v in vs:
        v.eval()
    return vs


def train_jnd_net(
    victims: Sequence[nn.Module],
    dataset: Dataset[torch.Tensor],
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    *,
    config: TrainConfig = PAPER_CONFIG,
    net: DMVJNDNet | None = None,
    max_steps: int | None = None,
) -> tuple[DMVJNDNet, list[dict[str, float]]]:
    """Train the DMV-JND-NET ``E`` against frozen ``victims`` (unsupervised, Fig. 3).

    Each step, for a batch ``x`` ``[b,3,S,S]``:

    1. (flip each image with probability 1/2 if ``config.flip``, seeded);
    2. ``c, l_n`` = merged CAM (eq. 2) and clean labels ``argmax S_n(x)`` (eq. 5-6), no gradient;
    3. ``e = E(x, c)`` (eq. 3), ``x_hat = quantize(x + e)`` (straight-through, eq. 4);
    4. ``Loss = Loss1 + alpha Loss2 + beta Loss3`` (eq. 7-15), one Adam step on ``E``.

    Arguments left as ``None`` come from ``config`` (default :data:`PAPER_CONFIG`;
    :data:`CPU_CONFIG` for a CPU).

    Args:
        victims: the frozen classifiers ``S_n`` (``ClassifierVictim`` or any module on [0,1] pixels).
        dataset: images ``[3,S,S]`` in [0,1] (e.g. :func:`~jndkit.machine_jnd.data.shipped_crops`).
        progress: called after every step as ``progress(step, total_steps, record)``.
        net: continue training this net instead of a fresh one (``make_jnd_net(width, amplitude, seed)``).
        max_steps: stop after this many optimiser steps in total.

    Returns:
        ``(net, history)``: the trained net (in eval mode, ``victim_names`` set) and one record per
        step: ``step``, ``epoch``, ``loss``, ``loss1``, ``loss2``, ``loss3``, ``N``, ``N0``
        (paper units), ``rca`` (% of images x classifiers whose label on the quantized ``x + e``
        equals the clean label, eq. 16-17 on the batch) and ``psnr`` (dB, batch mean).
    """
    cfg = replace(
        config,
        **{
            k: v
            for k, v in dict(
                epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, alpha=alpha, beta=beta, seed=seed
            ).items()
            if v is not None
        },
    )
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1, got {cfg.epochs} and {cfg.batch_size}")
    if not cfg.lr > 0:
        raise InputError(f"lr must be > 0, got {cfg.lr}")
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise InputError("the training set is empty")
    vs = _victim_list(victims)
    model = net if net is not None else make_jnd_net(cfg.width, cfg.amplitude, cfg.seed)
    model.victim_names = [str(getattr(v, "name", type(v).__name__)) for v in vs]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch if max_steps is None else min(max_steps, cfg.epochs * steps_per_epoch)
    history: list[dict[str, float]] = []
    step = 0
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen).tolist()
        for x in batches(dataset, cfg.batch_size, order):
            if step >= total:
                break
            if cfg.flip:
                mask = (torch.rand(x.shape[0], generator=gen) < 0.5).view(-1, 1, 1, 1)
                x = torch.where(mask, x.flip(-1), x)
            _check_batch(x)
            c, clean = merged_cam_and_logits(vs, x)
            labels = [z.argmax(dim=1) for z in clean]
            e = model(x, c)
            x_hat = ste_quantize(x + e)
            logits = [v(x_hat) for v in vs]
            terms = jnd_objective(logits, labels, c, e, cfg.alpha, cfg.beta, cfg.q, cfg.e_scale)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            step += 1
            with torch.no_grad():
                kept = torch.stack([z.argmax(dim=1) == lab for z, lab in zip(logits, labels)]).float()
                rec = {k: float(t) for k, t in terms.items()}
                rec.update(step=float(step), epoch=float(epoch + 1), rca=100.0 * float(kept.mean()),
                           psnr=float(_psnr(x, x_hat.detach()).mean()))
            history.append(rec)
            if progress is not None:
                progress(step, total, rec)
        if step >= total:
            break
    model.eval()
    return model, history


@torch.no_grad()
def apply_jnd_net(net: DMVJNDNet, victims: Sequence[nn.Module], x: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """The saved DMV-JND of photos ``x`` ``[B,3,H,W]`` (any size): ``quantize(x + E(x, c)) - x``.

    ``c`` is the merged CAM of ``victims`` (the classifiers the net was trained with).
    Runs in batches of ``batch_size``; ``x + result`` is exactly the 8-bit image to save.
    """
    _check_batch(x)
    vs = _victim_list(victims)
    net.eval()
    out = []
    for s in range(0, x.shape[0], max(1, batch_size)):
        xb = x[s : s + batch_size]
        e = net(xb, merged_cam(vs, xb))
        out.append(quantize(xb + e) - xb)
    return torch.cat(out) if out else torch.zeros_like(x)


def _label_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z[l] - max_{j != l} z[j]`` per image ``[B]`` (other classes masked with -inf, not 0)."""
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf"))
    return true - others.amax(dim=1)


def optimise_jnd_per_image(
    victims: Sequence[nn.Module],
    x: torch.Tensor,
    steps: int = 100,
    lr: float = 0.05,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    q: float = Q_DEFAULT,
    e_scale: float = 2.0,
    margin: float = 0.1,
    amplitude: float = 1.0,
    init_std: float = 1e-2,
) -> torch.Tensor:
    """Minimise eq. 7 directly over ``e`` for the photos ``x`` ``[B,3,H,W]`` (no network).

    ``e = bounded_perturbation(r, x, amplitude)`` (so ``x + e`` stays in [0,1]); ``r`` starts
    at seeded Gaussian noise of std ``init_std`` and Adam (``lr``) updates it for ``steps``
    steps on the per-image objective ``Loss1 + alpha Loss2 + beta Loss3`` with the merged CAM
    and clean labels of ``x`` (images of a batch do not interact). Every step's forward pass
    sees the quantized ``x + e``; an iterate counts only if **every** classifier keeps its
    clean label there by a logit margin of at least ``margin``, and the valid iterate with the
    lowest objective is returned (``e = 0`` if none is valid).

    Returns:
        ``e`` ``[B,3,H,W]`` with ``x + e`` exactly the 8-bit image to save (multiples of 1/255 when
        ``x`` is 8-bit).
    """
    _check_batch(x)
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if not lr > 0:
        raise InputError(f"lr must be > 0, got {lr}")
    vs = _victim_list(victims)
    x = x.detach()
    c, clean = merged_cam_and_logits(vs, x)
    labels = [z.argmax(dim=1) for z in clean]
    gen = torch.Generator().manual_seed(seed)
    r = (init_std * torch.randn(x.shape, generator=gen, dtype=x.dtype)).to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([r], lr=lr)
    best_e = torch.zeros_like(x)
    best_loss = torch.full((x.shape[0],), float("inf"), device=x.device)
    for step in range(steps):
        e = bounded_perturbation(r, x, amplitude)
        x_hat = ste_quantize(x + e)
        logits = [v(x_hat) for v in vs]
        terms = jnd_objective(logits, labels, c, e, alpha, beta, q, e_scale, reduction="none")
        with torch.no_grad():
            margins = torch.stack([_label_margin(z, lab) for z, lab in zip(logits, labels)]).amin(dim=0)
            valid = margins >= margin
            better = valid & (terms["loss"] < best_loss)
            best_loss = torch.where(better, terms["loss"].detach(), best_loss)
            best_e = torch.where(better.view(-1, 1, 1, 1), x_hat.detach() - x, best_e)
        opt.zero_grad(set_to_none=True)
        terms["loss"].sum().backward()
        opt.step()
        if progress is not None:
            rec = {k: float(t.detach().mean()) for k, t in terms.items()}
            rec.update(valid=float(valid.float().mean()), margin=float(margins.min()))
            progress(step + 1, steps, rec)
    return best_e


def save_jnd_net(net: DMVJNDNet, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write the net (state dict, constructor arguments, classifier names) atomically to ``path``.

    Raises:
        OutputError: ``path`` exists and ``overwrite`` is false, or the folder is not writable.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputError(p, "already exists; not overwritten")
    blob: dict[str, Any] = {
        "format": NET_FORMAT,
        "config": net.config(),
        "victims": list(net.victim_names),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + p.name + ".", suffix=".tmp", dir=p.parent)
    except OSError as e:
        raise OutputError(p.parent, f"cannot write to this folder ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def load_jnd_net(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> DMVJNDNet:
    """Read a net written by :func:`save_jnd_net` (eval mode; ``victim_names`` restored).

    Raises:
        InputError: the file is missing or not a DMV-JND-NET file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        blob = torch.load(p, map_location=device, weights_only=True)
    except Exception as e:  # pickle/zip errors of all kinds
        raise InputError(f"{p}: not a DMV-JND-NET file ({type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != NET_FORMAT:
        raise InputError(f"{p}: not a DMV-JND-NET file (expected format {NET_FORMAT})")
    cfg = blob["config"]
    net = DMVJNDNet(width=int(cfg["width"]), amplitude=float(cfg["amplitude"]))
    net.load_state_dict(blob["state_dict"])
    net.victim_names = [str(s) for s in blob.get("victims", [])]
    return net.to(device).eval()


def config_dict(config: TrainConfig) -> dict[str, Any]:
    """``config`` as a JSON-serialisable dict (for reports)."""
    return asdict(config)
