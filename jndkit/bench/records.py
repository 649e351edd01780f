"""Benchmark records: one :class:`BenchRow` per image and method, their CSV files and the machine record."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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



def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"


def _settings(kappa: float, seed: int, max_iter: int | None) -> str:
    return f"kappa={kappa:g};seed={seed};max_iter={'default' if max_iter is None else max_iter}"


def cache_name(model: str, method: str, preset: str, goal: str, robust: str) -> str:
    """File-system name of one (model, method, preset, goal, robust) combination."""
    return "_".join(_slug(s) for s in (model, method, preset, goal, robust))



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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` where that is missing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    """Versions and machine, for the benchmark record."""
    cpu = cpu_model()
    import torchvision

    from .. import __version__

    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {"jndkit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "cpu": cpu, "cores": str(os.cpu_count()),
            "threads": str(torch.get_num_threads()), "load": load}
