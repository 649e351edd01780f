"""The goal classes: what "fooled" means for a classifier, alone or over a panel.

See :mod:`jndkit.goals` for the protocol (``bind``, ``margin``, ``reached``, ``loss``, ``weights``).
Moved verbatim from the former ``jndkit/goals.py`` (issue 11).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError

DEFAULT_KAPPA = 0.05
"""Default success margin in logits: small, but above the ~1e-5 noise of batch size and BLAS."""


def _max_other(logits: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """Largest logit over classes where ``exclude`` (bool ``[B,C]``) is false."""
    return logits.masked_fill(exclude, float("-inf")).amax(dim=1)


def _onehot(labels: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(labels.long(), n).to(torch.float32)


@dataclass
class Goal:
    """Base class. Subclasses define ``_bind``, ``margin`` and ``loss``."""

    kappa: float = DEFAULT_KAPPA
    bound: bool = field(default=False, init=False, repr=False)

    # -- binding -------------------------------------------------------------------
    def bind(self, clean_outputs: torch.Tensor, victim: Any = None) -> "Goal":
        """Return a copy with per-sample tensors filled from the clean outputs ``[B,C]``."""
        g = dataclasses.replace(self)
        g._bind(clean_outputs.detach(), victim)
        g.bound = True
        return g

    def _bind(self, clean: torch.Tensor, victim: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _need_bound(self) -> None:
        if not self.bound:
            raise InputError(f"{type(self).__name__} must be bound to a batch with .bind(clean_outputs) first")

    def __getitem__(self, index: torch.Tensor) -> "Goal":
        """The goal restricted to samples ``index`` (a long or bool tensor)."""
        self._need_bound()
        g = dataclasses.replace(self)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor) and v.ndim >= 1:
                setattr(g, f.name, v[index])
        g.bound = True
        return g

    # -- interface -----------------------------------------------------------------
    def margin(self, outputs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def reached(self, outputs: torch.Tensor) -> torch.Tensor:
        """``bool[B]``: the goal holds with margin ``kappa``."""
        return self.margin(outputs) > self.kappa

    def weights(self, n_classes: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(away, toward)`` class weights ``[B,C]``, or ``None`` for goals not on classes."""
        return None

    def describe(self) -> str:
        return type(self).__name__


