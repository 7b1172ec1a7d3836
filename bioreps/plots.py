"""Figures: :func:`save_figure`, the one way the package writes a figure to disk (atomically),
and the receptive-field grid of the experiments. Figures are ``matplotlib.figure.Figure``
objects made without pyplot, so no display is needed and nothing global is left open."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from . import _files

__all__ = ["figure_data_uri", "pruning_figure", "receptive_fields", "save_figure"]


def save_figure(fig, path, *, dpi=100) -> Path:
    """Write ``fig`` (a matplotlib ``Figure``) to ``path`` atomically; return the path.

    The format follows the extension (PNG when there is none). The figure is drawn into a
    temporary file beside ``path`` and renamed into place, so a failure (or a kill) never leaves
    a partial image under the final name and keeps an existing one.
    """
    path = Path(path)
    ext = path.suffix if re.fullmatch(r"\.[A-Za-z0-9]+", path.suffix) else ""
    with _files.atomic_path(path, ext) as tmp:
        fig.savefig(tmp, dpi=dpi, format=ext[1:].lower() or "png")
    return path


def figure_data_uri(fig, *, dpi=100) -> str:
    """``fig`` as a PNG ``data:`` URI (for self-contained HTML pages: nothing written to disk)."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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
    from matplotlib.figure import Figure

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
    fig = Figure(figsize=(columns * 0.9, rows * 0.9 + (0.4 if title else 0)))
    axes = fig.subplots(rows, columns, squeeze=False)
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
    return save_figure(fig, path)


def _mosaic(W, idx, columns):
    """The units ``idx`` of ``W`` tiled as one grey-level-free image: each unit scaled to its own
    max |w| (blue-white-red with ``bwr`` and vmin=-1, vmax=1), one pixel of gap."""
    (h, w), colour = _image_shape(W.shape[1])
    if colour:
        raise ValueError("pruning_figure shows single-channel weights only")
    rows = max(1, -(-len(idx) // columns))
    out = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1), np.nan)
    for n, u in enumerate(idx):
        r, c = divmod(n, columns)
        unit = W[u] / (np.abs(W[u]).max() or 1.0)
        out[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = unit.reshape(h, w)
    return out


def pruning_figure(weights, noise, *, n_units=25, columns=5, title=None):
    """The seed paper's pruning figure as a ``Figure``: the histogram of each unit's weight
    log-variance with the cutoff between learned and noise units, and the receptive fields of the
    first ``n_units`` units before pruning (index order, noise units included) and after (the
    first learned units). ``noise``: boolean mask (n_units,) of the noise units."""
    from matplotlib.figure import Figure

    W = np.asarray(weights, dtype=np.float64)
    noise = np.asarray(noise, dtype=bool)
    if W.ndim != 2 or noise.shape != (W.shape[0],):
        raise ValueError(f"weights must be (n_units, n_features) and noise (n_units,), got {W.shape} and {noise.shape}")
    logvar = np.log(W.var(axis=1) + 1e-30)
    fig = Figure(figsize=(12.0, 3.9), layout="constrained")
    ax_h, ax_b, ax_a = fig.subplots(1, 3, width_ratios=[1.3, 1, 1])
    bins = np.linspace(logvar.min(), logvar.max() + 1e-9, 50)
    ax_h.hist(logvar[~noise], bins=bins, color="tab:blue", label=f"learned ({int((~noise).sum())})")
    if noise.any():
        ax_h.hist(logvar[noise], bins=bins, color="tab:red", label=f"noise ({int(noise.sum())})")
        cut = (logvar[noise].min() + logvar[~noise].max()) / 2 if (~noise).any() else logvar[noise].min()
        ax_h.axvline(cut, color="k", ls="--", lw=1, label="cutoff")
    ax_h.set_xlabel("log variance of a unit's weights")
    ax_h.set_ylabel("units")
    ax_h.legend(fontsize=8)
    for ax, idx, label in ((ax_b, np.arange(min(n_units, W.shape[0])), "before pruning"),
                           (ax_a, np.flatnonzero(~noise)[:n_units], "after pruning")):
        ax.imshow(_mosaic(W, idx, columns), cmap="bwr", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f"{label}: first {len(idx)} units", fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig
