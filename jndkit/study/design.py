"""Trial design of the visibility study: which images are compared, in which order, on which side.

A study compares one folder of originals with one or more folders of protected photos (one folder
per *method*). Photos are matched by their path relative to the folder without the suffix, so
``a/cat.jpg`` matches ``a/cat.png`` (protect may change the format). Every participant sees

* a **flicker block** (two-alternative forced choice, after the flicker paradigm of ISO/IEC 29170-2):
  two panels side by side; one alternates original / protected, the other original / original.
  Questions: "which side is altered?" (left / right, forced) and "did you see it change?" (yes / no);
* a **rating block** (double-stimulus impairment scale, ITU-R BT.500): the original ("reference")
  beside the protected photo ("test"), rated 5 imperceptible ... 1 very annoying.

Each block holds every (image, method) pair once plus catch trials: ``noise`` (the original against a
copy with strong Gaussian noise: anyone looking sees it) and ``identical`` (the original against
itself: nothing to see). Catch trials check that the participant looks and answers honestly.

The order is random but balanced, and the same for the same ``(seed, participant)``, so a participant
who closes the tab resumes where they stopped:

* trials come in *rounds*: each round holds every method once (a random image each), so no method
  is seen mostly early or mostly late (fatigue and learning affect all methods alike);
* within a method, the altered side of the flicker block is left for half the images and right for
  the other half (at most one apart), assigned at random;
* the same image never appears in two consecutive trials when another order exists;
* catch trials are spread over the block (one per equal segment), never first;
* which block comes first is drawn per participant.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

from ..errors import InputError
from ..images import find_images

__all__ = [
    "BLOCKS", "CATCH_KINDS", "PARTICIPANT_RE", "Study", "StudyImage", "Trial", "check_participant", "match_folders",
    "plan_trials",
]

Block = Literal["flicker", "rating"]
Kind = Literal["test", "noise", "identical"]
Side = Literal["left", "right", "none"]

BLOCKS: tuple[Block, ...] = ("flicker", "rating")
CATCH_KINDS: tuple[Kind, ...] = ("noise", "identical")
PARTICIPANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""A participant id: letters, digits, ``_`` and ``-``, at most 64 (it names the results file)."""
_MAX_LISTED = 5


def check_participant(pid: str) -> str:
    """Return ``pid`` if it is a valid participant id, else raise :class:`InputError`."""
    if not PARTICIPANT_RE.match(pid):
        raise InputError(
            f"participant id {pid!r}: use 1-64 letters, digits, '_' or '-' (starting with a letter or digit)"
        )
    return pid


@dataclass(frozen=True)
class StudyImage:
    """One original and its protected versions.

    Attributes:
        key: the path relative to the originals folder without suffix, with ``/`` separators.
        original: the original file.
        protected: method name -> protected file, for every method of the study.
    """

    key: str
    original: Path
    protected: dict[str, Path]


@dataclass(frozen=True)
class Study:
    """The matched images and the settings that fix every participant's plan.

    Attributes:
        images: matched images, sorted by key.
        methods: method names (from the protected folders' names), in the order given.
        seed: the study seed; a participant's plan depends on ``(seed, participant id)`` only.
        catch: number of catch trials of each kind (noise, identical) in each block.
        noise_sigma: standard deviation of the noise catch trials, in 8-bit levels.
        flicker_ms: how long each frame of the flicker block is shown, in milliseconds.
        crop: side of the centre crop shown, in pixels (0: the whole photo).
    """

    images: tuple[StudyImage, ...]
    methods: tuple[str, ...]
    seed: int = 0
    catch: int = 1
    noise_sigma: float = 40.0
    flicker_ms: int = 200
    crop: int = 0

    @property
    def fingerprint(self) -> str:
        """12 hex digits identifying the design (images, methods and settings); recorded with every answer."""
        desc = {
            "images": [[im.key, str(im.original), {m: str(p) for m, p in im.protected.items()}] for im in self.images],
            "methods": list(self.methods),
            "settings": [self.seed, self.catch, self.noise_sigma, self.flicker_ms, self.crop],
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]

    def image(self, key: str) -> StudyImage:
        """The image with this key (:class:`KeyError` if none)."""
        for im in self.images:
            if im.key == key:
                return im
        raise KeyError(key)


