#!/usr/bin/env python
"""Faces at 12 megapixels, the speed of one 1-megapixel face photo, and hiding after upload (issue 14).

Usage::

    nice -n 10 env OMP_NUM_THREADS=2 python benchmarks/bench_face_large.py big   [--timeout 900]
    nice -n 10 env OMP_NUM_THREADS=2 python benchmarks/bench_face_large.py onemp
    nice -n 10 env OMP_NUM_THREADS=2 python benchmarks/bench_face_large.py hide  [--photos obama,biden]
    python benchmarks/bench_face_large.py table   # markdown of benchmarks/results/face_large.jsonl

* ``big``: a 4000x3000 group photo, each of the four test photos (tests/data/face_photos) fitted
  into a 2000x1500 quadrant (Pillow Lanczos, aspect kept, mid-grey padding), run through
  ``jndkit protect --task face BIG.png -o OUT`` with the defaults under ``/usr/bin/time -v``.
* ``onemp``: obama.jpg resized (Lanczos) to about 1 megapixel, the same command.
* ``hide``: ``jndkit protect --task face --goal hide`` on each test photo; the saved file and its
  x0.75 + JPEG 85 upload (jndkit's ``x0.75+jpeg85`` transform, Pillow) are given to (a) a fresh
  stock facenet-pytorch MTCNN (faces at probability >= 0.9) and (b) dlib-bin's HOG detector
  (``dlib.get_frontal_face_detector()``, one upsampling); a face counts as found when a detection
  overlaps the clean MTCNN box (scaled) by IoU >= 0.3. Face-box PSNR and share of pixels above the
  Chou-Li JND are :func:`jndkit.face.panel.face_quality` of the saved file.

Each run appends one JSON line (command, wall seconds, peak RSS, the report's numbers, versions,
machine, load average) to ``benchmarks/results/face_large.jsonl``. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "data" / "face_photos"
NAMES = ("obama", "obama2", "obama3", "biden")
OUT = ROOT / "benchmarks" / "results" / "face_large.jsonl"
JNDKIT = str(Path(sys.executable).parent / "jndkit")


def machine() -> dict[str, Any]:
    from jndkit.bench.records import cpu_model

    cpu = cpu_model()
    import torch

    return {"cpu": cpu, "nproc": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def group_photo(path: Path, size: tuple[int, int] = (4000, 3000)) -> None:
    """Write the 2x2 group photo: each test photo fitted (Lanczos, aspect kept) into a quadrant."""
    from PIL import Image

    w, h = size
    qw, qh = w // 2, h // 2
    canvas = Image.new("RGB", size, (128, 128, 128))
    for i, n in enumerate(NAMES):
        im = Image.open(PHOTOS / f"{n}.jpg").convert("RGB")
        s = min(qw / im.width, qh / im.height)
        im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)
        x0, y0 = (i % 2) * qw + (qw - im.width) // 2, (i // 2) * qh + (qh - im.height) // 2
        canvas.paste(im, (x0, y0))
    canvas.save(path)


def one_megapixel(path: Path, name: str = "obama") -> None:
    from PIL import Image

    im = Image.open(PHOTOS / f"{name}.jpg").convert("RGB")
    s = (1_000_000 / (im.width * im.height)) ** 0.5
    im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS).save(path)


def timed(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run ``cmd`` under ``/usr/bin/time -v``: wall seconds, peak RSS (MB), exit code, output tail."""
    import signal

    t0 = time.perf_counter()
    # own process group, so that a timeout stops jndkit too (not only /usr/bin/time)
    p = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        rc: int | None = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGINT)  # jndkit's Ctrl-C: it says how far it got
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        rc = None
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    return {"command": " ".join(cmd), "rc": rc, "wall_s": round(wall, 1),
            "peak_rss_mb": round(int(rss.group(1)) / 1024) if rss else None,
            "stdout_tail": out[-1500:], "stderr_tail": err[-1500:]}


def report(out_dir: Path) -> dict[str, Any]:
    p = out_dir / "report.json"
    return json.loads(p.read_text()) if p.exists() else {}


def append(row: dict[str, Any]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k not in ("stdout_tail", "stderr_tail", "report")}), flush=True)


