"""Attacks: one engine (:mod:`.engine`) and methods that configure it, found by name in the registry
(:mod:`.registry`).

The registry's names are imported here at once (the registry imports no method module); the
engine's names (``Method``, ``run_attack``, ...) are imported at first use, so
``import jndkit.attacks.registry`` does not load the engine. The built-in methods register
themselves when the registry is first read (:data:`.registry.BUILTIN_MODULES`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .registry import METHODS, MethodSpec, Params, get_method, method_names, register

if TYPE_CHECKING:
    from .engine import AttackResult, Method, Retry, prune, run_attack

__all__ = ["METHODS", "AttackResult", "Method", "MethodSpec", "Params", "Retry", "get_method", "method_names",
           "prune", "register", "run_attack"]

_FROM_ENGINE = frozenset({"AttackResult", "Method", "Retry", "prune", "run_attack"})


def __getattr__(name: str) -> Any:
    """The engine's names, imported at first use (PEP 562)."""
    if name in _FROM_ENGINE:
        value = getattr(importlib.import_module(".engine", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
