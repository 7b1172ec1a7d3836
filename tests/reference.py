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
