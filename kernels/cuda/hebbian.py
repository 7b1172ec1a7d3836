"""Krotov-Hopfield "competing hidden units" learning rule: Numba-CUDA twin of ``kernels/cpu/hebbian.py``.

The host driver :func:`hebbian_epoch` has the CPU driver's name, signature, semantics and return
value. State stays on the device for the whole epoch (after stumpy's ``gpu_stump``): the samples
``X`` are uploaded once and cached in :class:`HebbianBuffers` across epochs, ``W`` is copied in at
the start of a call and back into the same host array at the end (or updated in place when it is
already a device array), the presentation ``order`` is uploaded once per call, and nothing crosses
between host and device inside the batch loop.

How each step maps to the CPU kernel, per minibatch of ``m <= B`` rows:

=======================  =====================================  ==================================
step                     CPU (``kernels/cpu/hebbian.py``)       CUDA (this module), launch config
=======================  =====================================  ==================================
rows of the batch        ``np.take(X, order[...], out=V)``      :func:`_gather_rows`: blocks stride
                                                                over rows, ``block`` threads over
                                                                a row
currents                 ``np.matmul(Wp, V.T)`` (K, m), BLAS    :func:`_currents_kernel`: tiled
                                                                shared-memory GEMM, float32,
                                                                (tile, tile) threads, grid
                                                                (ceil(K/tile), ceil(m/tile));
                                                                stored transposed, ``IT`` (m, K)
argmax and k-th unit     :func:`topk_columns`, insertion scan   :func:`_topk_columns`: one block per
                                                                sample; k passes of a block
                                                                arg-max reduction
affected units           first loop of :func:`sparse_update`    :func:`_collect_units`: 1 thread,
                                                                the same loop and order (2m steps)
ds, xx (float64)         loops of :func:`sparse_update`         :func:`_accumulate`: one block per
                                                                affected unit, threads over
                                                                features, samples in order
max|ds|                  serial max                             block max reduction + one
                                                                ``atomic.max`` per block (max is
                                                                order free, so exact)
W += eps ds / nc, Wp     last loop of :func:`sparse_update`     :func:`_apply_update`: one block per
                                                                affected unit
Wp at the start          :func:`power_weights`                  :func:`_power_weights`, as gather
=======================  =====================================  ==================================

Exactness: the top-k reproduces the CPU's tie rule exactly (the CPU's insertion keeps a column's
top k ordered by value descending, then unit index ascending: a strictly greater value displaces,
an equal one does not, and NaN or -inf currents never enter); pass r of the reduction picks the
best current below the (value, index) picked by pass r-1 under that same order. Each affected
unit's ``xx`` and ``ds`` are summed in float64 over the samples in batch order, exactly as the CPU
does, without atomics, and the scaled update and the ``Wp`` refresh are written as the same float64
expressions (``Wp`` of an updated row is computed from the unrounded float64 weight, as on the CPU).
Under the simulator (plain IEEE arithmetic) the only difference from the CPU kernel is then the
float32 GEMM's summation order (a few ulp in the currents). On a GPU, NVVM contracts ``a * b + c``
into fused multiply-adds (ptxas output of :func:`_accumulate` and :func:`_apply_update` shows
them), one rounding instead of two, so the float64 sums and updates differ from the CPU's in
their last bits (about 1e-16 relative per operation) and a tie between two currents can resolve
differently; the real-GPU tests compare with tolerances for that reason. Runs on one device and
launch configuration are bitwise reproducible (fixed summation orders, no float atomics). One corner differs: when a column has fewer than
``k`` currents above -inf (NaN or -inf currents), the CPU indexes unit -1 (the last unit) and this
twin skips the missing unit.

Block size: ``block`` threads for the 1-D kernels, default :data:`CUDA_BLOCK` (environment
``BIOREPS_CUDA_BLOCK``, default 128), overridable per :class:`HebbianBuffers` (``block=``), so tests
run several blocks even on tiny shapes; the per-batch GEMM uses ``tile x tile`` threads (default
32), the persistent epoch kernel ``tile x tile / 4`` (256 at the default tile).

Launches: without a per-batch ``callback``, :func:`hebbian_epoch` runs the whole epoch in ONE
cooperative launch (:func:`_epoch_kernel`: six phases per batch separated by grid barriers, as
many blocks as can be resident at once), so numba-cuda's per-launch cost (~25 us, six launches
per batch: ~90 s over the paper's 600,000 batches) is paid once per epoch. With a callback (or
``HebbianBuffers(persistent=False)``) it launches the six per-batch kernels, so the callback can
read each batch's winners. Both give the same bits (tested in the simulator).
Kernels are compiled lazily on first use, and under ``NUMBA_ENABLE_CUDASIM=1`` run in the simulator.

Shared with the SoftHebb twin, in ``_common.py``: the gather kernel, the tiled GEMM (here with one
output per thread), the block max reduction, and the host side (the X cache and ``x_uploads`` of
:class:`HebbianBuffers`, the checks of ``W`` and ``order``, the batch loop and its callback).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .._config import CUDA_BLOCK
from ._common import (MAX_BLOCK, MAX_GRID, _block_max, _check_block, _check_epoch, _check_float32,
                      _rows_per_thread,
                      _DeviceSamples, _gather_rows, _gemm_kernel, _gemm_patch, _run_batches, _stage_weights,
                      _unstage_weights)

__all__ = ["hebbian_epoch", "HebbianBuffers", "CUDA_BLOCK", "TILE", "MAX_BLOCK"]

PREC = 1e-30
TILE = 32  # default GEMM tile: per-batch (TILE, TILE) threads; persistent TILE * TILE / 4 threads
# MAX_BLOCK (most threads per block, the size of the reduction kernels' shared arrays) and MAX_GRID
# (most blocks of the row-strided kernels: power weights, gather) come from ._common
_POS_INF = math.inf
_NEG_INF = -math.inf


# --------------------------------------------------------------------------- device kernels

@cuda.jit(device=True)
def _signed_pow(w, p):
    # sign(w) * |w|**(p - 1) as the CPU's _signed_pow: w * |w| in w's own precision for p = 3,
    # w itself for p = 2, otherwise a float64 power
    if p == 3.0:
        return w * abs(w)
    if p == 2.0:
        return w
    x = np.float64(w)
    if x == 0.0:
        return 0.0 * x
    a = abs(x) ** (np.float64(p) - 1.0)
    if x > 0.0:
        return a
    return -a


@cuda.jit
def _power_weights(W, p, out):
    """``out[:] = sign(W) * |W|**(p - 1)``; blocks stride over the rows, threads over a row."""
    K, N = W.shape
    for i in range(cuda.blockIdx.x, K, cuda.gridDim.x):
        for j in range(cuda.threadIdx.x, N, cuda.blockDim.x):
            out[i, j] = _signed_pow(W[i, j], p)


def _currents_kernel(tile):
    """The GEMM ``IT[b, i] = sum_j V[b, j] * Wp[i, j]`` (b < m, i < K) for a given tile size: the
    shared :func:`._common._gemm_kernel` with ``A = V``, ``B = Wp`` transposed and one output per
    thread, called as ``(V, Wp, m, K, N, IT)``.

    Launch with ``(ceil(K/tile), ceil(m/tile))`` blocks of ``(tile, tile)`` threads. Each block
    stages a tile x tile patch of ``V`` and of ``Wp`` per step along the features (loads coalesced
    along the features; padded rows avoid bank conflicts), accumulates in float32 and writes
    ``IT`` coalesced along the units. Edges (K, m, N not multiples of the tile) load zeros.
    """
    return _gemm_kernel(tile, False, True, rpt=1)


@cuda.jit(device=True)
def _topk_sample(IT, b, k, win, kth, sv, si, t, nt):
    """One block, sample b: ``win[b]`` = argmax over units of ``IT[b, :]``, ``kth[b]`` = the unit
    with the k-th largest current, in the CPU's order (value descending, index ascending).

    k passes; pass r is a block arg-max over the currents that come after the pass r-1 pick in
    that order. Missing picks (fewer than k currents above -inf) are -1. ``sv``/``si``: the
    block's shared scratch (at least ``nt`` entries)."""
    lv = np.float32(_POS_INF)  # the previous pick: (value, index)
    li = -1
    for r in range(k):
        bv = np.float32(_NEG_INF)
        bi = -1
        for i in range(t, IT.shape[1], nt):
            v = IT[b, i]
            # eligible: above -inf (NaN fails every compare) and after the previous pick
            if v > _NEG_INF and (v < lv or (v == lv and i > li)):
                if v > bv:  # i increases within a thread, so ties keep the lower index
                    bv = v
                    bi = i
        sv[t] = bv
        si[t] = bi
        cuda.syncthreads()
        n = nt
        while n > 1:
            h = (n + 1) // 2
            if t < n - h:
                ov = sv[t + h]
                oi = si[t + h]
                cv = sv[t]
                # entries at -inf are "none" (index -1) and lose to every real current
                if ov > cv or (ov == cv and oi < si[t]):
                    sv[t] = ov
                    si[t] = oi
            cuda.syncthreads()
            n = h
        lv = sv[0]
        li = si[0]
        if t == 0:
            if r == 0:
                win[b] = li
            if r == k - 1:
                kth[b] = li
        cuda.syncthreads()  # everyone has read sv[0] before the next pass writes


