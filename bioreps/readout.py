"""Linear readouts trained on top of a (frozen) representation.

A representation is judged by how well a linear classifier reads the labels out of it. The
readout here is multinomial logistic regression (softmax + cross-entropy) trained with Adam on
standardised features, the readout the Krotov & Hopfield model card uses ("softmax on
standardised ReLU(W x)^4.5, a few epochs of Adam"). It is deterministic for a fixed
``random_state`` on the CPU.
"""

from __future__ import annotations

import numpy as np

from ._progress import progress_bar
from ._validation import check_array, check_float, check_int, check_labels

__all__ = ["LinearReadout"]


class LinearReadout:
    """Softmax (multinomial logistic) readout trained with Adam on minibatches.

    Parameters
    ----------
    epochs : int
        Passes over the training set.
    lr : float
        Adam learning rate.
    batch_size : int
        Minibatch size.
    weight_decay : float
        L2 penalty on the readout weights (Adam's ``weight_decay``).
    schedule : {"constant", "linear"}
        Learning rate per step: constant, or decaying linearly from ``lr`` to 0 over all steps
        (as the Hebbian layer's own schedule; on a converged Krotov-Hopfield layer 80 epochs of
        the linear schedule gain ~0.8 points over 20 constant ones, see benchmarks/RESULTS.md).
    standardize : bool
        Scale each feature to zero mean, unit variance (statistics of the training set) first.
    random_state : int or None
        Seed for the initialisation and the shuffling.
    progress : bool or None
        Show a progress bar (``None``: follow ``$BIOREPS_PROGRESS``).

    Attributes
    ----------
    coef_ : ndarray of shape (n_classes, n_features)
    intercept_ : ndarray of shape (n_classes,)
    mean_, scale_ : ndarray of shape (n_features,)
        Standardisation statistics (zeros / ones when ``standardize=False``).
    n_classes_ : int
    """

    def __init__(self, epochs=10, lr=1e-3, batch_size=256, weight_decay=0.0, standardize=True,
                 random_state=None, progress=None, schedule="constant"):
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.standardize = standardize
        self.random_state = random_state
        self.progress = progress

    def _validate_params(self):
        """Check the settings (``fit`` calls it; a study checks its readouts with it before
        anything runs); raise ``ValueError``/``TypeError`` naming the one at fault."""
        check_int(self.epochs, "epochs")
        check_int(self.batch_size, "batch_size")
        check_float(self.lr, "lr", strict=True)
        check_float(self.weight_decay, "weight_decay")
        if self.schedule not in ("constant", "linear"):
            raise ValueError(f"schedule must be 'constant' or 'linear', got {self.schedule!r}")

    def fit(self, X, y, n_classes=None):
        """Train the readout on features ``X`` (n, d) and integer labels ``y`` (n,)."""
        import torch

        self._validate_params()
        X = check_array(X, name="X", ndim=2, dtype=np.float32)
        y = check_labels(y, n=X.shape[0], n_classes=n_classes)
        n_classes = int(n_classes if n_classes is not None else y.max() + 1)
        if self.standardize:
            mean = X.mean(axis=0, dtype=np.float64)
            scale = X.std(axis=0, dtype=np.float64)
            scale[scale < 1e-12] = 1.0
        else:
            mean, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
        self.mean_, self.scale_ = mean.astype(np.float32), scale.astype(np.float32)

        gen = torch.Generator().manual_seed(int(np.random.SeedSequence(self.random_state).generate_state(1)[0]))
        Xt = torch.from_numpy((X - self.mean_) / self.scale_)
        yt = torch.from_numpy(y)
        layer = torch.nn.Linear(X.shape[1], n_classes)
        with torch.no_grad():
            bound = 1.0 / np.sqrt(X.shape[1])
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.zero_()
        opt = torch.optim.Adam(layer.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss()
        n = X.shape[0]
        n_steps = int(self.epochs) * -(-n // int(self.batch_size))
        step = 0
        bar = progress_bar(range(int(self.epochs)), progress=self.progress, desc="readout", unit="epoch")
        for _ in bar:
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for start in range(0, n, int(self.batch_size)):
                idx = order[start:start + int(self.batch_size)]
                if self.schedule == "linear":
                    for group in opt.param_groups:
                        group["lr"] = float(self.lr) * (1.0 - step / n_steps)
                step += 1
                opt.zero_grad()
                loss = loss_fn(layer(Xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            bar.set_postfix(loss=f"{total / n:.4f}")
        self.coef_ = layer.weight.detach().numpy().copy()
        self.intercept_ = layer.bias.detach().numpy().copy()
        self.n_classes_ = n_classes
        return self

    def decision_function(self, X):
        """Logits, float32 of shape (n, n_classes)."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("this LinearReadout is not fitted yet; call fit(X, y) first")
        X = check_array(X, name="X", ndim=2, dtype=np.float32)
        if X.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features but the readout was fitted on {self.coef_.shape[1]}")
        return ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_

    def to_torch(self):
        """A frozen ``torch.nn.Module`` (:class:`~bioreps.torch_views.ReadoutModule`) computing
        the same logits as :meth:`decision_function`, standardisation included."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("this LinearReadout is not fitted yet; call fit(X, y) first")
        from .torch_views import ReadoutModule

        return ReadoutModule(self.coef_, self.intercept_, mean=self.mean_, scale=self.scale_)

    #: Constructor parameters stored with a saved readout (``progress`` only shows a bar).
    _SAVED_PARAMS = ("epochs", "lr", "batch_size", "weight_decay", "standardize", "random_state",
                     "schedule")

    def hyperparameters(self) -> dict:
        """The constructor parameters that shaped the fit, as a dict (what a file stores)."""
        return {name: getattr(self, name) for name in self._SAVED_PARAMS}

    def to_arrays(self) -> dict:
        """The learned state, ``{"coef", "intercept", "mean", "scale"}`` (float32 copies), as
        :meth:`bioreps.io.Writer.write_readout` stores it; :meth:`from_arrays` inverts it."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("this LinearReadout is not fitted yet; call fit(X, y) first")
        return {name: np.array(getattr(self, f"{name}_"), dtype=np.float32)
                for name in ("coef", "intercept", "mean", "scale")}

    @classmethod
    def from_arrays(cls, arrays, hyperparameters=None):
        """A fitted readout from :meth:`to_arrays`'s arrays (and :meth:`hyperparameters`); its
        :meth:`decision_function` equals the original's exactly. ``n_classes_`` is the number of
        rows of ``coef``."""
        missing = [k for k in ("coef", "intercept", "mean", "scale") if k not in arrays]
        if missing:
            raise KeyError(f"readout arrays lack {missing}; expected coef, intercept, mean and scale")
        hyper = dict(hyperparameters or {})
        unknown = set(hyper) - set(cls._SAVED_PARAMS)
        if unknown:
            raise ValueError(f"unknown readout hyperparameters {sorted(unknown)}; known: {list(cls._SAVED_PARAMS)}")
        ro = cls(**hyper, progress=False)
        ro.coef_, ro.intercept_, ro.mean_, ro.scale_ = (
            np.array(arrays[k], dtype=np.float32) for k in ("coef", "intercept", "mean", "scale"))
        if ro.coef_.ndim != 2 or ro.intercept_.shape != (ro.coef_.shape[0],) \
                or ro.mean_.shape != (ro.coef_.shape[1],) or ro.scale_.shape != (ro.coef_.shape[1],):
            raise ValueError(f"readout arrays disagree: coef {ro.coef_.shape}, intercept {ro.intercept_.shape}, "
                             f"mean {ro.mean_.shape}, scale {ro.scale_.shape}")
        ro.n_classes_ = int(ro.coef_.shape[0])
        return ro

    def predict(self, X):
        """Predicted class of each row of ``X``, int64."""
        return np.argmax(self.decision_function(X), axis=1).astype(np.int64)

    def score(self, X, y):
        """Accuracy on (X, y)."""
        y = check_labels(y, n=len(X))
        return float(np.mean(self.predict(X) == y))
