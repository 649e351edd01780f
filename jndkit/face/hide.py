"""Hiding faces from detectors inside the human JND budget, judged after the upload suite.

:func:`hide_faces` hides every face of a photo from MTCNN (the detector it attacks) with jndkit's
``shield`` method: sign steps of ``alpha`` x a per-value budget ``floor(strength * JND * 255) / 255``
(the human JND map of the **whole** photo, NAMM by default, cropped: a map computed on the crop
alone would see its zero-padded border as edges and allow more there), through the upload suite's
differentiable stand-in (EOT) and momentum, on the logits of MTCNN's last nets at boxes about each
face (:class:`~jndkit.face.victim.FaceHideVictim`, :class:`~jndkit.face.goals.Hide`, as the dlib
mode's ``hide`` of :mod:`jndkit.face.strategy`). Only a crop about the faces is attacked
(:func:`~jndkit.face.boxes.region` with corners on a 64-px grid, so that x0.5 and x0.75 of the crop
fall on the same pixel and JPEG-block grid as the whole photo's) and pasted back. The engine's
``robust`` checks are the **real** upload transforms (Pillow) of the suite applied to the crop at
the whole photo's effective scale, so a run stops only once the 8-bit crop is hidden at its boxes
after each of them.

A face counts as hidden only when a fresh stock MTCNN (its own thresholds 0.6/0.7/0.7, no box of the
clean photo reused) finds no face over it in the saved photo **and** after every transform of the
suite applied to the whole photo (:func:`judge_hidden`); a round that fails adds the boxes stock
MTCNN handed its ONet over the face (on the saved photo and on each transform of it) and attacks the
clean crop again; a strength that fails after ``rounds`` rounds hands over to the next, larger one.

The held-out detectors (:mod:`jndkit.face.judges`: dlib's HOG and CNN detectors, never attacked) are
asked about the final result, per face and per transform, with their scores; they decide success
only when ``require_held_out`` is set (see :class:`HideResult`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..transforms import get_suite
from ..transforms.upload import UploadTransform
from .boxes import int_box, jitter_box, over, region, same_face
from .detect import Face, FaceDetector
from .goals import DEFAULT_HIDE_KAPPA, Hide
from .judges import HELD_OUT, Detection, HeldOutDetector, best_over, held_out_faces, load_judges
from .victim import FaceHideVictim

__all__ = [
    "HIDE_GRID",
    "HIDE_STRENGTHS",
    "JUDGE_MARGIN",
    "HideResult",
    "ScaledHideVictim",
    "crop_transforms",
    "hide_faces",
    "jnd_bound",
    "judge_held_out",
    "judge_hidden",
]

HIDE_STRENGTHS = (0.5, 0.75, 1.0)
"""Budgets tried in turn, as multiples of the human JND map (``invisible``, ``subtle``, ``strong``)."""

HIDE_GRID = 64
"""Crop corners lie on this grid: x0.5 and x0.75 of the crop start on whole pixels of the resized
photo, on its 16-px JPEG (4:2:0 MCU) grid."""

JUDGE_MARGIN = 0.5
"""The held-out detectors look at the face box grown by this share of its side on each side (dlib's
CNN needs 16-120 s on a whole 1-12 MP photo on one core, 2.5-3.5 s on this region)."""

HIDE_JITTER = 0.06
"""Relative shift and scale of the extra boxes about each face (as the dlib mode's hide)."""


def jnd_bound(image: torch.Tensor, strength: float, model: str = "namm") -> torch.Tensor:
    """``floor(strength * JND(image) * 255 + 1e-6) / 255``: the per-value budget ``[3,H,W]`` (8-bit levels
    / 255) of the whole photo ``image`` ``[3,H,W]`` (as :func:`jndkit.attacks.transfer.jnd_budget`)."""
    from ..perception import jnd_map

    if strength <= 0:
        raise InputError(f"strength must be > 0, got {strength}")
    with torch.no_grad():
        jnd = jnd_map(image[None].clamp(0, 1), model)[0]
    return torch.floor(jnd * float(strength) * 255.0 + 1e-6) / 255.0


def crop_transforms(suite: str, height: int, width: int) -> list[tuple[UploadTransform, UploadTransform]]:
    """Per transform of ``suite`` that applies to a ``height`` x ``width`` photo: the transform and its
    counterpart for a crop of that photo (:meth:`~jndkit.transforms.upload.UploadTransform.for_crop_of`:
    the same codec at the photo's resize factor; a long-side resize of the photo is a plain scale of
    the crop)."""
    return [(t, t.for_crop_of(height, width)) for t in get_suite(suite).for_size(height, width)]


class ScaledHideVictim(nn.Module):
    """:class:`~jndkit.face.victim.FaceHideVictim` whose boxes (given for a ``width``-px wide crop) are
    scaled to the width of each input, so that a resized input (the upload stand-in, a real x0.75)
    is judged at the same place. ``[B,3,h,w]`` -> ``[B,M]`` logit margins; ``per_sample``."""

    per_sample = True

    def __init__(self, detector: FaceDetector, boxes: Sequence[torch.Tensor], width: int,
                 stages: tuple[str, ...] = ("onet",)) -> None:
        super().__init__()
        self.detector, self.boxes, self.width, self.stages = detector, [b.double() for b in boxes], int(width), stages

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> ScaledHideVictim:
        from .victim import _pick

        return ScaledHideVictim(self.detector, [self.boxes[i] for i in _pick(len(self.boxes), index)], self.width,
                                self.stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.new_zeros(0, 0)
        s = x.shape[-1] / self.width
        inner = FaceHideVictim(self.detector, [b * s for b in self.boxes], self.stages)
        out: torch.Tensor = inner(x.clamp(0.0, 1.0))
        return out


def _variants(image: torch.Tensor, suite: str) -> list[tuple[str, float, torch.Tensor]]:
    """``(name, scale, image)``: the saved image and every transform of ``suite`` applied to it."""
    h, w = image.shape[-2:]
    out = [("saved", 1.0, image)]
    for t in get_suite(suite).for_size(h, w):
        y = t.apply(image)
        out.append((t.name, y.shape[-1] / w, y))
    return out


def judge_hidden(saved: torch.Tensor, faces: Sequence[Face], suite: str = "social", *,
                 detector: FaceDetector | None = None,
                 variants: list[tuple[str, float, torch.Tensor]] | None = None) -> list[dict[str, Any]]:
    """From scratch: is each clean face still found by stock MTCNN in ``saved`` ``[3,H,W]`` and after each
    transform of ``suite``? Per face ``{"hidden": bool, "checks": [{transform, found, prob}]}``
    (``prob``: the best MTCNN probability over the face, stock threshold 0.7, ``None`` if none)."""
    from .victim import _default_detector

    det = detector or _default_detector()
    variants = variants if variants is not None else _variants(saved, suite)
    out: list[dict[str, Any]] = [{"hidden": True, "checks": []} for _ in faces]
    for name, scale, img in variants:
        found = det.detect(img)
        for i, f in enumerate(faces):
            g = same_face([v * scale for v in f.box], found)
            out[i]["checks"].append({"transform": name, "found": g is not None,
                                     "prob": None if g is None else round(g.prob, 6)})
            out[i]["hidden"] = bool(out[i]["hidden"] and g is None)
    return out


def _judge_region(box: Sequence[float], scale: float, w: int, h: int) -> tuple[int, int, int, int]:
    bw, bh = box[2] - box[0], box[3] - box[1]
    g = [box[0] - JUDGE_MARGIN * bw, box[1] - JUDGE_MARGIN * bh, box[2] + JUDGE_MARGIN * bw, box[3] + JUDGE_MARGIN * bh]
    return int_box([v * scale for v in g], w, h)


def _judges(judges: Sequence[HeldOutDetector] | Sequence[str] | str | None) -> list[HeldOutDetector]:
    """Held-out detectors from names (:func:`~jndkit.face.judges.load_judges`) or as given."""
    if judges is None or isinstance(judges, str):
        return load_judges(judges)
    items = list(judges)
    if all(isinstance(j, HeldOutDetector) for j in items):
        return [j for j in items if isinstance(j, HeldOutDetector)]
    return load_judges([str(j) for j in items])


def _look(img: torch.Tensor, scale: float, f: Face, j: HeldOutDetector) -> tuple[list[Detection], int, int]:
    """``j``'s windows in the region of ``img`` (resized by ``scale``) about face ``f``, and the region's corner."""
    x1, y1, x2, y2 = _judge_region(f.box, scale, img.shape[-1], img.shape[-2])
    return held_out_faces(img[:, y1:y2, x1:x2], j), x1, y1


def judge_held_out(saved: torch.Tensor, clean: torch.Tensor, faces: Sequence[Face], suite: str = "social",
                   judges: Sequence[HeldOutDetector] | Sequence[str] | str | None = HELD_OUT, *,
                   variants: list[tuple[str, float, torch.Tensor]] | None = None) -> list[dict[str, Any]]:
    """Each held-out detector on each clean face, in the clean photo and in ``saved`` and after each transform.

    The detector looks at the face box grown by :data:`JUDGE_MARGIN` per side. Its clean box is its own
    best window over the MTCNN face in ``clean``; a face counts as found in a variant when a reported
    detection lies over that box (:func:`~jndkit.face.boxes.over`).

    Returns:
        per face ``{detector: {"clean_found", "clean_score", "hidden" (never found after; ``None`` when
        the clean photo's face is not found either), "checks": [{transform, found, score}]}}``;
        ``score``: the best window's score over the face (HOG: SVM value, found above 0; CNN: MMOD
        confidence of a reported detection, ``None`` when none).
    """
    js = _judges(judges)
    variants = variants if variants is not None else _variants(saved, suite)
    out: list[dict[str, Any]] = []
    for f in faces:
        per: dict[str, Any] = {}
        for j in js:
            dets, ox, oy = _look(clean, 1.0, f, j)
            b = best_over([f.box[0] - ox, f.box[1] - oy, f.box[2] - ox, f.box[3] - oy], dets)
            clean_found = b is not None and b.found
            ref = ([b.box[0] + ox, b.box[1] + oy, b.box[2] + ox, b.box[3] + oy] if clean_found and b is not None
                   else list(f.box))
            checks = []
            for name, scale, img in variants:
                dets, ox, oy = _look(img, scale, f, j)
                local = [ref[0] * scale - ox, ref[1] * scale - oy, ref[2] * scale - ox, ref[3] * scale - oy]
                hit = best_over(local, dets)
                checks.append({"transform": name, "found": bool(hit is not None and hit.found),
                               "score": None if hit is None else round(hit.score, 4)})
            per[j.name] = {"clean_found": clean_found, "clean_score": None if b is None else round(b.score, 4),
                           "hidden": (not any(c["found"] for c in checks)) if clean_found else None,
                           "checks": checks}
        out.append(per)
    return out


@dataclass
class HideResult:
    """Result of :func:`hide_faces` for one photo.

    Attributes:
        image: ``[3,H,W]`` the 8-bit result (the clean photo when no face was found).
        faces: the clean faces (MTCNN, probability >= ``min_prob``).
        strength: the budget of ``image`` (x the JND map), ``None`` without a face.
        jnd: the JND map of the budget.
        success: every face hidden from MTCNN in the saved photo and after every transform (and, with
            ``require_held_out``, from every held-out detector that finds it on the clean photo).
        mtcnn: per face :func:`judge_hidden`'s verdict; held_out: per face :func:`judge_held_out`'s
            (empty without judges); quality: per face :func:`~jndkit.face.panel.face_quality`.
        rounds: engine runs of the last strength; crop: the attacked crop ``(x1, y1, x2, y2)``;
        attempts: per strength tried ``{strength, rounds, hidden (MTCNN), engine_success}``; seconds.
    """

    image: torch.Tensor
    faces: list[Face]
    strength: float | None
    jnd: str
    success: bool
    engine_success: bool
    mtcnn: list[dict[str, Any]]
    held_out: list[dict[str, Any]]
    quality: list[dict[str, float | None]]
    rounds: int
    crop: tuple[int, int, int, int] | None
    attempts: list[dict[str, Any]]
    seconds: float


def _new_boxes(variants: list[tuple[str, float, torch.Tensor]], faces: Sequence[Face], verdict: list[dict[str, Any]],
               have: list[list[torch.Tensor]], det: FaceDetector) -> int:
    """Add to ``have`` (per face, boxes in photo pixels) the ONet boxes stock MTCNN tried over each face
    still found, in each variant it was found in; returns how many were added."""
    added = 0
    for k, (_name, scale, img) in enumerate(variants):
        if all(not v["checks"][k]["found"] for v in verdict):
            continue
        for b in det.candidates(img)["onet"].tolist():
            box = torch.tensor(b, dtype=torch.float64) / scale
            for i, f in enumerate(faces):
                if verdict[i]["checks"][k]["found"] and over(f.box, box.tolist()):
                    if all(float((box - h).abs().max()) >= 0.5 for h in have[i]):
                        have[i].append(box)
                        added += 1
                    break
    return added


def hide_faces(
    image: torch.Tensor,
    strengths: Sequence[float] = HIDE_STRENGTHS,
    steps: int = 60,
    suite: str = "social",
    seed: int = 0,
    *,
    jnd: str = "namm",
    judges: Sequence[HeldOutDetector] | Sequence[str] | str | None = HELD_OUT,
    require_held_out: bool = False,
    rounds: int = 3,
    alpha: float = 0.1,
    kappa: float = DEFAULT_HIDE_KAPPA,
    stages: tuple[str, ...] = ("rnet", "onet"),
    min_prob: float = 0.9,
    detector: FaceDetector | None = None,
) -> HideResult:
    """Hide every face of ``image`` ``[3,H,W]`` (8-bit values in [0,1]) from MTCNN inside the JND budget.

    Args:
        strengths: budgets tried in turn (x the ``jnd`` map); the first whose result MTCNN no longer
            finds after every transform of ``suite`` is kept (else the last one, ``success`` False).
        steps: sign steps per engine run; suite: the upload suite (``social``, ``none``, a comma list).
        seed: the engine's seed (same seed, same output).
        jnd: human JND map of the budget (``namm``, ``chou``, ...; :data:`jndkit.perception.JND_MODELS`).
        judges: held-out detectors asked about the final result (``None``: none).
        require_held_out: success also needs every held-out detector to lose every face it finds on the
            clean photo (then the ladder goes on while they still find one).
        rounds: engine runs per strength (each later one adds the boxes a fresh MTCNN tried).
        alpha: step as a share of the budget; kappa: logit margin below MTCNN's thresholds.
        stages: MTCNN nets attacked at the boxes (``pnet`` is costly); min_prob: faces to hide.
        detector: MTCNN (default: stock facenet-pytorch, loaded once).

    Raises:
        InputError: a bad image, strength, suite or judge name.
    """
    from ..attacks import get_method, run_attack
    from ..attacks.transfer import fixed_budget
    from ..perception.jnd import JND_MODELS
    from .panel import face_quality
    from .victim import _default_detector

    if image.ndim != 3 or image.shape[0] != 3:
        raise InputError(f"image must have shape [3,H,W], got {list(image.shape)}")
    if not strengths or any(s <= 0 for s in strengths):
        raise InputError(f"strengths must be > 0, got {list(strengths)}")
    if jnd not in JND_MODELS:
        raise InputError(f"JND model must be one of {', '.join(JND_MODELS)}, got {jnd!r}")
    if rounds < 1 or steps < 1:
        raise InputError(f"rounds and steps must be >= 1, got {rounds} and {steps}")
    get_suite(suite)
    js = _judges(judges)
    t0 = time.perf_counter()
    det = detector or _default_detector()
    faces = det.detect(image, min_prob=min_prob)
    if not faces:
        return HideResult(image, [], None, jnd, False, False, [], [], [], 0, None, [], time.perf_counter() - t0)
    h, w = image.shape[-2:]
    pairs = crop_transforms(suite, h, w)
    clean_variants = _variants(image, suite)
    # the boxes each face is attacked at: the MTCNN box, its jittered copies, and every ONet box stock
    # MTCNN tries over it on the clean photo and after each upload transform
    base: list[list[torch.Tensor]] = [[torch.tensor(b, dtype=torch.float64) for b in jitter_box(f.box, HIDE_JITTER)]
                                      for f in faces]
    _new_boxes(clean_variants, faces, [{"checks": [{"found": True}] * len(clean_variants)}] * len(faces), base, det)
    attempts: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    for s in strengths:
        bound = jnd_bound(image, s, jnd)
        have = [list(b) for b in base]
        for rnd in range(1, rounds + 1):
            rects = [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for bs in have for b in bs]
            x1, y1, x2, y2 = region(rects, w, h, grid=HIDE_GRID)
            crop = image[None, :, y1:y2, x1:x2].contiguous()
            offset = torch.tensor([x1, y1, x1, y1], dtype=torch.float64)
            victim = ScaledHideVictim(det, [torch.stack([b - offset for bs in have for b in bs])], x2 - x1, stages)
            method = get_method("shield", strength=s, steps=float(steps), max_iter=steps, alpha=alpha, grey=0.0,
                                ti_sigma=0.0)
            method = dataclasses.replace(method, prepare=fixed_budget(bound[None, :, y1:y2, x1:x2]))
            res = run_attack(method, victim, Hide(kappa=kappa), crop, seed=seed, robust=[c.apply for _, c in pairs])
            x = image.clone()
            x[:, y1:y2, x1:x2] = res.x_adv[0]
            variants = _variants(x, suite)
            verdict = judge_hidden(x, faces, suite, detector=det, variants=variants)
            ok = all(v["hidden"] for v in verdict)
            last = {"strength": s, "x": x, "ok": ok, "engine": bool(res.success[0]), "verdict": verdict, "rounds": rnd,
                    "crop": (x1, y1, x2, y2), "variants": variants, "held": []}
            if ok or rnd == rounds or _new_boxes(variants, faces, verdict, have, det) == 0:
                break
        if js and (require_held_out or ok):
            last["held"] = judge_held_out(x, image, faces, suite, js, variants=last["variants"])
        held_ok = all(d["hidden"] is not False for per in last["held"] for d in per.values())
        attempts.append({"strength": s, "rounds": last["rounds"], "hidden": ok, "engine_success": last["engine"],
                         **({"held_out_hidden": held_ok} if last["held"] else {})})
        if ok and (held_ok or not require_held_out):
            break
    x, held = last["x"], last["held"]
    if js and not held:
        held = judge_held_out(x, image, faces, suite, js, variants=last["variants"])
    held_ok = all(d["hidden"] is not False for per in held for d in per.values())
    success = bool(last["ok"]) and (held_ok or not require_held_out)
    quality = [face_quality(image, x, f.box) for f in faces]
    return HideResult(x, faces, last["strength"], jnd, success, last["engine"], last["verdict"], held, quality,
                      last["rounds"], last["crop"], attempts, time.perf_counter() - t0)
