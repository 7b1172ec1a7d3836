"""Class selectivity of single units and ablation curves.

Morcos, Barrett, Rabinowitz & Botvinick (2018), "On the importance of single directions for
generalization" (ICLR):

- :func:`class_selectivity`: the class-selectivity index of each unit,
  ``(mu_max - mu_-max) / (mu_max + mu_-max + eps)``, with ``mu_max`` the largest class-
  conditional mean activity and ``mu_-max`` the mean of the other classes' class-conditional
  means. It lies in [0, 1] for non-negative activity: 0 when every class drives the unit
  equally, 1 when only one class does.
- :func:`ablation_curve`: accuracy as more and more units of a representation are clamped
  (to 0 or to their mean), in random order or by selectivity (their Fig. 1 and 4).
- :func:`plot_selectivity`: a histogram of the indices of all units.

Models are ``torch.nn.Module`` objects returning logits, with the representation taken at the
output of one of their submodules through a forward hook, or a pair ``(encode, readout)`` of
plain callables on NumPy arrays (for non-torch models such as the spiking layer:
``encode = layer.transform``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_random_state
from ..plots import save_figure
from ._common import as_2d, is_torch_tensor, labels_of, open_rows, torch_to_numpy

__all__ = ["AblationCurve", "ablation_curve", "class_selectivity", "plot_selectivity"]

_ORDERS = ("random", "selective", "unselective")
_FILLS = ("zero", "mean")


# --------------------------------------------------------------------------------------------
# Selectivity index
# --------------------------------------------------------------------------------------------

def _selectivity_from_means(means: np.ndarray, eps: float):
    """means: (n_classes, d) class-conditional means -> (index (d,), preferred row (d,))."""
    k = means.shape[0]
    pref = np.argmax(means, axis=0)
    mu_max = means[pref, np.arange(means.shape[1])]
    mu_rest = (means.sum(axis=0) - mu_max) / (k - 1)
    denom = mu_max + mu_rest + eps
    index = np.divide(mu_max - mu_rest, denom, out=np.zeros_like(mu_max), where=denom > 0)
    return index, pref


def class_selectivity(R, y=None, eps=1e-7, *, return_preferred=False, split=None):
    """Class-selectivity index of every unit (Morcos et al. 2018).

    Parameters
    ----------
    R : array (n, d) (or tensor, Representation, file + ``split``)
        Non-negative activity (e.g. after a ReLU, firing rates, spike counts). Signed activity
        is refused: the index is only meaningful, and bounded in [0, 1], for activity >= 0.
    y : array (n,) of int, optional
        Class labels; default the labels stored with a Representation. The classes are those
        present in ``y`` (at least 2).
    eps : float
        Added to the denominator (Morcos et al.'s 1e-7). A unit silent on every class thus gets
        index 0 (``0 / eps``; also with ``eps=0``), not NaN; a unit active for exactly one class gets
        ``mu / (mu + eps)``, 1 up to ``eps / mu``.
    return_preferred : bool
        Also return each unit's preferred class (the label of ``mu_max``; ties go to the
        smallest label).

    Returns
    -------
    ndarray of float64, shape (d,)
        or ``(index, preferred)`` with ``preferred`` an int64 array of labels.

    Raises
    ------
    ValueError
        Negative activity (the first offending unit is named), fewer than 2 classes,
        mismatched ``n``, NaN, wrong dimensions.
    """
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    with open_rows(R, name="R", split=split) as rows:
        n, d = rows.shape
        y = labels_of(y, rows.labels if y is None else None, n=n, name="y")
        classes, inverse = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(f"y holds {classes.size} class; class selectivity needs at least 2")
        sums = np.zeros((classes.size, d))
        for start, block in rows.iter_blocks():
            if block.size and block.min() < 0:
                r, c = np.argwhere(block < 0)[0]
                raise ValueError(f"R holds negative activity (e.g. unit {c} at row {start + r}: "
                                 f"{block[r, c]:g}); the class-selectivity index needs "
                                 f"non-negative activity (rectify, or shift by the minimum)")
            onehot = np.zeros((len(block), classes.size))
            onehot[np.arange(len(block)), inverse[start:start + len(block)]] = 1.0
            sums += onehot.T @ block
    means = sums / np.bincount(inverse, minlength=classes.size)[:, None]
    index, pref = _selectivity_from_means(means, eps)
    if return_preferred:
        return index, classes[pref]
    return index


def plot_selectivity(sel, path=None, *, title=None):
    """Histogram of class-selectivity indices (40 bins on [0, 1]), optionally written to a PNG.

    Parameters
    ----------
    sel : 1-D array
        One index per unit, e.g. from :func:`class_selectivity`.
    path : str or PathLike, optional
        Write a PNG there (atomically, 120 dpi).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Made without pyplot, so nothing global is left open.
    """
    from matplotlib.figure import Figure

    sel = np.asarray(sel, dtype=np.float64)
    if sel.ndim != 1 or sel.size == 0:
        raise ValueError(f"sel must be a non-empty 1-D array of selectivity indices, got shape {sel.shape}")
    fig = Figure(figsize=(4.5, 3.2), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(sel, bins=40, range=(0, 1), color="#4c72b0")
    ax.set_xlabel("class selectivity index (Morcos et al. 2018)")
    ax.set_ylabel("units")
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=120)
    return fig


# --------------------------------------------------------------------------------------------
# Ablation
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AblationCurve:
    """Accuracy against the fraction of units ablated.

    Attributes
    ----------
    fractions : ndarray (n_steps,)
        Fraction of units clamped, ``n_ablated / n_units`` (starts at 0).
    n_ablated : ndarray of int (n_steps,)
    accuracies : ndarray (n_steps,)
        ``accuracies[0]`` is the clean accuracy.
    order : ndarray of int (n_units,)
        Units in the order they are ablated (the first ``n_ablated[i]`` are off at step i).
    selectivity : ndarray (n_units,) or None
        The selectivity used for a "selective"/"unselective" order.
    kind : str
        "random", "selective" or "unselective".
    fill : str
        "zero" or "mean".
    """

    fractions: np.ndarray
    n_ablated: np.ndarray
    accuracies: np.ndarray
    order: np.ndarray
    selectivity: np.ndarray | None = field(default=None, repr=False)
    kind: str = "random"
    fill: str = "zero"

    @property
    def clean_accuracy(self) -> float:
        return float(self.accuracies[0])


def _resolve_layer(model, layer):
    import torch

    if layer is None:
        layer = getattr(model, "representation_module", None)
        if layer is None:
            raise ValueError(f"layer is None and {type(model).__name__} has no "
                             f"'representation_module' attribute; pass layer= (a submodule or "
                             f"its name from model.named_modules())")
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules:
            names = [k for k in modules if k][:20]
            raise ValueError(f"layer {layer!r} is not a submodule of the model; some names: "
                             f"{names}")
        return modules[layer]
    if not isinstance(layer, torch.nn.Module):
        raise TypeError(f"layer must be an nn.Module, a str name or None, got "
                        f"{type(layer).__name__}")
    if not any(m is layer for m in model.modules()):
        raise ValueError("layer is not a submodule of model")
    return layer


def _predict(logits) -> np.ndarray:
    out = torch_to_numpy(logits) if is_torch_tensor(logits) else np.asarray(logits)
    if out.ndim == 1:
        return out.astype(np.int64)
    if out.ndim != 2:
        raise ValueError(f"the model must return logits of shape (n, n_classes) or labels "
                         f"(n,), got shape {out.shape}")
    return np.argmax(out, axis=1)


class _TorchRunner:
    """Runs a torch model in eval mode under no_grad with a masking hook on one layer."""

    def __init__(self, model, layer, batch_size):
        import torch

        self.torch = torch
        self.model = model
        self.layer = _resolve_layer(model, layer)
        self.batch_size = batch_size
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        self.mask = None        # bool tensor (d,) of units to clamp
        self.values = None      # tensor (d,) of their values
        self.captured = None    # list collecting the clean representation (unit means)
        self.n_units = None

    def hook(self, module, inputs, output):
        torch = self.torch
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the hooked layer must return a tensor, got {type(output).__name__}")
        if output.ndim < 2:
            raise ValueError(f"the hooked layer's output must be (batch, units, ...), got shape "
                             f"{tuple(output.shape)}")
        if self.captured is not None:
            # unit activity: mean over any spatial dims (a channel is one unit, as in Morcos)
            unit = output.detach().reshape(output.shape[0], output.shape[1], -1).mean(dim=2)
            self.captured.append(unit.to(torch.float64).cpu().numpy())
        if self.mask is None:
            return None
        shape = (1, -1) + (1,) * (output.ndim - 2)
        mask = self.mask.to(output.device).reshape(shape)
        values = self.values.to(device=output.device, dtype=output.dtype).reshape(shape)
        return torch.where(mask, values, output)

    def predictions(self, X) -> np.ndarray:
        torch = self.torch
        preds = []
        for start in range(0, len(X), self.batch_size):
            xb = X[start:start + self.batch_size]
            xb = (xb if is_torch_tensor(xb) else torch.as_tensor(np.asarray(xb)))
            if xb.is_floating_point():
                xb = xb.to(dtype=self.dtype)
            preds.append(_predict(self.model(xb.to(self.device))))
        return np.concatenate(preds)

    def run(self, fn):
        torch = self.torch
        was_training = self.model.training
        handle = self.layer.register_forward_hook(self.hook)
        try:
            self.model.eval()
            with torch.no_grad():
                return fn()
        finally:
            handle.remove()
            self.model.train(was_training)

    def set_mask(self, units, fill_values, d):
        torch = self.torch
        if units is None:
            self.mask = None
            return
        mask = torch.zeros(d, dtype=torch.bool)
        mask[torch.as_tensor(units, dtype=torch.long)] = True
        self.mask = mask
        self.values = torch.as_tensor(fill_values, dtype=torch.float64)


class _CallableRunner:
    """(encode, readout) callables on NumPy arrays."""

    def __init__(self, encode, readout, batch_size):
        if not (callable(encode) and callable(readout)):
            raise TypeError("model must be a torch.nn.Module or a pair (encode, readout) of "
                            "callables")
        self.encode = encode
        self.readout = readout
        self.batch_size = batch_size
        self.mask = None
        self.values = None
        self.captured = None

    def predictions(self, X) -> np.ndarray:
        preds = []
        for start in range(0, len(X), self.batch_size):
            rep = self.encode(X[start:start + self.batch_size])
            rep = torch_to_numpy(rep) if is_torch_tensor(rep) else np.asarray(rep)
            if rep.ndim != 2:
                raise ValueError(f"encode must return (n, units), got shape {rep.shape}")
            if self.captured is not None:
                self.captured.append(np.asarray(rep, dtype=np.float64))
            if self.mask is not None:
                rep = np.array(rep, dtype=np.result_type(rep.dtype, np.float32))
                rep[:, self.mask] = self.values[self.mask]
            preds.append(_predict(self.readout(rep)))
        return np.concatenate(preds)

    def run(self, fn):
        return fn()

    def set_mask(self, units, fill_values, d):
        if units is None:
            self.mask = None
            return
        mask = np.zeros(d, dtype=bool)
        mask[np.asarray(units, dtype=np.int64)] = True
        self.mask = mask
        self.values = np.asarray(fill_values)


def _as_batchable(X):
    if is_torch_tensor(X):
        return X
    arr = np.asarray(X)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"X must be a numeric array or tensor, got dtype {arr.dtype}")
    return arr


def ablation_curve(model, X, y, order="random", layer=None, fill="zero", n_steps=11,
                   selectivity=None, seed=None, batch_size=512) -> AblationCurve:
    """Accuracy as units of a representation are cumulatively ablated (Morcos et al. 2018).

    Parameters
    ----------
    model : torch.nn.Module or (encode, readout)
        A module returning logits (``(n, n_classes)``; labels ``(n,)`` are accepted too), or
        two callables on NumPy arrays: ``encode(X_batch) -> (n, units)`` and
        ``readout(rep) -> logits or labels``.
    X : array or tensor
        Inputs, batched along the first axis.
    y : array (n,) of int
        True labels.
    order : {"random", "selective", "unselective"}
        Ablation order: a random permutation (``seed``), most class-selective units first, or
        least selective first (stable sort: ties keep unit order).
    layer : nn.Module or str, optional
        The submodule whose output is the representation (for a torch model); default
        ``model.representation_module``. Units are its output's dim 1; for outputs with more
        dims (conv feature maps) a whole channel is one unit and its activity for selectivity
        is the spatial mean. Ignored for ``(encode, readout)``.
    fill : {"zero", "mean"}
        Clamp ablated units to 0, or to their mean activity over ``X`` (clean pass).
    n_steps : int
        Number of points, at fractions ``linspace(0, 1, n_steps)`` of the units (rounded to
        whole units); the first is always 0 ablated and the last all units.
    selectivity : array (units,), optional
        Selectivity used to order units; default :func:`class_selectivity` of the clean
        representation on ``X``, ``y`` (which then must be non-negative).
    seed : int, Generator or None
        For the random order.
    batch_size : int

    Returns
    -------
    AblationCurve

    Notes
    -----
    A forward hook on ``layer`` replaces the ablated units' values; it is removed (and the
    model's train/eval mode restored) when the call returns, even on error. The model runs in
    eval mode under ``torch.no_grad``.
    """
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    if fill not in _FILLS:
        raise ValueError(f"fill must be one of {_FILLS}, got {fill!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 2:
        raise ValueError(f"n_steps must be an int >= 2, got {n_steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    X = _as_batchable(X)
    if X.ndim < 1 or len(X) == 0:
        raise ValueError(f"X is empty (shape {tuple(X.shape)})")
    n = len(X)
    y = labels_of(y, None, n=n, name="y")

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        runner = _TorchRunner(model, layer, int(batch_size))
    elif isinstance(model, (tuple, list)) and len(model) == 2:
        runner = _CallableRunner(model[0], model[1], int(batch_size))
    else:
        raise TypeError(f"model must be a torch.nn.Module or a pair (encode, readout) of "
                        f"callables, got {type(model).__name__}")

    def curve():
        runner.captured = []
        runner.set_mask(None, None, 0)
        clean = runner.predictions(X)
        rep = np.concatenate(runner.captured)
        runner.captured = None
        d = rep.shape[1]
        if d == 0:
            raise ValueError("the representation has no units")
        sel = None
        if order != "random":
            if selectivity is None:
                sel = class_selectivity(rep, y)
            else:
                sel = as_2d(np.asarray(selectivity, dtype=np.float64)[None, :], "selectivity",
                             np.float64)[0]
                if sel.shape != (d,):
                    raise ValueError(f"selectivity has {sel.shape[0]} values but the "
                                     f"representation has {d} units")
            perm = np.argsort(-sel if order == "selective" else sel, kind="stable")
        else:
            perm = check_random_state(seed, name="seed").permutation(d)
        fill_values = rep.mean(axis=0) if fill == "mean" else np.zeros(d)
        fractions = np.linspace(0.0, 1.0, int(n_steps))
        counts = np.rint(fractions * d).astype(np.int64)
        accs = np.empty(len(counts))
        accs[0] = np.mean(clean == y)
        for i, k in enumerate(counts[1:], start=1):
            if k == 0:
                accs[i] = accs[0]
                continue
            runner.set_mask(perm[:k], fill_values, d)
            accs[i] = np.mean(runner.predictions(X) == y)
        runner.set_mask(None, None, d)
        return AblationCurve(fractions=counts / d, n_ablated=counts, accuracies=accs,
                             order=perm.astype(np.int64), selectivity=sel, kind=order, fill=fill)

    return runner.run(curve)
