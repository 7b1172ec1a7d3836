"""SoftHebb learning rule (soft winner-take-all Hebbian plasticity): Numba CPU kernels.

After Journé, Garcia Rodriguez, Guo & Moraitis, "Hebbian deep learning without feedback" (ICLR
2023), reference code NeuromorphicComputing/SoftHebb, ``hebblinear.py`` (``HebbSoftLinear``).
One minibatch of B samples (rows of ``V``, shape (B, N)) and K units (rows of ``W``), Lebesgue
exponent p, inverse temperature ``t_invert``:

1. currents ``U = V @ Wp.T`` with ``Wp = sign(W) * |W|**(p - 1)`` (``Wp = W`` for p = 2), kept
   transposed as ``UT = Wp @ V.T`` (K, B): a BLAS GEMM done by the driver (``numpy.matmul`` into
   a preallocated buffer);
2. :func:`softmax_columns`: ``Y = softmax(t_invert * U)`` over the units of each sample (the max
   subtracted), kept transposed as ``YT`` (K, B), and ``xx[i] = sum_b Y[b, i] * U[b, i]``
   (float64, samples in order);
3. ``G = Y.T @ V = YT @ V`` (K, N): the second BLAS GEMM, by the driver;
4. :func:`update_max`: ``nc = max |ds|`` over all entries of ``ds = G - xx[:, None] * W``;
5. :func:`apply_update`: ``W[i] += lr_i * ds[i] / (nc + 1e-30)``, ``Wp`` refreshed from the new
   float32 ``W``, and (adaptive learning rate) the new rows' p-norms give the next batch's
   ``lr_i = lr * (| ||w_i||_p - 1 | + 1e-10) ** power_lr`` (``ds`` is recomputed in this pass
   from ``G``, ``xx`` and the old ``W`` rather than stored: the same bytes are read either way).

``lr_i`` thus always comes from ``W`` before the batch's update, as in the reference's
``update_lr`` (run after each update for the next one); :func:`row_lr` computes it at the start
of a call. Storage is float32; the norms, ``xx``, the softmax normaliser, ``ds`` and the scaled
add are float64. ``Wp`` is always the function of the stored float32 ``W`` (never of an
unrounded value), so an epoch split across two calls gives the same bits as one call.

The kernels are serial on purpose: the two GEMMs run on every core through BLAS, and Numba
threads beside BLAS threads fought for the two cores here (see ``kernels/cpu/hebbian.py``). They
are pure functions of plain arrays (no allocation); the driver :func:`softhebb_epoch` owns the
buffers and is shared in signature with the CUDA twin ``kernels/cuda/softhebb.py``.

Measured on the 2-core development machine (shared with another job, so +-30%), one epoch of
Fashion-MNIST (60000 x 784), K = 2000, B = 100, p = 2: 3.7-4.7 s, of which the GEMMs ~2.1 s,
the softmax (float64 ``exp``) 0.6 s, the update 0.3 s, the max 0.2 s. Layouts were chosen by
measurement: ``Wp @ V.T`` into (K, B) rather than ``V @ Wp.T`` into (B, K) (equal when the
machine is idle, 3x faster under load), ``YT @ V`` from a C-contiguous ``YT`` rather than
``Y.T @ V`` (1.4x). p other than 2 and 3 costs one float32 power per weight per batch (+5 s).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._config import njit_options

__all__ = ["power_weights", "row_lr", "softmax_columns", "anti_hebbian_columns", "update_max", "apply_update",
           "start_epoch", "softhebb_batch", "softhebb_epoch", "SoftHebbBuffers", "PREC", "LR_EPS"]

PREC = 1e-30  # added to max|ds| before dividing (the reference's ``nc + 1e-30``)
LR_EPS = 1e-10  # added to | ||w||_p - 1 | in the adaptive learning rate (the reference's ``nc``)


@njit(**njit_options())
def _signed_pow(w, q):
    # sign(w) * |w|**q for float32 w and q = p - 1 (a float32 power: 2.4x faster than float64's
    # and within an ulp or two); p = 2 and p = 3 have their own loops
    if w == 0.0:
        return np.float32(0.0)
    a = abs(w) ** q
    return a if w > 0 else -a


@njit(**njit_options())
def _lr_from_norm_pow(s, lr, p, power_lr):
    # lr * (| s**(1/p) - 1 | + LR_EPS) ** power_lr, s = sum_j |w_j|**p
    if p == 2.0:
        nrm = math.sqrt(s)
    else:
        nrm = s ** (1.0 / p)
    return lr * (abs(nrm - 1.0) + LR_EPS) ** power_lr


# The choice of p is made once per row, outside the loops over features: with a branch inside,
# LLVM if-converted it and computed the general power for every entry even for p = 3 (40x slower).

@njit(**njit_options())
def power_weights(W, p, out):
    """``out[:] = sign(W) * |W|**(p - 1)`` (the weights that produce the currents), float32 in
    and out; ``W * |W|`` for p = 3, a float32 power for other p."""
    K, N = W.shape
    q = np.float32(p - 1.0)
    for i in range(K):
        if p == 2.0:
            for j in range(N):
                out[i, j] = W[i, j]
        elif p == 3.0:
            for j in range(N):
                out[i, j] = W[i, j] * abs(W[i, j])
        else:
            for j in range(N):
                out[i, j] = _signed_pow(W[i, j], q)


@njit(**njit_options())
def _row_pow_sum(W, Wp, i, p):
    # sum_j |W[i, j]|**p in float64, j ascending (|W * Wp| for a general p: no second power)
    N = W.shape[1]
    s = 0.0
    if p == 2.0:
        for j in range(N):
            w = np.float64(W[i, j])
            s += w * w
    elif p == 3.0:
        for j in range(N):
            a = abs(np.float64(W[i, j]))
            s += a * a * a
    else:
        for j in range(N):
            s += abs(np.float64(W[i, j]) * np.float64(Wp[i, j]))
    return s


@njit(**njit_options())
def row_lr(W, Wp, lr, p, power_lr, adaptive, lrs):
    """Per-unit learning rates into ``lrs`` (K,) float64: ``lr * (| ||W[i]||_p - 1 | + 1e-10) **
    power_lr`` when ``adaptive``, else ``lr``. The p-norm is summed in float64, j ascending;
    ``Wp`` (from :func:`power_weights`) is read for p other than 2 and 3."""
    K = W.shape[0]
    for i in range(K):
        if adaptive:
            lrs[i] = _lr_from_norm_pow(_row_pow_sum(W, Wp, i, p), lr, p, power_lr)
        else:
            lrs[i] = lr


@njit(**njit_options())
def softmax_columns(UT, m, t_invert, YT, xx, E, cmax, csum):
    """For each sample b < m: ``YT[:, b] = softmax(t_invert * UT[:, b])`` over the units (the
    column max subtracted; exponentials and their sum in float64, the sum over units in order),
    and ``xx[i] = sum_b YT[i, b] * UT[i, b]`` (float64, samples in order, with the activations as
    stored). Currents and activations are (unit, sample), and every loop runs along the rows.
    Scratch: ``E`` (K, B), ``cmax`` and ``csum`` (B,), float64."""
    K = UT.shape[0]
    t = np.float64(t_invert)
    for b in range(m):
        cmax[b] = UT[0, b]
        csum[b] = 0.0
    for i in range(1, K):
        for b in range(m):
            cmax[b] = max(cmax[b], np.float64(UT[i, b]))
    for i in range(K):
        for b in range(m):
            e = math.exp(t * (np.float64(UT[i, b]) - cmax[b]))
            E[i, b] = e
            csum[b] += e
    for b in range(m):
        csum[b] = 1.0 / csum[b]
    for i in range(K):
        s = 0.0
        for b in range(m):
            y = np.float32(E[i, b] * csum[b])
            YT[i, b] = y
            s += np.float64(y) * np.float64(UT[i, b])
        xx[i] = s


@njit(**njit_options())
def anti_hebbian_columns(UT, m, YT, xx):
    """SoftHebb's soft anti-Hebbian plasticity (the convolutional layers of the reference code,
    ``hebbconv.py`` mode 0): for each sample b < m, every unit but the winner (the first unit
    with the largest current, as ``torch.argmax``) gets ``-YT[i, b]``; then ``xx[i] = sum_b
    YT[i, b] * UT[i, b]`` again with the signed activations (float64, samples in order)."""
    K = UT.shape[0]
    for b in range(m):
        best = UT[0, b]
        win = 0
        for i in range(1, K):
            if UT[i, b] > best:
                best = UT[i, b]
                win = i
        for i in range(K):
            if i != win:
                YT[i, b] = -YT[i, b]
    for i in range(K):
        s = 0.0
        for b in range(m):
            s += np.float64(YT[i, b]) * np.float64(UT[i, b])
        xx[i] = s


@njit(**njit_options())
def update_max(G, W, xx, colmax):
    """``max |G - xx[:, None] * W|`` over all entries (float64): the update's global scale.

    The maxima are kept per column in ``colmax`` (N,) float64 scratch and reduced at the end: an
    elementwise max along a row vectorises, a scalar max reduction does not (without ``nnan``);
    4.6x faster here. Max is exact, so the result does not depend on the order.
    """
    K, N = W.shape
    for j in range(N):
        colmax[j] = 0.0
    for i in range(K):
        x = xx[i]
        for j in range(N):
            d = abs(np.float64(G[i, j]) - x * np.float64(W[i, j]))
            c = colmax[j]
            colmax[j] = d if d > c else c
    nc = 0.0
    for j in range(N):
        if colmax[j] > nc:
            nc = colmax[j]
    return nc


@njit(**njit_options())
def apply_update(W, Wp, G, xx, nc, lrs, lr, p, power_lr, adaptive, refresh_wp):
    """``W[i] += lrs[i] * (G[i] - xx[i] W[i]) / (nc + 1e-30)`` (float64, stored as float32);
    ``Wp`` refreshed from the new float32 ``W`` when ``refresh_wp`` (as :func:`power_weights`
    computes it); when ``adaptive``, ``lrs[i]`` becomes the rate for the next batch, from the new
    row's p-norm (as :func:`row_lr` computes it)."""
    K, N = W.shape
    inv = 1.0 / (nc + PREC)
    q = np.float32(p - 1.0)
    for i in range(K):
        x = xx[i]
        scale = lrs[i] * inv
        for j in range(N):
            w = np.float64(W[i, j])
            W[i, j] = np.float32(w + scale * (np.float64(G[i, j]) - x * w))
        if refresh_wp:
            if p == 3.0:
                for j in range(N):
                    Wp[i, j] = W[i, j] * abs(W[i, j])
            else:
                for j in range(N):
                    Wp[i, j] = _signed_pow(W[i, j], q)
        if adaptive:
            lrs[i] = _lr_from_norm_pow(_row_pow_sum(W, Wp, i, p), lr, p, power_lr)


