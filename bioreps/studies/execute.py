"""The execution engine of studies: units of work, their on-disk record, and running them in this
process or on Dask workers. It knows nothing of what a unit computes.

Units
-----
A :class:`Unit` has a unique ``key`` (a tuple of strings and integers, e.g. ``("train", "mlp", 0)``,
``("compare",)``), a ``func`` (an importable top-level function, so it pickles to Dask workers),
its ``args``/``kwargs``, the keys of the units it depends on (``deps``), the ``config_hash`` of the
part of the configuration it depends on (:func:`config_hash`: SHA-256 of canonical JSON) and its
own ``folder`` (:func:`unit_folder` gives ``root/train+mlp+0``). It is called as
``func(ctx, *args, **kwargs)`` with a :class:`UnitContext`: ``ctx.folder``, ``ctx.inputs[dep_key]``
(the dependency's outputs, ``{name: Path}``) and atomic writers (``ctx.write_text``,
``ctx.write_json``, ``ctx.atomic(name)`` for any writer that takes a path). Outputs are files in
the unit's folder, written to a temporary name and renamed into place
(:mod:`bioreps._files`); ``func`` registers them through ``ctx`` or returns their paths.

The record: ``unit.json``
-------------------------
After ``func`` returns, the engine writes ``<folder>/unit.json`` last and atomically: the key, the
config hash, every output's size and SHA-256, the fingerprints of the dependencies it consumed,
``status: "done"``, the seconds it took and the host. A unit is *finished* iff its ``unit.json``
exists, names the same key and config hash, its outputs verify (exist, same sizes and SHA-256)
and its dependencies' fingerprints are the ones it consumed. A fingerprint covers a unit's key,
config hash, output checksums and its own inputs' fingerprints, so a change anywhere upstream
reaches every unit downstream (a Merkle chain).

So a rerun skips every finished unit (after verifying it), reruns a unit whose configuration
changed and everything that depends on it, and an interrupted run resumes: units without a
valid ``unit.json`` rerun. Before a unit runs, its stale record goes first (``unit.json``, then
the outputs it listed), then temporaries left in its folder by a killed writer
(:func:`bioreps._files.remove_stale_temps`). A file is never half-written under its final name,
and a finished unit's files are never rewritten.

Checkpoints: a long unit keeps its resumable state under ``ctx.checkpoint_path(name)``, in
``<folder>/.checkpoint/<tag>/`` where ``tag`` hashes the unit's config hash and the
fingerprints of its inputs. An attempt killed mid-unit leaves that state; the next attempt with
the same configuration and inputs finds it there and continues (the unit sets
``ctx.resumed_from``, e.g. ``"epoch 7"``, which its record keeps), while any other tag's
folder is deleted before the unit starts (state of a configuration or of inputs that changed).
The whole ``.checkpoint`` folder is deleted once the unit's record is written. Checkpoints are
not outputs: they are neither checksummed nor part of the fingerprint.

Execution
---------
:func:`execute` runs units in dependency order:

* default: in this process, one after another;
* ``workers=N``: a ``dask.distributed.LocalCluster`` of ``N`` worker processes on this machine
  (loopback ``127.0.0.1``, one thread each, dashboard off);
* ``scheduler="tcp://host:port"``: the workers of an existing Dask scheduler (the unit folders
  must then be on a file system every worker sees). An unreachable address is a
  ``ConnectionError`` after ``connect_timeout`` seconds, before anything is written.

All units go to the scheduler at once, each with its dependencies' results as inputs, so the
scheduler starts a unit as soon as its dependencies finish, with the priority of its place in
the in-process order: a worker that finishes a unit takes the next one it holds, and after that
a ready analysis runs before the training units that come after it in that order (each unit is
a Dask task group of its own, so queuing of "root-ish" tasks does not reorder them). A unit
whose dependency failed is not run.
A worker lost mid-unit (killed, out of
memory) makes the scheduler run the unit again on another worker (Dask's
``distributed.scheduler.allowed-failures``, 3 by default); the killed attempt left at most a
temporary file, removed when the unit starts again. Dask's ``retries`` are not used: they would
also rerun a unit that raised. A unit that raises stops the study with :class:`UnitError`, naming
the unit's key and the original error (chained); units still running elsewhere are cancelled, and
every finished unit keeps its record.

Threads
-------
Each unit runs with ``threads`` compute threads (``threads_per_worker``): ``numba.set_num_threads``,
``torch.set_num_threads`` and the BLAS pools (threadpoolctl) are set in the thread that runs it (both settings are per thread or
per process, so the engine sets them around every unit and restores them afterwards). Defaults:
in this process, all cores; with ``workers=N``, ``max(1, cores // N)``, so ``N`` workers do not
oversubscribe the cores, and each worker process also starts with ``NUMBA_NUM_THREADS``,
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to that number (BLAS
reads them only when it loads; Dask's own default is 1); with ``scheduler=``, ``max(1, cores of
the worker's host // workers on that host)``, the workers counted when the study connects.

Progress
--------
One bar for the study (units done / total; the running units' keys as postfix) via
:func:`bioreps._progress.progress_bar`. With bars off (``progress=False`` or
``BIOREPS_PROGRESS=0``), ``log`` gets one line per unit started and finished, with its time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import _files
from .._progress import progress_bar, progress_enabled

__all__ = ["RECORD_NAME", "Unit", "UnitContext", "UnitError", "config_hash", "execute", "threads", "unit_folder"]

RECORD_NAME = "unit.json"
#: the folder inside a unit's folder that holds its checkpoints (module docstring)
CHECKPOINT_DIR = ".checkpoint"
RECORD_TYPE = "bioreps-unit"
RECORD_VERSION = 1
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class UnitError(RuntimeError):
    """A unit failed; ``key`` names it, the original error is the ``__cause__``."""

    def __init__(self, key, message):
        super().__init__(message)
        self.key = key


# ---------------------------------------------------------------------------------------------
# units, keys, hashes

def _json_default(obj):
    if isinstance(obj, Path):
        return obj.as_posix()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None and isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"config_hash: a {type(obj).__name__} ({obj!r}) has no canonical JSON form; "
                    f"use str, int, float, bool, None, lists and dicts with string keys")


def config_hash(config) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config``: sorted keys, no spaces, UTF-8, no NaN.

    Tuples hash as lists, numpy scalars and arrays as their values, paths as POSIX strings; any
    other non-JSON type is a ``TypeError`` naming it, a NaN or infinity a ``ValueError``.
    """
    try:
        text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)
    except ValueError as exc:
        raise ValueError(f"config_hash: the configuration holds a NaN or infinite number ({exc})") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_key(key) -> tuple:
    if not isinstance(key, tuple) or not key:
        raise TypeError(f"a unit key must be a non-empty tuple of strings and integers, got {key!r}")
    for part in key:
        if isinstance(part, bool) or not isinstance(part, (str, int)):
            raise TypeError(f"unit key {key!r}: part {part!r} is a {type(part).__name__}, "
                            f"not a string or an integer")
        if isinstance(part, str) and not part:
            raise ValueError(f"unit key {key!r} has an empty part")
    return key


