#!/usr/bin/env python
"""Hiding faces inside the human JND budget, judged by MTCNN and by detectors never attacked (issue 14).

Usage::

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/bench_face_hide.py run \
        [--photos obama,biden] [--flips] [--jnd namm,chou] [--strengths 0.5,1,2,4] [--rounds 2] [--steps 60]
    python benchmarks/bench_face_hide.py table   # markdown of benchmarks/results/face_hide_jnd.jsonl

For each photo (tests/data/face_photos; ``--flips`` adds their mirror images; ``astronaut`` is
scikit-image's ``data.astronaut()``), each JND model and each strength **alone**
(``jndkit.face.hide.hide_faces(..., strengths=(s,))``): per face, stock MTCNN (fresh detection, its own
0.7 threshold) on the saved 8-bit image, after x0.75+JPEG85 and after every transform of the ``social``
suite; dlib's HOG detector (upsample 1) and dlib's CNN MMOD detector (upsample 0), never attacked, the
same (with their best score over the face); face-box PSNR, share of pixels above the Chou-Li JND, mean
and max CIEDE2000; seconds. One JSON line per run in ``benchmarks/results/face_hide_jnd.jsonl``
(versions, machine, load average). Strengths above 1 lie outside the JND budget: they are measured to
say at what budget each detector starts to lose the face. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHOTOS = ROOT / "tests" / "data" / "face_photos"
NAMES = ("obama", "obama2", "obama3", "biden")
OUT = ROOT / "benchmarks" / "results" / "face_hide_jnd.jsonl"


def machine() -> dict[str, Any]:
    from jndkit.bench.records import cpu_model

    cpu = cpu_model()
    import dlib
    import PIL

    return {"cpu": cpu, "nproc": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "pillow": PIL.__version__, "dlib": dlib.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def load(name: str) -> torch.Tensor:
    from jndkit.images import load_image, quantize

    flip = name.endswith("-flip")
    base = name.removesuffix("-flip")
    if base == "astronaut":
        from skimage import data

        x = torch.from_numpy(np.ascontiguousarray(data.astronaut())).permute(2, 0, 1).float() / 255.0
    else:
        x = load_image(PHOTOS / f"{base}.jpg").rgb
    x = quantize(x)
    return x.flip(-1).contiguous() if flip else x


def run(args: argparse.Namespace) -> None:
    from jndkit.face.hide import hide_faces

    names = args.photos.split(",")
    if args.flips:
        names += [f"{n}-flip" for n in names]
    info = machine()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    for jnd in args.jnd.split(","):
        for name in names:
            x = load(name)
            for s in (float(v) for v in args.strengths.split(",")):
                t0 = time.perf_counter()
                r = hide_faces(x, strengths=(s,), steps=args.steps, rounds=args.rounds, jnd=jnd, seed=0)
                row = {"photo": name, "size": list(x.shape[-2:]), "jnd": jnd, "strength": s, "steps": args.steps,
                       "rounds_max": args.rounds, "rounds": r.rounds, "faces": len(r.faces),
                       "engine_success": r.engine_success, "mtcnn_hidden": r.success, "mtcnn": r.mtcnn,
                       "held_out": r.held_out, "quality": r.quality, "crop": r.crop,
                       "seconds": round(time.perf_counter() - t0, 1), "machine": info,
                       "command": " ".join(sys.argv)}
                with OUT.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps({k: row[k] for k in ("photo", "jnd", "strength", "mtcnn_hidden", "seconds")}),
                      flush=True)


def _state(checks: list[dict[str, Any]], which: str) -> str:
    """``hidden`` / ``found`` for the saved file (``file``), x0.75+jpeg85 (``upload``), or every transform (``all``)."""
    if which == "file":
        sel = [c for c in checks if c["transform"] == "saved"]
    elif which == "upload":
        sel = [c for c in checks if c["transform"] == "x0.75+jpeg85"]
    else:
        sel = checks
    return "found" if any(c["found"] for c in sel) else "hidden"


def table() -> str:
    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    head = ("| photo | JND | strength | MTCNN file / x0.75+J85 / social (best prob) "
            "| HOG file / up / social (best score) | CNN file / up / social | face PSNR dB | above JND "
            "| ΔE00 mean / max | s |\n|" + "---|" * 10)
    out = [head]
    for r in rows:
        for i in range(r["faces"]):
            m = r["mtcnn"][i]["checks"]
            mp = max((c["prob"] or 0.0) for c in m)
            cells = [f"{_state(m, 'file')} / {_state(m, 'upload')} / {_state(m, 'all')} ({mp:.3f})"]
            for det in ("dlib_hog", "dlib_cnn"):
                d = r["held_out"][i].get(det) if r["held_out"] else None
                if d is None or not d["clean_found"]:
                    cells.append("n/a")
                    continue
                c = d["checks"]
                best = max((k["score"] for k in c if k["score"] is not None), default=None)
                cells.append(f"{_state(c, 'file')} / {_state(c, 'upload')} / {_state(c, 'all')}"
                             + (f" ({best:.2f})" if best is not None else " (none)"))
            q = r["quality"][i]
            out.append(f"| {r['photo']} | {r['jnd']} | {r['strength']:g} | " + " | ".join(cells)
                       + f" | {q['psnr']} | {q['above_jnd']:.3f} | {q['ciede2000_mean']:.2f} / {q['ciede2000_max']:.1f}"
                       f" | {r['seconds']:.0f} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--photos", default=",".join(NAMES))
    r.add_argument("--flips", action="store_true")
    r.add_argument("--jnd", default="namm")
    r.add_argument("--strengths", default="0.5,0.75,1.0")
    r.add_argument("--rounds", type=int, default=2)
    r.add_argument("--steps", type=int, default=60)
    sub.add_parser("table")
    a = p.parse_args()
    if a.cmd == "run":
        run(a)
    else:
        print(table())


if __name__ == "__main__":
    main()
