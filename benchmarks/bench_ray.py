#!/usr/bin/env python
"""Photos per second: the single-process pipeline against Ray Data workers, and Ray's cost per photo.

Usage::

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/bench_ray.py [--photos 8] [--size 128x96]
        [--workers 1,2] [--max-iter 40] [--copies 32] [--repeats 3] [--out benchmarks/results/ray.json]

Two tasks, each run through :func:`jndkit.pipeline.run_paths` (single process, one torch thread) and
through :func:`jndkit.distributed.protect_paths_ray` (``ray.init(num_cpus=W)``, ``W`` workers of one CPU
and one torch thread each), on the same photos into fresh output folders:

* ``protect``: the product's classify task in research mode (:class:`jndkit.protect.Protector` with
  ``ProtectConfig.research(max_iter=...)``: mobilenet_v2, ``levels``, untargeted, PNG, the saved file
  re-judged), on ``--photos`` crops of the package-shipped samples at ``--size``. Reported: the
  single-process loop (task already built: its load time apart), and Ray's ``ray.init`` apart from its
  run (actors start, each loads the model, photos), with the time to the first record.
* ``copy``: a task that writes the photo unchanged (decode, write, re-read, measure, name: the
  pipeline's own I/O) on 4 and on ``--copies`` photos: the slope of time over photo count, Ray with
  one worker minus single process, is what Ray adds per photo (scheduling, pickling the record)
  once its workers are up (the ``overhead`` row).

Each timing is the median of ``--repeats`` runs (spread = max - min). Output: JSON with the
rows, settings, versions and machine; ``docs/distributed.md`` quotes it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the copy task below must import in Ray's workers too (runtime_env)


class CopyTask:
    """Writes the photo unchanged: the pipeline's I/O (decode, write, re-read, metrics) and no attack."""

    name = "copy"
    fmt = "png"
    quality = 95

    def config_json(self) -> dict[str, Any]:
        return {"task": "copy"}

    def new_record(self, src: Path) -> Any:
        from jndkit.pipeline import Record

        return Record(input=str(src), task="copy")

    def protect(self, image: Any, dst: Path, record: Any, progress: Any) -> Any:
        from jndkit.pipeline import Attempt

        return Attempt(image=image.rgb)

    def judge(self, attempt: Any, clean: Any, saved: Any, record: Any) -> bool:
        record.success = bool(torch.equal(clean, saved))
        return record.success

    def why_not(self, record: Any) -> str:
        return "the written file differs from the photo"

    def summarise(self, records: Sequence[Any]) -> dict[str, Any]:
        return {}


def make_photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """``n`` crops (PNG, ``size`` = (width, height)) of the package-shipped samples, cycling."""
    from PIL import Image

    from jndkit.samples import sample_array

    names = ["coffee", "chelsea", "astronaut", "rocket", "china", "flower", "grace_hopper"]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        arr = sample_array(names[i % len(names)])
        h, w = arr.shape[:2]
        k = i // len(names)
        y, x = (h // 9) * (k % 4), (w // 11) * (k % 5)
        crop = Image.fromarray(arr[y:y + h * 2 // 3, x:x + w * 2 // 3]).resize(size, Image.Resampling.LANCZOS)
        p = folder / f"p{i:03d}.png"
        crop.save(p)
        out.append(p)
    return out


def time_single(task: Any, src: Path, work: Path) -> tuple[float, list[Any]]:
    from jndkit.pipeline import run_paths

    out = work / f"single-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    recs = list(run_paths(task, [src], out))
    dt = time.perf_counter() - t0
    shutil.rmtree(out)
    return dt, recs


def time_ray(make_task: Callable[[], Any], task: Any, src: Path, work: Path, workers: int) -> dict[str, Any]:
    """One Ray run from a cold ``ray.init``: its phases in seconds."""
    import ray

    from jndkit.distributed import protect_paths_ray

    out = work / f"ray-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}})
    t_init = time.perf_counter() - t0
    first = None
    t1 = time.perf_counter()
    recs = []
    for rec in protect_paths_ray(make_task, [src], out, workers=workers, num_cpus=1, task=task):
        if first is None:
            first = time.perf_counter() - t1
        recs.append(rec)
    total = time.perf_counter() - t1
    ray.shutdown()
    shutil.rmtree(out)
    return {"init_s": t_init, "first_s": first, "run_s": total, "records": recs}


def median_spread(xs: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "spread": round(max(xs) - min(xs), 3)}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--size", default="128x96")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--max-iter", type=int, default=40)
    ap.add_argument("--copies", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ray.json")
    args = ap.parse_args(argv)
    import ray

    import jndkit
    from jndkit.protect import ProtectConfig, Protector

    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.split("x"))
    workers = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    rows: list[dict[str, Any]] = []
    try:
        config = ProtectConfig.research(max_iter=args.max_iter)
        # (name, task factory, photo counts): copy at two counts, so the slope gives the cost per photo
        jobs: list[tuple[str, Callable[[], Any], list[int]]] = [
            ("protect", functools.partial(Protector, config), [args.photos]),
            ("copy", CopyTask, [4, args.copies]),
        ]
        for name, make_task, counts in jobs:
            t0 = time.perf_counter()
            task = make_task()
            load = time.perf_counter() - t0
            for n in counts:
                folder = work / f"{name}-{n}"
                make_photos(folder, n, (width, height))
                single = [time_single(task, folder, work) for _ in range(args.repeats)]
                ref = [(r.status, r.psnr, r.changed_values) for r in single[0][1]]
                row: dict[str, Any] = {"task": name, "photos": n, "load_s": round(load, 3),
                                       "protected": sum(r.status == "protected" for r in single[0][1]),
                                       "single_s": median_spread([s for s, _ in single])}
                row["single_photos_per_s"] = round(n / row["single_s"]["median"], 3)
                for w in workers:
                    runs = [time_ray(make_task, task, folder, work, w) for _ in range(args.repeats)]
                    same = all([(r.status, r.psnr, r.changed_values) for r in run["records"]] == ref for run in runs)
                    stats = {k: median_spread([run[k] for run in runs]) for k in ("init_s", "first_s", "run_s")}
                    row[f"ray{w}"] = {**stats, "photos_per_s": round(n / stats["run_s"]["median"], 3),
                                      "same_records": same}
                rows.append(row)
                print(json.dumps(row), flush=True)
        copies = [r for r in rows if r["task"] == "copy"]
        if len(copies) == 2 and 1 in workers:  # Ray's cost per photo, startup excluded: slope over the counts
            a, b = copies
            dn = b["photos"] - a["photos"]
            single_slope = (b["single_s"]["median"] - a["single_s"]["median"]) / dn
            ray_slope = (b["ray1"]["run_s"]["median"] - a["ray1"]["run_s"]["median"]) / dn
            rows.append({"task": "overhead", "single_s_per_photo": round(single_slope, 4),
                         "ray1_s_per_photo": round(ray_slope, 4),
                         "ray_overhead_per_photo_s": round(ray_slope - single_slope, 4)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "rows": rows,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "versions": {"jndkit": jndkit.__version__, "ray": ray.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "system": platform.platform(),
                    "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
