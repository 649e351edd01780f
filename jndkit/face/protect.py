"""Protect the faces in photos, at full resolution, and prove it on the saved file.

This is the library behind ``jndkit protect --task face``. For each photo:

1. decode it at its own size and find its faces with stock MTCNN (probability >= ``min_prob``);
   a photo without one is reported as ``no-face`` (nothing is written);
2. attack **the whole photo as one sample**: the victim returns the descriptors of all its faces
   (:class:`FacesVictim`) or their MTCNN face logits (:class:`FaceHideVictim`), and the goal asks
   every face at once (:class:`~jndkit.face.goals.Dodge`, :class:`~jndkit.face.goals.Impersonate`,
   :class:`~jndkit.face.goals.Hide`), so one image protects all faces; success is decided by the
   engine on the 8-bit image (and after re-encoding, for JPEG/WebP output or ``robust``);
3. check the result **from scratch** as a third party would: encode, decode, detect again with stock
   MTCNN (no box or landmark of the clean photo is reused), align, embed, compare. A face that the
   fresh alignment still recognises (or still finds, for hiding) starts another *round*: its new
   alignment (for hiding: every box stock MTCNN handed its last net over the face) joins the victim
   and the photo is attacked again from the clean image, up to ``rounds`` times;
4. write the photo atomically, **re-read the written file** and repeat the check of step 3: the
   record's ``success`` is that re-check.

Goals (``goal=``): ``dodge`` (no face recognised as itself: without a gallery the reference is each
face's clean descriptor, with one the gallery identity it matches), ``impersonate:NAME`` (every face
recognised as gallery identity NAME), ``hide`` (MTCNN finds none of the faces).

Hiding works on logits, not probabilities (a clear face's softmax probability is within 1e-6 of 1,
where its gradient vanishes): ONet's face logit is pushed below ``log(0.7/0.3) - kappa`` on the
boxes about each face (the MTCNN box, 26 shifted and scaled copies, and every box stock MTCNN hands
its ONet on the clean photo and on each round's result). Measured on obama.jpg with ``ddn``: stock
MTCNN no longer finds the face after 6 rounds (:data:`HIDE_ROUNDS` allows 8), at 44.4 dB over the
photo and 33.7 dB over the face box; asking PNet's windows or RNet as well cost far more (PNet's coarsest windows see the face
blurred to 12 px, so only low-frequency changes move them).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__, losses
from ..attacks import AttackResult, Method, get_method, run_attack
from ..errors import ImageError, InputError, JndkitError, OutputError
from ..goals import Goal
from ..images import load_image, output_path, quantize, save_image
from ..protect import parse_robust, prepare_run, reencode, write_json_atomic
from .align import ChipDetails, extract_chips, face_chip_details
from .detect import Face, FaceDetector
from .dlib_net import DlibFaceNet
from .goals import (
    DEFAULT_FACE_KAPPA,
    DEFAULT_HIDE_KAPPA,
    Dodge,
    Hide,
    Impersonate,
    stack_references,
)
from .victim import (
    SAME_PERSON_DISTANCE,
    _default_detector,
    _default_net,
    build_gallery,
    embed_faces,
)

__all__ = [
    "FACE_PARAMS",
    "FaceHideVictim",
    "FaceProtection",
    "FaceProtector",
    "FaceRecord",
    "FacesVictim",
    "face_method",
    "parse_face_goal",
    "protect_face_paths",
    "summarise",
]

ProgressFn = Callable[[int, int, dict[str, Any]], None]

#: ``levels`` parameters for faces when no preset is named: 1 % of the values per step, up to 4 levels.
FACE_LEVELS = {"fraction": 0.01, "max_levels": 4.0}

#: Parameters of the methods on face goals when no preset is named. The classifier defaults move a
#: face descriptor far too little: a descriptor's gradient per pixel value is ~3e-4, against ~1 for
#: an ImageNet cross-entropy. Measured on obama.jpg (dodge, kappa 0.15, jitter 4, one round, our check):
#:
#: * ``levels``: see :data:`FACE_LEVELS`;
#: * ``mnd`` lr 4 (seed 001's weights): reached at K = 124, 39.5 dB over the face box; lr 2 had not
#:   reached the margin after 150 iterations, lr 10 reached it at K = 21 with 37.6 dB; the paper's
#:   1e-3 does not move the image;
#: * ``jnd`` alpha 0.04 and lambda2 0.5: K = 19, 41.0 dB; with the paper's lambda2 = 10 the l2 term
#:   holds every value within about 0.4 level (distance 0.25 after 100 iterations);
#: * ``hvs`` lr 1 and delta -500 (four runs, beta 1500, 1000, 500, 0, instead of 31; ~0.4-0.75 s per
#:   iteration on one core here); with the classifier's lr 0.01 no try moves the image. Dodging with
#:   kappa 0.05, 50 iterations per run, judged by dlib on the saved file (obama3 / obama): lr 10
#:   dodged at 14.2 / 21.2 dB over the face box (single steps of up to a full level range where the
#:   descriptor's gradient peaks), lr 1 at 42.0 / 42.5 dB (144 / 181 iterations), lr 0.5 at 44.5 /
#:   43.7 dB but not within the 200 iterations of one round on obama3 (3 rounds, dlib 0.59: not
#:   dodged).
FACE_PARAMS: dict[str, dict[str, float]] = {
    "ddn": {"refine": 100.0},
    "levels": FACE_LEVELS,
    "mnd": {"lr": 4.0},
    "jnd": {"alpha": 0.04, "lambda2": 0.5},
    "hvs": {"lr": 1.0, "delta": -500.0},
}

#: Safety margin of ``dodge`` without a gallery (the face's own clean descriptor is the reference).
#: Other photos of the same person lie 0.33-0.43 from it, so it must also move far enough for them
#: not to match. Measured with ``ddn`` on obama, obama2 and obama3 (dlib's own pipeline on the saved
#: PNG, distance to the clean photo / to the nearest other Obama photo): kappa 0.05 gave 0.630-0.640 /
#: 0.669-0.728 at 42.8-43.9 dB over the face box, kappa 0.10 gave 0.668-0.722 / 0.717-0.754 at
#: 41.9-43.1 dB. (Before each alignment was measured from its own clean descriptor and the chip
#: scale was corrected, kappa 0.05 had left obama.jpg 0.59 from obama2.jpg, and 0.15 was used.)
SELF_DODGE_KAPPA = 0.05

#: Safety margin of ``impersonate``. Measured with ``ddn`` on the 12 benchmark samples (dlib's own
#: pipeline on the saved PNG; docs/face.md): kappa 0.05 impersonated 10/12 at 47.76 dB over the face
#: box (dlib 0.605 and 0.606 on the two failures), 0.08 12/12 at 46.97 dB (dlib <= 0.570, also after
#: JPEG-90), 0.10 12/12 at 46.51 dB.
IMPERSONATE_KAPPA = 0.08

#: Padding entry of :class:`FaceHideVictim` (a logit margin far below any threshold).
HIDE_PAD = -100.0

#: PNet windows of :class:`FaceHideVictim` come from the face box grown by this fraction per side.
HIDE_GROW = 0.1

#: MTCNN nets that the ``hide`` goal pushes below their thresholds (see :class:`FaceProtector`).
HIDE_STAGES: tuple[str, ...] = ("onet",)

#: Engine runs per photo at most, unless ``rounds`` is given: each run adds the boxes or alignments
#: that a fresh detection of its result shows. Hiding obama.jpg took 6 rounds with ``ddn``.
DEFAULT_ROUNDS = 3
HIDE_ROUNDS = 8

#: Relative shift and scale of the boxes about each face that ``hide`` attacks (:func:`_box_jitter`).
HIDE_JITTER = 0.06

#: A detection of the protected photo belongs to a clean face when their boxes overlap by this IoU
#: (or its centre lies inside the clean box).
SAME_FACE_IOU = 0.3


# ------------------------------------------------------------------------------------------------
# Methods on embedding and detector goals
# ------------------------------------------------------------------------------------------------
def _adversarial_or_goal_loss(ctx: Any) -> torch.Tensor:
    """Seed 001's adversarial loss on a class goal; the goal's own loss on any other goal."""
    n = ctx.outputs.shape[1] if ctx.outputs.ndim >= 2 else 0
    if ctx.goal.weights(n) is None:
        return ctx.goal.loss(ctx.outputs)
    return losses.term_mnd_adversarial(ctx)


def face_method(method: Method) -> Method:
    """``method`` with every loss term that needs class weights replaced by the goal's own loss.

    Seed 001's adversarial loss (``mnd``) is written on class scores (``<y, softmax(u) + u>``); face
    goals (:class:`~jndkit.face.goals.Dodge`, :class:`~jndkit.face.goals.Impersonate`,
    :class:`~jndkit.face.goals.Hide`) have no classes, so on them the term falls back to
    ``goal.loss`` (minus the distance, the distance, the logits above threshold). On class goals
    the method is unchanged. :class:`FaceProtector` applies it to every method.
    """
    terms = tuple((k, _adversarial_or_goal_loss if t is losses.term_mnd_adversarial else t)
                  for k, t in method.loss_terms)
    if terms == method.loss_terms:
        return method
    return dataclasses.replace(method, loss_terms=terms)


# ------------------------------------------------------------------------------------------------
# Victims with per-photo state (the engine indexes them with ``victim[idx]``)
# ------------------------------------------------------------------------------------------------
def _pick(n: int, index: torch.Tensor | slice | Sequence[int] | int) -> list[int]:
    idx = list(range(n))
    if isinstance(index, torch.Tensor):
        flat = index.nonzero().flatten() if index.dtype == torch.bool else index.flatten()
        return [idx[int(i)] for i in flat]
    if isinstance(index, slice):
        return idx[index]
    if isinstance(index, int):
        return [idx[index]]
    return [idx[int(i)] for i in index]


class FacesVictim(nn.Module):
    """Photos ``[B,3,H,W]`` in [0,1] -> descriptors of all their faces ``[B,F,128]``, differentiable.

    Each photo holds ``F`` face alignments (the same number for every photo of a batch): chips are
    sampled from the full-resolution photo at fixed geometry (:func:`~jndkit.face.align.extract_chips`)
    and embedded by dlib's network in one batch. Several alignments of the same face are allowed
    (the protection adds the alignment a fresh detection finds, so the goal holds for both).

    Args:
        net: the recogniser (default: dlib's network, loaded once).
        details: per photo, a list of :class:`~jndkit.face.align.ChipDetails`, or of
            :class:`~jndkit.face.detect.Face` (MTCNN landmarks).
        dlib_rounding: emulate dlib's 8-bit truncation inside the alignment (straight-through).

    ``per_sample`` is true: ``victim[idx]`` is the victim of a sub-batch (the engine uses it).
    """

    per_sample = True

    def __init__(self, net: DlibFaceNet | None, details: Sequence[Sequence[ChipDetails | Face]], *,
                 dlib_rounding: bool = False) -> None:
        super().__init__()
        self.net = net if net is not None else _default_net()
        rows = [[d if isinstance(d, ChipDetails) else face_chip_details(d.landmarks, "mtcnn") for d in photo]
                for photo in details]
        counts = {len(r) for r in rows}
        if len(counts) > 1 or 0 in counts:
            raise InputError(f"every photo needs the same number (>= 1) of faces, got {sorted(len(r) for r in rows)}")
        self.details = rows
        self.dlib_rounding = dlib_rounding

    @property
    def faces_per_photo(self) -> int:
        return len(self.details[0]) if self.details else 0

    def __len__(self) -> int:
        return len(self.details)

    def __getitem__(self, index: torch.Tensor | slice | Sequence[int] | int) -> "FacesVictim":
        return FacesVictim(self.net, [self.details[i] for i in _pick(len(self.details), index)],
                           dlib_rounding=self.dlib_rounding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[0] != len(self.details):
            raise InputError(f"victim holds faces for {len(self.details)} photos, got a batch of shape {list(x.shape)}; "
                             "use victim[index]")
        f = self.faces_per_photo
        if x.shape[0] == 0:
            return x.new_zeros(0, 0, 128)
        chips = torch.cat([extract_chips(x[b : b + 1].expand(f, -1, -1, -1), self.details[b],
                                         dlib_rounding=self.dlib_rounding) for b in range(x.shape[0])])
        return self.net(chips).view(x.shape[0], f, -1)


class FaceHideVictim(nn.Module):
    """Photos ``[B,3,H,W]`` -> MTCNN face logits minus their thresholds ``[B,M]``, differentiable.

    For each fixed box, the entries are (see :meth:`~jndkit.face.detect.FaceDetector.face_logits`)
    the logit of **every** PNet window whose centre lies in the box grown by ``grow`` (all pyramid
    scales), then RNet's and ONet's logit of the box's crop, each minus the logit of MTCNN's
    threshold for that net (``log(t/(1-t))``: an entry is negative exactly when the net's probability
    is below its threshold). Logits, not probabilities: a clear face has PNet probability 1.0 in
    float32, where the softmax's gradient is zero; the logit's is not. Every PNet window is an
    entry of its own (not their maximum), so that :class:`~jndkit.face.goals.Hide`'s loss pushes all
    the windows still above the threshold down at once. Photos with fewer entries than the batch's
    most are padded with :data:`HIDE_PAD`. The goal is :class:`~jndkit.face.goals.Hide`.

    Args:
        detector: the MTCNN detector (its thresholds define the margins).
        boxes: ``[N,4]`` boxes ``(x1,y1,x2,y2)`` shared by every photo, or per photo a list of ``[N_b,4]``
            tensors or of :class:`~jndkit.face.detect.Face`.
        stages: MTCNN nets to ask (default all three; PNet's pyramid costs about 1 s per megapixel
            on one CPU core for the forward and backward pass, RNet and ONet a few ms per face).
        grow: PNet windows are taken from the box grown by this fraction of its side on each side
            (a window just outside the box can still give a candidate over the face).

    ``per_sample`` is true when boxes are given per photo (then ``victim[idx]`` selects photos).
    """

    def __init__(self, detector: FaceDetector, boxes: torch.Tensor | Sequence[torch.Tensor | Sequence[Face]],
                 stages: tuple[str, ...] = ("pnet", "rnet", "onet"), grow: float = HIDE_GROW) -> None:
        super().__init__()
        unknown = set(stages) - {"pnet", "rnet", "onet"}
        if not stages or unknown:
            raise InputError(f"stages must be a non-empty subset of pnet, rnet, onet, got {stages}")
        if grow < 0:
            raise InputError(f"grow must be >= 0, got {grow}")
        self.detector = detector
        self.stages = tuple(s for s in ("pnet", "rnet", "onet") if s in stages)
        self.grow = float(grow)
        self.per_sample = not isinstance(boxes, torch.Tensor)
        if isinstance(boxes, torch.Tensor):
            self.boxes: list[torch.Tensor] | torch.Tensor = self._as_boxes(boxes)
        else:
            self.boxes = [self._as_boxes(b) for b in boxes]

    @staticmethod
    def _as_boxes(b: torch.Tensor | Sequence[Face]) -> torch.Tensor:
        t = (torch.tensor([f.box for f in b], dtype=torch.float64) if not isinstance(b, torch.Tensor)
             else b.detach().to("cpu", torch.float64))
        t = t.reshape(-1, 4)
        if t.shape[0] == 0:
            raise InputError("FaceHideVictim needs at least one box per photo")
        return t

    def __len__(self) -> int:
        return len(self.boxes) if isinstance(self.boxes, list) else 1

    def __getitem__(self, index: torch.Tensor | slice | Sequence[int] | int) -> "FaceHideVictim":
        if not isinstance(self.boxes, list):
            return self
        return FaceHideVictim(self.detector, [self.boxes[i] for i in _pick(len(self.boxes), index)], self.stages,
                              self.grow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise InputError(f"x must have shape [B,3,H,W], got {list(x.shape)}")
        if isinstance(self.boxes, list) and len(self.boxes) != x.shape[0]:
            raise InputError(f"victim holds boxes for {len(self.boxes)} photos, got a batch of {x.shape[0]}; "
                             "use victim[index]")
        rows = []
        for b in range(x.shape[0]):
            boxes = self.boxes[b] if isinstance(self.boxes, list) else self.boxes
            logits = self.detector.face_logits(x[b : b + 1], boxes, stages=self.stages, grow=self.grow)
            rows.append(torch.cat(logits.margins(self.stages)))
        if not rows:
            return x.new_zeros(0, 0)
        width = max(r.numel() for r in rows)
        return torch.stack([torch.cat([r, r.new_full((width - r.numel(),), HIDE_PAD)]) for r in rows])


# ------------------------------------------------------------------------------------------------
# Goals from their CLI spelling
# ------------------------------------------------------------------------------------------------
def parse_face_goal(spec: str) -> tuple[str, str | None]:
    """``dodge`` / ``hide`` / ``impersonate:NAME`` -> ``(kind, name)``."""
    s = (spec or "").strip()
    low = s.lower()
    if low in ("dodge", "hide"):
        return low, None
    if low.startswith("impersonate:"):
        name = s.split(":", 1)[1].strip()
        if not name:
            raise InputError("impersonate needs a gallery identity: impersonate:NAME")
        return "impersonate", name
    raise InputError(f"unknown face goal {spec!r}; use dodge, impersonate:NAME or hide")


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _over(clean_box: Sequence[float], box: Sequence[float]) -> bool:
    """``box`` lies over the clean face: IoU >= 0.3, or its centre inside the clean box."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    inside = clean_box[0] <= cx <= clean_box[2] and clean_box[1] <= cy <= clean_box[3]
    return inside or _iou(clean_box, box) >= SAME_FACE_IOU


def _same_face(clean_box: Sequence[float], found: list[Face]) -> Face | None:
    """The detection (if any) that is the clean face again: best IoU >= 0.3, or centre inside the box."""
    best, best_iou = None, 0.0
    for f in found:
        iou = _iou(clean_box, f.box)
        if _over(clean_box, f.box) and (best is None or iou > best_iou):
            best, best_iou = f, iou
    return best


def _jitter(lm: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The landmarks and up to 4 nearby alignments: shifted by +-3 % of the eye distance along the
    diagonal, scaled by 1.04 and 0.96 about their centre (what another detector's landmarks differ by)."""
    lm = lm.detach().float()
    c = lm.mean(dim=0)
    d = 0.03 * float(torch.linalg.vector_norm(lm[1] - lm[0]))
    shift = torch.tensor([d, d])
    return [lm, lm + shift, lm - shift, c + (lm - c) * 1.04, c + (lm - c) * 0.96][: 1 + n]


def _box_jitter(box: Sequence[float], shift: float) -> list[tuple[float, float, float, float]]:
    """The box and its neighbours: shifted by ``-shift, 0, +shift`` of its side in x and in y, each
    also scaled by ``1 -+ shift`` about its centre (27 boxes; just the box when ``shift`` is 0).
    MTCNN's last net (ONet) sees the boxes its earlier nets propose, which lie about the final one."""
    if shift <= 0:
        return [(float(box[0]), float(box[1]), float(box[2]), float(box[3]))]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    w, h = box[2] - box[0], box[3] - box[1]
    out = [(float(box[0]), float(box[1]), float(box[2]), float(box[3]))]
    for s in (1.0, 1.0 - shift, 1.0 + shift):
        for dy in (0.0, -shift, shift):
            for dx in (0.0, -shift, shift):
                if s == 1.0 and dx == 0.0 and dy == 0.0:
                    continue
                x, y = cx + dx * w, cy + dy * h
                out.append((x - s * w / 2, y - s * h / 2, x + s * w / 2, y + s * h / 2))
    return out


def _shifted(f: Face, dx: int, dy: int) -> Face:
    b = f.box
    return Face((b[0] - dx, b[1] - dy, b[2] - dx, b[3] - dy), f.prob, f.landmarks - torch.tensor([float(dx), float(dy)]))


def _region(rects: list[tuple[float, float, float, float]], w: int, h: int, grid: int = 16) -> tuple[int, int, int, int]:
    """A crop ``(x1, y1, x2, y2)`` holding every rectangle with a margin of a quarter of its side plus
    16 px, its corners on a 16-px grid (so JPEG blocks fall where they fall in the whole photo),
    clipped to the photo."""
    xs1, ys1, xs2, ys2 = [], [], [], []
    for r in rects:
        m = 0.25 * max(r[2] - r[0], r[3] - r[1]) + 16
        xs1.append(r[0] - m), ys1.append(r[1] - m), xs2.append(r[2] + m), ys2.append(r[3] + m)
    x1 = max(0, int(math.floor(min(xs1) / grid)) * grid)
    y1 = max(0, int(math.floor(min(ys1) / grid)) * grid)
    x2 = min(w, int(math.ceil(max(xs2) / grid)) * grid)
    y2 = min(h, int(math.ceil(max(ys2) / grid)) * grid)
    return x1, y1, x2, y2


def _chip_bounds(d: ChipDetails) -> tuple[float, float, float, float]:
    """Axis-aligned bounds of a chip's rotated rectangle."""
    r = d.rect
    cx, cy = (r[0] + r[2]) / 2, (r[1] + r[3]) / 2
    half = (r[2] - r[0] + 1) / 2 * (abs(math.cos(d.angle)) + abs(math.sin(d.angle)))
    return cx - half, cy - half, cx + half, cy + half


def _nearest_identity(e: torch.Tensor, gallery: Mapping[str, torch.Tensor]) -> tuple[str | None, float | None]:
    name, dist = None, None
    for n, g in gallery.items():
        d = float(torch.linalg.vector_norm(g.to(e) - e, dim=1).min())
        if dist is None or d < dist:
            name, dist = n, d
    return name, dist


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


# ------------------------------------------------------------------------------------------------
# One photo
# ------------------------------------------------------------------------------------------------
@dataclass
class FaceProtection:
    """What :meth:`FaceProtector.protect_image` gives for one photo.

    Attributes:
        x_adv: ``[3,H,W]`` protected 8-bit image (``None`` when the photo has no face).
        faces: the clean faces that were protected (MTCNN, probability >= ``min_prob``).
        checks: per face, the from-scratch check of the last round (see :class:`FaceRecord`).
        success: every face passed the from-scratch check (after the output encoding, and after the
            robust re-encoding when asked).
        result: the engine's result of the last round.
        rounds: how many engine runs the photo took.
        clean_embeddings: ``[F,128]`` descriptors of the clean faces (the check's own pipeline).
        references: per face, the descriptors ``[k,128]`` it is judged against (its own clean one,
            its gallery identity, or the impersonation target).
        reference_names: per face, the gallery name of its reference (``None``: its own descriptor).
    """

    x_adv: torch.Tensor | None
    faces: list[Face]
    checks: list[dict[str, Any]]
    success: bool
    result: AttackResult | None
    rounds: int
    clean_embeddings: torch.Tensor
    references: list[torch.Tensor]
    reference_names: list[str | None]


class FaceProtector:
    """Protects the faces of one photo at a time with one goal, method and gallery.

    Args:
        goal: ``dodge``, ``impersonate:NAME`` or ``hide``.
        gallery: ``{name: [k,128]}`` descriptors, a folder for :func:`~jndkit.face.victim.build_gallery`,
            or ``None``.
        method, preset, max_iter, seed: the attack (:func:`~jndkit.attacks.get_method`,
            :func:`~jndkit.attacks.run_attack`).
        kappa: the goal's safety margin (default: 0.08 distance for impersonation
            (:data:`IMPERSONATE_KAPPA`), 0.05 for dodging a gallery identity and for dodging without
            a gallery (:data:`SELF_DODGE_KAPPA`), 0.5
            logit for hiding).
        threshold: the recogniser's same-person distance (0.6).
        min_prob: faces with a lower MTCNN probability are not protected (0.9, as
            :func:`~jndkit.face.victim.verify_face_photo`; stock MTCNN also reports some background
            patches at 0.7-0.9).
        rounds: engine runs at most per photo (a later run adds the fresh detection's alignment or box;
            default :data:`DEFAULT_ROUNDS`, 3, and :data:`HIDE_ROUNDS`, 8, for ``hide``).
        jitter: extra alignments per face the descriptor goals must hold for (0-4: landmarks shifted
            by +-3 % of the eye distance, scaled by +-4 %), so that the protection survives the
            slightly different alignment of a fresh detection or of another recogniser's pipeline
            (measured on obama.jpg with ``ddn``: re-checked distance 0.58 without, 0.69 with 4, for
            0.8 dB less PSNR over the face; with 2, dlib's own pipeline was not dodged on obama.jpg
            and obama2.jpg). Dodging without a gallery measures each alignment from its own clean
            descriptor.
        hide_stages: MTCNN nets the hiding goal pushes below their thresholds (default ONet only,
            :data:`HIDE_STAGES`).
        hide_jitter: relative shift and scale of the extra boxes about each face for hiding
            (:data:`HIDE_JITTER`; 0: the MTCNN box and stock MTCNN's ONet boxes only).
        detector, net: default: stock MTCNN and dlib's network, loaded once per process.

    Raises:
        InputError: a bad goal, method or robustness setting, ``impersonate`` without the identity in
            the gallery.
    """

    def __init__(
        self,
        goal: str = "dodge",
        gallery: Mapping[str, torch.Tensor] | str | os.PathLike[str] | None = None,
        method: str = "ddn",
        preset: str | None = None,
        max_iter: int | None = None,
        seed: int = 0,
        *,
        kappa: float | None = None,
        threshold: float = SAME_PERSON_DISTANCE,
        min_prob: float = 0.9,
        rounds: int | None = None,
        jitter: int = 4,
        hide_stages: tuple[str, ...] = HIDE_STAGES,
        hide_jitter: float = HIDE_JITTER,
        detector: FaceDetector | None = None,
        net: DlibFaceNet | None = None,
    ) -> None:
        self.kind, self.target_name = parse_face_goal(goal)
        self.goal_spec = goal
        if rounds is None:
            rounds = HIDE_ROUNDS if self.kind == "hide" else DEFAULT_ROUNDS
        if rounds < 1:
            raise InputError(f"rounds must be >= 1, got {rounds}")
        if not 0 <= jitter <= 4:
            raise InputError(f"jitter must be in 0..4, got {jitter}")
        self.jitter = int(jitter)
        if max_iter is not None and max_iter < 0:
            raise InputError(f"max_iter must be >= 0, got {max_iter}")
        if not 0.0 <= min_prob <= 1.0:
            raise InputError(f"min_prob must lie in [0,1], got {min_prob}")
        if method in FACE_PARAMS and preset is None:
            # the classifier defaults barely move a face descriptor (levels: distance 0.25 after 200
            # steps on obama.jpg, a dodge needs 0.75); see FACE_PARAMS
            self.method = get_method(method, None, **FACE_PARAMS[method])
        else:
            self.method = get_method(method, preset)
        self.method = face_method(self.method)  # mnd: the goal's loss instead of class scores
        self.method_name, self.preset = method, preset
        self.max_iter, self.seed = max_iter, int(seed)
        self.threshold, self.min_prob, self.rounds = float(threshold), float(min_prob), int(rounds)
        if kappa is not None:
            self.kappa = float(kappa)
        elif self.kind == "hide":
            self.kappa = DEFAULT_HIDE_KAPPA
        elif self.kind == "dodge" and not gallery:
            self.kappa = SELF_DODGE_KAPPA
        elif self.kind == "impersonate":
            self.kappa = IMPERSONATE_KAPPA
        else:
            self.kappa = DEFAULT_FACE_KAPPA
        self.hide_stages = hide_stages
        if not 0 <= hide_jitter < 0.5:
            raise InputError(f"hide_jitter must be in [0, 0.5), got {hide_jitter}")
        self.hide_jitter = float(hide_jitter)
        self.detector = detector or _default_detector()
        self.net = net if net is not None else _default_net()
        if gallery is None:
            self.gallery: dict[str, torch.Tensor] = {}
        elif isinstance(gallery, Mapping):
            self.gallery = {str(k): torch.as_tensor(v).reshape(-1, 128).float() for k, v in gallery.items()}
        else:
            self.gallery = build_gallery(gallery, detector=self.detector, net=self.net)
        if self.kind == "impersonate" and self.target_name not in self.gallery:
            have = ", ".join(sorted(self.gallery)) or "no gallery given"
            raise InputError(f"impersonate:{self.target_name} needs {self.target_name!r} in the gallery ({have})")

    # -- the reference each face is judged against ---------------------------------------------
    def _references(self, clean_emb: torch.Tensor) -> tuple[list[torch.Tensor], list[str | None]]:
        refs: list[torch.Tensor] = []
        names: list[str | None] = []
        for e in clean_emb:
            if self.kind == "impersonate":
                assert self.target_name is not None
                refs.append(self.gallery[self.target_name])
                names.append(self.target_name)
                continue
            name, dist = _nearest_identity(e, self.gallery)
            if name is not None and dist is not None and dist < self.threshold:
                refs.append(self.gallery[name])  # dodge the identity the gallery knows it as
                names.append(name)
            else:
                refs.append(e[None].clone())  # dodge its own clean descriptor
                names.append(None)
        return refs, names

    # -- the from-scratch check ----------------------------------------------------------------
    def check(self, image: torch.Tensor, faces: list[Face], refs: list[torch.Tensor],
              ref_names: list[str | None]) -> tuple[list[dict[str, Any]], list[Face | None]]:
        """Judge ``image`` ``[3,H,W]`` (as saved) from scratch: detect (stock MTCNN), align, embed.

        Returns per clean face a dict (``detected_after``, ``box_after``, ``prob_after``,
        ``distance_after``: to the face's reference set, ``identity_after``/``gallery_distance_after``:
        nearest gallery identity, ``protected``) and the fresh detection matched to it (or ``None``).
        """
        found = self.detector.detect(image)
        out: list[dict[str, Any]] = []
        matched: list[Face | None] = []
        for face, ref, ref_name in zip(faces, refs, ref_names):
            again = _same_face(face.box, found)
            rec: dict[str, Any] = {"detected_after": again is not None, "box_after": None, "prob_after": None,
                                   "distance_after": None, "identity_after": None, "gallery_distance_after": None}
            if again is not None:
                rec["box_after"] = [round(v, 1) for v in again.box]
                rec["prob_after"] = _r(again.prob, 6)
            if self.kind == "hide":
                rec["protected"] = again is None
            elif again is None:
                rec["protected"] = self.kind == "dodge"  # not found at all: nothing to recognise
            else:
                e = embed_faces(image, [again], self.net)[0]
                d = float(torch.linalg.vector_norm(ref.to(e) - e, dim=1).min())
                rec["distance_after"] = _r(d)
                name, gd = _nearest_identity(e, self.gallery)
                rec["identity_after"] = name if gd is not None and gd < self.threshold else None
                rec["gallery_distance_after"] = _r(gd)
                rec["protected"] = d >= self.threshold if self.kind == "dodge" else d < self.threshold
            out.append(rec)
            matched.append(again)
        return out, matched

    def check_transform(self, fmt: str, quality: int, robust: tuple[str, int] | None
                        ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """What success must survive: the lossy output format, then the robust re-encoding."""
        steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
        if fmt in ("jpg", "jpeg", "webp"):
            steps.append(reencode("jpg" if fmt == "jpeg" else fmt, quality))
        if robust is not None:
            steps.append(reencode(*robust))
        if not steps:
            return None

        def transform(x: torch.Tensor) -> torch.Tensor:
            for s in steps:
                x = s(x)
            return x

        return transform

    # -- one photo -------------------------------------------------------------------------------
    def protect_image(self, x: torch.Tensor, fmt: str = "png", quality: int = 95, robust: str = "none",
                      progress: ProgressFn | None = None) -> FaceProtection:
        """Protect every face of ``x`` ``[3,H,W]`` in [0,1] in one 8-bit image (nothing is written).

        ``fmt``/``quality`` say how the image will be saved (``png`` is lossless); ``robust`` (``none``,
        ``jpeg:Q``, ``webp:Q``) asks the protection to hold after that re-encoding too.
        """
        if x.ndim != 3 or x.shape[0] != 3:
            raise InputError(f"x must have shape [3,H,W], got {list(x.shape)}")
        rob = parse_robust(robust)
        x0 = quantize(x.detach().float())[None]
        faces = self.detector.detect(x0[0], min_prob=self.min_prob)
        if not faces:
            return FaceProtection(None, [], [], False, None, 0, torch.zeros(0, 128), [], [])
        clean_emb = embed_faces(x0[0], faces, self.net)
        refs, names = self._references(clean_emb)
        transform = self.check_transform(fmt, quality, rob)
        save_check = self.check_transform(fmt, quality, None)
        # entries of the victim: (face index, alignment or box); a round adds the fresh detections
        if self.kind == "hide":
            entries: list[tuple[int, Face]] = [(i, Face(b, f.prob, f.landmarks)) for i, f in enumerate(faces)
                                               for b in _box_jitter(f.box, self.hide_jitter)]
            entries += self._hide_candidates(x0[0], faces, entries)
        else:
            entries = [(i, Face(f.box, f.prob, lm)) for i, f in enumerate(faces) for lm in _jitter(f.landmarks, self.jitter)]
        result: AttackResult | None = None
        checks: list[dict[str, Any]] = []
        x_adv = x0[0]
        success = False
        for rnd in range(1, self.rounds + 1):
            # only the pixels around the faces reach the victim: attack that crop, paste it back
            h, w = x0.shape[-2:]
            if self.kind == "hide":
                rects = [f.box for _, f in entries]
            else:
                rects = [_chip_bounds(face_chip_details(f.landmarks, "mtcnn")) for _, f in entries]
            cx1, cy1, cx2, cy2 = _region(rects, w, h)
            local = [(i, _shifted(f, cx1, cy1)) for i, f in entries]
            crop = x0[..., cy1:cy2, cx1:cx2].contiguous()
            victim, goal = self._victim_goal(local, refs, names, crop)
            result = run_attack(self.method, victim, goal, crop, max_iter=self.max_iter,
                                seed=self.seed, robust=transform, progress=progress)
            x_adv = x0[0].clone()
            x_adv[:, cy1:cy2, cx1:cx2] = result.x_adv[0]
            saved = save_check(x_adv[None])[0] if save_check is not None else x_adv
            checks, again = self.check(saved, faces, refs, names)
            success = all(c["protected"] for c in checks)
            if success and rob is not None:
                robust_checks, _ = self.check(reencode(*rob)(saved[None])[0], faces, refs, names)
                success = all(c["protected"] for c in robust_checks)
            if success or rnd == self.rounds:
                break
            added = False
            if self.kind == "hide":
                fresh = self._hide_candidates(saved, faces, entries)
                entries += fresh
                added = bool(fresh)
            for i, (c, a) in enumerate(zip(checks, again) if self.kind != "hide" else ()):
                known = any(j == i and torch.equal(a.landmarks, f.landmarks) for j, f in entries) if a is not None else True
                if not c["protected"] and not known:
                    entries.append((i, a))  # type: ignore[arg-type]
                    added = True
            if not added:
                break  # a fresh detection shows nothing the victim does not already hold
        return FaceProtection(x_adv, faces, checks, success, result, rnd, clean_emb, refs, names)

    def _hide_candidates(self, image: torch.Tensor, faces: list[Face], known: list[tuple[int, Face]]
                         ) -> list[tuple[int, Face]]:
        """The boxes stock MTCNN gives its last net (ONet) on ``image`` that lie over a clean face and
        that ``known`` does not hold yet (the face is found exactly when ONet accepts one of them)."""
        out: list[tuple[int, Face]] = []
        have = [f.box for _, f in known]
        for b in self.detector.candidates(image)["onet"].tolist():
            box = (b[0], b[1], b[2], b[3])
            if any(max(abs(p - q) for p, q in zip(box, h)) < 0.5 for h in have):
                continue
            for i, f in enumerate(faces):
                if _over(f.box, box):
                    out.append((i, Face(box, f.prob, f.landmarks)))
                    have.append(box)
                    break
        return out

    def _victim_goal(self, entries: list[tuple[int, Face]], refs: list[torch.Tensor], names: list[str | None],
                     crop: torch.Tensor) -> tuple[nn.Module, Goal]:
        """The victim over every entry (face, alignment or box) of ``crop`` and the goal.

        A face dodged without a gallery identity (``names[i] is None``) is measured, in each of its
        alignments, from *that alignment's* clean descriptor, as another recogniser compares its own
        clean and protected descriptors: the alignment alone moves a descriptor by up to about 0.1,
        which would otherwise count as protection in one alignment and against it in another.
        """
        if self.kind == "hide":
            victim: nn.Module = FaceHideVictim(self.detector, [[f for _, f in entries]], self.hide_stages)
            return victim, Hide(kappa=self.kappa)
        victim = FacesVictim(self.net, [[f for _, f in entries]])
        if self.kind == "dodge" and any(names[i] is None for i, _ in entries):
            with torch.no_grad():
                own = victim(crop)[0]  # [E,128]
            per_entry = [own[j][None] if names[i] is None else refs[i] for j, (i, _) in enumerate(entries)]
        else:
            per_entry = [refs[i] for i, _ in entries]
        stacked = stack_references([per_entry])
        if self.kind == "dodge":
            return victim, Dodge(stacked, threshold=self.threshold, kappa=self.kappa)
        return victim, Impersonate(stacked, threshold=self.threshold, kappa=self.kappa)

    def protect_file(self, src: Path, out_dir: Path, fmt: str = "png", quality: int = 95, robust: str = "none",
                     progress: ProgressFn | None = None) -> "FaceRecord":
        """Protect one file into ``out_dir`` and re-check the written file; errors come back in the record."""
        from .. import metrics

        rec = FaceRecord(input=str(src), goal=self.goal_spec, method=self.method_name)
        t0 = time.perf_counter()
        try:
            dst = output_path(src, out_dir, fmt)
            if dst.exists():
                raise OutputError(dst, "already exists; not overwritten (use --resume to skip done photos)")
            if dst.resolve() == Path(src).resolve():
                raise OutputError(dst, "output would replace the input")
            img = load_image(src)
            rec.width, rec.height = img.size
            out_fmt = dst.suffix.lstrip(".").lower()
            prot = self.protect_image(img.rgb, out_fmt, quality, robust, progress)
            if prot.x_adv is None or prot.result is None:
                rec.status = "no-face"
                rec.error = f"no face found (MTCNN probability >= {self.min_prob:g}); nothing written"
                rec.seconds = round(time.perf_counter() - t0, 3)
                return rec
            x0 = quantize(img.rgb)
            clean_emb, refs, names = prot.clean_embeddings, prot.references, prot.reference_names
            save_image(prot.x_adv, dst, quality=quality, alpha=img.alpha, info=img.info)
            rec.output = str(dst)
            res = prot.result
            rec.success_engine = bool(res.success[0])
            rec.margin = _r(float(res.margin[0]))
            rec.iterations, rec.tries, rec.rounds = int(res.iterations[0]), int(res.tries[0]), prot.rounds
            # the proof: the written file, decoded again, judged from scratch
            saved = load_image(dst).rgb
            checks, _ = self.check(saved, prot.faces, refs, names)
            rec.success = all(c["protected"] for c in checks)
            rob = parse_robust(robust)
            robust_checks: list[dict[str, Any]] | None = None
            if rob is not None:
                robust_checks, _ = self.check(reencode(*rob)(saved[None])[0], prot.faces, refs, names)
                rec.robust_success = all(c["protected"] for c in robust_checks)
            vals = metrics.compute_metrics(x0[None], saved[None], names=["psnr", "ssim", "l2", "linf", "l0"])
            rec.psnr, rec.ssim = _r(float(vals["psnr"][0])), _r(float(vals["ssim"][0]), 6)
            rec.l2, rec.linf = _r(float(vals["l2"][0]), 6), _r(float(vals["linf"][0]), 6)
            rec.changed_values = int(vals["l0"][0])
            for i, (face, c) in enumerate(zip(prot.faces, checks)):
                ident, gd = _nearest_identity(clean_emb[i], self.gallery)
                x1, y1, x2, y2 = _int_box(face.box, x0.shape[-1], x0.shape[-2])
                fm = metrics.compute_metrics(x0[None, :, y1:y2, x1:x2], saved[None, :, y1:y2, x1:x2], names=["psnr", "ssim"])
                d0 = float(torch.linalg.vector_norm(refs[i] - clean_emb[i], dim=1).min())
                entry = {
                    "box": [round(v, 1) for v in face.box], "prob": _r(face.prob, 6),
                    "reference": names[i] if names[i] is not None else ("self" if self.kind == "dodge" else None),
                    "distance_before": _r(d0),
                    "identity_before": ident if gd is not None and gd < self.threshold else None,
                    "gallery_distance_before": _r(gd),
                    **c,
                    "psnr": _r(float(fm["psnr"][0])), "ssim": _r(float(fm["ssim"][0]), 6),
                }
                if robust_checks is not None:
                    entry["robust_protected"] = robust_checks[i]["protected"]
                    entry["robust_distance_after"] = robust_checks[i]["distance_after"]
                rec.faces.append(entry)
            face_psnr = [f["psnr"] for f in rec.faces if f["psnr"] is not None]
            rec.psnr_faces = min(face_psnr) if face_psnr else None
            ok = rec.success and rec.robust_success is not False
            rec.status = "protected" if ok else "failed"
            if not ok:
                bad = sum(not (f["protected"] and f.get("robust_protected", True)) for f in rec.faces)
                rec.error = f"{bad} of {len(rec.faces)} face(s) still {'found' if self.kind == 'hide' else 'recognised' if self.kind == 'dodge' else 'not recognised as ' + str(self.target_name)} in the saved file (raise --max-iter or try another method)"
        except JndkitError as e:
            rec.status, rec.error = "error", str(e)
        except (OSError, ValueError, RuntimeError) as e:  # anything unexpected about this one file
            rec.status, rec.error = "error", f"{src}: {type(e).__name__}: {e}"
        rec.seconds = round(time.perf_counter() - t0, 3)
        return rec


def _int_box(box: Sequence[float], w: int, h: int) -> tuple[int, int, int, int]:
    x1, y1 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
    x2, y2 = min(w, int(math.ceil(box[2]))), min(h, int(math.ceil(box[3])))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


# ------------------------------------------------------------------------------------------------
# Records and the folder-level call
# ------------------------------------------------------------------------------------------------
@dataclass
class FaceRecord:
    """One photo of ``report.json`` (``jndkit protect --task face``).

    Attributes:
        status: ``protected`` (every face passed the from-scratch check of the written file, and of
            its robust re-encoding when asked), ``failed`` (written, but some face did not),
            ``no-face`` (no face found; nothing written; counts as not protected), ``error``
            (unreadable file, existing output, ...), ``skipped`` (``resume`` and the output exists).
        faces: per protected face: ``box``, ``prob`` (clean MTCNN), ``reference`` (the gallery identity it
            is judged against, ``"self"`` for its own clean descriptor), ``distance_before``,
            ``identity_before``/``gallery_distance_before`` (nearest gallery identity), then from the
            written file: ``detected_after``, ``box_after``, ``prob_after``, ``distance_after`` (to the
            reference), ``identity_after``, ``gallery_distance_after``, ``protected``, and with
            ``robust``: ``robust_protected``, ``robust_distance_after``; ``psnr``/``ssim`` over its box.
        success: every face protected in the written file (re-read, detected and aligned from scratch).
        success_engine: the engine's own verdict on the 8-bit image at its fixed alignments.
        margin: the engine's goal margin (distance units; logit for ``hide``).
        psnr, ssim, l2, linf, changed_values: whole photo, written file against the 8-bit original.
        psnr_faces: the lowest PSNR over the face boxes.
        rounds: engine runs (see :class:`FaceProtector`).
    """

    input: str
    output: str | None = None
    status: str = "error"
    error: str | None = None
    goal: str = "dodge"
    method: str = "ddn"
    width: int | None = None
    height: int | None = None
    faces: list[dict[str, Any]] = field(default_factory=list)
    success: bool = False
    success_engine: bool = False
    robust_success: bool | None = None
    margin: float | None = None
    iterations: int | None = None
    tries: int | None = None
    rounds: int | None = None
    seconds: float | None = None
    psnr: float | None = None
    psnr_faces: float | None = None
    ssim: float | None = None
    l2: float | None = None
    linf: float | None = None
    changed_values: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (non-finite numbers become ``None``)."""
        return _finite(asdict(self))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "FaceRecord":
        rec = cls(input=str(d["input"]))
        for k, v in d.items():
            if hasattr(rec, k):
                setattr(rec, k, v)
        return rec


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def summarise(records: Sequence[FaceRecord]) -> dict[str, Any]:
    """Counts over photos and faces, and means over protected photos.

    ``success_rate`` is protected photos over photos that were attempted or had no face
    (``no-face`` counts as not protected); ``face_success_rate`` is over the faces found.
    """
    done = [r for r in records if r.status in ("protected", "failed", "no-face")]
    ok = [r for r in records if r.status == "protected"]
    faces = [f for r in records if r.status in ("protected", "failed") for f in r.faces]

    def mean(vals: list[float | None]) -> float | None:
        finite = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
        return round(sum(finite) / len(finite), 4) if finite else None

    return {
        "images": len(records),
        "protected": len(ok),
        "failed": sum(r.status == "failed" for r in records),
        "no_face": sum(r.status == "no-face" for r in records),
        "errors": sum(r.status == "error" for r in records),
        "skipped": sum(r.status == "skipped" for r in records),
        "faces": len(faces),
        "faces_protected": sum(bool(f.get("protected")) and f.get("robust_protected", True) is not False for f in faces),
        "success_rate": round(len(ok) / len(done), 4) if done else None,
        "face_success_rate": (round(sum(bool(f.get("protected")) and f.get("robust_protected", True) is not False
                                        for f in faces) / len(faces), 4) if faces else None),
        "mean_psnr": mean([r.psnr for r in ok]),
        "mean_psnr_faces": mean([r.psnr_faces for r in ok]),
        "mean_ssim": mean([r.ssim for r in ok]),
        "mean_seconds": mean([r.seconds for r in done]),
    }


def protect_face_paths(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    goal: str = "dodge",
    gallery: Mapping[str, torch.Tensor] | str | os.PathLike[str] | None = None,
    method: str = "ddn",
    preset: str | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    fmt: str = "png",
    quality: int = 95,
    robust: str = "none",
    progress: ProgressFn | None = None,
    *,
    resume: bool = False,
    on_start: Callable[[Path, int, int], None] | None = None,
    kappa: float | None = None,
    threshold: float = SAME_PERSON_DISTANCE,
    min_prob: float = 0.9,
    rounds: int | None = None,
    protector: FaceProtector | None = None,
) -> Iterator[FaceRecord]:
    """Protect the faces in files and folders into ``out_dir``, yielding one record per photo.

    Args:
        paths: image files and folders (see :func:`jndkit.images.find_images`).
        out_dir: output folder; photos keep their stem, the suffix follows ``fmt``
            (``png``, ``jpg``, ``webp`` or ``same``).
        goal: ``dodge``, ``impersonate:NAME`` (NAME must be in the gallery) or ``hide``.
        gallery: a folder (one sub-folder or image per person, :func:`~jndkit.face.victim.build_gallery`),
            ``{name: [k,128]}`` descriptors, or ``None``.
        method, preset, max_iter, seed: the attack.
        quality: JPEG/WebP quality of the output.
        robust: ``none``, ``jpeg:Q`` or ``webp:Q``: the protection must also hold after that re-encoding.
        progress: ``progress(step, total, info)`` from the engine.
        resume: skip photos whose output exists (their earlier record is kept).
        on_start: ``on_start(path, index, count)`` before each photo.
        kappa, threshold, min_prob, rounds: see :class:`FaceProtector`.
        protector: a configured :class:`FaceProtector` (then goal, gallery, method, preset, max_iter,
            seed, kappa, threshold, min_prob and rounds are its own).

    ``report.json`` in ``out_dir`` is rewritten after every photo. Problems with one photo
    (unreadable, no face, output exists) are in its record, never raised.

    Raises:
        InputError: a bad goal/method/format/robust setting, ``impersonate`` without NAME in the
            gallery, or no image in ``paths`` (all checked before any photo is attacked).
        OutputError: ``out_dir`` cannot be written.
    """
    if fmt not in ("png", "jpg", "webp", "same"):
        raise InputError(f"format must be png, jpg, webp or same, got {fmt!r}")
    if not 1 <= int(quality) <= 100:
        raise InputError(f"quality must be in 1..100, got {quality}")
    parse_robust(robust)
    parse_face_goal(goal)
    out, files = prepare_run(paths, out_dir)
    protector = protector or FaceProtector(goal, gallery, method, preset, max_iter, seed, kappa=kappa,
                                           threshold=threshold, min_prob=min_prob, rounds=rounds)
    config = {"task": "face", "goal": protector.goal_spec, "method": protector.method_name, "preset": protector.preset,
              "max_iter": protector.max_iter, "seed": protector.seed, "format": fmt, "quality": quality, "robust": robust,
              "kappa": protector.kappa, "threshold": protector.threshold, "min_prob": protector.min_prob,
              "rounds": protector.rounds, "gallery": sorted(protector.gallery)}
    report_path = out / "report.json"
    previous: dict[str, dict[str, Any]] = {}
    if resume and report_path.exists():
        try:
            previous = {item["input"]: item for item in json.loads(report_path.read_text()).get("images", [])}
        except (OSError, ValueError, KeyError, AttributeError):
            previous = {}
    records: list[FaceRecord] = []

    def report() -> dict[str, Any]:
        return {"jndkit": __version__, "torch": torch.__version__, "config": config,
                "summary": summarise(records), "images": [r.to_json() for r in records]}

    for i, src in enumerate(files):
        if on_start is not None:
            on_start(src, i, len(files))
        try:
            dst: Path | None = output_path(src, out, fmt)
        except (ImageError, InputError):
            dst = None
        if resume and dst is not None and dst.exists():
            old = previous.get(str(src))
            rec = (FaceRecord.from_json(old) if old is not None
                   else FaceRecord(input=str(src), output=str(dst), status="skipped", error="output exists (resume)",
                                   goal=protector.goal_spec, method=protector.method_name))
            records.append(rec)
            yield rec
            continue
        rec = protector.protect_file(src, out, fmt, quality, robust, progress)
        records.append(rec)
        write_json_atomic(report(), report_path)
        yield rec
    write_json_atomic(report(), report_path)
