"""Attacks: one engine (:mod:`.engine`) and methods that configure it (:mod:`.methods`)."""

from .engine import AttackResult, Method, Retry, prune, run_attack
from .methods import METHODS, MethodSpec, get_method, register

__all__ = ["AttackResult", "METHODS", "Method", "MethodSpec", "Retry", "get_method", "prune", "register", "run_attack"]