@cuda.jit
def _topk_columns(IT, k, win, kth):
    """Block b (one per sample): the top-k picks of sample b (:func:`_topk_sample`)."""
    sv = cuda.shared.array(MAX_BLOCK, np.float32)
    si = cuda.shared.array(MAX_BLOCK, np.int32)
    _topk_sample(IT, cuda.blockIdx.x, k, win, kth, sv, si, cuda.threadIdx.x, cuda.blockDim.x)


@cuda.jit
def _collect_units(win, kth, m, slot, units, n_aff, nc):
    """One thread: the affected units in the CPU's order (first appearance over samples, winner
    before k-th), ``n_aff[0]`` their count; resets ``slot`` to -1 and the max ``nc[0]`` to 0."""
    if cuda.grid(1) != 0:
        return
    n = 0
    for b in range(m):
        u = win[b]
        if u >= 0 and slot[u] < 0:
            slot[u] = n
            units[n] = u
            n += 1
        u = kth[b]
        if u >= 0 and slot[u] < 0:
            slot[u] = n
            units[n] = u
            n += 1
    for s in range(n):
        slot[units[s]] = -1
    n_aff[0] = n
    nc[0] = 0.0


@cuda.jit(device=True)
def _unit_delta(W, V, IT, m, win, kth, dl, u, s, ds, t, nt):
    """One block, affected unit u in slot s: ``xx = sum_b g_b I[u, b]`` and
    ``ds[s, j] = sum_b g_b V[b, j] - xx * W[u, j]`` in float64, samples in batch order (g = +1 for
    the winner, -dl for the k-th). Returns this thread's max |ds|."""
    xx = np.float64(0.0)
    for b in range(m):
        if win[b] == u:
            xx += np.float64(IT[b, u])
        if kth[b] == u:
            xx -= dl * np.float64(IT[b, u])
    local = np.float64(0.0)
    for j in range(t, W.shape[1], nt):
        acc = np.float64(0.0)
        for b in range(m):
            if win[b] == u:
                acc += np.float64(V[b, j])
            if kth[b] == u:
                acc -= dl * np.float64(V[b, j])
        d = acc - xx * np.float64(W[u, j])
        ds[s, j] = d
        if abs(d) > local:
            local = abs(d)
    return local


