"""The one base class of the layers (scikit-learn conventions): parameters found from the
constructor signature, one fitted guard, one input check, one list of fitted fields used by
``save``, ``load`` and checkpoints, and one ``export`` used by the layers and the study runner.

A layer declares what it is and what it can do as class attributes (``kind``,
``checkpoint_unit``, ``torch_view``, ...); runners, reports and the command line read those
instead of keeping their own lists of kinds (:mod:`bioreps.studies.kinds`).
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from .._validation import check_array

__all__ = ["Layer"]


class Layer:
    """Shared estimator plumbing: parameters, fitted check, input check, HDF5 record.

    Subclasses set the class attributes below that differ from these defaults, implement
    ``fit``/``transform`` and store their learned state in the attributes listed in ``fitted``.
    """

    #: registry key of the model kind (``/model`` attribute ``kind`` of its files); None on
    #: abstract bases. :mod:`bioreps.studies.kinds` registers every class that sets one.
    kind = None
    #: None (no checkpoint/resume), "epochs" or "samples": what ``fit(checkpoint_every=)`` counts.
    checkpoint_unit = None
    #: ``transform(X, first_index=)``: per-row randomness keyed by the row's position.
    indexed_transform = False
    #: ``assign_labels(X, y, counts=)`` + ``predict(X, counts=)``: a vote readout of its own.
    has_vote_readout = False
    #: ``to_torch()`` gives a differentiable torch module of ``transform``.
    torch_view = False
    #: gradient attacks (FGSM, PGD) are meaningful on it (with a readout).
    gradient_attacks = False
    #: ``preactivations(X)``: the currents its activation function acts on (n, n_units), what
    #: the seed paper's spectra are measured on (Holzhausen et al. 2024).
    has_preactivations = False
    #: ``noise_units()`` and ``prune()``: units that never learned, found from their weights'
    #: variance (the seed paper's pruning)
    prunable = False
    #: ``ensemble(layers, n_jobs=None)`` (a classmethod): several unfitted layers of this kind that differ only
    #: by seed and parameters, as one object whose ``fit(X, epochs=...)`` trains them all at once,
    #: each exactly as it trains alone (``members_``); None when the kind has no such trainer.
    #: The studies runner trains a model's seeds with it (:mod:`bioreps.studies.study`).
    ensemble = None
    #: a stack of layers whose files hold every layer's representation (``export(...,
    #: layer_splits=)`` chooses the splits that get the lower layers).
    layered = False
    #: learns from labels and has its own classifier head.
    supervised = False
    #: True for a layer whose representation is its input (the pixels control): experiments
    #: give no "same readout on the pixels" comparison for it.
    represents_input = False
    #: ``fit()`` keywords a study configuration may set (types from ``fit``'s signature).
    config_fit_params = ()
    #: constructor arguments that do not change what ``fit`` learns: a resume ignores them and
    #: takes them from the configuration.
    neutral_params = ("backend", "progress")
    #: dtype and range the input is checked against (:meth:`_check_X`).
    input_dtype = np.float32
    input_unit_interval = False
    #: rows transformed and written at a time by :meth:`export`.
    export_block_rows = 8192
    #: learned state written by :meth:`save` (and checkpoints) and restored by :meth:`load`:
    #: attribute -> storage. A numpy dtype: an array under ``/model`` named without the trailing
    #: "_" (``weights_`` -> ``weights``); "json": a value in the hyperparameters (name kept).
    #: Absent attributes (and arrays that are None) are skipped.
    fitted = {"n_features_in_": "json"}
    #: what :meth:`export` writes as each representation's description.
    representation_description = "layer activity"
    #: fields a caller wants in the provenance of every file this layer writes (the study
    #: runner: its configuration, so a checkpoint records the run it belongs to).
    run_provenance = None

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list:
        """Constructor argument names, from the signature (never retyped)."""
        return list(inspect.signature(cls).parameters)

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params):
        names = self._param_names()
        for key, value in params.items():
            if key not in names:
                raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}; "
                                 f"valid parameters: {', '.join(names) or 'none'}")
            setattr(self, key, value)
        return self

    def _validate_params(self):
        """Check the constructor arguments; raise ``ValueError``/``TypeError`` naming the one at
        fault. ``fit`` calls it (scikit-learn: ``__init__`` only stores); the experiment runner
        calls it before loading data. Layers with arguments override it."""
        return None

    # ------------------------------------------------------------------ fitted state, input
    def _is_fitted(self) -> bool:
        return hasattr(self, "n_features_in_")

    def _check_fitted(self):
        if not self._is_fitted():
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")

    def _check_X(self, X, name="X", *, reset=False):
        """``X`` checked (2-D, finite, ``input_dtype``, [0, 1] if ``input_unit_interval``) and,
        unless ``reset`` (a fit starting afresh), of the width the layer was fitted on."""
        X = check_array(X, name=name, ndim=2, dtype=self.input_dtype, unit_interval=self.input_unit_interval)
        if not reset and self._is_fitted() and X.shape[1] != self.n_features_in_:
            raise ValueError(f"{name} has {X.shape[1]} features but the layer was fitted on {self.n_features_in_}")
        return X

    # ------------------------------------------------------------------ record
    def model_arrays(self) -> dict:
        """Learned arrays to store under ``/model`` in the HDF5 file (from ``fitted``)."""
        self._check_fitted()
        return {attr.rstrip("_"): getattr(self, attr) for attr, how in self.fitted.items()
                if how != "json" and getattr(self, attr, None) is not None}

    def hyperparameters(self) -> dict:
        """JSON-able parameters and training state (``fitted`` "json" fields) for ``/model`` in
        the HDF5 file; :meth:`load` rebuilds the layer from them."""
        hp = {k: _jsonable(v) for k, v in self.get_params().items() if k != "progress"}
        hp.update({attr: getattr(self, attr) for attr, how in self.fitted.items()
                   if how == "json" and hasattr(self, attr)})
        return hp

    def dims(self) -> dict:
        """Names of the model arrays' axes by length (HDF5 dimension scales)."""
        return {"unit": self.n_units_, "feature": self.n_features_in_}

    def provenance(self, extra=None) -> dict:
        """Provenance fields of this layer (backend, seed), then :attr:`run_provenance`, then
        ``extra``."""
        seed = getattr(self, "random_state", None)
        prov = {"backend": getattr(self, "backend_", "cpu"), "seed": seed if seed is not None else "none"}
        prov.update(self.run_provenance or {})
        prov.update(extra or {})
        return prov

    def fit_summary(self) -> dict:
        """What the last ``fit`` ended with, for a study's results (none by default)."""
        return {}

    def checkpoint_progress(self) -> str:
        """Where a loaded checkpoint stands, e.g. ``"epoch 3"`` or ``"1200 samples"``."""
        if self.checkpoint_unit == "epochs":
            return f"epoch {self.epochs_done_}"
        return f"{self.n_samples_seen_} samples"

    def receptive_field_weights(self):
        """Each unit's input weights as rows (n_units, n_features), for receptive-field figures;
        None for layers without weights."""
        self._check_fitted()
        return getattr(self, "weights_", None)

    # ------------------------------------------------------------------ files
    def save(self, path, *, representations=None, provenance=None):
        """Write the layer (learned arrays, parameters, training state) to a bioreps HDF5 file."""
        from .. import io

        self._check_fitted()
        return io.save(path, model_kind=self.kind, model_arrays=self.model_arrays(),
                       hyperparameters=self.hyperparameters(), representations=representations or {},
                       provenance=self.provenance(provenance), model_dims=self.dims())

    @classmethod
    def load(cls, path, backend=None):
        """Rebuild a layer written by :meth:`save` or :meth:`export` (ready to transform or, for
        learning layers, to resume)."""
        from .. import io

        with io.load(path) as f:
            if f.model.kind != cls.kind:
                raise ValueError(f"{path} holds a {f.model.kind!r} model, not {cls.kind!r}")
            hp, arrays = dict(f.model.hyperparameters), _copy_arrays(f.model.arrays)
            cls._upgrade(hp, f)
        return cls._from_record(hp, arrays, path, backend=backend)

    @classmethod
    def _from_record(cls, hp, arrays, path=None, backend=None):
        """A layer from its stored hyperparameters and ``/model`` arrays (what :meth:`load` reads;
        a stack of layers stores each layer's record in its own file group)."""
        names = cls._param_names()
        params = {k: cls._param_from_file(k, hp[k], arrays) for k in names if k in hp and k != "progress"}
        if backend is not None and "backend" in names:
            params["backend"] = backend
        layer = cls(**params)
        for attr, how in cls.fitted.items():
            if how == "json":
                if attr in hp:
                    setattr(layer, attr, hp[attr])
            elif attr.rstrip("_") in arrays:
                setattr(layer, attr, np.ascontiguousarray(arrays[attr.rstrip("_")], dtype=how))
        layer._restore(hp, arrays, path)
        return layer

    @classmethod
    def _upgrade(cls, hp, f):
        """Fill in ``hp`` for files of older versions while the file ``f`` is open (hook)."""

    @classmethod
    def _param_from_file(cls, name, value, arrays):
        """A constructor argument from its stored value (nested dataclasses from their dict)."""
        default = inspect.signature(cls).parameters[name].default
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            return type(default).from_dict(value)
        return value

    def _restore(self, hp, arrays, path):
        """Derived attributes after :meth:`load` set the ``fitted`` ones (hook)."""

    def export(self, path, splits, *, dataset=None, provenance=None, block_rows=None, progress=False):
        """Write the model and the representation (``transform``) of each split to ``path``.

        ``splits`` maps a split name to ``X``, ``(X, y)`` or ``(X, y, inputs_index)``.
        Representations are computed and written ``block_rows`` rows at a time (default
        :attr:`export_block_rows`).
        """
        from .. import io
        from .._progress import progress_bar

        self._check_fitted()
        block_rows = int(block_rows or self.export_block_rows)
        with io.Writer(path, overwrite=True) as w:
            w.write_model(self.kind, self.model_arrays(), self.hyperparameters(), dims=self.dims())
            for split, value in splits.items():
                X, y, index = (tuple(value) + (None, None))[:3] if isinstance(value, tuple) else (value, None, None)
                X = self._check_X(X, name=f"splits[{split!r}]")
                rep = w.create_representation(split, X.shape[0], self.n_units_, labels=y, inputs_index=index,
                                              dataset=dataset, dataset_split=split,
                                              description=self.representation_description)
                for start in progress_bar(range(0, X.shape[0], block_rows), progress=progress,
                                          desc=f"export {split}", unit="block"):
                    kw = {"first_index": start} if self.indexed_transform else {}
                    rep.write_rows(start, self.transform(X[start:start + block_rows], **kw))
            w.write_provenance(self.provenance({"dataset": dataset or "unknown", **(provenance or {})}))
        return path


def _jsonable(value):
    """A parameter value as stored in the hyperparameters JSON: a dataclass as its dict, an
    array as ``"array"`` (its values are learned state, stored as arrays)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.ndarray):
        return "array"
    return value


def _copy_arrays(arrays):
    """In-memory copies of ``/model`` arrays (nested groups stay nested dicts)."""
    return {k: _copy_arrays(v) if isinstance(v, dict) else np.array(v) for k, v in arrays.items()}
