"""Write tests/data/ssd_reference.json: OpenCV's run of the SSD-MobileNetV2 graph on package photos.

Run from the repository root with jndkit's venv:

    .venv/bin/python scripts/make_ssd_fixtures.py [--cv-python /tmp/cv5/bin/python]

Stage 1 (jndkit's venv) decodes each photo and resizes it to 300x300 with scikit-image
(``resize(order=1, anti_aliasing=True)``, rounded to uint8), so OpenCV and the PyTorch port see the
same pixels. Stage 2 runs in a separate venv holding opencv-python-headless 5.x (never installed
into jndkit's): ``cv2.dnn.readNetFromTensorflow(pb, pbtxt)`` on those pixels (0..255 RGB, NCHW), and
keeps every detection above score 0.3. The tests (tests/test_detect_ssd.py) rebuild the inputs the
same way and check their SHA-256 before comparing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MIN_SCORE = 0.3
OUT = Path("tests/data/ssd_reference.json")


def photos() -> dict[str, np.ndarray]:
    """The photos, ``[H,W,3]`` uint8 (package-shipped only)."""
    import skimage.data
    from PIL import Image

    from jndkit.samples import sample_array

    out = {n: np.asarray(getattr(skimage.data, n)()) for n in ("astronaut", "chelsea", "coffee", "rocket")}
    out["motorcycle"] = np.asarray(skimage.data.stereo_motorcycle()[0])
    for n in ("china", "flower", "grace_hopper"):
        out[n] = sample_array(n)
    with Image.open("tests/data/face_photos/obama.jpg") as im:
        out["obama"] = np.asarray(im.convert("RGB"))
    return out


def resized(img: np.ndarray) -> np.ndarray:
    """``img`` at 300x300 as uint8 (the fixture's input; the tests use this function)."""
    from skimage.transform import resize

    x = resize(img.astype(np.float64) / 255.0, (300, 300), order=1, anti_aliasing=True)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def stage_opencv(folder: Path) -> None:
    """Stage 2, in the OpenCV venv: detections of every ``*.npy`` input in ``folder``."""
    import cv2

    sys.path.insert(0, str(Path.cwd()))
    pb, pbtxt = json.loads((folder / "files.json").read_text())
    net = cv2.dnn.readNetFromTensorflow(pb, pbtxt)
    result = {"opencv": cv2.__version__, "photos": {}}
    for f in sorted(folder.glob("*.npy")):
        x = np.load(f)
        net.setInput(x.transpose(2, 0, 1)[None].astype(np.float32))
        out = net.forward().reshape(-1, 7)
        dets = [{"label": int(r[1]), "score": float(r[2]), "box": [float(v) for v in r[3:7]]}
                for r in out if r[2] > MIN_SCORE]
        result["photos"][f.stem] = dets
    (folder / "opencv.json").write_text(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv-python", default="/tmp/cv5/bin/python", help="python of a venv with OpenCV 5")
    ap.add_argument("--stage-opencv", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.stage_opencv:
        stage_opencv(a.stage_opencv)
        return
    import skimage

    from jndkit.detect.labels import COCO_NAMES
    from jndkit.detect.ssd import model_files

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "files.json").write_text(json.dumps([str(p) for p in model_files()]))
        sha = {}
        for name, img in photos().items():
            x = resized(img)
            sha[name] = hashlib.sha256(x.tobytes()).hexdigest()
            np.save(folder / f"{name}.npy", x)
        subprocess.run([a.cv_python, __file__, "--stage-opencv", str(folder)], check=True)
        ref = json.loads((folder / "opencv.json").read_text())
    for dets in ref["photos"].values():
        for d in dets:
            d["name"] = COCO_NAMES[d["label"]]
    ref.update({"scikit_image": skimage.__version__, "min_score": MIN_SCORE,
                "input": "skimage.transform.resize(img/255, (300,300), order=1, anti_aliasing=True), rounded to uint8",
                "sha256": sha})
    OUT.write_text(json.dumps(ref, indent=1) + "\n")
    for name, dets in ref["photos"].items():
        print(name, [(d["name"], round(d["score"], 3)) for d in dets])


if __name__ == "__main__":
    main()
