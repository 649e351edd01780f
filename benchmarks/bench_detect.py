"""Seed 000's detection table: make every object the SSD detector sees vanish, on package photos.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_detect.py [--methods jnd,shield]
    .venv/bin/python benchmarks/bench_detect.py --table      # the markdown table of docs/detect.md

Photos: every package-shipped photo with at least one box above 0.5 (scikit-image, scikit-learn,
matplotlib, tests/data/face_photos), plus halves of some of them, 16 in all; each scaled so its long
side is at most 640 px (Pillow Lanczos) to keep CPU time low. Goal per photo: ``vanish:`` every
class the clean photo shows (seed 000's non-targeted detection attack: the detector no longer sees
the objects). Rows:

* ``jnd``: seed 000's method (engine, alpha 1e-3, at most 100 iterations), success on the saved PNG
  (the paper's setting, no upload);
* ``shield``: jndkit's protective method, ``--strength auto`` (invisible, subtle, strong in turn),
  success required after every transform of the ``social`` upload suite.

Every saved image is judged from scratch by the port (file, and after x0.75 + JPEG 85) and, as an
independent second judge, by OpenCV's own run of the original graph (``cv2.dnn``, its own resize,
in the OpenCV 5 venv ``--cv-python``; skipped when that python is absent). One JSON line per
photo and method goes to benchmarks/results/detect.jsonl (a rerun skips lines already there).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/results/detect.jsonl"
LONG = 640
UPLOAD = "x0.75+jpeg85"

CV_SCRIPT = r"""
import json, sys, cv2
pb, pbtxt, files = sys.argv[1], sys.argv[2], sys.argv[3:]
net = cv2.dnn.readNetFromTensorflow(pb, pbtxt)
out = {}
for f in files:
    img = cv2.imread(f)
    net.setInput(cv2.dnn.blobFromImage(img, size=(300, 300), swapRB=True, crop=False))
    det = net.forward().reshape(-1, 7)
    out[f] = [[int(r[1]), float(r[2])] for r in det if r[2] > 0.5]
print(json.dumps(out))
"""


def photos() -> dict[str, np.ndarray]:
    """The 16 photos, ``[H,W,3]`` uint8, long side <= 640."""
    import skimage.data

    from jndkit.samples import sample_array

    full: dict[str, np.ndarray] = {n: np.asarray(getattr(skimage.data, n)())
                                   for n in ("astronaut", "chelsea", "coffee")}
    left, right, _ = skimage.data.stereo_motorcycle()
    full["motorcycle_left"], full["motorcycle_right"] = np.asarray(left), np.asarray(right)
    full["horse"] = np.stack([np.asarray(skimage.data.horse()).astype(np.uint8) * 255] * 3, -1)  # silhouette
    full["grace_hopper"] = sample_array("grace_hopper")
    for n in ("obama", "obama2", "obama3", "biden"):
        with Image.open(ROOT / f"tests/data/face_photos/{n}.jpg") as im:
            full[n] = np.asarray(im.convert("RGB"))
    a, c, ch = full["astronaut"], full["coffee"], full["chelsea"]
    full["astronaut_top"] = a[: a.shape[0] // 2]
    full["coffee_top"] = c[: c.shape[0] // 2]
    full["coffee_right"] = c[:, c.shape[1] // 2:]
    full["chelsea_left"] = ch[:, : ch.shape[1] // 2]
    full["motorcycle_right_half"] = full["motorcycle_right"][:, full["motorcycle_right"].shape[1] // 2:]
    out = {}
    for n, img in full.items():
        im = Image.fromarray(np.ascontiguousarray(img))
        s = LONG / max(im.size)
        if s < 1:
            im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)
        out[n] = np.asarray(im)
    return out


def opencv_judge(cv_python: str, files: list[Path]) -> dict[str, list[list[float]]] | None:
    """OpenCV's detections (class id, score) above 0.5 per file, or ``None`` without the OpenCV venv."""
    if not Path(cv_python).exists():
        return None
    from jndkit.detect.ssd import model_files

    pb, pbtxt = model_files()
    res = subprocess.run([cv_python, "-c", CV_SCRIPT, str(pb), str(pbtxt), *map(str, files)],
                         capture_output=True, text=True, check=True)
    out: dict[str, list[list[float]]] = json.loads(res.stdout)
    return out


