"""Convolutional SoftHebb (soft winner-take-all Hebbian plasticity on image patches): CPU kernels.

After Journé, Garcia Rodriguez, Guo & Moraitis, "Hebbian deep learning without feedback" (ICLR
2023), reference code NeuromorphicComputing/SoftHebb, ``hebbconv.py`` (``HebbSoftKrotovConv2d``,
mode 0, the class its presets use) and its single-file rewrite ``demo.py``. One training step on
a minibatch of B images (n, C, H, W):

1. (``batch_norm``) each input channel normalised by the batch's mean and biased variance over
   images and positions (``BatchNorm2d(C, affine=False)`` in training mode, eps 1e-5); the
   running mean and unbiased variance updated with momentum 0.1 (what ``transform`` uses);
2. padding (``reflect`` as the reference, or zeros), then every k x k patch at the stride as a
   row: the (B * Ho * Wo, C * k * k) matrix ``V`` (:func:`patches`, features ordered (c, ky, kx)
   as a conv weight ``(K, C, k, k)`` flattens);
3. the dense SoftHebb step on those rows (:func:`bioreps.kernels.cpu.softhebb.softhebb_batch`):
   currents ``u = W v`` per patch, ``y = softmax(t_invert * u)`` over the K channels at each
   position, SoftHebb's soft anti-Hebbian sign (every channel but the position's winner gets
   ``-y``), ``dW = sum over images and positions of y (v - u w)``, scaled by its largest entry
   over the whole tensor, times the per-channel adaptive rate ``lr * (| ||w||_2 - 1 | + 1e-10) **
   power_lr`` taken from the weights before the step. This is the reference's
   ``yx - yu * W`` with ``yx = conv2d(x^T, y^T)``: the same sums, gathered from the patch matrix.

What the layer passes on (``transform``): ``u`` at every position, SoftHebb's triangle
activation ``relu(u - mean over channels of u) ** power`` (:func:`triangle`), then pooling
(:func:`pool`, max or average, torch's ``MaxPool2d``/``AvgPool2d`` semantics with
``count_include_pad``).

The patch matrix is built with NumPy stride tricks and copied once per batch; the two GEMMs run
through BLAS (every core); the competition and the update are the dense kernel's Numba loops.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._config import njit_options
from .softhebb import SoftHebbBuffers, softhebb_batch, start_epoch

__all__ = ["out_size", "pad", "patches", "triangle", "pool", "activation", "batch_norm_batch", "batch_norm_train", "batch_norm_eval",
           "conv_softhebb_epoch", "BN_EPS", "BN_MOMENTUM", "PADDING_MODES", "POOLS"]

BN_EPS = 1e-5  # torch BatchNorm2d defaults
BN_MOMENTUM = 0.1
PADDING_MODES = ("reflect", "zeros")
POOLS = ("max", "avg")


def out_size(n, k, stride, padding):
    """Output length of a window of ``k`` at ``stride`` over ``n`` padded by ``padding`` on both sides."""
    return (n + 2 * padding - k) // stride + 1


def pad(X, padding, mode):
    """``X`` (B, C, H, W) padded by ``padding`` on each side of H and W (``reflect``: torch's
    reflection, the edge not repeated; ``zeros``)."""
    if padding == 0:
        return X
    width = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    return np.pad(X, width, mode="reflect" if mode == "reflect" else "constant")


def patches(Xp, k, stride, out=None):
    """Every k x k patch of the padded images ``Xp`` (B, C, Hp, Wp) at ``stride`` as rows of a
    float32 (B * Ho * Wo, C * k * k) matrix: rows ordered (image, y, x), features (c, ky, kx)."""
    B, C = Xp.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(Xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    Ho, Wo = win.shape[2], win.shape[3]
    shape = (B * Ho * Wo, C * k * k)
    if out is None:
        out = np.empty(shape, np.float32)
    out.reshape(B, Ho, Wo, C, k, k)[...] = win.transpose(0, 2, 3, 1, 4, 5)
    return out


def batch_norm_batch(X, eps=BN_EPS):
    """``X`` (B, C, H, W) normalised per channel by the batch's mean and biased variance (float64
    statistics), returned float32, with that mean and variance: what ``BatchNorm2d`` in training
    mode passes on (the running statistics are :func:`batch_norm_train`'s business)."""
    Xd = X.astype(np.float64)
    mean = Xd.mean(axis=(0, 2, 3))
    var = Xd.var(axis=(0, 2, 3))
    out = ((Xd - mean[None, :, None, None]) / np.sqrt(var + eps)[None, :, None, None]).astype(np.float32)
    return out, mean, var


def batch_norm_train(X, running_mean, running_var, eps=BN_EPS, momentum=BN_MOMENTUM):
    """:func:`batch_norm_batch`, and ``running_mean``/``running_var`` (C,) float64 updated in
    place with the unbiased variance, as torch's ``BatchNorm2d`` in training mode."""
    out, mean, var = batch_norm_batch(X, eps)
    n = X.shape[0] * X.shape[2] * X.shape[3]
    running_mean *= 1.0 - momentum
    running_mean += momentum * mean
    running_var *= 1.0 - momentum
    running_var += momentum * var * (n / max(n - 1, 1))
    return out


def batch_norm_eval(X, running_mean, running_var, eps=BN_EPS):
    """``X`` (B, C, H, W) normalised per channel by the running statistics (evaluation mode)."""
    scale = (1.0 / np.sqrt(running_var + eps)).astype(np.float32)
    return (X - running_mean.astype(np.float32)[None, :, None, None]) * scale[None, :, None, None]


def triangle(U, power, axis=1):
    """SoftHebb's ``Triangle``: ``relu(U - mean over channels of U) ** power``; the channels are
    ``axis`` (1 for (B, K, H, W), -1 for channel-last (B, H, W, K))."""
    A = np.maximum(U - U.mean(axis=axis, keepdims=True), 0.0)
    return A if power == 1.0 else A ** np.float32(power)


def pool(A, kind, k, stride, padding, channels_last=False):
    """Max or average pooling of ``A`` (B, K, H, W), or (B, H, W, K) with ``channels_last``,
    over k x k windows at ``stride``, padded by ``padding`` (max: padding never wins; average:
    padded zeros count, torch's default). One vectorised max/add per window offset."""
    hw = (1, 2) if channels_last else (2, 3)
    H, W = A.shape[hw[0]], A.shape[hw[1]]
    Ho, Wo = out_size(H, k, stride, padding), out_size(W, k, stride, padding)
    if padding:
        width = [(0, 0)] * 4
        width[hw[0]] = width[hw[1]] = (padding, padding)
        A = np.pad(A, width, constant_values=-np.inf if kind == "max" else 0.0)
    out = None
    for dy in range(k):
        for dx in range(k):
            sl = [slice(None)] * 4
            sl[hw[0]] = slice(dy, dy + stride * (Ho - 1) + 1, stride)
            sl[hw[1]] = slice(dx, dx + stride * (Wo - 1) + 1, stride)
            w = A[tuple(sl)]
            if out is None:
                out = w.astype(np.float64 if kind == "avg" else A.dtype, copy=True)
            elif kind == "max":
                np.maximum(out, w, out=out)
            else:
                out += w
    return out if kind == "max" else (out / (k * k)).astype(A.dtype)


@njit(**njit_options())
def _triangle_inplace(U, center):
    """``U`` (B, H, W, K) float32 <- relu(U - mean over K) (the mean in float64), or relu(U)
    when not ``center``."""
    B, H, W, K = U.shape
    for b in range(B):
        for y in range(H):
            for x in range(W):
                m = 0.0
                if center:
                    for c in range(K):
                        m += U[b, y, x, c]
                m = np.float32(m / K)
                for c in range(K):
                    v = U[b, y, x, c] - m
                    U[b, y, x, c] = v if v > 0 else np.float32(0.0)


@njit(**njit_options())
def _pool_nhwc(A, is_max, k, stride, padding, out):
    """``out`` (B, Ho, Wo, K) <- max or average (padded zeros counted) of ``A`` (B, H, W, K) over
    k x k windows; windows read channel rows (contiguous)."""
    B, H, W, K = A.shape
    Ho, Wo = out.shape[1], out.shape[2]
    acc = np.empty(K, np.float64)
    for b in range(B):
        for oy in range(Ho):
            for ox in range(Wo):
                for c in range(K):
                    acc[c] = -np.inf if is_max else 0.0
                for dy in range(k):
                    iy = oy * stride - padding + dy
                    if iy < 0 or iy >= H:
                        continue
                    for dx in range(k):
                        ix = ox * stride - padding + dx
                        if ix < 0 or ix >= W:
                            continue
                        if is_max:
                            for c in range(K):
                                v = A[b, iy, ix, c]
                                if v > acc[c]:
                                    acc[c] = v
                        else:
                            for c in range(K):
                                acc[c] += A[b, iy, ix, c]
                for c in range(K):
                    out[b, oy, ox, c] = acc[c] if is_max else acc[c] / (k * k)


def activation(U, power, pool_spec, triangle=True):
    """What the layer passes on from its currents ``U`` (B, H, W, K) channel-last (overwritten):
    the triangle activation ``relu(U - mean_c U) ** power`` (or ``relu(U) ** power`` without
    ``triangle``: the Krotov-Hopfield activation), then the pooling ``pool_spec`` ((kind, k, stride, padding) or None),
    as (B, K, H', W') float32. With max pooling the power comes after the pool (a power of a
    non-negative number is increasing, so the same values; 4x fewer powers for a 4/2 pool)."""
    U = np.ascontiguousarray(U, np.float32)
    _triangle_inplace(U, bool(triangle))
    late = pool_spec is not None and pool_spec[0] == "max"
    if power != 1.0 and not late:
        np.power(U, np.float32(power), out=U)
    if pool_spec is not None:
        kind, k, st, pd = pool_spec
        Ho, Wo = out_size(U.shape[1], k, st, pd), out_size(U.shape[2], k, st, pd)
        out = np.empty((U.shape[0], Ho, Wo, U.shape[3]), np.float32)
        _pool_nhwc(U, kind == "max", k, st, pd, out)
        U = out
    if power != 1.0 and late:
        np.power(U, np.float32(power), out=U)
    return np.ascontiguousarray(U.transpose(0, 3, 1, 2))


def _patch_batches(X, order, batch_size, kernel_size, stride, padding, padding_mode, bn_mean, bn_var, V):
    """For each minibatch of ``batch_size`` images of ``X[order]``: (batch) normalised, padded,
    its patches written into the first rows of ``V``; yields (number of patch rows, images)."""
    k, s, pd = int(kernel_size), int(stride), int(padding)
    for start in range(0, len(order), int(batch_size)):
        Xb = X[order[start:start + int(batch_size)]]
        if bn_mean is not None:
            Xb = batch_norm_train(Xb, bn_mean, bn_var)
        P = out_size(Xb.shape[2], k, s, pd) * out_size(Xb.shape[3], k, s, pd)
        m = Xb.shape[0] * P
        patches(pad(Xb, pd, padding_mode), k, s, out=V[:m])
        yield m, Xb.shape[0]


def _geometry(W, X, kernel_size, stride, padding, batch_size):
    """(K, N, patch rows of a full minibatch), checked."""
    W = np.asarray(W)
    if W.dtype != np.float32 or W.ndim != 2 or not W.flags.c_contiguous:
        raise TypeError("W must be a 2-D C-contiguous float32 array (it is updated in place)")
    k, s, pd = int(kernel_size), int(stride), int(padding)
    n, C, H, Wd = X.shape
    K, N = W.shape
    if N != C * k * k:
        raise ValueError(f"W has {N} features per unit, the patches of {C} channels x {k} x {k} have {C * k * k}")
    return K, N, int(batch_size) * out_size(H, k, s, pd) * out_size(Wd, k, s, pd)


def conv_hebbian_epoch(W, X, order, batch_size, kernel_size, stride, padding, padding_mode, k, delta, eps, p,
                       bn_mean=None, bn_var=None, buffers=None, callback=None):
    """The Krotov-Hopfield rule on patches (as Grinberg, Hopfield & Krotov 2019 apply it to
    images): one pass over the images ``X[order]`` in minibatches of ``batch_size`` images, every
    patch of a minibatch a sample of one update of :func:`bioreps.kernels.cpu.hebbian.hebbian_batch`
    (the winner of each patch pushed towards it, the k-th pushed away by ``delta``, the update
    scaled so its largest entry is ``eps``). Inputs as :func:`conv_softhebb_epoch`."""
    from .hebbian import HebbianBuffers, hebbian_batch
    from .hebbian import power_weights as kh_power_weights

    K, N, rows = _geometry(W, X, kernel_size, stride, padding, batch_size)
    if buffers is None or buffers.shape != (K, N, rows, int(k)):
        buffers = HebbianBuffers(K, N, rows, int(k), W.dtype)
    bf = buffers
    kh_power_weights(W, float(p), bf.Wp)
    n_batches = 0
    for m, n_img in _patch_batches(X, np.asarray(order), batch_size, kernel_size, stride, padding, padding_mode,
                                   bn_mean, bn_var, bf.V):
        hebbian_batch(W, m, int(k), float(delta), float(eps), float(p), bf)
        n_batches += 1
        if callback is not None:
            callback(n_batches, n_img)
    return n_batches


def conv_softhebb_epoch(W, X, order, batch_size, kernel_size, stride, padding, padding_mode, t_invert, lr, p,
                        power_lr, adaptive, bn_mean=None, bn_var=None, buffers=None, callback=None):
    """One pass over the images ``X[order]`` (n, C, H, W) float32 in minibatches of
    ``batch_size`` images, updating ``W`` (K, C * k * k) float32 in place (steps 1-3 of the module
    docstring). ``bn_mean``/``bn_var`` (C,) float64: batch normalisation of the inputs, running
    statistics updated in place (None: no normalisation). ``callback(batch_index, n_images)``
    after each minibatch. Returns the number of batches."""
    K, N, rows = _geometry(W, X, kernel_size, stride, padding, batch_size)
    if buffers is None or buffers.shape != (K, N, rows):
        buffers = SoftHebbBuffers(K, N, rows, W.dtype)
    bf = buffers
    t_invert, lr, p, power_lr, adaptive = float(t_invert), float(lr), float(p), float(power_lr), bool(adaptive)
    Wp, refresh_wp = start_epoch(W, lr, p, power_lr, adaptive, bf)
    n_batches = 0
    for m, n_img in _patch_batches(X, np.asarray(order), batch_size, kernel_size, stride, padding, padding_mode,
                                   bn_mean, bn_var, bf.V):
        softhebb_batch(W, Wp, bf.V[:m], t_invert, lr, p, power_lr, adaptive, refresh_wp, bf, anti_hebbian=True)
        n_batches += 1
        if callback is not None:
            callback(n_batches, n_img)
    return n_batches
