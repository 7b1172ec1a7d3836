"""Trace-based STDP of Diehl & Cook (2015), the released Brian-1 code's rule: Numba CPU kernels.

Weights ``W`` are (n_inputs, n_neurons): one row per input, so a presynaptic spike touches one
contiguous row. Traces are kept as values and decayed once per step by the exact factor
``exp(-dt / tau)`` (the same values Brian's event-driven traces hold at an event).

* pre spike of input i:  ``x_pre[i] = 1``; ``W[i, :] -= nu_pre * x_post1``; clip to [0, w_max]
* post spike of neuron j: ``W[:, j] += nu_post * x_pre * x_post2[j]`` (x_post2 before this
  spike); clip to [0, w_max]; then ``x_post1[j] = x_post2[j] = 1``
"""

from __future__ import annotations

from numba import njit

from .._config import njit_options

__all__ = ["decay", "decay_flush", "TINY", "stdp_pre", "propagate_pre", "stdp_post", "normalize_columns"]

# Values below this (2**-1000, about 9.3e-302) are flushed to 0 by :func:`decay_flush` and the LIF
# kernels' conductance decays. A decaying trace or conductance otherwise sinks into the subnormal
# range, where it sticks (the smallest subnormal times a factor >= 0.5 rounds back to itself) and
# every multiplication by it takes a micro-code assist (~100 cycles on x86): with ~90 of 100 I
# conductances and ~50 input traces parked there, that was a third of the training time. Such a
# value cannot change any other value: it only ever enters a sum with a number of magnitude >=
# 2**-960 (a weight, a potential, 1 + g), where it rounds away, or a sum with 0 (a weight clipped
# to 0, or a conductance of 0), whose result is itself below 2**-1000 and so equally inert; so
# spikes, weights and thresholds are unchanged, and only such sub-1e-300 entries may read 0.
TINY = 2.0 ** -1000


@njit(**njit_options())
def decay(x, factor):
    """``x *= factor`` in place (exact exponential decay over one step)."""
    for i in range(x.shape[0]):
        x[i] *= factor


@njit(**njit_options())
def decay_flush(x, factor):
    """``x *= factor`` in place, entries whose magnitude falls below :data:`TINY` set to 0."""
    for i in range(x.shape[0]):
        v = x[i] * factor
        x[i] = v if abs(v) >= TINY else 0.0


@njit(**njit_options())
def stdp_pre(W, i, x_pre, x_post1, nu_pre, w_max):
    """Input ``i`` spiked: set its trace to 1 and depress its row by ``nu_pre * x_post1``."""
    x_pre[i] = 1.0
    for j in range(W.shape[1]):
        w = W[i, j] - nu_pre * x_post1[j]
        if w < 0.0:
            w = 0.0
        elif w > w_max:
            w = w_max
        W[i, j] = w


@njit(**njit_options())
def propagate_pre(W, i, g, x_pre, x_post1, nu_pre, w_max):
    """Input ``i`` spiked while learning: ``g += W[i, :]`` (with the weights before this spike),
    then :func:`stdp_pre`, fused into one pass over the row."""
    x_pre[i] = 1.0
    for j in range(W.shape[1]):
        w = W[i, j]
        g[j] += w
        w -= nu_pre * x_post1[j]
        w = 0.0 if w < 0.0 else w
        W[i, j] = w_max if w > w_max else w


@njit(**njit_options())
def stdp_post(W, j, x_pre, x_post1, x_post2, nu_post, w_max):
    """Neuron ``j`` spiked: potentiate its column by ``nu_post * x_pre * x_post2[j]`` (the trace
    before this spike), then set its post traces to 1."""
    a = nu_post * x_post2[j]
    for i in range(W.shape[0]):
        w = W[i, j] + a * x_pre[i]
        if w < 0.0:
            w = 0.0
        elif w > w_max:
            w = w_max
        W[i, j] = w
    x_post1[j] = 1.0
    x_post2[j] = 1.0


@njit(**njit_options())
def normalize_columns(W, target, colsum):
    """Rescale every column of ``W`` (a neuron's input weights) to sum to ``target``; columns
    summing to 0 are left alone. ``colsum`` (n_neurons,) float64 is scratch."""
    n_in, n = W.shape
    for j in range(n):
        colsum[j] = 0.0
    for i in range(n_in):
        for j in range(n):
            colsum[j] += W[i, j]
    for j in range(n):
        colsum[j] = target / colsum[j] if colsum[j] > 0.0 else 1.0
    for i in range(n_in):
        for j in range(n):
            W[i, j] *= colsum[j]
