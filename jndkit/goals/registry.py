"""Goals by their CLI spelling, per task: :func:`register_goal`, :func:`goal_usage`, :func:`parse_goal`.

Moved verbatim from the former ``jndkit/goals.py`` (issue 11).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, overload

from ..errors import InputError
from .kinds import (
    DEFAULT_KAPPA,
    PRIVACY_MAX_PROB,
    ConfidenceMargin,
    Goal,
    LeastLikely,
    NotInTopK,
    Privacy,
    RelativeMargin,
    Targeted,
    Untargeted,
)


def _parse_builtin(spec: str, kappa: float) -> Goal | None:
    """A built-in classifier goal from its CLI spelling, or ``None`` when ``spec`` names none.

    ``privacy`` / ``privacy:P`` (the protective goal: clean class out of the top-5 with probability
    <= P, default 0.1), ``untargeted`` (leave the clean prediction), ``untargeted:CLASS`` (leave a
    given class), ``targeted:CLASS``, ``least-likely``, ``top5`` (or ``topK``), ``margin:C``,
    ``relative:G``."""
    s = spec.strip().lower()
    try:
        if s == "untargeted":
            return Untargeted(kappa=kappa)
        if s.startswith("untargeted:"):
            label: Any = spec.split(":", 1)[1].strip()
            if not label:
                raise InputError("untargeted:CLASS needs a class (name or index)")
            return Untargeted(kappa=kappa, labels=int(label) if label.isdigit() else label)
        if s.startswith("targeted:"):
            target: Any = spec.split(":", 1)[1].strip()
            if not target:
                raise InputError("targeted needs a class: targeted:CLASS (name or index)")
            return Targeted(kappa=kappa, target=int(target) if target.isdigit() else target)
        if s in ("least-likely", "ll", "leastlikely"):
            return LeastLikely(kappa=kappa)
        if s.startswith("top") and s[3:].isdigit():
            return NotInTopK(kappa=kappa, k=int(s[3:]))
        if s.startswith("margin:"):
            return ConfidenceMargin(kappa=kappa, confidence=float(s.split(":", 1)[1]))
        if s == "privacy" or s.startswith("privacy:"):
            p = s.split(":", 1)[1] if ":" in s else ""
            return Privacy(kappa=kappa, k=5, max_prob=float(p) if p else PRIVACY_MAX_PROB)
        if s.startswith("relative:"):
            return RelativeMargin(kappa=kappa, gap=float(s.split(":", 1)[1]))
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"bad goal {spec!r}: {e}") from None
    return None


# ------------------------------------------------------------------------------------------------
# The registry: goals by their CLI spelling, per task
# ------------------------------------------------------------------------------------------------
BUILTIN_GOALS = ("privacy", "privacy:P", "untargeted", "untargeted:CLASS", "targeted:CLASS", "least-likely", "top5",
                 "margin:C", "relative:G")
"""The built-in spellings of the ``classify`` task (parsed after the registered ones)."""

GoalFactory = Callable[[str | None, float], Any]
"""Builds what a registered spelling means: ``factory(argument, kappa)`` (``argument`` is ``None`` for
a goal without one, else the text after the colon, stripped, case kept). A ``classify`` factory
returns a :class:`Goal`; other tasks return what their pipeline needs (``face``:
:class:`jndkit.face.strategy.FaceGoalSpec`)."""


class RegisteredGoal(NamedTuple):
    """One registered spelling: its factory, the argument's metavar (``NAME``; ``None`` for a goal
    without one) and what the argument is (``a gallery identity``, for the missing-argument error)."""

    factory: GoalFactory
    argument: str | None
    meaning: str


_REGISTRY: dict[str, dict[str, RegisteredGoal]] = {}


def goal_registry(task: str = "classify") -> dict[str, RegisteredGoal]:
    """The live table of ``task``'s registered goals, by prefix, in registration order (the same
    dict object on every call, so a caller may keep it)."""
    return _REGISTRY.setdefault(task, {})


def register_goal(prefix: str, factory: GoalFactory, *, task: str = "classify", argument: str | None = None,
                  meaning: str = "an argument") -> None:
    """Make ``prefix`` (or ``prefix:ARGUMENT`` when ``argument`` names one) a goal of ``task``.

    :func:`parse_goal` looks registered spellings up before the built-in ones, so a ``classify``
    registration of a built-in prefix takes its place.

    >>> register_goal("hinge", lambda arg, kappa: Untargeted(kappa=kappa))  # doctest: +SKIP
    >>> parse_goal("hinge")                                                  # doctest: +SKIP

    Raises:
        InputError: ``prefix`` is empty, holds a colon or a space, or is registered already for ``task``.
    """
    key = prefix.lower()
    if not key or ":" in key or key != key.strip() or " " in key:
        raise InputError(f"a {task} goal prefix must be one word without ':', got {prefix!r}")
    table = goal_registry(task)
    if key in table:
        raise InputError(f"{task} goal {key!r} is registered already")
    table[key] = RegisteredGoal(factory, argument, meaning)


def goal_usage(task: str = "classify") -> str:
    """The spellings of ``task``, e.g. ``dodge, impersonate:NAME or hide`` (``classify``: the
    built-in ones, then the registered ones)."""
    words = list(BUILTIN_GOALS) if task == "classify" else []
    words += [k if r.argument is None else f"{k}:{r.argument}" for k, r in goal_registry(task).items()]
    if not words:
        return "nothing (no goal is registered for this task)"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


@overload
def parse_goal(spec: str, kappa: float = DEFAULT_KAPPA, *, task: Literal["classify"] = "classify") -> Goal: ...
@overload
def parse_goal(spec: str, kappa: float = DEFAULT_KAPPA, *, task: str) -> Any: ...
def parse_goal(spec: str, kappa: float = DEFAULT_KAPPA, *, task: str = "classify") -> Any:
    """The goal a CLI spelling names for ``task``.

    Registered spellings (:func:`register_goal`) come first: the prefix before the colon is
    case-blind, the argument is kept as written; a goal registered with an argument needs one
    (``impersonate:NAME``), a goal without one takes none. Then, for ``classify``, the built-in
    spellings (:data:`BUILTIN_GOALS`; see :func:`_parse_builtin`).

    Raises:
        InputError: an unknown goal (the message lists ``task``'s spellings), a missing argument,
            or a bad value (``margin:2``).
    """
    s = (spec or "").strip()
    head, colon, arg = s.partition(":")
    key = head.lower()
    entry = goal_registry(task).get(key)
    if entry is not None and entry.argument is None and not colon:
        return entry.factory(None, kappa)
    if entry is not None and entry.argument is not None and colon:
        name = arg.strip()
        if not name:
            raise InputError(f"{key} needs {entry.meaning}: {key}:{entry.argument}")
        return entry.factory(name, kappa)
    if task == "classify":
        goal = _parse_builtin(s, kappa)
        if goal is not None:
            return goal
    what = "goal" if task == "classify" else f"{task} goal"
    raise InputError(f"unknown {what} {spec!r}; use {goal_usage(task)}")
