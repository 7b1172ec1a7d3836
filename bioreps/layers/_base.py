"""Shared estimator plumbing of the layers (scikit-learn conventions)."""

from __future__ import annotations

import numpy as np

from .._validation import check_array

__all__ = ["_Layer"]


class _Layer:
    """Shared estimator plumbing: parameters, fitted check, HDF5 record."""

    kind = "layer"
    #: True for a layer whose representation is its input (the pixels control): experiments
    #: give no "same readout on the pixels" comparison for it.
    represents_input = False

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self._param_names}

    def hyperparameters(self) -> dict:
        """JSON-able parameters (and, for learning layers, training state) for ``/model`` in
        the HDF5 file; ``Layer.load`` rebuilds the layer from them."""
        state = getattr(self, "_state", None)
        return state() if state is not None else self.get_params()

    def _validate_params(self):
        """Check the constructor arguments; raise ``ValueError``/``TypeError`` naming the one at
        fault. ``fit`` calls it (scikit-learn: ``__init__`` only stores); the experiment runner
        calls it before loading data. Layers with arguments override it."""
        return None

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

    def _provenance(self, extra=None) -> dict:
        """Provenance fields of this layer (backend, seed) updated with ``extra``."""
        prov = {"backend": getattr(self, "backend_", "cpu"),
                "seed": self.random_state if getattr(self, "random_state", None) is not None else "none"}
        # fields a caller attached to this layer (the experiment runner: its configuration, so a
        # checkpoint records the run it belongs to and a resume can be checked against it)
        prov.update(getattr(self, "_run_provenance", None) or {})
        prov.update(extra or {})
        return prov

    def save(self, path, *, representations=None, provenance=None):
        """Write the layer (learned arrays, parameters, training state) to a bioreps HDF5 file."""
        from .. import io

        self._check_ready()
        return io.save(path, model_kind=self.kind, model_arrays=self.model_arrays(),
                       hyperparameters=self.hyperparameters(), representations=representations or {},
                       provenance=self._provenance(provenance))

    @classmethod
    def _read_saved(cls, path):
        """``(hyperparameters, arrays)`` of a file written by :meth:`save`, refusing another kind."""
        from .. import io

        with io.load(path) as f:
            if f.model.kind != cls.kind:
                raise ValueError(f"{path} holds a {f.model.kind!r} model, not {cls.kind!r}")
            return dict(f.model.hyperparameters), _copy_arrays(f.model.arrays)

    def receptive_field_weights(self):
        """Each unit's input weights as rows (n_units, n_features), for receptive-field figures;
        None for layers without weights."""
        return self.model_arrays().get("weights")


def _copy_arrays(arrays):
    """In-memory copies of ``/model`` arrays (nested groups stay nested dicts)."""
    return {k: _copy_arrays(v) if isinstance(v, dict) else np.array(v) for k, v in arrays.items()}
