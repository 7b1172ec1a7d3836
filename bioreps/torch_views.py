"""Torch views of fitted layers: frozen ``torch.nn.Module``s with the same forward computation,
so readouts on top of local-learning layers can be trained and attacked with gradients."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["HebbianModule"]


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
