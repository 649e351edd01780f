"""Goals: what "fooled" means.

A goal is first *unbound* (what the user asked for: "untargeted", "targeted:cat")
and is bound to a batch with :meth:`Goal.bind`, which reads the clean outputs
(the clean label, the least-likely class). A bound goal gives, per sample:

* ``margin(outputs) -> [B]``: how far past the decision boundary the outputs
  are, in logits (positive = goal met);
* ``reached(outputs) -> bool[B]``: ``margin > kappa``. The margin ``kappa`` is
  there because a first-flip image sits on the boundary (margin ~0.01) and may
  be judged differently at another batch size or on another machine;
* ``loss(outputs) -> [B]``: a differentiable loss whose decrease moves towards
  the goal (cross-entropy form, as the papers use);
* ``weights``: the signed class weights ``(away, toward)`` (``[B,C]`` each) for
  methods whose adversarial loss is built from class scores (seed 001's MND).

Attacks only call these; they never look at a goal's type. Bound goals support
``goal[index]`` so the engine can drop finished samples from the batch.

Layout (issue 11): the goal classes live in :mod:`jndkit.goals.kinds`, the per-task registry of CLI
spellings and :func:`parse_goal` in :mod:`jndkit.goals.registry`; every name is re-exported here.
"""

from __future__ import annotations

from .kinds import (
    DEFAULT_KAPPA,
    PRIVACY_MAX_PROB,
    ConfidenceMargin,
    Goal,
    LeastLikely,
    NotInTopK,
    PanelGoal,
    Privacy,
    RelativeMargin,
    Targeted,
    Untargeted,
)
from .registry import _REGISTRY as _REGISTRY  # tests restore the live table through this name
from .registry import (
    BUILTIN_GOALS,
    GoalFactory,
    RegisteredGoal,
    goal_registry,
    goal_usage,
    parse_goal,
    register_goal,
)

__all__ = [
    "BUILTIN_GOALS",
    "DEFAULT_KAPPA",
    "PRIVACY_MAX_PROB",
    "ConfidenceMargin",
    "Goal",
    "GoalFactory",
    "LeastLikely",
    "NotInTopK",
    "PanelGoal",
    "Privacy",
    "RegisteredGoal",
    "RelativeMargin",
    "Targeted",
    "Untargeted",
    "goal_registry",
    "goal_usage",
    "parse_goal",
    "register_goal",
]
