"""Tolerances for float32 results that two routes compute in different orders.

A float32 matrix product is not a fixed function of its inputs: the BLAS (OpenBLAS, MKL,
Accelerate, torch's own kernels), its CPU kernel, its thread count and the number of rows in the
call decide how each dot product is blocked and summed (``(X @ W.T)[:50]`` differs from
``X[:50] @ W.T`` by up to 3e-4 relative where the sum cancels). So comparisons of such results use
the rounding-error bound of a dot product, which holds for every summation order, with or
without FMA (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 3.5):

    |fl(x . w) - x . w| <= gamma_d * sum_i |x_i w_i|,   gamma_d = d u / (1 - d u),  u = 2**-24.

Two routes are each within that of the exact value, so they differ by at most twice it. A
relative tolerance alone is wrong where the sum cancels (a current near 0 next to terms of size
1); this bound is absolute per element and scales with the terms that were summed.

Import from a test module as ``import _float32`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import numpy as np

U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32, 2**-24


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u) for float32."""
    return n * U32 / (1 - n * U32)


def relu_power_bound(X, W, power=1.0, *, extra_terms=0):
    """Elementwise bound on ``|a - b|`` for two float32 computations ``a``, ``b`` of
    ``ReLU(X @ W.T) ** power`` that may sum in any order.

    ``extra_terms``: roundings per product term made before the product, which two routes may
    also do differently (e.g. ``d`` when both divide the input by its p-norm summed in float32).
    ReLU is 1-Lipschitz; ``t ** power`` (power >= 1) has slope ``power * t ** (power - 1)``
    between the two currents, and each route rounds the power once more (a few ulp: 4 u here).
    """
    X = np.asarray(X, np.float64)
    W = np.asarray(W, np.float64)
    terms = np.abs(X) @ np.abs(W).T                      # sum_i |x_i w_i|
    half = gamma(X.shape[1] + extra_terms) * terms        # one route vs the exact value
    exact = np.maximum(X @ W.T, 0.0)                      # float64: exact to far below `half`
    if power == 1:
        return 2 * half + 4 * U32 * exact
    if power < 1:
        raise ValueError("relu_power_bound handles power >= 1 only")
    top = exact + half                                    # both routes' currents lie below this
    return power * top ** (power - 1) * 2 * half + 2 * 4 * U32 * top ** power


def readout_bound(F, readout, feature_bound=0.0):
    """Elementwise bound on ``|a - b|`` for two float32 computations of a fitted
    :class:`~bioreps.readout.LinearReadout`'s logits ``((F - mean) / scale) @ coef.T + intercept``
    (NumPy's ``decision_function`` and the torch view): the subtraction, division and final
    addition are one rounding each (3 extra terms), and ``feature_bound`` (elementwise, as from
    :func:`relu_power_bound`) is how far the two routes' features ``F`` may already differ."""
    F = np.asarray(F, np.float64)
    scale = np.asarray(readout.scale_, np.float64)
    coef = np.abs(np.asarray(readout.coef_, np.float64))
    Z = np.abs((F - np.asarray(readout.mean_, np.float64)) / scale)
    terms = Z @ coef.T + np.abs(np.asarray(readout.intercept_, np.float64))
    return 2 * gamma(F.shape[1] + 3) * terms + (np.asarray(feature_bound, np.float64) / scale) @ coef.T


def assert_relu_power_close(actual, expected, X, W, power=1.0, *, extra_terms=0):
    """Assert ``actual`` and ``expected`` (both float32 ``ReLU(X @ W.T) ** power`` by different
    routes) agree within :func:`relu_power_bound`; the message names the worst element."""
    assert_within(actual, expected, relu_power_bound(X, W, power, extra_terms=extra_terms))


def assert_within(actual, expected, bound):
    """Assert ``|actual - expected| <= bound`` elementwise; the message names the worst element."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    bound = np.broadcast_to(np.asarray(bound, np.float64), actual.shape)
    diff = np.abs(actual - expected)
    bad = ~(diff <= bound)  # NaN counts as bad
    if bad.any():
        i = tuple(int(j) for j in np.unravel_index(np.argmax(np.where(bad, diff / np.maximum(bound, 1e-300), -1.0)),
                                                   diff.shape))
        raise AssertionError(
            f"{int(bad.sum())} of {bad.size} elements differ by more than the float32 bound; worst at {i}: "
            f"actual {actual[i]!r}, expected {expected[i]!r}, |diff| {diff[i]:.3g} > bound {bound[i]:.3g}")
