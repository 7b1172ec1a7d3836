"""Convolutional soft winner-take-all Hebbian layer: SoftHebb's convolutional layer (Journé,
Garcia Rodriguez, Guo & Moraitis, "Hebbian deep learning without feedback", ICLR 2023; reference
code NeuromorphicComputing/SoftHebb, ``hebbconv.py``), learned without labels or feedback.

Per minibatch of images (kernels: :mod:`bioreps.kernels.cpu.conv`): optional batch
normalisation of the inputs (the reference puts ``BatchNorm2d(affine=False)`` before every
Hebbian conv), reflect padding, currents ``u = W * x`` at every position, a softmax over the
channels at each position, SoftHebb's soft anti-Hebbian sign for the losers, the update
``dW = sum y (x - u w)`` over images and positions scaled by its largest entry, times the
per-channel adaptive rate ``lr * sqrt(| ||w|| - 1 |)``. The layer passes on SoftHebb's triangle
activation ``relu(u - mean_c u) ** power`` after optional pooling.
"""

from __future__ import annotations

import time

import numpy as np

from .._progress import progress_bar
from .._validation import check_array, check_int, check_layer_splits, plain
from ..backend import resolve
from ._base import Layer

__all__ = ["ConvCompetitiveLayer", "ConvHebbianWTA", "ConvSoftWTA", "HebbianNet"]


