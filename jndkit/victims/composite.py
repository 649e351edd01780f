"""Transparent photos as people see them: composited over backgrounds (white and black by default).

A photo with an alpha channel is judged **and attacked** on each background, so a protection that
holds on the RGB channels but not on the flattened picture is never reported as protected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError


def parse_backgrounds(spec: str) -> list[tuple[str, tuple[float, float, float]]]:
    """``white,black`` (or any comma list of colours Pillow's :func:`PIL.ImageColor.getrgb` reads:
    ``grey``, ``#1e90ff``, ``rgb(40,40,40)``) -> ``[(name, (r, g, b) in [0,1])]``.

    Raises:
        InputError: an empty list or a colour Pillow does not know.
    """
    from PIL import ImageColor

    out: list[tuple[str, tuple[float, float, float]]] = []
    for word in [w.strip() for w in (spec or "").split(",")]:
        if not word:
            continue
        try:
            rgb = ImageColor.getrgb(word)
        except ValueError:
            raise InputError(
                f"background must be a colour name, #RRGGBB or rgb(R,G,B) (comma list), got {word!r}") from None
        out.append((word, (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)))
    if not out:
        raise InputError(f"background needs at least one colour, got {spec!r}")
    return out


class AlphaComposite(nn.Module):
    """A victim that sees a transparent photo as people do: over each background.

    ``forward(x)`` composites ``x`` ``[B,3,H,W]`` with the photo's alpha ``a`` over each background
    ``k`` (``c_k = a * x + (1 - a) * bg_k``) and runs the victim on every composite. With
    ``stack`` (default) the outputs are stacked as panel rows, ``[B, K*M, C]`` (row ``k*M + m``:
    member ``m`` on background ``k``; a single model counts as ``M = 1``), so
    :class:`~jndkit.goals.PanelGoal` is reached only when every composite is fooled. With
    ``stack=False`` and one background it returns the victim's own output (a judge of the
    protection matrix).

    The alpha is resized (area-averaged) to ``x``'s size when an upload transform resized the
    image: the transforms act on the colour channels and the composite is taken after them, an
    approximation of a platform that flattens first (the same pixels, a different order).

    Args:
        victim: a classifier or a :class:`~jndkit.victims.PanelVictim`.
        alpha: ``[H,W]`` uint8 (as :class:`~jndkit.images.LoadedImage` holds it) or float in [0,1].
        backgrounds: ``[(name, (r, g, b))]`` in [0,1] (:func:`parse_backgrounds`).
    """

    def __init__(self, victim: nn.Module, alpha: Any, backgrounds: Sequence[tuple[str, tuple[float, float, float]]],
                 stack: bool = True) -> None:
        super().__init__()
        if not backgrounds:
            raise InputError("AlphaComposite needs at least one background")
        if not stack and len(backgrounds) != 1:
            raise InputError(f"AlphaComposite(stack=False) takes one background, got {len(backgrounds)}")
        a = torch.as_tensor(alpha)
        a = a.float() / 255.0 if a.dtype == torch.uint8 else a.float()
        if a.ndim != 2:
            raise InputError(f"alpha must be [H,W], got shape {list(a.shape)}")
        self.victim = victim
        self.stack = stack
        self.background_names = [n for n, _ in backgrounds]
        self.register_buffer("alpha", a[None, None].clamp(0, 1), persistent=False)
        self.register_buffer("backgrounds", torch.tensor([c for _, c in backgrounds]).view(-1, 1, 3, 1, 1),
                             persistent=False)
        self.name = getattr(victim, "name", "victim")

    def composites(self, x: torch.Tensor) -> torch.Tensor:
        """``[K,B,3,H,W]``: ``x`` over each background, rounded to 8-bit levels as a viewer's
        8-bit composite is (Pillow's :func:`PIL.Image.alpha_composite` agrees to the level); the
        rounding passes the gradient straight through."""
        a: torch.Tensor = self.alpha  # type: ignore[assignment]
        if a.shape[-2:] != x.shape[-2:]:
            a = F.interpolate(a, size=x.shape[-2:], mode="area" if a.shape[-1] > x.shape[-1] else "bilinear")
        bg: torch.Tensor = self.backgrounds  # type: ignore[assignment]
        c = a * x[None] + (1 - a) * bg.to(x.dtype)
        return c + (torch.round(c * 255.0) / 255.0 - c).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.victim(c) for c in self.composites(x)]
        if not self.stack:
            return outs[0]  # type: ignore[no-any-return]
        return torch.cat([o if o.ndim == 3 else o[:, None] for o in outs], dim=1)

    def predict(self, x: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """The victim's top-``k`` on the first background (what the record shows)."""
        return self.victim.predict(self.composites(x)[0], k)  # type: ignore[operator,no-any-return]

    def label(self, index: int) -> str:
        return self.victim.label(index)  # type: ignore[operator,no-any-return]

    def class_index(self, name_or_index: str | int) -> int:
        return self.victim.class_index(name_or_index)  # type: ignore[operator,no-any-return]
