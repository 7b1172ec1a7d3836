"""SoftHebb learning rule (soft winner-take-all Hebbian plasticity): Numba-CUDA twin of
``kernels/cpu/softhebb.py``.

The host driver :func:`softhebb_epoch` has the CPU driver's name, signature, semantics and return
value. State stays on the device for the whole epoch (after stumpy's ``gpu_stump``): the samples
``X`` are uploaded once and cached in :class:`SoftHebbBuffers` across epochs, ``W`` is copied in
at the start of a call and back into the same host array at the end (or updated in place when it
is already a device array), the presentation ``order`` is uploaded once per call, and nothing
crosses between host and device inside the batch loop.

How each step maps to the CPU kernel, per minibatch of ``m <= B`` rows:

=======================  =====================================  ==================================
step                     CPU (``kernels/cpu/softhebb.py``)      CUDA (this module), launch config
=======================  =====================================  ==================================
Wp, lr_i at the start    :func:`power_weights`, :func:`row_lr`  :func:`_power_weights`,
                                                                :func:`_row_lr`: blocks stride over
                                                                units, ``block`` threads over a row
rows of the batch        ``np.take(X, order[...], out=V)``      :func:`_gather_rows`, as above
currents U = V Wp^T      ``np.matmul``, BLAS, stored (K, m)     tiled shared-memory GEMM, float32,
                                                                (tile, tile/4) threads of 4
                                                                outputs, grid (ceil(K/tile),
                                                                ceil(m/tile))
softmax per sample       :func:`softmax_columns`                :func:`_softmax_rows`: one block per
                                                                sample, block max and float64 sum
xx = sum_b y u           :func:`softmax_columns` (same pass)    :func:`_weighted_sums`: a thread
                                                                per unit, samples in order
G = Y^T V                ``np.matmul`` (K, N), BLAS             the same GEMM kernel, transposed
                                                                operand A; grid (ceil(N/tile),
                                                                ceil(K/tile))
max |ds|                 :func:`update_max`                     :func:`_partial_max` (block per
                                                                row stride, one value per block),
                                                                then :func:`_final_max` (1 block)
W += lr_i ds / nc, Wp,   :func:`apply_update`                   :func:`_apply_update`: blocks stride
next lr_i                                                       over units, block sum of the norm
=======================  =====================================  ==================================

Exactness and determinism: no float atomics anywhere. Every reduction has a fixed order for a
given launch configuration (per-thread strided partial sums, then a fixed tree in shared memory;
the global max in two passes), so runs are bitwise reproducible. Against the CPU kernel the
differences are the float32 GEMMs' summation order, the softmax normaliser's and the p-norms'
float64 summation order (tree here, sequential there) and ulps of ``powf`` for p other than 2 and
3; ``xx`` is summed in the CPU's order. With the same ``U`` and ``Y`` the float64 expressions are
written as the CPU's; under the simulator they round as the CPU's, but on a GPU NVVM contracts
``a * b + c`` into fused multiply-adds (:func:`_weighted_sums`, :func:`_apply_update`), so the
last bits differ from the CPU's (about 1e-16 relative per operation): the real-GPU tests use
tolerances, not equality.

Block size: ``block`` threads for the 1-D kernels, default :data:`CUDA_BLOCK` (environment
``BIOREPS_CUDA_BLOCK``, default 128), overridable per :class:`SoftHebbBuffers` (``block=``), so
tests run several blocks even on tiny shapes; the GEMMs compute ``tile x tile`` patches (default
32) with ``tile x tile/4`` threads;
``grid=`` caps the blocks of the unit-strided kernels (default :data:`MAX_GRID`).
Kernels are compiled lazily on first use (importing this module touches no device), and under
``NUMBA_ENABLE_CUDASIM=1`` run in the simulator.

Shared with the Krotov-Hopfield twin, in ``_common.py``: the gather kernel, the tiled GEMM, the
block sum and max reductions, and the host side (the X cache and ``x_uploads`` of
:class:`SoftHebbBuffers`, the checks of ``W`` and ``order``, the batch loop and its callback).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .._config import CUDA_BLOCK
from ._common import (MAX_BLOCK, MAX_GRID, _block_max, _block_sum, _check_block, _check_epoch,
                      _check_float32, _DeviceSamples, _gather_rows, _gemm_kernel, _rows_per_thread,
                      _run_batches, _stage_weights, _unstage_weights)

__all__ = ["softhebb_epoch", "SoftHebbBuffers", "CUDA_BLOCK", "TILE", "MAX_TILE", "MAX_BLOCK", "PREC", "LR_EPS"]

PREC = 1e-30  # added to max|ds| before dividing (the reference's ``nc + 1e-30``)
LR_EPS = 1e-10  # added to | ||w||_p - 1 | in the adaptive learning rate
TILE = 32  # default GEMM tile edge: (TILE, TILE / 4) threads per block, 4 outputs each
#: the largest tile: 32 x 8 threads; ptxas gives the GEMM 64-72 registers per thread (sm_90 /
#: sm_80), so a 64 tile's 1024 threads would not launch on sm_80 (tests/test_cuda_compile.py)
MAX_TILE = 32
# MAX_BLOCK (most threads per block, the size of the reduction kernels' shared arrays) and MAX_GRID
# (most blocks of the row-strided kernels, and the partial maxima of a batch) come from ._common


# --------------------------------------------------------------------------- device functions

@cuda.jit(device=True)
def _signed_pow(w, q):
    # sign(w) * |w|**q for float32 w and q = p - 1 (a float32 power, as the CPU kernel)
    if w == 0.0:
        return np.float32(0.0)
    a = abs(w) ** q
    if w > 0.0:
        return a
    return -a


@cuda.jit(device=True)
def _lr_from_norm_pow(s, lr, p, power_lr):
    # lr * (| s**(1/p) - 1 | + LR_EPS) ** power_lr, s = sum_j |w_j|**p
    if p == 2.0:
        nrm = math.sqrt(s)
    else:
        nrm = s ** (1.0 / p)
    return lr * (abs(nrm - 1.0) + LR_EPS) ** power_lr


@cuda.jit(device=True)
def _row_pow_sum_part(W, Wp, i, p, t, nt):
    # this thread's part (j = t, t + nt, ...) of sum_j |W[i, j]|**p in float64, as the CPU terms
    N = W.shape[1]
    s = np.float64(0.0)
    if p == 2.0:
        for j in range(t, N, nt):
            w = np.float64(W[i, j])
            s += w * w
    elif p == 3.0:
        for j in range(t, N, nt):
            a = abs(np.float64(W[i, j]))
            s += a * a * a
    else:
        for j in range(t, N, nt):
            s += abs(np.float64(W[i, j]) * np.float64(Wp[i, j]))
    return s


# --------------------------------------------------------------------------- kernels

@cuda.jit
def _power_weights(W, p, out):
    """``out[:] = sign(W) * |W|**(p - 1)`` (float32); blocks stride over rows, threads over a row."""
    K, N = W.shape
    q = np.float32(p - 1.0)
    for i in range(cuda.blockIdx.x, K, cuda.gridDim.x):
        if p == 3.0:
            for j in range(cuda.threadIdx.x, N, cuda.blockDim.x):
                out[i, j] = W[i, j] * abs(W[i, j])
        else:
            for j in range(cuda.threadIdx.x, N, cuda.blockDim.x):
                out[i, j] = _signed_pow(W[i, j], q)


@cuda.jit
def _row_lr(W, Wp, lr, p, power_lr, adaptive, lrs):
    """``lrs[i] = lr * (| ||W[i]||_p - 1 | + 1e-10) ** power_lr`` (adaptive) or ``lr``; blocks
    stride over rows, the p-norm a block sum in float64."""
    sh = cuda.shared.array(MAX_BLOCK, np.float64)
    K = W.shape[0]
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for i in range(cuda.blockIdx.x, K, cuda.gridDim.x):
        if adaptive:
            sh[t] = _row_pow_sum_part(W, Wp, i, p, t, nt)
            s = _block_sum(sh, t, nt)
            if t == 0:
                lrs[i] = _lr_from_norm_pow(s, lr, p, power_lr)
        elif t == 0:
            lrs[i] = lr


@cuda.jit
def _softmax_rows(U, t_invert, Y):
    """Block b (one per sample): ``Y[b] = softmax(t_invert * U[b])`` over the units, the row max
    subtracted, exponentials and their sum in float64 (block max, then block sum)."""
    sh = cuda.shared.array(MAX_BLOCK, np.float64)
    b = cuda.blockIdx.x
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    K = U.shape[1]
    tv = np.float64(t_invert)
    mx = np.float64(-math.inf)
    for i in range(t, K, nt):
        v = np.float64(U[b, i])
        if v > mx:
            mx = v
    sh[t] = mx
    mx = _block_max(sh, t, nt)
    s = np.float64(0.0)
    for i in range(t, K, nt):
        s += math.exp(tv * (np.float64(U[b, i]) - mx))
    sh[t] = s
    s = _block_sum(sh, t, nt)
    inv = 1.0 / s
    for i in range(t, K, nt):
        Y[b, i] = np.float32(math.exp(tv * (np.float64(U[b, i]) - mx)) * inv)


@cuda.jit
def _weighted_sums(Y, U, m, xx):
    """``xx[i] = sum_{b < m} Y[b, i] * U[b, i]`` in float64, samples in order (the CPU's order);
    a thread per unit, grid-stride."""
    K = U.shape[1]
    for i in range(cuda.grid(1), K, cuda.gridsize(1)):
        s = np.float64(0.0)
        for b in range(m):
            s += np.float64(Y[b, i]) * np.float64(U[b, i])
        xx[i] = s


@cuda.jit
def _partial_max(G, W, xx, partial):
    """Block k: ``partial[k] = max |G[i, j] - xx[i] W[i, j]|`` (float64) over its rows
    (i = k, k + gridDim, ...); the first pass of the global max."""
    sh = cuda.shared.array(MAX_BLOCK, np.float64)
    K, N = W.shape
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    local = np.float64(0.0)
    for i in range(cuda.blockIdx.x, K, cuda.gridDim.x):
        x = xx[i]
        for j in range(t, N, nt):
            d = abs(np.float64(G[i, j]) - x * np.float64(W[i, j]))
            if d > local:
                local = d
    sh[t] = local
    r = _block_max(sh, t, nt)
    if t == 0:
        partial[cuda.blockIdx.x] = r


@cuda.jit
def _final_max(partial, n, nc):
    """One block: ``nc[0] = max(partial[:n])``, the second pass of the global max."""
    sh = cuda.shared.array(MAX_BLOCK, np.float64)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    local = np.float64(0.0)
    for k in range(t, n, nt):
        if partial[k] > local:
            local = partial[k]
    sh[t] = local
    r = _block_max(sh, t, nt)
    if t == 0:
        nc[0] = r


@cuda.jit
def _apply_update(W, Wp, G, xx, nc, lrs, lr, p, power_lr, adaptive, refresh_wp):
    """``W[i] += lrs[i] * (G[i] - xx[i] W[i]) / (nc + 1e-30)`` (float64, stored as float32),
    ``Wp[i]`` refreshed from the new float32 row (``refresh_wp``), and (``adaptive``) ``lrs[i]``
    the next batch's rate from the new row's p-norm (a block sum). Blocks stride over rows."""
    sh = cuda.shared.array(MAX_BLOCK, np.float64)
    K, N = W.shape
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    inv = 1.0 / (nc[0] + PREC)
    q = np.float32(p - 1.0)
    for i in range(cuda.blockIdx.x, K, cuda.gridDim.x):
        x = xx[i]
        scale = lrs[i] * inv  # read by every thread before the block sum's barriers
        for j in range(t, N, nt):
            w = np.float64(W[i, j])
            W[i, j] = np.float32(w + scale * (np.float64(G[i, j]) - x * w))
        if refresh_wp:  # each thread reads back only the entries it wrote
            if p == 3.0:
                for j in range(t, N, nt):
                    Wp[i, j] = W[i, j] * abs(W[i, j])
            else:
                for j in range(t, N, nt):
                    Wp[i, j] = _signed_pow(W[i, j], q)
        if adaptive:
            sh[t] = _row_pow_sum_part(W, Wp, i, p, t, nt)
            s = _block_sum(sh, t, nt)
            if t == 0:
                lrs[i] = _lr_from_norm_pow(s, lr, p, power_lr)


# --------------------------------------------------------------------------- host side

class SoftHebbBuffers(_DeviceSamples):
    """Device scratch for :func:`softhebb_epoch`, allocated once per (K, N, B) and reused, plus
    the device copy of the samples ``X`` (uploaded once, reused across epochs).

    Parameters: ``n_units, n_features, batch_size, dtype`` as the CPU ``SoftHebbBuffers``
    (``dtype`` must be float32); ``block``: threads per block of the 1-D kernels (None: the
    module's :data:`CUDA_BLOCK`, read at call time); ``tile``: the GEMM tile edge (None:
    :data:`TILE`); ``grid``: the most blocks of the kernels that stride over units (None:
    :data:`MAX_GRID`; tests shrink it so each block handles several rows).

    The X cache keeps a reference to the host array and is reused while the same object with the
    same shape is passed (contents modified in place are NOT re-uploaded: pass a new array or
    call :meth:`forget_samples`). ``x_uploads`` counts host-to-device uploads of X. When
    ``softhebb_epoch`` gets buffers of another shape it reallocates the scratch in place and keeps
    the X cache.
    """

    def __init__(self, n_units, n_features, batch_size, dtype=np.float32, block=None, tile=None,
                 grid=None):
        _check_float32(dtype)
        self.block = None if block is None else _check_block(block)
        self.tile = TILE if tile is None else int(tile)
        if not 1 <= self.tile <= MAX_TILE:
            raise ValueError(f"tile must be in [1, {MAX_TILE}], got {tile} (a 64 tile's 1024 threads need more "
                             f"registers than a block has on sm_80)")
        self.grid = MAX_GRID if grid is None else int(grid)
        if not 1 <= self.grid <= MAX_GRID:
            raise ValueError(f"grid must be in [1, {MAX_GRID}] blocks, got {grid}")
        self._init_samples()
        self._allocate(n_units, n_features, batch_size)

    def _allocate(self, n_units, n_features, batch_size):
        K, N, B = int(n_units), int(n_features), int(batch_size)
        self.shape = (K, N, B)
        self.W = cuda.device_array((K, N), np.float32)  # staging for a host W
        self.Wp = cuda.device_array((K, N), np.float32)  # unused for p = 2 (then Wp is W)
        self.V = cuda.device_array((B, N), np.float32)
        self.U = cuda.device_array((B, K), np.float32)  # currents (sample, unit)
        self.Y = cuda.device_array((B, K), np.float32)  # soft winner-take-all activations
        self.G = cuda.device_array((K, N), np.float32)  # Y.T @ V
        self.xx = cuda.device_array(K, np.float64)
        self.lrs = cuda.device_array(K, np.float64)  # per-unit learning rate of the next batch
        self.partial = cuda.device_array(MAX_GRID, np.float64)
        self.nc = cuda.device_array(1, np.float64)  # max|ds| of the last batch
        self.last_rows = 0

    def last_activations(self):
        """Host copy of the last batch's activations Y (m, K) (a device sync)."""
        return self.Y.copy_to_host()[:self.last_rows]

    def last_scale(self):
        """The last batch's max|ds| (a device sync)."""
        return float(self.nc.copy_to_host()[0])


def batch_steps(Wd, bf, block, t_invert, lr, p, power_lr, adaptive, after_softmax=None):
    """Prepare an epoch on the device weights ``Wd`` (``Wp`` and the first rates) and return
    ``step(m)``, which queues one minibatch's kernels on the first ``m`` rows of ``bf.V``:
    currents GEMM, softmax, ``after_softmax(m)`` (the convolutional rule's anti-Hebbian sign),
    weighted sums, the second GEMM, the global max and the update."""
    tile = bf.tile
    t_invert, lr, p, power_lr = np.float64(t_invert), np.float64(lr), np.float64(p), np.float64(power_lr)
    adaptive = bool(adaptive)
    refresh_wp = bool(p != 2.0)
    Wp = bf.Wp if refresh_wp else Wd
    K, N = Wd.shape
    gemm_u = _gemm_kernel(tile, False, True)  # U (m, K) = V (m, N) @ Wp (K, N)^T
    gemm_g = _gemm_kernel(tile, True, False)  # G (K, N) = Y (m, K)^T @ V (m, N)
    gemm_threads = (tile, tile // _rows_per_thread(tile))
    rows = max(1, min(K, bf.grid))  # blocks of the kernels that stride over units
    if refresh_wp:
        _power_weights[rows, block](Wd, p, bf.Wp)
    _row_lr[rows, block](Wd, Wp, lr, p, power_lr, adaptive, bf.lrs)

    def step(m):
        gemm_u[(-(-K // tile), -(-m // tile)), gemm_threads](bf.V, Wp, m, K, N, bf.U)
        _softmax_rows[m, block](bf.U, t_invert, bf.Y)
        if after_softmax is not None:
            after_softmax(m)
        _weighted_sums[min(-(-K // block), bf.grid), block](bf.Y, bf.U, m, bf.xx)
        gemm_g[(-(-N // tile), -(-K // tile)), gemm_threads](bf.Y, bf.V, K, N, m, bf.G)
        _partial_max[rows, block](bf.G, Wd, bf.xx, bf.partial)
        _final_max[1, block](bf.partial, rows, bf.nc)
        _apply_update[rows, block](Wd, Wp, bf.G, bf.xx, bf.nc, bf.lrs, lr, p, power_lr, adaptive, refresh_wp)

    return step


def softhebb_epoch(W, X, order, batch_size, t_invert, lr, p, power_lr, adaptive, buffers=None,
                   callback=None):
    """One pass over ``X[order]`` in minibatches of ``batch_size``, updating ``W`` in place, on the GPU.

    Parameters
    ----------
    W : (K, N) float32, updated in place: a C-contiguous host array (copied to the device at the
        start, back into the same array at the end) or a device array (Numba, or anything with
        ``__cuda_array_interface__``; updated on the device, no copies).
    X : (n, N) float32 samples, host or device; a host X is uploaded once and cached in ``buffers``
        (pass the same ``buffers`` every epoch and it is uploaded once).
    order : (m,) int row indices into X, the presentation order, uploaded each call (a final short
        batch is used).
    batch_size, t_invert, lr, p, power_lr, adaptive : as the CPU driver.
    buffers : :class:`SoftHebbBuffers` or None (then fresh device scratch for this call, and X is
        uploaded again). Its ``block``, ``tile`` and ``grid`` choose the launch configuration.
    callback : called as ``callback(batch_index, n_rows)`` after each minibatch's kernels are
        queued (they may still be running), or None; ``buffers.last_activations()`` and
        ``buffers.last_scale()`` there read that batch's Y and max|ds| (a device sync).

    Returns
    -------
    The number of batches.
    """
    W, dW, K, N, B = _check_epoch(W, batch_size)
    if buffers is None:
        buffers = SoftHebbBuffers(K, N, B)
    elif buffers.shape != (K, N, B):
        buffers._allocate(K, N, B)
    bf = buffers
    block = _check_block(CUDA_BLOCK if bf.block is None else bf.block)

    dX, d_order, n = bf._epoch_inputs(X, order, N)
    Wd = _stage_weights(W, dW, bf.W)
    step = batch_steps(Wd, bf, block, t_invert, lr, p, power_lr, adaptive)

    def launch(start, m):
        _gather_rows[min(m, bf.grid), block](dX, d_order, start, m, bf.V)
        step(m)

    n_batches = _run_batches(bf, n, B, launch, callback)
    _unstage_weights(W, dW, bf.W)
    return n_batches
