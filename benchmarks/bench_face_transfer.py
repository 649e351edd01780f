#!/usr/bin/env python
"""Does anything make face protection transfer to a recogniser it never saw? (issue 14, study)

Leave-one-out: attack one recogniser (the *surrogate*: ``dlib`` or ``facenet_casia``), judge the
other one (the *held-out* judge) and dlib's own pipeline (dlib-bin: HOG detector, 5-point predictor,
``face_recognition_model_v1``), with fresh MTCNN detection, on the re-read 8-bit file and after the
real (Pillow) ``x0.75+jpeg85`` upload. Dodged = distance to the clean photo's embedding >= the
recogniser's threshold (0.6 dlib, 1.02 FaceNet CASIA); no face found also counts as dodged.

Usage::

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/bench_face_transfer.py \\
        [--samples obama-crop,biden-crop,...|all] [--surrogates dlib,facenet_casia] \\
        [--variants shield,push,push+di,...] [--budgets namm:0.75,namm:1,namm:1.5,namm:2,chou:1] \\
        [--out benchmarks/results/face_transfer.jsonl] [--budget-seconds 900]
    python benchmarks/bench_face_transfer.py --clean [--samples ...]   # upload-only baseline rows
    python benchmarks/bench_face_transfer.py --table FILE.jsonl         # markdown tables

A *variant* is ``+``-joined tokens (all use sign steps of ``alpha`` x the per-value budget, MI
momentum mu = 1, the upload stand-in as EOT and the product's 5 alignments per face):

* ``shield``: the product's attack (``jndkit.face.panel.protect_faces``' settings: 60 steps, alpha 0.1,
  colour steps, no TI), stopped as the engine stops it: at the first check (every 3 steps) where the
  quantized image dodges the surrogate at every alignment by its kappa;
* ``push``: the same, never stopped: the distance is maximised to the end of the budget;
* ``di``: per step and per crop a random affine of the surrogate's face crop: DI-FGSM's shrink to
  80-100 % with zero padding at a random place, plus alignment jitter (shift +-4 % of the crop,
  rotation +-6 deg);
* ``feat``: a feature-level term: ``-||f(x) - f(x0)||^2 / ||f(x0)||^2`` of a middle block (dlib:
  the last 64-channel unit, 17x17; FaceNet: ``repeat_1``, 17x17x256), ``f(x0)`` the clean image
  through the same stand-in and crop, added to the normalised distance ``-d / threshold``;
* ``dfa``: DFANet (Zhong & Deng, "Towards Transferable Adversarial Attack against Deep Face
  Recognition", IEEE TIFS 2021): dropout (p = 0.1) on every convolution's output of the surrogate
  at every step, an ensemble of thinned surrogates;
* ``long``: 150 steps at alpha 0.04 instead of 60 at 0.1.

A *budget* is ``namm:S`` (S x the NAMM map, the product's ``--strength``) or ``chou:S`` (S x the
Chou-Li map, whose luma threshold is the one the "share above the JND" counts: at 1.0 no pixel can
exceed it). The map is computed on the whole photo and floored to whole 8-bit levels, so the saved
file never leaves it.

Only a window about the face (the MTCNN box grown by 60 % of its side, snapped to the 8-px JPEG
grid) is optimised (the recognisers see nothing else); the result is pasted into the whole photo,
which is written, re-read and judged. One JSON line per (sample, surrogate, variant, budget).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jndkit.bench.records import cpu_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLES = ("obama,obama2,obama3,biden,obama-flip,obama2-flip,obama3-flip,biden-flip,obama-crop,obama2-crop,"
           "obama3-crop,biden-crop,astronaut,grace_hopper")
UPLOAD = "x0.75+jpeg85"
THRESHOLDS = {"dlib": 0.6, "facenet_casia": 1.02, "dlib_bin": 0.6}
FEATURE_LAYER = {"dlib": "units.6", "facenet_casia": "net.repeat_1"}
"""The middle block whose activations the ``feat`` term pushes away from the clean ones."""


# ---------------------------------------------------------------------------------------------
# samples

def load_samples(names: Sequence[str], det: Any) -> dict[str, torch.Tensor]:
    """``[3,H,W]`` 8-bit photos in [0,1]: the face benchmark's 12 (bench_face.py) plus scikit-image's
    astronaut and matplotlib's grace_hopper (both ship in the installed packages)."""
    from PIL import Image

    from jndkit.images import load_image

    out: dict[str, torch.Tensor] = {}
    for n in ("obama", "obama2", "obama3", "biden"):
        x = load_image(ROOT / "tests" / "data" / "face_photos" / f"{n}.jpg").rgb
        out[n], out[n + "-flip"] = x, x.flip(-1).contiguous()
        b = det.detect(x, min_prob=0.9)[0].box
        g = 0.6 * max(b[2] - b[0], b[3] - b[1])
        h, w = x.shape[-2:]
        out[n + "-crop"] = x[:, max(0, int(b[1] - g)):min(h, int(b[3] + g)),
                             max(0, int(b[0] - g)):min(w, int(b[2] + g))].contiguous()
    if "astronaut" in names:
        import skimage.data

        out["astronaut"] = torch.from_numpy(skimage.data.astronaut().copy()).permute(2, 0, 1).float() / 255.0
    if "grace_hopper" in names:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
            arr = np.asarray(Image.open(fh).convert("RGB"))
        out["grace_hopper"] = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
    return {n: out[n] for n in names}