@dataclass
class Untargeted(Goal):
    """Leave the true class: ``margin = max_{j != y} z_j - z_y``.

    ``labels=None`` takes the clean prediction as the true class (the usual
    case for protection: whatever the machine sees now, it must not see it).
    Loss: ``log softmax(z)_y`` (minus the cross-entropy of the true class).
    """

    labels: Any = None  # tensor [B], an int, a class name, or None (the clean prediction)

    def _bind(self, clean: torch.Tensor, victim: Any) -> None:
        if self.labels is None:
            self.labels = clean.argmax(dim=1)
        else:
            labels = self.labels
            if isinstance(labels, str):
                if victim is None or not hasattr(victim, "class_index"):
                    raise InputError(f"class {labels!r} given by name needs a victim with class names")
                labels = victim.class_index(labels)
            self.labels = torch.as_tensor(labels, device=clean.device).long().reshape(-1)
            if self.labels.numel() == 1 and clean.shape[0] > 1:
                self.labels = self.labels.expand(clean.shape[0]).clone()
            if self.labels.numel() != clean.shape[0]:
                raise InputError(f"got {self.labels.numel()} labels for a batch of {clean.shape[0]}")

    def _true_mask(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        assert self.labels is not None
        return F.one_hot(self.labels, outputs.shape[1]).bool()

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        mask = self._true_mask(outputs)
        z_y = outputs.gather(1, self.labels.view(-1, 1)).squeeze(1)  # type: ignore[union-attr]
        return _max_other(outputs, mask) - z_y

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        return -F.cross_entropy(outputs, self.labels, reduction="none")  # type: ignore[arg-type]

    def weights(self, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._need_bound()
        away = _onehot(self.labels, n_classes)  # type: ignore[arg-type]
        return away, torch.zeros_like(away)

    def describe(self) -> str:
        return "untargeted"


@dataclass
class Targeted(Goal):
    """Reach class ``target``: ``margin = z_t - max_{j != t} z_j``; loss = CE(z, t).

    ``target`` is an int (same for the batch) or a tensor ``[B]``.
    """

    target: Any = None

    def _bind(self, clean: torch.Tensor, victim: Any) -> None:
        if self.target is None:
            raise InputError("Targeted needs a target class")
        t = self.target
        if isinstance(t, str) and victim is not None:
            t = victim.class_index(t)
        t = torch.as_tensor(t, device=clean.device).long().reshape(-1)
        if t.numel() == 1:
            t = t.expand(clean.shape[0]).clone()
        if t.numel() != clean.shape[0]:
            raise InputError(f"got {t.numel()} targets for a batch of {clean.shape[0]}")
        if int(t.min()) < 0 or int(t.max()) >= clean.shape[1]:
            raise InputError(f"target class out of range 0..{clean.shape[1] - 1}")
        self.target = t

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        mask = F.one_hot(self.target, outputs.shape[1]).bool()
        z_t = outputs.gather(1, self.target.view(-1, 1)).squeeze(1)
        return z_t - _max_other(outputs, mask)

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        return F.cross_entropy(outputs, self.target, reduction="none")

    def weights(self, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._need_bound()
        toward = _onehot(self.target, n_classes)
        return torch.zeros_like(toward), toward

    def describe(self) -> str:
        return "targeted"


@dataclass
class LeastLikely(Targeted):
    """Targeted at the class with the lowest clean logit (seed 001's default target)."""

    def _bind(self, clean: torch.Tensor, victim: Any) -> None:
        self.target = clean.argmin(dim=1)

    def describe(self) -> str:
        return "least-likely"


@dataclass
class NotInTopK(Untargeted):
    """Push the true class out of the top ``k`` (seed 004 uses k = 5).

    ``margin = (k-th largest logit among j != y) - z_y``.
    """

    k: int = 5

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        mask = self._true_mask(outputs)
        others = outputs.masked_fill(mask, float("-inf"))
        kth = others.topk(self.k, dim=1).values[:, -1]
        z_y = outputs.gather(1, self.labels.view(-1, 1)).squeeze(1)  # type: ignore[union-attr]
        return kth - z_y

    def describe(self) -> str:
        return f"top{self.k}"


@dataclass
class ConfidenceMargin(Untargeted):
    """A wrong class with probability at least ``confidence`` (seed 000 Table 3).

    ``margin = min(max_{j!=y} z_j - z_y, log p_{j*} - log c)``: both the flip
    and the confidence must hold.
    """

    confidence: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise InputError(f"confidence must be in (0,1), got {self.confidence}")

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        flip = super().margin(outputs)
        logp = outputs.log_softmax(dim=1).masked_fill(self._true_mask(outputs), float("-inf"))
        return torch.minimum(flip, logp.amax(dim=1) - math.log(self.confidence))

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        # Leave y and grow the strongest other class.
        logp = outputs.log_softmax(dim=1)
        other = logp.masked_fill(self._true_mask(outputs), float("-inf")).amax(dim=1)
        return super().loss(outputs) - other

    def describe(self) -> str:
        return f"margin:{self.confidence:g}"


@dataclass
class RelativeMargin(Untargeted):
    """New top-1 with the true class at most ``(1 - gap)`` times its probability (seed 004, Top1-L1-50).

    ``margin = min(max_{j!=y} z_j - z_y, (log p_top - log p_y) + log(1 - gap))``.
    """

    gap: float = 0.5

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        flip = super().margin(outputs)
        z_y = outputs.gather(1, self.labels.view(-1, 1)).squeeze(1)  # type: ignore[union-attr]
        rel = outputs.amax(dim=1) - z_y + math.log(1.0 - self.gap)
        return torch.minimum(flip, rel)

    def describe(self) -> str:
        return f"relative:{self.gap:g}"


PRIVACY_MAX_PROB = 0.1
"""Privacy goal: the clean class keeps at most this probability (besides leaving the top-5).

Out of the top-5 alone can leave the clean class at 0.15 when the answer is spread over many
classes; at <= 0.1 no member gives the class more than one chance in ten. 0.05 was tried first:
on the protective benchmark (docs/world.md) and on 2- and 12-megapixel photos it failed photos whose
class had already left every member's top-5 after every upload, only on that clause."""


@dataclass
class Privacy(NotInTopK):
    """What protection means: the clean class leaves the top-``k`` **and** its probability falls
    to at most ``max_prob``.

    ``margin = min(kth_{j != y} z_j - z_y, log max_prob - log p_y)`` (logits / log-probabilities:
    both hold when it is positive; ``kappa`` asks for a little more).
    Loss: ``log p_y`` plus a hinge that pushes ``z_y`` under the ``k``-th other logit, so the
    gradient keeps working on the top-``k`` condition once ``p_y`` is small.
    """

    max_prob: float = PRIVACY_MAX_PROB

    def __post_init__(self) -> None:
        if not 0.0 < self.max_prob < 1.0:
            raise InputError(f"privacy probability must be in (0,1), got {self.max_prob}")
        if self.k < 1:
            raise InputError(f"privacy needs k >= 1, got {self.k}")

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        topk = super().margin(outputs)
        logp = outputs.log_softmax(dim=1).gather(1, self.labels.view(-1, 1)).squeeze(1)  # type: ignore[union-attr]
        return torch.minimum(topk, math.log(self.max_prob) - logp)

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        logp = outputs.log_softmax(dim=1).gather(1, self.labels.view(-1, 1)).squeeze(1)  # type: ignore[union-attr]
        return logp + F.relu(self.kappa - NotInTopK.margin(self, outputs))

    def describe(self) -> str:
        return f"privacy:{self.max_prob:g}"


@dataclass
class PanelGoal(Goal):
    """A goal over a panel (outputs ``[B,M,C]``): reached only when **every** member reaches it.

    ``inner`` is the per-member goal (unbound); binding binds it on the ``B*M`` member rows, so
    each member keeps its own clean answer (an untargeted or privacy goal leaves *that member's*
    clean class). ``margin = min_m margin_m`` (each with the same ``kappa``).

    Loss (``combine``):
      * ``"mean"``: the mean of the members' losses (a loss ensemble);
      * ``"focus"`` (default): a weighted mean with weights ``softmax(-margin_m / tau)``
        (detached): the members not yet fooled get most of the weight, so the step works where
        the panel still resists instead of pushing further on members already fooled.
    """

    inner: Any = None
    combine: str = "focus"
    tau: float = 1.0
    members: int = 0

    def __post_init__(self) -> None:
        if self.combine not in ("mean", "focus"):
            raise InputError(f"panel loss combine must be mean or focus, got {self.combine!r}")

    def bind(self, clean_outputs: torch.Tensor, victim: Any = None) -> "Goal":
        if clean_outputs.ndim != 3:
            raise InputError(f"a panel goal needs outputs [B,M,C], got {list(clean_outputs.shape)}")
        if self.inner is None:
            raise InputError("PanelGoal needs an inner goal")
        b, m, _ = clean_outputs.shape
        inner = dataclasses.replace(self.inner)
        for name in ("labels", "target"):  # per-photo labels given by the user: one per member row
            v = getattr(inner, name, None)
            if isinstance(v, torch.Tensor) and v.ndim == 1 and v.numel() == b and b > 1:
                setattr(inner, name, v.repeat_interleave(m))
        g = dataclasses.replace(self, kappa=self.inner.kappa)
        g.inner = inner.bind(clean_outputs.detach().flatten(0, 1), victim)
        g.members = m
        g.bound = True
        return g

    def __getitem__(self, index: torch.Tensor) -> "Goal":
        self._need_bound()
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().squeeze(1)
        idx = idx.reshape(-1).long()
        rows = (idx[:, None] * self.members + torch.arange(self.members, device=idx.device)).reshape(-1)
        g = dataclasses.replace(self)
        g.inner = self.inner[rows]
        g.bound = True
        return g

    def member_margins(self, outputs: torch.Tensor) -> torch.Tensor:
        """``[B,M]``: each member's margin."""
        self._need_bound()
        b, m, c = outputs.shape
        return self.inner.margin(outputs.reshape(b * m, c)).view(b, m)  # type: ignore[no-any-return]

    def margin(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.member_margins(outputs).amin(dim=1)

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        self._need_bound()
        b, m, c = outputs.shape
        flat = outputs.reshape(b * m, c)
        per = self.inner.loss(flat).view(b, m)
        if self.combine == "mean":
            return per.mean(dim=1)
        with torch.no_grad():
            w = (-self.inner.margin(flat).view(b, m) / self.tau).softmax(dim=1)
        return (w * per).sum(dim=1)

    def describe(self) -> str:
        return f"{self.inner.describe()} (every member)"
