"""Backprop-trained networks whose hidden layer is compared with the local-learning layers.

Every model is a :class:`torch.nn.Module` with

- ``forward(x)`` -> logits ``(batch, n_classes)``; ``x`` is flat ``(batch, n_features)`` float
  input in [0, 1] (the CNN also takes ``(batch, 1, 28, 28)``);
- ``hidden(x)`` -> the representation ``(batch, n_units)``;
- ``representation_module``: the submodule whose forward output *is* the representation (attach
  a forward hook to it to ablate units: the change propagates to the logits);
- ``n_units``, ``n_classes``, ``n_features``;
- ``hyperparameters()`` -> the constructor arguments as a JSON-able dict (the seed actually used
  for the initial weights included), so ``type(model)(**model.hyperparameters())`` rebuilds it;
- ``export(path, splits)`` (bioreps HDF5 file with one representation per split; a network of
  several layers, :class:`ConvNet`, also writes each lower layer's, see
  :meth:`BaselineModel.exported_representations`), ``save(path)`` and ``Class.load(path)`` /
  :func:`load`.

Initial weights are drawn from a private :class:`torch.Generator` seeded with ``seed`` (PyTorch's
default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases), so the global torch RNG
is neither used nor disturbed and the same seed gives the same weights. Random draws during
training (:class:`ConvNet`'s dropout masks, :class:`SpikingMLP`'s input spikes) come from the
model's own ``generator`` for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .._validation import check_array, check_int, check_labels, check_layer_splits

__all__ = ["MLP", "CNN", "ConvNet", "BaselineModel", "load", "export"]

class RePU(nn.Module):
    """Rectified power unit ``ReLU(x) ** power`` (Krotov & Hopfield's rectified polynomial: what
    the readout of their Hebbian layer sees, with power 4.5)."""

    def __init__(self, power=4.5):
        super().__init__()
        self.power = float(power)

    def forward(self, x):
        h = torch.relu(x)
        return h if self.power == 1.0 else h.pow(self.power)

    def extra_repr(self):
        return f"power={self.power:g}"


_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "repu": RePU}


def _resolve_seed(seed):
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
    return check_int(seed, "seed", minimum=0)


def _check_activation(activation):
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a str, got {type(activation).__name__}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}")
    return activation


def _check_sizes(sizes, name="sizes"):
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"{name} must be a sequence of ints such as (784, 2000, 10), "
                        f"got {type(sizes).__name__}")
    sizes = tuple(check_int(s, f"{name}[{i}]") for i, s in enumerate(sizes))
    if len(sizes) < 3:
        raise ValueError(f"{name} needs at least 3 entries (inputs, >= 1 hidden layer, classes), "
                         f"got {sizes}")
    return sizes


def _global_rng_untouched():
    """Build modules (whose constructors draw from the global torch RNG) without changing it."""
    return torch.random.fork_rng(devices=[])


@torch.no_grad()
def _init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default Linear/Conv init, drawn from ``generator`` in module order."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            m.weight.uniform_(-bound, bound, generator=generator)
            if m.bias is not None:
                m.bias.uniform_(-bound, bound, generator=generator)


class BaselineModel(nn.Module):
    """Shared plumbing: input conversion, hidden(), hyperparameters, export/save/load.

    Subclasses set ``kind``, ``n_features``, ``n_classes``, ``representation_module`` and
    implement ``forward`` and ``_params`` (constructor arguments). The class attributes below
    declare what a baseline can do (the same names as on :class:`bioreps.layers.Layer`), read by
    the study registry and reports.
    """

    #: registry key of the model kind; None on this abstract base
    kind = None
    #: trained by :func:`bioreps.baselines.train`, which checkpoints every epoch
    checkpoint_unit = "epochs"
    indexed_transform = False
    has_vote_readout = False
    #: is a differentiable torch module
    torch_view = True
    #: ``preactivations(X)``: the input of ``representation_module`` (MLP, CNN: the hidden layer's
    #: currents before its activation function)
    has_preactivations = True
    #: no noise units to prune (that is the Hebbian layers' pruning)
    prunable = False
    gradient_attacks = True
    #: learns from labels and has its own classifier head
    supervised = True
    represents_input = False
    #: no trainer of several networks at once (each seed trains on its own)
    ensemble = None
    #: ``fit`` keywords a study may set (baselines train through ``baselines.train`` for now)
    config_fit_params = ()
    #: rows :meth:`export` computes and writes at a time (a model with wide layers sets fewer)
    export_block_rows = 4096
    #: a stack of layers whose files hold every layer's representation (``export(...,
    #: layer_splits=)`` chooses the splits that get the lower layers)
    layered = False
    _input_shape: tuple | None = None   # e.g. (1, 28, 28): also accepted besides flat input

    def __init__(self):
        super().__init__()
        #: set by :func:`bioreps.baselines.train`: regulariser, optimiser settings, seed ...
        self.training_info_: dict = {}
        #: per-epoch history of the last :func:`~bioreps.baselines.train` call
        self.history_: dict = {}

    def _validate_params(self):
        """Check the constructor arguments (as :meth:`bioreps.layers.Layer._validate_params`):
        a baseline's constructor already checked them (it builds its layers from them), so
        nothing is left to check here."""
        return None

    # -- input ------------------------------------------------------------------------------
    def _as_tensor(self, x) -> torch.Tensor:
        """``x`` as a float32 tensor of shape (batch, n_features) on the model's device."""
        if not isinstance(x, torch.Tensor):
            x = torch.from_numpy(check_array(x, name="x", ndim=None))
        if not torch.is_floating_point(x):
            x = x.float()
        if self._input_shape is not None and tuple(x.shape[1:]) == self._input_shape:
            x = x.reshape(x.shape[0], -1)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            expected = f"(n, {self.n_features})"
            if self._input_shape is not None:
                expected += f" or (n, {', '.join(map(str, self._input_shape))})"
            raise ValueError(f"input must have shape {expected}, got {tuple(x.shape)}")
        p = next(self.parameters())
        return x.to(dtype=p.dtype, device=p.device)

    # -- API --------------------------------------------------------------------------------
    @property
    def n_units(self) -> int:
        """Width of the representation."""
        return self._n_units

    def hidden(self, x) -> torch.Tensor:
        """The representation ``(batch, n_units)`` (the output of ``representation_module``)."""
        captured = []
        handle = self.representation_module.register_forward_hook(
            lambda module, inputs, output: captured.append(output))
        try:
            self._forward_until_representation(self._as_tensor(x))
        finally:
            handle.remove()
        return captured[-1]

    def _forward_until_representation(self, x):
        return self.forward(x)

    def exported_representations(self) -> list:
        """What :meth:`export` writes for each split: ``[(layer, n_units, description), ...]``.

        The last entry is the representation itself, stored under the split's own name; each one
        before it under ``<split>.layer<layer>``. ``layer`` is stored as the representation's
        ``layer`` attribute (schema 1.3.0) unless it is None. This default: the representation
        alone, without a ``layer`` attribute (a single-representation file); a network whose
        every layer is worth measuring (:class:`ConvNet`) lists them all, as
        :meth:`bioreps.layers.HebbianNet.export` writes its layers."""
        return [(None, self.n_units, self.representation_description)]

    def _exported_rows(self, x) -> list:
        """The rows of every entry of :meth:`exported_representations` for the input block ``x``,
        in that order, as tensors ``(rows, n_units)`` from one forward pass (eval mode, no grad:
        :meth:`export` sets both)."""
        return [self.hidden(x)]

    def hyperparameters(self) -> dict:
        """Constructor arguments as a JSON-able dict (``type(self)(**d)`` rebuilds the model)."""
        return dict(self._params)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._params.items())

    @torch.no_grad()
    def transform(self, X, *, batch_size: int = 4096) -> np.ndarray:
        """The representation of ``X`` as a float32 NumPy array, in eval mode, block by block."""
        batch_size = check_int(batch_size, "batch_size")
        X = _check_inputs(X, self)
        was_training = self.training
        self.eval()
        try:
            out = [self.hidden(torch.from_numpy(X[s:s + batch_size])).cpu().numpy()
                   for s in range(0, X.shape[0], batch_size)]
        finally:
            self.train(was_training)
        return np.concatenate(out).astype(np.float32, copy=False)

    @torch.no_grad()
    def preactivations(self, X, *, batch_size: int = 4096) -> np.ndarray:
        """What ``representation_module`` receives (for MLP and CNN the hidden layer's currents
        before its activation), float32 (n, n_units), in eval mode."""
        if not type(self).has_preactivations:
            raise TypeError(f"{type(self).__name__} has no pre-activations of its representation")
        batch_size = check_int(batch_size, "batch_size")
        X = _check_inputs(X, self)
        was_training = self.training
        self.eval()
        captured = []
        handle = self.representation_module.register_forward_hook(
            lambda module, inputs, output: captured.append(inputs[0].detach()))
        try:
            out = []
            for s in range(0, X.shape[0], batch_size):
                captured.clear()
                self._forward_until_representation(self._as_tensor(X[s:s + batch_size]))
                out.append(captured[-1].reshape(captured[-1].shape[0], -1).cpu().numpy())
        finally:
            handle.remove()
            self.train(was_training)
        return np.concatenate(out).astype(np.float32, copy=False)

    @torch.no_grad()
    def predict(self, X, *, batch_size: int = 4096) -> np.ndarray:
        """Predicted class of every row of ``X`` (eval mode)."""
        X = _check_inputs(X, self)
        was_training = self.training
        self.eval()
        try:
            out = [self(torch.from_numpy(X[s:s + batch_size])).argmax(1).cpu().numpy()
                   for s in range(0, X.shape[0], batch_size)]
        finally:
            self.train(was_training)
        return np.concatenate(out).astype(np.int64)

    def score(self, X, y, *, batch_size: int = 4096) -> float:
        """Accuracy on ``(X, y)``."""
        y = check_labels(y, n=len(X), n_classes=self.n_classes)
        return float((self.predict(X, batch_size=batch_size) == y).mean())

    # -- files ------------------------------------------------------------------------------
    def model_arrays(self) -> dict:
        """``state_dict`` as NumPy arrays (keys as in PyTorch, e.g. ``"net.0.weight"``)."""
        return {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}

    def _file_hyperparameters(self) -> dict:
        info = dict(self.training_info_)
        return {"class": type(self).__name__, **self.hyperparameters(),
                "n_units": self.n_units, "regularizer": info.get("regularizer"),
                "training": info, "history": self.history_}

    def _file_provenance(self, dataset, provenance) -> dict:
        info = self.training_info_
        hist = self.history_ or {}
        summary = {}
        if hist.get("epoch"):
            summary = {"epochs": len(hist["epoch"]), "final_loss": hist["loss"][-1],
                       "final_accuracy": hist["accuracy"][-1],
                       "final_regularizer": hist["regularizer"][-1],
                       "seconds": float(sum(hist["seconds"]))}
        return {"seed": info.get("seed"), "backend": f"torch-{self._device_type()}",
                "dataset": dataset or info.get("dataset") or "unknown",
                "config": {"model": {"class": type(self).__name__, **self.hyperparameters()},
                           "training": info},
                "regularizer": info.get("regularizer") or {"name": "none"},
                "history_summary": summary, **(provenance or {})}

    def _device_type(self) -> str:
        return next(self.parameters()).device.type

    def export(self, path, splits, *, dataset=None, provenance=None, block_rows: int | None = None,
               layer_splits=None):
        """Write weights, hyperparameters and the representation of each split to ``path`` (a
        multi-layer model: every layer's, see :meth:`exported_representations`).

        Parameters
        ----------
        path : str or os.PathLike
            The bioreps HDF5 file (replaced atomically if it exists).
        splits : dict
            Split name -> ``X``, ``(X, y)`` or ``(X, y, inputs_index)`` (as the layers' export:
            each row's index in the source split, so analyses find the images again); ``X`` of
            shape (n, n_features) in [0, 1].
        dataset : str, optional
            Dataset name recorded with every split and in the provenance.
        provenance : dict, optional
            Extra provenance fields (win over the automatic ones).
        block_rows : int, optional
            Rows computed and written at a time (default :attr:`export_block_rows`).
        layer_splits : list of str, optional
            A multi-layer model: the splits whose lower layers are written too (None: all; the
            other splits get the representation only).

        The model group has kind :attr:`kind`, the ``state_dict`` tensors as arrays and the
        constructor arguments, regulariser parameters and training history as hyperparameters;
        the provenance holds the training configuration and a history summary.
        """
        from .. import io

        block_rows = check_int(type(self).export_block_rows if block_rows is None else block_rows, "block_rows")
        if not isinstance(splits, Mapping):
            raise TypeError(f"splits must be a dict of name -> X, (X, y) or (X, y, inputs_index), "
                            f"got {type(splits).__name__}")
        layer_splits = check_layer_splits(layer_splits, splits)
        prepared = {}
        for split, value in splits.items():
            X, y, index = (tuple(value) + (None, None))[:3] if isinstance(value, tuple) else (value, None, None)
            X = _check_inputs(X, self, name=f"splits[{split!r}]")
            if y is not None:
                y = check_labels(y, n=X.shape[0], n_classes=self.n_classes, name=f"labels of split {split!r}")
            prepared[split] = (X, y, index)
        was_training = self.training
        self.eval()
        try:
            with io.Writer(path, overwrite=True) as w:
                w.write_model(self.kind, self.model_arrays(), self._file_hyperparameters())
                entries = self.exported_representations()
                for split, (X, y, index) in prepared.items():
                    every = layer_splits is None or split in layer_splits
                    reps = [w.create_representation(split if j == len(entries) - 1 else f"{split}.layer{layer}",
                                                    X.shape[0], width, labels=y, inputs_index=index,
                                                    dataset=dataset, dataset_split=split, layer=layer,
                                                    description=description)
                            if every or j == len(entries) - 1 else None
                            for j, (layer, width, description) in enumerate(entries)]
                    for start in range(0, X.shape[0], block_rows):
                        with torch.no_grad():  # every layer's rows from one forward pass
                            blocks = self._exported_rows(torch.from_numpy(X[start:start + block_rows]))
                        for rep, block in zip(reps, blocks, strict=True):
                            if rep is not None:
                                rep.write_rows(start, block.cpu().numpy())
                w.write_provenance(self._file_provenance(dataset, provenance))
        finally:
            self.train(was_training)
        return path

    def save(self, path, *, provenance=None):
        """Write the trained model (no representations) to a bioreps HDF5 file; see :func:`load`."""
        return self.export(path, {}, provenance=provenance)

    @classmethod
    def load(cls, path):
        """Rebuild a model written by :meth:`save` or :meth:`export` (parameters, history).

        The class is found from the file's kind among the subclasses of ``BaselineModel``."""
        from .. import io

        with io.load(path) as f:
            kind = f.model.kind
            hyper = dict(f.model.hyperparameters)
            arrays = f.model.arrays
        classes = _subclasses_by_kind()
        if kind not in classes:
            raise ValueError(f"{path} holds a model of kind {kind!r}, not a baseline "
                             f"({', '.join(sorted(classes))})")
        found = classes[kind]
        if not issubclass(found, cls):
            raise ValueError(f"{path} holds a {found.__name__}, not a {cls.__name__}")
        import inspect
        names = [p for p in inspect.signature(found).parameters]
        model = found(**{k: hyper[k] for k in names if k in hyper})
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
        model.load_state_dict(state)
        model.training_info_ = hyper.get("training") or {}
        model.history_ = hyper.get("history") or {}
        model.eval()
        return model


