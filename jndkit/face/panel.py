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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..goals import Goal
from .detect import Face, FaceDetector
from .goals import Dodge, Impersonate
from .recognisers import Recogniser, parse_recognisers

__all__ = [
    "DEFAULT_ALIGNMENTS",
    "PANEL_STRENGTHS",
    "FacePanelGoal",
    "FacePanelVictim",
    "PanelProtection",
    "face_quality",
    "protect_faces",
    "verify_faces",
]

DEFAULT_ALIGNMENTS = 5
"""Alignments per face and member (the detector's own and 4 jittered ones)."""

PANEL_STRENGTHS = (0.75, 1.0)
"""``--strength`` ladder: multiples of the NAMM JND map tried in turn until the faces hold. 0.5 is
left out: on obama's face crop, 40 steps at 0.75 against dlib alone reached only 0.62 (colour steps)."""


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
    h, w = saved.shape[-2:]
    variants: list[tuple[str, torch.Tensor]] = [("saved", saved)]
    variants += [(t.name, t.apply(saved)) for t in get_suite(suite).for_size(h, w)]
    out: list[dict[str, Any]] = [{"box": [round(v, 1) for v in f.box], "protected": True, "checks": []}
                                 for f in faces]
    for name, img in variants:
        scale = img.shape[-1] / w
        found = det.detect(img, min_prob=min_prob)
        for i, f in enumerate(faces):
            g = _match(found, f.box, scale)
            for r in rec:
                d = None if g is None else float(r.distance(r.embed(img, [g])[0], clean_emb[r.name][i]))
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
        faces: the clean faces; strength: the budget used (x NAMM); success: every face protected from
            every member after every upload transform (:func:`verify_faces`), engine_success: the
            engine's own verdict; checks: :func:`verify_faces`'s result; quality: per face
            :func:`face_quality`; seconds: wall time.
    """

    image: torch.Tensor
    faces: list[Face]
    strength: float | None
    success: bool
    engine_success: bool
    checks: list[dict[str, Any]]
    quality: list[dict[str, float | None]]
    seconds: float


def protect_faces(
    image: torch.Tensor,
    recognisers: str | Sequence[str] | Sequence[Recogniser] | None = None,
    *,
    goal: str = "dodge",
    targets: Sequence[torch.Tensor] | None = None,
    strengths: Sequence[float] = PANEL_STRENGTHS,
    steps: int = 60,
    alpha: float = 0.1,
    grey: bool = False,
    ti_sigma: float = 0.0,
    suite: str = "social",
    alignments: int = DEFAULT_ALIGNMENTS,
    detector: FaceDetector | None = None,
    min_prob: float = 0.9,
    seed: int = 0,
) -> PanelProtection:
    """Protect every face of ``image`` ``[3,H,W]`` (8-bit values in [0,1]) against a panel of recognisers.

    Each strength of ``strengths`` (multiples of the NAMM JND map) is tried in turn; the first whose
    8-bit result passes :func:`verify_faces` (every face, every member, every transform of ``suite``)
    is kept; if none does, the last one is returned with ``success`` False.

    The attack is the ``shield`` method (:mod:`jndkit.attacks.transfer`) with ``steps`` sign steps of
    ``alpha`` x the per-value budget. ``grey`` (achromatic steps, the classifier default) is off for
    faces: measured on obama's face crop (40 steps, 0.75 x NAMM, no EOT), dlib's distance reached 0.53
    with grey steps and 0.62 with colour steps; against the panel at 1.0 x NAMM (with EOT), grey steps
    left dlib at 0.51 and FaceNet at 0.92, colour steps reached 0.57 and 1.09. The face-box
    CIEDE2000 (:func:`face_quality`) reports the colour change. ``ti_sigma`` (TI-FGSM's gradient
    smoothing, 1.0 for classifiers) is off: on the same crop, panel, 1.0 x NAMM, colour steps, EOT,
    60 steps without TI reached dlib 0.672 / FaceNet 1.144 on the saved file (0.661 / 1.109 after
    x0.75 + JPEG 85), where 40 steps with TI had stopped at 0.572 / 1.089.

    Raises:
        InputError: bad arguments (unknown recogniser, strength <= 0, a bad image).
    """
    from ..attacks import get_method, run_attack
    from .victim import _default_detector

    if image.ndim != 3 or image.shape[0] != 3:
        raise InputError(f"image must have shape [3,H,W], got {list(image.shape)}")
    if not strengths or any(s <= 0 for s in strengths):
        raise InputError(f"strengths must be > 0, got {list(strengths)}")
    t0 = time.perf_counter()
    members = _as_recognisers(recognisers)
    det = detector or _default_detector()
    faces = det.detect(image, min_prob=min_prob)
    if not faces:
        return PanelProtection(image, [], None, False, False, [], [], time.perf_counter() - t0)
    h, w = image.shape[-2:]
    geometry = [[[g for f in faces for g in m.geometry(f, w, h, alignments)] for m in members]]
    victim = FacePanelVictim(members, geometry, (h, w))
    x0 = image[None]
    result = None
    for s in strengths:
        method = get_method("shield", strength=s, steps=float(steps), max_iter=steps, alpha=alpha,
                            grey=1.0 if grey else 0.0, ti_sigma=ti_sigma)
        panel_goal = FacePanelGoal(members=members, kind=goal, targets=targets)
        res = run_attack(method, victim, panel_goal, x0, seed=seed)
        x = res.x_adv[0]
        checks = verify_faces(x, image, members, suite, detector=det, min_prob=min_prob, clean_faces=faces)
        ok = all(c["protected"] for c in checks)
        result = (s, x, ok, bool(res.success[0]), checks)
        if ok:
            break
    assert result is not None
    s, x, ok, engine_ok, checks = result
    quality = [face_quality(image, x, f.box) for f in faces]
    return PanelProtection(x, faces, s, ok, engine_ok, checks, quality, time.perf_counter() - t0)
