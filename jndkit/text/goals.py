"""Text goals: ``unreadable`` (every text region) and ``redact:REGEX`` (only the regions whose clean
reading matches REGEX; the others must stay readable).

A region is **unreadable** when the OCR finds no text there, or when its reading has a character error
rate (CER, :func:`jndkit.text.ocr.cer`) of at least :data:`UNREADABLE_CER` against the clean reading.
A kept region is **readable** when its CER stays below that.

:class:`Unreadable` is the engine goal over :class:`~jndkit.text.victim.TextVictim` outputs
``[B,R,T,C]`` (rows grouped by region, ``victim.groups``):

* ``margin`` = min over target rows of ``CER_row - 0.5 + 1e-3`` (the 1e-3 makes ``CER = 0.5 + kappa``
  count; CERs are multiples of ``1/len``), and over kept rows of ``0.5 - 1e-3 - CER_row``; with the
  detector row, a target row also counts when CRAFT's score in its box is below ``text_threshold``.
  Reached, as every engine goal, when ``margin > kappa``: ``kappa`` is the extra CER asked on the fixed
  boxes, because the from-scratch judge re-detects the text and reads slightly different boxes;
* ``loss`` = minus the CTC negative log-likelihood of each target row's clean reading (capped): the
  clean text made unlikely over *every* alignment. (A per-frame hinge on the clean greedy path was
  tried first and stalled: the recogniser moves a character to a neighbouring frame and reads the
  same text.) With the detector row, plus ``craft_weight`` times the mean of CRAFT's region score above
  ``low_text`` in the box and its peak above ``text_threshold - kappa`` (the detector finding no box
  is the cheaper way to the goal when it exists; measured in docs/text.md: at the human JND budget
  CRAFT's peaks stay near 0.95). ``ctc_weight`` scales the recogniser's term (0: detector only).

:class:`TextGoalSpec` is what the registered spellings (``jndkit.goals.parse_goal(spec, task="text")``)
give: it picks the target regions from the clean readings and builds the engine goal.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..goals import Goal, register_goal
from .ocr import cer
from .victim import TEXT_THRESHOLD, decode_greedy

__all__ = [
    "CTC_CAP",
    "DEFAULT_TEXT_KAPPA",
    "TEXT_THRESHOLD",
    "TIE_BREAK",
    "UNREADABLE_CER",
    "TextGoalSpec",
    "Unreadable",
]

UNREADABLE_CER = 0.5
"""A region whose reading has CER >= 0.5 against the clean reading is unreadable (issue 15)."""

DEFAULT_TEXT_KAPPA = 0.2
"""Extra CER the attack asks of the recogniser on the fixed clean boxes (so 0.7), because the
from-scratch judge re-detects the text and reads slightly different boxes."""

CTC_CAP = 30.0
"""Cap of each row's CTC negative log-likelihood in the loss (nats)."""

TIE_BREAK = 1e-4
"""Largest tie-break added to a target row's margin (:meth:`Unreadable.margin`)."""


