"""Faces against a panel of recognisers, bounded by the human JND map, judged after the upload suite.

* :class:`FacePanelVictim`: photos ``[B,3,h,w]`` -> ``[B,F,sum D_m]``, every member's embeddings of
  every face alignment, each member with its own crop (:class:`~jndkit.face.recognisers.Recogniser`).
  The geometry is stored in the clean photo's pixels and scaled to the input's size, so the
  upload suite's differentiable stand-in (which downscales) can sit in front of it.
* :class:`FacePanelGoal`: dodge (or impersonate) **every** member, each at its own threshold and
  kappa; ``margin = min_m (margin_m - kappa_m)`` (reached when > 0); loss: the members' losses
  weighted by ``softmax(-margin_m / tau)`` (detached), as the classifier panel
  (:class:`jndkit.goals.PanelGoal`), so the step works on the member that still resists.
* :func:`protect_faces`: the attack on one photo tensor: jndkit's ``shield`` method (sign steps
  scaled by ``strength`` x the NAMM JND map, grey steps, the upload stand-in, TI and momentum)
  on the panel; a face counts only after :func:`verify_faces` finds it protected on the 8-bit
  result after every transform of the upload suite (otherwise the next, larger strength is tried).
* :func:`verify_faces`: per face, per recogniser, per upload transform: detect again, crop again,
  distance to the clean embedding, protected or not (``jndkit verify --task face``).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..goals import Goal
from .align import ChipDetails
from .boxes import chip_bounds, region, shifted
from .detect import Face, FaceDetector
from .goals import Dodge, Impersonate
from .recognisers import Recogniser, parse_recognisers

__all__ = [
    "DEFAULT_ALIGNMENTS",
    "PANEL_JND",
    "PANEL_STEPS",
    "PANEL_STRENGTHS",
    "REGION_GRID",
    "FacePanelGoal",
    "FacePanelVictim",
    "PanelProtection",
    "face_quality",
    "face_regions",
    "protect_faces",
    "verify_faces",
]

DEFAULT_ALIGNMENTS = 5
"""Alignments per face and member (the detector's own and 4 jittered ones)."""

PANEL_STRENGTHS = (1.0,)
"""``--strength`` ladder: multiples of the NAMM JND map tried in turn until the faces hold. The default is
the whole map (``strong``) alone: against the panel after the social suite, 0.75 protected 1 of 8
benchmark faces (docs/face.md), and on obama.jpg 1.0 itself is at the edge (100 steps: dlib 0.597
after WebP 80, FaceNet 1.012 after x0.5 + JPEG 85; biden.jpg: protected, dlib 0.68, FaceNet 1.12), so
trying 0.75 first mostly costs one more attack. ``--strength subtle`` (0.75) asks for it."""

PANEL_JND = "namm"
"""Human JND map of the face budget (``--jnd``)."""

PANEL_STEPS = 100
"""Sign steps per strength. On obama.jpg at 1.0 x NAMM (5 alignments) 60 steps left dlib at 0.574 after
WebP 80 and 100 steps at 0.597; alpha 0.05 with 100 steps did worse (0.561). The engine stops a crop as
soon as it holds after every upload transform (biden.jpg: protected in 100.7 s, 2 cores, shared)."""


def _match(faces: Sequence[Face], box: Sequence[float], scale: float) -> Face | None:
    """The face of ``faces`` (in a photo resized by ``scale``) whose box overlaps ``box`` most (IoU >= 0.3)."""
    best, best_iou = None, 0.3
    bx = [v * scale for v in box]
    for f in faces:
        ix = max(0.0, min(f.box[2], bx[2]) - max(f.box[0], bx[0]))
        iy = max(0.0, min(f.box[3], bx[3]) - max(f.box[1], bx[1]))
        inter = ix * iy
        union = (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) + (bx[2] - bx[0]) * (bx[3] - bx[1]) - inter
        iou = inter / union if union > 0 else 0.0
        if iou >= best_iou:
            best, best_iou = f, iou
    return best


class FacePanelVictim(nn.Module):
    """Photos ``[B,3,h,w]`` -> ``[B,F,sum_m D_m]``: every member's embeddings of every face alignment.

    Args:
        members: the recognisers.
        geometry: per photo, per member, ``F`` alignments (the same ``F`` for every member and photo).
        size: ``(H, W)`` of the clean photos the geometry is given in.

    ``per_sample`` is true; ``victim[idx]`` selects photos (the engine uses it).
    """

    per_sample = True

    def __init__(self, members: Sequence[Recogniser], geometry: Sequence[Sequence[Sequence[Any]]],
                 size: tuple[int, int]) -> None:
        super().__init__()
        self.members = list(members)
        self.geometry = [list(map(list, g)) for g in geometry]
        counts = {len(gm) for g in self.geometry for gm in g}
        if len(counts) > 1 or 0 in counts or any(len(g) != len(self.members) for g in self.geometry):
            raise InputError("every photo needs one geometry list per member, all of the same length >= 1")
        # (no photo at all is allowed: the engine takes an empty sub-batch once every sample is done)
        self.size = (int(size[0]), int(size[1]))
        self.dims = [m.dim for m in self.members]

    def __len__(self) -> int:
        return len(self.geometry)

    def __getitem__(self, index: torch.Tensor | slice | Sequence[int] | int) -> FacePanelVictim:
        from .victim import _pick

        return FacePanelVictim(self.members, [self.geometry[i] for i in _pick(len(self.geometry), index)], self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[0] != len(self.geometry):
            raise InputError(f"victim holds faces for {len(self.geometry)} photos, "
                             f"got a batch of shape {list(x.shape)}")
        if x.shape[0] == 0:
            return x.new_zeros(0, 0, sum(self.dims))
        scale = x.shape[-1] / self.size[1]
        x = x.clamp(0.0, 1.0)  # the upload stand-in's JPEG can overshoot [0,1] by float error
        rows = []
        for b in range(x.shape[0]):
            rows.append(torch.cat([m.net(m.crops(x[b], self.geometry[b][i], scale))
                                   for i, m in enumerate(self.members)], dim=-1))
        return torch.stack(rows)


@dataclass
class FacePanelGoal(Goal):
    """Dodge or impersonate every member of a :class:`FacePanelVictim` (outputs ``[B,F,sum D_m]``).

    Args:
        members: the recognisers (their ``dim``, ``threshold`` and ``kappa``).
        kind: ``dodge`` (references: each alignment's own clean embedding, or ``targets``) or
            ``impersonate`` (``targets`` required).
        targets: per member ``[K,D_m]`` descriptors of the identity to leave / become (optional for dodge).
        tau: temperature of the loss weights ``softmax(-margin_m / tau)``, in distance units.

    ``kappa`` is 0: each member's own kappa is already inside the margin.
    """

    members: Sequence[Recogniser] = ()
    kind: str = "dodge"
    targets: Sequence[torch.Tensor] | None = None
    tau: float = 0.05
    inner: list[Goal] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ("dodge", "impersonate"):
            raise InputError(f"face panel goal must be dodge or impersonate, got {self.kind!r}")
        if self.kind == "impersonate" and self.targets is None:
            raise InputError("impersonate needs target descriptors per member")
        if self.targets is not None and len(self.targets) != len(self.members):
            raise InputError(f"{len(self.members)} members but {len(self.targets)} target sets")
        self.kappa = 0.0

    def _split(self, outputs: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(outputs, [m.dim for m in self.members], dim=-1))

    def _bind(self, clean: torch.Tensor, victim: Any) -> None:
        goals: list[Goal] = []
        for i, (m, part) in enumerate(zip(self.members, self._split(clean), strict=True)):
            t = None if self.targets is None else self.targets[i]
            g: Goal = (Dodge(t, m.threshold, m.kappa) if self.kind == "dodge" else Impersonate(t, m.threshold, m.kappa))
            goals.append(g.bind(part.detach()))
        self.inner = goals

    def __getitem__(self, index: torch.Tensor) -> Goal:
        self._need_bound()
        g = dataclasses.replace(self, inner=[inner[index] for inner in self.inner])
        g.bound = True
        return g

    def member_margins(self, outputs: torch.Tensor) -> torch.Tensor:
        """``[B,M]``: each member's margin minus its kappa (> 0: that member is fooled)."""
        self._need_bound()
        return torch.stack([g.margin(o) - g.kappa for g, o in zip(self.inner, self._split(outputs), strict=True)], 1)

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.member_margins(outputs).amin(dim=1)

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        parts = self._split(outputs)
        per = torch.stack([g.loss(o) for g, o in zip(self.inner, parts, strict=True)], 1)
        with torch.no_grad():
            w = (-self.member_margins(outputs) / self.tau).softmax(dim=1)
        return (w * per).sum(dim=1)

    def describe(self) -> str:
        return f"{self.kind} ({', '.join(m.name for m in self.members)}: every member)"


def _as_recognisers(spec: str | Sequence[str] | Sequence[Recogniser] | None) -> list[Recogniser]:
    if spec is None or isinstance(spec, str):
        return parse_recognisers(spec)
    items = list(spec)
    if items and all(isinstance(r, Recogniser) for r in items):
        return [r for r in items if isinstance(r, Recogniser)]
    return parse_recognisers([str(r) for r in items])


def _detect_near(det: FaceDetector, image: torch.Tensor, min_prob: float, side: float) -> list[Face]:
    """MTCNN's faces of ``image`` searched only down to half of ``side`` (px) instead of 20 px.

    A detection can match a clean face only at IoU >= 0.3, which a box below 0.548 of the face's side
    never reaches, so the finest (and costliest: on a 12-megapixel photo, nearly all) levels of the
    image pyramid cannot change a verdict. :func:`verify_faces` falls back on the full search whenever
    this one misses a face, so a face counts as gone only when the full search misses it too.
    """
    m = int(0.5 * side)
    if m <= det.min_face_size:
        return det.detect(image, min_prob=min_prob)
    quick = FaceDetector(min_face_size=m, thresholds=det.thresholds, factor=det.factor, device=det.device)
    return quick.detect(image, min_prob=min_prob)


def verify_faces(
    saved: torch.Tensor,
    clean: torch.Tensor,
    recognisers: str | Sequence[str] | Sequence[Recogniser] | None = None,
    suite: str = "social",
    *,
    detector: FaceDetector | None = None,
    min_prob: float = 0.9,
    clean_faces: Sequence[Face] | None = None,
) -> list[dict[str, Any]]:
    """From scratch: is each face of ``clean`` still recognised in ``saved``, per recogniser, per upload?

    Args:
        saved: the protected photo ``[3,H,W]`` in [0,1] as written (8-bit values).
        clean: the original ``[3,H,W]``.
        recognisers: names (``"dlib,facenet_casia"``) or :class:`Recogniser` objects (default: all).
        suite: upload suite (``"social"``, ``"none"``, or a comma list of transforms); ``"saved"``,
            the file itself, is always checked first.
        detector: MTCNN (default: stock facenet-pytorch, loaded once); min_prob: faces below are ignored.
        clean_faces: the faces of ``clean`` (default: detected here).

    Returns:
        one dict per clean face: ``box``, ``protected`` (every recogniser, every transform) and
        ``checks``: a list of ``{recogniser, transform, found, distance, threshold, protected}``
        (``distance`` ``None`` when the face is not found: a face not found counts as protected).
    """
    from ..transforms import get_suite
    from .victim import _default_detector

    rec = _as_recognisers(recognisers)
    if saved.shape != clean.shape or saved.ndim != 3:
        raise InputError(f"saved and clean must be [3,H,W] of one size, got {list(saved.shape)}, {list(clean.shape)}")
    det = detector or _default_detector()
    faces = list(clean_faces) if clean_faces is not None else det.detect(clean, min_prob=min_prob)
    clean_emb = {r.name: r.embed(clean, faces) for r in rec}
    smallest = min((min(f.box[2] - f.box[0], f.box[3] - f.box[1]) for f in faces), default=0.0)
    # A probe is compared with a reference cut by the same detector settings: the quick search's
    # landmarks differ a little from the full search's (dlib moved by 0.09 on identical pixels).
    quick_clean = _detect_near(det, clean, min_prob, smallest)
    near = [_match(quick_clean, f.box, 1.0) for f in faces]
    quick_emb = {r.name: [None if g is None else r.embed(clean, [g])[0] for g in near] for r in rec}
    h, w = saved.shape[-2:]
    variants: list[tuple[str, torch.Tensor]] = [("saved", saved)]
    variants += [(t.name, t.apply(saved)) for t in get_suite(suite).for_size(h, w)]
    out: list[dict[str, Any]] = [{"box": [round(v, 1) for v in f.box], "protected": True, "checks": []}
                                 for f in faces]
    for name, img in variants:
        scale = img.shape[-1] / w
        found, quick = _detect_near(det, img, min_prob, smallest * scale), True
        if any(_match(found, f.box, scale) is None for f in faces):
            # a face missed by the quick search: the full one decides, against the full search's reference
            found, quick = det.detect(img, min_prob=min_prob), False
        for i, f in enumerate(faces):
            g = _match(found, f.box, scale)
            for r in rec:
                q = quick_emb[r.name][i]
                ref = q if quick and q is not None else clean_emb[r.name][i]
                d = None if g is None else float(r.distance(r.embed(img, [g])[0], ref))
                ok = d is None or d >= r.threshold
                out[i]["checks"].append({"recogniser": r.name, "transform": name, "found": g is not None,
                                         "distance": None if d is None else round(d, 4),
                                         "threshold": r.threshold, "protected": ok})
                out[i]["protected"] = bool(out[i]["protected"] and ok)
    return out


def face_quality(clean: torch.Tensor, saved: torch.Tensor, box: Sequence[float]) -> dict[str, float | None]:
    """Face-box PSNR (dB), share of pixels above the Chou-Li JND and mean / max CIEDE2000 of ``saved``
    against ``clean`` (``[3,H,W]``), over the integer face ``box``."""
    from .. import metrics
    from ..perception.jnd import share_above_jnd
    from .boxes import int_box

    x1, y1, x2, y2 = int_box(box, clean.shape[-1], clean.shape[-2])
    a, b = clean[None, :, y1:y2, x1:x2], saved[None, :, y1:y2, x1:x2]
    m = metrics.compute_metrics(a, b, names=["psnr", "ciede2000_mean", "ciede2000_max"])
    psnr = float(m["psnr"][0])
    return {"psnr": round(psnr, 3) if psnr != float("inf") else None,
            "above_jnd": round(float(share_above_jnd(a, b)[0]), 6),
            "ciede2000_mean": round(float(m["ciede2000_mean"][0]), 4),
            "ciede2000_max": round(float(m["ciede2000_max"][0]), 4)}


@dataclass
class PanelProtection:
    """Result of :func:`protect_faces` for one photo.

    Attributes:
        image: ``[3,H,W]`` the protected 8-bit image (the clean one when no face was found).
        faces: the clean faces; strength: the largest budget used (x NAMM); face_strengths: the
            budget each face's crop was attacked with; success: every face protected from every
            member after every upload transform (:func:`verify_faces`; when the last strength was
            not verified here, ``verified`` is false and ``success`` is the engine's verdict on the
            crops); engine_success: the engine's own verdict (the 8-bit crops after the real upload
            transforms at the whole photo's scale); checks: :func:`verify_faces`'s result (empty when
            not verified); quality: per face :func:`face_quality`; seconds: wall time.
    """

    image: torch.Tensor
    faces: list[Face]
    strength: float | None
    success: bool
    engine_success: bool
    checks: list[dict[str, Any]]
    quality: list[dict[str, float | None]]
    seconds: float
    face_strengths: list[float | None] = field(default_factory=list)
    verified: bool = True


REGION_GRID = 64
"""Corners of the attacked crops lie on this grid of the photo: 64 px scaled by 0.5 or 0.75 are whole
multiples of 16, so the x0.5 / x0.75 resizes and the JPEG blocks (16x16 in 4:2:0 chroma) of a crop fall
where they fall in the whole photo, and the real upload transforms can be checked on the crop."""


def _bounds(g: Any) -> tuple[float, float, float, float]:
    """Axis-aligned bounds of one alignment: a dlib chip or a ``(x1, y1, x2, y2)`` box."""
    if isinstance(g, ChipDetails):
        return chip_bounds(g)
    return float(g[0]), float(g[1]), float(g[2]), float(g[3])


Region = tuple[tuple[int, int, int, int], list[int]]
"""A crop ``(x1, y1, x2, y2)`` of the photo and the indices of the faces it holds."""


def face_regions(faces: Sequence[Face], members: Sequence[Recogniser], width: int, height: int,
                 alignments: int = DEFAULT_ALIGNMENTS, grid: int = REGION_GRID) -> list[Region]:
    """The crops to attack: per face, every member's alignments grown by :func:`~jndkit.face.boxes.region`
    (a quarter of their side + 16 px) with corners on ``grid``; crops that overlap are merged.

    Returns ``[((x1, y1, x2, y2), [face indices]), ...]``. Only these pixels reach the recognisers, so the
    attack on them is the attack on the photo (a 12-megapixel group photo is attacked face by face).
    """
    regs: list[Region] = []
    for i, f in enumerate(faces):
        rects = [_bounds(g) for m in members for g in m.geometry(f, width, height, alignments)]
        regs.append((region(rects, width, height, grid), [i]))
    merged = True
    while merged:
        merged = False
        for a, b in itertools.combinations(range(len(regs)), 2):
            (ra, ia), (rb, ib) = regs[a], regs[b]
            if ra[0] < rb[2] and rb[0] < ra[2] and ra[1] < rb[3] and rb[1] < ra[3]:
                u = (min(ra[0], rb[0]), min(ra[1], rb[1]), max(ra[2], rb[2]), max(ra[3], rb[3]))
                regs[a] = (u, sorted(ia + ib))
                del regs[b]
                merged = True
                break
    return regs


def protect_faces(
    image: torch.Tensor,
    recognisers: str | Sequence[str] | Sequence[Recogniser] | None = None,
    *,
    goal: str = "dodge",
    targets: Sequence[torch.Tensor] | None = None,
    strengths: Sequence[float] = PANEL_STRENGTHS,
    steps: int = PANEL_STEPS,
    alpha: float = 0.1,
    grey: bool = False,
    ti_sigma: float = 0.0,
    suite: str = "social",
    alignments: int = DEFAULT_ALIGNMENTS,
    detector: FaceDetector | None = None,
    min_prob: float = 0.9,
    seed: int = 0,
    verify_last: bool = True,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    jnd: str = PANEL_JND,
) -> PanelProtection:
    """Protect every face of ``image`` ``[3,H,W]`` (8-bit values in [0,1]) against a panel of recognisers.

    Only the pixels around the faces reach the recognisers, so the attack runs on crops
    (:func:`face_regions`, corners on a 64-px grid), one after the other, and pastes them back. Each
    crop goes through the ``strengths`` (multiples of the NAMM JND map) in turn: it is attacked at
    a strength, the photo is judged by :func:`verify_faces` (every face, every member, every transform
    of ``suite``), and only the crops whose faces still fail go on to the next strength. With
    ``verify_last`` false the last strength is not judged here (the pipeline judges the saved file
    from scratch anyway); then ``verified`` is false.

    The attack is the ``shield`` method (:mod:`jndkit.attacks.transfer`) with ``steps`` sign steps of
    ``alpha`` x the per-value budget, through :meth:`~jndkit.transforms.UploadStandIn.for_photo` (EOT
    with resize factors down to the suite's smallest for the whole photo), and the engine keeps a
    crop going until its 8-bit result holds after every real transform of the suite (``robust``, at
    the whole photo's scale; the geometry is
    the clean one, the final judge detects again). ``grey`` (achromatic steps, the classifier default)
    is off for faces: measured on obama's face crop (40 steps, 0.75 x NAMM, no EOT), dlib's distance
    reached 0.53 with grey steps and 0.62 with colour steps; against the panel at 1.0 x NAMM (with EOT),
    grey steps left dlib at 0.51 and FaceNet at 0.92, colour steps reached 0.57 and 1.09. The face-box
    CIEDE2000 (:func:`face_quality`) reports the colour change. ``ti_sigma`` (TI-FGSM's gradient
    smoothing, 1.0 for classifiers) is off: on the same crop, panel, 1.0 x NAMM, colour steps, EOT,
    60 steps without TI reached dlib 0.672 / FaceNet 1.144 on the saved file (0.661 / 1.109 after
    x0.75 + JPEG 85), where 40 steps with TI had stopped at 0.572 / 1.089.

    Raises:
        InputError: bad arguments (unknown recogniser, strength <= 0, a bad image).
    """
    from ..attacks import get_method, run_attack
    from ..attacks.transfer import fixed_budget
    from ..perception import jnd_map
    from ..transforms import UploadStandIn, get_suite
    from .victim import _default_detector

    if image.ndim != 3 or image.shape[0] != 3:
        raise InputError(f"image must have shape [3,H,W], got {list(image.shape)}")
    if not strengths or any(s <= 0 for s in strengths):
        raise InputError(f"strengths must be > 0, got {list(strengths)}")
    t0 = time.perf_counter()
    members = _as_recognisers(recognisers)
    upload = get_suite(suite)
    det = detector or _default_detector()
    faces = det.detect(image, min_prob=min_prob)
    if not faces:
        return PanelProtection(image, [], None, False, False, [], [], time.perf_counter() - t0)
    h, w = image.shape[-2:]
    robust = [t.for_crop_of(h, w).apply for t in upload.for_size(h, w)] or None
    with torch.no_grad():
        jnd_whole = jnd_map(image[None].clamp(0, 1), jnd)  # the whole photo's map, cropped below
    crops = face_regions(faces, members, w, h, alignments)
    x = image.clone()
    used: list[float | None] = [None] * len(faces)
    crop_ok = [False] * len(crops)
    todo = list(range(len(crops)))
    checks: list[dict[str, Any]] = []
    verified = True
    total = len(strengths) * len(crops) * steps
    for k, s in enumerate(strengths):
        method = get_method("shield", strength=s, steps=float(steps), max_iter=steps, alpha=alpha,
                            grey=1.0 if grey else 0.0, ti_sigma=ti_sigma)
        method = dataclasses.replace(method, input_transform=UploadStandIn.for_photo(upload, (h, w)))
        bound = torch.floor(jnd_whole * s * 255.0 + 1e-6) / 255.0  # as jnd_budget, on the whole photo
        for c in todo:
            (x1, y1, x2, y2), idx = crops[c]
            method = dataclasses.replace(method, prepare=fixed_budget(bound[..., y1:y2, x1:x2]))
            local = [shifted(faces[i], x1, y1) for i in idx]
            geometry = [[[g for f in local for g in m.geometry(f, x2 - x1, y2 - y1, alignments)] for m in members]]
            victim = FacePanelVictim(members, geometry, (y2 - y1, x2 - x1))
            panel_goal = FacePanelGoal(members=members, kind=goal, targets=targets)
            done = (k * len(crops) + c) * steps

            def step(i: int, n: int, info: dict[str, Any], done: int = done, s: float = s) -> None:
                if progress is not None:
                    progress(done + i, total, {**info, "strength": s})

            res = run_attack(method, victim, panel_goal, image[None, :, y1:y2, x1:x2], seed=seed, robust=robust,
                             progress=step)
            x[:, y1:y2, x1:x2] = res.x_adv[0]
            crop_ok[c] = bool(res.success[0])
            for i in idx:
                used[i] = s
        if k == len(strengths) - 1 and not verify_last:
            checks, verified = [], False
            break
        checks = verify_faces(x, image, members, suite, detector=det, min_prob=min_prob, clean_faces=faces)
        todo = [c for c in todo if not all(checks[i]["protected"] for i in crops[c][1])]
        if not todo:
            break
    ok = all(c["protected"] for c in checks) if verified else all(crop_ok)
    quality = [face_quality(image, x, f.box) for f in faces]
    strength = max(v for v in used if v is not None)
    return PanelProtection(x, faces, strength, ok, all(crop_ok), checks, quality, time.perf_counter() - t0,
                           face_strengths=used, verified=verified)