def run(methods: list[str], cv_python: str, max_iter: int) -> None:
    from jndkit.detect.goals import DetectorVictim
    from jndkit.detect.protect import DetectConfig, DetectProtector
    from jndkit.images import save_image
    from jndkit.metrics import compute_metrics
    from jndkit.perception.jnd import share_above_jnd
    from jndkit.transforms import parse_transform

    torch.set_num_threads(1)
    done = set()
    if OUT.exists():
        done = {(r["photo"], r["method"]) for r in map(json.loads, OUT.read_text().splitlines())}
    victim = DetectorVictim()
    upload = parse_transform(UPLOAD)
    for name, img in photos().items():
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
        classes = sorted({d.name for d in victim.detect(x[None])[0]})
        for method in methods:
            if (name, method) in done:
                continue
            cfg = DetectConfig(goal="vanish:" + ",".join(classes), method=method,
                               upload="social" if method == "shield" else "none",
                               max_iter=max_iter if method == "jnd" else None)
            p = DetectProtector(cfg, victim=victim)
            t0 = time.perf_counter()
            res = p.protect_tensor(x)
            seconds = time.perf_counter() - t0
            adv = res.x_adv[0]
            judge = DetectProtector(DetectConfig(goal=cfg.goal, upload=UPLOAD), victim=victim)
            with tempfile.TemporaryDirectory() as tmp:
                png = Path(tmp) / f"{name}.png"
                save_image(adv, png)
                from jndkit.images import load_image

                saved = load_image(png).rgb
                v = judge.judge_tensor(x, saved)
                up = Path(tmp) / f"{name}_up.png"
                save_image(upload.apply(saved), up)
                cv = opencv_judge(cv_python, [png, up])
            ids = set(judge.goal().ids)  # type: ignore[attr-defined]
            m = compute_metrics(x[None], saved[None], names=["psnr", "ssim"])
            rec = {
                "photo": name, "method": method, "size": list(img.shape[:2]), "goal": cfg.goal,
                "engine_success": bool(res.success[0]), "iterations": int(res.iterations[0]),
                "tries": int(res.tries[0]), "strength": res.params[0].get("strength") if method == "shield" else None,
                "success_file": v.success, "success_upload": v.checks[1].reached if len(v.checks) > 1 else None,
                "opencv_file": None if cv is None else not any(int(c) in ids for c, _ in cv[str(png)]),
                "opencv_upload": None if cv is None else not any(int(c) in ids for c, _ in cv[str(up)]),
                "psnr": float(m["psnr"][0]), "ssim": float(m["ssim"][0]),
                "above_jnd": float(share_above_jnd(x[None], saved[None], "chou")[0]),
                "before": [d.to_json() for d in v.boxes_before], "after": [d.to_json() for d in v.boxes_after],
                "seconds": round(seconds, 1), "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
            }
            with OUT.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(name, method, rec["success_file"], rec["success_upload"], rec["opencv_file"], rec["opencv_upload"],
                  rec["iterations"], round(rec["psnr"], 2), round(rec["above_jnd"], 4), rec["seconds"], flush=True)


def table() -> str:
    """The markdown table of docs/detect.md from detect.jsonl."""
    rows = [json.loads(s) for s in OUT.read_text().splitlines()]
    lines = ["| method | photos | success (port, PNG) | after x0.75+JPEG85 | OpenCV PNG | OpenCV after upload | "
             "K (mean) | PSNR dB (finite mean) | SSIM | above JND % (mean / median) | s/photo |", "|" + "---|" * 11]
    for method in sorted({r["method"] for r in rows}):
        rs = [r for r in rows if r["method"] == method]

        def pct(key: str, rs: list[dict[str, object]] = rs) -> str:
            vals = [r[key] for r in rs if r[key] is not None]
            return f"{100 * sum(map(bool, vals)) / len(vals):.0f} %" if vals else "-"

        def mean(key: str, rs: list[dict[str, object]] = rs) -> float:
            vals = [float(r[key]) for r in rs]  # type: ignore[arg-type]
            return float(np.mean([v for v in vals if np.isfinite(v)]))  # an unchanged photo has PSNR inf

        above = float(np.median([float(r["above_jnd"]) for r in rs]))  # type: ignore[arg-type]

        lines.append(f"| {method} | {len(rs)} | {pct('success_file')} | {pct('success_upload')} | "
                     f"{pct('opencv_file')} | {pct('opencv_upload')} | {mean('iterations'):.1f} | {mean('psnr'):.2f} | "
                     f"{mean('ssim'):.4f} | "
                     f"{100 * mean('above_jnd'):.2f} / {100 * above:.2f} | {mean('seconds'):.1f} |")
    budgets = sorted({r["strength"] for r in rows if r.get("strength") is not None})
    if budgets:
        lines += ["", "| shield budget (x NAMM) | photos | PSNR dB | above JND % (mean) |", "|---|---|---|---|"]
        for b in budgets:
            rs = [r for r in rows if r.get("strength") == b]
            lines.append(f"| {b:g} | {len(rs)} | {np.mean([float(r['psnr']) for r in rs]):.2f} | "
                         f"{100 * np.mean([float(r['above_jnd']) for r in rs]):.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="jnd,shield")
    ap.add_argument("--cv-python", default="/tmp/cv5/bin/python")
    ap.add_argument("--max-iter", type=int, default=100, help="jnd's iteration budget")
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args()
    if a.table:
        print(table())
        return
    run(a.methods.split(","), a.cv_python, a.max_iter)


if __name__ == "__main__":
    sys.exit(main())
