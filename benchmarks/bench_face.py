#!/usr/bin/env python
"""Face dodging (and impersonation) benchmark: methods on the face test photos, judged by dlib itself.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_face.py [--methods levels,ddn,bim,jnd,mnd,hvs]
        [--out benchmarks/results/face.json] [--budget 900]

Samples: every face of obama.jpg, obama2.jpg, obama3.jpg, biden.jpg (``face_recognition`` 1.3.0
sdist, see ``scripts/fetch_face_test_photos.py``) and the mirror images of obama2 and biden (a
flipped photo is a new photo to the detector and the recogniser). Each sample is protected with
:class:`jndkit.face.FaceProtector` (goal ``dodge`` without a gallery, PNG output, jitter 4, up to 3
rounds) and then judged by an **independent** recogniser, dlib's own pipeline (HOG detector,
5-point shape predictor, ``face_recognition_model_v1`` from ``dlib-bin``):

* ``dlib_ok``: on the saved 8-bit image, dlib's descriptor lies >= 0.6 from dlib's descriptor of the
  clean photo (no face found also counts as dodged);
* ``dlib_jpeg90``: the same after re-encoding the saved image as JPEG quality 90 (not optimised for);
* ``psnr``/``ssim`` over the whole photo and over the MTCNN face box; seconds per face.

Impersonation (obama.jpg as biden, the gallery holding biden.jpg) runs for ``levels`` and ``ddn``.
The run stops starting new methods after ``--budget`` seconds. Output: JSON with the rows, versions
and machine; ``docs/face.md`` quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="levels,ddn,bim,jnd,mnd,hvs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "face.json"))
    ap.add_argument("--budget", type=float, default=900.0)
    ap.add_argument("--samples", default="obama,obama2,obama3,biden,obama2-flip,biden-flip")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-impersonation", action="store_true")
    args = ap.parse_args()

    import dlib

    from jndkit import metrics
    from jndkit.attacks import METHODS
    from jndkit.errors import InputError
    from jndkit.face import FaceDetector, FaceProtector, find_dlib_face_model, load_dlib_face_net
    from jndkit.images import encode_image, decode_bytes, load_image, quantize

    cache = ROOT / ".cache" / "face_photos"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_face_test_photos.py"), str(cache)], check=True)
    photos = {n: quantize(load_image(cache / f"{n}.jpg").rgb) for n in ("obama", "obama2", "obama3", "biden")}
    samples = dict(photos)
    samples["obama2-flip"] = photos["obama2"].flip(-1).contiguous()
    samples["biden-flip"] = photos["biden"].flip(-1).contiguous()
    wanted = [n for n in args.samples.split(",") if n]
    samples = {n: samples[n] for n in wanted}

    folder = find_dlib_face_model().parent
    hog = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))

    def dlib_desc(x: torch.Tensor) -> np.ndarray | None:
        img = np.ascontiguousarray(torch.round(x * 255).to(torch.uint8).permute(1, 2, 0).numpy())
        dets = hog(img, 1)
        if not dets:
            return None
        best = max(dets, key=lambda d: d.area())
        return np.array(rec.compute_face_descriptor(img, sp(img, best)))

    clean_desc = {n: dlib_desc(x) for n, x in samples.items()}
    clean_desc["biden"] = dlib_desc(photos["biden"])
    det, net = FaceDetector(), load_dlib_face_net()
    from jndkit.face import embed_faces

    gallery = {"biden": embed_faces(photos["biden"], det.detect(photos["biden"], min_prob=0.9)[:1], net)}

    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    methods = [m for m in args.methods.split(",") if m]
    # sample by sample, every method on each, so a spent budget leaves whole samples out, not methods
    jobs = [(m, "dodge", n) for n in samples for m in methods]
    if not args.no_impersonation:
        jobs[len(methods):len(methods)] = [(m, "impersonate:biden", "obama") for m in ("levels", "ddn")]
        samples.setdefault("obama", photos["obama"])
    for method, goal, name in jobs:
        if method not in METHODS:
            rows.append({"method": method, "goal": goal, "sample": name, "error": "not registered"})
            continue
        if time.perf_counter() - t_start > args.budget:
            rows.append({"method": method, "goal": goal, "sample": name, "error": "time budget spent"})
            continue
        prot = FaceProtector(goal, gallery if goal != "dodge" else None, method, detector=det, net=net,
                             rounds=args.rounds)
        x = samples[name]
        t0 = time.perf_counter()
        try:
            res = prot.protect_image(x)
        except InputError as e:  # e.g. a method whose loss needs class scores
            rows.append({"method": method, "goal": goal, "sample": name, "error": str(e)})
            print(json.dumps(rows[-1]), flush=True)
            continue
        secs = time.perf_counter() - t0
        if res.x_adv is None:
            rows.append({"method": method, "goal": goal, "sample": name, "error": "no face"})
            continue
        xa = res.x_adv
        jpg = decode_bytes(encode_image(xa, "jpg", 90))
        row: dict[str, Any] = {"method": method, "goal": goal, "sample": name, "faces": len(res.faces),
                               "ours_ok": res.success, "rounds": res.rounds, "seconds_per_face": secs / len(res.faces)}
        m_all = metrics.compute_metrics(x[None], xa[None], names=["psnr", "ssim"])
        x1, y1, x2, y2 = (int(round(v)) for v in res.faces[0].box)
        x1, y1 = max(0, x1), max(0, y1)
        m_box = metrics.compute_metrics(x[None, :, y1:y2, x1:x2], xa[None, :, y1:y2, x1:x2], names=["psnr", "ssim"])
        row.update(psnr=float(m_all["psnr"][0]), ssim=float(m_all["ssim"][0]),
                   psnr_face=float(m_box["psnr"][0]), ssim_face=float(m_box["ssim"][0]))
        for key, img in (("dlib", xa), ("dlib_jpeg90", jpg)):
            d = dlib_desc(img)
            if goal == "dodge":
                ref = clean_desc[name]
                dist = None if d is None or ref is None else float(np.linalg.norm(d - ref))
                row[key + "_distance"] = dist
                row[key + "_ok"] = d is None or (dist is not None and dist >= 0.6)
            else:
                ref = clean_desc["biden"]
                dist = None if d is None or ref is None else float(np.linalg.norm(d - ref))
                row[key + "_distance"] = dist
                row[key + "_ok"] = dist is not None and dist < 0.6
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(rows, t_start, args.out)
    write(rows, t_start, args.out)
    return 0


def write(rows: list[dict[str, Any]], t_start: float, path: str) -> None:
    import dlib as _dlib
    import facenet_pytorch

    out = {
        "rows": rows,
        "seconds_total": time.perf_counter() - t_start,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "dlib": _dlib.__version__,
                     "facenet_pytorch": getattr(facenet_pytorch, "__version__", "2.6.0")},
        "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
