"""Torch views of fitted layers and readouts: same numbers as the NumPy path, frozen, and the
non-differentiable wrapper refuses gradients loudly."""

import numpy as np
import pytest
import torch

from bioreps.layers.hebbian import HebbianWTA
from bioreps.readout import LinearReadout
from bioreps.torch_views import NumpyModule, ReadoutModule, classifier, spiking_classifier

import _float32


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.random((300, 64)).astype(np.float32)
    y = (X[:, :32].sum(1) > X[:, 32:].sum(1)).astype(np.int64) + 2 * (X[:, 0] > 0.5)
    return X, y


@pytest.mark.parametrize("standardize", [True, False])
def test_readout_to_torch_equals_decision_function(data, standardize):
    X, y = data
    r = LinearReadout(epochs=3, standardize=standardize, random_state=0, progress=False).fit(X, y)
    m = r.to_torch()
    assert isinstance(m, ReadoutModule)
    with torch.no_grad():
        got = m(torch.from_numpy(X)).numpy()
    want = r.decision_function(X)
    # torch's and NumPy's float32 products sum in their own orders: the float32 rounding bound
    _float32.assert_within(got, want, _float32.readout_bound(X, r))
    assert list(m.parameters()) == []  # frozen
    x = torch.from_numpy(X[:3]).requires_grad_(True)
    m(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # but differentiable in its input
    with pytest.raises(RuntimeError, match="not fitted"):
        LinearReadout().to_torch()


@pytest.mark.parametrize("kwargs", [{}, {"center": True, "input_norm": 3.0}])
def test_classifier_equals_the_numpy_pipeline(data, kwargs):
    X, y = data
    layer = HebbianWTA(n_units=20, batch_size=50, random_state=0, progress=False, backend="cpu",
                       **kwargs).fit(X, epochs=1)
    feats = layer.transform(X)
    r = LinearReadout(epochs=3, random_state=0, progress=False).fit(feats, y)
    model = classifier(layer, r)
    with torch.no_grad():
        got = model(torch.from_numpy(X)).numpy()
    want = r.decision_function(feats)
    # features from torch's and NumPy's float32 products (inputs normalised by a float32 norm of
    # 64 terms where input_norm is set), then the readout: the float32 rounding bounds, chained
    Xs = X - layer.mean_ if layer.center else X
    if layer.input_norm is not None:
        Xs = Xs / np.sum(np.abs(Xs) ** layer.input_norm, axis=1, keepdims=True) ** (1 / layer.input_norm)
    feature_bound = _float32.relu_power_bound(Xs, layer.weights_, 4.5, extra_terms=X.shape[1] + 4)
    _float32.assert_within(got, want, _float32.readout_bound(feats, r, feature_bound))
    assert isinstance(model, torch.nn.Sequential) and getattr(model, "differentiable", True)
    r2 = LinearReadout(epochs=1, random_state=0, progress=False).fit(feats[:, :10], y)
    with pytest.raises(ValueError, match="20 units but the readout was fitted on 10"):
        classifier(layer, r2)
    with pytest.raises(TypeError, match="spiking_classifier"):
        classifier(object(), r)


def test_numpy_module_runs_numpy_and_refuses_gradients():
    W = np.arange(12, dtype=np.float32).reshape(4, 3)
    m = NumpyModule(lambda A: A @ W, 3)
    assert m.differentiable is False
    x = torch.rand(5, 4)
    np.testing.assert_allclose(m(x).numpy(), x.numpy() @ W, rtol=1e-6)
    xg = x.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="not differentiable.*square_attack"):
        m(xg)
    with torch.no_grad():
        assert m(xg).shape == (5, 3)  # fine without autograd
    with pytest.raises(ValueError, match="expected \\(5, 2\\)"):
        NumpyModule(lambda A: A @ W, 2)(x)
    with pytest.raises(TypeError, match="callable"):
        NumpyModule(3, 2)


def test_spiking_classifier_wires_transform_and_readout(data):
    X, y = data

    class FakeSpiking:  # the interface of SpikingWTA: transform(X) -> counts, a progress setting
        progress = None

        def transform(self, X):
            return np.round(X[:, :8] * 10).astype(np.float32)

    layer = FakeSpiking()
    r = LinearReadout(epochs=2, random_state=0, progress=False).fit(layer.transform(X), y)
    m = spiking_classifier(layer, r)
    assert m.differentiable is False and m.n_outputs == r.coef_.shape[0]
    with torch.no_grad():
        got = m(torch.from_numpy(X).reshape(-1, 8, 8)).numpy()  # images are flattened
    # the same NumPy function on a copy of the data; a BLAS may still pick another kernel for
    # another alignment: the float32 rounding bound
    _float32.assert_within(got, r.decision_function(layer.transform(X)), _float32.readout_bound(layer.transform(X), r))


def test_spiking_classifier_silences_the_layer_bar_per_call_and_restores_it(data):
    X, y = data
    seen = []

    class FakeSpiking:
        progress = True  # the layer's own setting

        def transform(self, X):
            seen.append(self.progress)
            return np.round(X[:, :8] * 10).astype(np.float32)

    layer = FakeSpiking()
    r = LinearReadout(epochs=2, random_state=0, progress=False).fit(X[:, :8], y)
    with torch.no_grad():
        spiking_classifier(layer, r)(torch.from_numpy(X[:5]))
        spiking_classifier(layer, r, progress=None)(torch.from_numpy(X[:5]))
    assert seen == [False, True]  # an attack's queries show no bar; None keeps the layer's
    assert layer.progress is True
