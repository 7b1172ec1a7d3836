"""Pieces shared by the Numba-CUDA twins (``hebbian.py``, ``softhebb.py``); private to this package.

* launch limits :data:`MAX_BLOCK` and :data:`MAX_GRID`, and :func:`_check_block`;
* :func:`_block_sum` / :func:`_block_max`: deterministic block reductions (a fixed tree in shared
  memory, no atomics);
* :func:`_gather_rows`: the batch's rows of ``X`` in presentation order;
* :func:`_gemm_kernel`: the tiled float32 shared-memory GEMM, compiled per (tile, transposes,
  outputs per thread);
* the host side both drivers share: :func:`_device_array`, :class:`_DeviceSamples` (the cached
  device copy of ``X``, ``x_uploads``, the uploaded ``order``), :func:`_check_float32`,
  :func:`_check_epoch`, :func:`_host_order`, :func:`_stage_weights`, :func:`_run_batches` (the
  batch loop and its callback) and :func:`_unstage_weights`;
* under the CUDA simulator only, :func:`_lock_simulator_shared_arrays` (a fix for a race in
  numba-cuda's simulator, applied on import).

It imports only numba and numpy (never ``bioreps`` outside the kernels package) and touches no
device on import (kernels compile lazily on first use).
"""

from __future__ import annotations

import numpy as np
from numba import config, cuda

MAX_BLOCK = 1024  # most threads per block (the size of the reduction kernels' shared arrays)
MAX_GRID = 4096  # most blocks of the row-strided kernels


# --------------------------------------------------------------------------- the simulator's shared arrays

def _lock_simulator_shared_arrays():
    """Make the CUDA simulator's ``cuda.shared.array`` safe for the threads of a block.

    numba-cuda's simulator runs every CUDA thread as a Python thread and looks a block's shared
    array up by its source line; on a miss it creates the array, with no lock between the lookup
    and the store (``FakeCUDAShared.array``, numba-cuda 0.29-0.30). Two threads that miss at once
    each get their own uninitialised array, so one thread's partial sums or loaded tiles never
    reach the others: a block reduction or a GEMM tile silently reads garbage. Measured here: 4 of
    about 40 repeated simulator runs of the same SoftHebb epoch gave different weights (by up to
    3.3) with the simulator as shipped, 0 of 160 with this lock; the CI flakes of the Hebbian
    tie-break and in-place checks had the same cause. Idempotent; never called outside the
    simulator (real kernels have real shared memory). Dynamic (``shape == 0``) and aligned
    requests go to the simulator's own code unchanged.
    """
    import sys
    import threading

    from numba.cuda.simulator import kernelapi

    cls = kernelapi.FakeCUDAShared
    if getattr(cls.array, "_bioreps_locked", False):
        return
    original = cls.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or (not isinstance(shape, tuple) and shape == 0):
            return original(self, shape, dtype, alignment)
        frame = sys._getframe(1)  # the kernel line that asks: the simulator's own key
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                if isinstance(dtype, kernelapi.types.Type):
                    dtype = kernelapi.numpy_support.as_dtype(dtype)
                res = np.empty(shape, dtype)
                self._allocations[caller] = res
        return res

    array._bioreps_locked = True
    array._original = original
    cls.array = array


if config.ENABLE_CUDASIM:
    _lock_simulator_shared_arrays()


# --------------------------------------------------------------------------- device functions

@cuda.jit(device=True)
def _block_sum(sh, t, nt):
    """Sum of ``sh[:nt]`` by a fixed tree (deterministic); every thread gets the result. Callers
    write ``sh[t]`` first; on return ``sh`` may be reused (a barrier follows the read)."""
    cuda.syncthreads()
    n = nt
    while n > 1:
        h = (n + 1) // 2
        if t < n - h:
            sh[t] += sh[t + h]
        cuda.syncthreads()
        n = h
    r = sh[0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True)
