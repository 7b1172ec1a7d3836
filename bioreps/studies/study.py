"""Study files: several local-learning and backprop models over seeds, in one TOML.

A study file has these tables (every key and value is checked before anything is written; an error
names the key's path, e.g. ``models[2].regularizer.lam``)::

    [study]                 name, seeds (list of ints), description, output (default runs/<name>),
                            ensembles (default true: see "Ensembles" below)
    [data]                  dataset, n_train, n_test, data_dir
    [[models]]              one table per model: name, kind (any registered kind, see
                            ``bioreps.studies.kinds.names()``) and that kind's parameters written
                            directly in the table (``n_units``, ``k``, ``epochs``; for a backprop
                            baseline ``sizes``, ``epochs``, ``lr``, ``batch_size``)
    [models.regularizer]    backprop baselines only: kind (weight-decay, jacobian, spectral,
                            adversarial) and its parameters
    [models.readout]        local-learning models: the softmax readout (epochs, lr, ...)
    [analysis]              spectrum, attacks, transfer, cka, selectivity, ablation

Ensembles: a model whose kind can train several networks at once (``Layer.ensemble``, the
spiking layer's :class:`~bioreps.layers.SpikingEnsemble`) has all its seeds trained by one unit
("ensemble", model) when the study has several seeds and every seed trains on the same rows (no
``n_train`` subset): the members train in parallel (CPU threads, or one GPU block each), each
exactly the network its seed trains alone, and each ("train", model, seed) unit takes its member
from that unit instead of fitting (its ``train.json`` says so, with the ensemble's wall time).
``ensembles = false`` trains every seed on its own.

Checkpoints: every training unit checkpoints as it goes (each epoch; a spiking layer, which
counts samples, every tenth of its training rows; a baseline, each epoch) into its unit's
checkpoint folder (:mod:`bioreps.studies.execute`, "Checkpoints"). A study killed mid-unit and
run again with ``--resume`` continues that unit from its last checkpoint, with the same result as
an uninterrupted fit, and the unit's record says where it resumed (``resumed_from``); a changed
model configuration starts its units afresh.

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
from pathlib import Path

from .run import ConfigError

__all__ = ["ATTACKS", "load_study", "validate_study", "is_study"]

#: attacks a study may ask for ("noise": uniform random sign noise of the same L-inf size)
ATTACKS = ("noise", "fgsm", "pgd", "square")
#: what a study may set of :func:`bioreps.baselines.train` for a backprop baseline
TRAIN_KEYS = ("epochs", "batch_size", "lr")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_ANALYSIS_DEFAULTS = {
    "spectrum": {"enabled": True, "ranks": [11, 500], "bootstrap": 0, "noise_probes": False,
                 "preactivations": False, "widths": []},
    "attacks": {"methods": ["fgsm", "pgd"], "eps": [0.0, 0.05, 0.1, 0.2], "steps": 20, "n_images": 500,
                "n_queries": 1000},
    "transfer": True,
    "cka": "linear",
    "selectivity": False,
    "ablation": False,
}
_ANALYSIS_TYPES = {
    "spectrum": {"enabled": bool, "ranks": list, "bootstrap": int, "noise_probes": bool, "preactivations": bool,
                 "widths": list},
    "attacks": {"methods": list, "eps": list, "steps": int, "n_images": int, "n_queries": int},
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
    allowed["attacks"] = dict
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
        elif key == "attacks":
            out[key] = _model_attacks(f"{path}.attacks", value, source)
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


#: what a model's own [models.attacks] table may change of analysis.attacks (the eps grid stays
#: the study's, so every model is measured on the same budgets)
MODEL_ATTACK_KEYS = ("methods", "steps", "n_images", "n_queries")


def _model_attacks(path, table, source):
    table = _table(f"{source}: {path}", table)
    for key, value in table.items():
        if key not in MODEL_ATTACK_KEYS:
            raise ConfigError(f"{source}: unknown key {path}.{key}; a model may set {list(MODEL_ATTACK_KEYS)} "
                              f"(the eps grid is the study's: analysis.attacks.eps)")
        _check(f"{source}: {path}.{key}", value, _ANALYSIS_TYPES["attacks"][key])
        if key != "methods" and value < 1:
            raise ConfigError(f"{source}: {path}.{key} must be >= 1, got {value}")
    bad = [m for m in table.get("methods", []) if m not in ATTACKS]
    if bad or len(set(table.get("methods", []))) != len(table.get("methods", [])):
        raise ConfigError(f"{source}: {path}.methods must be distinct names among {list(ATTACKS)}, "
                          f"got {table['methods']}")
    return dict(table)


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
    widths = cfg["spectrum"]["widths"]
    if (not all(isinstance(h, int) and not isinstance(h, bool) and h >= 2 for h in widths)
            or list(widths) != sorted(set(widths))):
        raise ConfigError(f"{source}: analysis.spectrum.widths must be increasing distinct ints >= 2 (the "
                          f"first h units whose spectrum is measured), got {widths}")
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
    for key in ("steps", "n_images", "n_queries"):
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
    _unknown(f"{source}: study", study, ("name", "seeds", "description", "output", "ensembles"))
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
                     "output": _check(f"{source}: study.output", study.get("output", str(Path("runs") / name)), str),
                     "ensembles": _check(f"{source}: study.ensembles", study.get("ensembles", True), bool)}}
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
    _check_values(out, source)
    _check_training(out, source)
    return out


def _named(path, table, message):
    """``message`` (a model's or readout's error) prefixed with the key of ``table`` it names
    first, e.g. ``models[0].lr must be > 0, got -1``; ``path: message`` when it names none."""
    hits = []
    for key, value in table.items():
        if key not in ("name", "kind") and (m := re.search(rf"\b{re.escape(key)}\b", message)):
            hits.append((m.start(), key, f"{path}.{key}"))
        for sub in value if isinstance(value, dict) and key not in ("readout", "regularizer", "attacks") else ():
            if m := re.search(rf"\b{re.escape(sub)}\b", message):
                hits.append((m.start(), sub, f"{path}.{key}.{sub}"))
    if not hits:
        return f"{path}: {message}"
    _, key, where = min(hits)
    return f"{where}{message[len(key):]}" if message.startswith(key + " ") else f"{where}: {message}"


def _on_cpu(value):
    """A model's table with every known ``backend`` (in it and in its sub-tables) set to "cpu":
    checking values needs no GPU, and whether one is usable is the run's question (its units may
    run on other machines); an unknown backend is kept, for the check to name."""
    from ..backend import BACKENDS

    if isinstance(value, dict):
        return {k: "cpu" if k == "backend" and isinstance(v, str) and v.lower() in BACKENDS else _on_cpu(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def _check_values(cfg, source):
    """Every model's values, checked as its units will check them but before anything is read
    or written (a bad value found inside a unit would come after study.json, the report and the
    units' folders): the model built from its table (on the CPU backend, so that no GPU is
    needed to check a GPU study) and its ``_validate_params``; a baseline's ``epochs``,
    ``batch_size`` and ``lr`` as :func:`bioreps.baselines.train` checks them; a layer's
    ``epochs``; a local-learning model's readout as :class:`bioreps.readout.LinearReadout`
    checks it. An error names the key, e.g. ``models[0].lr must be > 0, got -1``."""
    import warnings

    from .._validation import check_float, check_int
    from ..backend import BackendError, BackendWarning
    from ..readout import LinearReadout
    from . import kinds

    for i, m in enumerate(cfg["models"]):
        path, kind = f"models[{i}]", m["kind"]
        cls, spec = kinds.get(kind), kinds.params(kind)
        ctor = {k: v for k, v in m.items() if k in spec}
        try:
            if "backend" in spec:
                ctor.setdefault("backend", "auto")
            with warnings.catch_warnings():   # "auto" in a nested table: the CPU fallback is no news here
                warnings.simplefilter("ignore", BackendWarning)
                kinds.build(kind, _on_cpu(ctor), seed=0, progress=False)._validate_params()
            if "lr" in m and cls.supervised:   # what bioreps.baselines.train checks
                check_float(m["lr"], "lr", strict=True)
            for key in ("epochs", "batch_size") if cls.supervised else ("epochs",):
                if key in m:
                    check_int(m[key], key)
        except (ValueError, TypeError, BackendError) as exc:
            raise ConfigError(f"{source}: {_named(path, m, str(exc))}") from None
        if "readout" in m:
            try:
                LinearReadout(**m["readout"], progress=False)._validate_params()
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{source}: {_named(f'{path}.readout', m['readout'], str(exc))}") from None


def _check_training(cfg, source):
    """What a backprop model's regulariser needs of its training (e.g. the spectral penalty: a
    batch larger than the representation), checked on the model built from its table before
    anything trains: :meth:`bioreps.baselines.regularizers.Regularizer.check`, as ``train`` calls
    it, with the batch size and the number of training images the study will use."""
    import inspect

    from .. import data as bdata
    from ..baselines import train as train_fn
    from . import kinds

    default_batch = inspect.signature(train_fn).parameters["batch_size"].default
    for i, m in enumerate(cfg["models"]):
        if not m.get("regularizer"):
            continue
        reg_cfg = dict(m["regularizer"])
        path = f"models[{i}] ({m['name']})"
        try:
            n_train = cfg["data"].get("n_train") or bdata.spec(cfg["data"]["dataset"]).n_samples["train"]
        except ValueError:  # an unknown dataset: its loader names the problem when the data load
            continue
        try:
            reg = _regularizers()[reg_cfg.pop("kind")](**reg_cfg)
            model = kinds.build(m["kind"], {k: v for k, v in m.items() if k in kinds.params(m["kind"])}, seed=0,
                                progress=False)
            reg.check(model, m.get("batch_size", default_batch), n_train)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: {path}: {exc}") from None


def load_study(path) -> dict:
    """Read and validate a study TOML file."""
    from .run import read_toml

    return validate_study(read_toml(path), source=str(path))


# =========================================================================== running a study
#
# Units of work (bioreps.studies.execute): ("train", model, seed) fits one model and writes its
# HDF5 file (train and test representations), its readout and its figures; ("analyze", model,
# seed) measures that file (spectrum, clean and robust accuracy); ("compare", seed) compares the
# models of one seed (CKA of their test representations). Each unit records the hash of the
# configuration it depends on, so a rerun skips finished units and redoes changed ones.

RESULTS_FORMAT = "bioreps-study-results"
_STUDY_RECORD = "study.json"


def _model_seed(seed, name):
    """The seed a model's own randomness gets: from the study seed and the model's name."""
    import hashlib

    import numpy as np

    salt = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    return int(np.random.SeedSequence([seed, salt]).generate_state(1)[0])


def _load_readout(model_path):
    """The readout stored in the model's file (``/readout``)."""
    from .. import io as bio
    from ..readout import LinearReadout

    with bio.load(model_path) as f:
        stored = f.readout
    if stored is None:
        raise ValueError(f"{model_path} holds no readout (/readout): it was written by an older bioreps; "
                         f"delete the study's train output of this model and run the study again")
    return LinearReadout.from_arrays(stored.arrays, stored.hyperparameters)


