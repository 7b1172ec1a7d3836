"""Experiments described by TOML files: one command loads data, fits a model, exports its
representations to HDF5, trains a readout and writes a report.

A configuration has these tables (every key is checked: an unknown one is an error that names it)::

    [experiment]            name, seed, output (folder; default "runs/<name>")
    [data]                  dataset, data_dir, n_train, n_test
    [model]                 kind (see MODELS) and that model's parameters
    [readout]               enabled, epochs, lr, batch_size, weight_decay, schedule
    [export]                splits (e.g. ["train", "test"]), block_rows, receptive_fields
    [train]                 checkpoint_every (epochs; 0 = none), checkpoint_every_samples (spiking-wta)

Run one with ``bioreps run CONFIG.toml`` or :func:`run`. Relative ``output`` and ``data_dir``
paths are taken relative to the current directory.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "MODELS", "load_config", "validate_config", "run"]


class ConfigError(ValueError):
    """An experiment configuration is malformed: unknown table or key, wrong type, bad value."""


def _pixels(params, seed):
    from .layers import Pixels
    return Pixels()


def _random_relu(params, seed):
    from .layers import RandomReLU
    return RandomReLU(random_state=seed, **params)


def _hebbian(params, seed):
    from .layers import HebbianWTA
    return HebbianWTA(random_state=seed, **params)


def _soft(params, seed):
    from .layers import SoftWTA
    return SoftWTA(random_state=seed, **params)


def _spiking(params, seed):
    from .layers import DiehlCookParams, SpikingWTA
    params = dict(params)
    overrides = params.pop("params", {})
    neuron = DiehlCookParams.from_dict({**DiehlCookParams().to_dict(), **overrides})
    return SpikingWTA(params=neuron, random_state=seed, **params)


@dataclass(frozen=True)
class ModelEntry:
    """How to build one kind of model from its ``[model]`` table.

    ``params`` are constructor arguments (name -> expected type); ``fit_params`` go to ``fit``
    and ``transform_params`` to ``transform``. ``resumable`` models support ``fit(...,
    checkpoint=, checkpoint_every=, resume=)`` and ``Model.load``. ``indexed_transform``
    models take ``transform(X, first_index=)`` (their randomness is keyed by the sample's row,
    so exporting in blocks gives the same result as one call).
    """
    build: object
    params: dict
    fit_params: dict = field(default_factory=dict)
    transform_params: dict = field(default_factory=dict)
    resumable: bool = False
    indexed_transform: bool = False


_NUM = (int, float)
MODELS = {
    "pixels": ModelEntry(_pixels, {}),
    "random-relu": ModelEntry(_random_relu, {"n_units": int, "power": _NUM}),
    "hebbian-wta": ModelEntry(
        _hebbian,
        {"n_units": int, "p": _NUM, "k": int, "delta": _NUM, "lr": _NUM, "batch_size": int, "shuffle": bool,
         "center": bool, "input_norm": _NUM, "schedule": str, "backend": str, "collapse_fraction": _NUM},
        fit_params={"epochs": int},
        transform_params={"power": _NUM},
        resumable=True,
    ),
    "soft-wta": ModelEntry(
        _soft,
        {"n_units": int, "p": _NUM, "temperature": _NUM, "lr": _NUM, "power_lr": _NUM, "adaptive": bool,
         "batch_size": int, "shuffle": bool, "center": bool, "input_norm": _NUM, "schedule": str, "backend": str,
         "collapse_fraction": _NUM},
        fit_params={"epochs": int},
        transform_params={"power": _NUM},
        resumable=True,
    ),
    "spiking-wta": ModelEntry(
        _spiking,
        {"n_neurons": int, "dt_ms": _NUM, "t_present_ms": _NUM, "t_rest_ms": _NUM, "min_spikes": int,
         "encoding": str, "backend": str, "params": dict},
        fit_params={"epochs": int},
        resumable=True,
        indexed_transform=True,
    ),
}

_SCHEMA = {
    "experiment": {"name": str, "seed": int, "output": str, "description": str},
    "data": {"dataset": str, "data_dir": str, "n_train": int, "n_test": int},
    "model": {"kind": str},  # plus the kind's own parameters
    "readout": {"enabled": bool, "epochs": int, "lr": _NUM, "batch_size": int, "weight_decay": _NUM,
                "schedule": str},
    "export": {"splits": list, "block_rows": int, "receptive_fields": int},
    "train": {"checkpoint_every": int, "checkpoint_every_samples": int},
}
_DEFAULTS = {
    "experiment": {"seed": 0, "description": ""},
    "data": {"dataset": "fashion-mnist"},
    "model": {"kind": "pixels"},
    "readout": {"enabled": True, "epochs": 5, "lr": 1e-3, "batch_size": 256, "weight_decay": 0.0,
                "schedule": "constant"},
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
        if table == "model":
            kind = section.get("kind", cfg["model"]["kind"])
            if kind not in MODELS:
                raise ConfigError(f"{source}: [model] kind = {kind!r} is unknown; choose one of {sorted(MODELS)}")
            entry = MODELS[kind]
            allowed.update(entry.params)
            allowed.update(entry.fit_params)
            allowed.update(entry.transform_params)
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
    return cfg


def load_config(path) -> dict:
    """Read and validate a TOML experiment file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"experiment file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return validate_config(raw, source=str(path))


