"""Figures written by experiments (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["receptive_fields"]


def _image_shape(n_features):
    side = int(round(np.sqrt(n_features)))
    if side * side == n_features:
        return (side, side), False
    side = int(round(np.sqrt(n_features / 3)))
    if 3 * side * side == n_features:
        return (3, side, side), True
    raise ValueError(f"cannot show {n_features} weights as an image (need a square or 3 x square)")


def receptive_fields(weights, path, *, n_units=100, columns=10, order="index", title=None):
    """Save a grid of the units' weights as images (the paper's figure: blue-white-red, each
    unit scaled to its own max |w|; colour images for CIFAR-like 3 x H x W weights).

    Parameters
    ----------
    weights : (n_units, n_features) array
    path : output PNG path (written atomically)
    n_units : how many units to show (the first ones, or see ``order``)
    order : "index" (the first units) or "norm" (the units whose L2 norm is closest to the
        median: typical units rather than outliers)
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    W = np.asarray(weights, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] == 0:
        raise ValueError(f"weights must be a non-empty 2-D array (n_units, n_features), got shape {W.shape}")
    shape, colour = _image_shape(W.shape[1])
    idx = np.arange(W.shape[0])
    if order == "norm":
        norms = np.linalg.norm(W, axis=1)
        idx = np.argsort(np.abs(norms - np.median(norms)))
    elif order != "index":
        raise ValueError(f"order must be 'index' or 'norm', got {order!r}")
    idx = idx[: min(n_units, W.shape[0])]
    rows = -(-len(idx) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 0.9 + (0.4 if title else 0)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, u in zip(axes.ravel(), idx):
        w = W[u]
        if colour:
            img = w.reshape(shape).transpose(1, 2, 0)
            lo, hi = img.min(), img.max()
            ax.imshow((img - lo) / (hi - lo) if hi > lo else np.zeros_like(img))
        else:
            m = np.abs(w).max() or 1.0
            ax.imshow(w.reshape(shape), cmap="bwr", vmin=-m, vmax=m)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.1, rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()) if title else None)
    from ._files import temp_path

    path = Path(path)
    tmp = temp_path(path, ".png")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path