@dataclass
class Unreadable(Goal):
    """Make target regions unreadable (and keep the others readable) on fixed boxes.

    Args:
        targets: ``bool[n_regions]`` regions to make unreadable (``None``: all).
        reference: the clean reading of each region (``None``: the victim's greedy reading of the
            clean outputs, per row).
        kappa: extra CER asked beyond :data:`UNREADABLE_CER` on target rows.
    """

    kappa: float = DEFAULT_TEXT_KAPPA
    targets: Any = None
    reference: Any = None
    groups: Any = field(default=None, repr=False)
    frames: Any = field(default=None, repr=False)
    labels: Any = field(default=None, repr=False)
    characters: str = field(default="", repr=False)
    detector: bool = False
    ctc_weight: float = 1.0
    craft_weight: float = 100.0

    def _bind(self, clean: torch.Tensor, victim: Any) -> None:
        if victim is None or not hasattr(victim, "groups"):
            raise InputError("Unreadable needs its TextVictim to bind (rows, frames, characters)")
        self.groups = victim.groups.to(clean.device)
        self.characters = victim.characters
        self.detector = bool(victim.detector)
        n = int(victim.n_regions)
        t = int(victim.lengths.max())
        self.frames = (torch.arange(t)[None] < victim.lengths[:, None]).to(clean.device)  # [R,T]
        self.labels = clean[:, :, :t].argmax(dim=-1)  # [B,R,T]
        if self.targets is None:
            tg = torch.ones(n, dtype=torch.bool)
        else:
            tg = torch.as_tensor(self.targets, dtype=torch.bool).reshape(-1)
            if tg.numel() != n:
                raise InputError(f"got {tg.numel()} target flags for {n} text regions")
        if not bool(tg.any()):
            raise InputError("no text region to make unreadable")
        self.targets = tg.to(clean.device)
        rows = decode_greedy(clean[:, :, :t].reshape(-1, t, clean.shape[-1]), self.characters)
        b, r = clean.shape[:2]
        if self.reference is None:
            self.reference = [rows[i * r:(i + 1) * r] for i in range(b)]
        else:
            ref = list(self.reference)
            if len(ref) != n:
                raise InputError(f"got {len(ref)} reference readings for {n} text regions")
            per_row = [str(ref[int(g)]) for g in self.groups.tolist()]
            self.reference = [list(per_row) for _ in range(b)]

    def __getitem__(self, index: torch.Tensor) -> Unreadable:
        """The goal restricted to samples ``index``: only ``labels`` and ``reference`` are per sample
        (``targets``, ``groups`` and ``frames`` are per region or row, shared)."""
        self._need_bound()
        g = dataclasses.replace(self)
        idx = index.nonzero().squeeze(1) if index.dtype == torch.bool else index.reshape(-1)
        g.labels = self.labels[idx]
        g.reference = [self.reference[int(i)] for i in idx.tolist()]
        g.bound = True
        return g

    def cers(self, outputs: torch.Tensor) -> torch.Tensor:
        """``[B,R]`` CER of each row's greedy reading against its clean reading."""
        self._need_bound()
        t = self.frames.shape[1]
        z = outputs[:, :, :t]
        b, r = z.shape[:2]
        texts = decode_greedy(z.reshape(b * r, t, z.shape[-1]), self.characters)
        vals = [cer(texts[i * r + j], self.reference[i][j]) for i in range(b) for j in range(r)]
        return torch.tensor(vals, dtype=torch.float32, device=outputs.device).reshape(b, r)

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        """``[B]``: the smallest row margin (see the module docstring). Target rows also get a tie-break
        below :data:`TIE_BREAK` that grows with the clean reading's CTC negative log-likelihood, so
        among images of equal CER the engine's best-so-far keeps the one furthest from the clean
        reading (a failed protection then writes its strongest attempt, not the clean image). CERs
        step by at least 1/len, far above it, so it never decides whether the goal is reached."""
        c = self.cers(outputs)
        tgt_rows = self.targets[self.groups]
        with torch.no_grad():
            nll = self.nll(outputs).double().clamp_min(0.0)
            tie = (TIE_BREAK * nll / (nll + 1.0)).to(c.dtype)  # resolves 1e-3 nats at float32
        m_t = c - UNREADABLE_CER + 1e-3 + tie
        if self.detector:
            score = outputs[:, :, -1, 0].float()
            m_t = torch.maximum(m_t, TEXT_THRESHOLD - score)
        m = m_t.masked_fill(~tgt_rows, float("inf")).amin(dim=1)
        if not bool(tgt_rows.all()):
            m_k = (UNREADABLE_CER - 1e-3 - c).masked_fill(tgt_rows, float("inf")).amin(dim=1)
            m = torch.minimum(m, m_k)
        return m

    def nll(self, outputs: torch.Tensor) -> torch.Tensor:
        """``[B,R]`` CTC negative log-likelihood (nats, over every alignment, ``F.ctc_loss``) of each
        row's clean reading."""
        self._need_bound()
        t = self.frames.shape[1]
        z = outputs[:, :, :t]
        b, r = z.shape[:2]
        lp = z.reshape(b * r, t, -1).float().log_softmax(-1).transpose(0, 1)  # [T,N,C]
        targets: list[int] = []
        lengths: list[int] = []
        for i in range(b):
            for j in range(r):
                idx = [self.characters.index(c) + 1 for c in self.reference[i][j] if c in self.characters]
                targets += idx
                lengths.append(len(idx))
        frames = self.frames.sum(dim=-1).repeat(b)
        nll: torch.Tensor = F.ctc_loss(lp, torch.tensor(targets, dtype=torch.long), frames,
                                       torch.tensor(lengths, dtype=torch.long), blank=0, reduction="none",
                                       zero_infinity=True).reshape(b, r)
        return nll

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        """Minus the CTC negative log-likelihood of each target row's clean reading (:meth:`nll`), each
        capped at :data:`CTC_CAP` so no row takes the whole budget (times ``ctc_weight``), plus the
        detector term (module docstring)."""
        nll = self.nll(outputs)
        tgt_rows = self.targets[self.groups].to(nll.dtype)
        total: torch.Tensor = -self.ctc_weight * (nll.clamp(max=CTC_CAP) * tgt_rows).sum(dim=1)
        if self.detector:
            det = outputs[:, :, -1].float()
            # every score above low_text (the components themselves), plus the box's peak above the
            # margin the goal asks (text_threshold - kappa)
            craft = det[..., 1] + torch.relu(det[..., 0] - (TEXT_THRESHOLD - self.kappa))
            total = total + self.craft_weight * (craft * tgt_rows).sum(dim=1)
        return total

    def describe(self) -> str:
        return "unreadable"


