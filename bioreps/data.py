"""Datasets: validated readers, a registry of image benchmarks, and synthetic generators.

Known datasets (:data:`DATASETS`): ``"fashion-mnist"``, ``"mnist"`` (IDX files) and
``"cifar10"`` (the pickled "python version" batches). :func:`load` returns ``(X, y)`` with
``X`` float32 in [0, 1] (pixel / 255), one row per image, and ``y`` int64::

    from bioreps import data
    X, y = data.load("fashion-mnist", "test")      # (10000, 784) float32, (10000,) int64

Where the files are looked for
------------------------------
An explicit ``data_dir`` given to :func:`load` or :func:`fingerprint` (the runner's ``[data]
data_dir``) is the only place looked in: ``data_dir`` itself, then ``data_dir/<name>``. When
neither holds every file of the split, :class:`DatasetNotFoundError` names both folders and
the missing files; nothing else is searched and nothing is downloaded (a mistyped or
incomplete folder must not silently fall back to another copy).

Without ``data_dir`` (and in :func:`locate`, :func:`info` and ``bioreps datasets --data-dir``,
where it is a hint searched first), these folders are tried in order; the first one that
holds *every* file the split needs wins (an IDX file may be gzip-compressed, ``*.gz``, or not):

1. the ``data_dir`` argument, then ``data_dir/<name>``;
2. ``$BIOREPS_DATA``, then ``$BIOREPS_DATA/<name>`` (several folders may be given, separated by
   ``os.pathsep``);
3. the user cache ``$XDG_CACHE_HOME/bioreps/<name>`` (default ``~/.cache/bioreps/<name>``);
4. the system folders ``<root>/<name>`` for each root in :data:`SYSTEM_DATA_DIRS`
   (``/usr/share/datasets``, where Debian's ``dataset-fashion-mnist`` package installs).

If none has them, the files are downloaded into the user cache: each file goes to a temporary
file in the cache folder, its SHA-256 is checked against the official one, and only then is it
renamed into place (mirrors are tried in order; a checksum mismatch discards the file). With
``download=False`` or ``BIOREPS_OFFLINE=1``, or when the network fails,
:class:`DatasetNotFoundError` lists every folder searched and how to get the files.

Checksums
---------
The official SHA-256 is checked only for files *we* download. Files found on disk are checked
structurally (IDX magic, header, payload length, shapes, label range; CIFAR batch layout) but
not by hash: Debian's ``dataset-fashion-mnist`` ships the four Fashion-MNIST files recompressed,
so their ``.gz`` hashes differ from the official downloads although the decoded content is the
same. :func:`fingerprint` records the hashes of the files actually used, for provenance.

IDX format
----------
A 4-byte magic number (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the C-ordered big-endian payload. :func:`read_idx` checks all of it
and raises :class:`DataError` naming the file and the fault; :func:`write_idx` writes it.

CIFAR-10 pickles are read with a restricted unpickler that only resolves the few NumPy globals
an array needs, so a tampered batch cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from . import _files
from ._validation import check_float, check_int, check_random_state
from ._version import __version__

__all__ = [
    "DATASETS",
    "SPLITS",
    "SYSTEM_DATA_DIRS",
    "DataError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "Location",
    "cache_dir",
    "fingerprint",
    "idx_header",
    "info",
    "load",
    "locate",
    "make_classes",
    "make_powerlaw",
    "read_idx",
    "search_paths",
    "spec",
    "write_idx",
]

SPLITS = ("train", "test")

#: Roots searched last, as ``<root>/<name>``. A module-level list so tests (and unusual
#: installations) can change it.
SYSTEM_DATA_DIRS: list[str] = ["/usr/share/datasets"]

#: Seconds before a stalled download connection is given up.
DOWNLOAD_TIMEOUT = 60.0

_TRUE = ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class DataError(ValueError):
    """A data file is malformed (or a download failed its checksum).

    The message names the file and the fault; ``path`` holds the file when there is one.
    """

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = None if path is None else str(path)


class DatasetNotFoundError(DataError, FileNotFoundError):
    """No folder holds the dataset and it could not be downloaded.

    The message lists every folder searched and how to get the files. It is a
    :class:`DataError` and a :class:`FileNotFoundError`, so either ``except`` catches it.
    """

    def __init__(self, message, path=None):
        DataError.__init__(self, message, path)

    def __str__(self):
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------

_IDX_CODES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_TYPES = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code for code, dt in _IDX_CODES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _is_gzip(head: bytes) -> bool:
    return head[:2] == _GZIP_MAGIC


def _gunzip(raw, path) -> bytes:
    """Decompress a whole gzip file (several members allowed), raising DataError on any fault."""
    parts = []
    data = raw
    while True:
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = dec.decompress(data)
            tail = dec.flush()
        except zlib.error as exc:
            raise DataError(f"{path}: corrupt gzip stream ({exc})", path) from None
        parts.append(out)
        if tail:
            parts.append(tail)
        if not dec.eof:
            raise DataError(f"{path}: truncated gzip stream (the file ends before the gzip "
                            f"end-of-stream marker; {len(raw)} bytes on disk)", path)
        data = dec.unused_data
        if not data or not data.strip(b"\0"):  # gzip allows zero padding after the last member
            break
        if not _is_gzip(data):
            raise DataError(f"{path}: {len(data)} bytes of trailing garbage after the gzip stream", path)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _parse_idx_header(buf, path):
    """``(dtype, shape, header_bytes)`` from the start of an IDX file; ``buf`` may be a prefix."""
    if len(buf) < 4:
        raise DataError(f"{path}: truncated header: an IDX file starts with a 4-byte magic number, "
                        f"found {len(buf)} bytes", path)
    b0, b1, code, ndim = buf[0], buf[1], buf[2], buf[3]
    if b0 != 0 or b1 != 0:
        raise DataError(f"{path}: not an IDX file: bad magic number 0x{bytes(buf[:4]).hex()} "
                        "(the first two bytes must be zero)", path)
    if code not in _IDX_CODES:
        known = ", ".join(f"0x{c:02X} ({dt.name})" for c, dt in _IDX_CODES.items())
        raise DataError(f"{path}: not an IDX file: unknown data type code 0x{code:02X} in the magic "
                        f"number (known: {known})", path)
    if ndim < 1:
        raise DataError(f"{path}: bad IDX magic number: 0 dimensions", path)
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path}: truncated header: {ndim} dimensions need a {header}-byte header, "
                        f"found {len(buf)} bytes", path)
    shape = tuple(int(d) for d in np.frombuffer(bytes(buf[4:header]), dtype=">u4"))
    return _IDX_CODES[code], shape, header


def _check_ndim(shape, expect_ndim, path):
    if expect_ndim is not None and len(shape) != int(expect_ndim):
        raise DataError(f"{path}: wrong dimensions: expected a {int(expect_ndim)}-dimensional IDX array, "
                        f"found {len(shape)} dimensions (shape {shape})", path)


def _read_idx_raw(path, expect_ndim=None):
    """The array as stored (big-endian dtype, possibly read-only), fully validated."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an IDX file", path) from None
    buf = _gunzip(raw, path) if _is_gzip(raw) else raw
    dtype, shape, header = _parse_idx_header(buf, path)
    _check_ndim(shape, expect_ndim, path)
    expected = math.prod(shape) * dtype.itemsize
    found = len(buf) - header
    if found < expected:
        raise DataError(f"{path}: truncated: expected {expected} bytes of payload, found {found} "
                        f"(shape {shape}, {dtype.name})", path)
    if found > expected:
        raise DataError(f"{path}: trailing data: expected {expected} bytes of payload, found {found} "
                        f"({found - expected} extra bytes after the shape {shape} array)", path)
    return np.frombuffer(buf, dtype=dtype, count=math.prod(shape), offset=header).reshape(shape)


