"""Experiments described by TOML files: one command loads data, fits a model, exports its
representations to HDF5, trains a readout (stored in the same file) and writes a report.

A configuration has these tables (every key is checked: an unknown one is an error that names it)::

    [experiment]            name, seed, output (folder; default "runs/<name>")
    [data]                  dataset (required), data_dir, n_train, n_test
    [model]                 kind (required; any of bioreps.studies.kinds.names()) and that
                            model's constructor parameters (from its signature) and fit epochs
    [readout]               enabled, epochs, lr, batch_size, weight_decay, schedule, pixels_control
    [export]                splits (e.g. ["train", "test"]), block_rows, receptive_fields
    [train]                 checkpoint_every (epochs; 0 = none), checkpoint_every_samples (models
                            that checkpoint by samples)

Run one with ``bioreps run CONFIG.toml`` or :func:`run`. Relative ``output`` and ``data_dir``
paths are taken relative to the current directory. ``[data]`` and ``[model]`` have no default:
a file without them is refused rather than silently training raw pixels on Fashion-MNIST.

Before anything is written, :func:`run` checks the whole configuration, builds the model and
validates its parameters (errors name the table and key, e.g. ``[model] lr``), then creates the
output folder, proves it writable with a probe file and locks it (``<output>/.bioreps.lock``,
an ``flock`` held for the whole run): a second run into the same folder stops with
:class:`bioreps._files.FolderLockedError` naming the first (pid, host, start time, config).
Temporary files left by a killed run are removed; an output folder the run created is removed
again when the run fails before writing anything into it.

Resuming (``resume=True``, ``bioreps train --resume``) compares the configuration with the one
stored in the checkpoint (and the model's parameters with the checkpoint's) and refuses, naming
every differing key, when anything that shaped the checkpoint differs: ``[experiment] seed``,
``[data] dataset, n_train, n_test`` and every ``[model]`` key except the result-neutral ones
(:data:`RESUME_NEUTRAL`, and the model class's ``neutral_params``). Keys that act only after training (``[readout]``, ``[export]``,
the model's ``power``, the exponent of its representation) or not on the result at all
(``[experiment] name, output, description``, ``[data] data_dir``, ``[train]``, ``[model]
backend``, progress bars) may change.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .. import _files
from .._files import FolderLockedError
from . import kinds

__all__ = ["ConfigError", "FolderLockedError", "OutputError", "RESUME_NEUTRAL", "load_config", "read_toml",
           "validate_config", "run"]


class ConfigError(ValueError):
    """An experiment configuration is malformed: unknown table or key, wrong type, bad value."""


class OutputError(OSError):
    """The output folder cannot be created or written (found before any work is done)."""


_NUM = (int, float)

_SCHEMA = {
    "experiment": {"name": str, "seed": int, "output": str, "description": str},
    "data": {"dataset": str, "data_dir": str, "n_train": int, "n_test": int},
    "model": {"kind": str},  # plus the kind's own parameters
    "readout": {"enabled": bool, "epochs": int, "lr": _NUM, "batch_size": int, "weight_decay": _NUM,
                "schedule": str, "pixels_control": bool},
    "export": {"splits": list, "block_rows": int, "receptive_fields": int},
    "train": {"checkpoint_every": int, "checkpoint_every_samples": int},
}
_DEFAULTS = {
    "experiment": {"seed": 0, "description": ""},
    "data": {},   # [data] and [model] are required (no silent Fashion-MNIST / raw-pixel default)
    "model": {},
    "readout": {"enabled": True, "epochs": 5, "lr": 1e-3, "batch_size": 256, "weight_decay": 0.0,
                "schedule": "constant", "pixels_control": True},
    "export": {"splits": ["train", "test"], "block_rows": 4096, "receptive_fields": 100},
    "train": {"checkpoint_every": 0, "checkpoint_every_samples": 0},
}


def _check_type(where, value, expected):
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{where} must be {names}, got {type(value).__name__} {value!r}")


def validate_config(raw: dict, source: str = "<config>") -> dict:
    """Check ``raw`` against the schema and return a full config with defaults filled in."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the configuration must be a table")
    unknown = sorted(set(raw) - set(_SCHEMA))
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) {unknown}; known tables are {sorted(_SCHEMA)}")
    cfg = copy.deepcopy(_DEFAULTS)
    for table, schema in _SCHEMA.items():
        section = raw.get(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: [{table}] must be a table")
        allowed = dict(schema)
        if table == "model" and section:
            if "kind" not in section:
                raise ConfigError(f"{source}: [model] kind is required; choose one of {kinds.names()}")
            kind = section["kind"]
            _check_type(f"{source}: [model] kind", kind, str)
            if kind not in kinds.names():
                raise ConfigError(f"{source}: [model] kind = {kind!r} is unknown; choose one of {kinds.names()}")
            if kinds.get(kind).supervised:
                raise ConfigError(f"{source}: [model] kind = {kind!r} is a supervised baseline; a single "
                                  "experiment trains one unsupervised model: put baselines in a study file "
                                  "([study] and [[models]] tables, see experiments/quickstart.toml) or train "
                                  "them with bioreps.baselines.train")
            allowed.update({n: p.types for n, p in kinds.params(kind).items()})
            allowed.update({n: p.types for n, p in kinds.fit_params(kind).items()})
        for key, value in section.items():
            if key not in allowed:
                raise ConfigError(f"{source}: unknown key {key!r} in [{table}]; allowed keys: {sorted(allowed)}")
            _check_type(f"{source}: [{table}] {key}", value, allowed[key])
            cfg[table][key] = value
    exp = cfg["experiment"]
    if "name" not in exp:
        raise ConfigError(f"{source}: [experiment] name is required")
    exp.setdefault("output", str(Path("runs") / exp["name"]))
    if exp["seed"] < 0:
        raise ConfigError(f"{source}: [experiment] seed must be >= 0")
    for key in ("n_train", "n_test"):
        if key in cfg["data"] and cfg["data"][key] < 1:
            raise ConfigError(f"{source}: [data] {key} must be >= 1, got {cfg['data'][key]}")
    splits = cfg["export"]["splits"]
    if not splits or any(s not in ("train", "test") for s in splits) or len(set(splits)) != len(splits):
        raise ConfigError(f"{source}: [export] splits must be a non-empty list of distinct 'train'/'test', got {splits}")
    if cfg["train"]["checkpoint_every"] < 0 or cfg["train"]["checkpoint_every_samples"] < 0:
        raise ConfigError(f"{source}: [train] checkpoint_every and checkpoint_every_samples must be >= 0 "
                          "(0: no checkpoints)")
    if cfg["export"]["receptive_fields"] < 0:
        raise ConfigError(f"{source}: [export] receptive_fields must be >= 0 (0: no figure)")
    if cfg["export"]["block_rows"] < 1:
        raise ConfigError(f"{source}: [export] block_rows must be >= 1")
    ro = cfg["readout"]
    if ro["enabled"] and (ro["epochs"] < 1 or ro["batch_size"] < 1 or not ro["lr"] > 0):
        raise ConfigError(f"{source}: [readout] needs epochs >= 1, batch_size >= 1 and lr > 0")
    if ro["schedule"] not in ("constant", "linear"):
        raise ConfigError(f"{source}: [readout] schedule must be 'constant' or 'linear', got {ro['schedule']!r}")
    model = cfg["model"]
    if "epochs" in model and model["epochs"] < 1:
        raise ConfigError(f"{source}: [model] epochs must be >= 1, got {model['epochs']}")
    for table, key, what in (("data", "dataset", "e.g. dataset = \"fashion-mnist\""),
                             ("model", "kind", f"kind = one of {kinds.names()}")):
        if table not in raw:
            raise ConfigError(f"{source}: the [{table}] table is required ({what}); there is no default")
        if key not in cfg[table]:
            raise ConfigError(f"{source}: [{table}] {key} is required ({what})")
    return cfg


def read_toml(path) -> dict:
    """The parsed TOML file ``path`` (a missing or malformed file is a :class:`ConfigError`)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"experiment file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_config(path) -> dict:
    """Read and validate a TOML experiment file."""
    raw = read_toml(path)
    if "study" in raw:
        raise ConfigError(f"{path} is a study ([study] + [[models]]): run it with `bioreps run {path}` "
                          "or bioreps.studies.study.run_study")
    return validate_config(raw, source=str(path))


def load_splits(data_cfg, subset_seed, log=None) -> dict:
    """``{split: (X, y, index)}`` for "train" and "test" of a ``[data]`` table: the whole split,
    or ``n_train``/``n_test`` rows drawn without replacement (sorted) from ``subset_seed`` (a
    ``numpy.random.SeedSequence``, one child stream per split). ``index`` is each row's number in
    the dataset split. Used by experiments and studies alike."""
    from .. import data as bdata

    out = {}
    streams = dict(zip(("train", "test"), subset_seed.spawn(2)))
    for split, n_key in (("train", "n_train"), ("test", "n_test")):
        X, y = bdata.load(data_cfg["dataset"], split, data_dir=data_cfg.get("data_dir"))
        n = data_cfg.get(n_key)
        if n is None or n >= len(X):
            idx = np.arange(len(X), dtype=np.int64)
        else:
            idx = np.sort(np.random.default_rng(streams[split]).choice(len(X), size=n, replace=False)).astype(np.int64)
            X, y = X[idx], y[idx]
        out[split] = (X, y, idx)
        if log is not None:
            log(f"data: {data_cfg['dataset']} {split}: {X.shape[0]} x {X.shape[1]}")
    return out


# Keys that may differ between a checkpoint and the configuration that resumes it (they do not
# shape the checkpoint): see the module docstring. Everything else in [experiment] seed, [data]
# and [model] must match.
RESUME_NEUTRAL = {
    "experiment": ("name", "output", "description"),
    "data": ("data_dir",),
}   # [model]: the model class's neutral_params (e.g. backend, progress, power)
# every file a run writes (stale temporaries of these are removed at the start of a run)
_OUTPUT_FILES = ("model.h5", "checkpoint.h5", "results.json", "report.md", "receptive_fields.png")


@dataclass
class _Plan:
    """The model of a configuration, built and validated before anything is read or written."""
    cls: type
    params: dict
    fit_kw: dict
    model: object


def _model_key(message: str, mcfg: dict) -> str:
    """``[model] key`` (or ``[model.params] key``) named earliest in a layer's error message;
    ``[model]`` when none is."""
    hits = []
    for key in mcfg:
        if key != "kind" and (m := re.search(rf"\b{re.escape(key)}\b", message)):
            hits.append((m.start(), f"[model] {key}"))
    nested = mcfg.get("params")
    for key in nested if isinstance(nested, dict) else ():
        if m := re.search(rf"\b{re.escape(key)}\b", message):
            hits.append((m.start(), f"[model.params] {key}"))
    return min(hits)[1] if hits else "[model]"


def _plan(cfg: dict, seeds, source: str, progress=None) -> _Plan:
    """Build the model of ``cfg`` and validate its parameters (ConfigError naming the key)."""
    from ..backend import BackendError

    mcfg = cfg["model"]
    kind = mcfg["kind"]
    cls = kinds.get(kind)
    params = {k: v for k, v in mcfg.items() if k in kinds.params(kind)}
    fit_kw = {k: v for k, v in mcfg.items() if k in kinds.fit_params(kind)}
    try:
        model = kinds.build(kind, params, seed=int(seeds[1].generate_state(1)[0]), progress=progress)
        model._validate_params()
    except (ValueError, TypeError, BackendError) as exc:
        raise ConfigError(f"{source}: {_model_key(str(exc), mcfg)}: {exc}") from None
    if cfg["train"]["checkpoint_every_samples"] and cls.checkpoint_unit != "samples":
        by_samples = [k for k in kinds.names() if kinds.get(k).checkpoint_unit == "samples"]
        how = (f"checkpoints every checkpoint_every epochs" if cls.checkpoint_unit else "has no checkpoints")
        raise ConfigError(f"{source}: [train] checkpoint_every_samples is for models that checkpoint by samples "
                          f"({', '.join(by_samples)}); {kind} {how}")
    return _Plan(cls, params, fit_kw, model)


def _plain(value):
    """A value as JSON would store it (for comparing a configuration with a checkpoint's)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _resume_differences(cfg, plan: _Plan, loaded, saved_cfg) -> list[str]:
    """What shaped the checkpoint and differs now: ``"[table] key (checkpoint A, now B)"``."""
    diffs = {}

    def differ(label, old, new):
        if _plain(old) != _plain(new):
            diffs.setdefault(label, f"{label} (checkpoint {_plain(old)!r}, now {_plain(new)!r})")

    if saved_cfg:
        differ("[experiment] seed", saved_cfg.get("experiment", {}).get("seed"), cfg["experiment"]["seed"])
        for key in sorted(set(saved_cfg.get("data", {})) | set(cfg["data"])):
            if key not in RESUME_NEUTRAL["data"]:
                differ(f"[data] {key}", saved_cfg.get("data", {}).get(key), cfg["data"].get(key))
    fresh, old = plan.model.get_params(), loaded.get_params()
    for key, value in fresh.items():
        if key in type(plan.model).neutral_params:
            continue
        if key == "random_state":
            differ("[experiment] seed", old.get(key), value)
        elif dataclasses.is_dataclass(value) and dataclasses.is_dataclass(old.get(key)):
            new_d, old_d = dataclasses.asdict(value), dataclasses.asdict(old[key])
            for sub in sorted(set(new_d) | set(old_d)):
                differ(f"[model.params] {sub}", old_d.get(sub), new_d.get(sub))
        else:
            differ(f"[model] {key}", old.get(key), value)
    for key, value in plan.fit_kw.items():
        saved = (saved_cfg or {}).get("model", {}).get(key)
        if key == "epochs" and loaded.n_epochs_ is not None:
            saved = loaded.n_epochs_
        if saved is not None or saved_cfg:
            differ(f"[model] {key}", saved, value)
    return list(diffs.values())


def _resume(cfg, plan: _Plan, ckpt: Path, source: str, log):
    """The checkpoint's model, after checking it was made by this configuration."""
    from .. import io as bio

    backend = plan.model.get_params().get("backend")
    loaded = type(plan.model).load(ckpt, backend=backend)
    with bio.load(ckpt) as f:
        saved_cfg = f.provenance.get("config")
    if not isinstance(saved_cfg, dict) or "model" not in saved_cfg:  # io writes {} by default
        saved_cfg = None
        log(f"resume: {ckpt} records no run configuration (written outside the runner or by an older "
            "bioreps); only the [model] parameters could be compared")
    diffs = _resume_differences(cfg, plan, loaded, saved_cfg)
    if diffs:
        raise ConfigError(f"{source}: cannot resume from {ckpt}: the configuration differs from the "
                          f"checkpoint's in {'; '.join(diffs)}. These change the result; restore them, "
                          "or run without --resume to start afresh (or into another output folder)")
    # constructor arguments that do not change a fit (e.g. power, the exponent of the
    # representation, applied after training) come from the configuration
    fresh = plan.model.get_params()
    loaded.set_params(**{k: fresh[k] for k in type(loaded).neutral_params if k in fresh})
    return loaded


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    missing = []
    p = path.absolute()
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    return missing


def _remove_folders(folders) -> None:
    """Remove the folders a failed run created (deepest first), only those left empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def _make_output(out: Path, what: str = "[experiment] output") -> list[Path]:
    """Create ``out`` and prove it writable (a probe file); return the folders created. An
    :class:`OutputError` of one line names ``what`` (the setting) and the folder, and says why."""
    created = _missing_folders(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _files.check_writable(out)
    except OSError as exc:
        _remove_folders(created)
        reason = str(exc) if isinstance(exc, PermissionError) and not exc.errno else (exc.strerror or str(exc))
        if out.exists() and not out.is_dir():
            reason = "it is a file, not a folder"
        raise OutputError(f"{what} {str(out)!r}: cannot write there ({reason})") from None
    return created


def run(config, *, progress=None, log=print, resume=False, source=None) -> dict:
    """Run an experiment (a path to a TOML file or a config dict) and return its results.

    Writes into the output folder: ``model.h5`` (bioreps HDF5 schema), ``results.json``,
    ``report.md``, ``receptive_fields.png`` (models with image-shaped weights) and, for
    resumable models with ``[train] checkpoint_every``, ``checkpoint.h5``. With ``resume=True``
    training continues from that checkpoint and ends where an uninterrupted run would; the
    configuration must match the checkpoint's (see the module docstring).

    Everything is validated before anything is written (:class:`ConfigError` names the table and
    key); an output folder that cannot be written raises :class:`OutputError`, one locked by
    another run :class:`FolderLockedError`, both before the data are loaded. ``source`` names
    the configuration in messages and in the lock file (default: the path, or ``"<config>"``).
    """
    if isinstance(config, (str, os.PathLike)):
        source = str(config) if source is None else source
        cfg = load_config(config)
    else:
        source = "<config>" if source is None else str(source)
        cfg = validate_config(config, source=source)
    exp = cfg["experiment"]
    out = Path(exp["output"])
    seeds = np.random.SeedSequence(exp["seed"]).spawn(3)
    plan = _plan(cfg, seeds, source, progress=progress)
    ckpt = out / "checkpoint.h5"
    if resume:
        if plan.cls.checkpoint_unit is None:
            raise ConfigError(f"{source}: model kind {cfg['model']['kind']!r} has no checkpoint to resume from")
        if not ckpt.is_file():
            raise FileNotFoundError(f"cannot resume: no checkpoint at {ckpt}")
    created = _make_output(out)
    lock = _files.FolderLock(out, config=os.path.abspath(source) if os.path.exists(source) else source)
    try:
        lock.acquire()
    except BaseException:
        _remove_folders(created)
        raise
    ok = False
    try:
        for stale in _files.remove_stale_temps(out, _OUTPUT_FILES):
            log(f"removed {stale}: a temporary file left by a run that was killed")
        if resume:
            plan.model = _resume(cfg, plan, ckpt, source, log)
        plan.model.run_provenance = {"config": cfg}  # recorded in every checkpoint
        results = _execute(cfg, plan, seeds, progress=progress, log=log, resume=resume)
        ok = True
        return results
    finally:
        lock.release()
        if not ok:
            _remove_folders(created)


def _execute(cfg, plan: _Plan, seeds, *, progress, log, resume) -> dict:
    """The work of :func:`run` once the configuration is checked and the output folder locked."""
    from .. import data as bdata
    from .. import io as bio
    from ..readout import LinearReadout

    exp, dcfg, mcfg, ecfg, rcfg = (cfg[k] for k in ("experiment", "data", "model", "export", "readout"))
    seed = exp["seed"]
    out = Path(exp["output"])
    t0 = time.perf_counter()

    splits = load_splits(dcfg, seeds[0], log)

    model = plan.model
    cls = type(model)
    n_classes = bdata.spec(dcfg["dataset"]).n_classes
    fit_kw = dict(plan.fit_kw)
    ckpt = out / "checkpoint.h5"
    if cls.checkpoint_unit is not None:
        every, every_samples = cfg["train"]["checkpoint_every"], cfg["train"]["checkpoint_every_samples"]
        if cls.checkpoint_unit == "samples":
            # checkpoints by samples (an epoch of 60k presentations takes minutes)
            if every or every_samples:
                fit_kw.update(checkpoint=ckpt,
                              checkpoint_every=every_samples or every * splits["train"][0].shape[0])
        elif every:
            fit_kw.update(checkpoint=ckpt, checkpoint_every=every)
        if resume:
            fit_kw["resume"] = True
            log(f"resume: {ckpt} after {model.checkpoint_progress()}")
    if kinds.accepts(cls.fit, "X_val"):
        # held-out images for the fit's diagnostics (e.g. distinct winners; no learning on them)
        fit_kw["X_val"] = splits["test"][0]
    t_fit = time.perf_counter()
    model.fit(splits["train"][0], **fit_kw)
    fit_s = time.perf_counter() - t_fit
    log(f"model: {model.kind} fitted in {fit_s:.1f} s ({model.n_units_} units)")

    fingerprints = {s: bdata.fingerprint(dcfg["dataset"], s, data_dir=dcfg.get("data_dir"))
                    for s in ecfg["splits"]}
    h5_path = out / "model.h5"

    def fit_readout(feats):
        # the same settings and seed for the layer and for the pixels control
        return LinearReadout(epochs=rcfg["epochs"], lr=rcfg["lr"], batch_size=rcfg["batch_size"],
                             weight_decay=rcfg["weight_decay"], schedule=rcfg["schedule"],
                             random_state=int(seeds[2].generate_state(1)[0]),
                             progress=progress).fit(feats["train"], splits["train"][1], n_classes=n_classes)

    features, readout = {}, None
    with _files.atomic_path(h5_path, ".h5") as tmp:
        model.export(tmp, {s: splits[s] for s in ecfg["splits"]}, dataset=dcfg["dataset"],
                     block_rows=ecfg["block_rows"], progress=progress,
                     provenance={"seed": seed, "config": cfg, "dataset": dcfg["dataset"],
                                 "dataset_checksum": fingerprints})
        if rcfg["enabled"] or cls.has_vote_readout:
            # read back: the readouts see exactly what was stored
            with bio.load(tmp) as f:
                features = {s: f.representations[s].to_numpy() for s in ecfg["splits"]}
        if rcfg["enabled"] and "train" in features:
            # the readout is part of the model: stored in its file (/readout) before it is committed
            readout = fit_readout(features)
            bio.add_readout(tmp, readout.to_arrays(), readout.hyperparameters())
    log(f"export: {h5_path}")

    figures = []
    weights = model.receptive_field_weights()
    if weights is not None and ecfg["receptive_fields"]:
        from ..plots import receptive_fields
        try:
            receptive_fields(weights, out / "receptive_fields.png", n_units=ecfg["receptive_fields"],
                             title=f"{exp['name']}: {model.kind}, first {min(ecfg['receptive_fields'], len(weights))} units")
            figures.append("receptive_fields.png")
        except ValueError as exc:  # weights that are not images
            log(f"receptive fields: skipped ({exc})")

    results = {"name": exp["name"], "model": model.kind, "n_units": model.n_units_,
               "dataset": dcfg["dataset"], "n_train": int(splits["train"][0].shape[0]),
               "n_test": int(splits["test"][0].shape[0]), "fit_seconds": round(fit_s, 3),
               "hdf5": str(h5_path), "figures": figures}
    results.update(model.fit_summary())
    if "train" not in ecfg["splits"]:  # the readouts learn from the training representation
        why = "skipped: no train split exported ([export] splits)"
        for name, wanted in (("readout", rcfg["enabled"]), ("vote", cls.has_vote_readout)):
            if wanted:
                results[name] = why
                log(f"{name}: {why}")
    if readout is not None:
        def score(ro, feats, prefix):
            for split in ("train", "test"):
                if split in feats:
                    results[f"{prefix}_{split}_accuracy"] = ro.score(feats[split], splits[split][1])

        score(readout, features, "readout")
        log("readout: " + ", ".join(f"{s} accuracy {results[f'readout_{s}_accuracy']:.4f}"
                                     for s in ("train", "test") if f"readout_{s}_accuracy" in results))
        if rcfg["pixels_control"] and not model.represents_input:
            # what the layer adds: the same readout on the raw pixels of the same samples
            pixels = {s: splits[s][0] for s in features}
            score(fit_readout(pixels), pixels, "pixels_readout")
            log("pixels control: " + ", ".join(
                f"{s} accuracy {results[f'pixels_readout_{s}_accuracy']:.4f}"
                for s in ("train", "test") if f"pixels_readout_{s}_accuracy" in results))
            log(_versus_pixels(results, model.kind))
    if cls.has_vote_readout and "train" in features:
        # the paper's readout of a spiking WTA layer: neuron labels from the training responses, then a vote
        model.assign_labels(None, splits["train"][1], counts=features["train"])
        for split in ("train", "test"):
            if split in features:
                pred = model.predict(None, counts=features[split])
                results[f"vote_{split}_accuracy"] = float(np.mean(pred == splits[split][1]))
        log("vote: " + ", ".join(f"{s} accuracy {results[f'vote_{s}_accuracy']:.4f}"
                                  for s in ("train", "test") if f"vote_{s}_accuracy" in results))
    results["wall_seconds"] = round(time.perf_counter() - t0, 3)
    _write_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    _write_atomic(out / "report.md", _report(cfg, results))
    return results


def _write_atomic(path: Path, text: str):
    _files.write_text_atomic(path, text)


def _versus_pixels(results, kind) -> str | None:
    """``"readout: hebbian-wta 86.0% vs pixels 84.1% with the same readout (test, +1.9 points)"``,
    or None without a pixels control."""
    for split in ("test", "train"):
        layer, pixels = results.get(f"readout_{split}_accuracy"), results.get(f"pixels_readout_{split}_accuracy")
        if layer is not None and pixels is not None:
            return (f"readout: {kind} {100 * layer:.1f}% vs pixels {100 * pixels:.1f}% with the same readout "
                    f"({split}, {100 * (layer - pixels):+.1f} points)")
    return None


def _report(cfg, results) -> str:
    lines = [f"# {results['name']}", ""]
    if cfg["experiment"].get("description"):
        lines += [cfg["experiment"]["description"], ""]
    versus = _versus_pixels(results, results["model"])
    if versus:
        lines += [f"**{versus[0].upper()}{versus[1:]}**", ""]
    lines += ["| quantity | value |", "|---|---|"]
    for key, value in results.items():
        if key == "figures":
            continue
        if isinstance(value, float):
            value = f"{value:.4f}"
        lines.append(f"| {key} | {value} |")
    lines += [""] + [f"![{f}]({f})" for f in results.get("figures", [])]
    lines += ["", "Configuration:", "", "```json", json.dumps(cfg, indent=2), "```", ""]
    return "\n".join(lines)
