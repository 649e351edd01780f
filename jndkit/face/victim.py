"""Face victims: full-resolution photo -> aligned chips -> dlib descriptors, or -> MTCNN logits.

:class:`FaceRecogniserVictim` is differentiable end to end: the chip is sampled from the photo
with :func:`~jndkit.face.align.extract_chips` at landmarks fixed on the clean photo, so the
gradient of the 128-D descriptor reaches the photo's own pixels (and only those around the face).
The two victims of whole-photo protection (:mod:`jndkit.face.protect`) hold every face of a photo:
:class:`FacesVictim` (all their descriptors, for dodging and impersonation) and
:class:`FaceHideVictim` (MTCNN face logits minus their thresholds, for hiding).
:func:`verify_face_photo` is the independent check of a saved file: it decodes the file again,
detects faces with MTCNN, aligns them and compares each descriptor with a gallery.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import check_image_batch
from ..errors import ImageError, InputError
from ..images import IMAGE_SUFFIXES, load_image
from .align import ChipDetails, LandmarkKind, extract_chips, face_chip_details
from .detect import Face, FaceDetector
from .dlib_net import DlibFaceNet, load_dlib_face_net

__all__ = [
    "HIDE_GROW",
    "HIDE_PAD",
    "SAME_PERSON_DISTANCE",
    "FaceHideVictim",
    "FaceRecogniserVictim",
    "FacesVictim",
    "build_gallery",
    "embed_faces",
    "verify_face_photo",
]

#: dlib's decision threshold: two descriptors closer than this are the same person.
SAME_PERSON_DISTANCE = 0.6

#: Padding entry of :class:`FaceHideVictim` (a logit margin far below any threshold).
HIDE_PAD = -100.0

#: PNet windows of :class:`FaceHideVictim` come from the face box grown by this fraction per side.
HIDE_GROW = 0.1


@functools.lru_cache(maxsize=1)
def _default_net() -> DlibFaceNet:
    return load_dlib_face_net()


@functools.lru_cache(maxsize=1)
def _default_detector() -> FaceDetector:
    return FaceDetector()


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


class FaceRecogniserVictim(nn.Module):
    """Photos ``[B,3,H,W]`` in [0,1] -> dlib face descriptors ``[B,128]``, differentiable.

    Args:
        net: the recogniser (default: :func:`~jndkit.face.dlib_net.load_dlib_face_net`).
        landmarks: ``[B,5,2]`` pixel ``(x, y)`` of one face per photo, fixed (detached), in the order
            given by ``kind``; or ``B`` precomputed :class:`~jndkit.face.align.ChipDetails`.
        kind: ``"mtcnn"`` (default, from :class:`~jndkit.face.detect.FaceDetector`) or ``"dlib5"``.
        dlib_rounding: truncate to 8 bits inside the alignment as dlib does (straight-through);
            default off, so the forward pass is smooth.

    The victim holds per-photo geometry: ``forward`` needs the photos in the order of
    ``landmarks``; use ``victim[index]`` for a sub-batch (e.g. the samples an attack still runs).
    ``per_sample`` is true, so the engine (:func:`jndkit.attacks.run_attack`) indexes it as it
    indexes the goal when samples finish at different iterations.
    """

    per_sample = True

    def __init__(
        self,
        net: DlibFaceNet | None,
        landmarks: torch.Tensor | np.ndarray | list[ChipDetails],
        *,
        kind: LandmarkKind = "mtcnn",
        dlib_rounding: bool = False,
    ) -> None:
        super().__init__()
        self.net = net if net is not None else _default_net()
        if isinstance(landmarks, list):
            if not all(isinstance(d, ChipDetails) for d in landmarks):
                raise InputError("landmarks given as a list must hold ChipDetails")
            self.details = list(landmarks)
        else:
            lm = torch.as_tensor(np.asarray(landmarks.detach().cpu() if isinstance(landmarks, torch.Tensor) else landmarks, np.float64))
            if lm.ndim != 3 or lm.shape[1:] != (5, 2):
                raise InputError(f"landmarks must have shape [B,5,2], got {list(lm.shape)}")
            self.details = [face_chip_details(lm[i], kind) for i in range(lm.shape[0])]
        self.kind = kind
        self.dlib_rounding = dlib_rounding

    @classmethod
    def from_photos(
        cls,
        photos: torch.Tensor,
        detector: FaceDetector | None = None,
        net: DlibFaceNet | None = None,
        *,
        dlib_rounding: bool = False,
    ) -> FaceRecogniserVictim:
        """Victim for the most probable face of each photo ``[B,3,H,W]`` (MTCNN landmarks).

        Raises:
            InputError: a photo has no face.
        """
        check_image_batch(photos, "photos")
        detector = detector or _default_detector()
        lms = []
        for i in range(photos.shape[0]):
            faces = detector.detect(photos[i])
            if not faces:
                raise InputError(f"no face found in photo {i} of the batch")
            lms.append(faces[0].landmarks)
        return cls(net, torch.stack(lms), kind="mtcnn", dlib_rounding=dlib_rounding)

    def __len__(self) -> int:
        return len(self.details)

    def __getitem__(self, index: torch.Tensor | slice | list[int] | int) -> FaceRecogniserVictim:
        """The victim of a sub-batch (same net, the selected photos' geometry)."""
        picked = _pick(len(self.details), index)
        return FaceRecogniserVictim(self.net, [self.details[i] for i in picked], kind=self.kind, dlib_rounding=self.dlib_rounding)

    def chips(self, x: torch.Tensor) -> torch.Tensor:
        """Aligned chips ``[B,3,150,150]`` of photos ``x`` ``[B,3,H,W]``."""
        check_image_batch(x.detach())
        if x.shape[0] != len(self.details):
            raise InputError(f"victim holds landmarks for {len(self.details)} photos, got a batch of {x.shape[0]}; use victim[index]")
        return extract_chips(x, self.details, dlib_rounding=self.dlib_rounding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Descriptors ``[B,128]`` (not normalised) of photos ``x`` ``[B,3,H,W]`` in [0,1]."""
        out: torch.Tensor = self.net(self.chips(x))
        return out


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

    def __getitem__(self, index: torch.Tensor | slice | Sequence[int] | int) -> FacesVictim:
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
        out: torch.Tensor = self.net(chips)
        return out.view(x.shape[0], f, -1)


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

    def __getitem__(self, index: torch.Tensor | slice | Sequence[int] | int) -> FaceHideVictim:
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


def embed_faces(
    image: torch.Tensor,
    faces: list[Face],
    net: DlibFaceNet | None = None,
    dlib_rounding: bool = True,
) -> torch.Tensor:
    """Descriptors ``[N,128]`` of ``faces`` (from :meth:`FaceDetector.detect`) in ``image`` ``[3,H,W]``."""
    net = net if net is not None else _default_net()
    if not faces:
        return torch.zeros(0, 128)
    details = [face_chip_details(f.landmarks, "mtcnn") for f in faces]
    with torch.no_grad():
        chips = extract_chips(image[None].expand(len(faces), -1, -1, -1), details, dlib_rounding=dlib_rounding)
        out: torch.Tensor = net(chips)
        return out


def _load(path_or_tensor: str | os.PathLike[str] | torch.Tensor) -> torch.Tensor:
    if isinstance(path_or_tensor, torch.Tensor):
        x = path_or_tensor
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 3 or x.shape[0] != 3:
            raise InputError(f"image must have shape [3,H,W], got {list(path_or_tensor.shape)}")
        if not x.is_floating_point() or float(x.min()) < 0 or float(x.max()) > 1:
            raise InputError("image must be a floating tensor in [0,1]")
        return torch.round(x.detach().float() * 255.0) / 255.0  # as a saved 8-bit file holds it
    return load_image(path_or_tensor).rgb


def verify_face_photo(
    path_or_tensor: str | os.PathLike[str] | torch.Tensor,
    gallery: dict[str, torch.Tensor],
    *,
    detector: FaceDetector | None = None,
    net: DlibFaceNet | None = None,
    min_prob: float = 0.9,
    threshold: float = SAME_PERSON_DISTANCE,
) -> list[dict[str, Any]]:
    """Re-read a photo from scratch and recognise every face in it.

    Args:
        path_or_tensor: an image file (decoded again, EXIF orientation applied) or a ``[3,H,W]``
            tensor in [0,1] (rounded to 8 bits first).
        gallery: ``{name: [k,128] descriptors}`` (see :func:`build_gallery`); may be empty.
        detector, net: default: MTCNN and dlib's network, loaded once per process.
        min_prob: faces with a lower MTCNN probability are ignored (MTCNN's own last threshold is 0.7;
            at 0.7-0.9 it reports some background patches).
        threshold: distance below which a face matches an identity.

    Returns:
        one dict per face, most probable first, with ``detected`` (True), ``box`` ``(x1,y1,x2,y2)``,
        ``prob``, ``embedding`` (``[128]`` tensor), ``identity`` (nearest gallery name or ``None``),
        ``distance`` (to its nearest descriptor, ``inf`` for an empty gallery) and ``match``
        (``distance < threshold``). When no face is found: a single dict with ``detected`` False and
        the other fields ``None``/``False``.

    Raises:
        ImageError: the file cannot be read. InputError: a bad tensor or gallery entry.
    """
    for name, g in gallery.items():
        if not isinstance(g, torch.Tensor) or g.ndim != 2 or g.shape[1] != 128 or g.shape[0] == 0:
            raise InputError(f"gallery entry {name!r} must be a [k,128] tensor with k >= 1")
    image = _load(path_or_tensor)
    detector = detector or _default_detector()
    faces = detector.detect(image, min_prob=min_prob)
    if not faces:
        return [{"detected": False, "box": None, "prob": None, "embedding": None,
                 "identity": None, "distance": None, "match": False}]  # fmt: skip
    emb = embed_faces(image, faces, net)
    results = []
    for face, e in zip(faces, emb):
        identity, distance = None, float("inf")
        for name, g in gallery.items():
            d = float(torch.linalg.vector_norm(g.to(e) - e, dim=1).min())
            if d < distance:
                identity, distance = name, d
        results.append({"detected": True, "box": face.box, "prob": face.prob, "embedding": e,
                        "identity": identity, "distance": distance, "match": distance < threshold})  # fmt: skip
    return results


def build_gallery(
    folder: str | os.PathLike[str],
    *,
    detector: FaceDetector | None = None,
    net: DlibFaceNet | None = None,
) -> dict[str, torch.Tensor]:
    """Descriptors of known people: ``{name: [k,128]}``.

    ``folder`` holds either one sub-folder per person (name = sub-folder, every image inside
    counts) or image files directly (name = file stem). Each image contributes the descriptor of its
    most probable face.

    Raises:
        InputError: ``folder`` is not a folder or holds no image. ImageError: an image is unreadable
            or shows no face.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    detector = detector or _default_detector()
    entries: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                entries[p.name] = files
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            entries.setdefault(p.stem, []).append(p)
    if not entries:
        raise InputError(f"{root}: no images (expected one sub-folder or image file per person)")
    gallery: dict[str, torch.Tensor] = {}
    for name, files in entries.items():
        descs = []
        for f in files:
            image = load_image(f).rgb
            faces = detector.detect(image, min_prob=0.9)
            if not faces:
                raise ImageError(f, "no face found")
            descs.append(embed_faces(image, faces[:1], net)[0])
        gallery[name] = torch.stack(descs)
    return gallery