def face_window(box: Sequence[float], h: int, w: int, grow: float = 0.6) -> tuple[int, int, int, int]:
    """The box grown by ``grow`` x its longer side on each side, clipped, corners snapped outwards to
    the 8-px grid of the photo (so JPEG blocks of the window are blocks of the photo)."""
    g = grow * max(box[2] - box[0], box[3] - box[1])
    x1, y1 = max(0, int(box[0] - g)) // 8 * 8, max(0, int(box[1] - g)) // 8 * 8
    x2 = min(w, int(math.ceil((box[2] + g) / 8) * 8))
    y2 = min(h, int(math.ceil((box[3] + g) / 8) * 8))
    return x1, y1, x2, y2


# ---------------------------------------------------------------------------------------------
# the attack (a study loop: every variant is a switch here, so the product's engine is untouched)

@dataclass(frozen=True)
class Variant:
    """Switches of one variant (see the module docstring)."""

    name: str
    stop: bool
    di: bool
    feat: float
    dropout: float
    steps: int
    alpha: float

    @staticmethod
    def parse(spec: str) -> Variant:
        tokens = spec.split("+")
        known = {"shield", "push", "di", "feat", "dfa", "long"}
        if not tokens or tokens[0] not in ("shield", "push") or not set(tokens) <= known:
            raise SystemExit(f"variant must be shield or push followed by +di/+feat/+dfa/+long, got {spec!r}")
        long = "long" in tokens
        return Variant(spec, tokens[0] == "shield", "di" in tokens, 1.0 if "feat" in tokens else 0.0,
                       0.1 if "dfa" in tokens else 0.0, 150 if long else 60, 0.04 if long else 0.1)