def _block_max(sh, t, nt):
    """Max of ``sh[:nt]`` (as :func:`_block_sum`; max is order free, so exact)."""
    cuda.syncthreads()
    n = nt
    while n > 1:
        h = (n + 1) // 2
        if t < n - h:
            if sh[t + h] > sh[t]:
                sh[t] = sh[t + h]
        cuda.syncthreads()
        n = h
    r = sh[0]
    cuda.syncthreads()
    return r


# --------------------------------------------------------------------------- kernels

@cuda.jit
def _gather_rows(X, order, start, m, V):
    """``V[r, :] = X[order[start + r], :]`` for r < m; blocks stride over the rows, threads over
    a row (coalesced)."""
    N = V.shape[1]
    for r in range(cuda.blockIdx.x, m, cuda.gridDim.x):
        src = order[start + r]
        for j in range(cuda.threadIdx.x, N, cuda.blockDim.x):
            V[r, j] = X[src, j]


_gemm_cache: dict = {}


def _rows_per_thread(tile):
    # outputs per GEMM thread (a strip along r): 4 when the tile allows, else 2 or 1
    for rpt in (4, 2):
        if tile % rpt == 0:
            return rpt
    return 1


_patch_cache: dict = {}


def _gemm_patch(TL, RPT, AT, BT):
    """The device function behind :func:`_gemm_kernel`: one block computes the tile x tile patch
    of ``C`` at rows ``r0..``, columns ``c0..``; thread ``(tx, ty)`` its ``RPT`` outputs of column
    ``c0 + tx``, rows ``r0 + ty + k * (TL // RPT)``. ``As``, ``Bs`` (shared, ``(TL, TL + 1)``) and
    ``acc`` (local, ``RPT``) are the caller's. Shared by the GEMM kernel and the persistent epoch
    kernel (:mod:`.hebbian`), which walks many patches per block."""
    key = (int(TL), int(RPT), bool(AT), bool(BT))
    dev = _patch_cache.get(key)
    if dev is not None:
        return dev
    TY = TL // RPT

    @cuda.jit(device=True)
    def patch(A, B, R, Cn, T, C, r0, c0, tx, ty, As, Bs, acc):
        for k in range(RPT):
            acc[k] = np.float32(0.0)
        for t0 in range(0, T, TL):
            for k in range(RPT):
                y = ty + k * TY
                if AT:  # A is (T, R): threads x along r
                    t = t0 + y
                    r = r0 + tx
                    if r < R and t < T:
                        As[tx, y] = A[t, r]
                    else:
                        As[tx, y] = np.float32(0.0)
                else:  # A is (R, T): threads x along t
                    t = t0 + tx
                    r = r0 + y
                    if r < R and t < T:
                        As[y, tx] = A[r, t]
                    else:
                        As[y, tx] = np.float32(0.0)
                if BT:  # B is (Cn, T): threads x along t
                    t = t0 + tx
                    c = c0 + y
                    if c < Cn and t < T:
                        Bs[tx, y] = B[c, t]
                    else:
                        Bs[tx, y] = np.float32(0.0)
                else:  # B is (T, Cn): threads x along c
                    t = t0 + y
                    c = c0 + tx
                    if c < Cn and t < T:
                        Bs[y, tx] = B[t, c]
                    else:
                        Bs[y, tx] = np.float32(0.0)
            cuda.syncthreads()
            for kk in range(TL):
                b = Bs[kk, tx]
                for k in range(RPT):
                    acc[k] += As[ty + k * TY, kk] * b
            cuda.syncthreads()
        c = c0 + tx
        if c < Cn:
            for k in range(RPT):
                r = r0 + ty + k * TY
                if r < R:
                    C[r, c] = acc[k]

    _patch_cache[key] = patch
    return patch


