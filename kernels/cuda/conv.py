"""Convolutional SoftHebb and Krotov-Hopfield on the GPU: Numba-CUDA twins of
``kernels/cpu/conv.py`` (:func:`conv_softhebb_epoch`, :func:`conv_hebbian_epoch`, the same
signatures).

Per minibatch of images: the batch normalisation of the inputs is computed on the host with the
CPU module's function (a few thousand numbers per batch: the same float64 statistics and running
update as the CPU path), the normalised images are copied to the device, and the device does the
rest: :func:`_im2col` writes every patch as a row of ``V`` (reflect or zero padding by index,
nothing padded in memory), then the dense SoftHebb kernels of :mod:`.softhebb` (currents GEMM,
per-row softmax over the channels), :func:`_anti_hebbian_rows` (every channel but each
position's winner negated, the winner the first largest current as ``torch.argmax``), the
weighted sums, the second GEMM, the global max and the update with the adaptive rate.

The GEMMs sum in another order than the CPU's BLAS, so weights agree to float32 rounding
(tested in the simulator against the CPU kernel), not bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .._config import CUDA_BLOCK
from ..cpu.conv import _geometry, batch_norm_train, out_size
from ._common import MAX_BLOCK, MAX_GRID, _check_block, _gemm_kernel, _rows_per_thread, _stage_weights, _unstage_weights
from .hebbian import (HebbianBuffers, _accumulate, _collect_units, _currents_kernel, _topk_columns)
from .hebbian import _apply_update as _kh_apply_update
from .hebbian import _power_weights as _kh_power_weights
from .softhebb import (SoftHebbBuffers, _apply_update, _final_max, _partial_max, _power_weights, _row_lr,
                       _softmax_rows, _weighted_sums)

__all__ = ["conv_softhebb_epoch", "conv_hebbian_epoch", "ConvBuffers", "ConvHebbianBuffers"]


@cuda.jit
def _im2col(X, k, stride, padding, reflect, Ho, Wo, rows, V):
    """``V[r, f]`` for r < rows (image, y, x) and f (c, ky, kx): the input pixel under that
    kernel tap, the padding resolved by index (reflect: mirrored without the edge; else 0).
    Threads stride over the rows * features entries."""
    B, C, H, W = X.shape
    N = V.shape[1]
    kk = k * k
    for e in range(cuda.grid(1), rows * N, cuda.gridsize(1)):
        r = e // N
        f = e - r * N
        b = r // (Ho * Wo)
        rem = r - b * (Ho * Wo)
        y = rem // Wo
        x = rem - y * Wo
        c = f // kk
        t = f - c * kk
        ky = t // k
        kx = t - ky * k
        iy = y * stride - padding + ky
        ix = x * stride - padding + kx
        v = np.float32(0.0)
        if reflect:
            if iy < 0:
                iy = -iy
            if iy >= H:
                iy = 2 * H - 2 - iy
            if ix < 0:
                ix = -ix
            if ix >= W:
                ix = 2 * W - 2 - ix
            v = X[b, c, iy, ix]
        elif 0 <= iy < H and 0 <= ix < W:
            v = X[b, c, iy, ix]
        V[r, f] = v


@cuda.jit
def _anti_hebbian_rows(U, Y):
    """Block b (one per sample, i.e. per patch): the winner = the first unit with the largest
    current ``U[b, :]``; ``Y[b, i] = -Y[b, i]`` for every other unit."""
    sv = cuda.shared.array(MAX_BLOCK, np.float32)
    si = cuda.shared.array(MAX_BLOCK, np.int32)
    b = cuda.blockIdx.x
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    K = U.shape[1]
    bv = np.float32(-math.inf)
    bi = K
    for i in range(t, K, nt):
        v = U[b, i]
        if v > bv:  # i increases within a thread: ties keep the lower index
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
            if ov > sv[t] or (ov == sv[t] and oi < si[t]):
                sv[t] = ov
                si[t] = oi
        cuda.syncthreads()
        n = h
    win = si[0]
    for i in range(t, K, nt):
        if i != win:
            Y[b, i] = -Y[b, i]


class ConvBuffers(SoftHebbBuffers):
    """:class:`.softhebb.SoftHebbBuffers` for the patch matrix of a minibatch (``batch_size`` =
    its rows) plus the device copy of one normalised minibatch of images."""

    def __init__(self, n_units, n_features, rows, image_shape, block=None, tile=None, grid=None):
        super().__init__(n_units, n_features, rows, block=block, tile=tile, grid=grid)
        self.images = cuda.device_array(tuple(int(d) for d in image_shape), np.float32)


def conv_softhebb_epoch(W, X, order, batch_size, kernel_size, stride, padding, padding_mode, t_invert, lr, p,
                        power_lr, adaptive, bn_mean=None, bn_var=None, buffers=None, callback=None):
    """:func:`bioreps.kernels.cpu.conv.conv_softhebb_epoch` on the GPU (same arguments and
    result up to float32 rounding; ``W`` a host float32 array updated in place, or a device
    array). ``buffers``: a :class:`ConvBuffers` reused across calls."""
    K, N, rows = _geometry(W, X, kernel_size, stride, padding, batch_size)
    B = int(batch_size)
    n_img, C, H, Wd = X.shape
    k, s, pd = int(kernel_size), int(stride), int(padding)
    Ho, Wo = out_size(H, k, s, pd), out_size(Wd, k, s, pd)
    if buffers is None or buffers.shape != (K, N, rows) or buffers.images.shape != (B, C, H, Wd):
        buffers = ConvBuffers(K, N, rows, (B, C, H, Wd))
    bf = buffers
    block = _check_block(CUDA_BLOCK if bf.block is None else bf.block)
    tile = bf.tile
    dW = None if isinstance(W, np.ndarray) else W
    Wd_ = _stage_weights(W, dW, bf.W)
    t_invert, lr, p, power_lr = np.float64(t_invert), np.float64(lr), np.float64(p), np.float64(power_lr)
    adaptive = bool(adaptive)
    refresh_wp = bool(p != 2.0)
    Wp = bf.Wp if refresh_wp else Wd_
    gemm_u = _gemm_kernel(tile, False, True)  # U (m, K) = V (m, N) @ Wp (K, N)^T
    gemm_g = _gemm_kernel(tile, True, False)  # G (K, N) = Y (m, K)^T @ V (m, N)
    gemm_threads = (tile, tile // _rows_per_thread(tile))
    grid_rows = max(1, min(K, bf.grid))
    if refresh_wp:
        _power_weights[grid_rows, block](Wd_, p, bf.Wp)
    _row_lr[grid_rows, block](Wd_, Wp, lr, p, power_lr, adaptive, bf.lrs)
    order = np.asarray(order)
    reflect = padding_mode == "reflect"
    n_batches = 0
    for start in range(0, order.shape[0], B):
        idx = order[start:start + B]
        Xb = X[idx]
        if bn_mean is not None:
            Xb = batch_norm_train(Xb, bn_mean, bn_var)
        nb = Xb.shape[0]
        images = bf.images if nb == B else bf.images[:nb]
        images.copy_to_device(np.ascontiguousarray(Xb, np.float32))
        m = nb * Ho * Wo
        _im2col[min(-(-m * N // block), bf.grid), block](images, k, s, pd, reflect, Ho, Wo, m, bf.V)
        gemm_u[(-(-K // tile), -(-m // tile)), gemm_threads](bf.V, Wp, m, K, N, bf.U)
        _softmax_rows[m, block](bf.U, t_invert, bf.Y)
        _anti_hebbian_rows[m, block](bf.U, bf.Y)
        _weighted_sums[min(-(-K // block), bf.grid), block](bf.Y, bf.U, m, bf.xx)
        gemm_g[(-(-N // tile), -(-K // tile)), gemm_threads](bf.Y, bf.V, K, N, m, bf.G)
        _partial_max[grid_rows, block](bf.G, Wd_, bf.xx, bf.partial)
        _final_max[1, block](bf.partial, grid_rows, bf.nc)
        _apply_update[grid_rows, block](Wd_, Wp, bf.G, bf.xx, bf.nc, bf.lrs, lr, p, power_lr, adaptive, refresh_wp)
        bf.last_rows = m
        n_batches += 1
        if callback is not None:
            callback(n_batches, nb)
    _unstage_weights(W, dW, bf.W)
    return n_batches


class ConvHebbianBuffers(HebbianBuffers):
    """:class:`.hebbian.HebbianBuffers` (per-batch kernels) for the patch matrix of a minibatch
    plus the device copy of one normalised minibatch of images."""

    def __init__(self, n_units, n_features, rows, k, image_shape, block=None, tile=None):
        super().__init__(n_units, n_features, rows, k, block=block, tile=tile, persistent=False)
        self.images = cuda.device_array(tuple(int(d) for d in image_shape), np.float32)


def conv_hebbian_epoch(W, X, order, batch_size, kernel_size, stride, padding, padding_mode, k, delta, eps, p,
                       bn_mean=None, bn_var=None, buffers=None, callback=None):
    """:func:`bioreps.kernels.cpu.conv.conv_hebbian_epoch` on the GPU: per minibatch the patch
    matrix built on the device (:func:`_im2col`), then the Krotov-Hopfield per-batch kernels of
    :mod:`.hebbian` (currents GEMM, top-k per patch, the affected units, their float64 update).
    Same arguments; weights equal the CPU's up to the GEMM's float32 rounding."""
    K, N, rows = _geometry(W, X, kernel_size, stride, padding, batch_size)
    B = int(batch_size)
    n_img, C, H, Wd = X.shape
    kk, s, pd = int(kernel_size), int(stride), int(padding)
    k = int(k)
    if not 1 <= k <= K:
        raise ValueError(f"k must be in [1, n_units={K}], got {k}")
    Ho, Wo = out_size(H, kk, s, pd), out_size(Wd, kk, s, pd)
    if buffers is None or buffers.shape != (K, N, rows, k) or buffers.images.shape != (B, C, H, Wd):
        buffers = ConvHebbianBuffers(K, N, rows, k, (B, C, H, Wd))
    bf = buffers
    block = _check_block(CUDA_BLOCK if bf.block is None else bf.block)
    tile = bf.tile
    dW = None if isinstance(W, np.ndarray) else W
    Wd_ = _stage_weights(W, dW, bf.W)
    delta, eps, p = np.float64(delta), np.float64(eps), np.float64(p)
    gemm = _currents_kernel(tile)
    _kh_power_weights[max(1, min(K, MAX_GRID)), block](Wd_, p, bf.Wp)
    order = np.asarray(order)
    reflect = padding_mode == "reflect"
    n_batches = 0
    for start in range(0, order.shape[0], B):
        Xb = X[order[start:start + B]]
        if bn_mean is not None:
            Xb = batch_norm_train(Xb, bn_mean, bn_var)
        nb = Xb.shape[0]
        images = bf.images if nb == B else bf.images[:nb]
        images.copy_to_device(np.ascontiguousarray(Xb, np.float32))
        m = nb * Ho * Wo
        _im2col[min(-(-m * N // block), MAX_GRID), block](images, kk, s, pd, reflect, Ho, Wo, m, bf.V)
        gemm[(-(-K // tile), -(-m // tile)), (tile, tile)](bf.V, bf.Wp, m, K, N, bf.IT)
        _topk_columns[m, block](bf.IT, k, bf.win, bf.kth)
        _collect_units[1, 1](bf.win, bf.kth, m, bf.slot, bf.units, bf.n_aff, bf.nc)
        _accumulate[min(2 * m, K), block](Wd_, bf.V, bf.IT, m, bf.win, bf.kth, delta, bf.units, bf.n_aff, bf.ds,
                                          bf.nc)
        _kh_apply_update[min(2 * m, K), block](Wd_, bf.Wp, bf.units, bf.n_aff, bf.ds, bf.nc, eps, p)
        bf.last_rows = m
        n_batches += 1
        if callback is not None:
            callback(n_batches, nb)
    _unstage_weights(W, dW, bf.W)
    return n_batches
