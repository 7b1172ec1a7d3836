"""Krotov-Hopfield "competing hidden units" learning rule: Numba CPU kernels.

One minibatch of B samples (rows of ``V``, shape (B, N)) and K hidden units (rows of ``W``):

1. currents ``I = Wp @ V.T`` (K, B) with ``Wp = sign(W) * |W|**(p - 1)``: a BLAS GEMM done by
   the caller (``numpy.matmul`` into a preallocated buffer), the one dense cost;
2. :func:`topk_columns`: for every sample, the unit with the largest current and the k-th
   largest (a top-k scan, not a sort);
3. :func:`sparse_update`: the update ``ds = g @ V - (sum_b g * I)[:, None] * W`` touches only the
   at most 2B units that won or came k-th, so it is accumulated for those rows only, scaled by
   ``eps / max(max|ds|, prec)`` and added to ``W``; ``Wp`` is refreshed for the same rows.

The kernels are serial on purpose: the GEMM runs on every core through BLAS, and Numba threads
running beside BLAS threads fought for the two cores here (measured: 5.1 s/epoch with both
pools, 1.9 s with serial kernels; see benchmarks/RESULTS.md). They are pure functions of plain
arrays (no allocation); the driver
:func:`hebbian_epoch` owns the buffers and is shared in signature with the CUDA twin.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._config import njit_options

__all__ = ["power_weights", "topk_columns", "sparse_update", "hebbian_epoch", "HebbianBuffers"]

PREC = 1e-30


@njit(**njit_options())
def _signed_pow(w, p):
    # sign(w) * |w|**(p - 1), with exact fast paths for the common p = 2 and p = 3
    if p == 3.0:
        return w * abs(w)
    if p == 2.0:
        return w
    if w == 0.0:
        return 0.0 * w
    a = abs(w) ** (p - 1.0)
    return a if w > 0 else -a


@njit(**njit_options())
def power_weights(W, p, out):
    """``out[:] = sign(W) * |W|**(p - 1)`` (the weights that produce the currents)."""
    K, N = W.shape
    for i in range(K):
        for j in range(N):
            out[i, j] = _signed_pow(W[i, j], p)


@njit(**njit_options())
def topk_columns(I, n_cols, k, win, kth, vals, idx, thr):
    """For each column b < n_cols of the currents I (K, B): ``win[b]`` = argmax over units and
    ``kth[b]`` = the unit with the k-th largest current.

    Scratch: ``vals`` (B, k) float and ``idx`` (B, k) int64 hold each column's descending top-k
    list, ``thr`` (B,) float its current k-th value, so the common case (a current below the
    column's threshold) is one contiguous compare per element of a row of ``I``.
    Ties are broken towards the lower unit index.
    """
    K = I.shape[0]
    for b in range(n_cols):
        thr[b] = -np.inf
        for r in range(k):
            vals[b, r] = -np.inf
            idx[b, r] = -1
    for i in range(K):
        for b in range(n_cols):
            v = I[i, b]
            if v > thr[b]:
                # insertion into the descending top-k list of column b
                r = k - 1
                while r > 0 and vals[b, r - 1] < v:
                    vals[b, r] = vals[b, r - 1]
                    idx[b, r] = idx[b, r - 1]
                    r -= 1
                vals[b, r] = v
                idx[b, r] = i
                thr[b] = vals[b, k - 1]
    for b in range(n_cols):
        win[b] = idx[b, 0]
        kth[b] = idx[b, k - 1]


@njit(**njit_options())
def sparse_update(W, Wp, V, I, n_rows, win, kth, delta, eps, p, slot, units, ds, xx):
    """Apply one minibatch's update to the rows of W that won or came k-th.

    ``V`` (B, N) holds the samples in its first ``n_rows`` rows; ``I`` (K, B) their currents.
    Scratch: ``slot`` (K,) int64 filled with -1 on entry and restored on exit, ``units`` (2B,)
    int64, ``ds`` (2B, N) and ``xx`` (2B,) float64 accumulators. Returns the scale
    ``max(max|ds|, prec)`` that was used.
    """
    N = W.shape[1]
    n_aff = 0
    # collect affected units and zero their accumulators
    for b in range(n_rows):
        for u in (win[b], kth[b]):
            if slot[u] < 0:
                slot[u] = n_aff
                units[n_aff] = u
                xx[n_aff] = 0.0
                for j in range(N):
                    ds[n_aff, j] = 0.0
                n_aff += 1
    # g @ V and sum_b g * I for the affected rows (g = +1 for the winner, -delta for k-th)
    for b in range(n_rows):
        s = slot[win[b]]
        xx[s] += I[win[b], b]
        for j in range(N):
            ds[s, j] += V[b, j]
        s = slot[kth[b]]
        xx[s] -= delta * I[kth[b], b]
        for j in range(N):
            ds[s, j] -= delta * V[b, j]
    # ds -= xx * W, and the largest |ds|
    nc = 0.0
    for s in range(n_aff):
        u = units[s]
        for j in range(N):
            d = ds[s, j] - xx[s] * W[u, j]
            ds[s, j] = d
            if abs(d) > nc:
                nc = abs(d)
    if nc < PREC:
        nc = PREC
    scale = eps / nc
    for s in range(n_aff):
        u = units[s]
        for j in range(N):
            w = W[u, j] + scale * ds[s, j]
            W[u, j] = w
            Wp[u, j] = _signed_pow(w, p)
        slot[u] = -1
    return nc


class HebbianBuffers:
    """Scratch arrays for :func:`hebbian_epoch`, allocated once per (K, N, B) and reused."""

    def __init__(self, n_units, n_features, batch_size, k, dtype=np.float32):
        K, N, B = n_units, n_features, batch_size
        self.shape = (K, N, B, k)
        self.Wp = np.empty((K, N), dtype)
        self.V = np.empty((B, N), dtype)
        self.I = np.empty((K, B), dtype)
        self.win = np.empty(B, np.int64)
        self.kth = np.empty(B, np.int64)
        self.vals = np.empty((B, k), dtype)
        self.idx = np.empty((B, k), np.int64)
        self.thr = np.empty(B, dtype)
        self.slot = np.full(K, -1, np.int64)
        self.units = np.empty(2 * B, np.int64)
        self.ds = np.empty((2 * B, N), np.float64)
        self.xx = np.empty(2 * B, np.float64)


def hebbian_batch(W, m, k, delta, eps, p, bf):
    """One minibatch: the samples are the first ``m`` rows of ``bf.V`` (for the convolutional
    layer, every patch of every image of the batch); ``bf.Wp`` must hold
    :func:`power_weights` of ``W`` (kept up to date by the update). Currents through BLAS, the
    top-k per sample, the sparse update of the winners and k-th units (in place)."""
    K = W.shape[0]
    B = bf.I.shape[1]
    # currents I[:, :m] = Wp @ V[:m].T through BLAS, no allocation
    I = bf.I if m == B else np.empty((K, m), W.dtype)
    np.matmul(bf.Wp, bf.V[:m].T, out=I)
    topk_columns(I, m, k, bf.win, bf.kth, bf.vals, bf.idx, bf.thr)
    sparse_update(W, bf.Wp, bf.V, I, m, bf.win, bf.kth, delta, eps, p, bf.slot, bf.units, bf.ds, bf.xx)


def hebbian_epoch(W, X, order, batch_size, k, delta, eps, p, buffers=None, callback=None):
    """One pass over ``X[order]`` in minibatches of ``batch_size``, updating ``W`` in place.

    Parameters
    ----------
    W : (K, N) float32, C-contiguous; updated in place.
    X : (n, N) float32 samples, C-contiguous.
    order : (m,) int64 row indices into X, the presentation order (a final short batch is used).
    batch_size, k, delta, eps, p : the rule's constants for this epoch.
    buffers : HebbianBuffers or None; reused across epochs by the caller to avoid allocation.
    callback : called as ``callback(batch_index, n_rows)`` after each minibatch, or None.

    Returns
    -------
    (win, kth) of the last batch is not returned; the function returns the number of batches.
    """
    K, N = W.shape
    B = int(batch_size)
    if buffers is None or buffers.shape != (K, N, B, k):
        buffers = HebbianBuffers(K, N, B, k, W.dtype)
    bf = buffers
    power_weights(W, p, bf.Wp)
    n = order.shape[0]
    n_batches = 0
    for start in range(0, n, B):
        m = min(B, n - start)
        np.take(X, order[start:start + m], axis=0, out=bf.V[:m])
        hebbian_batch(W, m, k, delta, eps, p, bf)
        n_batches += 1
        if callback is not None:
            callback(n_batches, m)
    return n_batches
