"""Input coercion shared by the analyses.

Every analysis takes its activation matrices in any of these forms:

- a NumPy array (or anything ``np.asarray`` accepts) of shape ``(n_samples, n_units)``;
- a torch tensor (detached and moved to the CPU; torch is never imported here);
- a :class:`bioreps.io.Representation` (read lazily, block by block where the analysis can);
- a :class:`bioreps.io.BiorepsFile`, or a path to a bioreps file, together with ``split=``.

:func:`open_rows` gives one uniform, lazy view (:class:`Rows`) over all of them and closes a file
it opened itself. Non-finite values are refused with an error that names the argument and the
absolute row indices.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["Rows", "open_rows", "as_matrix", "as_2d", "labels_of", "check_finite_block", "is_torch_tensor",
           "torch_to_numpy", "DEFAULT_BLOCK_BYTES"]

#: Target size (float64 bytes) of the row blocks that the blocked algorithms move at a time.
DEFAULT_BLOCK_BYTES = 16 << 20


def is_torch_tensor(obj) -> bool:
    """Whether ``obj`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def torch_to_numpy(obj) -> np.ndarray:
    """A tensor's values as a NumPy array (detached, on the CPU)."""
    return obj.detach().cpu().numpy()


def check_finite_block(block: np.ndarray, name: str, offset: int = 0) -> None:
    """Raise ``ValueError`` naming ``name`` and the absolute rows when ``block`` holds NaN/inf."""
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        bad = np.flatnonzero(~np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)) + offset
        raise ValueError(f"{name} contains NaN or inf (rows {bad[:10].tolist()}"
                         f"{' ...' if len(bad) > 10 else ''}; {len(bad)} rows in this block)")


def as_2d(arr, name: str, dtype) -> np.ndarray:
    """``arr`` as a finite, real, non-empty C-contiguous 2-D array of ``dtype``; errors name ``name``."""
    arr = np.asarray(arr)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (n_samples, n_units), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    check_finite_block(arr, name)
    return arr


class Rows:
    """A read-only, possibly lazy, ``(n_samples, n_units)`` matrix.

    Attributes
    ----------
    name : str
        The argument name used in error messages.
    shape : tuple of int
    labels : ndarray of int64 or None
        The stored labels of a :class:`bioreps.io.Representation`, else ``None``.
    """

    def __init__(self, name: str, array: np.ndarray | None = None, rep=None):
        self.name = name
        self._array = array
        self._rep = rep
        if rep is not None:
            self.shape = (int(rep.n_samples), int(rep.n_units))
            if self.shape[0] == 0 or self.shape[1] == 0:
                raise ValueError(f"{name} is empty (shape {self.shape})")
        else:
            self.shape = array.shape

    @property
    def n_samples(self) -> int:
        return self.shape[0]

    @property
    def n_units(self) -> int:
        return self.shape[1]

    @property
    def lazy(self) -> bool:
        """Whether rows are read from disk on demand."""
        return self._rep is not None

    @property
    def labels(self):
        return None if self._rep is None else self._rep.labels

    def default_block_rows(self) -> int:
        return max(1, DEFAULT_BLOCK_BYTES // (8 * self.n_units))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as float64 (checked finite)."""
        if self._rep is None:
            return self._array[start:stop]
        block = np.asarray(self._rep.read(start, stop), dtype=np.float64)
        check_finite_block(block, self.name, start)
        return block

    def iter_blocks(self, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` float64 blocks covering every row once, in order."""
        if block_rows is None:
            block_rows = self.default_block_rows()
        if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)):
            raise TypeError(f"block_rows must be an int, got {type(block_rows).__name__}")
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        for start in range(0, self.n_samples, int(block_rows)):
            yield start, self.read(start, min(start + int(block_rows), self.n_samples))

    def to_numpy(self) -> np.ndarray:
        """The whole matrix in memory, float64."""
        if self._rep is None:
            return self._array
        return self.read(0, self.n_samples)


def _is_representation(obj) -> bool:
    from ..io import Representation

    return isinstance(obj, Representation)


def _is_bioreps_file(obj) -> bool:
    from ..io import BiorepsFile

    return isinstance(obj, BiorepsFile)


def _pick_split(f, split, name):
    reps = f.representations
    if split is None:
        if len(reps) == 1:
            return next(iter(reps.values()))
        raise ValueError(f"{name} is a bioreps file with representations {sorted(reps)}; "
                         f"pass split= to choose one")
    if split not in reps:
        raise KeyError(f"{name} has no representation {split!r}; it has {sorted(reps)}")
    return reps[split]


@contextmanager
def open_rows(X, *, name: str = "X", split: str | None = None):
    """Context manager yielding a :class:`Rows` view of ``X`` (see the module docstring).

    A path is opened with :func:`bioreps.io.load` and closed on exit; a Representation or
    BiorepsFile passed in stays open.
    """
    if isinstance(X, Rows):
        yield X
        return
    if _is_representation(X):
        yield Rows(name, rep=X)
        return
    if _is_bioreps_file(X):
        yield Rows(name, rep=_pick_split(X, split, name))
        return
    if isinstance(X, (str, os.PathLike)):
        from ..io import load

        f = load(X)
        try:
            yield Rows(name, rep=_pick_split(f, split, name))
        finally:
            f.close()
        return
    if split is not None:
        raise TypeError(f"split= applies to a bioreps file or path, but {name} is "
                        f"{type(X).__name__}")
    if is_torch_tensor(X):
        X = torch_to_numpy(X)
    yield Rows(name, array=as_2d(X, name, np.float64))


def as_matrix(X, *, name: str = "X", split: str | None = None, dtype=np.float64) -> np.ndarray:
    """``X`` (any accepted form) as an in-memory, finite, C-contiguous 2-D array of ``dtype``."""
    with open_rows(X, name=name, split=split) as rows:
        out = rows.to_numpy()
    return np.ascontiguousarray(out, dtype=dtype)


def labels_of(y, stored, *, n: int, name: str = "y") -> np.ndarray:
    """Integer labels from ``y``, or ``stored`` (labels kept with the data) when ``y`` is None."""
    from .._validation import check_labels

    if y is None:
        if stored is None:
            raise ValueError(f"{name} is required: the data carry no stored labels")
        y = stored
    if is_torch_tensor(y):
        y = torch_to_numpy(y)
    return check_labels(y, n=n, name=name)
