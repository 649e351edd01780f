"""Evaluation of a machine JND (seed 003, eq. 16-17 and section V).

Every number is measured on the **saved** image ``quantize(x + e)`` (jndkit's rule: a
result counts only as it is saved), never on the float ``x + e``.

* :func:`rca` -- Relative Classification Accuracy, eq. 16-17: per classifier, the share of
  images whose label on the saved ``x + e`` equals the clean label ``argmax S_n(x)``;
  the mean over classifiers is ``acc``.
* :func:`psnr` -- PSNR (dB, peak 1) between ``x`` and the saved ``x + e``, per image.
* :func:`equal_energy_noise` / :func:`white_noise_rca` -- section V-E: white Gaussian
  noise with the same L2 energy as ``e`` per image (seeded), and its RCA.
* :func:`homogeneity_test` -- section V-F: ``e`` scaled by ``k/9``, ``k = 1..8``; the JND
  is homogeneous if no scaled version has a lower RCA than the full ``e``.
* :func:`evaluate_jnd` -- all of the above as one JSON-serialisable dict;
  :func:`evaluate_jnd_net` runs a trained net on a data set first (held-out RCA when the
  data were not used for training).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import InputError
from ..images import quantize
from .data import batches
from .net import DMVJNDNet
from .train import Progress, apply_jnd_net


def _names(victims: Sequence[nn.Module]) -> list[str]:
    names = [str(getattr(v, "name", f"classifier{i}")) for i, v in enumerate(victims)]
    seen: dict[str, int] = {}
    out = []
    for n in names:  # make duplicates unique: a JSON dict needs distinct keys
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _check_pair(x: torch.Tensor, e: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"x must have shape [B,3,H,W], got {list(x.shape) if isinstance(x, torch.Tensor) else x}")
    if e.shape != x.shape:
        raise InputError(f"e must have the shape of x {list(x.shape)}, got {list(e.shape)}")


@torch.no_grad()
def predictions(victims: Sequence[nn.Module], x: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Labels ``[N_classifiers, B]`` of each classifier on ``x`` (in batches of ``batch_size``)."""
    rows = []
    for v in victims:
        v.eval()
        rows.append(torch.cat([v(x[s : s + batch_size]).argmax(dim=1) for s in range(0, x.shape[0], batch_size)]))
    return torch.stack(rows)


