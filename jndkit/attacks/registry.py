"""The method registry: names, typed parameters and presets; no method module is imported here.

Each method module (:mod:`.methods`, :mod:`.baselines`, :mod:`.seeds`, :mod:`.transfer`) defines a
frozen :class:`Params` dataclass for its method and calls :func:`register` with a
:class:`MethodSpec` when it is imported. This module imports none of them at import time (so
importing it can never close an import cycle with the engine); the first lookup
(:func:`get_method`, :data:`METHODS`, :func:`method_names`) imports the built-in method modules
once, by name (:data:`BUILTIN_MODULES`).

``get_method(name, preset=None, **params)`` returns a configured
:class:`~jndkit.attacks.engine.Method`: the preset's parameters (a :class:`Params` instance, or a
dict validated into one) with ``params`` overriding fields of the same name. A field keeps its
type: an ``int`` field (``steps``, ``eot``, ``check_every``) takes an int or an integral float, a
``bool`` field (``prune``, ``grey``) takes a bool or 0/1, a ``float`` field any real number; an
unknown name or a value of the wrong kind is an :class:`~jndkit.errors.InputError`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from ..errors import InputError

if TYPE_CHECKING:
    from .engine import Method

__all__ = ["BUILTIN_MODULES", "METHODS", "MethodSpec", "Params", "get_method", "method_names", "register"]

BUILTIN_MODULES = ("jndkit.attacks.methods", "jndkit.attacks.baselines", "jndkit.attacks.seeds",
                   "jndkit.attacks.transfer")
"""The modules that register jndkit's own methods, imported once at the first registry lookup."""