def protect_run(kind: str, src: Path, work: Path, timeout: float, extra: list[str]) -> None:
    out = work / f"out_{kind}"
    r = timed([JNDKIT, "protect", "--task", "face", str(src), "-o", str(out), *extra], timeout)
    rep = report(out)
    from PIL import Image

    w, h = Image.open(src).size
    row = {"kind": kind, "size": [w, h], "megapixels": round(w * h / 1e6, 2), **r, "report": rep,
           "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    append(row)


def hide(names: list[str], work: Path, timeout: float) -> None:
    import dlib
    import numpy as np
    import torch

    from jndkit.face.panel import _match, face_quality
    from jndkit.face.victim import _default_detector
    from jndkit.images import load_image
    from jndkit.transforms import get_suite

    det = _default_detector()
    hog = dlib.get_frontal_face_detector()
    up = next(t for t in get_suite("social").for_size(100, 100) if t.name == "x0.75+jpeg85")

    def to_u8(x: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(torch.round(x * 255).to(torch.uint8).permute(1, 2, 0).numpy())

    def found(x: torch.Tensor, box: list[float], scale: float) -> dict[str, Any]:
        m = det.detect(x, min_prob=0.9)
        mf = _match(m, box, scale)
        hd = [type("F", (), {"box": [d.left(), d.top(), d.right(), d.bottom()]})() for d in hog(to_u8(x), 1)]
        hf = _match(hd, box, scale)
        return {"mtcnn": mf is not None, "mtcnn_prob": None if mf is None else round(float(mf.prob), 4),
                "hog": hf is not None, "hog_any": len(hd)}

    for n in names:
        src = PHOTOS / f"{n}.jpg"
        out = work / f"hide_{n}"
        r = timed([JNDKIT, "protect", "--task", "face", "--goal", "hide", str(src), "-o", str(out)], timeout)
        clean = load_image(src).rgb
        box = list(det.detect(clean, min_prob=0.9)[0].box)
        row: dict[str, Any] = {"kind": "hide", "photo": n, **r, "clean": found(clean, box, 1.0),
                               "clean_upload": found(up.apply(clean), box, up.apply(clean).shape[-1] / clean.shape[-1])}
        saved_path = next(iter(sorted(out.glob(f"{n}.*"))), None) if out.exists() else None
        if saved_path is not None:
            saved = load_image(saved_path).rgb
            u = up.apply(saved)
            row.update({"file": found(saved, box, 1.0), "upload": found(u, box, u.shape[-1] / saved.shape[-1]),
                        "quality": face_quality(clean, saved, box)})
        row.update({"report": report(out), "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S")})
        append(row)


def table() -> str:
    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    out = ["| photo | MTCNN on file | MTCNN after x0.75+jpeg85 | HOG on file | HOG after x0.75+jpeg85 "
           "| face PSNR | above JND | s |",
           "|---|---|---|---|---|---|---|---|"]

    def f(d: dict[str, Any] | None, k: str) -> str:
        if d is None:
            return "-"
        if k == "mtcnn":
            return f"found ({d['mtcnn_prob']})" if d["mtcnn"] else "hidden"
        return "found" if d["hog"] else "hidden"

    for r in rows:
        if r["kind"] != "hide":
            continue
        q = r.get("quality", {})
        out.append(f"| {r['photo']} | {f(r.get('file'), 'mtcnn')} | {f(r.get('upload'), 'mtcnn')} "
                   f"| {f(r.get('file'), 'hog')} "
                   f"| {f(r.get('upload'), 'hog')} | {q.get('psnr')} | {q.get('above_jnd')} | {r['wall_s']} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["big", "onemp", "hide", "table"])
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per command before it is stopped")
    ap.add_argument("--photos", default=",".join(NAMES))
    ap.add_argument("--work", default=None, help="folder for inputs and outputs (default: a temporary one)")
    args = ap.parse_args()
    if args.what == "table":
        print(table())
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="face_large_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.what == "big":
        src = work / "group12mp.png"
        group_photo(src)
        protect_run("big", src, work, args.timeout, [])
    elif args.what == "onemp":
        src = work / "obama1mp.png"
        one_megapixel(src)
        protect_run("onemp", src, work, args.timeout, [])
    else:
        hide([n for n in args.photos.split(",") if n], work, args.timeout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
