"""Hebbian winner-take-all layer: Krotov & Hopfield (2019), "Unsupervised learning by competing
hidden units", PNAS 116(16):7723.

The learning rule (see ``docs/models/krotov_hopfield_2019.md`` and the kernels in
:mod:`bioreps.kernels.cpu.hebbian`), per minibatch: currents ``I = sign(W)|W|^(p-1) @ v``; the
unit with the largest current of each sample is pushed towards it (g = +1), the k-th largest
pushed away (g = -delta); ``dW = g v - g I W``, scaled so the largest single change equals the
learning rate, which decays linearly to 0 over the epochs. Under the rule every unit's weights
tend to unit Lebesgue p-norm.

Two diagnostics are recorded after every epoch in ``history_`` and shown on the progress bar:

* ``converged``: the fraction of units whose p-norm is within 0.05 of 1;
* ``winners``: the number of distinct units that win (largest current) some held-out sample.
  On Fashion-MNIST with p=3, k=7, delta=0.4 the layer converges *and collapses*: a handful of
  units win everything and the readout falls from 87% to 67% (model card). A
  :class:`CollapseWarning` is issued when the winners fall below ``collapse_fraction`` of the
  possible number.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from .._progress import progress_bar
from .._validation import check_array, check_int, plain
from ..backend import resolve
from ._base import Layer

__all__ = ["CompetitiveLayer", "HebbianWTA", "SoftWTA", "CollapseWarning", "lp_norms"]


class CollapseWarning(UserWarning):
    """Few distinct units win the held-out samples: the layer's units have collapsed."""


def lp_norms(W, p):
    """Lebesgue p-norm of every row of ``W`` (float64)."""
    W = np.asarray(W, dtype=np.float64)
    return np.sum(np.abs(W) ** p, axis=1) ** (1.0 / p)


