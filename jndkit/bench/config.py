"""What a benchmark measures: method selection, :class:`BenchConfig` and :class:`BenchResult`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attacks import METHODS, get_method
from ..errors import InputError
from ..goals import DEFAULT_KAPPA, parse_goal
from .records import BenchRow

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, description)``: images done out of the whole benchmark."""

THRESHOLD_GOALS = ("margin:0.25", "margin:0.6")
"""Seed 000 Table 3: the wrong class must reach 25 % and 60 % confidence."""

FAMILY_ORDER = {"jndkit": 0, "seed": 1, "baseline": 2}


def parse_method_images(spec: str) -> dict[str, int]:
    """``"mnd=8,hvs=8"`` -> ``{"mnd": 8, "hvs": 8}`` (per-method image caps of :class:`BenchConfig`).

    Raises:
        InputError: an item that is not ``METHOD=N`` with a known method and an integer N.
    """
    out: dict[str, int] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, eq, num = item.partition("=")
        if not eq or not num.strip().isdigit():
            raise InputError(f"bad per-method image count {item!r}: expected METHOD=N, e.g. mnd=8")
        if name.strip() not in METHODS:
            raise InputError(f"unknown method {name.strip()!r} in {item!r}; available: {', '.join(sorted(METHODS))}")
        out[name.strip()] = int(num)
    return out


def resolve_methods(spec: str | Sequence[str]) -> list[tuple[str, str]]:
    """``(name, preset)`` pairs from a method list.

    Items (comma separated): ``all`` (every registered method with its default preset),
    a family (``jndkit``, ``seeds``, ``baselines``), ``NAME`` (default preset) or
    ``NAME:PRESET``. Order: as given; a family expands in registry order, jndkit first.
    Duplicates are dropped.

    Raises:
        InputError: an unknown method, family or preset.
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise InputError("no methods given")
    ordered = sorted(METHODS.values(), key=lambda m: FAMILY_ORDER.get(m.family, 9))
    families = {"all": None, "jndkit": "jndkit", "seeds": "seed", "seed": "seed", "baselines": "baseline",
                "baseline": "baseline"}
    out: list[tuple[str, str]] = []
    for item in items:
        key = item.lower()
        if key in families:
            fam = families[key]
            out += [(m.name, m.default) for m in ordered if fam is None or m.family == fam]
            continue
        name, _, preset = item.partition(":")
        if name not in METHODS:
            raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))} "
                             f"or all, jndkit, seeds, baselines")
        spec_ = METHODS[name]
        preset = preset or spec_.default
        if preset not in spec_.presets:
            raise InputError(f"method {name} has no preset {preset!r}; presets: {', '.join(spec_.presets)}")
        out.append((name, preset))
    return list(dict.fromkeys(out))


def is_iterative(method: str, preset: str | None = None) -> bool:
    """A method with more than one step (the ones seed 000 Table 3 compares)."""
    return get_method(method, preset).max_iter > 1


@dataclass
class BenchConfig:
    """What :func:`run_benchmark` measures.

    Attributes:
        models: victim names (:func:`jndkit.victims.load_victim`).
        methods: ``(name, preset)`` pairs (:func:`resolve_methods`).
        goal: goal of the main tables (``untargeted``, ``least-likely``, ...).
        n: images per model.
        robust: ``none`` or ``jpeg:Q``: success must also survive that re-encoding.
        data: a folder of images instead of the package-shipped crops.
        threshold_goals: seed 000 Table 3 goals (empty: no Table 3).
        threshold_methods: methods for Table 3 (``None``: the iterative ones among ``methods``).
        threshold_n: images for Table 3 (``None``: all ``n``).
        figure_methods: methods for Figure 4 (``None``: levels, jnd and bim if selected, else the
            first iterative method); empty: no figure.
        figure_images: images per model in Figure 4; figure_iters: its iterations.
        transfer: measure the transfer matrix (needs two or more models).
        jobs: worker processes for the attack runs (1: in this process).
        method_images: per method name, at most this many images (the first ones of the set),
            for methods too slow to run on all ``n`` (the tables give each row's n).
    """

    models: list[str]
    methods: list[tuple[str, str]]
    goal: str = "untargeted"
    n: int = 32
    robust: str = "none"
    data: str | None = None
    kappa: float = DEFAULT_KAPPA
    seed: int = 0
    batch_size: int = 16
    max_iter: int | None = None
    threshold_goals: tuple[str, ...] = THRESHOLD_GOALS
    threshold_methods: list[tuple[str, str]] | None = None
    threshold_n: int | None = None
    figure_methods: list[tuple[str, str]] | None = None
    figure_images: int = 2
    figure_iters: int = 100
    transfer: bool = True
    jobs: int = 1
    method_images: dict[str, int] = field(default_factory=dict)

    def validate(self) -> None:
        from ..protect import parse_robust

        if not self.models:
            raise InputError("no models given")
        if self.n < 1:
            raise InputError(f"images must be >= 1, got {self.n}")
        if self.jobs < 1:
            raise InputError(f"jobs must be >= 1, got {self.jobs}")
        if self.threshold_n is not None and self.threshold_n < 1:
            raise InputError(f"Table 3 images must be >= 1, got {self.threshold_n}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        for name, k in self.method_images.items():
            if k < 1:
                raise InputError(f"images for {name} must be >= 1, got {k}")
        parse_goal(self.goal, self.kappa)
        for g in self.threshold_goals:
            parse_goal(g, self.kappa)
        parse_robust(self.robust)

    def table3_methods(self) -> list[tuple[str, str]]:
        if not self.threshold_goals:
            return []
        if self.threshold_methods is not None:
            return list(self.threshold_methods)
        return [(m, p) for m, p in self.methods if is_iterative(m, p)]

    def fig_methods(self) -> list[tuple[str, str]]:
        if self.figure_methods is not None:
            return list(self.figure_methods)
        chosen = [(m, p) for m, p in self.methods if m in ("levels", "jnd", "bim")]
        if not chosen:
            chosen = [(m, p) for m, p in self.methods if is_iterative(m, p)][:1]
        return chosen


@dataclass
class BenchResult:
    """Everything :func:`run_benchmark` measured (also written under its ``out`` folder)."""

    config: BenchConfig
    rows: list[BenchRow]
    threshold_rows: list[BenchRow] = field(default_factory=list)
    transfer: dict[tuple[str, str, str, str], dict[tuple[str, str], float]] = field(default_factory=dict)
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figure: Path | None = None
    errors: list[str] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

