"""Study files: several local-learning and backprop models over seeds, in one TOML.

A study file has these tables (every key is checked before anything trains; an error names the
key's path, e.g. ``models[2].regularizer.lam``)::

    [study]                 name, seeds (list of ints), description, output (default runs/<name>)
    [data]                  dataset, n_train, n_test, data_dir
    [[models]]              one table per model: name, kind (any registered kind, see
                            ``bioreps.studies.kinds.names()``) and that kind's parameters written
                            directly in the table (``n_units``, ``k``, ``epochs``; for a backprop
                            baseline ``sizes``, ``epochs``, ``lr``, ``batch_size``)
    [models.regularizer]    backprop baselines only: kind (weight-decay, jacobian, spectral,
                            adversarial) and its parameters
    [models.readout]        local-learning models: the softmax readout (epochs, lr, ...)
    [analysis]              spectrum, attacks, transfer, cka, selectivity, ablation

The schema is not written out by hand: a model's keys and their types come from its class's
constructor (and ``fit``) signature through the kinds registry, a regulariser's from its
constructor, the readout's from :class:`bioreps.readout.LinearReadout`, a baseline's training
keys from :func:`bioreps.baselines.train`. We chose this over a validation library (pydantic,
msgspec): the per-kind part of the schema is derived at run time from signatures, which a
static model class would have to restate, and the few fixed tables are small enough that the
library would add a dependency for little.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .run import ConfigError

__all__ = ["ATTACKS", "load_study", "validate_study", "is_study"]

#: attacks a study may ask for ("noise": uniform random sign noise of the same L-inf size)
ATTACKS = ("noise", "fgsm", "pgd", "square")
#: what a study may set of :func:`bioreps.baselines.train` for a backprop baseline
TRAIN_KEYS = ("epochs", "batch_size", "lr")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_ANALYSIS_DEFAULTS = {
    "spectrum": {"enabled": True, "ranks": [11, 500], "bootstrap": 0, "noise_probes": False},
    "attacks": {"methods": ["fgsm", "pgd"], "eps": [0.0, 0.05, 0.1, 0.2], "steps": 20, "n_images": 500},
    "transfer": True,
    "cka": "linear",
    "selectivity": False,
    "ablation": False,
}
_ANALYSIS_TYPES = {
    "spectrum": {"enabled": bool, "ranks": list, "bootstrap": int, "noise_probes": bool},
    "attacks": {"methods": list, "eps": list, "steps": int, "n_images": int},
    "transfer": bool,
    "cka": str,
    "selectivity": bool,
    "ablation": bool,
}
_CKA = ("linear", "debiased", "rbf", "none")


def is_study(raw: dict) -> bool:
    """Whether a parsed TOML file is a study (has ``[study]``) rather than a single experiment."""
    return isinstance(raw, dict) and "study" in raw


# --------------------------------------------------------------------------- types from signatures
def signature_types(func, skip=(), only=None) -> dict:
    """``{name: accepted types}`` of ``func``'s keyword arguments (all but ``skip``, or just
    ``only``), typed as the kinds registry types a model's parameters (annotation, else default)."""
    from . import kinds

    keep = (lambda n: n in only) if only is not None else (lambda n: n not in skip)
    return {k: p.types for k, p in kinds.arguments(func, keep=keep).items()}