def _positive(layer, *names):
    for name in names:
        v = getattr(layer, name)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (
                np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a number > 0, got {plain(v)!r}")


def _pool_spec(pool):
    """``pool`` as ``(kind, kernel, stride, padding)`` or None, checked."""
    if pool is None:
        return None
    if isinstance(pool, str) or not hasattr(pool, "__len__") or len(pool) != 4:
        raise ValueError(f"pool must be None or (kind, kernel, stride, padding), e.g. ('max', 4, 2, 1); got {pool!r}")
    kind, k, s, p = pool
    if kind not in ("max", "avg"):
        raise ValueError(f"pool kind must be 'max' or 'avg', got {kind!r}")
    k, s, p = check_int(k, "pool kernel", 1), check_int(s, "pool stride", 1), check_int(p, "pool padding", 0)
    if 2 * p > k:
        raise ValueError(f"pool padding {p} must be at most half the pool kernel {k}")
    return kind, k, s, p


class ConvCompetitiveLayer(Layer):
    """What the convolutional competitive layers share: images in as (n, C, H, W) or flat rows
    with ``input_shape``, padding, batch normalisation of the inputs, the patch matrix, fit /
    partial_fit over minibatches of images, the activation and pooling passed on, files.
    Subclasses set ``kind`` and define ``__init__``, ``_validate_rule``, ``_initial_weights``,
    ``_epoch`` (the rule's kernel), ``_current_weights`` and ``triangle``."""

    config_fit_params = ("epochs",)
    neutral_params = (*Layer.neutral_params, "power")
    input_dtype = np.float32
    fitted = {**Layer.fitted, "weights_": np.float32, "bn_mean_": np.float64, "bn_var_": np.float64,
              "input_shape_": "json", "output_shape_": "json", "seed_": "json", "n_units_": "json",
              "n_samples_seen_": "json", "epochs_done_": "json", "n_epochs_": "json", "n_fit_rows_": "json",
              "history_": "json", "backend_": "json"}
    checkpoint_unit = "epochs"
    torch_view = True
    gradient_attacks = True
    export_block_rows = 512
    #: the activation passed on: SoftHebb's triangle ``relu(u - mean_c u) ** power`` (True) or
    #: the Krotov-Hopfield ``relu(u) ** power`` (False)
    triangle = True

    # ------------------------------------------------------------------ validation
    def _validate_params(self):
        from ..kernels.cpu.conv import PADDING_MODES

        check_int(self.n_channels, "n_channels", 1)
        check_int(self.kernel_size, "kernel_size", 1)
        check_int(self.stride, "stride", 1)
        check_int(self.padding, "padding", 0)
        check_int(self.batch_size, "batch_size", 1)
        _positive(self, "lr", "power")
        for name in ("batch_norm", "shuffle"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {plain(getattr(self, name))!r}")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {list(PADDING_MODES)}, got {self.padding_mode!r}")
        _pool_spec(self.pool)
        if self.input_shape is not None:
            shape = tuple(self.input_shape)
            if len(shape) != 3 or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                                      for d in shape):
                raise ValueError(f"input_shape must be (channels, height, width), got {self.input_shape!r}")
        self._validate_rule()
        return resolve(self.backend)  # where the training passes run

    def _images(self, X, name="X", *, reset=False):
        """``X`` as float32 images (n, C, H, W): 4-D as given, or flat rows reshaped by
        ``input_shape`` (or the fitted shape); checked finite, and of the fitted shape unless
        ``reset``."""
        X = np.asarray(X)
        if X.ndim == 4:
            shape = X.shape[1:]
            X = check_array(X.reshape(X.shape[0], -1), name=name, ndim=2, dtype=np.float32)
        else:
            shape = getattr(self, "input_shape_", None) if not reset else None
            shape = tuple(self.input_shape) if self.input_shape is not None else shape
            if shape is None:
                raise ValueError(f"{name} has shape {X.shape}: give images (n, C, H, W), or flat rows with "
                                 "input_shape=(C, H, W)")
            X = check_array(X, name=name, ndim=2, dtype=np.float32)
            if X.shape[1] != int(np.prod(shape)):
                raise ValueError(f"{name} has {X.shape[1]} features per row, input_shape {tuple(shape)} "
                                 f"needs {int(np.prod(shape))}")
        shape = tuple(int(d) for d in shape)
        if not reset and self._is_fitted() and shape != tuple(self.input_shape_):
            raise ValueError(f"{name} holds images of shape {shape}; the layer was fitted on {tuple(self.input_shape_)}")
        k = int(self.kernel_size)
        if shape[1] + 2 * int(self.padding) < k or shape[2] + 2 * int(self.padding) < k:
            raise ValueError(f"{name}: images of {shape[1]} x {shape[2]} (padding {self.padding}) are smaller "
                             f"than the kernel {k} x {k}")
        if self.padding_mode == "reflect" and int(self.padding) >= min(shape[1], shape[2]):
            raise ValueError(f"reflect padding {self.padding} needs images larger than it, got {shape[1]} x {shape[2]}")
        return np.ascontiguousarray(X.reshape((X.shape[0],) + shape))

    def _check_X(self, X, name="X", *, reset=False):
        """Flat rows (n, C * H * W) of the images (the form the export writes from)."""
        Xi = self._images(X, name, reset=reset)
        return Xi.reshape(Xi.shape[0], -1)

    def _shapes(self, in_shape):
        from ..kernels.cpu.conv import out_size

        C, H, W = in_shape
        k, s, p = int(self.kernel_size), int(self.stride), int(self.padding)
        Ho, Wo = out_size(H, k, s, p), out_size(W, k, s, p)
        spec = _pool_spec(self.pool)
        if spec is not None:
            _, pk, ps, pp = spec
            if Ho + 2 * pp < pk or Wo + 2 * pp < pk:
                raise ValueError(f"the convolution's {Ho} x {Wo} output is smaller than the pool kernel {pk}")
            Ho, Wo = out_size(Ho, pk, ps, pp), out_size(Wo, pk, ps, pp)
        return (int(self.n_channels), Ho, Wo)

    # ------------------------------------------------------------------ learning
    def _start(self, X):
        self.backend_ = self._validate_params()
        seed_seq = np.random.SeedSequence(self.random_state)
        C = X.shape[1]
        k = int(self.kernel_size)
        n_in = C * k * k
        rng = np.random.default_rng(seed_seq.spawn(1)[0])
        self.weights_ = self._initial_weights(rng, n_in)
        self.bn_mean_ = np.zeros(C) if self.batch_norm else None
        self.bn_var_ = np.ones(C) if self.batch_norm else None
        self.seed_ = int(seed_seq.entropy % (2**63))
        self.input_shape_ = [int(d) for d in X.shape[1:]]
        self.output_shape_ = list(self._shapes(X.shape[1:]))
        self.n_features_in_ = int(np.prod(X.shape[1:]))
        self.n_units_ = int(np.prod(self.output_shape_))
        self.n_samples_seen_ = 0
        self.epochs_done_ = 0
        self.n_epochs_ = self.n_fit_rows_ = None
        self.history_ = []

    def _pass(self, X, order, desc, bar=None):
        """One pass over ``X[order]``; progress on ``bar`` when given (a caller's bar spanning
        several passes, left open), else on a bar of its own."""
        own = bar is None
        if own:
            bar = progress_bar(total=len(order), progress=self.progress, desc=desc, unit="image")
        try:
            self._epoch(X, order, lambda i, m: bar.update(m))
        finally:
            if own:
                bar.close()
        self.n_samples_seen_ += len(order)

    #: images of the probe set the "winners" diagnostic uses
    probe_images = 100

    def _norm_order(self):
        """The Lebesgue norm the rule drives the filters to (2 for SoftHebb)."""
        return 2.0

    def _record(self, seconds, probe=None):
        """The epoch's diagnostics (``history_``): ``converged``, the fraction of filters within
        0.05 of unit norm (the rule's Lebesgue norm), their ``mean_norm``, and ``winners``, the
        number of distinct channels that have the largest current at some position of the
        probe images (a collapse shows as few winners)."""
        p = self._norm_order()
        norms = np.sum(np.abs(self.weights_.astype(np.float64)) ** p, axis=1) ** (1.0 / p)
        rec = {"epoch": self.epochs_done_, "seconds": round(seconds, 3),
               "converged": float(np.mean(np.abs(norms - 1.0) < 0.05)), "mean_norm": float(norms.mean())}
        if probe is not None and len(probe):
            rec["winners"] = int(np.unique(self._currents(probe).argmax(axis=-1)).size)
        self.history_.append(rec)
        return rec

    def fit(self, X, epochs=1, *, callback=None, resume=False, checkpoint=None, checkpoint_every=None):
        """Learn the filters from images ``X`` (n, C, H, W) or flat rows with ``input_shape``,
        values in [0, 1], ``epochs`` passes (shuffled per epoch with the layer's seed unless
        ``shuffle=False``). ``callback(layer, record)`` after each epoch; ``False`` stops.
        ``history_`` records per epoch the fraction of filters within 0.05 of unit norm
        (``converged``) and their mean norm.

        ``checkpoint``: save the layer there (atomically) every ``checkpoint_every`` epochs
        (default 1) and at the end; ``resume=True`` on a loaded checkpoint continues the same
        schedule (same ``epochs`` and images) from ``epochs_done_`` and ends exactly where an
        uninterrupted fit does (each epoch's order comes from the seed and the epoch number)."""
        epochs = check_int(epochs, "epochs", 1)
        every = 1 if checkpoint_every is None else check_int(checkpoint_every, "checkpoint_every", 1)
        backend = self._validate_params()
        if resume and self._is_fitted():
            X = self._images(X)
            self.backend_ = backend
            if (self.n_epochs_, self.n_fit_rows_) != (epochs, X.shape[0]):
                raise ValueError(f"cannot resume: the checkpoint is of a fit of {self.n_epochs_} epochs over "
                                 f"{self.n_fit_rows_} images, asked for {epochs} epochs over {X.shape[0]}")
        else:
            X = self._images(X, reset=True)
            self._start(X)
            self.n_epochs_, self.n_fit_rows_ = epochs, int(X.shape[0])
        name = type(self).__name__
        for e in range(self.epochs_done_, epochs):
            t0 = time.perf_counter()
            order = (np.random.default_rng([self.seed_, 1, e]).permutation(X.shape[0]) if self.shuffle
                     else np.arange(X.shape[0]))
            self._pass(X, order, f"{name} {e + 1}/{epochs}")
            self.epochs_done_ += 1
            rec = self._record(time.perf_counter() - t0, X[:self.probe_images])
            if checkpoint is not None and (self.epochs_done_ % every == 0 or self.epochs_done_ == epochs):
                self.save(checkpoint)
            if callback is not None and callback(self, rec) is False:
                break
        return self

    def partial_fit(self, X):
        """One pass over ``X`` in order, continuing the learning of earlier calls (the first call
        initialises the layer): two calls on the halves of ``X`` equal one unshuffled epoch."""
        backend = self._validate_params()
        if not self._is_fitted():
            X = self._images(X, reset=True)
            self._start(X)
        else:
            X = self._images(X)
            self.backend_ = backend
        self._pass(X, np.arange(X.shape[0]), f"{type(self).__name__} partial_fit")
        return self

    # ------------------------------------------------------------------ inference
    def currents(self, X, block_rows=256):
        """The convolution's currents ``u`` (n, n_channels, Ho, Wo), float32, after the input
        normalisation with the running statistics."""
        self._check_fitted()
        X = self._images(X)
        parts = [self._currents(X[i:i + block_rows]).transpose(0, 3, 1, 2) for i in range(0, len(X), block_rows)]
        return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros((0, self.n_channels, 0, 0),
                                                                                   np.float32)

    def _currents(self, Xb, batch_stats=False):
        """Currents of a block of images, channel-last (B, Ho, Wo, K): the GEMM's own layout. The
        input normalisation uses the running statistics, or with ``batch_stats`` the block's own
        (``BatchNorm2d`` in training mode, running statistics untouched)."""
        from ..kernels.cpu import conv

        if self.bn_mean_ is not None:
            Xb = (conv.batch_norm_batch(Xb)[0] if batch_stats else
                  conv.batch_norm_eval(Xb, self.bn_mean_, self.bn_var_))
        k, s, p = int(self.kernel_size), int(self.stride), int(self.padding)
        Xp = conv.pad(Xb, p, self.padding_mode)
        V = conv.patches(Xp, k, s)
        Ho, Wo = conv.out_size(Xb.shape[2], k, s, p), conv.out_size(Xb.shape[3], k, s, p)
        return (V @ self._current_weights().T).reshape(Xb.shape[0], Ho, Wo, -1)

    def transform(self, X, block_rows=256):
        """Flat rows (n, n_channels * H' * W') of the pooled triangle activations."""
        from ..kernels.cpu import conv

        self._check_fitted()
        X = self._images(X)
        spec = _pool_spec(self.pool)
        out = np.empty((X.shape[0], self.n_units_), np.float32)
        for i in range(0, X.shape[0], block_rows):
            A = conv.activation(self._currents(X[i:i + block_rows]), float(self.power), spec, self.triangle)
            out[i:i + block_rows] = A.reshape(A.shape[0], -1)
        return out

    def _training_output(self, Xb):
        """What the layer passes on while it learns from the minibatch ``Xb`` (B, C, H, W), as
        SoftHebb's block in training mode: the input normalised by the minibatch's own statistics,
        the current weights (before this minibatch's update), the activation and pooling; (B, K,
        H', W') float32. A :class:`HebbianNet` training all its layers at once feeds it to the
        next layer."""
        from ..kernels.cpu import conv

        return conv.activation(self._currents(Xb, batch_stats=True), float(self.power), _pool_spec(self.pool),
                               self.triangle)

    def fit_transform(self, X, y=None, epochs=1):
        return self.fit(X, epochs=epochs).transform(X)

    def to_torch(self, power=None):
        """A frozen, differentiable torch module computing :meth:`transform`
        (:class:`bioreps.torch_views.ConvModule`); ``power`` overrides the activation's (None:
        the layer's)."""
        from ..torch_views import ConvModule

        self._check_fitted()
        return ConvModule(self._current_weights(), self.input_shape_, self.kernel_size, self.stride, self.padding,
                          self.padding_mode, self.power if power is None else power, self.triangle, _pool_spec(self.pool), self.bn_mean_,
                          self.bn_var_)

    # ------------------------------------------------------------------ record
    def dims(self) -> dict:
        return {"channel": int(self.n_channels), "patch_feature": int(self.weights_.shape[1])}

    def receptive_field_weights(self):
        self._check_fitted()
        return self.weights_

    def _restore(self, hp, arrays, path):
        if not self.batch_norm:
            self.bn_mean_ = self.bn_var_ = None