class SoftHebbBuffers:
    """Scratch arrays for :func:`softhebb_epoch`, allocated once per (K, N, B) and reused."""

    def __init__(self, n_units, n_features, batch_size, dtype=np.float32):
        K, N, B = int(n_units), int(n_features), int(batch_size)
        self.shape = (K, N, B)
        self.Wp = np.empty((K, N), dtype)  # unused for p = 2 (then Wp is W)
        self.V = np.empty((B, N), dtype)
        self.UT = np.empty((K, B), dtype)  # currents, (unit, sample)
        self.YT = np.empty((K, B), dtype)  # soft winner-take-all activations, (unit, sample)
        self.E = np.empty((K, B), np.float64)  # exponentials
        self.cmax = np.empty(B, np.float64)
        self.csum = np.empty(B, np.float64)
        self.G = np.empty((K, N), dtype)  # YT @ V
        self.xx = np.empty(K, np.float64)
        self.colmax = np.empty(N, np.float64)
        self.lrs = np.empty(K, np.float64)  # per-unit learning rate of the next batch
        self.nc = 0.0  # max|ds| of the last batch


def start_epoch(W, lr, p, power_lr, adaptive, bf):
    """Before the first batch of a call: ``Wp`` (``W`` itself for p = 2, else
    :func:`power_weights` into ``bf.Wp``) and the first batch's rates into ``bf.lrs``. Returns
    ``(Wp, refresh_wp)`` for :func:`softhebb_batch`."""
    refresh_wp = p != 2.0
    Wp = W
    if refresh_wp:
        power_weights(W, p, bf.Wp)
        Wp = bf.Wp
    row_lr(W, Wp, lr, p, power_lr, adaptive, bf.lrs)
    return Wp, refresh_wp