@dataclass(frozen=True)
class TextGoalSpec:
    """A text goal as the user spelt it: ``unreadable`` or ``redact:REGEX``.

    Attributes:
        kind: ``unreadable`` or ``redact``.
        pattern: the regular expression of ``redact`` (``re.search`` on each region's clean reading).
        kappa: extra CER the attack asks on the fixed boxes (:data:`DEFAULT_TEXT_KAPPA`).
    """

    kind: str
    pattern: str | None = None
    kappa: float = DEFAULT_TEXT_KAPPA

    def __post_init__(self) -> None:
        if self.kind not in ("unreadable", "redact"):
            raise InputError(f"unknown text goal {self.kind!r}; use unreadable or redact:REGEX")
        if self.kind == "redact":
            if not self.pattern:
                raise InputError("redact needs a regular expression: redact:REGEX")
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise InputError(f"redact:{self.pattern}: not a regular expression ({e})") from None

    @property
    def spec(self) -> str:
        """The goal as spelt on the command line."""
        return self.kind if self.pattern is None else f"{self.kind}:{self.pattern}"

    def targets(self, texts: list[str]) -> list[bool]:
        """Which regions (by their clean reading) must become unreadable."""
        if self.kind == "unreadable":
            return [True] * len(texts)
        rx = re.compile(str(self.pattern))
        return [rx.search(t) is not None for t in texts]

    def goal(self, targets: list[bool], reference: list[str] | None = None) -> Unreadable:
        """The engine goal for regions with these target flags (and clean readings)."""
        return Unreadable(kappa=self.kappa, targets=list(targets), reference=reference)


def _register() -> None:
    from ..goals import goal_registry

    table = goal_registry("text")
    if "unreadable" not in table:
        register_goal("unreadable", lambda arg, kappa: TextGoalSpec("unreadable"), task="text")
    if "redact" not in table:
        register_goal("redact", lambda arg, kappa: TextGoalSpec("redact", pattern=arg), task="text",
                      argument="REGEX", meaning="a regular expression")


_register()
