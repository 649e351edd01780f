"""Victim panels: several classifiers judged together.

A protected photo is read by a recogniser nobody named, so protection is optimised and judged
against a *panel*: every offline ImageNet classifier jndkit has by default. A panel is one victim
that owns each member's preprocessing (each member resizes and normalises the full-resolution
photo its own way, inside a differentiable forward) and returns the members' logits stacked:
``[B, M, C]``. Goals judge panels through :class:`jndkit.goals.PanelGoal`, which reaches its
goal only when **every** member does.

Named panels (:data:`PANELS`): ``imagenet`` = every installed built-in ImageNet classifier.
``--model a,b,c`` builds a panel of the named members.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import check_image_batch
from ..errors import InputError
from .classifier import ClassifierVictim

PANELS: dict[str, tuple[str, ...]] = {
    "imagenet": ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
}
"""Named panels. ``imagenet`` keeps only the members whose weights are installed."""


class PanelVictim(nn.Module):
    """Several classifiers over the same classes, as one victim.

    ``forward(x)`` takes ``[B,3,H,W]`` in [0,1] at any size and returns ``[B,M,C]`` logits
    (member ``m`` on row ``m``). Every member must have the same number of classes (the
    offline zoo is ImageNet-1k throughout); class names come from the first member.

    Args:
        members: the classifiers (at least one).
    """

    def __init__(self, members: Sequence[ClassifierVictim]) -> None:
        super().__init__()
        if len(members) == 0:
            raise InputError("a panel needs at least one member")
        n = {m.num_classes for m in members}
        if len(n) != 1:
            raise InputError(f"panel members must share their classes, got class counts {sorted(map(str, n))}")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise InputError(f"panel members must be distinct, got {names}")
        self.members = nn.ModuleList(members)
        self.labels = members[0].labels
        self.name = ",".join(names)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]  # type: ignore[union-attr]

    @property
    def num_classes(self) -> int | None:
        return self.members[0].num_classes  # type: ignore[union-attr,no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members], dim=1)

    def member(self, name: str) -> ClassifierVictim:
        for m in self.members:
            if m.name == name:  # type: ignore[union-attr]
                return m  # type: ignore[return-value]
        raise InputError(f"no member {name!r} in panel {self.name}")

    @torch.no_grad()
    def predict_members(self, x: torch.Tensor, k: int = 5) -> list[dict[str, list[tuple[str, float]]]]:
        """Per image, per member name, the top-``k`` (label, probability)."""
        check_image_batch(x)
        out: list[dict[str, list[tuple[str, float]]]] = [{} for _ in range(x.shape[0])]
        for m in self.members:
            for i, top in enumerate(m.predict(x, k)):  # type: ignore[operator]
                out[i][m.name] = top  # type: ignore[union-attr]
        return out

    @torch.no_grad()
    def predict(self, x: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-``k`` of the members' mean probability, per image (for one-line summaries)."""
        check_image_batch(x)
        probs = self(x).float().softmax(dim=2).mean(dim=1)
        vals, idx = probs.topk(min(k, probs.shape[1]), dim=1)
        return [[(self.label(j), p) for j, p in zip(i, v)] for v, i in zip(vals.tolist(), idx.tolist())]

    def label(self, index: int) -> str:
        return self.members[0].label(index)  # type: ignore[operator,no-any-return]

    def class_index(self, name_or_index: str | int) -> int:
        return self.members[0].class_index(name_or_index)  # type: ignore[operator,no-any-return]


def panel_members(spec: str) -> list[str]:
    """Member names of a ``--model`` value: a panel name, or a comma list of model names.

    ``imagenet`` keeps the installed members only (at least one must be installed).

    Raises:
        InputError: empty list or duplicate names.
        WeightsNotFoundError: ``imagenet`` and none of its members is installed.
    """
    from .zoo import MODELS

    s = spec.strip()
    if s in PANELS:
        names = [n for n in PANELS[s] if n not in MODELS or MODELS[n].weights_path() is not None]
        if not names:
            from ..errors import WeightsNotFoundError

            hint = "; ".join(MODELS[n].install_hint() for n in PANELS[s] if n in MODELS)
            raise WeightsNotFoundError(f"no member of panel {s!r} is installed ({hint})")
        return names
    names = [n.strip() for n in s.split(",") if n.strip()]
    if not names:
        raise InputError(f"--model needs a model name, a comma list or a panel ({', '.join(PANELS)}), got {spec!r}")
    if len(set(names)) != len(names):
        raise InputError(f"--model lists a model twice: {spec!r}")
    return names


def is_panel(spec: str) -> bool:
    """Whether a ``--model`` value names several members (a panel name or a comma list)."""
    return spec.strip() in PANELS or "," in spec


def load_panel(spec: str, device: str | torch.device = "cpu") -> PanelVictim:
    """A :class:`PanelVictim` from a ``--model`` value (panel name or comma list; one name gives a
    panel of one). Members load through :func:`jndkit.victims.load_victim` (offline weights)."""
    from .zoo import load_victim

    return PanelVictim([load_victim(n, device=device) for n in panel_members(spec)]).to(device)