class ConvSoftWTA(ConvCompetitiveLayer):
    """SoftHebb convolutional layer: ``n_channels`` filters of ``kernel_size`` x ``kernel_size``
    learned by soft winner-take-all Hebbian plasticity (see the module docstring).

    Parameters
    ----------
    n_channels : int
        Output channels (the competing units at each position).
    kernel_size, stride, padding : int
        The convolution's window, step and padding (``padding_mode``: "reflect" as the reference
        code, or "zeros").
    pool : tuple or None
        Pooling after the activation, ``(kind, kernel, stride, padding)`` with kind "max" or
        "avg" (the reference's first layer: ``("max", 4, 2, 1)``); None: no pooling.
    temperature : float
        Softmax temperature T (the reference's ``t_invert`` is 1/T: 1, 1/0.65, 1/0.25 for its
        three CIFAR-10 layers).
    lr : float
        Amplitude of the adaptive rate ``lr * (| ||w||_2 - 1 | + 1e-10) ** power_lr`` (0.08,
        0.005, 0.01 there); with ``adaptive=False`` the rate itself.
    power : float
        Exponent of the triangle activation passed on (0.7, 1.4, 1.0 there).
    batch_norm : bool
        Normalise each input channel before the convolution (batch statistics while learning,
        running statistics after, as ``BatchNorm2d(affine=False)``).
    init_radius : float
        Initial weights ``N(0, (init_radius / sqrt(C k^2))^2)``: norms near ``init_radius`` (25
        in the reference).
    batch_size : int
        Images per update (10 in the reference).
    input_shape : tuple or None
        ``(C, H, W)`` when ``X`` comes as flat rows; 4-D input ``(n, C, H, W)`` gives it.
    backend : "auto", "cpu" or "cuda"
        Where the training step runs (:mod:`bioreps.kernels.cuda.conv` on a GPU: the patch
        matrix built on the device, the dense SoftHebb kernels; weights equal the CPU's to
        float32 rounding). ``transform`` runs on the CPU.

    ``transform`` returns flat rows ``(n, n_channels * H' * W')`` (channel-major; ``output_shape_``
    is ``(n_channels, H', W')``), the form readouts and HDF5 files take.
    """

    kind = "conv-soft-wta"
    representation_description = "pooled triangle activations of the convolution (channel, y, x), flattened"

    def __init__(self, n_channels=96, kernel_size=5, stride=1, padding=0, pool: tuple | None = None,
                 temperature=1.0, lr=0.08, power_lr=0.5, adaptive=True, power=0.7, batch_norm=True,
                 padding_mode="reflect", init_radius=25.0, batch_size=10, shuffle=True,
                 input_shape: tuple | None = None, backend="auto", random_state=None, progress=None):
        self.n_channels = n_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.pool = pool
        self.temperature = temperature
        self.lr = lr
        self.power_lr = power_lr
        self.adaptive = adaptive
        self.power = power
        self.batch_norm = batch_norm
        self.padding_mode = padding_mode
        self.init_radius = init_radius
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.input_shape = input_shape
        self.backend = backend
        self.random_state = random_state
        self.progress = progress

    def _validate_rule(self):
        _positive(self, "temperature", "init_radius")
        if not (np.isfinite(self.power_lr) and self.power_lr >= 0):
            raise ValueError(f"power_lr must be >= 0, got {plain(self.power_lr)!r}")
        if not isinstance(self.adaptive, (bool, np.bool_)):
            raise ValueError(f"adaptive must be True or False, got {plain(self.adaptive)!r}")

    def _initial_weights(self, rng, n_in):
        std = float(self.init_radius) / np.sqrt(n_in)
        return (std * rng.standard_normal((int(self.n_channels), n_in))).astype(np.float32)

    def _epoch(self, X, order, callback):
        if self.backend_ == "cuda":  # the training step on the GPU (transform stays on the CPU)
            from ..kernels.cuda.conv import conv_softhebb_epoch
        else:
            from ..kernels.cpu.conv import conv_softhebb_epoch

        conv_softhebb_epoch(self.weights_, X, order, int(self.batch_size), int(self.kernel_size), int(self.stride),
                            int(self.padding), self.padding_mode, 1.0 / float(self.temperature), float(self.lr), 2.0,
                            float(self.power_lr), bool(self.adaptive), self.bn_mean_, self.bn_var_, callback=callback)

    def _current_weights(self):
        return self.weights_