def _gemm_kernel(tile, a_trans, b_trans, rpt=None):
    """A tiled GEMM ``C[r, c] = sum_t A(r, t) * B(t, c)`` for r < R, c < Cn, t < T, in float32.

    ``A(r, t)`` is ``A[r, t]``, or ``A[t, r]`` when ``a_trans``; ``B(t, c)`` is ``B[t, c]``, or
    ``B[c, t]`` when ``b_trans`` (all arrays C-contiguous). Launch with ``(ceil(Cn/tile),
    ceil(R/tile))`` blocks of ``(tile, tile // rpt)`` threads; ``rpt`` (outputs per thread) must
    divide ``tile`` and defaults to ``_rows_per_thread(tile)``; ``rpt=1`` is one output per
    thread, ``(tile, tile)`` threads.
    Each block computes a tile x tile patch of C, each thread ``rpt`` outputs of one column
    (rows ``ty, ty + tile/rpt, ...``) in registers. Per step along t the block stages a
    tile x tile patch of A and of B in shared memory, loaded with ``threadIdx.x`` along each
    array's contiguous axis (coalesced; rows padded to tile + 1 floats against bank conflicts).
    Every output is a float32 sum over t ascending (so the bits do not depend on the tile or on
    ``rpt``); edges (R, Cn, T not multiples of the tile) load zeros.
    """
    TL = int(tile)
    RPT = _rows_per_thread(TL) if rpt is None else int(rpt)
    if RPT < 1 or TL % RPT:
        raise ValueError(f"rows per thread {RPT} must divide the tile {TL}")
    key = (TL, bool(a_trans), bool(b_trans), RPT)
    kern = _gemm_cache.get(key)
    if kern is not None:
        return kern
    T1 = TL + 1  # closure constants (shared and local shapes must be compile-time constants)
    AT, BT = key[1], key[2]

    patch = _gemm_patch(TL, RPT, AT, BT)

    @cuda.jit
    def _gemm(A, B, R, Cn, T, C):
        As = cuda.shared.array((TL, T1), np.float32)  # As[r - r0, t - t0]
        Bs = cuda.shared.array((TL, T1), np.float32)  # Bs[t - t0, c - c0]
        acc = cuda.local.array(RPT, np.float32)
        patch(A, B, R, Cn, T, C, cuda.blockIdx.y * TL, cuda.blockIdx.x * TL,
              cuda.threadIdx.x, cuda.threadIdx.y, As, Bs, acc)

    _gemm_cache[key] = _gemm
    return _gemm


# --------------------------------------------------------------------------- host side

def _device_array(a):
    """The device array behind ``a``, or None when ``a`` is a host (NumPy) array."""
    if isinstance(a, np.ndarray):
        return None
    if hasattr(a, "copy_to_host") and hasattr(a, "shape") and hasattr(a, "dtype"):
        return a  # a Numba device array (or the simulator's)
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a)  # CuPy, PyTorch, ...: a zero-copy view
    return None


def _check_block(block):
    block = int(block)
    if not 1 <= block <= MAX_BLOCK:
        raise ValueError(f"block must be in [1, {MAX_BLOCK}] threads, got {block}")
    return block


def _check_float32(dtype):
    if np.dtype(dtype) != np.float32:
        raise TypeError(f"the CUDA kernel works in float32, got dtype={np.dtype(dtype)}")


