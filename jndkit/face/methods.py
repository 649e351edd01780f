"""Attack methods on face goals: the parameters they need there and the one loss term they swap.

:class:`~jndkit.face.protect.FaceProtector` builds every method through :func:`face_method`, with
:data:`FACE_PARAMS` unless a preset is named.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .. import losses
from ..attacks import Method

__all__ = ["FACE_LEVELS", "FACE_PARAMS", "face_method"]

#: ``levels`` parameters for faces when no preset is named: 1 % of the values per step, up to 4 levels.
FACE_LEVELS: dict[str, float] = {"fraction": 0.01, "max_levels": 4}

#: Parameters of the methods on face goals when no preset is named. The classifier defaults move a
#: face descriptor far too little: a descriptor's gradient per pixel value is ~3e-4, against ~1 for
#: an ImageNet cross-entropy. Measured on obama.jpg (dodge, kappa 0.15, jitter 4, one round, our check):
#:
#: * ``levels``: see :data:`FACE_LEVELS`;
#: * ``mnd`` lr 4 (seed 001's weights): reached at K = 124, 39.5 dB over the face box; lr 2 had not
#:   reached the margin after 150 iterations, lr 10 reached it at K = 21 with 37.6 dB; the paper's
#:   1e-3 does not move the image;
#: * ``jnd`` alpha 0.04 and lambda2 0.5: K = 19, 41.0 dB; with the paper's lambda2 = 10 the l2 term
#:   holds every value within about 0.4 level (distance 0.25 after 100 iterations);
#: * ``hvs`` lr 1 and delta -500 (four runs, beta 1500, 1000, 500, 0, instead of 31; ~0.4-0.75 s per
#:   iteration on one core here); with the classifier's lr 0.01 no try moves the image. Dodging with
#:   kappa 0.05, 50 iterations per run, judged by dlib on the saved file (obama3 / obama): lr 10
#:   dodged at 14.2 / 21.2 dB over the face box (single steps of up to a full level range where the
#:   descriptor's gradient peaks), lr 1 at 42.0 / 42.5 dB (144 / 181 iterations), lr 0.5 at 44.5 /
#:   43.7 dB but not within the 200 iterations of one round on obama3 (3 rounds, dlib 0.59: not
#:   dodged).
#:
#: Overrides of the methods' typed parameters (:mod:`jndkit.attacks.registry`): ints for counts
#: (``refine``, ``max_levels``), floats for weights and steps.
FACE_PARAMS: dict[str, dict[str, float]] = {
    "ddn": {"refine": 100},
    "levels": FACE_LEVELS,
    "mnd": {"lr": 4.0},
    "jnd": {"alpha": 0.04, "lambda2": 0.5},
    "hvs": {"lr": 1.0, "delta": -500.0},
}


# ------------------------------------------------------------------------------------------------
# Methods on embedding and detector goals
# ------------------------------------------------------------------------------------------------
def _adversarial_or_goal_loss(ctx: Any) -> torch.Tensor:
    """Seed 001's adversarial loss on a class goal; the goal's own loss on any other goal."""
    n = ctx.outputs.shape[1] if ctx.outputs.ndim >= 2 else 0
    if ctx.goal.weights(n) is None:
        loss: torch.Tensor = ctx.goal.loss(ctx.outputs)
        return loss
    return losses.term_mnd_adversarial(ctx)


def face_method(method: Method) -> Method:
    """``method`` with every loss term that needs class weights replaced by the goal's own loss.

    Seed 001's adversarial loss (``mnd``) is written on class scores (``<y, softmax(u) + u>``); face
    goals (:class:`~jndkit.face.goals.Dodge`, :class:`~jndkit.face.goals.Impersonate`,
    :class:`~jndkit.face.goals.Hide`) have no classes, so on them the term falls back to
    ``goal.loss`` (minus the distance, the distance, the logits above threshold). On class goals
    the method is unchanged. :class:`~jndkit.face.protect.FaceProtector` applies it to every method.
    """
    terms = tuple((k, _adversarial_or_goal_loss if t is losses.term_mnd_adversarial else t)
                  for k, t in method.loss_terms)
    if terms == method.loss_terms:
        return method
    return dataclasses.replace(method, loss_terms=terms)