def unit_folder(root, key) -> Path:
    """``root / "<part>+<part>+..."``: each part of ``key`` percent-encoded (``+``, ``/``, ``%``
    and other unsafe characters), so distinct string keys get distinct folder names."""
    key = _check_key(key)
    return Path(root) / "+".join(urllib.parse.quote(str(part), safe="") for part in key)


def _key_text(key) -> str:
    return json.dumps(list(key))


@dataclass(frozen=True)
class Unit:
    """One unit of work; see the module's documentation. ``func(ctx, *args, **kwargs)``."""

    key: tuple
    func: Callable
    folder: Path
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    deps: tuple = ()
    config_hash: str = ""

    def __post_init__(self):
        _check_key(self.key)
        object.__setattr__(self, "folder", Path(self.folder))
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        object.__setattr__(self, "deps", tuple(_check_key(tuple(d)) for d in self.deps))
        if not isinstance(self.config_hash, str):
            raise TypeError(f"unit {self.key!r}: config_hash must be a string (see config_hash()), "
                            f"got {self.config_hash!r}")


def _check_importable(unit: Unit) -> None:
    func = unit.func
    name = getattr(func, "__qualname__", None)
    module = getattr(func, "__module__", None)
    if not callable(func) or not name or not module or "<" in name:
        raise TypeError(f"unit {unit.key!r}: func must be an importable top-level function (so it "
                        f"pickles to Dask workers), got {func!r}")
    try:
        found = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        found = None
    if found is not func:
        raise TypeError(f"unit {unit.key!r}: func {module}.{name} cannot be imported by that name; "
                        f"define it at the top level of an importable module")