def _same_rows_every_seed(data_cfg) -> bool:
    """Every seed trains on the same rows: the whole training split (no smaller ``n_train``)."""
    from .. import data as bdata

    n = data_cfg.get("n_train")
    return n is None or n >= bdata.spec(data_cfg["dataset"]).n_samples["train"]


def _ensembled(cfg) -> list:
    """The models whose seeds train together in one ("ensemble", model) unit (module docstring)."""
    from . import kinds

    seeds = cfg["study"]["seeds"]
    if not cfg["study"].get("ensembles", True) or len(seeds) < 2 or not _same_rows_every_seed(cfg["data"]):
        return []
    return [m["name"] for m in cfg["models"] if kinds.get(m["kind"]).ensemble is not None]


def _checkpoint_every(cls, n_rows) -> int:
    """Checkpoint spacing in a study's training units (module docstring, "Checkpoints"): every
    epoch, or for a layer that counts samples every tenth of its training rows."""
    return max(1, -(-n_rows // 10)) if cls.checkpoint_unit == "samples" else 1


def _fit_resumable(ctx, model, X, fit_kw):
    """``model.fit(X, **fit_kw)`` checkpointed into the unit's checkpoint folder, continuing the
    checkpoint of a killed attempt of this unit when there is one; returns the fitted model."""
    cls = type(model)
    if cls.checkpoint_unit is None:
        model.fit(X, **fit_kw)
        return model
    ckpt = ctx.checkpoint_path("model.h5")
    resume = ckpt.is_file()
    if resume:
        fresh = model.get_params()
        model = cls.load(ckpt, backend=fresh.get("backend"))
        # what does not shape the fit (progress, backend, ...) comes from this run
        model.set_params(**{k: fresh[k] for k in cls.neutral_params if k in fresh})
        ctx.resumed_from = model.checkpoint_progress()
    model.fit(X, **fit_kw, checkpoint=ckpt, checkpoint_every=_checkpoint_every(cls, len(X)), resume=resume)
    return model


def ensemble_unit(ctx, data_cfg, model_cfg, seeds):
    """Unit ("ensemble", model): train the model for every seed at once (``cls.ensemble``), each
    member exactly as its seed's network alone; write ``member_<seed>.h5`` (each member's saved
    state) and ``ensemble.json`` (seeds, model seeds, wall time)."""
    import time

    import numpy as np

    from . import kinds
    from .run import load_splits

    name, kind = model_cfg["name"], model_cfg["kind"]
    cls = kinds.get(kind)
    # every seed's training rows are the whole split (_ensembled checked it): the first seed's
    Xtr = load_splits(data_cfg, np.random.SeedSequence(seeds[0]))["train"][0]
    ctor = {k: v for k, v in model_cfg.items() if k in kinds.params(kind)}
    mseeds = [_model_seed(s, name) for s in seeds]
    ens = cls.ensemble([kinds.build(kind, ctor, seed=ms, progress=False) for ms in mseeds], n_jobs=ctx.threads)
    fit_kw = {k: model_cfg[k] for k in kinds.fit_params(kind) if k in model_cfg}
    folder = ctx.checkpoint_path("members")  # member_<i>.h5, as SpikingEnsemble.fit writes them
    found = sorted(folder.glob("member_*.h5")) if folder.is_dir() else []
    if found:
        ctx.resumed_from = f"the checkpoints of {len(found)} of {len(seeds)} members"
    t0 = time.perf_counter()
    ens.fit(Xtr, **fit_kw, checkpoint=folder, checkpoint_every=_checkpoint_every(cls, len(Xtr)), resume=True)
    seconds = round(time.perf_counter() - t0, 3)
    for seed, member in zip(seeds, ens.members_):
        with ctx.atomic(f"member_{seed}.h5", ".h5") as tmp:
            member.save(tmp)
    ctx.write_json("ensemble.json", {"model": name, "kind": kind, "seeds": list(seeds), "model_seeds": mseeds,
                                     "fit_seconds": seconds, "n_train": int(len(Xtr)),
                                     "backend": str(getattr(ens.members_[0], "backend_", "unknown"))})


def train_unit(ctx, data_cfg, model_cfg, seed):
    """Unit ("train", model, seed): fit the model, export ``model.h5`` (train and test
    representations); for a local-learning model fit the readout on the representations read
    back from that file and store it there (``/readout``); write ``train.json``."""
    import time

    import numpy as np

    from .. import data as bdata
    from ..readout import LinearReadout
    from . import kinds
    from .run import load_splits

    # the subsets are drawn from the study seed: the same rows for every model of that seed
    splits = load_splits(data_cfg, np.random.SeedSequence(seed))
    (Xtr, ytr, itr), (Xte, yte, ite) = splits["train"], splits["test"]
    n_classes = bdata.spec(data_cfg["dataset"]).n_classes
    name, kind = model_cfg["name"], model_cfg["kind"]
    cls = kinds.get(kind)
    mseed = _model_seed(seed, name)
    ctor = {k: v for k, v in model_cfg.items() if k in kinds.params(kind)}
    model = kinds.build(kind, ctor, seed=mseed, progress=False)
    info = {"model": name, "kind": kind, "seed": seed, "model_seed": mseed, "n_train": int(len(Xtr)),
            "n_test": int(len(Xte))}
    t0 = time.perf_counter()
    together = ctx.inputs.get(("ensemble", name))
    if together is not None:  # trained with the other seeds by the ("ensemble", name) unit
        import json

        meta = json.loads(Path(together["ensemble.json"]).read_text())
        model = cls.load(together[f"member_{seed}.h5"])
        if meta["model_seeds"][meta["seeds"].index(seed)] != mseed:
            raise RuntimeError(f"the ensemble's member for seed {seed} has model seed "
                               f"{meta['model_seeds'][meta['seeds'].index(seed)]}, expected {mseed}")
        info["ensemble"] = {"members": len(meta["seeds"]), "seeds": meta["seeds"],
                            "fit_seconds": meta["fit_seconds"]}
    elif cls.supervised:
        from ..baselines import train as train_fn

        reg_cfg = dict(model_cfg.get("regularizer") or {})
        regularizer = None
        if reg_cfg:
            reg_cls = _regularizers()[reg_cfg.pop("kind")]
            regularizer = reg_cls(**reg_cfg)
        fit_kw = {k: model_cfg[k] for k in TRAIN_KEYS if k in model_cfg}
        ckpt = ctx.checkpoint_path("train.pt")
        if ckpt.is_file():
            from ..baselines.train import checkpoint_epoch

            ctx.resumed_from = f"epoch {checkpoint_epoch(ckpt)}"
        train_fn(model, Xtr, ytr, regularizer, seed=mseed, progress=False, checkpoint=ckpt, checkpoint_every=1,
                 resume=True, **fit_kw)
        info["test_accuracy"] = float(model.score(Xte, yte))
        info["train_accuracy"] = float(model.score(Xtr, ytr))
    else:
        fit_kw = {k: model_cfg[k] for k in kinds.fit_params(kind) if k in model_cfg}
        if kinds.accepts(cls.fit, "X_val"):
            fit_kw["X_val"] = Xte  # held-out diagnostics only (no learning from it)
        model = _fit_resumable(ctx, model, Xtr, fit_kw)
    if ctx.resumed_from is not None:  # fit_seconds is then this attempt's time only
        info["resumed_from"] = ctx.resumed_from
    # an ensemble member's share of the ensemble's wall time (its whole time is in "ensemble")
    info["fit_seconds"] = (round(meta["fit_seconds"] / len(meta["seeds"]), 3) if together is not None
                           else round(time.perf_counter() - t0, 3))
    prov = {"seed": seed, "config": {"data": data_cfg, "model": model_cfg}, "dataset": data_cfg["dataset"]}
    # a stack of layers: every layer of the test split (what the analyses measure), the train
    # split's last layer only (what the readout needs; a lower layer of 60,000 images takes GBs)
    layers_kw = {"layer_splits": ["test"]} if cls.layered else {}
    with ctx.atomic("model.h5", ".h5") as tmp:
        if cls.supervised:
            # with each row's index in the source split: analyses find the same images again
            model.export(tmp, {"train": (Xtr, ytr, itr), "test": (Xte, yte, ite)}, dataset=data_cfg["dataset"],
                         provenance=prov, **layers_kw)
        else:
            from .. import io as bio

            model.export(tmp, {"train": (Xtr, ytr, itr), "test": (Xte, yte, ite)}, dataset=data_cfg["dataset"],
                         provenance=prov, **layers_kw)
            with bio.load(tmp) as f:  # the readout sees exactly what was stored
                Htr, Hte = f.representations["train"].to_numpy(), f.representations["test"].to_numpy()
            ro_cfg = dict(model_cfg.get("readout") or {})
            readout = LinearReadout(**ro_cfg, random_state=mseed, progress=False).fit(Htr, ytr, n_classes=n_classes)
            # the readout is part of the model: stored in its file before the file is committed
            bio.add_readout(tmp, readout.to_arrays(), readout.hyperparameters())
    from .. import io as bio

    with bio.load(ctx.path("model.h5")) as f:  # the backend the model says it ran on
        info["backend"] = str(f.provenance.get("backend", "unknown"))
    if not cls.supervised:
        info["train_accuracy"] = float(readout.score(Htr, ytr))
        info["test_accuracy"] = float(readout.score(Hte, yte))
        if cls.has_vote_readout:
            model.assign_labels(None, ytr, counts=Htr)
            info["vote_test_accuracy"] = float((model.predict(None, counts=Hte) == yte).mean())
        info.update({k: v for k, v in model.fit_summary().items() if isinstance(v, (int, float))})
    ctx.write_json("train.json", info)


def _classifier(cls, model_path):
    """(torch module to attack, why) for a trained model's file: the baseline itself, a
    differentiable layer + the file's readout, or a non-differentiable view (black-box attacks
    only). The readout is always the one stored in the file, never a retrained one."""
    from ..torch_views import classifier, spiking_classifier

    if cls.supervised:
        return cls.load(model_path), "the trained network"
    readout = _load_readout(model_path)
    if getattr(cls, "represents_input", False):
        return readout.to_torch(), "the file's readout on the pixels"
    layer = cls.load(model_path)
    if cls.torch_view:
        return classifier(layer, readout), "layer + the file's readout (differentiable)"
    return spiking_classifier(layer, readout), "layer + the file's readout (not differentiable: black-box attacks only)"


def _spectrum_entry(R, ranks, bootstrap=0, seed=0, widths=()):
    """alpha of a representation's PCA spectrum by both fits, the normalised spectrum clipped to the
    ranks that carry variance (for the page's figure), any fit warnings, and (``widths``) both
    alphas of the spectrum of the first h units for each h below the width (the seed paper's
    figures vary h)."""
    import warnings

    import numpy as np

    from ..analysis import spectrum

    eigs = spectrum.eigenspectrum(R)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = spectrum.powerlaw_alpha(eigs, ranks=tuple(ranks))
        nas = spectrum.powerlaw_alpha(eigs, ranks=(ranks[0], ranks[1] + 1), method="nassar")  # the same ranks
        ci = spectrum.alpha_ci(R, ranks=tuple(ranks), n_boot=bootstrap, seed=seed) if bootstrap else None
    top = float(eigs[0]) if len(eigs) and eigs[0] > 0 else 1.0
    norm = np.asarray(eigs, float) / top
    carried = norm[norm > 1e-12][:2000]
    out = {"alpha": float(fit.alpha), "alpha_nassar": float(nas.alpha), "ranks": [int(r) for r in fit.ranks],
           "nassar_ranks": [int(nas.ranks[0]), int(nas.ranks[1]) + 1], "nassar_intercept": float(nas.intercept),
           "residual": float(fit.residual), "cliff": fit.cliff, "eigs": [float(v) for v in carried],
           "warnings": sorted({str(w.message) for w in caught})}
    if ci is not None:
        out["alpha_ci"] = [float(ci.low), float(ci.high)]
        out["bootstrap"] = int(bootstrap)
    out["by_width"] = []
    for h in [h for h in widths if h < R.shape[1]] + [R.shape[1]] if widths else []:
        row = {"h": int(h)}
        try:  # the first h units may all be silent (dead units): no spectrum at this width
            e = spectrum.eigenspectrum(R[:, :h])
        except ValueError:
            e = None
        for key, kw in (("alpha", {"ranks": tuple(ranks)}),
                        ("alpha_nassar", {"ranks": (ranks[0], ranks[1] + 1), "method": "nassar"})):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    row[key] = None if e is None else float(spectrum.powerlaw_alpha(e, **kw).alpha)
                except ValueError:  # too few ranks with variance at this width
                    row[key] = None
        out["by_width"].append(row)
    return fit, eigs, out


#: what the per-layer alphas are (analysis.json's "layers_note")
LAYERS_NOTE = ("alpha of each layer's test representation by both fits over the study's ranks (clipped to the "
               "layer's spectrum, cut at its cliff); no bootstrap and no widths per layer: a layer of a "
               "convolutional net is a flattened (channel, y, x) map, whose first h units are the first "
               "channels' pixels, not a sample of units")
_LAYER_NAME = re.compile(r"^test(\.layer(\d+))?$")


def _layer_spectra(model_path, ranks, last_entry) -> list:
    """``[{"layer", "n_units", "alpha", "alpha_nassar", ...}, ...]`` by layer, for a model file
    whose test representations say their ``layer`` ("test" and "test.layer<i>", as a
    multi-layer model's export writes them); ``[]`` for a one-layer file. Each layer's spectrum
    is read from the file block by block (a lower layer can be 10000 x 18816 floats) by
    :func:`_spectrum_entry` without bootstrap or widths (:data:`LAYERS_NOTE`); the last layer's
    is ``last_entry``, the "test" spectrum already measured. A layer whose spectrum cannot be
    fitted over the ranks (too few units or samples once the window is clipped to its spectrum,
    or no variance at all) gets None alphas and the reason, as ``_spectrum_entry`` does for a
    width too small."""
    from .. import io as bio

    out = []
    with bio.load(model_path) as f:
        found = {name: rep for name, rep in f.representations.items() if _LAYER_NAME.match(name)}
        if "test" not in found or found["test"].layer is None:
            return []
        unlabelled = sorted(name for name, rep in found.items() if rep.layer is None)
        if unlabelled:
            raise ValueError(f"{model_path}: representation {unlabelled[0]!r} has no layer attribute, but 'test' "
                             f"says it is layer {found['test'].layer}")
        for name, rep in sorted(found.items(), key=lambda kv: kv[1].layer):
            row = {"layer": int(rep.layer), "n_units": int(rep.n_units)}
            if name == "test":
                entry = last_entry
            else:
                try:
                    entry = _spectrum_entry(rep, ranks)[2]  # the representation is read lazily
                except ValueError as exc:
                    row.update(alpha=None, alpha_nassar=None, not_measured=str(exc))
                    out.append(row)
                    continue
            row.update({k: entry[k] for k in ("alpha", "alpha_nassar", "ranks", "nassar_ranks", "warnings")})
            out.append(row)
    layers = [r["layer"] for r in out]
    if len(set(layers)) != len(layers) or out[-1]["layer"] != found["test"].layer:
        raise ValueError(f"{model_path}: the test representations' layer attributes {layers} are not distinct, "
                         f"or 'test' (layer {found['test'].layer}) is not the last")
    return out


def _noise_probes(X, seed):
    """Gaussian images with each pixel's test-set mean and standard deviation, clipped to [0, 1] (the
    models' input range): as many as ``X`` has rows, from the seed."""
    import numpy as np

    rng = np.random.default_rng([seed, 0x6E6F6973])  # "nois"
    mu, sd = X.mean(axis=0), X.std(axis=0)
    return np.clip(mu + sd * rng.standard_normal(X.shape), 0.0, 1.0).astype(np.float32)


ABLATION_ROWS = 2000  # test images of an ablation curve (11 points, two orders)


def _ablation(cls, model_path, H, y, X_test, seed):
    """Accuracy as the representation's units are ablated (clamped to 0) most class-selective
    first and in a random order (Morcos et al. 2018), on the first test images: a backprop network
    through a hook on its representation, a local-learning model through its stored readout on its
    stored test representation (exactly what the readout sees)."""
    from ..analysis import selectivity

    n = min(ABLATION_ROWS, len(H))
    result = {"n_images": int(n), "fill": "zero", "curves": {}}
    try:
        if cls.supervised:
            model, X = cls.load(model_path), X_test[:n]
        else:
            readout = _load_readout(model_path)
            model, X = ((lambda r: r), readout.decision_function), H[:n]
        for order in ("selective", "random"):
            c = selectivity.ablation_curve(model, X, y[:n], order=order, seed=seed)
            result["curves"][order] = {"fractions": [float(v) for v in c.fractions],
                                       "accuracy": [float(v) for v in c.accuracies]}
    except ValueError as exc:  # no readout in the file, a signed representation (no selectivity)
        result["not_measured"] = str(exc)
    return result


def analyze_unit(ctx, analysis_cfg, data_cfg, model_cfg, seed):
    """Unit ("analyze", model, seed): the spectrum of the test representation (Stringer and
    unweighted fits; on Gaussian-noise probes too when asked; for a multi-layer model, whose file
    holds every layer's test representation, each layer's alpha: ``layers``, see
    :func:`_layer_spectra`), class selectivity when asked, and
    the attacks on the correctly classified images among the first ``n_images`` test images: per
    attack the relative accuracy curve, each image's critical perturbation and the eps at 50%
    relative accuracy (:func:`bioreps.analysis.robustness.critical_perturbation`)."""
    import warnings

    import numpy as np
    import torch

    from .. import data as bdata
    from .. import io as bio
    from ..analysis import robustness, spectrum
    from . import kinds

    files = ctx.inputs[("train", model_cfg["name"], seed)]
    cls = kinds.get(model_cfg["kind"])
    out = {"model": model_cfg["name"], "kind": model_cfg["kind"], "seed": seed}
    spec_cfg = analysis_cfg["spectrum"]
    with bio.load(files["model.h5"]) as f:
        test = f.representations["test"]
        H, y = test.to_numpy(), test.labels
        index = test.inputs_index
    need_images = ({**analysis_cfg["attacks"], **(model_cfg.get("attacks") or {})}["methods"]
                   or (spec_cfg["enabled"] and spec_cfg["noise_probes"]) or (analysis_cfg["ablation"] and cls.supervised))
    X_test = (bdata.load(data_cfg["dataset"], "test", data_dir=data_cfg.get("data_dir"))[0][index]
              if need_images else None)
    if spec_cfg["enabled"]:
        out["spectra"] = {}
        fit, eigs, out["spectra"]["test"] = _spectrum_entry(H, spec_cfg["ranks"], spec_cfg["bootstrap"], seed,
                                                            spec_cfg["widths"])
        spectrum.plot_spectrum(eigs, fit=fit, path=ctx.path("spectrum.png"),
                               title=f"{model_cfg['name']} (seed {seed}): alpha {fit.alpha:.2f}")
        ctx.add_output("spectrum.png")
        sources = {}
        if spec_cfg["noise_probes"] or spec_cfg["preactivations"]:
            model = cls.load(files["model.h5"])
            probes = _noise_probes(X_test, seed) if spec_cfg["noise_probes"] else None
            if spec_cfg["noise_probes"]:
                sources["noise"] = lambda: model.transform(probes)
            if spec_cfg["preactivations"] and cls.has_preactivations:
                sources["test-pre"] = lambda: model.preactivations(X_test)
                if spec_cfg["noise_probes"]:
                    sources["noise-pre"] = lambda: model.preactivations(probes)
            elif spec_cfg["preactivations"]:
                out["spectra_notes"] = [f"{model_cfg['kind']} has no pre-activations (its representation is not "
                                        f"an activation function of currents): only its representation's spectra"]
        for name, make in sources.items():
            R = np.asarray(make(), dtype=np.float32)
            out["spectra"][name] = _spectrum_entry(R, spec_cfg["ranks"], 0, seed, spec_cfg["widths"])[2]
        layers = _layer_spectra(files["model.h5"], spec_cfg["ranks"], out["spectra"]["test"])
        if layers:
            out["layers"] = layers
            out["layers_note"] = LAYERS_NOTE
    if cls.prunable:  # the seed paper's pruning of noise units: which units never learned
        from ..plots import pruning_figure, save_figure

        layer = cls.load(files["model.h5"])
        noise = layer.noise_units()
        save_figure(pruning_figure(layer.weights_, noise, title=f"{model_cfg['name']} (seed {seed})"),
                    ctx.path("pruning.png"))
        ctx.add_output("pruning.png")
        out["pruning"] = {"n_units": int(noise.size), "n_noise": int(noise.sum())}
    if analysis_cfg["selectivity"]:
        from ..analysis import selectivity

        sel = selectivity.class_selectivity(H, y)
        out["selectivity"] = {"values": [float(v) if np.isfinite(v) else None for v in sel],
                              "mean": float(np.nanmean(sel)) if np.isfinite(sel).any() else None}
    if analysis_cfg["ablation"]:
        out["ablation"] = _ablation(cls, files["model.h5"], H, y, X_test, seed)
    att = {**analysis_cfg["attacks"], **(model_cfg.get("attacks") or {})}  # the model's own settings win
    if att["methods"]:
        X, yy = X_test[:att["n_images"]], y[:att["n_images"]]
        result = {"n_images": int(len(X)), "eps": list(att["eps"]), "attacks": {}, "skipped": {}}
        try:
            module, how = _classifier(cls, files["model.h5"])
        except ValueError as exc:  # no classifier (no readout in the file): nothing to attack
            result["not_attacked"] = str(exc)
            module = None
        if module is not None:
            result["how"] = how
            differentiable = getattr(module, "differentiable", True)
            torch.manual_seed(seed)
            for attack in att["methods"]:
                if attack in ("fgsm", "pgd") and not differentiable:
                    result["skipped"][attack] = ("the model is not differentiable (a spiking layer): gradient "
                                                 "attacks do not apply; see the gradient-free attacks")
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    crit = robustness.critical_perturbation(module, X, yy, att["eps"], attack, seed=seed,
                                                            steps=att["steps"], n_queries=att["n_queries"],
                                                            progress=False)
                rel = crit.relative_accuracy()
                if len(crit.l2) == 0:  # no image classified correctly: no relative accuracy to measure
                    result["attacks"][attack] = {"relative_accuracy": [None] * len(rel), "accuracy": [0.0] * len(rel),
                                                 "l2": [], "critical_eps": [], "median_l2": None, "n_correct": 0,
                                                 "eps50": {"eps": None, "lo": None, "hi": None,
                                                           "censored": "no test image classified correctly"}}
                    result["clean_accuracy"] = float(crit.clean_accuracy)
                    continue
                entry = {"relative_accuracy": [float(v) for v in rel],
                         "accuracy": [float(v) * crit.clean_accuracy for v in rel],
                         "l2": [float(v) if np.isfinite(v) else None for v in crit.l2],
                         "critical_eps": [float(v) if np.isfinite(v) else None for v in crit.critical_eps],
                         "median_l2": float(crit.median_l2()) if np.isfinite(crit.median_l2()) else None,
                         "eps50": _jsonable(robustness.eps_at_level(att["eps"], rel, 0.5)),
                         "n_correct": int(len(crit.l2))}
                result["attacks"][attack] = entry
                result["clean_accuracy"] = float(crit.clean_accuracy)
        out["robustness"] = result
    ctx.write_json("analysis.json", _jsonable(out))


def _transfer_eps(analyses, grid, attack):
    """The eps of the grid nearest (in log) to the median of the models' eps at 50% relative
    accuracy under ``attack``: the budget where the source models are near 50%, so the transfer
    matrix is informative (at the largest eps every entry is ~0)."""
    import numpy as np

    vals = [a["robustness"]["attacks"][attack]["eps50"]["eps"] for a in analyses
            if attack in ((a.get("robustness") or {}).get("attacks") or {})
            and (a["robustness"]["attacks"][attack].get("eps50") or {}).get("eps") is not None
            and np.isfinite(a["robustness"]["attacks"][attack]["eps50"]["eps"])]
    positive = [e for e in grid if e > 0]
    if not positive:
        return None
    if not vals:
        return positive[-1]
    target = float(np.median(vals))
    return min(positive, key=lambda e: abs(np.log(e) - np.log(target)))


def compare_unit(ctx, analysis_cfg, data_cfg, models, seed):
    """Unit ("compare", seed): linear (or the configured) CKA between the test representations
    of every pair of the study's models for one seed; with ``analysis.transfer``, the transfer
    matrix of adversarial examples between the models (Szegedy et al. 2013) at the grid eps
    nearest the models' median eps at 50% relative accuracy. ``models``: ``[name, kind]`` pairs."""
    import json
    import warnings

    import numpy as np

    from .. import io as bio
    from ..analysis import robustness, similarity

    names = [name for name, _ in models]
    kind_of = dict((name, kind) for name, kind in models)
    out = {"seed": seed, "models": names, "cka": analysis_cfg["cka"], "matrix": None}
    reps, ys, index = [], None, None
    for name in names:
        with bio.load(ctx.inputs[("train", name, seed)]["model.h5"]) as f:
            test = f.representations["test"]
            reps.append(test.to_numpy())
            ys, index = test.labels, test.inputs_index
    if analysis_cfg["cka"] != "none":
        kernel = "rbf" if analysis_cfg["cka"] == "rbf" else "linear"
        M = similarity.cka_matrix(reps, kernel=kernel, debiased=analysis_cfg["cka"] == "debiased")
        out["matrix"] = [[float(v) for v in row] for row in M]
    att = analysis_cfg["attacks"]
    attack = next((a for a in ("pgd", "fgsm") if a in att["methods"]), None)
    if analysis_cfg["transfer"] and attack is not None:
        from .. import data as bdata
        from . import kinds

        analyses = [json.loads(Path(ctx.inputs[("analyze", n, seed)]["analysis.json"]).read_text()) for n in names]
        eps = _transfer_eps(analyses, att["eps"], attack)
        X = bdata.load(data_cfg["dataset"], "test", data_dir=data_cfg.get("data_dir"))[0][index][:att["n_images"]]
        yy = ys[:att["n_images"]]
        modules, left_out = {}, {}
        for name in names:
            try:
                modules[name] = _classifier(kinds.get(kind_of[name]), ctx.inputs[("train", name, seed)]["model.h5"])[0]
            except ValueError as exc:
                left_out[name] = str(exc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kw = {"steps": att["steps"]} if attack == "pgd" else {}
            tr = robustness.transfer_matrix(modules, X, yy, eps, attack=attack, seed=seed, progress=False, **kw)
        out["transfer"] = {"attack": attack, "eps": float(eps), "names": tr.names,
                           "matrix": _jsonable(tr.matrix), "clean_accuracy": _jsonable(tr.clean_accuracy),
                           "n_images": int(len(X)), "left_out": left_out,
                           "rows_not_crafted": [n for n, row in zip(tr.names, tr.matrix) if np.isnan(row).all()]}
    ctx.write_json("compare.json", out)


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def plan(cfg, root) -> list:
    """The study's units of work (see above), each with the hash of the configuration it uses."""
    from .execute import Unit, config_hash, unit_folder

    root = Path(root)
    data_cfg, analysis = cfg["data"], cfg["analysis"]
    units = []
    names = [m["name"] for m in cfg["models"]]
    data_key = {k: v for k, v in data_cfg.items() if k != "data_dir"}
    together = _ensembled(cfg)
    for m in cfg["models"]:
        if m["name"] in together:
            key = ("ensemble", m["name"])
            trained = {k: v for k, v in m.items() if k != "attacks"}
            units.append(Unit(key, ensemble_unit, unit_folder(root, key),
                              args=(data_cfg, trained, list(cfg["study"]["seeds"])),
                              config_hash=config_hash({"data": data_key, "model": trained,
                                                       "seeds": cfg["study"]["seeds"]})))
    for seed in cfg["study"]["seeds"]:
        for m in cfg["models"]:
            key = ("train", m["name"], seed)
            trained = {k: v for k, v in m.items() if k != "attacks"}  # attack settings never retrain
            units.append(Unit(key, train_unit, unit_folder(root, key), args=(data_cfg, trained, seed),
                              deps=(("ensemble", m["name"]),) if m["name"] in together else (),
                              config_hash=config_hash({"data": data_key, "model": trained, "seed": seed})))
            akey = ("analyze", m["name"], seed)
            units.append(Unit(akey, analyze_unit, unit_folder(root, akey), args=(analysis, data_cfg, m, seed), deps=(key,),
                              config_hash=config_hash({
                                  "analysis": {k: analysis[k] for k in ("spectrum", "attacks", "selectivity", "ablation")},
                                  "model_attacks": m.get("attacks")})))
        ckey = ("compare", seed)
        transfer = bool(analysis["transfer"]) and any(a in analysis["attacks"]["methods"] for a in ("pgd", "fgsm"))
        deps = tuple(("train", n, seed) for n in names)
        if transfer:
            deps += tuple(("analyze", n, seed) for n in names)
        kinds_of = [[m["name"], m["kind"]] for m in cfg["models"]]
        units.append(Unit(ckey, compare_unit, unit_folder(root, ckey), args=(analysis, data_cfg, kinds_of, seed),
                          deps=deps,
                          config_hash=config_hash({"cka": analysis["cka"], "models": names,
                                                   "transfer": analysis["attacks"] if transfer else None})))
    return units


def _metrics(train, analysis) -> dict:
    """The scalar figures of one (model, seed)."""
    out = {k: train[k] for k in ("test_accuracy", "train_accuracy", "vote_test_accuracy", "fit_seconds")
           if k in train}
    prefixes = {"test": "", "noise": "noise_", "test-pre": "pre_", "noise-pre": "noise_pre_"}
    for source, entry in (analysis.get("spectra") or {}).items():
        for k in ("alpha", "alpha_nassar"):
            if entry.get(k) is not None:
                out[prefixes[source] + k] = entry[k]
    for entry in analysis.get("layers") or []:  # a multi-layer model: each layer's alpha (0-based)
        for k in ("alpha", "alpha_nassar"):
            if entry.get(k) is not None:
                out[f"layer{entry['layer']}_{k}"] = entry[k]
    rob = analysis.get("robustness") or {}
    if rob.get("clean_accuracy") is not None:
        out["attacked_clean_accuracy"] = rob["clean_accuracy"]
    for attack, entry in (rob.get("attacks") or {}).items():
        for e, a, r in zip(rob.get("eps", []), entry["accuracy"], entry["relative_accuracy"]):
            out[f"{attack}_accuracy@{e:g}"] = a
            if r is not None:
                out[f"{attack}_relative_accuracy@{e:g}"] = r
        if entry.get("median_l2") is not None:
            out[f"{attack}_median_l2"] = entry["median_l2"]
        e50 = entry.get("eps50") or {}
        if e50.get("eps") is not None and e50.get("censored") is None:
            out[f"{attack}_eps50"] = e50["eps"]
    return out


def vanilla_model(cfg):
    """The study's vanilla backprop model: the first supervised model without a regulariser (the
    reference of the CKA-to-vanilla figure and of the contrasts); None when there is none."""
    from . import kinds

    for m in cfg["models"]:
        if kinds.get(m["kind"]).supervised and not m.get("regularizer"):
            return m["name"]
    return None


def contrasts(cfg, per_seed) -> dict:
    """Each model against the vanilla backprop model (:func:`vanilla_model`): for every figure
    both have on every seed, the difference of the means across seeds with Welch's 95% interval
    and whether it decides the sign (:func:`bioreps.studies.stats.diff_ci`)."""
    from .stats import diff_ci

    ref = vanilla_model(cfg)
    out = {"reference": ref, "method": "mean(model) - mean(reference) across seeds, Welch's two-sided 95% t "
                                       "interval; decided: the interval excludes 0", "models": {}}
    if ref is None or ref not in per_seed:
        return out
    ref_seeds = per_seed[ref].values()
    for name, seeds in per_seed.items():
        if name == ref:
            continue
        keys = sorted(k for k in {k for v in seeds.values() for k in v}
                      if all(k in v for v in seeds.values()) and ref_seeds and all(k in v for v in ref_seeds))
        out["models"][name] = {k: diff_ci([v[k] for v in seeds.values()], [v[k] for v in ref_seeds]) for k in keys}
    return out


def aggregate(cfg, results) -> dict:
    """``results.json``: every figure per (model, seed), per model the mean and a 95% Student-t
    confidence interval across seeds (:func:`bioreps.studies.stats.mean_ci`), and each model's
    differences to the vanilla backprop model (:func:`contrasts`)."""
    import json

    from .stats import mean_ci

    def read(key, name):
        return json.loads(Path(results[key]["files"][name]).read_text())

    per_seed, summary = {}, {}
    for m in cfg["models"]:
        name = m["name"]
        per_seed[name] = {}
        for seed in cfg["study"]["seeds"]:
            per_seed[name][str(seed)] = _metrics(read(("train", name, seed), "train.json"),
                                                 read(("analyze", name, seed), "analysis.json"))
        keys = sorted({k for v in per_seed[name].values() for k in v})
        summary[name] = {k: mean_ci([v[k] for v in per_seed[name].values() if k in v]) for k in keys
                         if all(k in v for v in per_seed[name].values())}
    cka = {str(seed): read(("compare", seed), "compare.json") for seed in cfg["study"]["seeds"]}
    return {"format": RESULTS_FORMAT, "study": cfg["study"]["name"], "seeds": cfg["study"]["seeds"],
            "intervals": "mean over seeds with a two-sided 95% Student-t confidence interval "
                         "(t quantile with n_seeds - 1 degrees of freedom; one seed: no interval)",
            "models": {m["name"]: {"kind": m["kind"]} for m in cfg["models"]},
            "summary": summary, "per_seed": per_seed, "contrasts": contrasts(cfg, per_seed), "cka": cka,
            "config": cfg}


def summary_table(results) -> str:
    """A plain-text table of the main figures (mean ± CI half-width across seeds)."""
    cols = ["test_accuracy", "alpha"]
    extra = sorted({k for s in results["summary"].values() for k in s if k.startswith("pgd_accuracy@")})
    cols += extra[-2:]
    rows = [["model", "kind"] + cols]
    for name, s in results["summary"].items():
        cells = [name, results["models"][name]["kind"]]
        for c in cols:
            v = s.get(c)
            cells.append("-" if v is None else (f"{v['mean']:.4f}" if v["n"] == 1 else
                                                f"{v['mean']:.4f} ± {(v['ci_high'] - v['ci_low']) / 2:.4f}"))
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def run_study(config, *, output=None, workers=None, scheduler=None, threads=None, resume=False, progress=None,
              log=print, source=None) -> dict:
    """Run a study (a path to its TOML file or a validated config) and return ``results.json``'s
    content. Units run in this process by default, on a local Dask cluster with ``workers=N``, or
    on an existing scheduler (``scheduler="tcp://host:port"``). An output folder that holds
    another study's files is refused; one that holds this study's is refused too unless
    ``resume=True``, which skips every finished unit (after verifying its files). ``threads``:
    compute threads per unit (default: every core in this process; cores // workers on Dask).
    Every value is checked before anything is written (:func:`validate_study`); an output folder
    that cannot be created or written raises :class:`~bioreps.studies.run.OutputError` (one line
    naming the folder), leaving no folder behind."""
    import json
    import time

    from .. import _files
    from .execute import UnitError, config_hash, execute
    from .page import SUMMARY_NAME, write_report
    from .run import _make_output

    if isinstance(config, (str, Path)):
        source = source or str(config)
        cfg = load_study(config)
    else:
        cfg = validate_study(config, source=source or "<study>")
    out = Path(output or cfg["study"]["output"])
    _make_output(out, "the study's output folder" if output else "study.output")
    lock = _files.FolderLock(out, config=source).acquire()
    try:
        record = out / _STUDY_RECORD
        ident = {"study": cfg["study"]["name"], "config_hash": config_hash(cfg)}
        if record.exists():
            old = json.loads(record.read_text())
            if old.get("study") != cfg["study"]["name"]:
                raise ConfigError(f"{out} holds the files of another study ({old.get('study')!r}); "
                                  "choose another output folder")
            if not resume:
                raise ConfigError(f"{out} already holds study {cfg['study']['name']!r}; pass --resume to "
                                  "continue it (finished units are kept, changed ones rerun) or choose "
                                  "another output folder")
        elif any(p.name != _files.LOCK_NAME for p in out.iterdir()):
            raise ConfigError(f"{out} is not empty and holds no bioreps study; choose another output folder")
        _files.write_text_atomic(record, json.dumps({**ident, "config": cfg}, indent=2) + "\n")
        start = time.perf_counter()
        try:
            results = execute(plan(cfg, out / "units"), workers=workers, scheduler=scheduler,
                              threads_per_worker=threads, progress=progress, log=log)
        except UnitError as exc:  # the page shows what finished and lists what is missing
            page = write_report(out, cfg, error=exc, wall_seconds=time.perf_counter() - start)
            log(f"report (partial): {page}")
            raise
        summary = aggregate(cfg, results)
        _files.write_json_atomic(out / "results.json", summary)
        page = write_report(out, cfg, wall_seconds=time.perf_counter() - start)
        log(summary_table(summary))
        log(f"results: {out / 'results.json'}")
        log(f"report: {page} (tables as Markdown: {page.parent / SUMMARY_NAME})")
        return summary
    finally:
        lock.release()
