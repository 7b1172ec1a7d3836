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
from pathlib import Path

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
    if cls.supervised:
        from ..baselines import train as train_fn

        reg_cfg = dict(model_cfg.get("regularizer") or {})
        regularizer = None
        if reg_cfg:
            reg_cls = _regularizers()[reg_cfg.pop("kind")]
            regularizer = reg_cls(**reg_cfg)
        fit_kw = {k: model_cfg[k] for k in TRAIN_KEYS if k in model_cfg}
        train_fn(model, Xtr, ytr, regularizer, seed=mseed, progress=False, **fit_kw)
        info["test_accuracy"] = float(model.score(Xte, yte))
        info["train_accuracy"] = float(model.score(Xtr, ytr))
    else:
        fit_kw = {k: model_cfg[k] for k in kinds.fit_params(kind) if k in model_cfg}
        if kinds.accepts(cls.fit, "X_val"):
            fit_kw["X_val"] = Xte  # held-out diagnostics only (no learning from it)
        model.fit(Xtr, **fit_kw)
    info["fit_seconds"] = round(time.perf_counter() - t0, 3)
    prov = {"seed": seed, "config": {"data": data_cfg, "model": model_cfg}, "dataset": data_cfg["dataset"]}
    with ctx.atomic("model.h5", ".h5") as tmp:
        if cls.supervised:
            model.export(tmp, {"train": (Xtr, ytr), "test": (Xte, yte)}, dataset=data_cfg["dataset"],
                         provenance=prov)
        else:
            from .. import io as bio

            model.export(tmp, {"train": (Xtr, ytr, itr), "test": (Xte, yte, ite)}, dataset=data_cfg["dataset"],
                         provenance=prov)
            with bio.load(tmp) as f:  # the readout sees exactly what was stored
                Htr, Hte = f.representations["train"].to_numpy(), f.representations["test"].to_numpy()
            ro_cfg = dict(model_cfg.get("readout") or {})
            readout = LinearReadout(**ro_cfg, random_state=mseed, progress=False).fit(Htr, ytr, n_classes=n_classes)
            # the readout is part of the model: stored in its file before the file is committed
            bio.add_readout(tmp, readout.to_arrays(), readout.hyperparameters())
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


def analyze_unit(ctx, analysis_cfg, data_cfg, model_cfg, seed):
    """Unit ("analyze", model, seed): spectrum of the test representation (Stringer and Nassar
    fits), clean accuracy and robust accuracy curves on the first ``n_images`` test images."""
    import warnings

    import numpy as np
    import torch

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
    if spec_cfg["enabled"]:
        eigs = spectrum.eigenspectrum(H)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = spectrum.powerlaw_alpha(eigs, ranks=tuple(spec_cfg["ranks"]))
            nas = spectrum.powerlaw_alpha(eigs, ranks=tuple(spec_cfg["ranks"]), method="nassar")
        out["spectrum"] = {"alpha": float(fit.alpha), "alpha_nassar": float(nas.alpha),
                           "ranks": [int(r) for r in fit.ranks], "residual": float(fit.residual),
                           "warnings": [str(w.message) for w in caught]}
        spectrum.plot_spectrum(eigs, fit=fit, path=ctx.path("spectrum.png"),
                               title=f"{model_cfg['name']} (seed {seed}): alpha {fit.alpha:.2f}")
        ctx.add_output("spectrum.png")
    att = analysis_cfg["attacks"]
    if att["methods"]:
        from .. import data as bdata

        X = bdata.load(data_cfg["dataset"], "test", data_dir=data_cfg.get("data_dir"))[0][index][:att["n_images"]]
        yy = y[:att["n_images"]]
        module, how = _classifier(cls, files["model.h5"])
        torch.manual_seed(seed)
        curve_attacks = tuple(m for m in att["methods"] if m in ("fgsm", "pgd", "square"))
        result = {"how": how, "n_images": int(len(X))}
        if curve_attacks:
            differentiable = getattr(module, "differentiable", True)
            run = curve_attacks if differentiable else tuple(m for m in curve_attacks if m == "square")
            result["skipped"] = [m for m in curve_attacks if m not in run]
            if run:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    curve = robustness.robust_accuracy_curve(module, X, yy, att["eps"], attacks=run, seed=seed,
                                                             progress=False, pgd={"steps": att["steps"]}
                                                             if "pgd" in run else {})
                result.update(curve.to_dict())
        if "noise" in att["methods"]:
            rng = np.random.default_rng(seed)
            sign = np.sign(rng.standard_normal(X.shape)).astype(np.float32)
            result.setdefault("accuracy", {})["noise"] = [
                float(robustness.accuracy(module, np.clip(X + e * sign, 0, 1).astype(np.float32), yy))
                for e in att["eps"]]
            result.setdefault("eps", list(att["eps"]))
        out["robustness"] = result
    ctx.write_json("analysis.json", _jsonable(out))