def _regularizers() -> dict:
    """Regulariser kind -> class, from each class's own ``kind`` attribute."""
    from ..baselines.regularizers import Regularizer

    found, todo = {}, list(Regularizer.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        kind = cls.__dict__.get("kind")
        if kind:
            found[kind] = cls
    return found


# --------------------------------------------------------------------------- validation
def _check(path, value, types):
    types = types if isinstance(types, tuple) else (types,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{path} must be {names}, got {type(value).__name__} {value!r}")
    return value


def _table(path, value):
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must be a table, got {type(value).__name__}")
    return value


def _unknown(path, table, allowed):
    extra = sorted(set(table) - set(allowed))
    if extra:
        raise ConfigError(f"unknown key {path}.{extra[0]}; allowed keys there: {sorted(allowed)}")


def _model(i, table, source):
    from ..baselines import train as train_fn
    from ..readout import LinearReadout
    from . import kinds

    path = f"models[{i}]"
    table = _table(f"{source}: {path}", table)
    for key in ("name", "kind"):
        if key not in table:
            raise ConfigError(f"{source}: {path}.{key} is required")
    name = _check(f"{source}: {path}.name", table["name"], str)
    if not _NAME_RE.match(name):
        raise ConfigError(f"{source}: {path}.name = {name!r} must be letters, digits, '_', '.' or '-' "
                          "(it names the model's output folder)")
    kind = _check(f"{source}: {path}.kind", table["kind"], str)
    try:
        cls = kinds.get(kind)
    except ValueError as exc:
        raise ConfigError(f"{source}: {path}.kind: {exc}") from None
    allowed = {"name": str, "kind": str}
    allowed.update({k: p.types for k, p in kinds.params(kind).items()})
    allowed.update({k: p.types for k, p in kinds.fit_params(kind).items()})
    supervised = bool(getattr(cls, "supervised", False))
    if supervised:
        allowed.update(signature_types(train_fn, only=TRAIN_KEYS))
        allowed["regularizer"] = dict
    else:
        allowed["readout"] = dict
    out = {}
    for key, value in table.items():
        if key not in allowed:
            if key in ("regularizer", "readout"):
                what = "backprop baselines" if key == "regularizer" else "local-learning models"
                raise ConfigError(f"{source}: {path}.{key}: only {what} take a [{key}] table; "
                                  f"{kind!r} does not")
            raise ConfigError(f"{source}: unknown key {path}.{key} for kind {kind!r}; allowed keys: "
                              f"{sorted(allowed)}")
        if key == "regularizer":
            out[key] = _regularizer(f"{path}.regularizer", value, source)
        elif key == "readout":
            ro = _table(f"{source}: {path}.readout", value)
            types = signature_types(LinearReadout, skip=("random_state", "progress"))
            for k, v in ro.items():
                if k not in types:
                    raise ConfigError(f"{source}: unknown key {path}.readout.{k}; allowed keys: {sorted(types)}")
                _check(f"{source}: {path}.readout.{k}", v, types[k])
            out[key] = dict(ro)
        else:
            out[key] = _check(f"{source}: {path}.{key}", value, allowed[key])
    return out


def _regularizer(path, table, source):
    table = _table(f"{source}: {path}", table)
    regs = _regularizers()
    if "kind" not in table:
        raise ConfigError(f"{source}: {path}.kind is required; one of {sorted(regs)}")
    kind = _check(f"{source}: {path}.kind", table["kind"], str)
    if kind not in regs:
        raise ConfigError(f"{source}: {path}.kind = {kind!r} is unknown; choose one of {sorted(regs)}")
    types = signature_types(regs[kind])
    for key, value in table.items():
        if key == "kind":
            continue
        if key not in types:
            raise ConfigError(f"{source}: unknown key {path}.{key} for regularizer {kind!r}; "
                              f"allowed keys: {sorted(types)}")
        _check(f"{source}: {path}.{key}", value, types[key])
    return dict(table)


def _analysis(raw, source):
    cfg = copy.deepcopy(_ANALYSIS_DEFAULTS)
    raw = _table(f"{source}: [analysis]", raw)
    _unknown(f"{source}: analysis", raw, _ANALYSIS_TYPES)
    for key, value in raw.items():
        types = _ANALYSIS_TYPES[key]
        if isinstance(types, dict):
            sub = _table(f"{source}: analysis.{key}", value)
            _unknown(f"{source}: analysis.{key}", sub, types)
            for k, v in sub.items():
                cfg[key][k] = _check(f"{source}: analysis.{key}.{k}", v, types[k])
        else:
            cfg[key] = _check(f"{source}: analysis.{key}", value, types)
    lo_hi = cfg["spectrum"]["ranks"]
    if (len(lo_hi) != 2 or not all(isinstance(r, int) and not isinstance(r, bool) for r in lo_hi)
            or not 1 <= lo_hi[0] < lo_hi[1]):
        raise ConfigError(f"{source}: analysis.spectrum.ranks must be [lo, hi] with 1 <= lo < hi, got {lo_hi}")
    if cfg["spectrum"]["bootstrap"] < 0:
        raise ConfigError(f"{source}: analysis.spectrum.bootstrap must be >= 0")
    att = cfg["attacks"]
    bad = [m for m in att["methods"] if m not in ATTACKS]
    if bad or len(set(att["methods"])) != len(att["methods"]):
        raise ConfigError(f"{source}: analysis.attacks.methods must be distinct names among {list(ATTACKS)}, "
                          f"got {att['methods']}")
    eps = att["eps"]
    if (not eps or not all(isinstance(e, (int, float)) and not isinstance(e, bool) and e >= 0 for e in eps)
            or list(eps) != sorted(set(eps))):
        raise ConfigError(f"{source}: analysis.attacks.eps must be a non-empty increasing list of "
                          f"distinct numbers >= 0, got {eps}")
    att["eps"] = [float(e) for e in eps]
    for key in ("steps", "n_images"):
        if att[key] < 1:
            raise ConfigError(f"{source}: analysis.attacks.{key} must be >= 1, got {att[key]}")
    if cfg["cka"] not in _CKA:
        raise ConfigError(f"{source}: analysis.cka must be one of {list(_CKA)}, got {cfg['cka']!r}")
    return cfg


def validate_study(raw: dict, source: str = "<study>") -> dict:
    """Check a parsed study file and return it complete (defaults filled in)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the study must be a table")
    _unknown(source, raw, ("study", "data", "models", "analysis"))
    for table in ("study", "data", "models"):
        if table not in raw:
            raise ConfigError(f"{source}: [{table}] is required" if table != "models"
                              else f"{source}: at least one [[models]] table is required")
    study = _table(f"{source}: [study]", raw["study"])
    _unknown(f"{source}: study", study, ("name", "seeds", "description", "output"))
    if "name" not in study:
        raise ConfigError(f"{source}: study.name is required")
    name = _check(f"{source}: study.name", study["name"], str)
    if not _NAME_RE.match(name):
        raise ConfigError(f"{source}: study.name = {name!r} must be letters, digits, '_', '.' or '-'")
    if "seeds" not in study:
        raise ConfigError(f"{source}: study.seeds is required (a list of ints, e.g. seeds = [0, 1, 2])")
    seeds = _check(f"{source}: study.seeds", study["seeds"], list)
    if not seeds:
        raise ConfigError(f"{source}: study.seeds is empty; give at least one seed")
    for j, s in enumerate(seeds):
        _check(f"{source}: study.seeds[{j}]", s, int)
        if s < 0:
            raise ConfigError(f"{source}: study.seeds[{j}] must be >= 0, got {s}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: study.seeds has duplicates: {seeds}")
    out = {"study": {"name": name, "seeds": list(seeds),
                     "description": _check(f"{source}: study.description", study.get("description", ""), str),
                     "output": _check(f"{source}: study.output", study.get("output", str(Path("runs") / name)), str)}}
    data = _table(f"{source}: [data]", raw["data"])
    _unknown(f"{source}: data", data, ("dataset", "n_train", "n_test", "data_dir"))
    if "dataset" not in data:
        raise ConfigError(f"{source}: data.dataset is required (e.g. dataset = \"fashion-mnist\")")
    _check(f"{source}: data.dataset", data["dataset"], str)
    for key in ("n_train", "n_test"):
        if key in data and _check(f"{source}: data.{key}", data[key], int) < 1:
            raise ConfigError(f"{source}: data.{key} must be >= 1, got {data[key]}")
    if "data_dir" in data:
        _check(f"{source}: data.data_dir", data["data_dir"], str)
    out["data"] = dict(data)
    models = raw["models"]
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{source}: [[models]] must be a non-empty array of tables")
    out["models"] = [_model(i, m, source) for i, m in enumerate(models)]
    names = [m["name"] for m in out["models"]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{source}: duplicate model names {dup}: each [[models]] needs its own name")
    out["analysis"] = _analysis(raw.get("analysis", {}), source)
    return out


def load_study(path) -> dict:
    """Read and validate a study TOML file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"study file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return validate_study(raw, source=str(path))
