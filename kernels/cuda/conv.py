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

import numpy as np
from numba import cuda

from .._config import CUDA_BLOCK
from ..cpu.conv import _geometry, batch_norm_train, out_size
from ._common import MAX_BLOCK, MAX_GRID, _check_block, _stage_weights, _unstage_weights
from .hebbian import HebbianBuffers, _accumulate, _collect_units, _currents_kernel, _topk_columns, _topk_sample
from .hebbian import _apply_update as _kh_apply_update
from .hebbian import _power_weights as _kh_power_weights
from .softhebb import SoftHebbBuffers, batch_steps

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
def _anti_hebbian_rows(U, Y, win):
    """Block b (one per sample, i.e. per patch): the winner (the first unit with the largest
    current, :func:`.hebbian._topk_sample` with k = 1) into ``win[b]``; ``Y[b, i] = -Y[b, i]``
    for every other unit."""
    sv = cuda.shared.array(MAX_BLOCK, np.float32)
    si = cuda.shared.array(MAX_BLOCK, np.int32)
    b = cuda.blockIdx.x
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    _topk_sample(U, b, 1, win, win, sv, si, t, nt)  # ends with a barrier after win[b] is written
    w = win[b]
    for i in range(t, U.shape[1], nt):
        if i != w:
            Y[b, i] = -Y[b, i]


def _device_batches(X, order, B, k, stride, padding, padding_mode, bn_mean, bn_var, images, V, block, grid):
    """The host side of both drivers' batch loop: each minibatch of images normalised on the
    host (the CPU module's :func:`batch_norm_train`, the same statistics), copied into
    ``images`` and turned into patch rows of ``V`` on the device (:func:`_im2col`); yields (patch
    rows, images)."""
    n, C, H, W = X.shape
    Ho, Wo = out_size(H, k, stride, padding), out_size(W, k, stride, padding)
    N = V.shape[1]
    order = np.asarray(order)
    for start in range(0, order.shape[0], B):
        Xb = X[order[start:start + B]]
        if bn_mean is not None:
            Xb = batch_norm_train(Xb, bn_mean, bn_var)
        nb = Xb.shape[0]
        dev = images if nb == B else images[:nb]
        dev.copy_to_device(np.ascontiguousarray(Xb, np.float32))
        m = nb * Ho * Wo
        _im2col[min(-(-m * N // block), grid), block](dev, k, stride, padding, padding_mode == "reflect", Ho, Wo,
                                                     m, V)
        yield m, nb


class ConvBuffers(SoftHebbBuffers):
    """:class:`.softhebb.SoftHebbBuffers` for the patch matrix of a minibatch (``batch_size`` =
    its rows) plus the device copy of one normalised minibatch of images."""

    def __init__(self, n_units, n_features, rows, image_shape, block=None, tile=None, grid=None):
        super().__init__(n_units, n_features, rows, block=block, tile=tile, grid=grid)
        self.images = cuda.device_array(tuple(int(d) for d in image_shape), np.float32)
        self.win = cuda.device_array(int(rows), np.int32)  # each patch's winner


def conv_softhebb_epoch(W, X, order, batch_size, kernel_size, stride, padding, padding_mode, t_invert, lr, p,
                        power_lr, adaptive, bn_mean=None, bn_var=None, buffers=None, callback=None):
    """:func:`bioreps.kernels.cpu.conv.conv_softhebb_epoch` on the GPU (same arguments and
    result up to float32 rounding; ``W`` a host float32 array updated in place, or a device
    array). ``buffers``: a :class:`ConvBuffers` reused across calls."""
    K, N, rows = _geometry(W, X, kernel_size, stride, padding, batch_size)
    B = int(batch_size)
    image_shape = (B,) + tuple(X.shape[1:])
    if buffers is None or buffers.shape != (K, N, rows) or buffers.images.shape != image_shape:
        buffers = ConvBuffers(K, N, rows, image_shape)
    bf = buffers
    block = _check_block(CUDA_BLOCK if bf.block is None else bf.block)
    dW = None if isinstance(W, np.ndarray) else W
    Wd = _stage_weights(W, dW, bf.W)
    step = batch_steps(Wd, bf, block, t_invert, lr, p, power_lr, adaptive,
                       after_softmax=lambda m: _anti_hebbian_rows[m, block](bf.U, bf.Y, bf.win))
    n_batches = _run_batches(_device_batches(X, order, B, int(kernel_size), int(stride), int(padding), padding_mode,
                                             bn_mean, bn_var, bf.images, bf.V, block, bf.grid), step, bf, callback)
    _unstage_weights(W, dW, bf.W)
    return n_batches


def _run_batches(batches, step, bf, callback):
    """``step(m)`` for each (patch rows, images) minibatch of ``batches`` (:func:`_device_batches`),
    then the bookkeeping both drivers share: ``bf.last_rows``, ``callback(batch index, images)``.
    Returns the number of batches."""
    n_batches = 0
    for m, nb in batches:
        step(m)
        bf.last_rows = m
        n_batches += 1
        if callback is not None:
            callback(n_batches, nb)
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
    k = int(k)
    if not 1 <= k <= K:
        raise ValueError(f"k must be in [1, n_units={K}], got {k}")
    image_shape = (B,) + tuple(X.shape[1:])
    if buffers is None or buffers.shape != (K, N, rows, k) or buffers.images.shape != image_shape:
        buffers = ConvHebbianBuffers(K, N, rows, k, image_shape)
    bf = buffers
    block = _check_block(CUDA_BLOCK if bf.block is None else bf.block)
    tile = bf.tile
    dW = None if isinstance(W, np.ndarray) else W
    Wd = _stage_weights(W, dW, bf.W)
    delta, eps, p = np.float64(delta), np.float64(eps), np.float64(p)
    gemm = _currents_kernel(tile)
    _kh_power_weights[max(1, min(K, MAX_GRID)), block](Wd, p, bf.Wp)

    def step(m):
        gemm[(-(-K // tile), -(-m // tile)), (tile, tile)](bf.V, bf.Wp, m, K, N, bf.IT)
        _topk_columns[m, block](bf.IT, k, bf.win, bf.kth)
        _collect_units[1, 1](bf.win, bf.kth, m, bf.slot, bf.units, bf.n_aff, bf.nc)
        _accumulate[min(2 * m, K), block](Wd, bf.V, bf.IT, m, bf.win, bf.kth, delta, bf.units, bf.n_aff, bf.ds,
                                          bf.nc)
        _kh_apply_update[min(2 * m, K), block](Wd, bf.Wp, bf.units, bf.n_aff, bf.ds, bf.nc, eps, p)

    n_batches = _run_batches(_device_batches(X, order, B, int(kernel_size), int(stride), int(padding), padding_mode,
                                             bn_mean, bn_var, bf.images, bf.V, block, MAX_GRID), step, bf, callback)
    _unstage_weights(W, dW, bf.W)
    return n_batches
