"""Loss terms of the papers' objectives, as functions of tensors and as engine terms.

Each ``*_loss`` function takes tensors and returns a per-sample value ``[B]``;
the ``term_*`` wrappers adapt them to the engine's :class:`~jndkit.attacks.engine.Context`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the engine imports nothing from here; avoid a cycle at run time
    from .attacks.engine import Context


def bounded_range(x: torch.Tensor) -> torch.Tensor:
    """Seed 000 eq. 5, BR, on the 0-255 scale, normalised by the pixel count.

    ``BR(p) = -p if p <= 0; p - 255 if p >= 255; 0 otherwise`` with ``p = 255 x``,
    summed over all values and divided by ``H*W*C``. Returns ``[B]``.
    """
    p = x * 255.0
    br = torch.relu(-p) + torch.relu(p - 255.0)
    return br.flatten(1).sum(dim=1) / x[0].numel()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Seed 000 eq. 6, TV (Mahendran & Vedaldi's squared form), on the [0,1] scale:

    ``TV = 1/(HWC) * sum_{u,v,k} (x[v,u+1,k] - x[v,u,k])^2 + (x[v+1,u,k] - x[v,u,k])^2``,
    differences taken only where the neighbour exists. Returns ``[B]``.
    """
    dh = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).sum(dim=1)
    dv = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).sum(dim=1)
    return (dh + dv) / x[0].numel()


def squared_l2(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``||x - x0||_2^2`` per sample on the [0,1] scale (seed 000 eq. 2, second term)."""
    return (x - x0).pow(2).flatten(1).sum(dim=1)


def l1(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``||x - x0||_1`` per sample."""
    return (x - x0).abs().flatten(1).sum(dim=1)


def margin_loss(ctx: "Context") -> torch.Tensor:
    """Minus the goal margin (C&W-style): decreasing it pushes past the decision boundary."""
    return -ctx.goal.margin(ctx.outputs)


def goal_loss(ctx: "Context") -> torch.Tensor:
    """The goal's own differentiable loss (cross-entropy form)."""
    return ctx.goal.loss(ctx.outputs)


def term_l2(ctx: "Context") -> torch.Tensor:
    return squared_l2(ctx.x, ctx.x0)


def term_br(ctx: "Context") -> torch.Tensor:
    return bounded_range(ctx.x)


def term_tv(ctx: "Context") -> torch.Tensor:
    return total_variation(ctx.x)
