"""Slow, obvious NumPy versions of every kernel (float64), the ground truth the kernels are tested against."""

from __future__ import annotations

import numpy as np


def krotov_hopfield_batch(W, V, k, delta, eps, p, prec=1e-30):
    """One minibatch of the Krotov-Hopfield rule, written as the reference notebook
    (DimaKrotov/Biological_Learning, Unsupervised_learning_algorithm_MNIST.ipynb) writes it.

    W : (K, N) float64 synapses (returned updated, not modified in place)
    V : (B, N) the minibatch, one sample per row (the notebook's ``inputs`` is V.T)
    """
    W = np.array(W, dtype=np.float64)
    inputs = np.asarray(V, dtype=np.float64).T
    hid, Num = W.shape[0], inputs.shape[1]
    sig = np.sign(W)
    tot_input = np.dot(sig * np.absolute(W) ** (p - 1), inputs)
    y = np.argsort(tot_input, axis=0)
    yl = np.zeros((hid, Num))
    yl[y[hid - 1, :], np.arange(Num)] = 1.0
    yl[y[hid - k], np.arange(Num)] = -delta
    xx = np.sum(np.multiply(yl, tot_input), 1)
    ds = np.dot(yl, np.transpose(inputs)) - np.multiply(np.tile(xx.reshape(xx.shape[0], 1), (1, W.shape[1])), W)
    nc = np.amax(np.absolute(ds))
    if nc < prec:
        nc = prec
    return W + eps * np.true_divide(ds, nc)


def krotov_hopfield_epoch(W, X, order, batch_size, k, delta, eps, p):
    """Batches of ``X[order]`` in sequence (a final short batch included)."""
    for start in range(0, len(order), batch_size):
        W = krotov_hopfield_batch(W, X[order[start:start + batch_size]], k, delta, eps, p)
    return W


def softhebb_batch(W, V, t_invert, lr, p=2.0, power_lr=0.5, adaptive=True):
    """One minibatch of the SoftHebb rule (Journe et al., ICLR 2023; NeuromorphicComputing/SoftHebb,
    hebblinear.py ``HebbSoftLinear``: ``get_pre_activations``, ``activation(..., normalize=True)``,
    ``delta_weight``, ``update_lr``), in float64.

    W : (K, N) synapses (returned updated, not modified in place)
    V : (B, N) the minibatch, one sample per row
    """
    W = np.array(W, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    u = V @ (np.sign(W) * np.abs(W) ** (p - 1)).T  # (B, K) currents
    a = t_invert * u
    a = a - a.max(axis=1, keepdims=True)
    y = np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)  # softmax over the units, per sample
    yu = np.sum(y * u, axis=0)  # (K,)
    ds = y.T @ V - yu[:, None] * W
    ds = ds / (np.abs(ds).max() + 1e-30)
    if adaptive:
        norm = np.sum(np.abs(W) ** p, axis=1) ** (1.0 / p)  # from W before this update
        lr_i = lr * (np.abs(norm - 1.0) + 1e-10) ** power_lr
    else:
        lr_i = np.full(W.shape[0], float(lr))
    return W + lr_i[:, None] * ds


def softhebb_epoch(W, X, order, batch_size, t_invert, lr, p, power_lr, adaptive):
    """Batches of ``X[order]`` in sequence (a final short batch included)."""
    for start in range(0, len(order), batch_size):
        W = softhebb_batch(W, X[order[start:start + batch_size]], t_invert, lr, p, power_lr, adaptive)
    return W