def _subclasses_by_kind() -> dict:
    """kind -> class of every (imported) ``BaselineModel`` subclass that declares a kind."""
    found, stack = {}, [BaselineModel]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__dict__.get("kind"):
            found[cls.kind] = cls
    return found


def _check_inputs(X, model, name="X") -> np.ndarray:
    """Float32 (n, n_features) array in [0, 1], finite; (n, 1, 28, 28) flattened for the CNN."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = check_array(X, name=name, ndim=None, unit_interval=True)
    if model._input_shape is not None and X.ndim == len(model._input_shape) + 1 \
            and X.shape[1:] == model._input_shape:
        X = X.reshape(X.shape[0], -1)
    if X.ndim != 2 or X.shape[1] != model.n_features:
        raise ValueError(f"{name} must have shape (n, {model.n_features}), got {X.shape}")
    return X


class MLP(BaselineModel):
    """A fully connected network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths: inputs, one or more hidden layers, classes. Default 784-2000-10.
    activation : {"relu", "tanh", "repu"}
        Nonlinearity after every hidden layer; "repu" is ``ReLU(x) ** power`` (:class:`RePU`), the
        activation the readout of a Krotov-Hopfield layer sees.
    power : float
        The exponent of "repu" (default 4.5, Krotov & Hopfield 2019); ignored by the others.
    representation : int
        Which hidden layer is "the representation" (Python indexing over the hidden layers:
        ``-1``, the default, is the last; ``0`` the first). It is the post-activation output.
    seed : int or None
        Seeds the initial weights (None: a fresh random seed, recorded in
        :meth:`hyperparameters`).
    """

    kind = "mlp"

    def __init__(self, sizes=(784, 2000, 10), activation="relu", representation=-1, seed=None, power=4.5):
        super().__init__()
        sizes = _check_sizes(sizes)
        activation = _check_activation(activation)
        if isinstance(power, bool) or not isinstance(power, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(power) and power > 0):
            raise ValueError(f"power must be a number > 0 (the exponent of activation='repu'), got {power!r}")
        n_hidden = len(sizes) - 2
        if isinstance(representation, bool) or not isinstance(representation, (int, np.integer)):
            raise TypeError(f"representation must be an int index of a hidden layer, "
                            f"got {type(representation).__name__}")
        if not -n_hidden <= representation < n_hidden:
            raise ValueError(f"representation={representation} is out of range for {n_hidden} "
                             f"hidden layer(s) (use -{n_hidden} .. {n_hidden - 1})")
        seed = _resolve_seed(seed)
        self._params = {"sizes": list(sizes), "activation": activation,
                        "representation": int(representation), "seed": seed}
        if activation == "repu":
            self._params["power"] = float(power)
        layers = []
        self.activations = nn.ModuleList()
        with _global_rng_untouched():
            for i in range(n_hidden):
                layers.append(nn.Linear(sizes[i], sizes[i + 1]))
                act = RePU(power) if activation == "repu" else _ACTIVATIONS[activation]()
                self.activations.append(act)
                layers.append(act)
            layers.append(nn.Linear(sizes[-2], sizes[-1]))
        self.net = nn.Sequential(*layers)
        self.n_features = sizes[0]
        self.n_classes = sizes[-1]
        self._rep_index = int(representation) % n_hidden
        self._n_units = sizes[self._rep_index + 1]
        _init_parameters(self, torch.Generator().manual_seed(seed))

    @property
    def representation_module(self) -> nn.Module:
        return self.activations[self._rep_index]

    @property
    def representation_description(self) -> str:
        return (f"{self._params['activation']} output of hidden layer {self._rep_index + 1} of "
                f"MLP {'-'.join(map(str, self._params['sizes']))}")

    def forward(self, x):
        return self.net(self._as_tensor(x))

    def _forward_until_representation(self, x):
        rep = self.representation_module
        for module in self.net:
            x = module(x)
            if module is rep:
                return x
        return x


class CNN(BaselineModel):
    """A small convolutional network for 28x28x1 images.

    ``conv5x5(c1) - ReLU - maxpool2 - conv5x5(c2) - ReLU - maxpool2 - Linear(hidden) - ReLU -
    Linear(n_classes)``; the representation is the post-ReLU fully connected layer.

    Parameters
    ----------
    channels : (int, int)
        Output channels of the two conv layers.
    hidden : int
        Width of the fully connected hidden layer (the representation).
    n_classes : int
    seed : int or None
        Seeds the initial weights.
    """

    kind = "cnn"
    _input_shape = (1, 28, 28)

    def __init__(self, channels=(16, 32), hidden=128, n_classes=10, seed=None):
        super().__init__()
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or len(channels) != 2:
            raise ValueError(f"channels must be a pair of ints, got {channels!r}")
        c1, c2 = (check_int(c, f"channels[{i}]") for i, c in enumerate(channels))
        hidden = check_int(hidden, "hidden")
        n_classes = check_int(n_classes, "n_classes", minimum=2)
        seed = _resolve_seed(seed)
        self._params = {"channels": [c1, c2], "hidden": hidden, "n_classes": n_classes, "seed": seed}
        with _global_rng_untouched():
            self.features = nn.Sequential(
                nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
            self.fc = nn.Linear(c2 * 7 * 7, hidden)
            self.act = nn.ReLU()
            self.out = nn.Linear(hidden, n_classes)
        self.n_features = 784
        self.n_classes = n_classes
        self._n_units = hidden
        _init_parameters(self, torch.Generator().manual_seed(seed))

    @property
    def representation_module(self) -> nn.Module:
        return self.act

    representation_description = "ReLU output of the fully connected hidden layer of the CNN"

    def _forward_until_representation(self, x):
        return self.act(self.fc(self.features(x.reshape(-1, *self._input_shape))))

    def forward(self, x):
        return self.out(self._forward_until_representation(self._as_tensor(x)))


class _Triangle(nn.Module):
    """SoftHebb's activation ``relu(x - mean over channels of x) ** power``."""

    def __init__(self, power):
        super().__init__()
        self.power = float(power)

    def forward(self, x):
        return torch.relu(x - x.mean(dim=1, keepdim=True)) ** self.power