def _coerce(method: str, name: str, kind: Any, value: object) -> float | int | bool:
    """``value`` as a field of type ``kind`` (``float``, ``int`` or ``bool``), or an InputError."""
    bad = InputError(f"method {method}: parameter {name} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    if kind in (bool, "bool"):
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise bad
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    if kind in (int, "int"):
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise bad
        return int(value)
    if kind in (float, "float"):
        return float(value)
    raise InputError(f"method {method}: parameter {name} has an unsupported type {kind!r}")


_S = TypeVar("_S", bound="Params")


@dataclass(frozen=True, eq=False)
class Params(Mapping[str, float]):
    """Base of every method's parameters: a frozen dataclass whose fields are ``float``, ``int``
    or ``bool``, read by the engine's pieces as a read-only mapping (``params["alpha"]``,
    ``params.get("mu", 1.0)``, ``dict(params)``).

    Equality is the mapping's (``LevelsParams() == {"fraction": 0.004, ...}``), so a preset
    compares equal to the dict it was written from. Subclasses are declared with
    ``@dataclass(frozen=True, eq=False)`` to keep it.
    """

    # ---- mapping view (what the engine, the loss terms and AttackResult.params read)
    def __getitem__(self, key: str) -> float:
        if key in self._names():
            value: float = getattr(self, key)
            return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __hash__(self) -> int:
        return hash(frozenset(self.items()))

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    # ---- validated construction
    @classmethod
    def method_name(cls) -> str:
        """The method these parameters belong to, for error messages (``LevelsParams`` -> ``levels``)."""
        return str(getattr(cls, "METHOD", cls.__name__.removesuffix("Params").lower()))

    @classmethod
    def of(cls: type[_S], values: Mapping[str, object], method: str | None = None) -> _S:
        """A validated instance: fields from ``values`` (unknown names are an error), the rest defaults."""
        return cls().updated(values, method)

    def replace(self: _S, **changes: object) -> _S:
        """A copy with ``changes`` (validated: unknown names and wrong kinds are an InputError)."""
        return self.updated(changes)

    def updated(self: _S, changes: Mapping[str, object], method: str | None = None) -> _S:
        """A copy with ``changes`` (validated); errors name ``method`` (default: :meth:`method_name`)."""
        method = method or self.method_name()
        unknown = set(changes) - set(self._names())
        if unknown:
            raise InputError(f"method {method} has no parameter(s) {sorted(unknown)}; it has {sorted(self._names())}")
        kinds = {f.name: f.type for f in dataclasses.fields(self)}
        typed = {k: _coerce(method, k, kinds[k], v) for k, v in changes.items()}
        return dataclasses.replace(self, **typed)


P = TypeVar("P", bound=Params)


@dataclass(frozen=True)
class MethodSpec(Generic[P]):
    """A named method: its parameter type, builder, presets and the default preset.

    Attributes:
        name: the name ``get_method`` and the CLI take.
        build: typed parameters -> configured :class:`~jndkit.attacks.engine.Method`.
        presets: named parameter sets: instances of the method's :class:`Params`, or dicts of
            some of its fields (validated at lookup, the rest from the dataclass defaults).
        default: the preset used when none is named.
        description: one line for ``jndkit methods``.
        family: ``seed``, ``baseline`` or ``jndkit`` (bench tables group by it).
        aliases: other names (kept for listings).
        lossy_preset: preset used when no preset is asked and success must survive lossy
            re-encoding.
        params: the :class:`Params` subclass (default: the type of the default preset).
    """

    name: str
    build: Callable[[P], Method]
    presets: Mapping[str, P | Mapping[str, float]]
    default: str
    description: str
    family: str = "seed"
    aliases: tuple[str, ...] = field(default_factory=tuple)
    lossy_preset: str | None = None
    params: type[P] | None = None

    def param_type(self) -> type[P]:
        """The :class:`Params` subclass of this method."""
        if self.params is not None:
            return self.params
        for p in self.presets.values():
            if isinstance(p, Params):
                return cast("type[P]", type(p))
        raise InputError(f"method {self.name} names no parameter type (give MethodSpec.params)")

    def preset(self, key: str | None = None) -> P:
        """The validated parameters of preset ``key`` (default preset if ``None``)."""
        key = key or self.default
        if key not in self.presets:
            raise InputError(f"method {self.name} has no preset {key!r}; presets: {', '.join(self.presets)}")
        p = self.presets[key]
        kind = self.param_type()
        if isinstance(p, kind):
            return p
        return kind.of(p, self.name)


class _Registry(MutableMapping[str, "MethodSpec[Any]"]):
    """``name -> MethodSpec``; the built-in method modules are imported at the first read."""

    def __init__(self) -> None:
        self._specs: dict[str, MethodSpec[Any]] = {}
        self._loaded = False

    def load(self) -> None:
        """Import the built-in method modules (once); they call :func:`register`."""
        if self._loaded:
            return
        self._loaded = True  # before importing: a module reading the registry must not recurse
        try:
            for mod in BUILTIN_MODULES:
                importlib.import_module(mod)
        except BaseException:
            self._loaded = False
            raise

    def __getitem__(self, key: str) -> MethodSpec[Any]:
        self.load()
        return self._specs[key]

    def __setitem__(self, key: str, value: MethodSpec[Any]) -> None:
        self._specs[key] = value

    def __delitem__(self, key: str) -> None:
        del self._specs[key]

    def __iter__(self) -> Iterator[str]:
        self.load()
        return iter(self._specs)

    def __len__(self) -> int:
        self.load()
        return len(self._specs)

    def __repr__(self) -> str:
        return f"METHODS({sorted(self)})"


METHODS: MutableMapping[str, MethodSpec[Any]] = _Registry()
"""Every registered method by name (read it like a dict)."""


def register(spec: MethodSpec[Any]) -> None:
    """Add ``spec`` to the registry (called by each method module when it is imported).

    The default preset must exist and every preset must validate into the method's parameters,
    so a misspelt preset fails at import, not at first use.
    """
    if spec.default not in spec.presets:
        raise InputError(f"method {spec.name}: default preset {spec.default!r} is not among {list(spec.presets)}")
    if spec.params is None:
        spec = dataclasses.replace(spec, params=spec.param_type())
    for key in spec.presets:
        spec.preset(key)
    METHODS[spec.name] = spec


def method_names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(METHODS)


def get_method(name: str, preset: str | None = None, **params: float) -> Method:
    """Build method ``name`` with ``preset`` (default preset if ``None``) and parameter overrides.

    ``max_iter`` is accepted besides the method's own parameters and sets the iteration budget.
    """
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    spec = METHODS[name]
    base = spec.preset(preset)
    unknown = set(params) - set(base) - {"max_iter"}
    if unknown:
        raise InputError(f"method {name} has no parameter(s) {sorted(unknown)}; it has {sorted(base)}")
    max_iter = params.pop("max_iter", None)
    m = spec.build(base.updated(params, name) if params else base)
    if max_iter is not None:
        m = dataclasses.replace(m, max_iter=int(_coerce(name, "max_iter", int, max_iter)))
    return m