def _gmm_high_component(x, n_iter=200, min_separation=2.0, min_gap=np.log(4.0)):
    """Two-component 1-D Gaussian mixture by EM; True for points assigned to the component
    with the larger mean, provided the means are ``min_separation`` pooled standard deviations
    and at least ``min_gap`` apart (a 4-fold variance ratio for log-variances) and each
    component holds at least 2 points (else no second component is claimed)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 4 or np.ptp(x) == 0:
        return np.zeros(x.shape, bool)
    mu = np.quantile(x, [0.1, 0.9])
    sd = np.full(2, x.std() / 2 + 1e-12)
    w = np.array([0.5, 0.5])
    for _ in range(n_iter):
        logp = -0.5 * ((x[:, None] - mu) / sd) ** 2 - np.log(sd) + np.log(w)
        logp -= logp.max(axis=1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(axis=1, keepdims=True)
        nk = r.sum(axis=0) + 1e-12
        new_mu = (r * x[:, None]).sum(axis=0) / nk
        sd = np.sqrt((r * (x[:, None] - new_mu) ** 2).sum(axis=0) / nk) + 1e-6
        w = nk / nk.sum()
        if np.allclose(new_mu, mu, atol=1e-10):
            mu = new_mu
            break
        mu = new_mu
    hi, lo = int(np.argmax(mu)), int(np.argmin(mu))
    pooled = np.sqrt((sd[0] ** 2 + sd[1] ** 2) / 2)
    high = r[:, hi] > 0.5
    if (min(high.sum(), (~high).sum()) < 2 or mu[hi] - mu[lo] < min_gap
            or mu[hi] - mu[lo] < min_separation * pooled):
        return np.zeros(x.shape, bool)
    return high


def _normalize_rows(X, q):
    """Scale every row of ``X`` to unit L^q norm (rows of zeros stay zero)."""
    if q is None:
        return X
    norms = np.sum(np.abs(X, dtype=np.float64) ** q, axis=1) ** (1.0 / q)
    norms[norms == 0] = 1.0
    return (X / norms[:, None]).astype(np.float32)


class CompetitiveLayer(Layer):
    """Fit loop, learning-rate schedule, diagnostics, inference and persistence shared by the
    winner-take-all layers. Subclasses set ``kind`` and define ``__init__`` (their parameters),
    ``_validate_rule``, ``_kernel_module``, ``_make_buffers`` and ``_run_epoch``."""

    checkpoint_unit = "epochs"
    torch_view = True
    has_preactivations = True
    prunable = True
    gradient_attacks = True
    config_fit_params = ("epochs",)
    neutral_params = (*Layer.neutral_params, "power", "diagnostics_every")
    fitted = {**Layer.fitted, "weights_": np.float32, "mean_": np.float32, "seed_": "json",
              "n_samples_seen_": "json", "epochs_done_": "json", "n_epochs_": "json", "backend_": "json",
              "history_": "json"}

    # ------------------------------------------------------------------ validation
    def _validate_params(self):
        check_int(self.n_units, "n_units", 1)
        check_int(self.batch_size, "batch_size", 1)
        if not (np.isfinite(self.p) and self.p >= 1):
            raise ValueError(f"p must be >= 1, got {plain(self.p)!r}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {plain(self.lr)!r}")
        if not isinstance(self.center, (bool, np.bool_)):
            raise ValueError(f"center must be True or False, got {plain(self.center)!r}")
        if self.input_norm is not None and not (np.isfinite(self.input_norm) and self.input_norm >= 1):
            raise ValueError(f"input_norm must be None or a norm order >= 1, got {plain(self.input_norm)!r}")
        if self.schedule not in ("linear", "constant"):
            raise ValueError(f"schedule must be 'linear' or 'constant', got {self.schedule!r}")
        if isinstance(self.power, bool) or not isinstance(self.power, (int, float, np.integer, np.floating)):
            raise TypeError(f"power must be a number, got {type(self.power).__name__} {plain(self.power)!r}")
        if not (np.isfinite(self.power) and self.power > 0):
            raise ValueError(f"power must be > 0, got {plain(self.power)!r}")
        if not 0 <= self.collapse_fraction < 1:
            raise ValueError(f"collapse_fraction must be in [0, 1), got {plain(self.collapse_fraction)!r}")
        check_int(self.diagnostics_every, "diagnostics_every", 1)
        if isinstance(self.init, str):
            if self.init != "normal":
                raise ValueError(f"init must be 'normal' or an array of shape (n_units, n_features), got {self.init!r}")
        self._validate_rule()
        return resolve(self.backend)

    def _check_input(self, X, name="X"):
        return self._prepare(self._check_X(X, name), name)

    def _prepare(self, X, name, mean=None):
        """Warn about values outside [0, 1]; subtract the mean image (``center``); apply
        ``input_norm``. ``mean`` overrides ``mean_`` (used while starting a fit)."""
        lo, hi = float(X.min()), float(X.max())
        if lo < 0 or hi > 1:
            warnings.warn(f"{name} has values in [{lo:g}, {hi:g}], outside [0, 1]; the rule expects "
                          "pixel intensities scaled to [0, 1]", UserWarning, stacklevel=4)
        mean = getattr(self, "mean_", None) if mean is None else mean
        if self.center and mean is not None:
            X = X - mean
        return _normalize_rows(X, self.input_norm)

    def _initial_weights(self, n_features, seed):
        if isinstance(self.init, str):
            rng = np.random.default_rng(seed)
            return rng.standard_normal((self.n_units, n_features)).astype(np.float32)
        W = check_array(self.init, name="init", ndim=2, dtype=np.float32)
        if W.shape != (self.n_units, n_features):
            raise ValueError(f"init has shape {W.shape}, expected (n_units, n_features) = "
                             f"({self.n_units}, {n_features})")
        return W.copy()

    # ------------------------------------------------------------------ learning
    def _start(self, X, mean):
        """Fresh state for a new schedule (weights, seed, counters, input mean)."""
        backend = self._validate_params()
        seed_seq = np.random.SeedSequence(self.random_state)
        W = self._initial_weights(X.shape[1], seed_seq.spawn(1)[0])
        self.backend_ = backend
        self.weights_ = W
        self.mean_ = mean
        self.seed_ = int(seed_seq.entropy % (2**63))
        self.n_features_in_ = X.shape[1]
        self.n_units_ = int(self.n_units)
        self.n_samples_seen_ = 0
        self.epochs_done_ = 0
        self.n_epochs_ = None
        self.history_ = []

    def _rate(self, epoch, epochs):
        """Learning rate of ``epoch`` in a schedule of ``epochs`` (None: no schedule yet)."""
        if self.schedule == "constant" or not epochs:
            return float(self.lr)
        return float(self.lr) * (1.0 - epoch / epochs)

    def _epoch_order(self, n, epoch):
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        rng = np.random.default_rng([self.seed_, 1, epoch])
        return rng.permutation(n).astype(np.int64)

    def fit(self, X, epochs=100, *, X_val=None, callback=None, resume=False, checkpoint=None,
            checkpoint_every=None):
        """Learn the weights from ``X`` (n, n_features), values in [0, 1].

        Parameters
        ----------
        epochs : int
            Length of the schedule: the learning rate of epoch e is ``lr * (1 - e / epochs)``.
        X_val : array or None
            Held-out samples for the "distinct winners" diagnostic; default: 2000 training rows
            chosen with the layer's seed.
        callback : callable or None
            Called as ``callback(layer, record)`` after every epoch, ``record`` being the new
            ``history_`` entry. Returning ``False`` stops training early (the state stays
            consistent and resumable).
        resume : bool
            Continue a schedule of the same length from ``epochs_done_`` (after :meth:`load` of a
            checkpoint) instead of starting over. A resumed run ends with the same weights as an
            uninterrupted one.
        checkpoint : path or None
            Save the layer there (atomically, through :mod:`bioreps.io`) every
            ``checkpoint_every`` epochs and at the end.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {plain(epochs)!r}")
        if checkpoint_every is not None and (not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {plain(checkpoint_every)!r}")
        if resume and self._is_fitted() and self.n_epochs_ not in (None, epochs):
            raise ValueError(f"cannot resume: the saved schedule has {self.n_epochs_} epochs, asked for {epochs}")
        resuming = resume and self._is_fitted() and self.n_epochs_ == epochs
        self._validate_params()  # every error is raised before any state changes
        if resuming:
            X = self._check_input(X)
        else:
            X = self._check_X(X, reset=True)
            mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
            X = self._prepare(X, "X", mean=mean)
            self._start(X, mean)
        V = self._validation_set(X, X_val)
        self.n_epochs_ = int(epochs)
        kernel = self._kernel_module()
        buffers = self._make_buffers(kernel)
        bar = progress_bar(range(self.epochs_done_, epochs), progress=self.progress, desc=self.kind,
                           unit="epoch", initial=self.epochs_done_, total=epochs)
        warned = False
        for epoch in bar:
            t0 = time.perf_counter()
            eps = self._rate(epoch, epochs)
            self._run_epoch(kernel, X, self._epoch_order(X.shape[0], epoch), eps, buffers)
            self.n_samples_seen_ += X.shape[0]
            self.epochs_done_ = epoch + 1
            diagnose = (epoch + 1) % int(self.diagnostics_every) == 0 or epoch + 1 == epochs
            record = self._diagnostics(V) if diagnose else {}
            record.update(epoch=epoch + 1, lr=eps, seconds=time.perf_counter() - t0)
            self.history_.append(record)
            if diagnose:
                bar.set_postfix(converged=f"{record['converged']:.2f}", winners=record["winners"])
            if not warned and record.get("collapsed"):
                warned = True
                warnings.warn(f"epoch {epoch + 1}: only {record['winners']} distinct units win the "
                              f"{V.shape[0]} held-out samples: the layer is collapsing (see README, "
                              "'Collapse': other k, delta, batch size or input_norm)", CollapseWarning, stacklevel=2)
            if checkpoint is not None and checkpoint_every and (epoch + 1) % checkpoint_every == 0:
                self.save(checkpoint)
            if callback is not None and callback(self, record) is False:
                break
        if checkpoint is not None:
            self.save(checkpoint)
        return self

    def partial_fit(self, X):
        """One pass over ``X`` in row order at the current learning rate.

        The current rate is ``lr * (1 - epochs_done_ / n_epochs_)`` after a :meth:`fit`, else
        ``lr``. Two calls on the halves of X equal one ``fit(X, epochs=1)`` with
        ``shuffle=False`` when the first half is a whole number of minibatches.
        """
        self._validate_params()
        if self._is_fitted():
            X = self._check_input(X)
        else:
            X = self._check_X(X, reset=True)
            mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
            X = self._prepare(X, "X", mean=mean)
            self._start(X, mean)
        eps = self._rate(self.epochs_done_, self.n_epochs_)
        kernel = self._kernel_module()
        self._run_epoch(kernel, X, np.arange(X.shape[0], dtype=np.int64), eps, self._make_buffers(kernel))
        self.n_samples_seen_ += X.shape[0]
        return self

    def _validation_set(self, X, X_val):
        if X_val is not None:
            return self._check_input(X_val, name="X_val")
        n = min(2000, X.shape[0])
        rng = np.random.default_rng([self.seed_, 2])
        return X[np.sort(rng.choice(X.shape[0], size=n, replace=False))]

    def _diagnostics(self, V):
        norms = lp_norms(self.weights_, self.p)
        winners = np.unique(self.winners(V, _normalized=True)).size
        possible = min(self.n_units_, V.shape[0])
        return {"converged": float(np.mean(np.abs(norms - 1.0) < 0.05)), "winners": int(winners),
                "collapsed": bool(winners < self.collapse_fraction * possible)}

    def fit_summary(self) -> dict:
        """The last epoch's diagnostics: epochs, converged fraction, distinct winners."""
        if not getattr(self, "history_", None):
            return {}
        diagnosed = [r for r in self.history_ if "converged" in r]  # every diagnostics_every epochs
        if not diagnosed:
            return {"epochs": self.history_[-1]["epoch"]}
        last = diagnosed[-1]
        return {"epochs": self.history_[-1]["epoch"], "converged_fraction": last["converged"],
                "distinct_winners": last["winners"]}

    # ------------------------------------------------------------------ inference
    def currents(self, X, *, _normalized=False):
        """The competition's currents ``sign(W)|W|^(p-1) x``, float32 (n, n_units)."""
        self._check_fitted()
        if not _normalized:
            X = self._check_input(X)
        Wp = np.sign(self.weights_) * np.abs(self.weights_) ** np.float32(self.p - 1)
        return X @ Wp.T

    def winners(self, X, *, _normalized=False):
        """Index of the unit with the largest current for every sample (int64)."""
        return np.argmax(self.currents(X, _normalized=_normalized), axis=1).astype(np.int64)

    def transform(self, X, power=None, block_rows=8192):
        """Hidden activity ``ReLU(W x)^power``, float32 (n, n_units).

        ``power`` defaults to the layer's own ``power`` (constructor parameter, stored with the
        model: 4.5 for HebbianWTA, as in Krotov & Hopfield's readout; 1 for SoftWTA); a value
        here overrides it for this call; ``power=1`` gives the rectified currents.
        """
        self._check_fitted()
        power = self.power if power is None else power
        if not (np.isfinite(power) and power > 0):
            raise ValueError(f"power must be > 0, got {plain(power)!r}")
        X = self._check_input(X)
        out = np.empty((X.shape[0], self.n_units_), np.float32)
        WT = np.ascontiguousarray(self.weights_.T)
        for start in range(0, X.shape[0], block_rows):
            h = out[start:start + block_rows]
            np.matmul(X[start:start + block_rows], WT, out=h)
            np.maximum(h, 0, out=h)
            if power != 1:
                np.power(h, np.float32(power), out=h)
        return out

    def preactivations(self, X, block_rows=8192):
        """The currents ``W x`` that :meth:`transform` rectifies and raises to ``power``
        (after the layer's centring and input normalisation), float32 (n, n_units)."""
        self._check_fitted()
        X = self._check_input(X)
        out = np.empty((X.shape[0], self.n_units_), np.float32)
        WT = np.ascontiguousarray(self.weights_.T)
        for start in range(0, X.shape[0], block_rows):
            np.matmul(X[start:start + block_rows], WT, out=out[start:start + block_rows])
        return out

    def fit_transform(self, X, y=None, epochs=100, power=None, **fit_params):
        return self.fit(X, epochs=epochs, **fit_params).transform(X, power=power)

    def to_torch(self, power=None):
        """A ``torch.nn.Module`` computing ``ReLU(W x)^power`` with this layer's (frozen) weights,
        so a readout on top can be attacked with gradients."""
        self._check_fitted()
        from ..torch_views import HebbianModule
        power = self.power if power is None else power
        return HebbianModule(self.weights_, power=power, input_norm=self.input_norm,
                             mean=self.mean_ if self.center else None)

    def noise_units(self):
        """Units that never learned ("noise units"), found as the seed paper's code does: a
        two-component Gaussian mixture on the log-variance of each unit's weights; the units of
        the higher-variance component are noise (they keep their N(0, 1) start while learned
        units shrink to unit p-norm). Returns a boolean mask (n_units,); all False when the
        mixture finds no separated second component.
        """
        self._check_fitted()
        logvar = np.log(np.var(self.weights_.astype(np.float64), axis=1) + 1e-30)
        return _gmm_high_component(logvar)

    def prune(self):
        """A copy of the layer without its :meth:`noise_units` (``n_units`` reduced)."""
        import copy

        keep = ~self.noise_units()
        layer = copy.deepcopy(self)
        layer.weights_ = np.ascontiguousarray(self.weights_[keep])
        layer.n_units = layer.n_units_ = int(keep.sum())
        if not isinstance(layer.init, str):
            layer.init = np.ascontiguousarray(np.asarray(layer.init)[keep])
        return layer

    # ------------------------------------------------------------------ persistence
    @property
    def representation_description(self):
        return f"ReLU(W x)^{self.power:g}"

    @classmethod
    def _upgrade(cls, hp, f):
        if "power" not in hp:  # files written before power was a constructor parameter
            legacy = _legacy_power(f)
            if legacy is not None:
                hp["power"] = legacy

    @classmethod
    def _param_from_file(cls, name, value, arrays):
        if name == "init" and value == "array":  # the initial weights are not stored: the learned ones
            return np.array(arrays["weights"], dtype=np.float32)
        return super()._param_from_file(name, value, arrays)

    def _restore(self, hp, arrays, path):
        self.backend_ = resolve(self.backend)
        self.n_units_, self.n_features_in_ = self.weights_.shape
        if not hasattr(self, "history_"):
            self.history_ = []

    def export(self, path, splits, *, power=None, **kwargs):
        """See :meth:`Layer.export`; ``power`` is deprecated (set the layer's ``power``)."""
        if power is None:
            return super().export(path, splits, **kwargs)
        warnings.warn("export(power=) is deprecated: power is a constructor parameter stored with the "
                      "model; set layer.power (or set_params(power=...)) before exporting",
                      DeprecationWarning, stacklevel=2)
        import copy

        return Layer.export(copy.copy(self).set_params(power=power), path, splits, **kwargs)


def _legacy_power(f):
    """The activation power a file (open, ``f``) written before ``power`` was stored with the
    model was made with: the runner's configuration (``[model] power``) in the provenance, else
    the ``ReLU(W x)^power`` description of its representations (:meth:`export`), else None (the
    class default, as those versions used)."""
    import re

    model_cfg = (f.provenance.get("config") or {}).get("model") or {}
    if isinstance(model_cfg, dict) and isinstance(model_cfg.get("power"), (int, float)):
        return float(model_cfg["power"])
    for rep in f.representations.values():
        m = re.fullmatch(r"ReLU\(W x\)\^([0-9.eE+-]+)", rep.description or "")
        if m:
            return float(m.group(1))
    return None


class HebbianWTA(CompetitiveLayer):
    """Krotov-Hopfield competing hidden units, trained by a local Hebbian/anti-Hebbian rule.

    Parameters
    ----------
    n_units : int
        Hidden units K.
    p : float
        Lebesgue norm of the weights (p >= 1; 3 in the paper's MNIST settings).
    k : int
        Rank of the unit that receives anti-Hebbian learning (2 <= k <= n_units).
    delta : float
        Strength of the anti-Hebbian learning (>= 0).
    lr : float
        Initial learning rate eps0.
    schedule : {"linear", "constant"}
        "linear" (the paper): the rate of epoch e of a fit over E epochs is ``lr * (1 - e / E)``.
    batch_size : int
        Minibatch size.
    shuffle : bool
        Reshuffle the samples every epoch (the paper); with False minibatches are taken in row order.
    init : "normal" or array of shape (n_units, n_features)
        "normal" draws N(0, 1) weights (the paper); an array is copied and used as is.
    center : bool
        Subtract the mean training image (``mean_``, learned by :meth:`fit`) from every input,
        in learning and in :meth:`transform`. Fashion-MNIST items overlap so much that on raw
        pixels one "mean blob" unit wins every image and the runners-up are pushed to negative
        images (collapse, see README); centring removes that advantage.
    input_norm : None or float
        If a number q, every input image (after centring) is scaled to unit L^q norm before
        learning and in :meth:`transform` (the seed paper trains on unit-L3 images). None uses
        the pixels as given.
    backend : {"auto", "cpu", "cuda"}
        See :mod:`bioreps.backend`.
    random_state : int or None
        Seeds the initial weights and the per-epoch shuffles.
    progress : bool or None
        Progress bar (None: follow ``$BIOREPS_PROGRESS``).
    collapse_fraction : float
        Warn when fewer than this fraction of ``min(n_units, n_validation)`` distinct units win a
        held-out sample.
    power : float
        Exponent of the representation ``ReLU(W x)^power`` (:meth:`transform`, :meth:`to_torch`,
        :meth:`export`); 4.5 (Krotov & Hopfield's readout) for HebbianWTA, 1 (rectified
        currents) for SoftWTA. It does not change learning; it is stored with the model, so a
        layer loaded from its file computes the representation that was exported.
    diagnostics_every : int
        Epochs between the diagnostics of :meth:`fit` (converged fraction, distinct winners on the
        held-out samples, the collapse warning), computed on the host; the last epoch always has
        them. 1 (default): every epoch. On a GPU they cost more than the epoch itself (a
        n_units x n_features x n_held-out matmul, ~50-100 ms at 2000 units), so the paper's
        1000-epoch schedule in minutes needs 10 or more. It does not change learning.

    Attributes
    ----------
    weights_ : ndarray (n_units, n_features) float32
    backend_ : str
    n_samples_seen_ : int
    epochs_done_ : int
        Epochs of the current schedule completed (for resuming).
    n_epochs_ : int or None
        Length of the learning-rate schedule of the last :meth:`fit`.
    history_ : list of dict
        Per epoch: epoch, lr, converged, winners, seconds.
    """

    kind = "hebbian-wta"

    def __init__(self, n_units=2000, p=3.0, k=7, delta=0.4, lr=0.02, batch_size=100, shuffle=True,
                 init="normal", center=False, input_norm: float | None = None, schedule="linear",
                 backend="auto", random_state=None, progress=None, collapse_fraction=0.05, power=4.5,
                 diagnostics_every=1):
        self.n_units = n_units
        self.p = p
        self.k = k
        self.delta = delta
        self.lr = lr
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.init = init
        self.center = center
        self.input_norm = input_norm
        self.schedule = schedule
        self.backend = backend
        self.random_state = random_state
        self.progress = progress
        self.collapse_fraction = collapse_fraction
        self.power = power
        self.diagnostics_every = diagnostics_every

    def _validate_rule(self):
        check_int(self.k, "k", 2)
        if self.k > self.n_units:
            raise ValueError(f"k={self.k} is larger than n_units={self.n_units}")
        if not (np.isfinite(self.delta) and self.delta >= 0):
            raise ValueError(f"delta must be >= 0, got {plain(self.delta)!r}")

    def _kernel_module(self):
        if self.backend_ == "cuda":
            from ..kernels.cuda import hebbian as kernel
        else:
            from ..kernels.cpu import hebbian as kernel
        return kernel

    def _make_buffers(self, kernel):
        return kernel.HebbianBuffers(self.n_units_, self.n_features_in_, int(self.batch_size), int(self.k))

    def _run_epoch(self, kernel, X, order, eps, buffers):
        kernel.hebbian_epoch(self.weights_, X, order, int(self.batch_size), int(self.k), float(self.delta), eps,
                             float(self.p), buffers)


class SoftWTA(CompetitiveLayer):
    """SoftHebb: soft winner-take-all Hebbian learning (Journé, Garcia Rodriguez, Guo & Moraitis,
    "Hebbian deep learning without feedback", ICLR 2023).

    Per minibatch: ``u = sign(W)|W|^(p-1) x`` (``W x`` for p = 2), ``y = softmax(u / temperature)``
    over units, ``dw_i = sum_b y_i (x - u_i w_i)`` scaled so its largest entry is 1, times the
    per-unit adaptive rate of the paper's code ``lr * |‖w_i‖_p - 1|^power_lr``, which anneals
    each unit as it reaches unit norm (so the default schedule is "constant").

    Parameters are those of :class:`HebbianWTA` except ``k``/``delta``, plus:

    temperature : float
        Softmax temperature T (the reference code's ``t_invert`` is 1/T; 1/12 there).
    power_lr : float
        Exponent of the adaptive rate (0.5 in the paper).
    adaptive : bool
        Use the adaptive per-unit rate; False uses ``lr`` for every unit.

    ``transform`` defaults to ``power=1``: rectified currents ``ReLU(W x)``.
    """

    kind = "soft-wta"

    def __init__(self, n_units=2000, p=2.0, temperature=1 / 12, lr=0.01, power_lr=0.5, adaptive=True,
                 batch_size=100, shuffle=True, init="normal", center=False, input_norm: float | None = None,
                 schedule="constant", backend="auto", random_state=None, progress=None, collapse_fraction=0.05,
                 power=1.0, diagnostics_every=1):
        self.n_units = n_units
        self.p = p
        self.temperature = temperature
        self.lr = lr
        self.power_lr = power_lr
        self.adaptive = adaptive
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.init = init
        self.center = center
        self.input_norm = input_norm
        self.schedule = schedule
        self.backend = backend
        self.random_state = random_state
        self.progress = progress
        self.collapse_fraction = collapse_fraction
        self.power = power
        self.diagnostics_every = diagnostics_every

    def _validate_rule(self):
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {plain(self.temperature)!r}")
        if not (np.isfinite(self.power_lr) and self.power_lr >= 0):
            raise ValueError(f"power_lr must be >= 0, got {plain(self.power_lr)!r}")
        if not isinstance(self.adaptive, (bool, np.bool_)):
            raise ValueError(f"adaptive must be True or False, got {plain(self.adaptive)!r}")

    def _kernel_module(self):
        if self.backend_ == "cuda":
            from ..kernels.cuda import softhebb as kernel
        else:
            from ..kernels.cpu import softhebb as kernel
        return kernel

    def _make_buffers(self, kernel):
        return kernel.SoftHebbBuffers(self.n_units_, self.n_features_in_, int(self.batch_size))

    def _run_epoch(self, kernel, X, order, eps, buffers):
        kernel.softhebb_epoch(self.weights_, X, order, int(self.batch_size), 1.0 / float(self.temperature), eps,
                              float(self.p), float(self.power_lr), bool(self.adaptive), buffers)
