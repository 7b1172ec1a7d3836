"""Torch views of fitted layers: frozen ``torch.nn.Module``s with the same forward computation,
so readouts on top of local-learning layers can be trained and attacked with gradients."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["HebbianModule", "ConvModule", "ReadoutModule", "NumpyModule", "classifier", "spiking_classifier"]


class HebbianModule(torch.nn.Module):
    """``ReLU(W x)^power`` with frozen weights ``W`` (n_units, n_features).

    With ``mean`` the mean image is subtracted first, and with ``input_norm = q`` each input row
    is then scaled to unit L^q norm, as the layer does.
    Input: (batch, n_features) or images (batch, ...) flattened on the fly.
    """

    def __init__(self, weights, power=4.5, input_norm=None, mean=None):
        super().__init__()
        self.register_buffer("weight", torch.as_tensor(np.asarray(weights, dtype=np.float32)).clone())
        self.register_buffer("mean", None if mean is None else torch.as_tensor(np.asarray(mean, dtype=np.float32)).clone())
        self.power = float(power)
        self.input_norm = input_norm

    def forward(self, x):
        x = x.reshape(x.shape[0], -1).to(self.weight.dtype)
        if self.mean is not None:
            x = x - self.mean
        if self.input_norm is not None:
            norms = x.abs().pow(self.input_norm).sum(dim=1, keepdim=True).pow(1.0 / self.input_norm)
            x = x / torch.where(norms == 0, torch.ones_like(norms), norms)
        h = torch.relu(x @ self.weight.T)
        return h if self.power == 1 else h.pow(self.power)

    def extra_repr(self):
        return f"n_units={self.weight.shape[0]}, n_features={self.weight.shape[1]}, power={self.power}, input_norm={self.input_norm}"


class ConvModule(torch.nn.Module):
    """A fitted convolutional Hebbian layer, frozen: the input normalised by the running
    statistics, padding (reflect or zeros), the convolution with the layer's current weights
    (``sign(W)|W|^(p-1)`` for the Krotov-Hopfield rule), SoftHebb's triangle ``relu(u - mean_c
    u) ** power`` or ``relu(u) ** power``, the pooling; output flattened channel-major, as the
    layer's ``transform``. Input: flat rows (reshaped to ``input_shape``) or images.
    """

    def __init__(self, weights, input_shape, kernel_size, stride, padding, padding_mode, power, triangle, pool=None,
                 bn_mean=None, bn_var=None, eps=1e-5):
        super().__init__()
        C = int(input_shape[0])
        k = int(kernel_size)
        W = np.asarray(weights, np.float32).reshape(-1, C, k, k)
        self.register_buffer("weight", torch.as_tensor(W).clone())
        self.register_buffer("bn_mean", None if bn_mean is None else torch.as_tensor(np.asarray(bn_mean, np.float32)))
        self.register_buffer("bn_var", None if bn_var is None else torch.as_tensor(np.asarray(bn_var, np.float32)))
        self.input_shape = tuple(int(d) for d in input_shape)
        self.stride, self.padding, self.padding_mode = int(stride), int(padding), padding_mode
        self.power, self.triangle, self.pool, self.eps = float(power), bool(triangle), pool, float(eps)

    def forward(self, x):
        F = torch.nn.functional
        x = x.reshape(x.shape[0], *self.input_shape).to(self.weight.dtype)
        if self.bn_mean is not None:
            x = (x - self.bn_mean.view(1, -1, 1, 1)) / torch.sqrt(self.bn_var.view(1, -1, 1, 1) + self.eps)
        if self.padding:
            x = F.pad(x, (self.padding,) * 4, "reflect" if self.padding_mode == "reflect" else "constant")
        u = F.conv2d(x, self.weight, stride=self.stride)
        a = torch.relu(u - u.mean(dim=1, keepdim=True)) if self.triangle else torch.relu(u)
        if self.power != 1.0:
            a = a.pow(self.power)
        if self.pool is not None:
            kind, k, s, p = self.pool
            a = (F.max_pool2d if kind == "max" else F.avg_pool2d)(a, int(k), int(s), int(p))
        return a.reshape(a.shape[0], -1)

    def extra_repr(self):
        return (f"weight={tuple(self.weight.shape)}, input_shape={self.input_shape}, stride={self.stride}, "
                f"padding={self.padding} ({self.padding_mode}), power={self.power}, triangle={self.triangle}, "
                f"pool={self.pool}")


class ReadoutModule(torch.nn.Module):
    """``((x - mean) / scale) W^T + b``: the logits of a fitted
    :class:`~bioreps.readout.LinearReadout` (standardisation included), frozen (buffers only).

    Input: (batch, n_features) or (batch, ...) flattened on the fly.
    """

    differentiable = True

    def __init__(self, coef, intercept, mean=None, scale=None):
        super().__init__()
        coef = np.asarray(coef, dtype=np.float32)
        n_features = coef.shape[1]
        mean = np.zeros(n_features, np.float32) if mean is None else np.asarray(mean, dtype=np.float32)
        scale = np.ones(n_features, np.float32) if scale is None else np.asarray(scale, dtype=np.float32)
        self.register_buffer("weight", torch.as_tensor(coef).clone())
        self.register_buffer("bias", torch.as_tensor(np.asarray(intercept, dtype=np.float32)).clone())
        self.register_buffer("mean", torch.as_tensor(mean).clone())
        self.register_buffer("scale", torch.as_tensor(scale).clone())

    def forward(self, x):
        x = x.reshape(x.shape[0], -1).to(self.weight.dtype)
        return ((x - self.mean) / self.scale) @ self.weight.T + self.bias

    def extra_repr(self):
        return f"n_features={self.weight.shape[1]}, n_classes={self.weight.shape[0]}"


def classifier(layer, readout, power=None):
    """``nn.Sequential(layer.to_torch(), readout.to_torch())``: a frozen, differentiable torch
    model of a fitted layer with a torch view (its class declares ``torch_view = True``:
    ``HebbianWTA``, ``SoftWTA``) and its fitted :class:`~bioreps.readout.LinearReadout`, so
    gradient attacks (FGSM, PGD) apply.

    Its logits equal ``readout.decision_function(layer.transform(X))`` up to float32 rounding.
    ``power`` is deprecated: the layer's own ``power`` (stored with the model) is used. For a
    layer without a torch view (``SpikingWTA``) use :func:`spiking_classifier`.
    """
    if not getattr(type(layer), "torch_view", False):
        raise TypeError(f"{type(layer).__name__} has no differentiable torch view (no to_torch()); "
                        "use bioreps.torch_views.spiking_classifier(layer, readout) and a gradient-free "
                        "attack (bioreps.analysis.robustness.square_attack)")
    if not hasattr(readout, "to_torch"):
        raise TypeError(f"readout must be a fitted LinearReadout, got {type(readout).__name__}")
    if power is not None:
        import warnings

        warnings.warn("classifier(power=) is deprecated: power is stored with the layer; set layer.power",
                      DeprecationWarning, stacklevel=2)
    body, head = layer.to_torch(power), readout.to_torch()
    n_units, n_in = int(layer.n_units_), head.weight.shape[1]  # the representation's width
    if n_units != n_in:
        raise ValueError(f"the layer has {n_units} units but the readout was fitted on {n_in} features")
    return torch.nn.Sequential(body, head)


class NumpyModule(torch.nn.Module):
    """A non-differentiable model: ``forward`` runs a NumPy function ``fn`` (float32 array
    (batch, ...) -> logits (batch, n_outputs)) on a detached CPU copy of the input and returns
    the logits as a float32 tensor on the input's device.

    ``differentiable = False`` marks it for the robustness analyses: gradient attacks (FGSM, PGD)
    refuse it and :func:`~bioreps.analysis.robustness.robust_accuracy_curve` skips them; the
    Square attack (gradient-free, logits only) applies. Calling it on an input that requires
    gradients while autograd is enabled raises a ``RuntimeError`` rather than silently returning
    logits with no gradient.
    """

    differentiable = False

    def __init__(self, fn, n_outputs):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        n_outputs = int(n_outputs)
        if n_outputs < 1:
            raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
        self.fn = fn
        self.n_outputs = n_outputs

    def forward(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"NumpyModule expects a torch.Tensor, got {type(x).__name__}")
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                "NumpyModule is not differentiable: its forward runs NumPy code, so no gradient can "
                "flow to the input. Gradient attacks (fgsm, pgd) cannot be used on it; use the "
                "gradient-free bioreps.analysis.robustness.square_attack instead")
        with torch.no_grad():
            arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
            out = np.asarray(self.fn(arr), dtype=np.float32)
        if out.shape != (x.shape[0], self.n_outputs):
            raise ValueError(f"fn returned shape {out.shape}, expected ({x.shape[0]}, {self.n_outputs})")
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)

    def extra_repr(self):
        return f"fn={getattr(self.fn, '__name__', type(self.fn).__name__)}, n_outputs={self.n_outputs}"


def spiking_classifier(layer, readout, *, progress=False):
    """A :class:`NumpyModule` computing ``readout.decision_function(layer.transform(X))`` for a
    fitted spiking layer (``SpikingWTA``) and a :class:`~bioreps.readout.LinearReadout` fitted on
    its spike counts. Images are flattened to rows first.

    Not differentiable: attack it with the Square attack. The layer's Poisson spikes are keyed by
    the row's position in each call (``transform(X, first_index=0)``), so the same image can give
    different counts in different batches: the model is stochastic, as the network is.

    ``progress``: the layer's progress bar during each call (an attack calls the model once per
    query batch, so by default none is shown; ``None`` keeps the layer's own setting).
    """
    if not hasattr(readout, "decision_function"):
        raise TypeError("spiking_classifier needs a fitted layer with transform() and a fitted LinearReadout")
    if not hasattr(readout, "coef_"):
        raise RuntimeError("the readout is not fitted yet; call readout.fit(...) first")

    def spiking_logits(X):
        X = X.reshape(X.shape[0], -1)
        if progress is None:
            return readout.decision_function(layer.transform(X))
        own = layer.progress
        layer.progress = progress
        try:
            counts = layer.transform(X)
        finally:
            layer.progress = own
        return readout.decision_function(counts)

    return NumpyModule(spiking_logits, readout.coef_.shape[0])
