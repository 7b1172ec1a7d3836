"""One HDF5 file per trained model: learned arrays, representations and provenance.

The layout (schema ``1.4.0``) is documented in ``docs/hdf5-schema.md`` and readable with plain
``h5py``. Following anndata, every group and dataset carries ``encoding-type`` and
``encoding-version`` attributes; the reader dispatches on them and refuses what it does not
know. Writing goes to a temporary file in the destination folder that is renamed into place only
when everything was written, so a crash never leaves a half-written file under the final name::

    import bioreps

    with bioreps.io.Writer("model.h5") as w:
        w.write_model("hebbian-wta", {"weights": W}, {"n_hidden": 2000, "power": 4.5})
        w.write_provenance({"seed": 0, "dataset": "fashion-mnist"})
        rep = w.create_representation("test", n_samples=10000, n_units=2000, labels=y,
                                      dataset="fashion-mnist", dataset_split="test")
        for start in range(0, 10000, 1000):
            rep.write_rows(start, activations_of(X[start:start + 1000]))

    with bioreps.io.load("model.h5") as f:
        print(f.summary())
        for start, block in f.representations["test"].iter_blocks():
            ...

This module knows no models: it stores named arrays, JSON hyperparameters and activation
matrices, nothing more.
"""

from __future__ import annotations

import json
import operator
import os
import platform
import re
import subprocess
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from types import MappingProxyType

import h5py
import numpy as np

from . import _files
from ._validation import check_int
from ._version import __version__

__all__ = [
    "SCHEMA_VERSION",
    "BiorepsFile",
    "ModelRecord",
    "NonFiniteError",
    "ReadoutRecord",
    "Representation",
    "RepresentationWriter",
    "SchemaError",
    "Writer",
    "add_readout",
    "collect_provenance",
    "load",
    "save",
]

#: Version of the file layout; stored as the root ``encoding-version``. 1.1.0 added HDF5
#: dimension scales (``sample``, ``unit``, ...), so netCDF readers (xarray) see named dimensions;
#: files of schema 1.0.0 are read as before. 1.2.0 added the optional ``/readout`` group (the
#: linear classifier trained on the file's representations); older files have none. 1.3.0 added
#: the optional ``layer`` attribute of a representation (which layer of a multi-layer model it
#: is, 0 = the first; a stack of layers writes each one's representation). 1.4.0 added dimension
#: scales to ``/readout`` (``class`` and ``unit``, the columns of the representation it reads).
SCHEMA_VERSION = "1.4.0"

#: The newest version of each encoding this module reads and writes.
ENCODING_VERSIONS = MappingProxyType({
    "bioreps-file": SCHEMA_VERSION,
    "model": "1.1.0",             # 1.1.0: may hold "dimension" members
    "array": "1.0.0",
    "dict": "1.0.0",
    "representations": "1.0.0",
    "representation": "1.2.0",    # 1.1.0: holds the "sample" and "unit" dimensions; 1.2.0: may say its "layer"
    "activations": "1.0.0",
    "labels": "1.0.0",
    "index": "1.0.0",
    "provenance": "1.0.0",
    "dimension": "1.0.0",         # new in schema 1.1.0: an HDF5 dimension scale (0..n-1)
    "readout": "1.1.0",           # new in schema 1.2.0: the linear readout of the model;
                                  # 1.1.0 (schema 1.4.0): holds the "class" and "unit" dimensions
})

#: The arrays of a ``/readout`` group, in order.
READOUT_ARRAYS = ("coef", "intercept", "mean", "scale")
#: What a readout reads, unless the writer says otherwise.
DEFAULT_READOUT_REPRESENTATION = "activations of /representations/*"

#: Arrays larger than this are stored chunked with gzip + shuffle; smaller ones (and scalars)
#: are stored contiguous and uncompressed.
COMPRESS_ABOVE_BYTES = 64 * 1024
#: Target size of one chunk of an activation matrix (a chunk is a block of whole rows).
ACTIVATION_CHUNK_BYTES = 1 << 20
#: gzip level for compressed datasets.
GZIP_LEVEL = 4
#: Target size of the blocks that ``iter_blocks`` and whole-array writes move at a time.
DEFAULT_BLOCK_BYTES = 16 << 20

_LIBVER = ("v108", "v108")       # readable by every HDF5 >= 1.8; allows attributes > 64 KiB
_CHUNK_CACHE_BYTES = 4 << 20     # per-dataset HDF5 chunk cache (several 1 MiB chunks)
_GIT_TIMEOUT_S = 2.0
_JSON_FIELDS_ATTR = "json-fields"
_ALWAYS_JSON = ("config", "dataset_checksum")
_RESERVED_ATTRS = ("encoding-type", "encoding-version", _JSON_FIELDS_ATTR)
_STANDARD_PROVENANCE = ("bioreps_version", "git_commit", "python_version", "numpy_version",
                        "numba_version", "torch_version", "h5py_version", "platform", "backend",
                        "seed", "config", "dataset", "dataset_checksum", "created")
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_INT64 = np.iinfo(np.int64)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

class SchemaError(ValueError):
    """The file is not a bioreps file this version can read.

    Raised for a file that is not HDF5 or is truncated/corrupt, a file without the bioreps root
    attributes, an unknown ``encoding-type`` where the schema expects a known one, a missing
    required member, or an encoding version outside the supported range (see
    ``docs/hdf5-schema.md``, "Versions").
    """


class NonFiniteError(ValueError):
    """Activations holding NaN or inf were refused at write time.

    Parameters
    ----------
    split : str
        The representation being written.
    rows : array_like of int
        Absolute indices of the offending rows.

    Attributes
    ----------
    split : str
    rows : ndarray of int64
        All offending rows (absolute indices) of the block or matrix being written.
    count : int
        ``len(rows)``.
    """

    def __init__(self, split: str, rows):
        self.split = split
        self.rows = np.asarray(rows, dtype=np.int64).ravel()
        self.count = int(self.rows.size)
        shown = ", ".join(str(r) for r in self.rows[:10])
        more = ", ..." if self.count > 10 else ""
        super().__init__(
            f"activations of split {split!r} contain NaN or inf in {self.count} "
            f"row{'s' if self.count != 1 else ''} (rows [{shown}{more}]); bioreps files refuse "
            f"non-finite activations: fix or drop those rows before saving")

    def __reduce__(self):
        return type(self), (self.split, self.rows)


# --------------------------------------------------------------------------------------------
# Small helpers: names, JSON, attributes, versions
# --------------------------------------------------------------------------------------------

def _check_name(name, what: str) -> str:
    """A valid HDF5 link name: a non-empty str without '/', NUL or control characters."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    if not name or name in (".", "..") or name != name.strip():
        raise ValueError(f"{what} {name!r} is not a valid name (empty, '.', '..' or padded "
                         f"with whitespace)")
    if "/" in name or any(ord(c) < 32 for c in name):
        raise ValueError(f"{what} {name!r} is not a valid HDF5 name (no '/' or control "
                         f"characters)")
    return name



def _to_jsonable(value, label: str, key: str):
    """``value`` as plain JSON types; numpy scalars and arrays are converted.

    ``label`` and ``key`` name the offending entry in the ``TypeError`` ("hyperparameter
    'layers[0].size'").
    """
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, (np.bool_, np.integer, np.floating, np.str_)):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufU":
        return value.tolist()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{label} {key!r} has a non-string key {k!r}; JSON objects need "
                                f"string keys")
            out[k] = _to_jsonable(v, label, f"{key}.{k}" if key else k)
        return out
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v, label, f"{key}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{label} {key!r} has type {type(value).__name__}, which cannot be stored "
                    f"as JSON (use None, bool, int, float, str, lists, str-keyed dicts, or numpy "
                    f"scalars/arrays)")


def _json_dumps(value, label: str, key: str = "") -> str:
    return json.dumps(_to_jsonable(value, label, key), ensure_ascii=False)


def _encode_dict(mapping, label: str) -> str:
    """JSON text of a str-keyed dict (``None`` -> ``{}``)."""
    if mapping is None:
        return "{}"
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{label}s must be a dict, got {type(mapping).__name__}")
    return _json_dumps(mapping, label)


def _is_native_attr(value) -> bool:
    """Whether ``value`` is stored as a plain HDF5 scalar attribute rather than JSON."""
    if isinstance(value, (bool, np.bool_, str, float, np.floating)):
        return True
    if isinstance(value, (int, np.integer)):
        return _INT64.min <= int(value) <= _INT64.max
    return False


def _py_scalar(value):
    """An attribute value as a Python object (numpy scalars -> Python, bytes -> str)."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_py_scalar(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    return value


def _set_encoding(obj, etype: str) -> None:
    obj.attrs["encoding-type"] = etype
    obj.attrs["encoding-version"] = ENCODING_VERSIONS[etype]


def _parse_version(text: str):
    match = _VERSION_RE.match(text)
    return None if match is None else tuple(int(g) for g in match.groups())


def _readable_version(found: str, supported: str) -> str:
    """'ok', 'newer' or 'unsupported' under the policy: same major, minor <= ours."""
    have, ours = _parse_version(found), _parse_version(supported)
    if have is None:
        return "malformed"
    if have[0] == ours[0] and have[1] <= ours[1]:
        return "ok"
    return "newer" if have[:2] > ours[:2] else "unsupported"


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------

def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    """``git rev-parse HEAD`` of the repository holding this package, else ``"unknown"``.

    Only a repository whose top level is the folder just above the package counts, so an
    installed copy inside some unrelated repository does not report that repository's commit.
    """
    package_dir = Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=package_dir,
                              capture_output=True, text=True, timeout=_GIT_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
        lines = done.stdout.splitlines()
        if done.returncode != 0 or len(lines) != 2:
            return "unknown"
        if Path(lines[0]).resolve() != package_dir.parent:
            return "unknown"
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"
    commit = lines[1].strip()
    return commit if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit) else "unknown"