def _subset(X, y, n, rng):
    if n is None or n >= len(X):
        return X, y, np.arange(len(X), dtype=np.int64)
    idx = np.sort(rng.choice(len(X), size=n, replace=False)).astype(np.int64)
    return X[idx], y[idx], idx


def run(config, *, progress=None, log=print, resume=False) -> dict:
    """Run an experiment (a path to a TOML file or a config dict) and return its results.

    Writes into the output folder: ``model.h5`` (bioreps HDF5 schema), ``results.json``,
    ``report.md``, ``receptive_fields.png`` (models with image-shaped weights) and, for
    resumable models with ``[train] checkpoint_every``, ``checkpoint.h5``. With ``resume=True``
    training continues from that checkpoint and ends where an uninterrupted run would.
    """
    from . import data as bdata
    from . import io as bio
    from ._progress import progress_bar
    from .readout import LinearReadout

    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else validate_config(config)
    exp, dcfg, mcfg, ecfg, rcfg = (cfg[k] for k in ("experiment", "data", "model", "export", "readout"))
    seed = exp["seed"]
    out = Path(exp["output"])
    out.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).spawn(3)
    t0 = time.perf_counter()

    splits = {}
    subset_seeds = dict(zip(("train", "test"), seeds[0].spawn(2)))
    for split, n_key in (("train", "n_train"), ("test", "n_test")):
        X, y = bdata.load(dcfg["dataset"], split, data_dir=dcfg.get("data_dir"))
        X, y, idx = _subset(X, y, dcfg.get(n_key), np.random.default_rng(subset_seeds[split]))
        splits[split] = (X, y, idx)
        log(f"data: {dcfg['dataset']} {split}: {X.shape[0]} x {X.shape[1]}")

    entry = MODELS[mcfg["kind"]]
    params = {k: v for k, v in mcfg.items() if k in entry.params}
    fit_kw = {k: v for k, v in mcfg.items() if k in entry.fit_params}
    transform_kw = {k: v for k, v in mcfg.items() if k in entry.transform_params}
    ckpt = out / "checkpoint.h5"
    model = entry.build(params, int(seeds[1].generate_state(1)[0]))
    if entry.resumable:
        model.progress = progress
        every, every_samples = cfg["train"]["checkpoint_every"], cfg["train"]["checkpoint_every_samples"]
        if mcfg["kind"] == "spiking-wta":
            # checkpoints by samples (an epoch of 60k presentations takes minutes)
            if every or every_samples:
                fit_kw.update(checkpoint=ckpt,
                              checkpoint_every=every_samples or every * splits["train"][0].shape[0])
        else:
            # the "distinct winners" diagnostic runs on held-out images (the test split; no learning)
            fit_kw["X_val"] = splits["test"][0]
            if every_samples:
                raise ConfigError(f"[train] checkpoint_every_samples is for spiking-wta models; "
                                  f"{mcfg['kind']} checkpoints every checkpoint_every epochs")
            if every:
                fit_kw.update(checkpoint=ckpt, checkpoint_every=every)
        if resume:
            if not ckpt.exists():
                raise FileNotFoundError(f"cannot resume: no checkpoint at {ckpt}")
            model = type(model).load(ckpt)
            model.progress = progress
            fit_kw["resume"] = True
            done = (f"epoch {model.epochs_done_}" if hasattr(model, "epochs_done_")
                    else f"{model.n_samples_seen_} samples")
            log(f"resume: {ckpt} after {done}")
    elif resume:
        raise ConfigError(f"model kind {mcfg['kind']!r} has no checkpoint to resume from")
    if hasattr(model, "progress"):
        model.progress = progress
    t_fit = time.perf_counter()
    model.fit(splits["train"][0], **fit_kw)
    fit_s = time.perf_counter() - t_fit
    log(f"model: {model.kind} fitted in {fit_s:.1f} s ({model.n_units_} units)")

    fingerprints = {s: bdata.fingerprint(dcfg["dataset"], s, data_dir=dcfg.get("data_dir"))
                    for s in ecfg["splits"]}
    h5_path = out / "model.h5"
    block = ecfg["block_rows"]
    features = {}
    with bio.Writer(h5_path, overwrite=True) as w:
        w.write_model(model.kind, model.model_arrays(), model.hyperparameters())
        for split in ecfg["splits"]:
            X, y, idx = splits[split]
            rep = w.create_representation(split, X.shape[0], model.n_units_, labels=y, inputs_index=idx,
                                          dataset=dcfg["dataset"], dataset_split=split,
                                          description=f"{model.kind} representation")
            keep = rcfg["enabled"] or hasattr(model, "assign_labels")
            parts = []
            for start in progress_bar(range(0, X.shape[0], block), progress=progress,
                                      desc=f"export {split}", unit="block"):
                extra = {"first_index": start} if entry.indexed_transform else {}
                H = model.transform(X[start:start + block], **transform_kw, **extra)
                rep.write_rows(start, H)
                if keep:
                    parts.append(H)
            if keep:
                features[split] = np.concatenate(parts) if parts else np.zeros((0, model.n_units_), np.float32)
        w.write_provenance({"backend": getattr(model, "backend_", "cpu"), "seed": seed, "config": cfg,
                            "dataset": dcfg["dataset"], "dataset_checksum": fingerprints})
    log(f"export: {h5_path}")

    figures = []
    weights = model.receptive_field_weights()
    if weights is not None and ecfg["receptive_fields"]:
        from .plots import receptive_fields
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
    history = getattr(model, "history_", None)
    if history:
        last = history[-1]
        results.update(epochs=last["epoch"], converged_fraction=last["converged"], distinct_winners=last["winners"])
    if rcfg["enabled"] and "train" in features:
        readout = LinearReadout(epochs=rcfg["epochs"], lr=rcfg["lr"], batch_size=rcfg["batch_size"],
                                weight_decay=rcfg["weight_decay"], schedule=rcfg["schedule"], random_state=int(seeds[2].generate_state(1)[0]),
                                progress=progress)
        readout.fit(features["train"], splits["train"][1], n_classes=10)
        results["readout_train_accuracy"] = readout.score(features["train"], splits["train"][1])
        if "test" in features:
            results["readout_test_accuracy"] = readout.score(features["test"], splits["test"][1])
        log("readout: " + ", ".join(f"{k.split('_')[1]} accuracy {results[k]:.4f}"
                                     for k in ("readout_train_accuracy", "readout_test_accuracy") if k in results))
    if hasattr(model, "assign_labels") and "train" in features:
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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _report(cfg, results) -> str:
    lines = [f"# {results['name']}", ""]
    if cfg["experiment"].get("description"):
        lines += [cfg["experiment"]["description"], ""]
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