class ConvHebbianWTA(ConvCompetitiveLayer):
    """The Krotov-Hopfield rule ("competing hidden units", Krotov & Hopfield 2019) applied to
    image patches, as Grinberg, Hopfield & Krotov (2019) apply it: every patch of a minibatch of
    images is a sample; at each patch the channel with the largest current ``sign(w)|w|^(p-1) .
    x`` is pushed towards it and the k-th pushed away by ``delta``; the update is scaled so its
    largest entry is ``lr``. The layer passes on ``relu(u) ** power`` (the dense layer's
    activation) after optional pooling.

    Parameters as :class:`ConvSoftWTA` (``n_channels``, ``kernel_size``, ``stride``,
    ``padding``, ``pool``, ``batch_norm``, ``padding_mode``, ``batch_size``, ``input_shape``),
    plus the rule's ``p``, ``k``, ``delta``, ``lr`` (the dense :class:`HebbianWTA`'s meaning),
    ``power`` and ``backend`` (the training step on the GPU: :func:`bioreps.kernels.cuda.conv.
    conv_hebbian_epoch`). Initial weights N(0, 1).
    """

    kind = "conv-hebbian-wta"
    triangle = False
    representation_description = "pooled rectified powered currents of the convolution (channel, y, x), flattened"

    def __init__(self, n_channels=96, kernel_size=5, stride=1, padding=0, pool: tuple | None = None, p=3.0, k=2,
                 delta=0.4, lr=0.04, power=4.5, batch_norm=False, padding_mode="zeros", batch_size=10, shuffle=True,
                 input_shape: tuple | None = None, backend="auto", random_state=None, progress=None):
        self.n_channels = n_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.pool = pool
        self.p = p
        self.k = k
        self.delta = delta
        self.lr = lr
        self.power = power
        self.batch_norm = batch_norm
        self.padding_mode = padding_mode
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.input_shape = input_shape
        self.backend = backend
        self.random_state = random_state
        self.progress = progress

    def _validate_rule(self):
        if not (np.isfinite(self.p) and self.p >= 2):
            raise ValueError(f"p must be >= 2, got {plain(self.p)!r}")
        check_int(self.k, "k", 1)
        if self.k > self.n_channels:
            raise ValueError(f"k = {self.k} must be at most n_channels = {self.n_channels}")
        if not (np.isfinite(self.delta) and self.delta >= 0):
            raise ValueError(f"delta must be >= 0, got {plain(self.delta)!r}")

    def _initial_weights(self, rng, n_in):
        return rng.standard_normal((int(self.n_channels), n_in)).astype(np.float32)

    def _epoch(self, X, order, callback):
        if self.backend_ == "cuda":  # the training step on the GPU (transform stays on the CPU)
            from ..kernels.cuda.conv import conv_hebbian_epoch
        else:
            from ..kernels.cpu.conv import conv_hebbian_epoch

        conv_hebbian_epoch(self.weights_, X, order, int(self.batch_size), int(self.kernel_size), int(self.stride),
                           int(self.padding), self.padding_mode, int(self.k), float(self.delta), float(self.lr),
                           float(self.p), self.bn_mean_, self.bn_var_, callback=callback)

    def _norm_order(self):
        return float(self.p)

    def _current_weights(self):
        W = self.weights_.astype(np.float64)
        return (np.sign(W) * np.abs(W) ** (float(self.p) - 1.0)).astype(np.float32)