def softhebb_batch(W, Wp, V, t_invert, lr, p, power_lr, adaptive, refresh_wp, bf, anti_hebbian=False):
    """One minibatch: the rows of ``V`` (m <= B, N) float32 are the samples (for the
    convolutional layer, every patch of every image of the batch). Steps 1-5 of the module
    docstring, ``W`` (and ``Wp`` when ``refresh_wp``) updated in place, ``bf.lrs`` advanced,
    ``bf.nc`` set. ``anti_hebbian``: SoftHebb's convolutional rule, every unit but the winner of
    a sample gets the negated activation (:func:`anti_hebbian_columns`)."""
    m = V.shape[0]
    B = bf.UT.shape[1]
    # the GEMMs through BLAS into the buffers: currents UT = Wp @ V.T and G = YT @ V
    # (for a short batch, views of the first m columns)
    UT = bf.UT if m == B else bf.UT[:, :m]
    np.matmul(Wp, V.T, out=UT)
    softmax_columns(bf.UT, m, t_invert, bf.YT, bf.xx, bf.E, bf.cmax, bf.csum)
    if anti_hebbian:
        anti_hebbian_columns(bf.UT, m, bf.YT, bf.xx)
    np.matmul(bf.YT if m == B else bf.YT[:, :m], V, out=bf.G)
    bf.nc = update_max(bf.G, W, bf.xx, bf.colmax)
    apply_update(W, Wp, bf.G, bf.xx, bf.nc, bf.lrs, lr, p, power_lr, adaptive, refresh_wp)