@cuda.jit(device=True)
def _unit_update(W, Wp, u, s, ds, scale, p, t, nt):
    """One block: ``W[u] += scale * ds[s]`` from the float64 sum and ``Wp[u] = sign(W[u])
    |W[u]|**(p-1)``, as the CPU does."""
    for j in range(t, W.shape[1], nt):
        w = np.float64(W[u, j]) + scale * ds[s, j]
        W[u, j] = w
        Wp[u, j] = _signed_pow(w, p)


@cuda.jit
def _accumulate(W, V, IT, m, win, kth, delta, units, n_aff, ds, nc):
    """Block s (one per affected unit u = units[s]): ``ds[s]`` (:func:`_unit_delta`), then the
    block's max |ds| into ``nc[0]`` (atomic max)."""
    smax = cuda.shared.array(MAX_BLOCK, np.float64)
    s = cuda.blockIdx.x
    if s >= n_aff[0]:  # uniform over the block
        return
    t = cuda.threadIdx.x
    smax[t] = _unit_delta(W, V, IT, m, win, kth, np.float64(delta), units[s], s, ds, t, cuda.blockDim.x)
    r = _block_max(smax, t, cuda.blockDim.x)
    if t == 0:
        cuda.atomic.max(nc, 0, r)


@cuda.jit
def _apply_update(W, Wp, units, n_aff, ds, nc, eps, p):
    """Block s (one per affected unit): ``W[u] += eps * ds[s] / max(nc, prec)`` and ``Wp[u]``
    (:func:`_unit_update`)."""
    s = cuda.blockIdx.x
    if s >= n_aff[0]:
        return
    c = nc[0]
    if c < PREC:
        c = PREC
    _unit_update(W, Wp, units[s], s, ds, np.float64(eps) / c, p, cuda.threadIdx.x, cuda.blockDim.x)


