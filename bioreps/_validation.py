"""Input checks shared by the public API: clear errors that name the argument and the fault."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_array", "check_labels", "check_random_state", "check_int", "check_float", "check_layer_splits", "plain"]


def plain(value):
    """``value`` with numpy scalars (and arrays, tuples, lists of them) as plain Python values, for
    error messages: ``repr(np.int64(3))`` is ``'np.int64(3)'``, ``repr(plain(np.int64(3)))`` is ``'3'``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def check_array(X, *, name="X", ndim=2, dtype=np.float32, allow_empty=False, finite=True,
                unit_interval=False, copy=False):
    """Return ``X`` as a C-contiguous array of ``dtype`` after checking it.

    Raises ``TypeError`` for non-numeric input and ``ValueError`` (naming ``name``) for the wrong
    number of dimensions, an empty array, NaN/inf (the first offending row is named) or, with
    ``unit_interval``, values outside [0, 1].
    """
    arr = np.asarray(X)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if copy and np.shares_memory(arr, X):
        arr = arr.copy()
    if finite and np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)) if arr.ndim else [0]
        raise ValueError(f"{name} contains NaN or inf (rows {plain(bad[:10])}"
                         f"{' ...' if len(bad) > 10 else ''}; {len(bad)} rows in all)")
    if unit_interval and arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1]; found values in [{arr.min():g}, {arr.max():g}]")
    return arr


def check_labels(y, *, n=None, n_classes=None, name="y"):
    """Integer class labels as int64 of shape (n,), each in ``0 .. n_classes - 1``."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} labels but X has {n} rows")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds negative labels (min {arr.min()})")
    if n_classes is not None and arr.size and arr.max() >= n_classes:
        raise ValueError(f"{name} holds label {arr.max()} outside 0..{n_classes - 1}")
    return arr


def check_random_state(seed, *, name="random_state") -> np.random.Generator:
    """A NumPy ``Generator`` from ``None``, an int, a SeedSequence or a Generator; errors name
    the argument ``name``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, np.integer, np.random.SeedSequence)):
        if isinstance(seed, (int, np.integer)) and seed < 0:
            raise ValueError(f"{name} must be a non-negative int, got {plain(seed)}")
        return np.random.default_rng(seed)
    raise TypeError(f"{name} must be None, an int, a SeedSequence or a numpy Generator, "
                    f"got {type(seed).__name__}")


def check_int(value, name, minimum=1) -> int:
    """``value`` as an int: ``TypeError`` unless it is an integer (bools refused), ``ValueError``
    below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(value, name, minimum=0.0, strict=False) -> float:
    """``value`` as a finite float ``>= minimum`` (``> minimum`` with ``strict``): ``TypeError``
    unless it is a real number (bools refused), ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum:g}, "
                         f"got {value}")
    return value


def check_layer_splits(layer_splits, splits):
    """``export(..., layer_splits=)`` of a multi-layer model: None (every split gets every layer)
    or the split names (a str or a sequence) among ``splits``, as a list."""
    if layer_splits is None:
        return None
    layer_splits = [layer_splits] if isinstance(layer_splits, str) else list(layer_splits)
    unknown = sorted(set(layer_splits) - set(splits))
    if unknown:
        raise ValueError(f"layer_splits names splits not exported: {unknown} (splits: {sorted(splits)})")
    return layer_splits