class _DeviceSamples:
    """Base of the drivers' buffers: the device copy of the samples ``X`` (uploaded once, reused
    while the same host object with the same shape comes back; contents modified in place are NOT
    re-uploaded), ``x_uploads`` (host-to-device uploads of X), the device copy of the
    presentation order, and ``last_rows`` (rows of the last batch). Subclasses call
    :meth:`_init_samples` before allocating their scratch."""

    def _init_samples(self):
        self.x_uploads = 0
        self._x_host = None
        self._x_dev = None
        self._order = None
        self.last_rows = 0

    def samples(self, X):
        """The device copy of ``X`` (float32, C-contiguous), uploaded only when ``X`` is not the
        array seen last time (identity and shape). A device array is used as it is."""
        dev = _device_array(X)
        if dev is not None:
            if dev.dtype != np.float32 or dev.ndim != 2:
                raise TypeError("X on the device must be a 2-D float32 array")
            return dev
        if self._x_host is X and self._x_dev is not None and self._x_dev.shape == X.shape:
            return self._x_dev
        host = np.ascontiguousarray(X, dtype=np.float32)
        if host.ndim != 2:
            raise ValueError(f"X must be 2-D (samples, features), got shape {host.shape}")
        self._x_dev = cuda.to_device(host)
        self._x_host = X
        self.x_uploads += 1
        return self._x_dev

    def forget_samples(self):
        """Drop the cached device copy of X (the next call uploads again)."""
        self._x_host = None
        self._x_dev = None

    def _epoch_inputs(self, X, order, n_features):
        """``(dX, d_order, n)``: the device samples (:meth:`samples`, checked to have
        ``n_features`` columns), the validated order (:func:`_host_order`) on the device
        (:meth:`upload_order`) and its length."""
        dX = self.samples(X)
        if dX.shape[1] != n_features:
            raise ValueError(f"X has {dX.shape[1]} features, W has {n_features}")
        order = _host_order(order, dX.shape[0])
        return dX, self.upload_order(order), order.shape[0]

    def upload_order(self, order):
        """Copy the presentation order to the device (reusing the buffer when the length agrees)."""
        order = np.ascontiguousarray(order, dtype=np.int64)
        if self._order is None or self._order.shape != order.shape:
            self._order = cuda.to_device(order)
        else:
            self._order.copy_to_device(order)
        return self._order


def _check_epoch(W, batch_size):
    """``(W, dW, K, N, B)`` for a driver's ``W`` and ``batch_size``: ``dW`` the device array behind
    ``W`` (None for a host array, then ``W`` as a NumPy array); both must be 2-D float32, a host
    one C-contiguous (it is updated in place); ``(K, N)`` its shape and ``B >= 1`` the batch size."""
    dW = _device_array(W)
    if dW is None:
        W = np.asarray(W)
        if W.dtype != np.float32 or W.ndim != 2 or not W.flags.c_contiguous:
            raise TypeError("W must be a 2-D C-contiguous float32 array (it is updated in place)")
    elif dW.dtype != np.float32 or dW.ndim != 2:
        raise TypeError("W on the device must be a 2-D float32 array")
    K, N = W.shape
    B = int(batch_size)
    if B < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return W, dW, K, N, B


def _host_order(order, n_samples):
    """``order`` as a 1-D host array of indices in ``[0, n_samples)`` (negative indices wrap as in
    ``np.take``; out-of-range ones raise IndexError)."""
    order = np.asarray(order)
    if order.ndim != 1:
        raise ValueError("order must be 1-D")
    n = order.shape[0]
    if n:
        lo, hi = int(order.min()), int(order.max())
        if lo < -n_samples or hi >= n_samples:
            raise IndexError(f"order holds indices outside [-{n_samples}, {n_samples})")
        if lo < 0:
            order = np.where(order < 0, order + n_samples, order)  # np.take's negative indices
    return order


def _stage_weights(W, dW, staging):
    """The device weights the epoch updates: ``dW`` itself, or a host ``W`` copied into
    ``staging``."""
    if dW is None:
        staging.copy_to_device(W)
        return staging
    return dW


def _run_batches(bf, n, B, launch, callback):
    """The batch loop of a driver: ``launch(start, m)`` queues one minibatch's kernels (rows
    ``start .. start + m`` of the order, ``m <= B``, the last batch short), then ``bf.last_rows``
    is set to ``m`` and ``callback(batch_index, m)`` called (when not None; the kernels may still
    be running). Returns the number of batches."""
    n_batches = 0
    for start in range(0, n, B):
        m = min(B, n - start)
        launch(start, m)
        bf.last_rows = m
        n_batches += 1
        if callback is not None:
            callback(n_batches, m)
    return n_batches


def _unstage_weights(W, dW, staging):
    """End of an epoch: copy ``staging`` back into a host ``W``, or wait for the device."""
    if dW is None:
        staging.copy_to_host(W)
    else:
        cuda.synchronize()