def compare_unit(ctx, analysis_cfg, names, seed):
    """Unit ("compare", seed): linear (or the configured) CKA between the test representations
    of every pair of the study's models for one seed."""
    from .. import io as bio
    from ..analysis import similarity

    if analysis_cfg["cka"] == "none":
        ctx.write_json("compare.json", {"seed": seed, "cka": None})
        return
    reps = []
    for name in names:
        with bio.load(ctx.inputs[("train", name, seed)]["model.h5"]) as f:
            reps.append(f.representations["test"].to_numpy())
    kernel = "rbf" if analysis_cfg["cka"] == "rbf" else "linear"
    M = similarity.cka_matrix(reps, kernel=kernel, debiased=analysis_cfg["cka"] == "debiased")
    ctx.write_json("compare.json", {"seed": seed, "models": list(names), "cka": analysis_cfg["cka"],
                                    "matrix": [[float(v) for v in row] for row in M]})


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
    for seed in cfg["study"]["seeds"]:
        for m in cfg["models"]:
            key = ("train", m["name"], seed)
            units.append(Unit(key, train_unit, unit_folder(root, key), args=(data_cfg, m, seed),
                              config_hash=config_hash({"data": data_key, "model": m, "seed": seed})))
            akey = ("analyze", m["name"], seed)
            units.append(Unit(akey, analyze_unit, unit_folder(root, akey), args=(analysis, data_cfg, m, seed), deps=(key,),
                              config_hash=config_hash({"analysis": {k: analysis[k] for k in ("spectrum", "attacks")}})))
        ckey = ("compare", seed)
        units.append(Unit(ckey, compare_unit, unit_folder(root, ckey), args=(analysis, names, seed),
                          deps=tuple(("train", n, seed) for n in names),
                          config_hash=config_hash({"cka": analysis["cka"], "models": names})))
    return units


def _metrics(train, analysis) -> dict:
    """The scalar figures of one (model, seed)."""
    out = {k: train[k] for k in ("test_accuracy", "train_accuracy", "vote_test_accuracy", "fit_seconds")
           if k in train}
    spec = analysis.get("spectrum") or {}
    for k in ("alpha", "alpha_nassar"):
        if spec.get(k) is not None:
            out[k] = spec[k]
    rob = analysis.get("robustness") or {}
    for attack, accs in (rob.get("accuracy") or {}).items():
        for e, a in zip(rob.get("eps", []), accs):
            if a is not None:
                out[f"{attack}_accuracy@{e:g}"] = a
    return out


def aggregate(cfg, results) -> dict:
    """``results.json``: every figure per (model, seed), and per model the mean and a 95%
    Student-t confidence interval across seeds (:func:`bioreps.studies.stats.mean_ci`)."""
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
            "summary": summary, "per_seed": per_seed, "cka": cka, "config": cfg}


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
    compute threads per unit (default: every core in this process; cores // workers on Dask)."""
    import json

    from .. import _files
    from .execute import config_hash, execute

    if isinstance(config, (str, Path)):
        source = source or str(config)
        cfg = load_study(config)
    else:
        cfg = validate_study(config, source=source or "<study>")
    out = Path(output or cfg["study"]["output"])
    out.mkdir(parents=True, exist_ok=True)
    _files.check_writable(out)
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
        _files.write_text_atomic(record, json.dumps(ident, indent=2) + "\n")
        results = execute(plan(cfg, out / "units"), workers=workers, scheduler=scheduler,
                          threads_per_worker=threads, progress=progress, log=log)
        summary = aggregate(cfg, results)
        _files.write_json_atomic(out / "results.json", summary)
        log(summary_table(summary))
        log(f"results: {out / 'results.json'}")
        return summary
    finally:
        lock.release()
