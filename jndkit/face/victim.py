"""Face recogniser victim: full-resolution photo -> aligned chip -> dlib descriptor.

:class:`FaceRecogniserVictim` is differentiable end to end: the chip is sampled from the photo
with :func:`~jndkit.face.align.extract_chips` at landmarks fixed on the clean photo, so the
gradient of the 128-D descriptor reaches the photo's own pixels (and only those around the face).
:func:`verify_face_photo` is the independent check of a saved file: it decodes the file again,
detects faces with MTCNN, aligns them and compares each descriptor with a gallery.
"""

from __future__ import annotations

import functools
import os
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
    "SAME_PERSON_DISTANCE",
    "FaceRecogniserVictim",
    "build_gallery",
    "embed_faces",
    "verify_face_photo",
]

#: dlib's decision threshold: two descriptors closer than this are the same person.
SAME_PERSON_DISTANCE = 0.6


@functools.lru_cache(maxsize=1)
def _default_net() -> DlibFaceNet:
    return load_dlib_face_net()


@functools.lru_cache(maxsize=1)
def _default_detector() -> FaceDetector:
    return FaceDetector()


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
    ) -> "FaceRecogniserVictim":
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

    def __getitem__(self, index: torch.Tensor | slice | list[int] | int) -> "FaceRecogniserVictim":
        """The victim of a sub-batch (same net, the selected photos' geometry)."""
        idx = list(range(len(self.details)))
        if isinstance(index, torch.Tensor):
            picked = [idx[int(i)] for i in (index.nonzero().flatten() if index.dtype == torch.bool else index.flatten())]
        elif isinstance(index, slice):
            picked = idx[index]
        elif isinstance(index, int):
            picked = [idx[index]]
        else:
            picked = [idx[int(i)] for i in index]
        return FaceRecogniserVictim(self.net, [self.details[i] for i in picked], kind=self.kind, dlib_rounding=self.dlib_rounding)

    def chips(self, x: torch.Tensor) -> torch.Tensor:
        """Aligned chips ``[B,3,150,150]`` of photos ``x`` ``[B,3,H,W]``."""
        check_image_batch(x.detach())
        if x.shape[0] != len(self.details):
            raise InputError(f"victim holds landmarks for {len(self.details)} photos, got a batch of {x.shape[0]}; use victim[index]")
        return extract_chips(x, self.details, dlib_rounding=self.dlib_rounding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Descriptors ``[B,128]`` (not normalised) of photos ``x`` ``[B,3,H,W]`` in [0,1]."""
        return self.net(self.chips(x))


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
        return net(chips)


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
