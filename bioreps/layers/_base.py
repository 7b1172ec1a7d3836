"""Shared estimator plumbing of the layers (scikit-learn conventions)."""

from __future__ import annotations

import numpy as np

from .._validation import check_array

__all__ = ["_Layer"]


class _Layer:
    """Shared estimator plumbing: parameters, fitted check, HDF5 record."""

    kind = "layer"

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self._param_names}

    def _check_fitted(self):
        if not hasattr(self, "n_features_in_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")

    def _check_X(self, X):
        X = check_array(X, name="X", ndim=2, dtype=np.float32)
        if hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but {type(self).__name__} was fitted on "
                             f"{self.n_features_in_}")
        return X

    def model_arrays(self) -> dict:
        """Learned arrays to store under ``/model`` in the HDF5 file."""
        return {}
