"""The one registry of model kinds: kind name -> class, found from each class's own ``kind``.

No list of kinds is kept here. Every non-underscore module of :mod:`bioreps.layers` and
:mod:`bioreps.baselines` is imported, and every subclass of ``Layer`` and ``BaselineModel``
that sets ``kind`` in its own class body is registered (so are user subclasses). A kind's
configurable parameters are read from its constructor's signature (scikit-learn's
``get_params`` model) and typed from annotations or defaults; what it can do is read from its
class attributes (``checkpoint_unit``, ``torch_view``, ``has_vote_readout``, ...).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from dataclasses import dataclass

__all__ = ["RUNTIME", "Param", "accepts", "arguments", "build", "fit_params", "get", "names", "params"]

#: constructor arguments the runner supplies, never a configuration
RUNTIME = ("random_state", "seed", "progress")


@dataclass(frozen=True)
class Param:
    """A configurable argument: accepted configuration types, default, and for a nested
    dataclass (a sub-table such as ``[model.params]``) its class."""
    name: str
    types: tuple
    default: object
    nested: type | None = None


def _bases():
    from ..baselines import BaselineModel
    from ..layers import Layer

    return Layer, BaselineModel


def _import_all(package):
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def _classes() -> dict:
    """kind -> class (walked anew each call: it takes microseconds and sees new subclasses)."""
    from .. import baselines, layers

    for package in (layers, baselines):
        _import_all(package)
    found = {}
    stack = list(_bases())
    seen = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        kind = cls.__dict__.get("kind")
        if not kind:
            continue
        if kind in found and found[kind] is not cls:
            other = found[kind]
            raise RuntimeError(f"model kind {kind!r} is declared twice: by {other.__module__}.{other.__qualname__} "
                               f"and by {cls.__module__}.{cls.__qualname__}")
        found[kind] = cls
    return found


def names() -> list:
    """Every registered kind, sorted."""
    return sorted(_classes())


def get(name) -> type:
    """The class of kind ``name``."""
    classes = _classes()
    if name not in classes:
        raise ValueError(f"unknown model kind {name!r}; known kinds: {', '.join(sorted(classes))}")
    return classes[name]


def _types(cls, func, pname, default):
    """Configuration types of argument ``pname`` of ``func``: from its annotation, else its default."""
    # a class's argument annotations are its constructor's (get_type_hints(cls) gives class attributes)
    hint = typing.get_type_hints(func.__init__ if isinstance(func, type) else func).get(pname)
    if hint is not None:
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if len(args) != 1:
            raise TypeError(f"{cls.__name__}: cannot type argument {pname!r} from its annotation {hint!r}")
        return _types_of(args[0], cls, pname)
    if default is None or default is inspect.Parameter.empty:
        raise TypeError(f"{cls.__name__}: argument {pname!r} has no default to take its type from; "
                        f"annotate it (e.g. {pname}: float | None = None)")
    return _types_of(type(default), cls, pname, default)


def _types_of(t, cls, pname, default=None):
    if t is bool:
        return (bool,), None
    if t is int:
        return (int,), None
    if t is float:
        return (int, float), None
    if t is str:
        return (str,), None
    if t in (tuple, list):
        return (list,), None
    if dataclasses.is_dataclass(t):
        return (dict,), t
    raise TypeError(f"{cls.__name__}: argument {pname!r} of type {t.__name__} cannot be set from a configuration")


def _typed(cls, func, keep) -> dict:
    out = {}
    for pname, p in inspect.signature(func).parameters.items():
        if not keep(pname, p):
            continue
        types, nested = _types(cls, func, pname, p.default)
        out[pname] = Param(pname, types, p.default, nested)
    return out


def arguments(func, *, keep=None, owner=None) -> dict:
    """``{name: Param}`` for the keyword arguments of any callable a configuration may set
    (a regulariser's or the readout's constructor, the baselines' ``train``), typed like a
    model's parameters; ``keep(name)`` selects them (default: every argument with a default)."""
    owner = owner if owner is not None else func
    return _typed(owner, func, lambda n, p: n != "self" and p.default is not inspect.Parameter.empty
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and (keep is None or keep(n)))


def params(name) -> dict:
    """Constructor arguments of kind ``name`` a configuration may set (all but :data:`RUNTIME`),
    in signature order."""
    cls = get(name)
    return _typed(cls, cls.__init__, lambda n, p: n not in RUNTIME and n != "self"
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def fit_params(name) -> dict:
    """The ``fit`` keywords of kind ``name`` a configuration may set (``cls.config_fit_params``)."""
    cls = get(name)
    wanted = tuple(cls.config_fit_params)
    return _typed(cls, cls.fit, lambda n, p: n in wanted) if wanted else {}


def accepts(func, keyword) -> bool:
    """True when ``func`` takes ``keyword`` (scikit-learn's ``has_fit_parameter``)."""
    return keyword in inspect.signature(func).parameters


def build(name, table, *, seed, progress=None):
    """A model of kind ``name`` from its configuration ``table`` (constructor arguments; nested
    dataclasses given as dicts are merged over their defaults), seeded with ``seed``."""
    cls = get(name)
    spec = params(name)
    kw = {}
    for key, value in table.items():
        p = spec[key]
        kw[key] = p.nested.from_dict({**p.default.to_dict(), **value}) if p.nested is not None else value
    signature = inspect.signature(cls).parameters
    for runtime in ("random_state", "seed"):
        if runtime in signature:
            kw[runtime] = seed
    if "progress" in signature:
        kw["progress"] = progress
    return cls(**kw)
