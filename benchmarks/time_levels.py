"""Idle-machine timing of the default method (`levels`) on mobilenet_v2.

    python benchmarks/time_levels.py            # run with nothing else on the machine

One warm-up run, then the first 32 images of the evaluation set attacked in two batches of 16,
twice, and 8 images at batch size 1. Prints seconds per image, saved success and mean PSNR.
"""

import time

import torch

from jndkit import metrics
from jndkit.attacks import get_method, run_attack
from jndkit.bench import evaluation_set, saved_success
from jndkit.goals import Untargeted
from jndkit.victims import load_victim


def main() -> None:
    print("torch threads", torch.get_num_threads())
    victim = load_victim("mobilenet_v2")
    x0, _, _ = evaluation_set(victim, 32)
    method = get_method("levels")
    run_attack(method, victim, Untargeted(), x0[:2])  # warm-up
    for rep in range(2):
        t = time.perf_counter()
        results = [run_attack(method, victim, Untargeted(), x0[i : i + 16]) for i in (0, 16)]
        print(f"batch 16, repeat {rep + 1}: {(time.perf_counter() - t) / 32:.3f} s / image")
    x_adv = torch.cat([r.x_adv for r in results])
    ok = saved_success(victim, "untargeted", 0.05, x0, x_adv)
    print(f"saved success {sum(ok)}/32, mean PSNR {float(metrics.psnr(x0, x_adv).mean()):.2f} dB, "
          f"mean SSIM {float(metrics.ssim(x0, x_adv).mean()):.6f}")
    t = time.perf_counter()
    for i in range(8):
        run_attack(method, victim, Untargeted(), x0[i : i + 1])
    print(f"batch 1: {(time.perf_counter() - t) / 8:.3f} s / image")


if __name__ == "__main__":
    main()