#: the layer classes a :class:`HebbianNet` stacks, by kind
_STACKABLE = {cls.kind: cls for cls in (ConvSoftWTA, ConvHebbianWTA)}


class HebbianNet(Layer):
    """A stack of convolutional Hebbian layers trained without labels or feedback, each on the
    layers below's output: layer after layer (``training="greedy"``, SoftHebb's "successive"
    mode, what its presets use), or all layers at once (``training="simultaneous"``, SoftHebb's
    "consecutive" mode for its Hebbian blocks: every minibatch goes through the whole net and
    each layer learns from what the layer below passes on while it learns).

    Parameters
    ----------
    layers : list of dict
        One table per layer: ``kind`` (``"conv-soft-wta"`` or ``"conv-hebbian-wta"``) and that
        layer's parameters (its ``random_state`` and ``progress`` come from the net), e.g.
        SoftHebb's first block ``{"kind": "conv-soft-wta", "n_channels": 96, "kernel_size": 5,
        "padding": 2, "pool": ["max", 4, 2, 1], "temperature": 1.0, "lr": 0.08, "power": 0.7}``.
    input_shape : tuple or None
        ``(C, H, W)`` when ``X`` comes as flat rows.
    training : "greedy" or "simultaneous"
        Greedy: layer i learns for ``epochs`` passes on the fixed output of the trained layers
        below (running statistics of their input normalisation), then layer i + 1. Simultaneous:
        ``epochs`` passes in all; at each minibatch (one ``batch_size`` for every layer) layer i
        + 1 learns from layer i's training-mode output on that minibatch (normalised by the
        minibatch's statistics, layer i's weights before its update from that minibatch), as
        the reference code's forward pass with plasticity followed by every layer's update.
        With ``backend="cuda"`` layers, simultaneous training calls each layer's GPU step once
        per minibatch (its weights cross to the device and back each time): greedy training,
        one call per block of images, is the faster mode on a GPU.
    block_images : int
        Greedy training: images pushed through the lower layers at a time while a layer learns
        (memory: the lower layers' outputs of one block only); rounded down to whole minibatches
        of the learning layer, so the result does not depend on it.

    ``fit(X, epochs)`` (images shuffled per epoch with the net's seed) gives ``layers_``, the
    fitted layer objects; ``transform(X)`` the last layer's representation (flat rows),
    ``transform(X, layer=i)`` layer i's. Training checkpoints by epochs (greedy: one step per
    layer and epoch, ``len(layers) * epochs`` in all) and resumes where it stopped.
    """

    kind = "hebbian-net"
    layered = True
    config_fit_params = ("epochs",)
    checkpoint_unit = "epochs"
    neutral_params = (*Layer.neutral_params, "block_images")
    torch_view = True
    gradient_attacks = True
    input_dtype = np.float32
    fitted = {**Layer.fitted, "input_shape_": "json", "output_shape_": "json", "n_units_": "json",
              "seed_": "json", "epochs_done_": "json", "n_epochs_": "json",
              "n_fit_rows_": "json"}
    representation_description = "the last layer's pooled triangle activations (channel, y, x), flattened"
    export_block_rows = 256
    TRAINING = ("greedy", "simultaneous")

    def __init__(self, layers: list = (), input_shape: tuple | None = None, training="greedy", block_images=1000,
                 random_state=None, progress=None):
        self.layers = layers
        self.input_shape = input_shape
        self.training = training
        self.block_images = block_images
        self.random_state = random_state
        self.progress = progress

    def _validate_params(self):
        check_int(self.block_images, "block_images", 1)
        if self.training not in self.TRAINING:
            raise ValueError(f"training must be one of {list(self.TRAINING)}, got {plain(self.training)!r}")
        if isinstance(self.layers, (str, dict)) or not hasattr(self.layers, "__len__") or len(self.layers) == 0:
            raise ValueError("layers must be a non-empty list of layer tables, e.g. "
                             "[{'kind': 'conv-soft-wta', 'n_channels': 96, 'kernel_size': 5}]")
        sizes = []
        for i, spec in enumerate(self.layers):
            if not isinstance(spec, dict):
                raise ValueError(f"layers[{i}] must be a table (dict) with a kind, got {type(spec).__name__}")
            if spec.get("kind") not in _STACKABLE:
                raise ValueError(f"layers[{i}].kind must be one of {sorted(_STACKABLE)}, got {spec.get('kind')!r}")
            bad = sorted(k for k in spec if k != "kind" and k not in _STACKABLE[spec["kind"]]._param_names())
            if bad or "random_state" in spec or "progress" in spec or "input_shape" in spec:
                raise ValueError(f"layers[{i}] has keys its kind does not take from a net: "
                                 f"{bad or [k for k in ('random_state', 'progress', 'input_shape') if k in spec]}")
            layer = _STACKABLE[spec["kind"]](**{k: v for k, v in spec.items() if k != "kind"})
            layer._validate_params()
            sizes.append(layer.batch_size)
        if self.training == "simultaneous" and len(set(sizes)) > 1:
            raise ValueError(f"training='simultaneous' needs one batch_size for every layer (each minibatch "
                             f"goes through the whole net), got {sizes}")
        if self.input_shape is not None:
            ConvSoftWTA(input_shape=self.input_shape)._validate_params()

    def _build(self):
        seeds = np.random.SeedSequence(self.random_state).spawn(len(self.layers))
        return [_STACKABLE[spec["kind"]](**{k: v for k, v in spec.items() if k != "kind"},
                                          random_state=int(s.generate_state(1)[0]), progress=self.progress)
                for spec, s in zip(self.layers, seeds)]

    def _images(self, X, name="X", *, reset=False):
        probe = ConvSoftWTA(input_shape=self.input_shape)
        if not reset and self._is_fitted():
            probe.input_shape_ = self.input_shape_
            probe.n_features_in_ = self.n_features_in_
        return probe._images(X, name, reset=reset)

    def _check_X(self, X, name="X", *, reset=False):
        Xi = self._images(X, name, reset=reset)
        return Xi.reshape(Xi.shape[0], -1)

    def _forward(self, Xi, upto):
        """Images through layers ``0 .. upto - 1``, as 4-D arrays (the input of layer ``upto``)."""
        for layer in self.layers_[:upto]:
            Xi = layer.transform(Xi).reshape((Xi.shape[0],) + tuple(layer.output_shape_))
        return Xi

    def _start(self, X, epochs):
        """Every layer initialised (its seed, the shape the layer below passes on): the state
        before the first step, whichever the training."""
        self.layers_ = self._build()
        self.seed_ = int(np.random.SeedSequence(self.random_state).entropy % (2**63))
        self.input_shape_ = [int(d) for d in X.shape[1:]]
        self.n_features_in_ = int(np.prod(X.shape[1:]))
        shape = tuple(X.shape[1:])
        for layer in self.layers_:
            layer._start(np.empty((0,) + shape, np.float32))
            shape = tuple(layer.output_shape_)
        self.output_shape_ = list(shape)
        self.n_units_ = int(np.prod(shape))
        self.epochs_done_ = 0
        self.n_epochs_, self.n_fit_rows_ = int(epochs), int(X.shape[0])

    def _resolve_backends(self):
        """Each layer's backend, resolved again (a loaded net continues on this machine's)."""
        for layer in self.layers_:
            layer.backend_ = layer._validate_params()

    def _n_steps(self, epochs):
        return epochs * len(self.layers_) if self.training == "greedy" else epochs

    def checkpoint_progress(self) -> str:
        if self.training == "greedy" and self.n_epochs_:
            li, e = divmod(self.epochs_done_, self.n_epochs_)
            return f"layer {li + 1} of {len(self.layers_)}, epoch {e}" if li < len(self.layers_) else "finished"
        return f"epoch {self.epochs_done_}"

    def fit(self, X, epochs=1, *, callback=None, resume=False, checkpoint=None, checkpoint_every=None):
        """Train the layers on images ``X`` (see the class docstring). ``callback(net, record)``
        after each layer's epoch (``record``: layer, epoch, seconds, its filters' convergence,
        mean norm and distinct winners); ``False`` stops the fit.

        ``checkpoint``: save the net there (atomically) every ``checkpoint_every`` steps
        (default 1; a step is one epoch of one layer when greedy, one epoch of the net when
        simultaneous) and at the end; ``resume=True`` on a loaded checkpoint continues the same
        schedule (same ``epochs`` and images) and ends exactly where an uninterrupted fit does."""
        epochs = check_int(epochs, "epochs", 1)
        every = 1 if checkpoint_every is None else check_int(checkpoint_every, "checkpoint_every", 1)
        self._validate_params()
        if resume and self._is_fitted():
            X = self._images(X)
            if (self.n_epochs_, self.n_fit_rows_) != (epochs, X.shape[0]):
                raise ValueError(f"cannot resume: the checkpoint is of a fit of {self.n_epochs_} epochs over "
                                 f"{self.n_fit_rows_} images, asked for {epochs} epochs over {X.shape[0]}")
            self._resolve_backends()
        else:
            X = self._images(X, reset=True)
            self._start(X, epochs)
        n_steps = self._n_steps(epochs)
        while self.epochs_done_ < n_steps:
            t0 = time.perf_counter()
            if self.training == "greedy":
                li, e = divmod(self.epochs_done_, epochs)
                self._greedy_epoch(X, li, e, epochs)
                trained = [li]
            else:
                self._simultaneous_epoch(X, self.epochs_done_, epochs)
                trained = range(len(self.layers_))
            seconds = time.perf_counter() - t0
            self.epochs_done_ += 1
            records = []
            for li in trained:
                layer = self.layers_[li]
                layer.epochs_done_ += 1
                records.append(dict(layer._record(seconds, self._forward(X[:layer.probe_images], li)), layer=li))
            if checkpoint is not None and (self.epochs_done_ % every == 0 or self.epochs_done_ == n_steps):
                self.save(checkpoint)
            if callback is not None and any([callback(self, rec) is False for rec in records]):
                break
        return self

    def _greedy_epoch(self, X, li, e, epochs):
        """Layer ``li``'s epoch ``e`` on the trained lower layers' output, in blocks of whole minibatches."""
        layer = self.layers_[li]
        bs = int(layer.batch_size)
        block = max(bs, int(self.block_images) // bs * bs)
        order = np.random.default_rng([self.seed_, 1, li, e]).permutation(X.shape[0])
        bar = progress_bar(total=len(order), progress=self.progress, unit="image",
                           desc=f"layer {li + 1}/{len(self.layers_)} epoch {e + 1}/{epochs}")
        try:
            for start in range(0, len(order), block):
                Xb = self._forward(X[order[start:start + block]], li)
                layer._pass(Xb, np.arange(Xb.shape[0]), "", bar=bar)
        finally:
            bar.close()

    def partial_fit(self, X):
        """One pass over images ``X`` in order with every layer learning at once (the
        simultaneous step), continuing earlier calls (the first initialises the net): calls on
        consecutive parts of ``X`` that end on whole minibatches equal one call on ``X``. Needs
        ``training="simultaneous"``: a greedy net trains one layer at a time over all the images."""
        self._validate_params()
        if self.training != "simultaneous":
            raise ValueError("partial_fit trains every layer at once: it needs training='simultaneous' "
                             f"(this net's training is {self.training!r}; fit it instead)")
        if not self._is_fitted():
            X = self._images(X, reset=True)
            self._start(X, 1)
            self.n_epochs_ = self.n_fit_rows_ = None  # no schedule: nothing to resume
        else:
            X = self._images(X)
            self._resolve_backends()
        self._simultaneous_pass(X, np.arange(X.shape[0]), "all layers partial_fit")
        return self

    def _simultaneous_epoch(self, X, e, epochs):
        """One epoch of every layer at once (:meth:`_simultaneous_pass`), in the first layer's
        greedy order of epoch ``e``: a one-layer net learns the same either way."""
        order = np.random.default_rng([self.seed_, 1, 0, e]).permutation(X.shape[0])
        self._simultaneous_pass(X, order, f"all {len(self.layers_)} layers epoch {e + 1}/{epochs}")

    def _simultaneous_pass(self, X, order, desc):
        """Each minibatch of ``X[order]`` through the net, each layer learning from the
        training-mode output of the layer below (before that layer's update)."""
        bs = int(self.layers_[0].batch_size)
        last = len(self.layers_) - 1
        bar = progress_bar(total=len(order), progress=self.progress, unit="image", desc=desc)
        try:
            for start in range(0, len(order), bs):
                H = X[order[start:start + bs]]
                for li, layer in enumerate(self.layers_):
                    out = layer._training_output(H) if li < last else None
                    layer._epoch(H, np.arange(H.shape[0]), lambda i, m: None)
                    layer.n_samples_seen_ += H.shape[0]
                    H = out
                bar.update(len(order[start:start + bs]))
        finally:
            bar.close()

    def transform(self, X, layer=None, block_rows=256):
        """Flat rows of the last layer's representation (``layer=i``: layer i's)."""
        self._check_fitted()
        last = len(self.layers_) - 1 if layer is None else check_int(layer, "layer", 0)
        if last >= len(self.layers_):
            raise ValueError(f"layer must be < {len(self.layers_)} (the net has {len(self.layers_)} layers), got {last}")
        X = self._images(X)
        width = int(np.prod(self.layers_[last].output_shape_))
        out = np.empty((X.shape[0], width), np.float32)
        for i in range(0, X.shape[0], block_rows):
            out[i:i + block_rows] = self.layers_[last].transform(self._forward(X[i:i + block_rows], last))
        return out

    def fit_transform(self, X, y=None, epochs=1):
        return self.fit(X, epochs=epochs).transform(X)

    def to_torch(self, power=None):
        """The net as a frozen, differentiable torch module: each layer's
        :meth:`ConvCompetitiveLayer.to_torch` in sequence (``power`` overrides the last layer's)."""
        import torch

        self._check_fitted()
        last = len(self.layers_) - 1
        return torch.nn.Sequential(*[layer.to_torch(power if i == last else None)
                                     for i, layer in enumerate(self.layers_)])

    def export(self, path, splits, *, dataset=None, provenance=None, block_rows=None, progress=False,
               layer_splits=None):
        """Write the net and, for each split, every layer's representation: the last layer's under
        the split's own name (what analyses read), layer i's below it under ``<split>.layer<i>``;
        each carries its ``layer`` attribute (schema 1.3.0). ``splits`` as :meth:`Layer.export`;
        ``layer_splits``: the splits whose lower layers are written too (None: all; a study
        writes the test split's only: a lower layer of a 60,000-image train split can take GBs)."""
        from .. import io
        from .._progress import progress_bar

        self._check_fitted()
        block_rows = int(block_rows or self.export_block_rows)
        last = len(self.layers_) - 1
        layer_splits = check_layer_splits(layer_splits, splits)
        with io.Writer(path, overwrite=True) as w:
            w.write_model(self.kind, self.model_arrays(), self.hyperparameters(), dims=self.dims())
            for split, value in splits.items():
                X, y, index = (tuple(value) + (None, None))[:3] if isinstance(value, tuple) else (value, None, None)
                X = self._images(X, name=f"splits[{split!r}]")
                every = layer_splits is None or split in layer_splits
                reps = [w.create_representation(split if i == last else f"{split}.layer{i}", X.shape[0],
                                                int(np.prod(layer.output_shape_)), labels=y, inputs_index=index,
                                                dataset=dataset, dataset_split=split, layer=i,
                                                description=f"layer {i}: {layer.representation_description}")
                        if every or i == last else None for i, layer in enumerate(self.layers_)]
                for start in progress_bar(range(0, X.shape[0], block_rows), progress=progress,
                                          desc=f"export {split}", unit="block"):
                    H = X[start:start + block_rows]
                    for i, layer in enumerate(self.layers_):  # each layer's output feeds the next
                        A = layer.transform(H)
                        if reps[i] is not None:
                            reps[i].write_rows(start, A)
                        H = A.reshape((A.shape[0],) + tuple(layer.output_shape_))
            w.write_provenance(self.provenance({"dataset": dataset or "unknown", **(provenance or {})}))
        return path

    # ------------------------------------------------------------------ record
    def model_arrays(self) -> dict:
        self._check_fitted()
        return {f"layer{i}": layer.model_arrays() for i, layer in enumerate(self.layers_)}

    def hyperparameters(self) -> dict:
        hp = super().hyperparameters()
        hp["layer_records_"] = [{"kind": layer.kind, "hyperparameters": layer.hyperparameters()}
                                for layer in self.layers_]
        return hp

    def dims(self) -> dict:
        return {}

    def receptive_field_weights(self):
        self._check_fitted()
        return self.layers_[0].weights_

    def _restore(self, hp, arrays, path):
        self.layers_ = [_STACKABLE[rec["kind"]]._from_record(dict(rec["hyperparameters"]), arrays[f"layer{i}"], path)
                        for i, rec in enumerate(hp["layer_records_"])]
        for layer in self.layers_:
            layer.progress = self.progress
        if "epochs_done_" not in hp:  # written before nets recorded their schedule: finished, not resumable
            self.epochs_done_, self.n_epochs_, self.n_fit_rows_ = None, None, None
