"""Goals on face embeddings and face detections: dodging, impersonation, hiding.

They follow the engine's goal interface (:class:`jndkit.goals.Goal`): ``margin`` is positive past
the decision boundary, ``reached`` is ``margin > kappa``, ``loss`` is minimised, and ``goal[index]``
restricts every per-sample tensor to a sub-batch. Margins are in the victim's own units:

* :class:`Dodge` and :class:`Impersonate` in **descriptor distance** (Euclidean, dlib's
  recogniser calls two faces the same person below ``threshold = 0.6``); ``kappa`` (default 0.05)
  is the safety margin, so dodging means a distance above 0.65 and impersonation below 0.55;
* :class:`Hide` in **logits**: the victim (:class:`~jndkit.face.victim.FaceHideVictim`)
  returns MTCNN face logits (before the softmax) minus the logits of MTCNN's probability thresholds,
  and hiding means every one of them is below ``-kappa``.

Outputs of the embedding victims are ``[B,128]`` (one face per sample, as
:class:`~jndkit.face.victim.FaceRecogniserVictim`) or ``[B,F,128]`` (all ``F`` faces of one photo per
sample, as :class:`~jndkit.face.victim.FacesVictim`): a photo reaches the goal only when **every**
face does, so its margin is the smallest face margin.

References are *sets* of descriptors (a gallery holds several photos of a person): the distance
of a face to a reference is the distance to the nearest descriptor of the set, as in
:func:`~jndkit.face.victim.verify_face_photo`. Bound references are stored ``[B,F,K,128]``; sets of
different sizes are padded by repeating a descriptor, which leaves a minimum unchanged
(:func:`stack_references`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError
from ..goals import Goal
from .victim import SAME_PERSON_DISTANCE

__all__ = [
    "DEFAULT_FACE_KAPPA",
    "DEFAULT_HIDE_KAPPA",
    "Dodge",
    "Hide",
    "Impersonate",
    "stack_references",
]

DEFAULT_FACE_KAPPA = 0.05
"""Safety margin of :class:`Dodge` and :class:`Impersonate`, in descriptor distance. The
from-scratch check re-detects and re-aligns the face, which moves the descriptor by ~0.01-0.03."""

DEFAULT_HIDE_KAPPA = 0.5
"""Safety margin of :class:`Hide`, in logit below each MTCNN threshold (PNet: probability below
sigmoid(log(0.6/0.4) - 0.5) = 0.48 instead of 0.6)."""

_ESCAPE = 1e-2
"""Offset of the dodging loss's anchor (see :class:`Dodge`)."""


def _faces(outputs: torch.Tensor) -> torch.Tensor:
    """Outputs as ``[B,F,D]`` (``[B,D]`` is one face per sample)."""
    if outputs.ndim == 2:
        return outputs[:, None]
    if outputs.ndim != 3:
        raise InputError(f"face goals need outputs of shape [B,D] or [B,F,D], got {list(outputs.shape)}")
    return outputs