@torch.no_grad()
def rca(
    victims: Sequence[nn.Module],
    x: torch.Tensor,
    e: torch.Tensor,
    clean_labels: torch.Tensor | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Eq. 16-17 on the saved image ``quantize(x + e)``.

    ``acc_n = 100% / P * sum_p [l_hat_n(p) == l_n(p)]`` and ``acc = (1/N) sum_n acc_n``.

    Args:
        victims: the classifiers ``S_n``; x, e: ``[P,3,H,W]``.
        clean_labels: ``[N,P]`` labels ``l_n`` on ``x`` if already known (else computed).

    Returns:
        ``{"per_classifier": {name: acc_n}, "mean": acc, "kept": [[bool]*P]*N}`` (percentages).
    """
    _check_pair(x, e)
    if len(victims) == 0:
        raise InputError("need at least one classifier")
    clean = predictions(victims, x, batch_size) if clean_labels is None else clean_labels
    dist = predictions(victims, quantize(x + e), batch_size)
    kept = dist == clean.to(dist.device)
    per = {n: 100.0 * float(k.float().mean()) for n, k in zip(_names(victims), kept)}
    return {"per_classifier": per, "mean": float(sum(per.values()) / len(per)), "kept": kept.tolist()}


def psnr(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """PSNR in dB (peak 1) between ``x`` and ``quantize(x + e)``, per image ``[P]``:
    ``10 log10(1 / mean((quantize(x+e) - x)^2))``; ``inf`` where nothing changed."""
    _check_pair(x, e)
    mse = (quantize(x + e) - x).double().pow(2).flatten(1).mean(dim=1)
    return torch.where(mse > 0, 10.0 * torch.log10(1.0 / mse.clamp_min(1e-300)), torch.full_like(mse, math.inf)).float()


def equal_energy_noise(e: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """White Gaussian noise ``n`` ``[P,3,H,W]`` with ``||n_p||_2 = ||e_p||_2`` for every image (seeded).

    ``n_p = g_p / ||g_p|| * ||e_p||`` with ``g ~ N(0, 1)`` i.i.d. from ``torch.Generator(seed)``.
    """
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(e.shape, generator=gen, dtype=torch.float64)
    gn = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    en = e.detach().double().cpu().flatten(1).norm(dim=1)
    return (g * (en / gn).view(-1, 1, 1, 1)).to(e.dtype).to(e.device)


@torch.no_grad()
def white_noise_rca(
    victims: Sequence[nn.Module], x: torch.Tensor, e: torch.Tensor, seed: int = 0, batch_size: int = 16,
    clean_labels: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Section V-E: RCA of ``quantize(x + n)``, ``n`` = :func:`equal_energy_noise` of ``e``.

    The saved noisy image is clipped to [0,1], which removes part of the noise energy; the
    PSNR of what was actually saved is returned with it (``psnr_mean``), next to the RCA.
    """
    n = equal_energy_noise(e, seed)
    noisy = quantize(x + n) - x
    out = rca(victims, x, noisy, clean_labels, batch_size)
    out["psnr_mean"] = _finite_mean(psnr(x, noisy))
    return out


@torch.no_grad()
def homogeneity_test(
    victims: Sequence[nn.Module], x: torch.Tensor, e: torch.Tensor, batch_size: int = 16,
    clean_labels: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Section V-F: RCA of ``quantize(x + (k/9) e)`` for ``k = 1..8`` against the full ``e``.

    Returns:
        ``{"full": acc(e), "scaled": {"k/9": acc}, "pass": all(acc_k >= acc(e)),
        "min_scaled": min_k acc_k}``. The paper finds 100% at every scale on CIFAR-10.
    """
    _check_pair(x, e)
    clean = predictions(victims, x, batch_size) if clean_labels is None else clean_labels
    full = rca(victims, x, e, clean, batch_size)["mean"]
    scaled = {f"{k}/9": rca(victims, x, e * (k / 9.0), clean, batch_size)["mean"] for k in range(1, 9)}
    lowest = min(scaled.values())
    return {"full": full, "scaled": scaled, "pass": bool(lowest >= full), "min_scaled": lowest}


def _finite_mean(v: torch.Tensor) -> float:
    f = v[torch.isfinite(v)]
    return float(f.mean()) if f.numel() else math.inf


@torch.no_grad()
def evaluate_jnd(
    victims: Sequence[nn.Module], x: torch.Tensor, e: torch.Tensor, seed: int = 0, batch_size: int = 16
) -> dict[str, Any]:
    """Every section V number for JNDs ``e`` of photos ``x`` ``[P,3,H,W]``, as a JSON-serialisable dict.

    Keys: ``images``; ``rca`` (eq. 16-17: ``per_classifier``, ``mean``); ``psnr_mean`` /
    ``psnr_min`` / ``psnr_max`` (dB, on the saved images; unchanged images left out of the
    mean); ``psnr_at_full_rca`` (mean PSNR over the images that every classifier still labels
    as before, i.e. at 100% RCA); ``mean_abs_e`` (pixel scale [0,1]); ``l2_mean``;
    ``white_noise`` (V-E: ``rca``, ``per_classifier``, ``psnr_mean``); ``homogeneity`` (V-F).
    """
    _check_pair(x, e)
    clean = predictions(victims, x, batch_size)
    e_saved = quantize(x + e) - x
    r = rca(victims, x, e_saved, clean, batch_size)
    p = psnr(x, e_saved)
    all_kept = torch.tensor(r["kept"]).all(dim=0)
    noise = white_noise_rca(victims, x, e_saved, seed, batch_size, clean)
    homo = homogeneity_test(victims, x, e_saved, batch_size, clean)
    return {
        "images": int(x.shape[0]),
        "rca": {"per_classifier": r["per_classifier"], "mean": r["mean"]},
        "images_all_kept": int(all_kept.sum()),
        "psnr_mean": _finite_mean(p),
        "psnr_min": float(p.min()),
        "psnr_max": float(p.max()),
        "psnr_at_full_rca": _finite_mean(p[all_kept]) if bool(all_kept.any()) else None,
        "mean_abs_e": float(e_saved.abs().mean()),
        "l2_mean": float(e_saved.flatten(1).norm(dim=1).mean()),
        "white_noise": {"rca": noise["mean"], "per_classifier": noise["per_classifier"], "psnr_mean": noise["psnr_mean"]},
        "homogeneity": homo,
    }


@torch.no_grad()
def evaluate_jnd_net(
    net: DMVJNDNet,
    victims: Sequence[nn.Module],
    dataset: Dataset[torch.Tensor],
    batch_size: int = 8,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run ``net`` on every image of ``dataset`` (:func:`apply_jnd_net`) and :func:`evaluate_jnd` the result.

    On images the net was not trained on, ``rca`` is the paper's *testing RCA* (92.18% on CIFAR-10).
    ``progress(done_batches, total_batches, {})`` is called per batch.
    """
    xs, es = [], []
    chunks = batches(dataset, batch_size)
    for i, xb in enumerate(chunks):
        xs.append(xb)
        es.append(apply_jnd_net(net, victims, xb, batch_size))
        if progress is not None:
            progress(i + 1, len(chunks), {})
    if not xs:
        raise InputError("the evaluation set is empty")
    return evaluate_jnd(victims, torch.cat(xs), torch.cat(es), seed, batch_size)