def _affine_crops(crops: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """DI-FGSM's resize-and-pad plus alignment jitter, as one random affine per crop
    ``[N,3,S,S]``: shrink to r in [0.8, 1] (zero border, placed at random), shift +-4 % and rotate
    +-6 deg. Written here with ``affine_grid`` because the DI of :mod:`jndkit.attacks.parts` works on
    whole batches with one draw and nearest resizing, not per crop with rotation."""
    n = crops.shape[0]
    r = 0.8 + 0.2 * torch.rand(n, generator=gen)
    ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(6.0)
    room = 1.0 / r - 1.0  # normalised translation that keeps the shrunken crop inside the frame
    t = (torch.rand(n, 2, generator=gen) * 2 - 1) * (room[:, None] + 0.08)
    cos, sin = torch.cos(ang) / r, torch.sin(ang) / r
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(crops.dtype), list(crops.shape), align_corners=False)
    return F.grid_sample(crops, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _Hooks:
    """Forward hooks on the (shared, cached) surrogate: DFANet dropout on every convolution and a
    capture of the feature block; always removed on exit (the judges use the same network)."""

    def __init__(self, net: nn.Module, dropout: float, feature: str | None) -> None:
        self.handles: list[Any] = []
        self.features: list[torch.Tensor] = []
        self.dropout_on = False
        if dropout > 0:
            for m in net.modules():
                if isinstance(m, nn.Conv2d):
                    self.handles.append(m.register_forward_hook(
                        lambda _m, _i, out: F.dropout(out, dropout, training=True) if self.dropout_on else None))
        if feature is not None:
            mod = dict(net.named_modules())[feature]
            self.handles.append(mod.register_forward_hook(lambda _m, _i, out: self.features.append(out)))

    def __enter__(self) -> _Hooks:
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()


def attack_window(xw: torch.Tensor, bound: torch.Tensor, rec: Any, geometry: list[Any], v: Variant,
                  seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """Attack the face window ``xw`` ``[3,h,w]`` (8-bit values) against ``rec`` within ``|delta| <= bound``
    (``[3,h,w]``, whole 8-bit levels). Returns the quantized window and a record (surrogate distance
    on the quantized window, mean over the alignments; steps run)."""
    from jndkit.transforms import UploadStandIn, get_suite

    gen = torch.Generator().manual_seed(seed)
    stand_in = UploadStandIn(get_suite("social"))
    net = rec.net
    x0 = xw[None]
    w = xw.shape[-1]
    with torch.no_grad():
        ref = net(rec.crops(xw, geometry))  # [A,D] clean embedding per alignment
    delta = torch.zeros_like(x0)
    mom = torch.zeros_like(x0)
    need = rec.threshold + rec.kappa
    steps_run = 0
    with _Hooks(net, v.dropout, FEATURE_LAYER[rec.name] if v.feat > 0 else None) as hooks:
        for it in range(v.steps):
            steps_run = it + 1
            delta.requires_grad_(True)
            state = gen.get_state()
            xin = stand_in(x0 + delta, {}, gen)
            scale = xin.shape[-1] / w
            crops = rec.crops(xin[0].clamp(0, 1), geometry, scale)
            if v.di:
                aug_state = gen.get_state()
                crops = _affine_crops(crops, gen)
            hooks.features.clear()
            hooks.dropout_on = v.dropout > 0
            emb = net(crops)
            d = torch.linalg.vector_norm(emb - ref, dim=-1)
            loss = -(d / rec.threshold).mean()
            if v.feat > 0:
                f_adv = hooks.features[-1]
                after = gen.get_state()
                with torch.no_grad():  # the clean image through the same stand-in draw and crop jitter
                    gen.set_state(state)
                    xc = stand_in(x0, {}, gen)
                    cc = rec.crops(xc[0].clamp(0, 1), geometry, xc.shape[-1] / w)
                    if v.di:
                        gen.set_state(aug_state)
                        cc = _affine_crops(cc, gen)
                    hooks.features.clear()
                    hooks.dropout_on = False  # the clean reference without dropout
                    net(cc)
                    f_clean = hooks.features[-1]
                gen.set_state(after)
                rel = (f_adv - f_clean).pow(2).flatten(1).sum(1) / f_clean.pow(2).flatten(1).sum(1).clamp_min(1e-12)
                loss = loss - v.feat * rel.mean()
            hooks.dropout_on = False
            (g,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                mom = mom + g / g.abs().mean().clamp_min(1e-12)  # MI-FGSM, mu = 1
                delta = delta.detach() - v.alpha * bound[None] * mom.sign()  # descend the loss
                delta = (x0 + delta.clamp(-bound[None], bound[None])).clamp(0, 1) - x0
                if v.stop and (it + 1) % 3 == 0:
                    xq = torch.round((x0 + delta) * 255) / 255
                    dq = torch.linalg.vector_norm(net(rec.crops(xq[0], geometry)) - ref, dim=-1)
                    if float(dq.min()) >= need:
                        break
    with torch.no_grad():
        xq = (torch.round((x0 + delta) * 255) / 255)[0]
        dq = torch.linalg.vector_norm(net(rec.crops(xq, geometry)) - ref, dim=-1)
    return xq, {"steps_run": steps_run, "surrogate_window_distance": round(float(dq.mean()), 4)}


# ---------------------------------------------------------------------------------------------
# judges

class Judges:
    """The recognisers that judge a saved photo, each from scratch (fresh MTCNN detection)."""

    def __init__(self, det: Any) -> None:
        import dlib

        from jndkit.face.dlib_net import find_dlib_face_model

        folder = find_dlib_face_model().parent
        self.det = det
        self.hog = dlib.get_frontal_face_detector()
        self.sp = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
        self.rec = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))
        self.version = dlib.__version__

    def dlib_desc(self, x: torch.Tensor) -> np.ndarray | None:
        img = np.ascontiguousarray(torch.round(x * 255).to(torch.uint8).permute(1, 2, 0).numpy())
        dets = self.hog(img, 1)
        if not dets:
            return None
        return np.array(self.rec.compute_face_descriptor(img, self.sp(img, max(dets, key=lambda d: d.area()))))

    def distances(self, img: torch.Tensor, clean: torch.Tensor, face: Any) -> dict[str, dict[str, float | None]]:
        """``{judge: {"saved": d, UPLOAD: d}}`` for the ports (dlib, facenet_casia) and dlib-bin (None: no face)."""
        from jndkit.face.panel import verify_faces
        from jndkit.transforms import get_suite

        out: dict[str, dict[str, float | None]] = {}
        chk = verify_faces(img, clean, "dlib,facenet_casia", UPLOAD, detector=self.det, clean_faces=[face])
        for c in chk[0]["checks"]:
            out.setdefault(c["recogniser"], {})[c["transform"]] = c["distance"]
        ref = self.dlib_desc(clean)
        up = get_suite(UPLOAD).for_size(*img.shape[-2:])[0]
        out["dlib_bin"] = {}
        for key, im in (("saved", img), (UPLOAD, up.apply(img))):
            d = self.dlib_desc(im)
            out["dlib_bin"][key] = None if d is None or ref is None else round(float(np.linalg.norm(d - ref)), 4)
        return out


def dodged(d: float | None, judge: str) -> bool:
    return d is None or d >= THRESHOLDS[judge]


# ---------------------------------------------------------------------------------------------
# runs

def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_face_transfer.py")
    ap.add_argument("--samples", default=SAMPLES)
    ap.add_argument("--surrogates", default="dlib,facenet_casia")
    ap.add_argument("--variants", default="shield,push")
    ap.add_argument("--budgets", default="namm:0.75,namm:1,namm:1.5,namm:2,chou:1")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "face_transfer.jsonl"))
    ap.add_argument("--budget-seconds", type=float, default=1e9)
    ap.add_argument("--clean", action="store_true", help="only the clean photos after the upload (baseline)")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)

    from jndkit.face.panel import face_quality
    from jndkit.face.recognisers import get_recogniser
    from jndkit.face.victim import _default_detector
    from jndkit.perception import jnd_map

    torch.manual_seed(0)
    det = _default_detector()
    names = SAMPLES.split(",") if args.samples == "all" else [s for s in args.samples.split(",") if s]
    samples = load_samples(names, det)
    judges = Judges(det)
    out_path = Path(args.out)
    done = set()
    if out_path.exists():
        done = {(r["sample"], r.get("surrogate"), r.get("variant"), r.get("budget"))
                for r in map(json.loads, out_path.read_text().splitlines()) if r}
    meta = {"python": platform.python_version(), "torch": torch.__version__, "dlib": judges.version,
            "nproc": os.cpu_count(), "cpu": cpu_model(), "note": args.note}
    t_start = time.perf_counter()

    def emit(row: dict[str, Any]) -> None:
        row.update(meta, load_average=[round(v, 2) for v in os.getloadavg()])
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with out_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps({k: row[k] for k in row if k not in meta and k != "load_average"}), flush=True)

    for name, x in samples.items():
        faces = det.detect(x, min_prob=0.9)
        if not faces:
            print(f"{name}: no face found, skipped", flush=True)
            continue
        face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        h, w = x.shape[-2:]
        if args.clean:
            if (name, None, "clean", None) not in done:
                emit({"sample": name, "surrogate": None, "variant": "clean", "budget": None, "size": [h, w],
                      "distances": judges.distances(x, x, face)})
            continue
        x1, y1, x2, y2 = face_window(face.box, h, w)
        xw = x[:, y1:y2, x1:x2]
        from jndkit.face.detect import Face

        face_w = Face((face.box[0] - x1, face.box[1] - y1, face.box[2] - x1, face.box[3] - y1), face.prob,
                      face.landmarks - torch.tensor([float(x1), float(y1)]))
        maps: dict[str, torch.Tensor] = {}
        for sur in [s for s in args.surrogates.split(",") if s]:
            rec = get_recogniser(sur)
            geometry = rec.geometry(face_w, x2 - x1, y2 - y1, 5)
            for vspec in [v for v in args.variants.split(",") if v]:
                v = Variant.parse(vspec)
                for bspec in [b for b in args.budgets.split(",") if b]:
                    if (name, sur, vspec, bspec) in done:
                        continue
                    if time.perf_counter() - t_start > args.budget_seconds:
                        print(f"time budget spent; stopped before {name} {sur} {vspec} {bspec}", flush=True)
                        return 0
                    model, _, s = bspec.partition(":")
                    if model not in maps:
                        with torch.no_grad():
                            maps[model] = jnd_map(x[None], model)[0, :, y1:y2, x1:x2]
                    bound = torch.floor(maps[model] * float(s) * 255.0 + 1e-6) / 255.0
                    t0 = time.perf_counter()
                    xq, rec_info = attack_window(xw, bound, rec, geometry, v)
                    secs = time.perf_counter() - t0
                    xa = x.clone()
                    xa[:, y1:y2, x1:x2] = xq
                    from jndkit.images import decode_bytes, encode_image

                    saved = decode_bytes(encode_image(xa, "png"))  # the written file, read back
                    row: dict[str, Any] = {"sample": name, "surrogate": sur, "variant": vspec, "budget": bspec,
                                           "size": [h, w], "window": [x1, y1, x2, y2], "seconds": round(secs, 1),
                                           **rec_info, "quality": face_quality(x, saved, face.box),
                                           "distances": judges.distances(saved, x, face)}
                    emit(row)
    print(f"done in {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# tables

def table(path: str) -> str:
    """Markdown: the upload-only baseline per judge, then one line per (surrogate, variant, budget)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    out: list[str] = []
    clean = [r for r in rows if r["variant"] == "clean"]
    if clean:
        out += ["| judge | clean photo after x0.75+JPEG85: distance mean (max) | dodged |", "|---|---|---|"]
        for j in ("dlib", "facenet_casia", "dlib_bin"):
            ds = [r["distances"][j][UPLOAD] for r in clean]
            vals = [d for d in ds if d is not None]
            out.append(f"| {j} (>= {THRESHOLDS[j]}) | {statistics.mean(vals):.3f} ({max(vals):.3f}) "
                       f"| {sum(dodged(d, j) for d in ds)}/{len(ds)} |")
        out.append("")
    out += ["| surrogate | variant | budget | n | held-out judge: dodged file / after upload (mean d after upload) "
            "| dlib-bin: file / upload (mean d) | surrogate port after upload | face PSNR | above JND mean / median "
            "| CIEDE2000 mean | s mean |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    att = [r for r in rows if r["variant"] != "clean"]
    keys = list(dict.fromkeys((r["surrogate"], r["variant"], r["budget"]) for r in att))
    keys.sort(key=lambda k: (k[0], k[1], k[2].split(":")[0] != "chou", float(k[2].split(":")[1])))
    for sur, var, bud in keys:
        rs = [r for r in att if (r["surrogate"], r["variant"], r["budget"]) == (sur, var, bud)]
        n = len(rs)
        held = "facenet_casia" if sur == "dlib" else "dlib"

        def cell(j: str, rs: list[dict[str, Any]] = rs, n: int = n) -> str:
            f = sum(dodged(r["distances"][j]["saved"], j) for r in rs)
            u = sum(dodged(r["distances"][j][UPLOAD], j) for r in rs)
            ds = [r["distances"][j][UPLOAD] for r in rs if r["distances"][j][UPLOAD] is not None]
            return f"{f}/{n} / {u}/{n} ({statistics.mean(ds):.3f})" if ds else f"{f}/{n} / {u}/{n}"

        own = sum(dodged(r["distances"][sur][UPLOAD], sur) for r in rs)
        ps = [r["quality"]["psnr"] for r in rs if r["quality"]["psnr"] is not None]
        aj = [100 * r["quality"]["above_jnd"] for r in rs]
        out.append(f"| {sur} | {var} | {bud} | {n} | {held}: {cell(held)} | {cell('dlib_bin')} | {own}/{n} "
                   f"| {statistics.mean(ps):.2f} | {statistics.mean(aj):.2f} % / {statistics.median(aj):.2f} % "
                   f"| {statistics.mean(r['quality']['ciede2000_mean'] for r in rs):.2f} "
                   f"| {statistics.mean(r['seconds'] for r in rs):.1f} |")
    return "\n".join(out)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        print(table(sys.argv[2]))
        return 0
    return run(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
