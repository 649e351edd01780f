"""Benchmark of the machine JND (seed 003) on the package-shipped photos.

Measures, with the four offline classifiers (mobilenet_v2, efficientnet_lite0/1/2):

* the per-image optimiser (:func:`jndkit.machine_jnd.optimise_jnd_per_image`): PSNR of the
  saved ``x + e`` at 100% RCA (paper, CIFAR-10, DMV-JND-NET: 9.56 dB), RCA under white
  Gaussian noise of the same L2 energy (paper: 15.5%), homogeneity (paper: 100% at
  every k/9), seconds per image (median and range, one image at a time);
* the DMV-JND-NET (:func:`jndkit.machine_jnd.train_jnd_net`, CPU settings): training RCA
  and PSNR on the training crops, held-out RCA on crops it never saw (paper: 92.18%),
  white noise and homogeneity on the training crops.

Every number is measured on the saved 8-bit image. Prints a Markdown table and writes
JSON to ``benchmarks/results/machine_jnd.json``.

    python benchmarks/bench_machine_jnd.py               # ~10-15 min on 2 shared cores
    python benchmarks/bench_machine_jnd.py --quick       # smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from jndkit.bench.records import cpu_model
from jndkit.machine_jnd import (
    CPU_CONFIG,
    SHIPPED_PHOTOS,
    apply_jnd_net,
    evaluate_jnd,
    optimise_jnd_per_image,
    shipped_crops,
    split_holdout,
    train_jnd_net,
)
from jndkit.victims import load_victim

VICTIMS = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def summary(ev: dict[str, Any]) -> dict[str, Any]:
    return {
        "images": ev["images"],
        "rca": round(ev["rca"]["mean"], 2),
        "rca_per_classifier": {k: round(v, 2) for k, v in ev["rca"]["per_classifier"].items()},
        "psnr_mean": round(ev["psnr_mean"], 2),
        "psnr_at_full_rca": None if ev["psnr_at_full_rca"] is None else round(ev["psnr_at_full_rca"], 2),
        "mean_abs_e_levels": round(255 * ev["mean_abs_e"], 1),
        "white_noise_rca": round(ev["white_noise"]["rca"], 2),
        "white_noise_psnr": round(ev["white_noise"]["psnr_mean"], 2),
        "homogeneity_pass": ev["homogeneity"]["pass"],
        "homogeneity_min_rca": round(ev["homogeneity"]["min_scaled"], 2),
        "homogeneity": {k: round(v, 2) for k, v in ev["homogeneity"]["scaled"].items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224, help="crop side in pixels")
    ap.add_argument("--crops-per-photo", type=int, default=1)
    ap.add_argument("--holdout", type=float, default=0.3, help="share of crops held out from net training")
    ap.add_argument("--per-image", type=int, default=6, help="crops given to the per-image optimiser")
    ap.add_argument("--steps", type=int, default=30, help="per-image optimiser steps")
    ap.add_argument("--lr", type=float, default=0.05, help="per-image optimiser learning rate")
    ap.add_argument("--epochs", type=int, default=25, help="net training epochs (CPU_CONFIG otherwise)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: 2 OpenMP threads on a shared 2-core machine run far slower)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--out", default="benchmarks/results/machine_jnd.json")
    a = ap.parse_args(argv)
    if a.quick:
        a.size, a.per_image, a.steps, a.epochs = 96, 2, 5, 2
    torch.set_num_threads(a.threads)
    t_all = time.perf_counter()
    victims = [load_victim(n) for n in VICTIMS]
    data = shipped_crops(size=a.size, crops_per_photo=a.crops_per_photo, seed=a.seed)
    train, held = split_holdout(data, a.holdout, seed=a.seed)
    log = lambda *s: print(*s, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{len(data)} crops {a.size}px: {len(train)} train, {len(held)} held out; threads={a.threads}")

    # ---- per-image optimiser, one image at a time (what a user with one photo runs)
    x_pi = data.images[: a.per_image]
    es, secs = [], []
    for i in range(x_pi.shape[0]):
        t = time.perf_counter()
        es.append(optimise_jnd_per_image(victims, x_pi[i : i + 1], steps=a.steps, lr=a.lr, seed=a.seed))
        secs.append(time.perf_counter() - t)
        log(f"per-image {i + 1}/{x_pi.shape[0]}: {secs[-1]:.1f} s")
    ev_pi = evaluate_jnd(victims, x_pi, torch.cat(es), seed=a.seed)

    # ---- DMV-JND-NET, CPU settings
    cfg = CPU_CONFIG
    bs = min(cfg.batch_size, len(train))
    t = time.perf_counter()
    net, hist = train_jnd_net(
        victims, train, epochs=a.epochs, batch_size=bs, seed=a.seed, config=cfg,
        progress=lambda s, n, r: log(f"train {s}/{n}: loss {r['loss']:.3f} rca {r['rca']:.0f} psnr {r['psnr']:.1f}"),
    )
    train_s = time.perf_counter() - t
    ev_train = evaluate_jnd(victims, train.images, apply_jnd_net(net, victims, train.images), seed=a.seed)
    ev_held = evaluate_jnd(victims, held.images, apply_jnd_net(net, victims, held.images), seed=a.seed)

    result: dict[str, Any] = {
        "benchmark": "machine_jnd (seed 003)",
        "command": "python benchmarks/bench_machine_jnd.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "classifiers": list(VICTIMS),
        "data": {"photos": [p for p in SHIPPED_PHOTOS], "crops": len(data), "size": a.size,
                 "train": len(train), "held_out": len(held)},
        "per_image": {
            "steps": a.steps, "lr": a.lr, **summary(ev_pi),
            "seconds_per_image_median": round(statistics.median(secs), 2),
            "seconds_per_image_min": round(min(secs), 2), "seconds_per_image_max": round(max(secs), 2),
        },
        "net": {
            "config": {**cfg.__dict__, "epochs": a.epochs, "batch_size": bs},
            "steps": len(hist), "train_seconds": round(train_s, 1),
            "loss_first": round(hist[0]["loss"], 4), "loss_last": round(hist[-1]["loss"], 4),
            "train": summary(ev_train), "held_out": summary(ev_held),
        },
        "paper_cifar10": {"psnr_db": 9.56, "white_noise_rca": 15.5, "held_out_rca": 92.18, "homogeneity_rca": 100.0},
        "machine": {"torch": torch.__version__, "threads": a.threads, "nproc": os.cpu_count(), "cpu": cpu_model(),
                    "python": platform.python_version(), "load_avg_at_end": os.getloadavg()[0]},
        "total_seconds": round(time.perf_counter() - t_all, 1),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)

    pi, nt, nh = result["per_image"], result["net"]["train"], result["net"]["held_out"]
    rows = [
        ("PSNR of saved x+e at 100% RCA (dB)", "9.56", f"{pi['psnr_at_full_rca']}", f"{nt['psnr_at_full_rca']}"),
        ("RCA of x+e, all crops it ran on (%)", "100 (train)", f"{pi['rca']}", f"{nt['rca']}"),
        ("RCA, held-out crops (%)", "92.18", "n/a (no training)", f"{nh['rca']}"),
        ("RCA, white noise of equal L2 (%)", "15.5", f"{pi['white_noise_rca']}", f"{nt['white_noise_rca']}"),
        ("PSNR of the saved noisy image (dB)", "-", f"{pi['white_noise_psnr']}", f"{nt['white_noise_psnr']}"),
        ("mean abs e (8-bit levels)", "-", f"{pi['mean_abs_e_levels']}", f"{nt['mean_abs_e_levels']}"),
        ("homogeneity: min RCA over k/9, pass", "100, pass",
         f"{pi['homogeneity_min_rca']}, {'pass' if pi['homogeneity_pass'] else 'FAIL'}",
         f"{nt['homogeneity_min_rca']}, {'pass' if nt['homogeneity_pass'] else 'FAIL'}"),
        ("seconds per image", "-", f"{pi['seconds_per_image_median']} (median; {pi['seconds_per_image_min']}-"
         f"{pi['seconds_per_image_max']})", f"{result['net']['train_seconds']} s training, {len(hist)} steps"),
        ("images", "50,000 / 10,000", f"{pi['images']}", f"{nt['images']} train / {nh['images']} held out"),
    ]
    print("| metric | paper (CIFAR-10, 4 classifiers) | per-image optimiser | DMV-JND-NET (CPU config) |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    log(f"wrote {out} in {result['total_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