class _ReflectPad(nn.Module):
    def __init__(self, padding, mode):
        super().__init__()
        self.padding, self.mode = int(padding), mode

    def forward(self, x):
        if not self.padding:
            return x
        return nn.functional.pad(x, (self.padding,) * 4, "reflect" if self.mode == "reflect" else "constant")


#: the keys of a Hebbian network's layer table that shape it (the rest are its learning rule's)
_SHAPE_KEYS = ("n_channels", "kernel_size", "stride", "padding", "pool", "padding_mode", "batch_norm", "power")


class ConvNet(BaselineModel):
    """The backprop counterpart of a :class:`bioreps.layers.HebbianNet`: the same blocks
    (channels, kernel sizes, strides, padding and its mode, batch normalisation of each block's
    input, pooling), trained end to end with a linear classifier on the last block's flattened
    output (dropout before it, as SoftHebb's classifier), so every Hebbian layer has a layer of
    the same shape learned by backprop.

    Parameters
    ----------
    layers : list of dict
        The HebbianNet's layer tables, as they are: the keys that shape a block (``n_channels``,
        ``kernel_size``, ``stride``, ``padding``, ``pool``, ``padding_mode``, ``batch_norm``,
        ``power``) are used, the learning rule's (``lr``, ``temperature``, ...) ignored.
    input_shape : (C, H, W)
    activation : "relu" or "triangle"
        Each block's activation: ReLU (default), or SoftHebb's triangle with the table's power.
    dropout : float
        Dropout before the classifier. Its masks come from the model's own :attr:`generator`
        (which :func:`bioreps.baselines.train` reseeds from its ``seed``), not from the global
        torch RNG: a seeded run is reproducible whatever ran before it.

    The representation (``transform``) is the last block's pooled output, flattened channel-major
    as :meth:`HebbianNet.transform`; ``block_output(X, i)`` gives block i's. :meth:`export` writes
    every block's, as ``HebbianNet.export`` writes every layer's: the last block's under the split's
    own name, block ``i`` below it under ``<split>.layer<i>``, each with its ``layer`` attribute.
    """

    kind = "conv-net"
    has_preactivations = False
    layered = True
    #: the first block's output is wide (96 x 14 x 14 floats per image for SoftHebb's first layer)
    export_block_rows = 256

    def __init__(self, layers: list = (), input_shape: tuple = (1, 28, 28), n_classes=10, activation="relu",
                 dropout=0.5, seed=None):
        super().__init__()
        if isinstance(layers, (str, Mapping)) or not isinstance(layers, Sequence) or len(layers) == 0:
            raise ValueError("layers must be a non-empty list of layer tables (those of a HebbianNet)")
        if activation not in ("relu", "triangle"):
            raise ValueError(f"activation must be 'relu' or 'triangle', got {activation!r}")
        if isinstance(input_shape, (str, bytes)) or len(tuple(input_shape)) != 3:
            raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
        C, H, W = (check_int(d, "input_shape") for d in input_shape)
        n_classes = check_int(n_classes, "n_classes", minimum=2)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        seed = _resolve_seed(seed)
        tables = []
        for i, t in enumerate(layers):
            if not isinstance(t, Mapping) or "n_channels" not in t or "kernel_size" not in t:
                raise ValueError(f"layers[{i}] must be a table with at least n_channels and kernel_size")
            tables.append({k: t[k] for k in _SHAPE_KEYS if k in t})
        self._params = {"layers": tables, "input_shape": [C, H, W], "n_classes": n_classes,
                        "activation": activation, "dropout": float(dropout), "seed": seed}
        blocks, shapes = [], []
        with _global_rng_untouched():
            for t in tables:
                k, st, pd = int(t["kernel_size"]), int(t.get("stride", 1)), int(t.get("padding", 0))
                mods = [nn.BatchNorm2d(C, affine=False)] if t.get("batch_norm", True) else []
                mods += [_ReflectPad(pd, t.get("padding_mode", "reflect")), nn.Conv2d(C, int(t["n_channels"]), k, st),
                         nn.ReLU() if activation == "relu" else _Triangle(t.get("power", 1.0))]
                C, H, W = int(t["n_channels"]), (H + 2 * pd - k) // st + 1, (W + 2 * pd - k) // st + 1
                if t.get("pool") is not None:
                    kind, pk, ps, pp = t["pool"]
                    mods.append((nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(int(pk), int(ps), int(pp)))
                    H, W = (H + 2 * int(pp) - int(pk)) // int(ps) + 1, (W + 2 * int(pp) - int(pk)) // int(ps) + 1
                if H < 1 or W < 1:
                    raise ValueError(f"layers[{len(blocks)}] leaves no output (the images are too small for it)")
                blocks.append(nn.Sequential(*mods))
                shapes.append([C, H, W])
            self.blocks = nn.ModuleList(blocks)
            self.flatten = nn.Flatten()
            self.out = nn.Linear(C * H * W, n_classes)
        #: the dropout masks' generator (seeded with ``seed``; ``baselines.train`` reseeds it from its own seed)
        self.generator = torch.Generator().manual_seed(seed)
        self._input_shape = (self._params["input_shape"][0], self._params["input_shape"][1],
                             self._params["input_shape"][2])
        self.n_features = int(np.prod(self._input_shape))
        self.n_classes = n_classes
        self._n_units = C * H * W
        self.output_shape_ = [C, H, W]
        #: each block's output shape (channels, height, width)
        self.block_shapes_ = shapes
        _init_parameters(self, torch.Generator().manual_seed(seed))

    @property
    def representation_module(self) -> nn.Module:
        return self.flatten

    representation_description = "the last block's pooled activations (channel, y, x), flattened"

    def exported_representations(self) -> list:
        """Every block's output: ``[(i, width, description), ...]``, the last block's last."""
        tables, act = self._params["layers"], self._params["activation"]
        out = []
        for i, (t, shape) in enumerate(zip(tables, self.block_shapes_)):
            what = f"{act} activations" + (" after pooling" if t.get("pool") is not None else "")
            last = " (the last block: the classifier's input)" if i == len(tables) - 1 else ""
            out.append((i, int(np.prod(shape)), f"block {i}{last}: its {what} (channel, y, x), flattened"))
        return out

    def _exported_rows(self, x) -> list:
        x = self._as_tensor(x).reshape(-1, *self._input_shape)
        out = []
        for block in self.blocks:  # each block's output feeds the next: one pass for all of them
            x = block(x)
            out.append(x.reshape(x.shape[0], -1))
        return out

    def _forward_until_representation(self, x):
        x = x.reshape(-1, *self._input_shape)
        for block in self.blocks:
            x = block(x)
        return self.flatten(x)

    def drop(self, x):
        """Inverted dropout before the classifier, in training mode only. The masks come from
        :attr:`generator` (drawn on its device, the CPU, then moved), not from the global torch RNG."""
        p = self._params["dropout"]
        if not self.training or p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=self.generator.device) >= p
        return x * keep.to(device=x.device, dtype=x.dtype) / (1.0 - p)

    def forward(self, x):
        return self.out(self.drop(self._forward_until_representation(self._as_tensor(x))))

    @torch.no_grad()
    def block_output(self, X, layer, *, batch_size: int = 1024) -> np.ndarray:
        """Block ``layer``'s output (flattened, float32), in eval mode: the counterpart of
        ``HebbianNet.transform(X, layer=layer)``."""
        layer = check_int(layer, "layer", 0)
        if layer >= len(self.blocks):
            raise ValueError(f"layer must be < {len(self.blocks)}, got {layer}")
        X = _check_inputs(X, self)
        was = self.training
        self.eval()
        try:
            out = []
            for s in range(0, X.shape[0], batch_size):
                x = self._as_tensor(X[s:s + batch_size]).reshape(-1, *self._input_shape)
                for block in self.blocks[:layer + 1]:
                    x = block(x)
                out.append(x.reshape(x.shape[0], -1).cpu().numpy())
        finally:
            self.train(was)
        return np.concatenate(out).astype(np.float32, copy=False)


def load(path):
    """Rebuild a baseline model from a bioreps file written by ``save``/``export``.

    Returns the model (eval mode) with its parameters, ``training_info_`` and ``history_``.
    """
    return BaselineModel.load(path)


def export(model, path, splits, **kwargs):
    """Function form of :meth:`BaselineModel.export`."""
    if not isinstance(model, BaselineModel):
        raise TypeError(f"model must be a bioreps baseline model, got {type(model).__name__}")
    return model.export(path, splits, **kwargs)
