"""Summaries across seeds: the mean of a metric and its Student-t confidence interval.

A study trains each model with several seeds; ``results.json`` reports, per model and metric,
:func:`mean_ci` of the per-seed values::

    >>> mean_ci([1.0, 2.0, 3.0])        # doctest: +ELLIPSIS
    {'mean': 2.0, 'ci_low': -0.484..., 'ci_high': 4.484..., 'n': 3, 'std': 1.0, 'confidence': 0.95, 'method': 't'}

The interval is ``mean +- t_{(1+c)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard
deviation (``ddof=1``): seeds are few, so the t quantile (4.30 for 3 seeds at 95%), not the normal
one (1.96), sets the width. One seed gives no spread: the interval is ``[mean, mean]``, ``std`` is
0.0 and a ``note`` says so, rather than an infinite or NaN interval.

:func:`diff_ci` compares two models: the difference of their means across seeds with Welch's
two-sample t interval, and whether that interval decides the sign of the difference::

    >>> d = diff_ci([2.0, 2.2, 2.1], [1.0, 1.1, 1.2])
    >>> round(d["diff"], 3), d["decided"]
    (1.0, True)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["diff_ci", "mean_ci"]


def mean_ci(values, confidence: float = 0.95) -> dict:
    """Mean of ``values`` with its two-sided Student-t confidence interval.

    Parameters
    ----------
    values : sequence of real numbers (one per seed); at least one, none NaN or infinite.
    confidence : the interval's coverage, strictly between 0 and 1 (default 0.95).

    Returns
    -------
    dict with ``mean``, ``ci_low``, ``ci_high``, ``n``, ``std`` (sample standard deviation,
    ``ddof=1``; 0.0 when ``n == 1``), ``confidence`` and ``method="t"``; when ``n == 1`` also
    ``note`` (the interval is the single value).

    Raises
    ------
    ValueError naming the fault: no values, NaN or infinite values (with their positions), a
    confidence outside (0, 1), values that are not one-dimensional.
    TypeError for non-numeric values.
    """
    from scipy import stats

    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.integer, np.floating)):
        raise TypeError(f"confidence must be a number in (0, 1), got {confidence!r}")
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    arr = np.asarray(values)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"mean_ci needs numeric values, got {values!r}")
    if arr.ndim != 1:
        raise ValueError(f"mean_ci needs a one-dimensional sequence of values, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("mean_ci needs at least one value, got none")
    arr = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        kind = "NaN" if np.isnan(arr[bad[0]]) else "infinite"
        raise ValueError(f"mean_ci refuses non-finite values: value {bad[0]} is {kind} "
                         f"(non-finite at positions {bad.tolist()} of {arr.tolist()})")
    n = int(arr.size)
    mean = float(arr.mean())
    out = {"mean": mean, "ci_low": mean, "ci_high": mean, "n": n, "std": 0.0,
           "confidence": confidence, "method": "t"}
    if n == 1:
        out["note"] = "one value: no spread across seeds, the interval is the value itself"
        return out
    std = float(arr.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * std / math.sqrt(n)
    out.update(ci_low=mean - half, ci_high=mean + half, std=std)
    return out


def diff_ci(a, b, confidence: float = 0.95) -> dict:
    """``mean(a) - mean(b)`` with Welch's two-sided t confidence interval (unequal variances;
    Welch-Satterthwaite degrees of freedom), for two models' per-seed values.

    Returns
    -------
    dict with ``diff``, ``ci_low``, ``ci_high``, ``n_a``, ``n_b``, ``df``, ``confidence``,
    ``method="welch"`` and ``decided``: True when the interval excludes 0 (the difference's sign
    is settled at this confidence), False when it contains 0, None when either side has one value
    (no spread to judge by; ``note`` says so). Two sides without any spread give the point
    interval ``[diff, diff]`` (decided when ``diff != 0``).

    Raises as :func:`mean_ci` for each side.
    """
    from scipy import stats

    sa, sb = mean_ci(a, confidence), mean_ci(b, confidence)
    diff = sa["mean"] - sb["mean"]
    out = {"diff": diff, "ci_low": diff, "ci_high": diff, "n_a": sa["n"], "n_b": sb["n"], "df": None,
           "confidence": float(confidence), "method": "welch", "decided": None}
    if sa["n"] < 2 or sb["n"] < 2:
        out["note"] = "one value on a side: no spread across seeds to judge the difference by"
        return out
    va, vb = sa["std"] ** 2 / sa["n"], sb["std"] ** 2 / sb["n"]
    se = math.sqrt(va + vb)
    if se == 0.0:
        out["decided"] = diff != 0.0
        return out
    df = (va + vb) ** 2 / (va ** 2 / (sa["n"] - 1) + vb ** 2 / (sb["n"] - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=df)) * se
    out.update(ci_low=diff - half, ci_high=diff + half, df=float(df), decided=bool(diff - half > 0 or diff + half < 0))
    return out