def _order(units) -> list[Unit]:
    """Check the units (unique keys and folders, known dependencies, no cycle, importable
    functions) and return them in a dependency order (stable: the given order where free)."""
    units = list(units)
    by_key = {}
    folders = {}
    for unit in units:
        if not isinstance(unit, Unit):
            raise TypeError(f"execute() takes Unit objects, got {unit!r}")
        if unit.key in by_key:
            raise ValueError(f"two units have the key {unit.key!r}")
        by_key[unit.key] = unit
        folder = os.path.normcase(os.path.abspath(unit.folder))
        if folder in folders:
            raise ValueError(f"units {folders[folder]!r} and {unit.key!r} share the folder {unit.folder}")
        folders[folder] = unit.key
        _check_importable(unit)
    for unit in units:
        for dep in unit.deps:
            if dep not in by_key:
                raise ValueError(f"unit {unit.key!r} depends on {dep!r}, which is not a unit of the study")
    order, state = [], {}

    def visit(unit, path):
        if state.get(unit.key) == "done":
            return
        if state.get(unit.key) == "visiting":
            cycle = " -> ".join(repr(k) for k in (*path, unit.key))
            raise ValueError(f"the units' dependencies form a cycle: {cycle}")
        state[unit.key] = "visiting"
        for dep in unit.deps:
            visit(by_key[dep], (*path, unit.key))
        state[unit.key] = "done"
        order.append(unit)

    for unit in units:
        visit(unit, ())
    return order


# ---------------------------------------------------------------------------------------------
# the context a unit function gets