def collect_provenance(**overrides) -> dict:
    """The automatic provenance record, updated with ``overrides``.

    Parameters
    ----------
    **overrides
        Values that replace or extend the automatic fields (``seed=0``, ``backend="cuda"``,
        ``config={...}``, ``dataset="fashion-mnist"``, ``dataset_checksum={...}``, or any extra
        field). ``seed=None`` is recorded as ``"none"``.

    Returns
    -------
    dict
        ``bioreps_version``, ``git_commit`` (``"unknown"`` outside a git checkout),
        ``python_version``, ``numpy_version``, ``numba_version``, ``torch_version``,
        ``h5py_version`` (``"not installed"`` where missing; torch is never imported),
        ``platform``, ``backend`` (default ``"unknown"``), ``seed`` (default ``"none"``),
        ``config`` (default ``{}``), ``dataset`` (default ``"unknown"``), ``dataset_checksum``
        (default ``"unknown"``), ``created`` (ISO 8601 UTC, e.g. ``2024-05-01T12:00:00Z``),
        then the extra fields. Values are Python objects; :class:`Writer` JSON-encodes
        ``config``, ``dataset_checksum`` and every non-scalar value.
    """
    record = {
        "bioreps_version": __version__,
        "git_commit": _git_commit(),
        "python_version": platform.python_version(),
        "numpy_version": _package_version("numpy"),
        "numba_version": _package_version("numba"),
        "torch_version": _package_version("torch"),
        "h5py_version": _package_version("h5py"),
        "platform": platform.platform(),
        "backend": "unknown",
        "seed": "none",
        "config": {},
        "dataset": "unknown",
        "dataset_checksum": "unknown",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    record.update(overrides)
    seed = record["seed"]
    if seed is None:
        record["seed"] = "none"
    elif isinstance(seed, np.integer):
        record["seed"] = int(seed)
    return record


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _activation_chunk_rows(n_units: int, n_samples: int) -> int:
    """Rows per chunk so that one chunk of float32 rows is about ``ACTIVATION_CHUNK_BYTES``."""
    rows = max(1, ACTIVATION_CHUNK_BYTES // (4 * n_units))
    return max(1, min(rows, n_samples))


def _block_rows(chunk_rows: int, n_units: int) -> int:
    """A whole number of chunks amounting to about ``DEFAULT_BLOCK_BYTES``."""
    return chunk_rows * max(1, DEFAULT_BLOCK_BYTES // (4 * n_units * chunk_rows))


def _storage_options(arr: np.ndarray) -> dict:
    """gzip + shuffle (auto-chunked) for arrays above ``COMPRESS_ABOVE_BYTES``; else nothing."""
    if arr.ndim == 0 or arr.nbytes <= COMPRESS_ABOVE_BYTES:
        return {}
    return {"chunks": True, "compression": "gzip", "compression_opts": GZIP_LEVEL,
            "shuffle": True}


def _prepare_arrays(arrays, where: str) -> dict:
    """Validate a (nested) dict of arrays; return the same tree of numpy arrays."""
    if not isinstance(arrays, Mapping):
        raise TypeError(f"{where} must be a dict of arrays, got {type(arrays).__name__}")
    out = {}
    for name, value in arrays.items():
        _check_name(name, f"array name in {where}")
        path = f"{where}/{name}"
        if isinstance(value, Mapping):
            out[name] = _prepare_arrays(value, path)
            continue
        try:
            arr = np.asarray(value)
        except Exception as err:  # noqa: BLE001 - report which entry failed, whatever the cause
            raise TypeError(f"{path} cannot be converted to a numpy array: {err}") from err
        if arr.dtype.kind not in "biufc":
            raise TypeError(f"{path} has dtype {arr.dtype}; only bool, integer, float and "
                            f"complex arrays can be stored")
        out[name] = arr
    return out


def _write_arrays(group: h5py.Group, arrays: dict) -> None:
    for name, value in arrays.items():
        if isinstance(value, dict):
            sub = group.create_group(name)
            _set_encoding(sub, "dict")
            _write_arrays(sub, value)
        else:
            dset = group.create_dataset(name, data=value, **_storage_options(value))
            _set_encoding(dset, "array")


def _make_dimension(group: h5py.Group, name: str, size: int, resizable: bool = False) -> h5py.Dataset:
    """An HDF5 dimension scale ``group/name`` holding ``0 .. size - 1`` (int64).

    netCDF readers (h5netcdf, xarray) name an axis after the scale attached to it; axes without
    one become ``phony_dim_N``. ``resizable`` matches an empty, resizable activation matrix.
    """
    data = np.arange(size, dtype=np.int64)
    opts = {"maxshape": (None,), "chunks": (1024,)} if resizable else _storage_options(data)
    dset = group.create_dataset(name, data=data, **opts)
    dset.make_scale(name)
    _set_encoding(dset, "dimension")
    return dset


def _check_dims(dims) -> dict:
    """``dims`` (dimension name -> length) checked: valid names, int lengths >= 0."""
    if dims is None:
        return {}
    if not isinstance(dims, Mapping):
        raise TypeError(f"dims must be a dict of dimension name -> length, got {type(dims).__name__}")
    return {_check_name(name, "dimension name"): check_int(length, f"length of dimension {name!r}", 0)
            for name, length in dims.items()}


def _label_model_axes(group: h5py.Group, arrays: dict, dims: dict) -> None:
    """Attach a dimension scale, stored in ``/model``, to every axis of every model array.

    An axis whose length equals exactly one of ``dims`` (dimension name -> length, e.g.
    ``{"unit": 400, "feature": 784}``) gets that name, once per array; names that share a length
    are ambiguous and not used. Other axes get ``<array path>_dim<axis>`` (path parts joined by
    ``.``), so no axis is left unnamed.
    """
    lengths = list(dims.values())
    by_length = {n: name for name, n in dims.items() if lengths.count(n) == 1}
    taken = set(group)
    scales = {}

    def scale(name, size):
        if name not in scales:
            scales[name] = _make_dimension(group, name, size)
        return scales[name]

    def walk(tree, h5group, prefix):
        for name, value in tree.items():
            if isinstance(value, dict):
                walk(value, h5group[name], f"{prefix}{name}.")
                continue
            dset = h5group[name]
            used = set()
            for axis, size in enumerate(value.shape):
                dim = by_length.get(size)
                if dim is None or dim in used or dim in taken:
                    dim = f"{prefix}{name}_dim{axis}"
                    while dim in taken or (dim in scales and scales[dim].shape[0] != size):
                        dim += "_"
                used.add(dim)
                dset.dims[axis].attach_scale(scale(dim, size))

    walk(arrays, group, "")


def _check_vector(values, name: str, split: str, n: int, nonnegative: bool) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} of split {split!r} must have shape ({n},), got {arr.shape}")
    if arr.dtype.kind == "f" and arr.size:
        if not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
            raise ValueError(f"{name} of split {split!r} must hold integers")
    elif arr.dtype.kind not in "iuf" and arr.size:
        raise TypeError(f"{name} of split {split!r} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if nonnegative and arr.size and arr.min() < 0:
        raise ValueError(f"{name} of split {split!r} holds negative values (min {arr.min()})")
    return arr


def _nonfinite_rows(block: np.ndarray) -> np.ndarray:
    """Indices of rows of a float block holding NaN or inf (fast path: min/max are finite)."""
    if block.size == 0 or (np.isfinite(block.min()) and np.isfinite(block.max())):
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(~np.isfinite(block).all(axis=1)).astype(np.int64)


def _discard(h5file, tmp_path: str) -> None:
    """Close ``h5file`` (ignoring errors) and delete the temporary file."""
    try:
        h5file.close()
    except Exception:  # noqa: BLE001 - the file is thrown away anyway
        pass
    try:
        os.remove(tmp_path)
    except FileNotFoundError:
        pass


def _prepare_readout(arrays, hyperparameters, representation) -> tuple:
    """Check a readout's arrays: ``coef`` (n_classes, n_features), ``intercept`` (n_classes,),
    ``mean`` and ``scale`` (n_features,), finite; return them as float32, the hyperparameters'
    JSON text and the representation text."""
    if not isinstance(arrays, Mapping):
        raise TypeError(f"readout arrays must be a dict, got {type(arrays).__name__}")
    if set(arrays) != set(READOUT_ARRAYS):
        raise ValueError(f"readout arrays must be exactly {list(READOUT_ARRAYS)}, got {sorted(arrays)}")
    out = {}
    for name in READOUT_ARRAYS:
        arr = np.asarray(arrays[name])
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"readout array {name!r} must be real numbers, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ValueError(f"readout array {name!r} holds NaN or inf")
        out[name] = arr
    coef = out["coef"]
    if coef.ndim != 2 or coef.shape[0] < 1 or coef.shape[1] < 1:
        raise ValueError(f"readout array 'coef' must have shape (n_classes, n_features), got {coef.shape}")
    k, d = coef.shape
    for name, shape in (("intercept", (k,)), ("mean", (d,)), ("scale", (d,))):
        if out[name].shape != shape:
            raise ValueError(f"readout array {name!r} must have shape {shape} to match coef {coef.shape}, "
                             f"got {out[name].shape}")
    if not isinstance(representation, str) or not representation:
        raise TypeError(f"the readout's representation must be a non-empty str, got {representation!r}")
    return out, _encode_dict(hyperparameters, "readout hyperparameter"), representation


def _write_readout_group(h5: h5py.File, prepared: tuple) -> None:
    """Create ``/readout`` from :func:`_prepare_readout`'s result."""
    arrays, hyper_json, representation = prepared
    group = h5.create_group("readout")
    _set_encoding(group, "readout")
    group.attrs["n_classes"] = np.int64(arrays["coef"].shape[0])
    group.attrs["hyperparameters"] = hyper_json
    group.attrs["representation"] = representation
    _write_arrays(group, arrays)
    # dimension scales (schema >= 1.4.0): xarray/netCDF readers see coef as (class, unit), where
    # unit is the column of the representation read, named as in /representations/<split>
    n_classes, n_features = arrays["coef"].shape
    cls = _make_dimension(group, "class", n_classes)
    unit = _make_dimension(group, "unit", n_features)
    group["coef"].dims[0].attach_scale(cls)
    group["coef"].dims[1].attach_scale(unit)
    group["intercept"].dims[0].attach_scale(cls)
    for name in ("mean", "scale"):
        group[name].dims[0].attach_scale(unit)


class RepresentationWriter:
    """Streams one activation matrix into an open :class:`Writer`.

    Made by :meth:`Writer.create_representation`; not constructed directly. Rows may be written
    in any order and any block size; the file is only accepted at close when every row was
    written. Writing a row twice keeps the last values.

    Attributes
    ----------
    split : str
    n_samples, n_units : int
    chunk_rows : int
        Rows per HDF5 chunk; writing whole chunks (``start`` and block length multiples of
        it) is fastest.
    """

    def __init__(self, writer: Writer, split: str, dset: h5py.Dataset, n_samples: int,
                 n_units: int):
        self._writer = writer
        self._dset = dset
        self.split = split
        self.n_samples = n_samples
        self.n_units = n_units
        self.chunk_rows = dset.chunks[0]
        self._written = np.zeros(n_samples, dtype=bool)
        self._next = 0

    @property
    def rows_written(self) -> int:
        """Number of distinct rows written so far."""
        return int(np.count_nonzero(self._written))

    @property
    def complete(self) -> bool:
        """Whether every row has been written."""
        return bool(self._written.all())

    def _as_block(self, block) -> np.ndarray:
        arr = np.asarray(block)
        if not np.can_cast(arr.dtype, np.float32, casting="same_kind"):
            raise TypeError(f"activations of split {self.split!r} must be real numbers castable "
                            f"to float32, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] != self.n_units:
            raise ValueError(f"a block of split {self.split!r} must have shape (rows, "
                             f"{self.n_units}), got {arr.shape}")
        with np.errstate(over="ignore", invalid="ignore"):   # overflow to inf is caught below
            return np.ascontiguousarray(arr, dtype=np.float32)

    def _store(self, start: int, block: np.ndarray) -> None:
        stop = start + block.shape[0]
        if block.shape[0]:
            self._dset[start:stop] = block
        self._written[start:stop] = True
        self._next = stop

    def write_rows(self, start: int, block) -> None:
        """Write ``block`` (rows, n_units) as rows ``start .. start + rows - 1``.

        Parameters
        ----------
        start : int
            First row (absolute index, 0-based).
        block : array_like of shape (rows, n_units)
            Real numbers; cast to float32 (values beyond float32's range become inf and are
            refused).

        Raises
        ------
        NonFiniteError
            ``block`` holds NaN or inf; nothing is written and the error names the absolute
            row indices.
        TypeError, ValueError
            Wrong dtype, shape, or rows outside ``0 .. n_samples - 1``.
        """
        self._writer._check_open()
        start = check_int(start, "start", 0)
        arr = self._as_block(block)
        if start + arr.shape[0] > self.n_samples:
            raise ValueError(f"rows {start}..{start + arr.shape[0] - 1} lie outside split "
                             f"{self.split!r} of {self.n_samples} rows")
        bad = _nonfinite_rows(arr)
        if bad.size:
            raise NonFiniteError(self.split, bad + start)
        self._store(start, arr)

    def append(self, block) -> None:
        """Write ``block`` right after the last block written (row 0 for the first)."""
        self.write_rows(self._next, block)

    def _check_complete(self) -> None:
        if not self.complete:
            missing = np.flatnonzero(~self._written)
            raise ValueError(f"representation {self.split!r} is incomplete: "
                             f"{self.rows_written} of {self.n_samples} rows written (first "
                             f"missing row {missing[0]}); the file was not saved")

    def __repr__(self):
        return (f"<RepresentationWriter {self.split!r}: {self.rows_written}/{self.n_samples} "
                f"rows x {self.n_units} units>")


class Writer:
    """Write a bioreps file atomically: a temporary file renamed into place on success.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. Its folder must exist.
    overwrite : bool
        Replace an existing file at ``path`` (only once the new one is complete). When False,
        an existing ``path`` raises ``FileExistsError`` here, before any work.

    Notes
    -----
    The temporary file ``.{name}.tmp-{host}-{pid}-{random}`` lives next to ``path`` so the final
    ``os.replace`` is an atomic rename. Temporaries of the same ``path`` left by a killed writer
    (this host, a pid that no longer exists) are deleted when a new writer opens. Leaving the ``with`` block normally calls
    :meth:`close` (check completeness, write provenance, flush, fsync, rename); leaving it by
    any exception, ``KeyboardInterrupt`` included, calls :meth:`abort`, which deletes the
    temporary file and leaves any existing file at ``path`` untouched. A writer that is
    garbage-collected (or alive at interpreter exit) without being closed is aborted.

    ``write_model`` must be called once. ``write_provenance`` is optional: the automatic
    provenance (:func:`collect_provenance`) is written at close in any case.
    """

    def __init__(self, path, overwrite: bool = False):
        self.path = Path(os.fspath(path))
        self.overwrite = bool(overwrite)
        folder = self.path.parent
        if not folder.is_dir():
            raise FileNotFoundError(f"cannot write {self.path}: folder {folder} does not exist")
        if self.path.is_dir():
            raise IsADirectoryError(f"cannot write {self.path}: it is a directory")
        if self.path.exists() and not self.overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it")
        _files.remove_stale_temps(folder, [self.path.name])
        self.tmp_path = _files.temp_path(self.path)
        self._h5 = h5py.File(self.tmp_path, "x", libver=_LIBVER, rdcc_nbytes=_CHUNK_CACHE_BYTES)
        self._finalizer = weakref.finalize(self, _discard, self._h5, str(self.tmp_path))
        self._closed = False
        self._model_written = False
        self._provenance: dict = {}
        self._reps: dict[str, RepresentationWriter] = {}
        try:
            _set_encoding(self._h5, "bioreps-file")
            _set_encoding(self._h5.create_group("representations"), "representations")
        except BaseException:
            self.abort()
            raise

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    @property
    def closed(self) -> bool:
        """Whether the writer was closed or aborted."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"the writer for {self.path} is closed")

    # -- content ----------------------------------------------------------------------------
    def write_model(self, kind: str, arrays=None, hyperparameters=None, *, dims=None) -> None:
        """Write the ``/model`` group (once).

        Parameters
        ----------
        kind : str
            Model family, e.g. ``"hebbian-wta"``, ``"spiking-wta"``, ``"mlp"``, ``"pixels"``.
        arrays : dict, optional
            Name -> array (learned state: weights, thresholds, labels, ...) or name -> nested
            dict of the same (stored as a subgroup). Any numeric numpy-convertible value;
            Python and numpy scalars become 0-d arrays.
        hyperparameters : dict, optional
            JSON-serialisable values (numpy scalars and arrays are converted); stored as one
            JSON string attribute.
        dims : dict, optional
            Dimension name -> length, e.g. ``{"unit": 400, "feature": 784}``: an array axis of
            one of these lengths gets that dimension name (an HDF5 dimension scale in
            ``/model``, which xarray shows as the dimension's name); other axes are named
            ``<array>_dim<axis>``. Lengths given for two names are ambiguous and not used.

        Raises
        ------
        TypeError
            A non-numeric array or a hyperparameter that cannot be stored as JSON (the message
            names the key).
        ValueError
            Empty ``kind``, an invalid array name, or a second call.
        """
        self._check_open()
        if self._model_written:
            raise ValueError("write_model() was already called for this file")
        if not isinstance(kind, str) or not kind.strip():
            raise ValueError(f"model kind must be a non-empty str, got {kind!r}")
        prepared = _prepare_arrays({} if arrays is None else arrays, "/model")
        hyper_json = _encode_dict(hyperparameters, "hyperparameter")
        dims = _check_dims(dims)
        group = self._h5.create_group("model")
        _set_encoding(group, "model")
        group.attrs["kind"] = kind
        group.attrs["hyperparameters"] = hyper_json
        _write_arrays(group, prepared)
        _label_model_axes(group, prepared, dims)
        self._model_written = True

    def write_provenance(self, provenance: Mapping | None = None, **fields) -> None:
        """Record provenance fields; merged over :func:`collect_provenance` at close.

        Parameters
        ----------
        provenance : dict, optional
            Field -> value. May be called several times; later values win. Scalars (str,
            bool, int, float) are stored as attributes; ``config``, ``dataset_checksum`` and
            any non-scalar value are stored as JSON strings.
        **fields
            More fields, same rules.
        """
        self._check_open()
        merged = dict(provenance or {})
        merged.update(fields)
        for key, value in merged.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"provenance keys must be non-empty str, got {key!r}")
            if key in _RESERVED_ATTRS:
                raise ValueError(f"provenance key {key!r} is reserved by the file format")
            if key in _ALWAYS_JSON or not _is_native_attr(value):
                _json_dumps(value, "provenance field", key)   # fail now, not at close
        self._provenance.update(merged)

    def create_representation(self, split: str, n_samples: int, n_units: int, *, labels=None,
                              inputs_index=None, dataset: str | None = None,
                              dataset_split: str | None = None,
                              description: str = "", layer: int | None = None) -> RepresentationWriter:
        """Create ``/representations/<split>`` and return a writer for its rows.

        Parameters
        ----------
        split : str
            Name of the representation (usually the dataset split: ``"train"``, ``"test"``).
        n_samples : int
            Number of rows (>= 0).
        n_units : int
            Number of columns (>= 1).
        labels : array_like of int, shape (n_samples,), optional
            Class label of each row.
        inputs_index : array_like of int, shape (n_samples,), optional
            Row of each sample in the source dataset split; default ``arange(n_samples)``.
        dataset, dataset_split : str, optional
            Source dataset name and split (stored as ``"unknown"`` when not given).
        description : str
            Free text, e.g. ``"ReLU(Wx)^4.5"``.
        layer : int, optional
            Which layer of a multi-layer model this is (0 = the first), stored as the ``layer``
            attribute (schema >= 1.3.0); omitted for single-layer models.

        Returns
        -------
        RepresentationWriter
        """
        self._check_open()
        _check_name(split, "split name")
        if layer is not None:
            layer = check_int(layer, "layer", 0)
        if split in self._reps:
            raise ValueError(f"representation {split!r} already exists in this file")
        n = check_int(n_samples, "n_samples", 0)
        units = check_int(n_units, "n_units", 1)
        attrs = {"dataset": dataset, "dataset_split": dataset_split, "description": description}
        for key, value in attrs.items():
            if value is None and key != "description":
                attrs[key] = "unknown"
            elif not isinstance(value, str):
                raise TypeError(f"{key} must be a str, got {type(value).__name__}")
        labels_arr = None if labels is None else _check_vector(labels, "labels", split, n, False)
        index_arr = (np.arange(n, dtype=np.int64) if inputs_index is None
                     else _check_vector(inputs_index, "inputs_index", split, n, True))

        group = self._h5["representations"].create_group(split)
        _set_encoding(group, "representation")
        group.attrs.update(attrs)
        group.attrs["n_samples"] = np.int64(n)
        group.attrs["n_units"] = np.int64(units)
        if layer is not None:
            group.attrs["layer"] = np.int64(layer)
        chunk_rows = _activation_chunk_rows(units, n)
        dset = group.create_dataset(
            "activations", shape=(n, units), dtype=np.float32, chunks=(chunk_rows, units),
            maxshape=(None, units) if n == 0 else None,   # HDF5 needs chunk <= max shape
            compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
        _set_encoding(dset, "activations")
        if labels_arr is not None:
            _set_encoding(group.create_dataset("labels", data=labels_arr,
                                               **_storage_options(labels_arr)), "labels")
        index_dset = group.create_dataset("inputs_index", data=index_arr, **_storage_options(index_arr))
        _set_encoding(index_dset, "index")
        # dimension scales: xarray/netCDF readers see (sample, unit) instead of phony dimensions
        sample = _make_dimension(group, "sample", n, resizable=n == 0)
        dset.dims[0].attach_scale(sample)
        dset.dims[1].attach_scale(_make_dimension(group, "unit", units))
        index_dset.dims[0].attach_scale(sample)
        if labels_arr is not None:
            group["labels"].dims[0].attach_scale(sample)
        rep = RepresentationWriter(self, split, dset, n, units)
        self._reps[split] = rep
        return rep

    def write_representation(self, split: str, activations, labels=None, inputs_index=None, *,
                             dataset: str | None = None, dataset_split: str | None = None,
                             description: str = "") -> RepresentationWriter:
        """Write a whole activation matrix as ``/representations/<split>``.

        ``activations`` may be a numpy array (incl. a memmap), an ``h5py.Dataset`` or a
        :class:`Representation`: it is copied in blocks of about ``DEFAULT_BLOCK_BYTES``, so a
        lazy source is never loaded whole. Other array-likes are converted with
        ``np.asarray``. On NaN/inf the error lists every offending row of the matrix and the
        split is removed again, so the writer stays usable. Other arguments as in
        :meth:`create_representation`.
        """
        self._check_open()
        acts = activations
        if not isinstance(acts, (np.ndarray, h5py.Dataset, Representation)):
            acts = np.asarray(acts)
        if len(acts.shape) != 2:
            raise ValueError(f"activations of split {split!r} must be 2-dimensional, got shape "
                             f"{tuple(acts.shape)}")
        n, units = (int(s) for s in acts.shape)
        rep = self.create_representation(split, n, units, labels=labels,
                                         inputs_index=inputs_index, dataset=dataset,
                                         dataset_split=dataset_split, description=description)
        try:
            step = _block_rows(rep.chunk_rows, units)
            bad = []
            for start in range(0, n, step):
                block = rep._as_block(acts[start:start + step])
                rows = _nonfinite_rows(block)
                if rows.size:
                    bad.append(rows + start)
                elif not bad:
                    rep._store(start, block)
            if bad:
                raise NonFiniteError(split, np.concatenate(bad))
        except BaseException:
            del self._reps[split]
            if not self._closed:
                del self._h5["representations"][split]
            raise
        return rep

    def write_readout(self, arrays, hyperparameters=None, *,
                      representation: str = DEFAULT_READOUT_REPRESENTATION) -> None:
        """Write the ``/readout`` group (once): the linear classifier read out of the file's
        representations, ``logits = ((h - mean) / scale) @ coef.T + intercept``.

        Parameters
        ----------
        arrays : dict
            ``coef`` (n_classes, n_features), ``intercept`` (n_classes,), ``mean`` and ``scale``
            (n_features,); stored as float32 (see
            :meth:`bioreps.readout.LinearReadout.to_arrays`).
        hyperparameters : dict, optional
            How it was trained (epochs, lr, ...); stored as JSON.
        representation : str
            Which representation it reads, e.g. ``"activations of /representations/*"``.
        """
        self._check_open()
        if "readout" in self._h5:
            raise ValueError("write_readout() was already called for this file")
        _write_readout_group(self._h5, _prepare_readout(arrays, hyperparameters, representation))

    # -- finishing --------------------------------------------------------------------------
    def _write_provenance_group(self) -> None:
        record = collect_provenance(**self._provenance)
        group = self._h5.create_group("provenance")
        _set_encoding(group, "provenance")
        json_fields = []
        for key, value in record.items():
            if key in _ALWAYS_JSON or not _is_native_attr(value):
                group.attrs[key] = _json_dumps(value, "provenance field", key)
                json_fields.append(key)
            else:
                group.attrs[key] = value.item() if isinstance(value, np.generic) else value
        group.attrs[_JSON_FIELDS_ATTR] = json.dumps(json_fields)

    def close(self) -> None:
        """Finish the file and rename it to :attr:`path`.

        Raises
        ------
        ValueError
            ``write_model`` was never called or a representation is incomplete; the temporary
            file is deleted and nothing is written to :attr:`path`.
        FileExistsError
            ``overwrite=False`` and a file appeared at :attr:`path` meanwhile.
        """
        if self._closed:
            return
        try:
            if not self._model_written:
                raise ValueError("write_model() was never called; a bioreps file needs a model "
                                 "(use kind='pixels' for raw inputs)")
            for rep in self._reps.values():
                rep._check_complete()
            self._write_provenance_group()
            self._h5.flush()
            self._h5.close()
            _files.commit(self.tmp_path, self.path, overwrite=self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._finalizer.detach()

    def abort(self) -> None:
        """Discard everything: close and delete the temporary file. Idempotent."""
        self._closed = True
        self._finalizer()

    def __repr__(self):
        state = "closed" if self._closed else "open"
        return (f"<bioreps.io.Writer {str(self.path)!r} ({state}, "
                f"{len(self._reps)} representations)>")


_REPRESENTATION_KEYS = ("activations", "labels", "inputs_index", "dataset", "dataset_split",
                        "description")


def save(path, *, model_kind: str, model_arrays=None, hyperparameters=None,
         representations=None, provenance=None, overwrite: bool = True, model_dims=None) -> Path:
    """Write a complete bioreps file in one call (a thin wrapper over :class:`Writer`).

    Parameters
    ----------
    path : str or os.PathLike
    model_kind : str
        See :meth:`Writer.write_model`.
    model_arrays : dict, optional
        Name -> array, or name -> nested dict of arrays.
    hyperparameters : dict, optional
        JSON-serialisable.
    representations : dict, optional
        Split -> ``dict(activations=..., labels=..., inputs_index=..., dataset=...,
        dataset_split=..., description=...)`` (only ``activations`` is required). A bare
        array is taken as ``dict(activations=array)``.
    provenance : dict, optional
        Merged over :func:`collect_provenance`.
    overwrite : bool
        Replace an existing file (atomically, once the new one is complete).
    model_dims : dict, optional
        Dimension name -> length for the model arrays' axes (see :meth:`Writer.write_model`).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    with Writer(path, overwrite=overwrite) as writer:
        writer.write_model(model_kind, model_arrays, hyperparameters, dims=model_dims)
        if provenance is not None:
            writer.write_provenance(provenance)
        for split, spec in (representations or {}).items():
            if not isinstance(spec, Mapping):
                spec = {"activations": spec}
            unknown = set(spec) - set(_REPRESENTATION_KEYS)
            if unknown or "activations" not in spec:
                raise TypeError(f"representation {split!r} must be a dict with 'activations' and "
                                f"optionally {', '.join(_REPRESENTATION_KEYS[1:])}; got keys "
                                f"{sorted(spec)}")
            spec = dict(spec)
            writer.write_representation(split, spec.pop("activations"), **spec)
    return writer.path


def add_readout(path, arrays, hyperparameters=None, *,
                representation: str = DEFAULT_READOUT_REPRESENTATION) -> Path:
    """Add a ``/readout`` group (see :meth:`Writer.write_readout`) to the existing bioreps file
    ``path``, in place.

    The file is modified where it lies: call it on a file that is not yet under its final name
    (a temporary file that is then committed, as the study and the experiment runner do). The
    root ``encoding-version`` of an older file is raised to :data:`SCHEMA_VERSION` (readouts came
    with schema 1.2.0, their dimension scales with 1.4.0); its other groups keep their own versions.

    Raises
    ------
    SchemaError
        ``path`` is not a bioreps file this version reads.
    ValueError
        The file already holds a readout, or the arrays are inconsistent.
    """
    path = Path(os.fspath(path))
    prepared = _prepare_readout(arrays, hyperparameters, representation)
    with load(path):   # the same checks as reading it
        pass
    with h5py.File(path, "r+") as h5:
        if "readout" in h5:
            raise ValueError(f"{path} already holds a /readout")
        _write_readout_group(h5, prepared)
        h5.attrs["encoding-version"] = SCHEMA_VERSION
    return path


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def _attr_str(obj, name: str, where: str, file: Path) -> str:
    if name not in obj.attrs:
        raise SchemaError(f"{file}: {where} has no {name!r} attribute")
    value = _py_scalar(obj.attrs[name])
    if not isinstance(value, str):
        raise SchemaError(f"{file}: attribute {name!r} of {where} is not a string: {value!r}")
    return value


def _check_element(obj, expected: tuple[str, ...], file: Path) -> str:
    """Validate ``obj``'s encoding attributes against ``expected`` types; return the type."""
    where = obj.name
    etype = _attr_str(obj, "encoding-type", where, file)
    if etype not in expected:
        wanted = " or ".join(repr(e) for e in expected)
        raise SchemaError(f"{file}: {where} has unknown encoding-type {etype!r} (expected "
                          f"{wanted}); it may have been written by a newer bioreps")
    version = _attr_str(obj, "encoding-version", where, file)
    supported = ENCODING_VERSIONS[etype]
    verdict = _readable_version(version, supported)
    if verdict == "newer":
        raise SchemaError(f"{file}: {where} ({etype!r}) has encoding-version {version}, written "
                          f"by a newer bioreps; this bioreps {__version__} reads {etype!r} "
                          f"<= {supported}; upgrade bioreps")
    if verdict != "ok":
        raise SchemaError(f"{file}: {where} ({etype!r}) has {verdict} encoding-version "
                          f"{version!r}; this bioreps {__version__} reads {etype!r} "
                          f"{supported.split('.')[0]}.x <= {supported}")
    return etype


def _check_root(h5: h5py.File, file: Path) -> str:
    etype = _py_scalar(h5.attrs.get("encoding-type"))
    if etype != "bioreps-file":
        found = "no encoding-type" if etype is None else f"encoding-type {etype!r}"
        raise SchemaError(f"{file}: not a bioreps file (root has {found}, expected "
                          f"'bioreps-file')")
    version = _attr_str(h5, "encoding-version", "/", file)
    verdict = _readable_version(version, SCHEMA_VERSION)
    if verdict == "newer":
        raise SchemaError(f"{file}: written by a newer bioreps (schema {version}); this bioreps "
                          f"{__version__} reads schema <= {SCHEMA_VERSION}; upgrade bioreps")
    if verdict != "ok":
        raise SchemaError(f"{file}: {verdict} schema version {version!r}; this bioreps "
                          f"{__version__} reads schema {SCHEMA_VERSION.split('.')[0]}.x "
                          f"<= {SCHEMA_VERSION}")
    return version


def _require(group: h5py.Group, name: str, file: Path, kind=h5py.Group):
    obj = group.get(name)
    path = f"{group.name.rstrip('/')}/{name}"
    if obj is None:
        raise SchemaError(f"{file}: missing {path}")
    if not isinstance(obj, kind):
        noun = "group" if kind is h5py.Group else "dataset"
        raise SchemaError(f"{file}: {path} should be a {noun}")
    return obj


def _read_arrays(group: h5py.Group, file: Path) -> dict:
    out = {}
    for name, obj in group.items():
        etype = _check_element(obj, ("array", "dict", "dimension"), file)
        if etype == "dimension":   # schema >= 1.1.0: a dimension scale, not a learned array
            continue
        if etype == "dict":
            if not isinstance(obj, h5py.Group):
                raise SchemaError(f"{file}: {obj.name} has encoding-type 'dict' but is not a group")
            out[name] = _read_arrays(obj, file)
        else:
            if not isinstance(obj, h5py.Dataset):
                raise SchemaError(f"{file}: {obj.name} has encoding-type 'array' but is not a "
                                  f"dataset")
            out[name] = np.asarray(obj[()])
    return out


def _decode_json(text, what: str, file: Path):
    try:
        return json.loads(text)
    except (TypeError, ValueError) as err:
        raise SchemaError(f"{file}: {what} is not valid JSON: {err}") from err


@dataclass(frozen=True)
class ModelRecord:
    """The ``/model`` group, loaded eagerly.

    Attributes
    ----------
    kind : str
        Model family (``"hebbian-wta"``, ``"pixels"``, ...).
    hyperparameters : dict
        Decoded from JSON (tuples come back as lists).
    arrays : dict
        Name -> ndarray; subgroups come back as nested dicts. Scalars are 0-d arrays.
    dims : dict
        Array path (``"weights"``, ``"state/n"``) -> names of its axes, e.g. ``("unit",
        "feature")`` (schema >= 1.1.0; empty for older files).
    """

    kind: str
    hyperparameters: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReadoutRecord:
    """The ``/readout`` group (schema >= 1.2.0), loaded eagerly.

    Attributes
    ----------
    arrays : dict
        ``coef`` (n_classes, n_features), ``intercept`` (n_classes,), ``mean``, ``scale``
        (n_features,), float32; logits are ``((h - mean) / scale) @ coef.T + intercept``.
    n_classes : int
    hyperparameters : dict
        How it was trained (decoded from JSON).
    representation : str
        Which representation it reads.
    dims : dict
        Array name -> names of its axes: ``{"coef": ("class", "unit"), "intercept": ("class",),
        "mean": ("unit",), "scale": ("unit",)}`` (schema >= 1.4.0; empty for older files).
    """

    arrays: dict
    n_classes: int
    hyperparameters: dict = field(default_factory=dict)
    representation: str = DEFAULT_READOUT_REPRESENTATION
    dims: dict = field(default_factory=dict)


def _read_readout(group: h5py.Group, file: Path) -> ReadoutRecord:
    _check_element(group, ("readout",), file)
    arrays = {}
    for name in READOUT_ARRAYS:
        dset = _require(group, name, file, kind=h5py.Dataset)
        _check_element(dset, ("array",), file)
        arrays[name] = np.asarray(dset[()])
    hyper = _decode_json(_attr_str(group, "hyperparameters", "/readout", file),
                         "/readout hyperparameters", file)
    if not isinstance(hyper, dict):
        raise SchemaError(f"{file}: /readout hyperparameters must be a JSON object")
    if "n_classes" not in group.attrs:
        raise SchemaError(f"{file}: /readout has no 'n_classes' attribute")
    n_classes = int(_py_scalar(group.attrs["n_classes"]))
    if arrays["coef"].ndim != 2 or arrays["coef"].shape[0] != n_classes:
        raise SchemaError(f"{file}: /readout/coef has shape {arrays['coef'].shape}, expected "
                          f"({n_classes}, n_features) for n_classes {n_classes}")
    return ReadoutRecord(arrays, n_classes, hyper, _attr_str(group, "representation", "/readout", file),
                         _axis_names(group))


def _axis_names(group: h5py.Group, prefix: str = "") -> dict:
    """Array path -> axis names (the dimension scales attached), for arrays that have them."""
    out = {}
    for name, obj in group.items():
        if isinstance(obj, h5py.Group):
            out.update(_axis_names(obj, f"{prefix}{name}/"))
        elif obj.ndim and _py_scalar(obj.attrs.get("encoding-type")) == "array":
            names = tuple(dim[0].name.rsplit("/", 1)[-1] if len(dim) else None for dim in obj.dims)
            if any(names):
                out[f"{prefix}{name}"] = names
    return out


class Representation:
    """One activation matrix of an open :class:`BiorepsFile`, read lazily.

    Nothing is read until asked: ``read``/``iter_blocks``/indexing read only the rows
    requested, ``labels``/``inputs_index`` are read (and cached) on first access. Reading after
    the file is closed raises ``ValueError``.

    Attributes
    ----------
    split : str
    shape : tuple of int
        ``(n_samples, n_units)``.
    n_samples, n_units : int
    dtype : numpy.dtype
        Always float32.
    chunk_rows : int
        Rows per HDF5 chunk.
    attrs : dict
        The split group's attributes (``dataset``, ``dataset_split``, ``n_samples``,
        ``n_units``, ``description``, ``layer`` when the file says, and the encoding attributes).
    layer : int or None
        Which layer of a multi-layer model the representation is (schema >= 1.3.0), else None.
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, owner: BiorepsFile, split: str, group: h5py.Group):
        file = owner.path
        _check_element(group, ("representation",), file)
        self._owner = owner
        self._group = group
        self.split = split
        self._dset = _require(group, "activations", file, h5py.Dataset)
        _check_element(self._dset, ("activations",), file)
        if self._dset.ndim != 2 or self._dset.dtype != np.float32:
            raise SchemaError(f"{file}: {self._dset.name} must be a 2-d float32 dataset, got "
                              f"{self._dset.dtype} {self._dset.shape}")
        self.n_samples, self.n_units = (int(s) for s in self._dset.shape)
        self.attrs = {k: _py_scalar(v) for k, v in group.attrs.items()}
        for key, actual in (("n_samples", self.n_samples), ("n_units", self.n_units)):
            if self.attrs.get(key) != actual:
                raise SchemaError(f"{file}: {group.name} attribute {key}={self.attrs.get(key)!r} "
                                  f"disagrees with the activations' shape {self.shape}")
        self.layer = self.attrs.get("layer")
        if self.layer is not None and (not isinstance(self.layer, int) or self.layer < 0):
            raise SchemaError(f"{file}: {group.name} attribute layer={self.layer!r} must be an int >= 0")
        self._vectors = {}
        for name, etype, required in (("labels", "labels", False),
                                      ("inputs_index", "index", True)):
            if name not in group:
                if required:
                    raise SchemaError(f"{file}: missing {group.name}/{name}")
                continue
            dset = _require(group, name, file, h5py.Dataset)
            _check_element(dset, (etype,), file)
            if dset.shape != (self.n_samples,) or dset.dtype.kind not in "iu":
                raise SchemaError(f"{file}: {dset.name} must be an integer dataset of shape "
                                  f"({self.n_samples},), got {dset.dtype} {dset.shape}")
            self._vectors[name] = dset
        self._cache = {}
        self.chunk_rows = (self._dset.chunks[0] if self._dset.chunks
                           else _activation_chunk_rows(self.n_units, self.n_samples))

    # -- metadata -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_samples, self.n_units)

    @property
    def dataset(self) -> str:
        """Source dataset name (``attrs['dataset']``)."""
        return self.attrs.get("dataset", "unknown")

    @property
    def dataset_split(self) -> str:
        """Source dataset split (``attrs['dataset_split']``)."""
        return self.attrs.get("dataset_split", "unknown")

    @property
    def description(self) -> str:
        return self.attrs.get("description", "")

    @property
    def has_labels(self) -> bool:
        return "labels" in self._vectors

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self):
        return (f"<bioreps.io.Representation {self.split!r}: {self.n_samples} x {self.n_units} "
                f"float32 from {self.dataset}/{self.dataset_split}>")

    # -- reading ------------------------------------------------------------------------------
    def _read_slice(self, start: int, stop: int) -> np.ndarray:
        self._owner._check_open()
        if stop <= start:
            return np.empty((0, self.n_units), dtype=np.float32)
        try:
            return self._dset[start:stop]
        except OSError as err:
            raise SchemaError(f"{self._owner.path}: cannot read rows {start}..{stop - 1} of "
                              f"{self._dset.name} (corrupt file?): {err}") from err

    def _vector(self, name: str):
        if name not in self._vectors:
            return None
        self._owner._check_open()
        if name not in self._cache:
            self._cache[name] = self._vectors[name][()].astype(np.int64, copy=False)
        return self._cache[name]

    @property
    def labels(self):
        """ndarray of int64, shape (n_samples,), or None when the file stores no labels."""
        return self._vector("labels")

    @property
    def inputs_index(self) -> np.ndarray:
        """ndarray of int64, shape (n_samples,): each row's index in the source split."""
        return self._vector("inputs_index")

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` (Python slice semantics, negative indices allowed) as float32."""
        start, stop, _ = slice(start, stop).indices(self.n_samples)
        return self._read_slice(start, stop)

    def to_numpy(self) -> np.ndarray:
        """The whole matrix in memory."""
        return self.read()

    def __array__(self, dtype=None, copy=None):
        out = self.read()
        return out if dtype is None else out.astype(dtype, copy=False)

    def iter_blocks(self, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` pairs covering every row once, in order.

        Parameters
        ----------
        block_rows : int, optional
            Rows per block (the last may be shorter). Default: a whole number of chunks
            amounting to about ``DEFAULT_BLOCK_BYTES``, so no chunk is decompressed twice.
        """
        if block_rows is None:
            block_rows = _block_rows(self.chunk_rows, self.n_units)
        block_rows = check_int(block_rows, "block_rows", 1)
        self._owner._check_open()
        for start in range(0, self.n_samples, block_rows):
            yield start, self._read_slice(start, min(start + block_rows, self.n_samples))

    def _take(self, index: np.ndarray) -> np.ndarray:
        """Rows at integer ``index`` (any shape/order, duplicates allowed), chunk by chunk."""
        flat = index.astype(np.int64, copy=False).ravel()
        n = self.n_samples
        flat = np.where(flat < 0, flat + n, flat)
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            bad = index.ravel()[(flat < 0) | (flat >= n)][0]
            raise IndexError(f"row {bad} is out of range for {self.split!r} with {n} rows")
        self._owner._check_open()
        rows, inverse = np.unique(flat, return_inverse=True)
        got = np.empty((rows.size, self.n_units), dtype=np.float32)
        # one contiguous read per chunk touched: HDF5 decompresses each chunk once
        cuts = np.flatnonzero(np.diff(rows // self.chunk_rows)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, rows.size]):
            if hi > lo:
                span = self._read_slice(int(rows[lo]), int(rows[hi - 1]) + 1)
                got[lo:hi] = span[rows[lo:hi] - rows[lo]]
        return got[inverse.ravel()].reshape(index.shape + (self.n_units,))

    def __getitem__(self, key) -> np.ndarray:
        """Rows by int, slice (any step), boolean mask or integer array (any order).

        A tuple applies its first element to rows and the rest to the result, so
        ``rep[10:20, :5]`` works. Only the chunks holding the requested rows are read.
        """
        if isinstance(key, tuple):
            if not key:
                return self.read()
            rows = self[key[0]]
            rest = key[1:]
            return rows[(slice(None), *rest)] if rows.ndim == 2 else rows[rest]
        if key is Ellipsis:
            return self.read()
        if isinstance(key, slice):
            start, stop, step = key.indices(self.n_samples)
            if step == 1:
                return self._read_slice(start, stop)
            return self._take(np.arange(start, stop, step))
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            i = operator.index(key)
            j = i + self.n_samples if i < 0 else i
            if not 0 <= j < self.n_samples:
                raise IndexError(f"row {i} is out of range for {self.split!r} with "
                                 f"{self.n_samples} rows")
            return self._read_slice(j, j + 1)[0]
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (self.n_samples,):
                raise IndexError(f"a boolean mask must have shape ({self.n_samples},), got "
                                 f"{index.shape}")
            index = np.flatnonzero(index)
        elif index.dtype.kind not in "iu" and not (index.size == 0 and index.dtype.kind == "f"):
            raise IndexError(f"rows can be selected by int, slice, boolean mask or integer "
                             f"array, not {type(key).__name__} of dtype {index.dtype}")
        return self._take(index)


class BiorepsFile:
    """An open bioreps file (see :func:`load`). Use as a context manager or call :meth:`close`.

    Attributes
    ----------
    path : pathlib.Path
    schema_version : str
        The root ``encoding-version``.
    model : ModelRecord
        Loaded eagerly.
    provenance : dict
        Loaded eagerly; ``config``, ``dataset_checksum`` and other JSON fields are decoded.
    representations : Mapping[str, Representation]
        Read-only mapping split -> lazy :class:`Representation`.
    readout : ReadoutRecord or None
        The stored linear readout (schema >= 1.2.0); ``None`` for files without one (every file
        of schema 1.0.0 and 1.1.0).
    """

    def __init__(self, path: Path, h5: h5py.File):
        self.path = path
        self._h5 = h5
        self._closed = False
        self.schema_version = _check_root(h5, path)

        model = _require(h5, "model", path)
        _check_element(model, ("model",), path)
        kind = _attr_str(model, "kind", "/model", path)
        hyper = _decode_json(_attr_str(model, "hyperparameters", "/model", path),
                             "/model hyperparameters", path)
        if not isinstance(hyper, dict):
            raise SchemaError(f"{path}: /model hyperparameters must be a JSON object")
        self.model = ModelRecord(kind, hyper, _read_arrays(model, path), _axis_names(model))

        prov = _require(h5, "provenance", path)
        _check_element(prov, ("provenance",), path)
        self.provenance = self._decode_provenance(prov)

        reps = _require(h5, "representations", path)
        _check_element(reps, ("representations",), path)
        loaded = {}
        for split, group in reps.items():
            if not isinstance(group, h5py.Group):
                raise SchemaError(f"{path}: {group.name} should be a group")
            loaded[split] = Representation(self, split, group)
        self.representations: Mapping[str, Representation] = MappingProxyType(loaded)

        readout = h5.get("readout")
        if readout is not None and not isinstance(readout, h5py.Group):
            raise SchemaError(f"{path}: /readout should be a group")
        self.readout = None if readout is None else _read_readout(readout, path)

    def _decode_provenance(self, group: h5py.Group) -> dict:
        if _JSON_FIELDS_ATTR in group.attrs:
            json_fields = _decode_json(_attr_str(group, _JSON_FIELDS_ATTR, group.name, self.path),
                                       f"{group.name} {_JSON_FIELDS_ATTR}", self.path)
        else:
            json_fields = list(_ALWAYS_JSON)
        out = {}
        for key, value in group.attrs.items():
            if key in _RESERVED_ATTRS:
                continue
            value = _py_scalar(value)
            if key in json_fields:
                value = _decode_json(value, f"provenance field {key!r}", self.path)
            out[key] = value
        # HDF5 lists attributes by name; put the standard fields first, in their usual order
        order = {key: i for i, key in enumerate(_STANDARD_PROVENANCE)}
        return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))

    # -- lifetime -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path} is closed; reopen it with bioreps.io.load() to read "
                             f"activations")

    def close(self) -> None:
        """Close the HDF5 file; metadata stays available, reading rows raises ``ValueError``."""
        if not self._closed:
            self._closed = True
            self._h5.close()

    def __enter__(self) -> BiorepsFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self._closed else "open"
        return (f"<bioreps.io.BiorepsFile {str(self.path)!r} ({state}): model "
                f"{self.model.kind!r}, representations {list(self.representations)}>")

    # -- summary ------------------------------------------------------------------------------
    def summary(self) -> str:
        """A human-readable multi-line description (what ``bioreps inspect`` prints)."""
        lines = [f"bioreps file {self.path} (schema {self.schema_version})",
                 f"model: {self.model.kind}"]
        if self.model.hyperparameters:
            lines.append("  hyperparameters:")
            for key, value in self.model.hyperparameters.items():
                table = _as_table(value)
                if table is None:
                    lines.append(f"    {key} = {_short_json(value)}")
                else:   # a training history: a few rows as a table, not one long line
                    lines.append(f"    {key} ({len(table[1])} rows):")
                    lines += [f"      {row}" for row in _format_table(*table)]
        else:
            lines.append("  hyperparameters: (none)")
        flat = []

        def walk(tree, prefix):
            for name, value in tree.items():
                if isinstance(value, dict):
                    walk(value, f"{prefix}{name}/")
                else:
                    flat.append((f"{prefix}{name}", value))

        walk(self.model.arrays, "")
        if flat:
            width = max(len(name) for name, _ in flat)
            lines.append("  arrays:")
            # axis names, where some are not the writer's default "<array>_dim<axis>"
            dims = {name: axes for name, axes in self.model.dims.items()
                    if any(a is not None and not a.endswith(f"_dim{i}") for i, a in enumerate(axes))}
            lines += [f"    {name:<{width}}  {arr.dtype} {arr.shape}"
                      + (f" ({', '.join(map(str, dims[name]))})" if name in dims else "")
                      for name, arr in flat]
        else:
            lines.append("  arrays: (none)")

        lines.append(f"representations: {len(self.representations) or '(none)'}")
        for split, rep in self.representations.items():
            if rep.has_labels and not self._closed:
                labels = rep.labels
                label_text = f"{labels.size} labels ({np.unique(labels).size} classes)"
            else:
                label_text = "labels stored" if rep.has_labels else "no labels"
            text = (f"  {split}: {rep.n_samples} x {rep.n_units} float32, {label_text}, from "
                    f"{rep.dataset}/{rep.dataset_split}")
            lines.append(text + (f" -- {rep.description}" if rep.description else ""))

        if self.readout is not None:
            coef = self.readout.arrays["coef"]
            lines.append(f"readout: linear, {coef.shape[1]} features -> {self.readout.n_classes} classes, "
                         f"reads {self.readout.representation}")
        p = self.provenance
        lines.append("provenance:")
        lines.append(f"  created {p.get('created', '?')} by bioreps {p.get('bioreps_version', '?')}"
                     f" (git {p.get('git_commit', 'unknown')})")
        lines.append(f"  backend {p.get('backend', '?')}, seed {p.get('seed', '?')}")
        checksum = p.get("dataset_checksum", "unknown")
        if isinstance(checksum, dict) and checksum:
            lines.append(f"  dataset {p.get('dataset', '?')}, checksums:")
            lines += _checksum_lines(checksum)
        else:
            checksum = checksum if isinstance(checksum, str) else _short_json(checksum)
            lines.append(f"  dataset {p.get('dataset', '?')} (checksum {checksum})")
        versions = ", ".join(f"{name} {p[f'{name}_version']}"
                             for name in ("python", "numpy", "numba", "torch", "h5py")
                             if f"{name}_version" in p)
        lines.append(f"  {versions}")
        lines.append(f"  platform {p.get('platform', '?')}")
        extra = [k for k in p if k not in _STANDARD_PROVENANCE]
        if extra:
            lines.append(f"  extra fields: {', '.join(extra)}")
        return "\n".join(lines)


#: ``bioreps inspect`` shows this many rows at each end of a history table.
_SUMMARY_TABLE_ENDS = 3
_SUMMARY_VALUE_CHARS = 200


def _short_json(value) -> str:
    """JSON text of ``value``, cut to ``_SUMMARY_VALUE_CHARS`` characters for the summary."""
    text = json.dumps(value)
    if len(text) <= _SUMMARY_VALUE_CHARS:
        return text
    return f"{text[:_SUMMARY_VALUE_CHARS - 40]} ... ({len(text)} characters)"


def _as_table(value):
    """``(columns, rows)`` when ``value`` is a list of flat dicts (records) or a dict of
    equally long lists (columns) with at least two rows, else None."""
    if (isinstance(value, list) and len(value) >= 2 and all(isinstance(r, dict) for r in value)
            and not any(isinstance(v, (dict, list)) for r in value for v in r.values())):
        columns = list(dict.fromkeys(k for r in value for k in r))
        columns.sort(key=lambda c: c != "epoch")          # the epoch first, the rest as stored
        return columns, [[r.get(c, "") for c in columns] for r in value]
    if (isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values())
            and len({len(v) for v in value.values()}) == 1 and len(next(iter(value.values()))) >= 2
            and not any(isinstance(x, (dict, list)) for v in value.values() for x in v)):
        columns = list(value)
        return columns, [list(row) for row in zip(*value.values())]
    return None


def _format_table(columns, rows) -> list:
    """Aligned text rows: a header, the first and last ``_SUMMARY_TABLE_ENDS`` rows, ``...``."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    k = _SUMMARY_TABLE_ENDS
    shown = rows if len(rows) <= 2 * k + 1 else rows[:k] + [None] + rows[-k:]
    text = [[cell(v) for v in row] if row is not None else None for row in shown]
    widths = [max([len(c)] + [len(r[i]) for r in text if r is not None]) for i, c in enumerate(columns)]
    out = ["  ".join(f"{c:>{w}}" for c, w in zip(columns, widths))]
    for r in text:
        out.append("  ".join(f"{'...':>{w}}" for w in widths[:1]) if r is None
                   else "  ".join(f"{c:>{w}}" for c, w in zip(r, widths)))
    return out


def _checksum_lines(checksum: dict) -> list:
    """One line per split (and per file of a :func:`bioreps.data.fingerprint` record)."""
    lines = []
    for split, value in checksum.items():
        if isinstance(value, dict) and isinstance(value.get("files"), dict):
            where = ", ".join(f"{k} {value[k]}" for k in ("n_samples", "source") if k in value)
            lines.append(f"    {split}: {where}" if where else f"    {split}:")
            width = max((len(f) for f in value["files"]), default=0)
            lines += [f"      {f:<{width}}  sha256 {h}" for f, h in value["files"].items()]
        else:
            lines.append(f"    {split}: {value if isinstance(value, str) else _short_json(value)}")
    return lines



def load(path) -> BiorepsFile:
    """Open a bioreps file for reading.

    The root and every group and dataset the reader touches are checked: encoding types must
    be known and versions readable (same major, minor <= ours). Model arrays and provenance
    are loaded now; activations stay on disk until read.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    BiorepsFile
        Close it (or use ``with``) when done.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    SchemaError
        Not HDF5, truncated/corrupt, not a bioreps file, unknown encoding or unreadable version.
    """
    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a bioreps file")
    try:
        h5 = h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
    except OSError as err:
        raise SchemaError(f"{path}: not a readable HDF5 file (truncated or corrupt?): "
                          f"{err}") from err
    try:
        return BiorepsFile(path, h5)
    except SchemaError:
        h5.close()
        raise
    except (OSError, RuntimeError, KeyError) as err:
        h5.close()
        raise SchemaError(f"{path}: not a readable HDF5 file (truncated or corrupt?): "
                          f"{err}") from err
    except BaseException:
        h5.close()
        raise
