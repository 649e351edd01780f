"""Face goals as strategies: what dodging, impersonation and hiding each mean for a whole photo.

:class:`~jndkit.face.protect.FaceProtector` runs one loop for every goal (detect, attack the crop
about the faces, check the result from scratch, start another round with what the check found) and
asks its :class:`FaceStrategy` everything that differs between goals:

* the **reference** each face is judged against (its own clean descriptor, its gallery identity, the
  impersonation target) and how the record names it;
* the **victim and engine goal** of a round (:class:`~jndkit.face.victim.FacesVictim` with
  :class:`~jndkit.face.goals.Dodge` or :class:`~jndkit.face.goals.Impersonate`;
  :class:`~jndkit.face.victim.FaceHideVictim` with :class:`~jndkit.face.goals.Hide`), over its
  **entries** (per face, the alignments or boxes the attack must hold for);
* its **kappa** and **rounds** defaults, the **retry rule** (which entries a fresh detection of a
  failed round adds) and the **verdict** on one face of a checked image.

Goals are registered by their CLI spelling (:func:`register_face_goal`) and parsed by one function
(:func:`parse_face_goal`): ``dodge``, ``impersonate:NAME``, ``hide``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from ..errors import InputError
from ..goals import Goal, RegisteredGoal, goal_registry, goal_usage, parse_goal, register_goal
from .align import face_chip_details
from .boxes import chip_bounds, jitter_box, jitter_landmarks, over
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
from .victim import FaceHideVictim, FacesVictim, embed_faces

__all__ = [
    "DEFAULT_ROUNDS",
    "HIDE_JITTER",
    "HIDE_ROUNDS",
    "HIDE_STAGES",
    "IMPERSONATE_KAPPA",
    "SELF_DODGE_KAPPA",
    "DodgeStrategy",
    "Entry",
    "FaceContext",
    "FaceGoalSpec",
    "FaceStrategy",
    "HideStrategy",
    "ImpersonateStrategy",
    "face_goal_usage",
    "nearest_identity",
    "parse_face_goal",
    "register_face_goal",
]

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

#: MTCNN nets that the ``hide`` goal pushes below their thresholds (see :class:`HideStrategy`).
HIDE_STAGES: tuple[str, ...] = ("onet",)

#: Engine runs per photo at most, unless ``rounds`` is given: each run adds the boxes or alignments
#: that a fresh detection of its result shows. Hiding obama.jpg took 6 rounds with ``ddn``.
DEFAULT_ROUNDS = 3
HIDE_ROUNDS = 8

#: Relative shift and scale of the boxes about each face that ``hide`` attacks
#: (:func:`~jndkit.face.boxes.jitter_box`).
HIDE_JITTER = 0.06

#: One entry of a round's victim: (index of the clean face, one alignment or box of it).
Entry = tuple[int, Face]

Rect = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceContext:
    """What every strategy of one :class:`~jndkit.face.protect.FaceProtector` shares.

    Attributes:
        detector, net: stock MTCNN and dlib's network.
        gallery: ``{name: [k,128]}`` descriptors of known people (may be empty).
        threshold: the recogniser's same-person distance (0.6).
        jitter: extra alignments per face for the descriptor goals (0-4).
        hide_stages: MTCNN nets the hiding goal pushes below their thresholds.
        hide_jitter: relative shift and scale of the extra boxes about each face for hiding.
    """

    detector: FaceDetector
    net: DlibFaceNet
    gallery: Mapping[str, torch.Tensor]
    threshold: float
    jitter: int
    hide_stages: tuple[str, ...]
    hide_jitter: float


class FaceStrategy(Protocol):
    """One face goal for whole photos. Attributes: ``kind`` (``dodge``...), ``spec`` (the goal as the
    user spelt it), ``kappa`` (the engine goal's safety margin), ``rounds`` (engine runs at most)."""

    kind: str
    spec: str
    kappa: float
    rounds: int

    def references(self, clean_emb: torch.Tensor) -> tuple[list[torch.Tensor], list[str | None]]:
        """Per clean face (descriptors ``[F,128]``): the reference set ``[k,128]`` and its gallery name."""
        ...

    def reference_label(self, name: str | None) -> str | None:
        """How the record names a face's reference (``name`` from :meth:`references`)."""
        ...

    def entries(self, image: torch.Tensor, faces: list[Face]) -> list[Entry]:
        """The first round's entries for the clean 8-bit ``image`` ``[3,H,W]``."""
        ...

    def bounds(self, face: Face) -> Rect:
        """The pixels an entry's victim reads, as a box of the photo."""
        ...

    def victim_goal(self, entries: list[Entry], refs: list[torch.Tensor], names: list[str | None],
                    crop: torch.Tensor) -> tuple[nn.Module, Goal]:
        """The victim over ``entries`` (in ``crop``'s coordinates; ``crop`` ``[1,3,h,w]``) and its goal."""
        ...

    def verdict(self, image: torch.Tensor, again: Face | None, ref: torch.Tensor) -> dict[str, Any]:
        """One face of a checked ``image``: ``protected`` and, where they apply, ``distance_after``,
        ``identity_after``, ``gallery_distance_after``. ``again``: its fresh detection, if any."""
        ...

    def retry(self, saved: torch.Tensor, faces: list[Face], entries: list[Entry],
              checks: list[dict[str, Any]], again: list[Face | None]) -> list[Entry]:
        """Entries to add after a failed round (none: another round would change nothing)."""
        ...

    def failure(self) -> str:
        """What an unprotected face still is, for the record (``recognised``...)."""
        ...


def nearest_identity(e: torch.Tensor, gallery: Mapping[str, torch.Tensor]) -> tuple[str | None, float | None]:
    """The gallery identity nearest to descriptor ``e`` ``[128]`` and its distance (``None`` if empty)."""
    name, dist = None, None
    for n, g in gallery.items():
        d = float(torch.linalg.vector_norm(g.to(e) - e, dim=1).min())
        if dist is None or d < dist:
            name, dist = n, d
    return name, dist


def _r(v: float | None, nd: int = 4) -> float | None:
    """``v`` rounded to ``nd`` decimals for a record; ``None`` for a missing or non-finite value."""
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


# ------------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------------
class _KnownOrSelf:
    """References of dodging and hiding: the gallery identity a face matches, else its own descriptor."""

    ctx: FaceContext

    def references(self, clean_emb: torch.Tensor) -> tuple[list[torch.Tensor], list[str | None]]:
        refs: list[torch.Tensor] = []
        names: list[str | None] = []
        for e in clean_emb:
            name, dist = nearest_identity(e, self.ctx.gallery)
            if name is not None and dist is not None and dist < self.ctx.threshold:
                refs.append(self.ctx.gallery[name])  # the identity the gallery knows it as
                names.append(name)
            else:
                refs.append(e[None].clone())  # its own clean descriptor
                names.append(None)
        return refs, names


class _EmbeddingStrategy:
    """Shared parts of the descriptor goals: entries are alignments (the landmarks and up to 4 nearby
    ones, :func:`~jndkit.face.boxes.jitter_landmarks`); a failed round adds the alignment of each
    fresh detection that the check did not find protected; the verdict compares descriptors."""

    kind = ""
    ctx: FaceContext
    kappa: float
    #: verdict of a face the fresh detection no longer finds
    missing_is_protected = False

    def entries(self, image: torch.Tensor, faces: list[Face]) -> list[Entry]:
        return [(i, Face(f.box, f.prob, lm)) for i, f in enumerate(faces)
                for lm in jitter_landmarks(f.landmarks, self.ctx.jitter)]

    def bounds(self, face: Face) -> Rect:
        return chip_bounds(face_chip_details(face.landmarks, "mtcnn"))

    def _passes(self, distance: float) -> bool:
        raise NotImplementedError  # pragma: no cover

    def verdict(self, image: torch.Tensor, again: Face | None, ref: torch.Tensor) -> dict[str, Any]:
        if again is None:
            return {"protected": self.missing_is_protected}
        e = embed_faces(image, [again], self.ctx.net)[0]
        d = float(torch.linalg.vector_norm(ref.to(e) - e, dim=1).min())
        name, gd = nearest_identity(e, self.ctx.gallery)
        return {"distance_after": _r(d),
                "identity_after": name if gd is not None and gd < self.ctx.threshold else None,
                "gallery_distance_after": _r(gd), "protected": self._passes(d)}

    def retry(self, saved: torch.Tensor, faces: list[Face], entries: list[Entry],
              checks: list[dict[str, Any]], again: list[Face | None]) -> list[Entry]:
        added: list[Entry] = []
        for i, (c, a) in enumerate(zip(checks, again)):
            if a is None or c["protected"]:
                continue
            if not any(j == i and torch.equal(a.landmarks, f.landmarks) for j, f in entries + added):
                added.append((i, a))
        return added

    def _victim(self, entries: list[Entry]) -> FacesVictim:
        return FacesVictim(self.ctx.net, [[f for _, f in entries]])


class DodgeStrategy(_KnownOrSelf, _EmbeddingStrategy):
    """``dodge``: no face recognised as itself (its gallery identity, else its clean descriptor).

    A face dodged without a gallery identity is measured, in each of its alignments, from *that
    alignment's* clean descriptor, as another recogniser compares its own clean and protected
    descriptors: the alignment alone moves a descriptor by up to about 0.1, which would otherwise
    count as protection in one alignment and against it in another. A face the fresh detection no
    longer finds is protected (nothing is left to recognise). Default kappa: :data:`SELF_DODGE_KAPPA`
    without a gallery, :data:`~jndkit.face.goals.DEFAULT_FACE_KAPPA` with one.
    """

    kind = "dodge"
    missing_is_protected = True

    def __init__(self, ctx: FaceContext, arg: str | None, kappa: float | None, rounds: int | None) -> None:
        self.ctx, self.spec = ctx, "dodge"
        self.kappa = float(kappa) if kappa is not None else (DEFAULT_FACE_KAPPA if ctx.gallery else SELF_DODGE_KAPPA)
        self.rounds = int(rounds) if rounds is not None else DEFAULT_ROUNDS

    def reference_label(self, name: str | None) -> str | None:
        return name if name is not None else "self"

    def _passes(self, distance: float) -> bool:
        return distance >= self.ctx.threshold

    def victim_goal(self, entries: list[Entry], refs: list[torch.Tensor], names: list[str | None],
                    crop: torch.Tensor) -> tuple[nn.Module, Goal]:
        victim = self._victim(entries)
        if any(names[i] is None for i, _ in entries):
            with torch.no_grad():
                own = victim(crop)[0]  # [E,128]
            per_entry = [own[j][None] if names[i] is None else refs[i] for j, (i, _) in enumerate(entries)]
        else:
            per_entry = [refs[i] for i, _ in entries]
        return victim, Dodge(stack_references([per_entry]), threshold=self.ctx.threshold, kappa=self.kappa)

    def failure(self) -> str:
        return "recognised"


class ImpersonateStrategy(_EmbeddingStrategy):
    """``impersonate:NAME``: every face recognised as gallery identity NAME (default kappa
    :data:`IMPERSONATE_KAPPA`). A face the fresh detection no longer finds is not protected.

    Raises:
        InputError: NAME is not in the gallery.
    """

    kind = "impersonate"

    def __init__(self, ctx: FaceContext, arg: str | None, kappa: float | None, rounds: int | None) -> None:
        if not arg:
            raise InputError("impersonate needs a gallery identity: impersonate:NAME")
        if arg not in ctx.gallery:
            have = ", ".join(sorted(ctx.gallery)) or "no gallery given"
            raise InputError(f"impersonate:{arg} needs {arg!r} in the gallery ({have})")
        self.ctx, self.target_name, self.spec = ctx, arg, f"impersonate:{arg}"
        self.kappa = float(kappa) if kappa is not None else IMPERSONATE_KAPPA
        self.rounds = int(rounds) if rounds is not None else DEFAULT_ROUNDS

    def references(self, clean_emb: torch.Tensor) -> tuple[list[torch.Tensor], list[str | None]]:
        n = clean_emb.shape[0]
        return [self.ctx.gallery[self.target_name] for _ in range(n)], [self.target_name] * n

    def reference_label(self, name: str | None) -> str | None:
        return name

    def _passes(self, distance: float) -> bool:
        return distance < self.ctx.threshold

    def victim_goal(self, entries: list[Entry], refs: list[torch.Tensor], names: list[str | None],
                    crop: torch.Tensor) -> tuple[nn.Module, Goal]:
        per_entry = [refs[i] for i, _ in entries]
        return self._victim(entries), Impersonate(stack_references([per_entry]), threshold=self.ctx.threshold,
                                                  kappa=self.kappa)

    def failure(self) -> str:
        return f"not recognised as {self.target_name}"


class HideStrategy(_KnownOrSelf):
    """``hide``: stock MTCNN finds none of the faces.

    Hiding works on logits, not probabilities (a clear face's softmax probability is within 1e-6 of
    1, where its gradient vanishes): ONet's face logit is pushed below ``log(0.7/0.3) - kappa`` on
    the boxes about each face (the MTCNN box, 26 shifted and scaled copies,
    :func:`~jndkit.face.boxes.jitter_box`, and every box stock MTCNN hands its ONet on the clean
    photo); a failed round adds the boxes stock MTCNN handed its ONet on that round's result.
    Default kappa :data:`~jndkit.face.goals.DEFAULT_HIDE_KAPPA` (logit), rounds :data:`HIDE_ROUNDS`.
    """

    kind = "hide"

    def __init__(self, ctx: FaceContext, arg: str | None, kappa: float | None, rounds: int | None) -> None:
        self.ctx, self.spec = ctx, "hide"
        self.kappa = float(kappa) if kappa is not None else DEFAULT_HIDE_KAPPA
        self.rounds = int(rounds) if rounds is not None else HIDE_ROUNDS

    def reference_label(self, name: str | None) -> str | None:
        return name

    def entries(self, image: torch.Tensor, faces: list[Face]) -> list[Entry]:
        entries = [(i, Face(b, f.prob, f.landmarks)) for i, f in enumerate(faces)
                   for b in jitter_box(f.box, self.ctx.hide_jitter)]
        return entries + self._candidates(image, faces, entries)

    def bounds(self, face: Face) -> Rect:
        return face.box

    def victim_goal(self, entries: list[Entry], refs: list[torch.Tensor], names: list[str | None],
                    crop: torch.Tensor) -> tuple[nn.Module, Goal]:
        victim = FaceHideVictim(self.ctx.detector, [[f for _, f in entries]], self.ctx.hide_stages)
        return victim, Hide(kappa=self.kappa)

    def verdict(self, image: torch.Tensor, again: Face | None, ref: torch.Tensor) -> dict[str, Any]:
        return {"protected": again is None}

    def retry(self, saved: torch.Tensor, faces: list[Face], entries: list[Entry],
              checks: list[dict[str, Any]], again: list[Face | None]) -> list[Entry]:
        return self._candidates(saved, faces, entries)

    def _candidates(self, image: torch.Tensor, faces: list[Face], known: list[Entry]) -> list[Entry]:
        """The boxes stock MTCNN gives its last net (ONet) on ``image`` that lie over a clean face and
        that ``known`` does not hold yet (the face is found exactly when ONet accepts one of them)."""
        out: list[Entry] = []
        have = [f.box for _, f in known]
        for b in self.ctx.detector.candidates(image)["onet"].tolist():
            box = (b[0], b[1], b[2], b[3])
            if any(max(abs(p - q) for p, q in zip(box, h)) < 0.5 for h in have):
                continue
            for i, f in enumerate(faces):
                if over(f.box, box):
                    out.append((i, Face(box, f.prob, f.landmarks)))
                    have.append(box)
                    break
        return out

    def failure(self) -> str:
        return "found"


# ------------------------------------------------------------------------------------------------
# The goals by their CLI spelling
# ------------------------------------------------------------------------------------------------
#: Builds a strategy: ``factory(context, argument, kappa, rounds)`` (``None``: the goal's default).
FaceGoalFactory = Callable[[FaceContext, "str | None", "float | None", "int | None"], FaceStrategy]


@dataclass(frozen=True)
class _FaceGoalFactory:
    """What :func:`jndkit.goals.parse_goal` calls for a registered face goal: it names the goal as a
    :class:`FaceGoalSpec` (``kind``, argument) and keeps the ``strategy`` factory that
    :meth:`FaceGoalSpec.build` calls."""

    kind: str
    strategy: FaceGoalFactory

    def __call__(self, argument: str | None, kappa: float) -> FaceGoalSpec:
        return FaceGoalSpec(self.kind, argument)


#: The face goals by prefix: the ``face`` table of :func:`jndkit.goals.goal_registry` (the same dict).
_FACE_GOALS: dict[str, RegisteredGoal] = goal_registry("face")


def register_face_goal(prefix: str, factory: FaceGoalFactory, *, argument: str | None = None,
                       meaning: str = "an argument") -> None:
    """Make ``prefix`` (or ``prefix:ARGUMENT`` when ``argument`` names one) a face goal.

    ``factory(context, argument, kappa, rounds)`` builds its :class:`FaceStrategy`; ``meaning`` says
    what the argument is (``a gallery identity``) in the error for a missing one. The goal is
    registered in :func:`jndkit.goals.register_goal`'s table under ``task="face"``.

    Raises:
        InputError: ``prefix`` is empty, holds a colon or a space, or is registered already.
    """
    register_goal(prefix, _FaceGoalFactory(prefix.lower(), factory), task="face", argument=argument, meaning=meaning)


def face_goal_usage() -> str:
    """The registered spellings, e.g. ``dodge, impersonate:NAME or hide``."""
    return goal_usage("face")


class FaceGoalSpec(NamedTuple):
    """A parsed face goal: ``kind`` (the registered prefix) and ``name`` (its argument, if any).

    Unpacks as the ``(kind, name)`` pair :func:`parse_face_goal` always gave.
    """

    kind: str
    name: str | None

    def build(self, ctx: FaceContext, kappa: float | None = None, rounds: int | None = None) -> FaceStrategy:
        """The strategy of this goal over ``ctx`` (``kappa``, ``rounds``: ``None`` for the goal's defaults)."""
        factory = _FACE_GOALS[self.kind].factory
        if not isinstance(factory, _FaceGoalFactory):
            raise InputError(f"face goal {self.kind!r} was not registered with register_face_goal; it has no strategy")
        return factory.strategy(ctx, self.name, kappa, rounds)


def parse_face_goal(spec: str) -> FaceGoalSpec:
    """``dodge`` / ``hide`` / ``impersonate:NAME`` (or any :func:`register_face_goal` prefix) ->
    ``(kind, name)``. The prefix is case-blind, the argument is kept as written.

    Raises:
        InputError: an unknown goal, or a missing argument (``impersonate:``).
    """
    parsed = parse_goal(spec, task="face")
    if not isinstance(parsed, FaceGoalSpec):
        raise InputError(f"face goal {spec!r} was not registered with register_face_goal; it has no strategy")
    return parsed


register_face_goal("dodge", DodgeStrategy)
register_face_goal("impersonate", ImpersonateStrategy, argument="NAME", meaning="a gallery identity")
register_face_goal("hide", HideStrategy)