@dataclass(frozen=True)
class Trial:
    """One trial of a participant's plan.

    Attributes:
        index: position in the plan, 0-based.
        block: ``flicker`` (2AFC) or ``rating`` (impairment scale).
        kind: ``test`` (a protected photo), ``noise`` or ``identical`` (catch trials).
        image: key of the image.
        method: method name for ``test`` trials, ``""`` for catch trials.
        altered: the side that alternates with the altered image in the flicker block
            (``left``/``right``; ``none`` for identical pairs and for the rating block).
    """

    index: int
    block: Block
    kind: Kind
    image: str
    method: str
    altered: Side

    @property
    def trial_id(self) -> str:
        """A readable id, unique within a plan: ``block:kind:image:method:side``."""
        return f"{self.block}:{self.kind}:{self.image}:{self.method}:{self.altered}"

    def to_dict(self) -> dict[str, object]:
        """The trial as a JSON-ready dict (with ``trial_id``)."""
        return {**asdict(self), "trial_id": self.trial_id}


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def _index_folder(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for p in find_images([folder]):
        k = _key(p, folder)
        if k in found:
            raise InputError(f"{folder}: {found[k].name} and {p.name} have the same name; keep one of them")
        found[k] = p
    if not found:
        raise InputError(f"{folder}: no images in this folder")
    return found


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


def _method_names(folders: list[Path]) -> list[str]:
    names = [f.resolve().name or str(f) for f in folders]
    for i, name in enumerate(names):
        if names.count(name) > 1:  # two folders of the same name: add the parent folder
            names[i] = f"{folders[i].resolve().parent.name}/{name}"
    if len(set(names)) < len(names):
        raise InputError(f"protected folders {', '.join(map(str, folders))}: two have the same name; rename one")
    return names


def match_folders(originals: Path, protected: list[Path], *, intersection: bool = False) -> Study:
    """Match the originals with each folder of protected photos by relative path without suffix.

    Args:
        originals: folder of the original photos (searched recursively).
        protected: one folder per method; the method is named after the folder.
        intersection: keep only images present in every folder instead of refusing unmatched ones.

    Returns:
        A :class:`Study` with default settings (use :func:`dataclasses.replace` to change them).

    Raises:
        InputError: a folder is missing or empty, a file has no match (the message names the folder
            and up to five files), two files of one folder differ only by suffix, or nothing matches.
    """
    if not protected:
        raise InputError("give at least one folder of protected photos after the originals")
    orig = _index_folder(originals)
    methods = _method_names(protected)
    prot = [_index_folder(f) for f in protected]
    keys = set(orig)
    for folder, idx in zip(protected, prot, strict=True):
        if intersection:
            keys &= set(idx)
            continue
        extra = sorted(set(idx) - set(orig))
        if extra:
            raise InputError(f"{folder}: no original in {originals} for {_listed(extra)}")
        missing = sorted(set(orig) - set(idx))
        if missing:
            raise InputError(f"{folder}: no protected version of {_listed(missing)} (from {originals})")
    if not keys:
        raise InputError(f"{originals}: no image is present in every folder")
    images = tuple(
        StudyImage(k, orig[k], {m: idx[k] for m, idx in zip(methods, prot, strict=True)}) for k in sorted(keys)
    )
    return Study(images=images, methods=tuple(methods))


def _participant_rng(study: Study, participant: str) -> random.Random:
    digest = hashlib.sha256(f"{study.seed}:{participant}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _sides(n: int, rng: random.Random) -> list[Side]:
    """``n`` sides, half left and half right (the odd one drawn), shuffled."""
    left: list[Side] = ["left"]
    right: list[Side] = ["right"]
    sides = left * (n // 2) + right * (n // 2)
    if n % 2:
        sides.append("left" if rng.random() < 0.5 else "right")
    rng.shuffle(sides)
    return sides


def _rounds(study: Study, rng: random.Random) -> list[tuple[str, str]]:
    """Every (image, method) once, in rounds that hold every method once, no image twice in a row if avoidable."""
    keys = [im.key for im in study.images]
    best: list[tuple[str, str]] = []
    best_repeats = len(keys) * len(study.methods) + 1
    for _ in range(50):  # a few random draws; keep the first with no image twice in a row
        perms = {m: rng.sample(keys, len(keys)) for m in study.methods}
        order: list[tuple[str, str]] = []
        for r in range(len(keys)):
            rnd = [(perms[m][r], m) for m in study.methods]
            rng.shuffle(rnd)
            order.extend(rnd)
        repeats = sum(a[0] == b[0] for a, b in pairwise(order))
        if repeats < best_repeats:
            best, best_repeats = order, repeats
        if repeats == 0:
            break
    return best


def _block(study: Study, block: Block, rng: random.Random) -> list[tuple[Kind, str, str, Side]]:
    pairs = _rounds(study, rng)
    side_of: dict[tuple[str, str], Side] = {}
    for m in study.methods:
        keys = [k for k, mm in pairs if mm == m]
        for k, s in zip(keys, _sides(len(keys), rng), strict=True):
            side_of[(k, m)] = s if block == "flicker" else "none"
    trials: list[tuple[Kind, str, str, Side]] = [("test", k, m, side_of[(k, m)]) for k, m in pairs]
    catches: list[tuple[Kind, str, str, Side]] = []
    noise_sides = _sides(study.catch, rng)
    for i in range(study.catch):
        side: Side = noise_sides[i] if block == "flicker" else "none"
        catches.append(("noise", rng.choice(study.images).key, "", side))
        catches.append(("identical", rng.choice(study.images).key, "", "none"))
    rng.shuffle(catches)
    # one catch trial in each of len(catches) equal segments of the block, never at position 0
    n, c = len(trials), len(catches)
    positions = sorted(rng.randint(max(1, i * n // c), max(1, (i + 1) * n // c)) for i in range(c))
    for offset, (pos, catch) in enumerate(zip(positions, catches, strict=True)):
        trials.insert(pos + offset, catch)
    return trials


def plan_trials(study: Study, participant: str) -> list[Trial]:
    """The plan of one participant: both blocks, in an order drawn from ``(study.seed, participant)``.

    The same arguments give the same plan (this is how a participant resumes). Each block has
    ``len(images) * len(methods)`` test trials and ``2 * study.catch`` catch trials.
    """
    check_participant(participant)
    rng = _participant_rng(study, participant)
    blocks: list[Block] = list(BLOCKS)
    rng.shuffle(blocks)
    plan: list[Trial] = []
    for block in blocks:
        for kind, key, method, side in _block(study, block, rng):
            plan.append(Trial(len(plan), block, kind, key, method, side))
    return plan