class UnitContext:
    """What a unit function gets as its first argument.

    ``key``, ``folder`` (created), ``inputs`` (``{dep_key: {output name: Path}}``), ``threads``.
    Output names are paths relative to ``folder`` (subfolders allowed). ``checkpoint_path`` and
    ``resumed_from``: a unit's resumable state (module docstring, "Checkpoints").
    """

    def __init__(self, key, folder, inputs, threads, tag):
        self.key = key
        self.folder = Path(folder)
        self.inputs = inputs
        self.threads = threads
        self.tag = tag
        #: where the unit continued from, when it resumed a killed attempt's checkpoint (kept in
        #: its record as ``resumed_from``); None for a unit that started afresh
        self.resumed_from: str | None = None
        self._outputs: list[Path] = []

    def _relative(self, name, what) -> Path:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"unit {self.key!r}: {what} name {name!r} must be a relative path inside "
                             f"the unit's folder")
        return rel

    def checkpoint_path(self, name) -> Path:
        """Where to keep resumable state ``name`` (a file or a folder, not an output): it
        survives an attempt that is killed and is found again by the next attempt with the same
        configuration and inputs; it is deleted once the unit finishes. Its parent exists."""
        path = self.folder / CHECKPOINT_DIR / self.tag / self._relative(name, "checkpoint")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, name) -> Path:
        """The final path of output ``name`` inside the folder (its parent folders created)."""
        rel = self._relative(name, "output")
        if rel.as_posix() == RECORD_NAME:
            raise ValueError(f"unit {self.key!r}: {RECORD_NAME} is the engine's record, not an output name")
        path = self.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add_output(self, name) -> Path:
        """Register a file already written (atomically) in the folder as an output."""
        path = Path(name) if Path(name).is_absolute() else self.folder / name
        self._outputs.append(path)
        return path

    @contextlib.contextmanager
    def atomic(self, name, suffix: str = ""):
        """Yield a temporary path beside output ``name`` to write to; on success it is renamed
        into place and registered, on an error removed (:func:`bioreps._files.atomic_path`).
        ``suffix`` ends the temporary name, for writers that choose the format by extension."""
        with _files.atomic_path(self.path(name), suffix) as tmp:
            yield tmp
        self._outputs.append(self.folder / name)

    def write_text(self, name, text: str) -> Path:
        """Write ``text`` to output ``name`` atomically and register it."""
        path = _files.write_text_atomic(self.path(name), text)
        self._outputs.append(path)
        return path

    def write_json(self, name, obj) -> Path:
        """Write ``obj`` as indented JSON (sorted keys) to output ``name`` atomically."""
        return self.write_text(name, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------
# records

def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(record) -> str:
    return config_hash({"key": record["key"], "config_hash": record["config_hash"],
                        "outputs": {name: o["sha256"] for name, o in record["outputs"].items()},
                        "inputs": record["inputs"]})


def _read_record(folder):
    try:
        record = json.loads((Path(folder) / RECORD_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _verify(folder, record, key, config, inputs) -> str | None:
    """Why the unit in ``folder`` is not finished (a short reason), or None when it is."""
    if record is None:
        return "not run yet"
    if (record.get("type") != RECORD_TYPE or record.get("status") != "done"
            or not isinstance(record.get("outputs"), dict)):
        return f"{RECORD_NAME} is unreadable or incomplete"
    if record.get("key") != list(key):
        return f"{RECORD_NAME} belongs to the unit {record.get('key')!r}"
    if record.get("config_hash") != config:
        return "its configuration changed"
    if record.get("inputs") != inputs:
        return "a unit it depends on changed"
    for name, meta in record["outputs"].items():
        if not isinstance(meta, dict):
            return f"{RECORD_NAME} is unreadable or incomplete"
        path = Path(folder) / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"output {name} is missing"
        if size != meta.get("size"):
            return f"output {name} changed size"
        if _sha256(path) != meta.get("sha256"):
            return f"output {name} changed (SHA-256)"
    return None


def _checkpoint_tag(config_hash_, inputs) -> str:
    """What a unit's checkpoints belong to: its configuration and the inputs it consumes."""
    text = json.dumps({"config_hash": config_hash_, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _drop_checkpoints(folder, keep=None) -> None:
    """Delete the unit's checkpoint folders, all of them or all but tag ``keep``."""
    import shutil

    base = Path(folder) / CHECKPOINT_DIR
    if keep is None:
        shutil.rmtree(base, ignore_errors=True)
        return
    for entry in base.iterdir() if base.is_dir() else ():
        if entry.name == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _clean(folder, record) -> None:
    """Remove a stale record (unit.json first), the outputs it listed and the stale temporaries
    of every file in the folder (walking subfolders)."""
    folder = Path(folder)
    if record is not None:
        (folder / RECORD_NAME).unlink(missing_ok=True)
        for name in (record.get("outputs") or {}) if isinstance(record, dict) else ():
            path = folder / name
            if folder in path.parents:
                path.unlink(missing_ok=True)
    for sub, _dirs, files in os.walk(folder):
        names = {t for f in files if (t := _files.temp_target(f)) is not None}
        if names:
            _files.remove_stale_temps(sub, names)


# ---------------------------------------------------------------------------------------------
# threads

def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def threads(n=None):
    """Numba's, torch's and the BLAS libraries' thread counts at ``n`` while the block runs
    (BLAS through threadpoolctl, which also reaches a BLAS already loaded); ``None``: all cores.
    Numba's count is capped at ``NUMBA_NUM_THREADS``. The previous counts are restored after."""
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    n = max(1, int(_cores() if n is None else n))
    old_numba, old_torch = numba.get_num_threads(), torch.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(old_numba)
        torch.set_num_threads(old_torch)


_threads = threads  # for _run_unit, whose argument ``threads`` shadows the function


# ---------------------------------------------------------------------------------------------
# running one unit (in this process or on a worker)

def _run_unit(spec: dict, dep_records: dict, threads):
    """Verify the unit; if not finished, clean its folder, call it and write its record.
    Returns the record with ``ran`` (bool), ``reason`` and ``folder`` added (not stored)."""
    key, folder = spec["key"], Path(spec["folder"])
    inputs = {_key_text(d): _fingerprint(dep_records[d]) for d in spec["deps"]}
    record = _read_record(folder)
    reason = _verify(folder, record, key, spec["config_hash"], inputs)
    if reason is None:
        _drop_checkpoints(folder)  # left when killed between the record and their removal
        return {**record, "ran": False, "reason": "finished before", "folder": str(folder)}
    folder.mkdir(parents=True, exist_ok=True)
    _clean(folder, record)
    tag = _checkpoint_tag(spec["config_hash"], inputs)
    _drop_checkpoints(folder, keep=tag)
    if isinstance(threads, dict):
        threads = _worker_threads(threads)
    ctx_inputs = {d: {name: Path(dep_records[d]["folder"]) / name for name in dep_records[d]["outputs"]}
                  for d in spec["deps"]}
    ctx = UnitContext(key, folder, ctx_inputs, threads, tag=tag)
    start = time.perf_counter()
    with _threads(threads):
        returned = spec["func"](ctx, *spec["args"], **spec["kwargs"])
    seconds = time.perf_counter() - start
    paths = list(ctx._outputs)
    if returned is not None:
        if isinstance(returned, (str, os.PathLike)):
            returned = [returned]
        elif isinstance(returned, dict):
            returned = list(returned.values())
        paths += [Path(p) if Path(p).is_absolute() else folder / p for p in returned]
    outputs = {}
    root = folder.resolve()
    for path in paths:
        resolved = Path(path).resolve()
        if root not in resolved.parents:
            raise ValueError(f"unit {key!r}: output {path} is not inside the unit's folder {folder}")
        name = resolved.relative_to(root).as_posix()
        if name == RECORD_NAME:
            raise ValueError(f"unit {key!r}: {RECORD_NAME} is the engine's record, not an output")
        if not resolved.is_file():
            raise FileNotFoundError(f"unit {key!r}: output {name} does not exist in {folder}")
        outputs[name] = {"size": resolved.stat().st_size, "sha256": _sha256(resolved)}
    record = {"type": RECORD_TYPE, "version": RECORD_VERSION, "key": list(key),
              "config_hash": spec["config_hash"], "status": "done", "outputs": dict(sorted(outputs.items())),
              "inputs": inputs, "seconds": round(seconds, 3), "threads": threads,
              "host": socket.gethostname(), "pid": os.getpid(),
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if ctx.resumed_from is not None:
        record["resumed_from"] = str(ctx.resumed_from)
    _files.write_text_atomic(folder / RECORD_NAME, json.dumps(record, indent=2) + "\n")
    _drop_checkpoints(folder)
    return {**record, "ran": True, "reason": reason, "folder": str(folder)}


def _spec(unit: Unit) -> dict:
    return {"key": unit.key, "folder": str(unit.folder), "func": unit.func, "args": unit.args,
            "kwargs": unit.kwargs, "deps": unit.deps, "config_hash": unit.config_hash}


def _result(unit: Unit, record: dict) -> dict:
    """The record as :func:`execute` returns it: outputs as absolute paths."""
    out = dict(record)
    out["folder"] = unit.folder
    out["files"] = {name: unit.folder / name for name in record["outputs"]}
    return out


def _fail(key, exc) -> UnitError:
    return UnitError(key, f"unit {key!r} failed: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------
# the study

class _Progress:
    def __init__(self, total, progress, log):
        self.bar = progress_bar(total=total, progress=progress, desc="study", unit="unit", leave=True)
        self.lines = not progress_enabled(progress)
        self.log = log or (lambda *a: None)
        self.running: dict[tuple, float] = {}
        self.done, self.total = 0, total

    def start(self, key, verb="started"):
        self.running[key] = time.perf_counter()
        self._postfix()
        if self.lines:
            self.log(f"[{self.done}/{self.total}] unit {key!r} {verb}")

    def finish(self, key, record):
        t0 = self.running.pop(key, time.perf_counter())
        self.done += 1
        self.bar.update(1)
        self._postfix()
        if self.lines:
            if record["ran"]:
                self.log(f"[{self.done}/{self.total}] unit {key!r} done in {record['seconds']:.1f} s "
                         f"({time.perf_counter() - t0:.1f} s elapsed; ran because {record['reason']})")
            else:
                self.log(f"[{self.done}/{self.total}] unit {key!r} skipped: finished before, outputs verified")

    def failed(self, key, exc):
        t0 = self.running.pop(key, time.perf_counter())
        if self.lines:
            self.log(f"[{self.done}/{self.total}] unit {key!r} failed after "
                     f"{time.perf_counter() - t0:.1f} s: {type(exc).__name__}: {exc}")

    def _postfix(self):
        self.bar.set_postfix_str(", ".join("/".join(map(str, k)) for k in self.running), refresh=False)

    def close(self):
        self.bar.close()


def execute(units, *, workers: int | None = None, scheduler: str | None = None,
            threads_per_worker: int | None = None, progress: bool | None = None, log=print,
            connect_timeout: float = 5.0) -> dict:
    """Run ``units`` (an iterable of :class:`Unit`) in dependency order; see the module's
    documentation for finished units, workers, threads and progress.

    Returns ``{key: record}``: the unit's ``unit.json`` content plus ``ran`` (False when it was
    skipped as finished), ``reason`` (why it ran), ``folder`` and ``files`` (``{name: Path}``).

    Raises
    ------
    UnitError
        a unit raised (or its worker died too often); names the unit, the original error chained.
    ConnectionError
        ``scheduler`` cannot be reached within ``connect_timeout`` seconds (nothing written).
    ValueError, TypeError
        invalid units (duplicate keys or folders, unknown dependencies, a cycle, a function that
        cannot be imported by name), or both ``workers`` and ``scheduler``.
    """
    order = _order(units)
    if workers is not None and scheduler is not None:
        raise ValueError("give either workers= (a local cluster) or scheduler= (an existing one), not both")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if threads_per_worker is not None and (isinstance(threads_per_worker, bool)
                                           or not isinstance(threads_per_worker, int) or threads_per_worker < 1):
        raise ValueError(f"threads_per_worker must be a positive integer, got {threads_per_worker!r}")
    if workers is None and scheduler is None:
        return _execute_here(order, threads_per_worker or _cores(), progress, log)
    return _execute_dask(order, workers, scheduler, threads_per_worker, progress, log, connect_timeout)


def _execute_here(order, threads, progress, log):
    results, records = {}, {}
    bar = _Progress(len(order), progress, log)
    try:
        for unit in order:
            bar.start(unit.key)
            try:
                record = _run_unit(_spec(unit), {d: records[d] for d in unit.deps}, threads)
            except Exception as exc:
                bar.failed(unit.key, exc)
                raise _fail(unit.key, exc) from exc
            records[unit.key] = record
            results[unit.key] = _result(unit, record)
            bar.finish(unit.key, record)
    finally:
        bar.close()
    return results


def _worker_threads(per_host) -> int:
    """On a Dask worker of an existing cluster: this host's cores // the workers on this host (as
    the scheduler listed them when the study connected). Also sets the thread variables for
    libraries the worker has not loaded yet."""
    import distributed

    host = urllib.parse.urlparse(distributed.get_worker().address).hostname
    n = max(1, _cores() // max(1, per_host.get(host, 1)))
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(n))
    return n


@contextlib.contextmanager
def _environ(values):
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _execute_dask(order, workers, scheduler, threads, progress, log, connect_timeout):
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - exercised only without dask
        raise ImportError("workers= and scheduler= need Dask: pip install 'dask[distributed]' "
                          "(or bioreps[dist])") from exc
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = distributed.Client(scheduler, timeout=connect_timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler} within "
                                      f"{connect_timeout:g} s: {exc}") from None
            stack.callback(client.close)
            if threads is None:  # per host, decided on each worker (see _worker_threads)
                threads = {}
                for info in client.scheduler_info()["workers"].values():
                    threads[info["host"]] = threads.get(info["host"], 0) + 1
        else:
            threads = threads or max(1, _cores() // workers)
            env = {name: str(threads) for name in THREAD_VARIABLES}
            # Dask's nannies copy these from os.environ into every worker before it starts
            # (distributed.nanny.pre-spawn-environ), also when a lost worker is restarted
            stack.enter_context(_environ(env))
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=workers, processes=True, threads_per_worker=1, host="127.0.0.1",
                dashboard_address=None, env=env))
            client = stack.enter_context(distributed.Client(cluster, set_as_default=False))
        return _run_dask(client, order, threads, progress, log)


def _group_word(i: int) -> str:
    """``u`` and ``i`` in base 26 (``ua``, ``ub``, ...): a word of letters that makes each unit's
    key a Dask task group of its own. Dask groups keys by their leading words of letters; a group
    larger than twice the cluster's threads counts as "root-ish" and is queued on the scheduler,
    which, decided anew at every submission, let some units skip the queue and so their priority."""
    word = ""
    while True:
        i, r = divmod(i, 26)
        word = chr(ord("a") + r) + word
        if i == 0:
            return "u" + word


def _run_dask(client, order, threads, progress, log):
    import distributed

    results, records = {}, {}
    token = os.urandom(4).hex()
    bar = _Progress(len(order), progress, log)

    # The whole graph goes to the scheduler at once, each unit with its dependencies' futures, so
    # the scheduler itself releases a unit when its inputs finish (no round trip through this
    # process). Dask runs the ready unit of highest priority first: the in-process order, so a
    # unit whose inputs are ready (an analysis) goes before units later in that order (the next
    # seeds' training) and finished results come model by model, as in this process.
    futures, by_key = {}, {}
    for i, unit in enumerate(order):
        name = f"bioreps-unit-{_group_word(i)}-{unit.folder.name}-{token}"
        fut = client.submit(_run_unit, _spec(unit), {d: by_key[d] for d in unit.deps}, threads,
                            key=name, pure=False, priority=len(order) - i)
        futures[fut] = unit
        by_key[unit.key] = fut
    waiting = list(order)

    def mark_ready():  # for the progress lines: units whose inputs have all finished
        for unit in list(waiting):
            if all(d in records for d in unit.deps):
                waiting.remove(unit)
                bar.start(unit.key, verb="ready")

    def first_failed(unit):
        """The unit whose own function failed: a unit whose input failed errs with its error."""
        for d in unit.deps:
            if by_key[d].status == "error":
                return first_failed(next(u for u in order if u.key == d))
        return unit

    try:
        mark_ready()
        for fut in distributed.as_completed(list(futures), loop=client.loop):
            unit = futures.pop(fut)
            try:
                record = fut.result()
            except Exception as exc:
                unit = first_failed(unit)
                exc = by_key[unit.key].exception() or exc
                bar.failed(unit.key, exc)
                client.cancel(list(futures))
                if isinstance(exc, distributed.KilledWorker):
                    error = UnitError(unit.key, f"unit {unit.key!r} failed: the workers running it died "
                                                f"too often (KilledWorker: {exc})")
                else:
                    error = _fail(unit.key, exc)
                raise error from exc
            records[unit.key] = record
            results[unit.key] = _result(unit, record)
            bar.finish(unit.key, record)
            mark_ready()
    finally:
        bar.close()
    return {unit.key: results[unit.key] for unit in order}