def stack_references(refs: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Per-sample, per-face reference sets ``refs[b][f]`` (``[k_bf,D]``) as one ``[B,F,K,D]`` tensor.

    Smaller sets are padded by repeating their first descriptor (the nearest-descriptor distance
    is unchanged). Every sample must have the same number of faces ``F``.

    >>> r = stack_references([[torch.zeros(1, 4), torch.ones(3, 4)]])
    >>> tuple(r.shape), bool((r[0, 0] == 0).all())
    ((1, 2, 3, 4), True)
    """
    if not refs or not refs[0]:
        raise InputError("stack_references needs at least one sample with at least one face")
    n_faces = {len(r) for r in refs}
    if len(n_faces) != 1:
        raise InputError(f"every sample must have the same number of faces, got {sorted(n_faces)}")
    sets = [[torch.as_tensor(t).reshape(-1, t.shape[-1]) for t in r] for r in refs]
    dims = {t.shape[-1] for r in sets for t in r}
    if len(dims) != 1 or any(t.shape[0] == 0 for r in sets for t in r):
        raise InputError(f"reference sets must be non-empty [k,D] tensors of one D, got D in {sorted(dims)}")
    k = max(t.shape[0] for r in sets for t in r)
    padded = [[torch.cat([t, t[:1].expand(k - t.shape[0], -1)]) for t in r] for r in sets]
    return torch.stack([torch.stack(r) for r in padded]).float()


def _bind_reference(ref: Any, clean: torch.Tensor, name: str) -> torch.Tensor:
    """A user reference as ``[B,F,K,D]`` for clean outputs ``[B,F,D]``.

    Accepted: ``[K,D]`` (one set for every sample and face), ``[B,K,D]`` (one set per sample, for
    all its faces) or ``[B,F,K,D]``.
    """
    b, f, d = clean.shape
    r = torch.as_tensor(ref).detach().to(clean.device, clean.dtype)
    if r.ndim == 2:
        r = r[None, None].expand(b, f, -1, -1)
    elif r.ndim == 3:
        if r.shape[0] != b:
            raise InputError(f"{name} of shape [B,K,D] must have B = {b} sets, got {list(r.shape)}")
        r = r[:, None].expand(-1, f, -1, -1)
    elif r.ndim == 4:
        if tuple(r.shape[:2]) != (b, f):
            raise InputError(f"{name} of shape [B,F,K,D] must have B,F = {b},{f}, got {list(r.shape)}")
    else:
        raise InputError(f"{name} must have shape [K,D], [B,K,D] or [B,F,K,D], got {list(r.shape)}")
    if r.shape[-1] != d or r.shape[2] == 0:
        raise InputError(f"{name} must hold at least one descriptor of size {d}, got shape {list(r.shape)}")
    return r.contiguous().clone()


def _nearest(emb: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``[B,F]`` distance of each face ``emb`` ``[B,F,D]`` to the nearest of its references ``[B,F,K,D]``."""
    if ref.shape[:2] != emb.shape[:2]:
        raise InputError(f"outputs hold {list(emb.shape[:2])} (samples, faces), the goal {list(ref.shape[:2])}")
    d: torch.Tensor = torch.linalg.vector_norm(emb[:, :, None] - ref, dim=-1)
    return d.amin(dim=-1)


@dataclass
class _EmbeddingGoal(Goal):
    """Shared fields of the embedding goals."""

    kappa: float = DEFAULT_FACE_KAPPA
    threshold: float = SAME_PERSON_DISTANCE

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise InputError(f"threshold must be > 0, got {self.threshold}")
        if self.kappa < 0:
            raise InputError(f"kappa must be >= 0, got {self.kappa}")

    def distances(self, outputs: torch.Tensor) -> torch.Tensor:
        """``[B,F]`` distance of every face to its reference set (nearest descriptor)."""
        raise NotImplementedError  # pragma: no cover


@dataclass(init=False)
class Dodge(_EmbeddingGoal):
    """Dodging: no face may be recognised as its reference identity.

    ``margin = min over faces of (distance to the nearest reference descriptor) - threshold``, so it is
    reached when every face lies more than ``threshold + kappa`` (0.65) from its reference.

    Args:
        reference: the identity to leave: ``None`` (the clean descriptor of each face, bound from the
            clean outputs: "not recognised as the person in the original photo"), ``[K,D]`` (one
            identity for everything, e.g. a gallery entry), ``[B,K,D]`` or ``[B,F,K,D]``.
        threshold: the recogniser's same-person distance (dlib: 0.6).
        kappa: safety margin in distance units.

    Loss: minus the distance, measured to an anchor ``reference - 0.01 * reference/|reference|``
    instead of the reference itself. When the reference is the clean descriptor, the clean photo
    sits exactly at the minimum of the distance, where its gradient is zero and no gradient method
    could start; the offset anchor gives it a direction (the descriptor's radial one), and changes
    the distance by at most 0.01 elsewhere. The margin uses the true reference.
    """

    reference: torch.Tensor | None = None

    def __init__(self, reference: torch.Tensor | None = None, threshold: float = SAME_PERSON_DISTANCE,
                 kappa: float = DEFAULT_FACE_KAPPA) -> None:
        self.reference, self.threshold, self.kappa, self.bound = reference, threshold, kappa, False
        self.__post_init__()

    def _bind(self, clean: torch.Tensor, victim: Any) -> None:
        c = _faces(clean)
        self.reference = c[:, :, None].clone() if self.reference is None else _bind_reference(self.reference, c, "reference")

    def distances(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        assert self.reference is not None
        return _nearest(_faces(outputs), self.reference)

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.distances(outputs).amin(dim=1) - self.threshold

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        assert self.reference is not None
        ref = self.reference
        anchor = ref - _ESCAPE * ref / torch.linalg.vector_norm(ref, dim=-1, keepdim=True).clamp_min(1e-12)
        return -_nearest(_faces(outputs), anchor).mean(dim=1)

    def describe(self) -> str:
        return "dodge"


@dataclass(init=False)
class Impersonate(_EmbeddingGoal):
    """Impersonation: every face must be recognised as the target identity.

    ``margin = threshold - max over faces of (distance to the nearest target descriptor)``, reached when
    every face lies within ``threshold - kappa`` (0.55) of a target descriptor. Loss: the distance.

    Args:
        target: the identity to become: ``[K,D]`` (a gallery entry), ``[B,K,D]`` or ``[B,F,K,D]``.
        threshold, kappa: as :class:`Dodge`.
    """

    target: torch.Tensor | None = None

    def __init__(self, target: torch.Tensor | None = None, threshold: float = SAME_PERSON_DISTANCE,
                 kappa: float = DEFAULT_FACE_KAPPA) -> None:
        self.target, self.threshold, self.kappa, self.bound = target, threshold, kappa, False
        self.__post_init__()

    def _bind(self, clean: torch.Tensor, victim: Any) -> None:
        if self.target is None:
            raise InputError("Impersonate needs target descriptors [K,128] (e.g. a gallery entry)")
        self.target = _bind_reference(self.target, _faces(clean), "target")

    def distances(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        assert self.target is not None
        return _nearest(_faces(outputs), self.target)

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.threshold - self.distances(outputs).amax(dim=1)

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.distances(outputs).mean(dim=1)

    def describe(self) -> str:
        return "impersonate"


@dataclass
class Hide(Goal):
    """Hiding from a face detector: every face's logit below its threshold at every stage.

    The victim returns per sample face logits minus the logits of their thresholds, ``[B,M]``
    (:class:`~jndkit.face.victim.FaceHideVictim`: every PNet window over each of the photo's faces,
    then RNet and ONet at its box; padding entries hold -100). ``margin = -max(outputs)``: positive
    once every entry is below zero; reached below ``-kappa``. Asking every stage and every PNet
    window (not just one net, which is enough to drop the face at the fixed box) leaves MTCNN no
    nearby candidate to find it again.

    Loss: ``sum(relu(outputs + 2 kappa))``: every entry not yet safely below pushes down, the others
    no longer count.
    """

    kappa: float = DEFAULT_HIDE_KAPPA

    def _bind(self, clean: torch.Tensor, victim: Any) -> None:
        if clean.ndim != 2:
            raise InputError(f"Hide needs outputs [B,M] (probability minus threshold), got {list(clean.shape)}")

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        return -outputs.flatten(1).amax(dim=1)

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        return torch.relu(outputs.flatten(1) + 2 * self.kappa).sum(dim=1)

    def describe(self) -> str:
        return "hide"