def softhebb_epoch(W, X, order, batch_size, t_invert, lr, p, power_lr, adaptive, buffers=None,
                   callback=None):
    """One pass over ``X[order]`` in minibatches of ``batch_size``, updating ``W`` in place.

    Parameters
    ----------
    W : (K, N) float32, C-contiguous; updated in place.
    X : (n, N) float32 samples, C-contiguous.
    order : (m,) int row indices into X, the presentation order (a final short batch is used).
    batch_size : B, rows per minibatch.
    t_invert : the softmax's inverse temperature (1/T).
    lr : the learning rate (the amplitude of the adaptive rate when ``adaptive``).
    p : the Lebesgue exponent (currents use ``sign(W)|W|**(p-1)``, the adaptive rate the p-norm).
    power_lr : exponent of the adaptive rate ``lr * (| ||w_i||_p - 1 | + 1e-10) ** power_lr``.
    adaptive : per-unit adaptive rate (True) or ``lr`` for every unit (False).
    buffers : SoftHebbBuffers or None; reused across epochs by the caller to avoid allocation.
    callback : called as ``callback(batch_index, n_rows)`` after each minibatch, or None.

    Returns
    -------
    The number of batches.
    """
    W = np.asarray(W)
    if W.dtype != np.float32 or W.ndim != 2 or not W.flags.c_contiguous:
        raise TypeError("W must be a 2-D C-contiguous float32 array (it is updated in place)")
    K, N = W.shape
    B = int(batch_size)
    if B < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if X.shape[1] != N:
        raise ValueError(f"X has {X.shape[1]} features, W has {N}")
    if buffers is None or buffers.shape != (K, N, B):
        buffers = SoftHebbBuffers(K, N, B, W.dtype)
    bf = buffers
    t_invert, lr, p, power_lr = float(t_invert), float(lr), float(p), float(power_lr)
    adaptive = bool(adaptive)
    Wp, refresh_wp = start_epoch(W, lr, p, power_lr, adaptive, bf)
    order = np.asarray(order)
    n = order.shape[0]
    n_batches = 0
    for start in range(0, n, B):
        m = min(B, n - start)
        V = bf.V[:m]
        np.take(X, order[start:start + m], axis=0, out=V)
        softhebb_batch(W, Wp, V, t_invert, lr, p, power_lr, adaptive, refresh_wp, bf)
        n_batches += 1
        if callback is not None:
            callback(n_batches, m)
    return n_batches
