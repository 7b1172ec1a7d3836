"""Control representations every comparison needs: the raw input, and random (unlearned) weights.

Krotov & Hopfield's model card records both on Fashion-MNIST (readout on raw pixels 84.5%,
on ReLU(W x)^4.5 with random N(0, 1) weights 84.7%): a learned layer is only interesting where
it beats these.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_random_state
from ._base import Layer

__all__ = ["Pixels", "RandomReLU"]


class Pixels(Layer):
    """The identity representation: each pixel is a unit."""

    kind = "pixels"
    has_preactivations = True
    represents_input = True
    fitted = {**Layer.fitted, "n_units_": "json"}
    representation_description = "input pixels"

    def fit(self, X, y=None):
        X = self._check_X(X, reset=True)
        self.n_features_in_ = self.n_units_ = X.shape[1]
        return self

    def preactivations(self, X):
        """The input itself (the pixels have no activation function): the seed paper's "Dataset"
        spectrum."""
        return self.transform(X)

    def transform(self, X):
        self._check_fitted()
        return self._check_X(X).copy()

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    @classmethod
    def _upgrade(cls, hp, f):
        # files of older versions store no width (hyperparameters {}): a representation's
        if "n_features_in_" not in hp:
            widths = {rep.n_units for rep in f.representations.values()}
            if len(widths) != 1:
                raise ValueError(f"{f.path}: a pixels model file of an older bioreps records its width "
                                 "only through its representations, and it has "
                                 f"{'none' if not widths else 'several: ' + str(sorted(widths))}")
            hp["n_features_in_"] = widths.pop()

    def _restore(self, hp, arrays, path):
        self.n_units_ = self.n_features_in_


class RandomReLU(Layer):
    """Random N(0, 1) weights with the Krotov-Hopfield activation ``ReLU(W x)^power``.

    Parameters
    ----------
    n_units : int
    power : float
        Exponent of the rectified current (4.5 in Krotov & Hopfield 2019).
    random_state : int or None
    """

    kind = "random-relu"
    torch_view = True  # to_torch(): gradient attacks reach it (the seed paper's "Init" row)
    gradient_attacks = True
    has_preactivations = True
    neutral_params = (*Layer.neutral_params, "power")
    fitted = {**Layer.fitted, "weights_": np.float32}

    def __init__(self, n_units=2000, power=4.5, random_state=None):
        self.n_units = n_units
        self.power = power
        self.random_state = random_state

    def _validate_params(self):
        if int(self.n_units) < 1:
            raise ValueError(f"n_units must be >= 1, got {self.n_units}")
        if not self.power > 0:
            raise ValueError(f"power must be > 0, got {self.power}")

    def fit(self, X, y=None):
        X = self._check_X(X, reset=True)
        self._validate_params()
        rng = check_random_state(self.random_state)
        self.weights_ = rng.standard_normal((int(self.n_units), X.shape[1])).astype(np.float32)
        self.n_features_in_ = X.shape[1]
        self.n_units_ = int(self.n_units)
        return self

    def transform(self, X):
        self._check_fitted()
        X = self._check_X(X)
        h = X @ self.weights_.T
        np.maximum(h, 0, out=h)
        if self.power != 1:
            np.power(h, np.float32(self.power), out=h)
        return h

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    def preactivations(self, X):
        """The currents ``W x`` that :meth:`transform` rectifies, float32 (n, n_units)."""
        self._check_fitted()
        return self._check_X(X) @ self.weights_.T

    def to_torch(self, power=None):
        """A frozen ``torch.nn.Module`` computing ``ReLU(W x)^power`` with these weights, so a
        readout on top can be attacked with gradients."""
        self._check_fitted()
        from ..torch_views import HebbianModule

        return HebbianModule(self.weights_, power=self.power if power is None else power)

    @property
    def representation_description(self):
        return f"ReLU(W x)^{self.power:g}, random N(0, 1) W"

    def _restore(self, hp, arrays, path):
        # files of older versions store no n_features_in_: the weights say it
        self.n_units_, self.n_features_in_ = self.weights_.shape