def read_idx(path, *, expect_ndim=None) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a NumPy array, validating it.

    Parameters
    ----------
    path : str or path-like
        The file. Compression is detected from the content (gzip magic bytes ``1f 8b``), not
        from the name.
    expect_ndim : int, optional
        Number of dimensions the array must have (3 for images, 1 for labels).

    Returns
    -------
    ndarray
        Writable, C-contiguous, native byte order; dtype one of uint8, int8, int16, int32,
        float32, float64 as given by the file's type code.

    Raises
    ------
    DataError
        Corrupt or truncated gzip stream, bad magic number, unknown type code, truncated header,
        payload shorter or longer than the header announces, or the wrong number of dimensions.
        The message names the file.
    """
    arr = _read_idx_raw(path, expect_ndim=expect_ndim)
    return np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C", copy=True)


def idx_header(path) -> tuple[np.dtype, tuple[int, ...]]:
    """``(dtype, shape)`` of an IDX file from its header alone (cheap: nothing else is decoded).

    For a raw file the file size is also checked against the header; a gzip file's payload is
    only checked by :func:`read_idx`.

    Raises
    ------
    DataError
        If the header is missing, truncated or malformed.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(4096)
        if not _is_gzip(head):
            dtype, shape, header = _parse_idx_header(head, path)
            size = os.fstat(fh.fileno()).st_size
            expected = math.prod(shape) * dtype.itemsize
            if size - header != expected:
                kind = "truncated" if size - header < expected else "trailing data"
                raise DataError(f"{path}: {kind}: expected {expected} bytes of payload, found "
                                f"{size - header}", path)
            return dtype.newbyteorder("="), shape
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = b""
        chunk = head
        try:
            while True:
                out += dec.decompress(chunk, 1028 - len(out))
                if len(out) >= 4 and len(out) >= 4 + 4 * out[3]:
                    break
                if dec.unconsumed_tail:
                    chunk = dec.unconsumed_tail
                    continue
                if dec.eof:
                    break
                chunk = fh.read(65536)
                if not chunk:
                    break
        except zlib.error as exc:
            raise DataError(f"{path}: corrupt gzip stream ({exc})", path) from None
    dtype, shape, _ = _parse_idx_header(out, path)
    return dtype.newbyteorder("="), shape


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends in ``.gz``.

    The file is written to a temporary name in the same folder and renamed into place.

    Parameters
    ----------
    path : str or path-like
    array : array_like
        At least 1-D, of dtype uint8, int8, int16, int32, float32 or float64.

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim < 1 or arr.ndim > 255:
        raise ValueError(f"an IDX array needs 1 to 255 dimensions, got shape {arr.shape}")
    native = arr.dtype.newbyteorder("=") if arr.dtype.itemsize > 1 else arr.dtype
    code = _IDX_TYPES.get(native)
    if code is None:
        names = ", ".join(dt.name for dt in _IDX_TYPES)
        raise ValueError(f"IDX cannot store dtype {arr.dtype}; use one of {names}")
    if any(d >= 2**32 for d in arr.shape):
        raise ValueError(f"IDX dimensions must be < 2**32, got shape {arr.shape}")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(arr, dtype=_IDX_CODES[code]).tobytes()
    with _files.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        if path.suffix == ".gz":
            import gzip

            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
                gz.write(header)
                gz.write(payload)
        else:
            fh.write(header)
            fh.write(payload)
    return path


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """Everything known about one dataset: its files, where to get them, what they hold.

    Attributes
    ----------
    name : str
        Canonical name (the key in :data:`DATASETS` and the folder name searched).
    title : str
        Human-readable name.
    format : {"idx", "cifar10"}
        How the files are stored.
    files : Mapping[str, tuple[str, ...]]
        Per split, the files it needs: ``(images, labels)`` IDX names for ``"idx"``; the batch
        names for ``"cifar10"``.
    mirrors : tuple[str, ...]
        Base URLs tried in order; a file's URL is the base followed by its download name.
    sha256 : Mapping[str, str]
        SHA-256 of each official download, checked on download only.
    image_shape : tuple[int, ...]
        Shape of one image (``(28, 28)``; ``(3, 32, 32)`` channel-first for CIFAR).
    n_classes : int
    class_names : tuple[str, ...]
    n_samples : Mapping[str, int]
        Images per split in the official release.
    debian_package : str or None
        Debian/Ubuntu package installing the files under ``/usr/share/datasets/<name>``.
    archive : str or None
        For datasets downloaded as one archive (CIFAR): the archive's file name.
    archive_folder : str or None
        The folder inside the archive (and, extracted, on disk) holding the files.
    homepage : str
    """

    name: str
    title: str
    format: str
    files: Mapping[str, tuple[str, ...]]
    mirrors: tuple[str, ...]
    sha256: Mapping[str, str]
    image_shape: tuple[int, ...]
    n_classes: int
    class_names: tuple[str, ...]
    n_samples: Mapping[str, int]
    debian_package: str | None = None
    archive: str | None = None
    archive_folder: str | None = None
    homepage: str = ""

    @property
    def n_features(self) -> int:
        """Pixels per image once flattened."""
        return math.prod(self.image_shape)

    def downloads(self, split) -> tuple[str, ...]:
        """Names of the files to download for ``split``."""
        return (self.archive,) if self.archive else tuple(self.files[split])


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        format="idx",
        files=_MNIST_FILES,
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        sha256={
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        image_shape=(28, 28),
        n_classes=10,
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
        n_samples={"train": 60000, "test": 10000},
        debian_package="dataset-fashion-mnist",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST",
        format="idx",
        files=_MNIST_FILES,
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        sha256={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        image_shape=(28, 28),
        n_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        n_samples={"train": 60000, "test": 10000},
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        title="CIFAR-10",
        format="cifar10",
        files={
            "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
            "test": ("test_batch",),
        },
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        sha256={"cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
        image_shape=(3, 32, 32),
        n_classes=10,
        class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                     "ship", "truck"),
        n_samples={"train": 50000, "test": 10000},
        archive="cifar-10-python.tar.gz",
        archive_folder="cifar-10-batches-py",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


def spec(name) -> DatasetSpec:
    """The :class:`DatasetSpec` of a known dataset (shape, ``n_classes``, files): the one source
    of a dataset's facts. ``name`` is case-insensitive; ``-``, ``_`` and spaces are ignored."""
    return _get_spec(name)


def _get_spec(name) -> DatasetSpec:
    """The spec for ``name``: case-insensitive; ``-``, ``_`` and spaces are ignored."""
    if isinstance(name, DatasetSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = _squash(name)
    for canonical, spec in DATASETS.items():
        if _squash(canonical) == key:
            return spec
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


def _check_split(spec: DatasetSpec, split) -> str:
    key = str(split).strip().lower() if isinstance(split, str) else split
    if key not in spec.files:
        raise ValueError(f"unknown split {split!r} for dataset {spec.name!r}; "
                         f"valid splits: {', '.join(spec.files)}")
    return key


# --------------------------------------------------------------------------------------------
# Finding files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where a dataset's files were found.

    Attributes
    ----------
    name : str
        Canonical dataset name.
    path : Path
        The folder searched that holds the files.
    source : str
        Which search step found it: ``"data_dir"``, ``"$BIOREPS_DATA"``, ``"user cache"`` or
        ``"system"``.
    files : Mapping[str, tuple[Path, ...]]
        For each split present, the files it is read from.
    """

    name: str
    path: Path
    source: str
    files: Mapping[str, tuple[Path, ...]]

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits whose files are all present."""
        return tuple(self.files)


def cache_dir(name=None) -> Path:
    """The user cache, ``$XDG_CACHE_HOME/bioreps`` (default ``~/.cache/bioreps``), or its
    subfolder for dataset ``name``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    root = root / "bioreps"
    return root if name is None else root / _get_spec(name).name


def search_paths(name, data_dir=None) -> list[tuple[str, Path]]:
    """The folders searched for dataset ``name``, in order, as ``(source, path)`` pairs."""
    spec = _get_spec(name)
    out = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        out += [("data_dir", d), ("data_dir", d / spec.name)]
    for entry in os.environ.get("BIOREPS_DATA", "").split(os.pathsep):
        if entry.strip():
            d = Path(entry.strip()).expanduser()
            out += [("$BIOREPS_DATA", d), ("$BIOREPS_DATA", d / spec.name)]
    out.append(("user cache", cache_dir() / spec.name))
    out += [("system", Path(root) / spec.name) for root in SYSTEM_DATA_DIRS]
    seen, unique = set(), []
    for source, path in out:
        if path not in seen:
            seen.add(path)
            unique.append((source, path))
    return unique


def _split_files(spec: DatasetSpec, folder: Path, split: str) -> tuple[Path, ...] | None:
    """The files of ``split`` in ``folder``, or None unless all of them are there."""
    names = spec.files[split]
    if spec.format == "idx":
        found = []
        for fname in names:
            plain = fname[:-3] if fname.endswith(".gz") else fname
            hit = next((folder / n for n in dict.fromkeys((fname, plain)) if (folder / n).is_file()), None)
            if hit is None:
                return None
            found.append(hit)
        return tuple(found)
    # cifar10: an extracted batch folder, the batches themselves, or the archive
    for sub in (folder / spec.archive_folder, folder):
        if all((sub / n).is_file() for n in names):
            return tuple(sub / n for n in names)
    if spec.archive and (folder / spec.archive).is_file():
        return (folder / spec.archive,)
    return None


def _missing(spec: DatasetSpec, folder: Path, split: str) -> list[str]:
    """Names of the files of ``split`` absent from ``folder`` (for messages)."""
    if spec.format != "idx":
        return [] if _split_files(spec, folder, split) else [f"{spec.archive} or {spec.archive_folder}/"]
    return [n for n in spec.files[split]
            if not (folder / n).is_file() and not (folder / n.removesuffix(".gz")).is_file()]


def _location_in(spec, source, folder) -> Location | None:
    if not folder.is_dir():
        return None
    files = {s: f for s in spec.files if (f := _split_files(spec, folder, s)) is not None}
    return Location(spec.name, folder, source, files) if files else None


def locate(name, data_dir=None, *, split=None) -> Location | None:
    """Find a dataset on disk, without downloading.

    Parameters
    ----------
    name : str
        Dataset name (see :data:`DATASETS`).
    data_dir : str or path-like, optional
        Folder searched first (itself and ``data_dir/<name>``).
    split : {"train", "test"}, optional
        Only accept a folder holding all files of this split. By default, the first folder
        holding any complete split is returned.

    Returns
    -------
    Location or None
    """
    spec = _get_spec(name)
    if split is not None:
        split = _check_split(spec, split)
    for source, folder in search_paths(spec, data_dir):
        loc = _location_in(spec, source, folder)
        if loc is not None and (split is None or split in loc.files):
            return loc
    return None


def _locate_in_data_dir(spec: DatasetSpec, data_dir, split: str) -> Location:
    """The ``split`` of ``spec`` in an explicit ``data_dir`` (itself or ``data_dir/<name>``),
    else :class:`DatasetNotFoundError` naming each folder and what it lacks."""
    d = Path(data_dir).expanduser()
    lines = []
    for folder in dict.fromkeys((d, d / spec.name)):
        loc = _location_in(spec, "data_dir", folder)
        if loc is not None and split in loc.files:
            return loc
        state = ("no such folder" if not folder.is_dir()
                 else "missing " + ", ".join(_missing(spec, folder, split)))
        lines.append(f"  - {folder}: {state}")
    message = (f"data_dir {str(d)!r} does not hold dataset {spec.name!r} (split {split!r}):\n"
               + "\n".join(lines)
               + "\nAn explicit data_dir is the only place looked in (nothing is downloaded); fix it, "
                 "or leave data_dir out to search $BIOREPS_DATA, the user cache and the system folders.")
    raise DatasetNotFoundError(message, d)


def _how_to_get(spec: DatasetSpec, *, short=False) -> list[str]:
    where = f"$BIOREPS_DATA/{spec.name}"
    files = (spec.archive,) if spec.archive else tuple(dict.fromkeys(f for fs in spec.files.values() for f in fs))
    what = f"the {len(files)} files" if len(files) > 1 else files[0]
    lines = []
    if spec.debian_package:
        lines.append(f"on Debian/Ubuntu: sudo apt-get install {spec.debian_package}")
    if short:
        lines.append("or load it once with network access" if lines else "load it once with network access")
        lines.append(f"or put {what} in {where}")
        return lines
    lines.append(f"run once with network access: it is downloaded to {cache_dir() / spec.name}"
                 + (f" (from {spec.mirrors[0]})" if spec.mirrors else ""))
    if spec.archive:
        lines.append(f"or put {spec.archive} (or its extracted {spec.archive_folder}/ folder) in {where} "
                     "(or in a folder passed as data_dir=)")
    else:
        lines.append(f"or put {what} ({', '.join(files)}) in {where} (or in a folder passed as data_dir=)")
    return lines


def _not_found(spec, split, data_dir, reason) -> DatasetNotFoundError:
    needed = spec.files[split]
    if spec.format == "idx":
        wanted = ", ".join(needed) + " (or without .gz)"
    else:
        wanted = (f"{spec.archive}, or {spec.archive_folder}/ holding " + ", ".join(needed))
    lines = [f"dataset {spec.name!r} (split {split!r}) not found; looked for {wanted} in:"]
    paths = search_paths(spec, data_dir)
    if "BIOREPS_DATA" not in os.environ or not os.environ["BIOREPS_DATA"].strip():
        paths.insert(next(i for i, (s, _) in enumerate(paths) if s == "user cache"),
                     ("$BIOREPS_DATA", None))
    for source, folder in paths:
        if folder is None:
            lines.append("  - $BIOREPS_DATA is not set")
            continue
        state = "no such folder" if not folder.is_dir() else "missing " + ", ".join(_missing(spec, folder, split))
        lines.append(f"  - {folder} ({source}: {state})")
    lines.append(reason)
    lines.append("To get it:")
    lines += [f"  - {line}" for line in _how_to_get(spec)]
    return DatasetNotFoundError("\n".join(lines))


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def _downloads_disabled(download) -> bool:
    return not download or os.environ.get("BIOREPS_OFFLINE", "").strip().lower() in _TRUE


class _NetworkFailure(Exception):
    pass


def _fetch_url(url, folder: Path, fname: str, progress) -> tuple[Path, str]:
    """Stream ``url`` into a temporary file in ``folder``; return ``(tmp path, sha256)``."""
    import urllib.request

    from ._progress import progress_bar  # network and tqdm modules load only when needed

    request = urllib.request.Request(url, headers={"User-Agent": f"bioreps/{__version__}"})
    _files.remove_stale_temps(folder, [fname])
    tmp = _files.temp_path(folder / fname, ".part")
    digest = hashlib.sha256()
    try:
        with open(tmp, "xb") as fh, urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as resp:
            headers = getattr(resp, "headers", None)
            length = headers.get("Content-Length") if headers is not None else None
            total = int(length) if length and str(length).isdigit() else None
            with progress_bar(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                              desc=fname, progress=progress) as bar:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except BaseException:
        _unlink(tmp)
        raise
    return tmp, digest.hexdigest()


def _download(spec: DatasetSpec, fname: str, folder: Path, progress) -> Path:
    """Download ``fname`` into ``folder`` from the first mirror that serves the right bytes."""
    import http.client

    expected = spec.sha256.get(fname)
    failures, mismatches = [], []
    for base in spec.mirrors:
        url = base if base.endswith(fname) else base.rstrip("/") + "/" + fname
        try:
            tmp, actual = _fetch_url(url, folder, fname, progress)
        except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, timeouts
            failures.append(f"{url}: {exc}")
            continue
        if expected is not None and actual != expected.lower():
            _unlink(tmp)
            mismatches.append(f"{url}: expected sha256 {expected}, got {actual}")
            continue
        try:
            return _files.commit(tmp, folder / fname)
        except BaseException:
            _unlink(tmp)
            raise
    if mismatches:
        raise DataError(f"checksum mismatch downloading {fname} for {spec.name!r} (the file was "
                        "discarded):\n  " + "\n  ".join(mismatches + failures), folder / fname)
    raise _NetworkFailure("\n".join(f"  {f}" for f in failures) or "  no mirrors known")


def _fetch(spec: DatasetSpec, split: str, data_dir, *, download, progress) -> Location:
    """Download the files of ``split`` into the user cache, or raise DatasetNotFoundError."""
    if _downloads_disabled(download):
        why = "download=False" if not download else "BIOREPS_OFFLINE is set"
        raise _not_found(spec, split, data_dir, f"Downloading is disabled ({why}).")
    folder = cache_dir() / spec.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _not_found(spec, split, data_dir, f"Cannot create the cache folder {folder}: {exc}") from None
    try:
        for fname in spec.downloads(split):
            if not (folder / fname).is_file():
                _download(spec, fname, folder, progress)
    except (_NetworkFailure, DataError) as exc:
        try:
            folder.rmdir()  # only if empty: do not leave an empty cache folder behind
        except OSError:
            pass
        if isinstance(exc, DataError):
            raise
        raise _not_found(spec, split, data_dir, f"Downloading failed:\n{exc}") from None
    loc = _location_in(spec, "user cache", folder)
    if loc is None or split not in loc.files:  # pragma: no cover - the files were just written
        raise _not_found(spec, split, data_dir, f"Downloaded files are missing from {folder}.")
    return loc


# --------------------------------------------------------------------------------------------
# Reading a split
# --------------------------------------------------------------------------------------------


def _to_unit_float(pixels: np.ndarray, out=None) -> np.ndarray:
    return np.divide(pixels, np.float32(255), out=out, dtype=np.float32)


def _load_idx(spec, files):
    img_path, lbl_path = files
    images = _read_idx_raw(img_path, expect_ndim=1 + len(spec.image_shape))
    if images.dtype != np.uint8:
        raise DataError(f"{img_path}: images must be uint8 (IDX type 0x08), found {images.dtype.name}", img_path)
    if images.shape[1:] != tuple(spec.image_shape):
        raise DataError(f"{img_path}: wrong image shape: expected (n, {', '.join(map(str, spec.image_shape))}) "
                        f"for {spec.name}, found {images.shape}", img_path)
    labels = _read_idx_raw(lbl_path, expect_ndim=1)
    _check_labels(labels, spec, lbl_path)
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"image/label count mismatch: {img_path} holds {images.shape[0]} images but "
                        f"{lbl_path} holds {labels.shape[0]} labels", img_path)
    X = _to_unit_float(images.reshape(images.shape[0], -1))
    return X, labels.astype(np.int64)


def _check_labels(labels, spec, where):
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, found {labels.dtype.name}", where)
    if labels.size and (labels.min() < 0 or labels.max() >= spec.n_classes):
        raise DataError(f"{where}: labels must lie in 0..{spec.n_classes - 1}, found "
                        f"{labels.min()}..{labels.max()}", where)


def _allowed_globals():
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    scalar = core.multiarray.scalar
    frombuffer = getattr(core.numeric, "_frombuffer", None)

    def latin1_encode(obj, encoding="latin1"):  # what Python 3 protocol-2 pickles use for bytes
        if str(encoding).lower().replace("-", "") not in ("latin1", "iso88591"):
            raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
        return obj.encode("latin1")

    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): latin1_encode,
    }
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = scalar
        if frombuffer is not None:
            allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the NumPy globals needed to rebuild arrays; anything else is refused."""

    _allowed = None

    def find_class(self, module, name):
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return _RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _unpickle_batch(blob: bytes, where):
    try:
        obj = _RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # UnpicklingError, EOFError, TypeError from bad reduce args, ...
        raise DataError(f"{where}: not a valid CIFAR batch pickle ({type(exc).__name__}: {exc})", where) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: a CIFAR batch must be a pickled dict, found {type(obj).__name__}", where)
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _check_cifar_batch(batch, spec, where):
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise DataError(f"{where}: CIFAR batch lacks the key(s) {', '.join(missing)} "
                        f"(keys: {', '.join(map(str, batch))})", where)
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != spec.n_features:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: CIFAR batch data must be a uint8 array of shape (n, {spec.n_features}), "
                        f"found {desc}", where)
    try:
        labels = np.asarray(batch["labels"])
    except Exception:
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DataError(f"{where}: CIFAR batch holds {data.shape[0]} images but labels of shape "
                        f"{labels.shape}", where)
    _check_labels(labels, spec, where)
    return data, labels.astype(np.int64)


def _cifar_blobs(spec, files, split) -> list[tuple[str, bytes]]:
    """``(where, pickled bytes)`` per batch of ``split``, from batch files or the archive."""
    import tarfile

    names = spec.files[split]
    if len(files) == 1 and files[0].name == spec.archive:
        archive = files[0]
        wanted = {f"{spec.archive_folder}/{n}": n for n in names}
        blobs = {}
        try:
            with tarfile.open(archive, mode="r|*") as tar:
                for member in tar:
                    key = str(PurePosixPath(member.name.removeprefix("./")))
                    if key not in wanted:
                        continue
                    if not member.isfile():
                        raise DataError(f"{archive}: {member.name} is not a regular file", archive)
                    blobs[wanted[key]] = tar.extractfile(member).read()
                    if len(blobs) == len(wanted):
                        break
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise DataError(f"{archive}: corrupt or truncated archive ({exc})", archive) from None
        lacking = [n for n in names if n not in blobs]
        if lacking:
            raise DataError(f"{archive}: the archive lacks {', '.join(f'{spec.archive_folder}/{n}' for n in lacking)}",
                            archive)
        return [(f"{archive}:{spec.archive_folder}/{n}", blobs[n]) for n in names]
    return [(str(p), p.read_bytes()) for p in files]


def _load_cifar(spec, files, split):
    batches = [_check_cifar_batch(_unpickle_batch(blob, where), spec, where)
               for where, blob in _cifar_blobs(spec, files, split)]
    n = sum(d.shape[0] for d, _ in batches)
    X = np.empty((n, spec.n_features), dtype=np.float32)
    start = 0
    for data, _ in batches:
        _to_unit_float(data, out=X[start:start + data.shape[0]])
        start += data.shape[0]
    y = np.concatenate([lab for _, lab in batches]) if batches else np.empty(0, np.int64)
    _COUNTS[_files_key(files) + (split,)] = n
    return X, y


def load(name, split="train", data_dir=None, *, flatten=True, download=True, progress=None):
    """Load one split of a known dataset as ``(X, y)``.

    Parameters
    ----------
    name : str or DatasetSpec
        ``"fashion-mnist"``, ``"mnist"`` or ``"cifar10"``; case-insensitive, ``_``/``-`` ignored
        (``"fashion_mnist"``, ``"FashionMNIST"``, ``"CIFAR-10"``). A :class:`DatasetSpec` of
        your own (an IDX dataset laid out like MNIST) is accepted too.
    split : {"train", "test"}
    data_dir : str or path-like, optional
        The folder holding the dataset (itself or ``data_dir/<name>``): the only place looked
        in, and an error (:class:`DatasetNotFoundError` naming the folder and the missing files)
        when it does not hold the split. Without it, the search order of the module docstring
        applies and missing files are downloaded.
    flatten : bool
        Return one row per image (default). With ``False``, ``X`` has the image shape:
        ``(n, 28, 28)`` or ``(n, 3, 32, 32)``.
    download : bool
        Download into the user cache when the files are nowhere on disk (also switched off by
        ``BIOREPS_OFFLINE=1``).
    progress : bool, optional
        Show a download progress bar (``None``: follow ``$BIOREPS_PROGRESS``).

    Returns
    -------
    X : ndarray of float32, shape (n, n_features) or (n, *image_shape)
        Pixels / 255, in [0, 1], C-contiguous. CIFAR pixels are channel-first, as in its files.
    y : ndarray of int64, shape (n,)
        Class labels in ``0 .. n_classes - 1``.

    Raises
    ------
    ValueError
        Unknown dataset name or split.
    DatasetNotFoundError
        The files are nowhere on disk and could not be downloaded, or not in ``data_dir``.
    DataError
        A file is malformed, or a download failed its checksum.
    """
    spec = _get_spec(name)
    split = _check_split(spec, split)
    if data_dir is not None:
        loc = _locate_in_data_dir(spec, data_dir, split)
    else:
        loc = locate(spec, None, split=split)
        if loc is None:
            loc = _fetch(spec, split, None, download=download, progress=progress)
    files = loc.files[split]
    if spec.format == "idx":
        X, y = _load_idx(spec, files)
    else:
        X, y = _load_cifar(spec, files, split)
    if not flatten:
        X = X.reshape((X.shape[0], *spec.image_shape))
    return X, y


# --------------------------------------------------------------------------------------------
# Inventory and provenance
# --------------------------------------------------------------------------------------------

_HASHES: dict[tuple, str] = {}
_COUNTS: dict[tuple, int] = {}


def _stat_key(path: Path) -> tuple:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def _files_key(files) -> tuple:
    return tuple(_stat_key(p) for p in files)


def _sha256(path: Path) -> str:
    key = _stat_key(path)
    digest = _HASHES.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
        digest = _HASHES[key] = h.hexdigest()
    return digest


def _count_idx(spec, files) -> int:
    img_path, lbl_path = files
    _, ishape = idx_header(img_path)
    _, lshape = idx_header(lbl_path)
    if ishape[0] != lshape[0]:
        raise DataError(f"image/label count mismatch: {img_path} holds {ishape[0]} images but "
                        f"{lbl_path} holds {lshape[0]} labels", img_path)
    return ishape[0]


def info(data_dir=None) -> list[dict]:
    """What is known and what is on disk, one dict per dataset in :data:`DATASETS`.

    Cheap: no file is decoded beyond IDX headers, nothing is downloaded.

    Returns
    -------
    list of dict
        Keys: ``name``, ``title``, ``found`` (bool), ``path`` (str or None), ``source`` (which
        search step found it), ``splits`` (``{split: n_samples}`` for the splits present; for
        CIFAR the official count, as batches are not opened), ``image_shape``, ``n_classes``,
        ``how_to_get`` (str, or None when every split is present) and ``error`` (a message when a
        header is malformed, else None).
    """
    rows = []
    for spec in DATASETS.values():
        loc = locate(spec, data_dir)
        splits, error = {}, None
        if loc is not None:
            for split, files in loc.files.items():
                try:
                    splits[split] = _count_idx(spec, files) if spec.format == "idx" else spec.n_samples[split]
                except (DataError, OSError) as exc:
                    error = str(exc)
        complete = loc is not None and set(loc.files) == set(spec.files)
        rows.append({
            "name": spec.name,
            "title": spec.title,
            "found": loc is not None,
            "path": None if loc is None else str(loc.path),
            "source": None if loc is None else loc.source,
            "splits": splits,
            "image_shape": tuple(spec.image_shape),
            "n_classes": spec.n_classes,
            "how_to_get": None if complete else "; ".join(_how_to_get(spec, short=True)),
            "error": error,
        })
    return rows


def fingerprint(name, split, data_dir=None) -> dict:
    """Provenance of one split: the files used and their SHA-256, as found on disk.

    Hashes are cached in-process by (path, mtime, size). Nothing is downloaded.

    Returns
    -------
    dict
        ``{"name", "split", "files": {file name: sha256}, "n_samples", "source"}``; file names
        are relative to ``source``, the folder the files were found in.

    Raises
    ------
    DatasetNotFoundError
        The split's files are nowhere on disk (or, with ``data_dir``, not in that folder: the
        same rule as :func:`load`).
    """
    spec = _get_spec(name)
    split = _check_split(spec, split)
    if data_dir is not None:
        loc = _locate_in_data_dir(spec, data_dir, split)
    else:
        loc = locate(spec, None, split=split)
    if loc is None:
        raise _not_found(spec, split, None, "fingerprint() does not download; load() the dataset first.")
    files = loc.files[split]
    hashes = {p.relative_to(loc.path).as_posix(): _sha256(p) for p in files}
    if spec.format == "idx":
        n = _count_idx(spec, files)
    else:
        key = _files_key(files) + (split,)
        n = _COUNTS.get(key)
        if n is None:
            n = sum(_check_cifar_batch(_unpickle_batch(blob, where), spec, where)[0].shape[0]
                    for where, blob in _cifar_blobs(spec, files, split))
            _COUNTS[key] = n
    return {"name": spec.name, "split": split, "files": hashes, "n_samples": int(n), "source": str(loc.path)}


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------



def make_classes(n_samples=1000, n_features=784, n_classes=10, *, noise=0.1, random_state=None):
    """Class-structured data in [0, 1]: a noisy copy of one of ``n_classes`` prototypes per row.

    Each class has a random prototype: sparse (most features near zero, a few near one) and
    smooth along the feature axis, rescaled to [0, 1], like a crude image. A sample is its
    class's prototype plus Gaussian noise of standard deviation ``noise``, clipped to [0, 1].
    Classes are balanced (counts differ by at most one) and the rows shuffled.

    Parameters
    ----------
    n_samples, n_features, n_classes : int
        All >= 1.
    noise : float
        Standard deviation of the additive noise, >= 0.
    random_state : int, numpy Generator or None
        The same int gives the same data.

    Returns
    -------
    X : ndarray of float32, shape (n_samples, n_features)
    y : ndarray of int64, shape (n_samples,)
    """
    n_samples = check_int(n_samples, "n_samples")
    n_features = check_int(n_features, "n_features")
    n_classes = check_int(n_classes, "n_classes")
    noise = check_float(noise, "noise")
    rng = check_random_state(random_state)

    raw = rng.random((n_classes, n_features)) ** 4  # mostly small, a few large: sparse
    kernel = (1.0, 2.0, 3.0, 2.0, 1.0)
    proto = sum(w * np.roll(raw, shift, axis=1) for w, shift in zip(kernel, range(-2, 3)))
    lo, hi = proto.min(axis=1, keepdims=True), proto.max(axis=1, keepdims=True)
    proto = np.where(hi > lo, (proto - lo) / np.where(hi > lo, hi - lo, 1.0), raw).astype(np.float32)

    y = rng.permutation(np.arange(n_samples) % n_classes).astype(np.int64)
    X = rng.standard_normal((n_samples, n_features), dtype=np.float32)
    X *= np.float32(noise)
    X += proto[y]
    np.clip(X, 0.0, 1.0, out=X)
    return X, y


def make_powerlaw(n_samples=1000, n_features=100, alpha=1.0, random_state=None):
    """Gaussian data whose covariance spectrum decays as a power law.

    The covariance is ``Q diag(lambda) Q^T`` with ``lambda_k = k ** -alpha`` (k = 1 ..
    n_features) and ``Q`` a uniformly random rotation, so the principal axes are not the
    coordinate axes. Useful for checking spectrum estimates.

    Parameters
    ----------
    n_samples, n_features : int
        Both >= 1.
    alpha : float
        Decay exponent, >= 0 (0 gives isotropic data).
    random_state : int, numpy Generator or None

    Returns
    -------
    X : ndarray of float64, shape (n_samples, n_features)
        Zero-mean in expectation.
    """
    n_samples = check_int(n_samples, "n_samples")
    n_features = check_int(n_features, "n_features")
    alpha = check_float(alpha, "alpha")
    rng = check_random_state(random_state)
    eigvals = np.arange(1, n_features + 1, dtype=np.float64) ** -alpha
    q, r = np.linalg.qr(rng.standard_normal((n_features, n_features)))
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # Haar-distributed rotation
    Z = rng.standard_normal((n_samples, n_features))
    return np.ascontiguousarray((Z * np.sqrt(eigvals)) @ q.T)