# --------------------------------------------------------------------------- the persistent epoch kernel

_INT_MAX = 2147483647
_epoch_cache: dict = {}


@cuda.jit(device=True)
def _collect_parallel(win, kth, m, first, units, n_aff, sh, t, nt):
    """One block: the affected units in the CPU's order (first appearance over the 2m entries
    win[0], kth[0], win[1], ...), in parallel: an atomic min of the entry index per unit marks
    each unit's first entry, a block prefix sum over those marks (in chunks of the block) gives
    its position. ``first`` is all ``_INT_MAX`` on entry and on return."""
    E = 2 * m
    for e in range(t, E, nt):
        u = win[e // 2] if e % 2 == 0 else kth[e // 2]
        if u >= 0:
            cuda.atomic.min(first, u, e)
    cuda.syncthreads()
    base = 0
    for c0 in range(0, E, nt):
        e = c0 + t
        f = 0
        u = -1
        if e < E:
            u = win[e // 2] if e % 2 == 0 else kth[e // 2]
            if u >= 0 and first[u] == e:
                f = 1
        sh[t] = f
        cuda.syncthreads()
        off = 1
        while off < nt:  # inclusive Hillis-Steele scan of the marks
            v = sh[t - off] if t >= off else 0
            cuda.syncthreads()
            sh[t] += v
            cuda.syncthreads()
            off *= 2
        if f == 1:
            units[base + sh[t] - 1] = u
        total = sh[nt - 1]
        cuda.syncthreads()
        base += total
    for s in range(t, base, nt):  # each thread resets the units it reads (written before the barriers)
        first[units[s]] = _INT_MAX
    if t == 0:
        n_aff[0] = base


def _epoch_kernel(tile):
    """One cooperative launch that walks every minibatch of an epoch (numba-cuda launches it
    cooperatively because it synchronises the grid): per batch six phases separated by grid-wide
    barriers, each output written by one thread, so the results are those of the per-batch
    kernels (:func:`_gather_rows`, the currents GEMM, :func:`_topk_columns`, the unit collection,
    :func:`_accumulate`, :func:`_apply_update`) bit for bit:

    gather the batch's rows | currents ``IT = V Wp^T`` (tile x tile patches, ``rpt`` outputs per
    thread, float32 sums over the features in ascending order, as :func:`._common._gemm_kernel`) |
    top-k per sample (blocks stride over samples) | the affected units (block 0,
    :func:`_collect_parallel`) | ``ds`` and each block's max ``|ds|`` | the global max from the
    blocks' partial maxima, then ``W += eps ds / max(nc, prec)`` and ``Wp``.

    Launch with ``grid <= max cooperative blocks`` blocks of ``tile * tile / rpt`` threads (rpt =
    :func:`._common._rows_per_thread`); arguments ``(W, Wp, X, order, n, B, k, delta, eps, p, V, IT,
    win, kth, first, units, n_aff, ds, partial)``.
    """
    TL = int(tile)
    RPT = _rows_per_thread(TL)
    key = TL
    kern = _epoch_cache.get(key)
    if kern is not None:
        return kern
    T1 = TL + 1
    gemm_patch = _gemm_patch(TL, RPT, False, True)

    @cuda.jit
    def epoch(W, Wp, X, order, n, B, k, delta, eps, p, V, IT, win, kth, first, units, n_aff, ds, partial):
        g = cuda.cg.this_grid()
        As = cuda.shared.array((TL, T1), np.float32)
        Bs = cuda.shared.array((TL, T1), np.float32)
        sv = cuda.shared.array(MAX_BLOCK, np.float32)
        si = cuda.shared.array(MAX_BLOCK, np.int32)
        sm = cuda.shared.array(MAX_BLOCK, np.float64)
        acc = cuda.local.array(RPT, np.float32)
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        bid = cuda.blockIdx.x
        nb = cuda.gridDim.x
        gt = bid * nt + t
        gs = nb * nt
        K, N = W.shape
        tx = t % TL
        ty = t // TL
        dl = np.float64(delta)
        for e in range(gt, K * N, gs):  # Wp from W
            i = e // N
            j = e - i * N
            Wp[i, j] = _signed_pow(W[i, j], p)
        g.sync()
        for start in range(0, n, B):
            m = min(B, n - start)
            for e in range(gt, m * N, gs):  # gather
                r = e // N
                j = e - r * N
                V[r, j] = X[order[start + r], j]
            g.sync()
            tiles_k = (K + TL - 1) // TL  # currents: IT[b, i] = sum_j V[b, j] Wp[i, j]
            n_tiles = tiles_k * ((m + TL - 1) // TL)
            for q in range(bid, n_tiles, nb):
                gemm_patch(V, Wp, m, K, N, IT, (q // tiles_k) * TL, (q % tiles_k) * TL, tx, ty, As, Bs, acc)
            g.sync()
            for b in range(bid, m, nb):  # top-k: one block per sample, k arg-max passes
                _topk_sample(IT, b, k, win, kth, sv, si, t, nt)
            g.sync()
            if bid == 0:  # the affected units, in the CPU's order
                _collect_parallel(win, kth, m, first, units, n_aff, si, t, nt)
            g.sync()
            na = n_aff[0]
            local = np.float64(0.0)
            for s in range(bid, na, nb):  # ds and xx of each affected unit, samples in batch order
                d = _unit_delta(W, V, IT, m, win, kth, dl, units[s], s, ds, t, nt)
                if d > local:
                    local = d
            sm[t] = local
            blockmax = _block_max(sm, t, nt)
            if t == 0:
                partial[bid] = blockmax
            g.sync()
            local = np.float64(0.0)  # the batch's max |ds| from every block's partial max
            for q in range(t, nb, nt):
                if partial[q] > local:
                    local = partial[q]
            sm[t] = local
            c = _block_max(sm, t, nt)
            if c < PREC:
                c = PREC
            scale = np.float64(eps) / c
            for s in range(bid, na, nb):
                _unit_update(W, Wp, units[s], s, ds, scale, p, t, nt)
            g.sync()

    _epoch_cache[key] = epoch
    return epoch


def _cooperative_grid(kern, args, block):
    """The most blocks of ``kern`` that can be resident at once (a cooperative launch may not use
    more): from the driver on a GPU, 1 in the simulator (it runs cooperative grids of one block)."""
    from numba import config, typeof

    if config.ENABLE_CUDASIM:
        return 1
    sig = tuple(typeof(a) for a in args)
    kern.compile(sig)
    return max(1, int(kern.overloads[sig].max_cooperative_grid_blocks(block)))


# --------------------------------------------------------------------------- host side

class HebbianBuffers(_DeviceSamples):
    """Device scratch for :func:`hebbian_epoch`, allocated once per (K, N, B, k) and reused, plus
    the device copy of the samples ``X`` (uploaded once, reused across epochs).

    Parameters: ``n_units, n_features, batch_size, k, dtype`` as the CPU ``HebbianBuffers``
    (``dtype`` must be float32); ``block``: threads per block of the 1-D kernels (None: the module's
    :data:`CUDA_BLOCK`, read at call time); ``tile``: the GEMM tile edge (None: :data:`TILE`);
    ``persistent``: run an epoch without a callback as one cooperative launch (default True).

    The X cache keeps a reference to the host array and is reused while the same object with the
    same shape is passed (contents modified in place are NOT re-uploaded: pass a new array or
    call :meth:`forget_samples`). ``x_uploads`` counts host-to-device uploads of X.
    When ``hebbian_epoch`` gets buffers of another shape it reallocates the scratch in place and
    keeps the X cache.
    """

    def __init__(self, n_units, n_features, batch_size, k, dtype=np.float32, block=None, tile=None,
                 persistent=True):
        _check_float32(dtype)
        self.persistent = bool(persistent)
        self.block = None if block is None else _check_block(block)
        self.tile = TILE if tile is None else int(tile)
        if not (1 <= self.tile and self.tile * self.tile <= MAX_BLOCK):
            raise ValueError(f"tile must satisfy 1 <= tile and tile**2 <= {MAX_BLOCK}, got {tile}")
        self._init_samples()
        self._allocate(n_units, n_features, batch_size, k)

    def _allocate(self, n_units, n_features, batch_size, k):
        K, N, B = int(n_units), int(n_features), int(batch_size)
        self.shape = (K, N, B, int(k))
        self.W = cuda.device_array((K, N), np.float32)  # staging for a host W
        self.Wp = cuda.device_array((K, N), np.float32)
        self.V = cuda.device_array((B, N), np.float32)
        self.IT = cuda.device_array((B, K), np.float32)  # currents, transposed: (sample, unit)
        self.win = cuda.device_array(B, np.int32)
        self.kth = cuda.device_array(B, np.int32)
        self.slot = cuda.to_device(np.full(K, -1, np.int32))
        self.units = cuda.device_array(2 * B, np.int32)
        self.n_aff = cuda.to_device(np.zeros(1, np.int32))
        self.ds = cuda.device_array((2 * B, N), np.float64)
        self.nc = cuda.to_device(np.zeros(1, np.float64))
        self.first = cuda.to_device(np.full(K, _INT_MAX, np.int32))  # the persistent kernel's marks
        self.partial = cuda.device_array(MAX_GRID, np.float64)  # its blocks' max |ds|
        self.grid = None  # its cooperative grid, asked of the driver once
        self.last_rows = 0

    def last_winners(self):
        """Host copies (int64) of the last batch's winners and k-th units (a device sync)."""
        m = self.last_rows
        return (self.win.copy_to_host()[:m].astype(np.int64),
                self.kth.copy_to_host()[:m].astype(np.int64))


def hebbian_epoch(W, X, order, batch_size, k, delta, eps, p, buffers=None, callback=None):
    """One pass over ``X[order]`` in minibatches of ``batch_size``, updating ``W`` in place, on the GPU.

    Parameters
    ----------
    W : (K, N) float32, C-contiguous; updated in place. A host array is copied to the device at
        the start and back into the same array at the end; a device array (Numba, or anything with
        ``__cuda_array_interface__``) is updated in place on the device without copies.
    X : (n, N) float32 samples (host or device). A host X is uploaded once and cached in
        ``buffers`` (pass the same ``buffers`` every epoch to upload it once).
    order : (m,) int row indices into X, the presentation order (a final short batch is used);
        uploaded each call.
    batch_size, k, delta, eps, p : the rule's constants for this epoch.
    buffers : :class:`HebbianBuffers` or None (then fresh device scratch for this call, and X is
        uploaded again). Its ``block`` and ``tile`` choose the launch configuration.
    callback : called as ``callback(batch_index, n_rows)`` after each minibatch's kernels are
        queued (they may still be running), or None; ``buffers.last_winners()`` there reads that
        batch's winners (a device sync).

    Returns
    -------
    The number of batches.
    """
    W, dW, K, N, B = _check_epoch(W, batch_size)
    k = int(k)
    if not 1 <= k <= K:
        raise ValueError(f"k must be in [1, n_units={K}], got {k}")
    if buffers is None:
        buffers = HebbianBuffers(K, N, B, k)
    elif buffers.shape != (K, N, B, k):
        buffers._allocate(K, N, B, k)
    bf = buffers
    block = _check_block(CUDA_BLOCK if bf.block is None else bf.block)
    tile = bf.tile

    dX, d_order, n = bf._epoch_inputs(X, order, N)
    Wd = _stage_weights(W, dW, bf.W)
    delta = np.float64(delta)
    eps = np.float64(eps)
    p = np.float64(p)

    if callback is None and bf.persistent:
        # one cooperative launch walks every batch of the epoch (no per-batch launches)
        kern = _epoch_kernel(tile)
        threads = tile * (tile // _rows_per_thread(tile))
        args = (Wd, bf.Wp, dX, d_order, np.int64(n), np.int64(B), np.int64(k), delta, eps, p, bf.V, bf.IT,
                bf.win, bf.kth, bf.first, bf.units, bf.n_aff, bf.ds, bf.partial)
        if bf.grid is None:
            try:  # compiles; a grid barrier links cudadevrt, which a bare driver install may lack
                bf.grid = max(1, min(MAX_GRID, _cooperative_grid(kern, args, threads)))
            except Exception as exc:  # noqa: BLE001  (any compile or link failure: fall back, say why)
                import warnings

                warnings.warn(f"the persistent epoch kernel could not be built ({type(exc).__name__}: {exc}); "
                              "using the six per-batch kernels (same results, more launches)", RuntimeWarning,
                              stacklevel=2)
                bf.persistent = False
        if bf.persistent:
            if n > 0:
                kern[bf.grid, threads](*args)
            n_batches = -(-n // B)
            bf.last_rows = n - (n_batches - 1) * B if n_batches else 0
            _unstage_weights(W, dW, bf.W)
            return n_batches

    gemm = _currents_kernel(tile)
    _power_weights[max(1, min(K, MAX_GRID)), block](Wd, p, bf.Wp)

    def launch(start, m):
        _gather_rows[min(m, MAX_GRID), block](dX, d_order, start, m, bf.V)
        gemm[(-(-K // tile), -(-m // tile)), (tile, tile)](bf.V, bf.Wp, m, K, N, bf.IT)
        _topk_columns[m, block](bf.IT, k, bf.win, bf.kth)
        _collect_units[1, 1](bf.win, bf.kth, m, bf.slot, bf.units, bf.n_aff, bf.nc)
        _accumulate[2 * m, block](Wd, bf.V, bf.IT, m, bf.win, bf.kth, delta, bf.units, bf.n_aff,
                                  bf.ds, bf.nc)
        _apply_update[2 * m, block](Wd, bf.Wp, bf.units, bf.n_aff, bf.ds, bf.nc, eps, p)

    n_batches = _run_batches(bf, n, B, launch, callback)
    _unstage_weights(W, dW, bf.W)
    return n_batches
