"""preactivations(X): the currents each model's activation function acts on (what the seed
paper, Holzhausen et al. 2024, measures spectra on), and RandomReLU's torch view (its "Init" row
is attacked with gradients)."""

import numpy as np
import pytest
import torch

from bioreps.baselines.models import CNN, MLP
from bioreps.baselines.snn import SpikingMLP
from bioreps.layers import HebbianWTA, Pixels, RandomReLU, SoftWTA
from bioreps.studies import kinds


@pytest.fixture
def X():
    return np.random.default_rng(3).random((40, 784), dtype=np.float32)


@pytest.mark.parametrize("cls", [HebbianWTA, SoftWTA])
def test_competitive_layers_rectify_and_raise_their_preactivations(cls, X):
    layer = cls(10, power=2.5, center=True, input_norm=2, random_state=0, progress=False).fit(X, epochs=1)
    pre = layer.preactivations(X)
    assert pre.dtype == np.float32 and pre.shape == (40, 10) and (pre < 0).any()
    np.testing.assert_allclose(np.maximum(pre, 0) ** np.float32(2.5), layer.transform(X), rtol=1e-5, atol=1e-7)
    # W x on the layer's own input preparation (centred, unit L2), not on the raw pixels
    Xc = X - layer.mean_
    Xc /= np.linalg.norm(Xc, axis=1, keepdims=True)
    np.testing.assert_allclose(pre, Xc @ layer.weights_.T, rtol=1e-4, atol=1e-5)


def test_random_relu_preactivations_and_torch_view(X):
    layer = RandomReLU(12, power=3.0, random_state=1).fit(X)
    np.testing.assert_allclose(layer.preactivations(X), X @ layer.weights_.T, rtol=1e-6)
    with torch.no_grad():
        out = layer.to_torch()(torch.from_numpy(X)).numpy()
    ref = layer.transform(X)
    # float32 GEMMs of two libraries: near-cancelling currents differ in their last bits, so
    # the bound is relative to the largest activation
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    x = torch.from_numpy(X[:3]).requires_grad_(True)
    layer.to_torch()(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the input


def test_pixels_preactivations_are_the_pixels(X):
    np.testing.assert_array_equal(Pixels().fit(X).preactivations(X), X)


def test_mlp_and_cnn_preactivations_are_the_hidden_currents(X):
    mlp = MLP((784, 16, 10), seed=0)
    W, b = mlp.net[0].weight.detach().numpy(), mlp.net[0].bias.detach().numpy()
    pre = mlp.preactivations(X, batch_size=7)  # several batches
    np.testing.assert_allclose(pre, X @ W.T + b, rtol=1e-4, atol=1e-5)
    # the same rows in one batch, as transform computes them: the same float32 GEMM, the same bits
    np.testing.assert_array_equal(np.maximum(mlp.preactivations(X), 0), mlp.transform(X))
    cnn = CNN(channels=(2, 3), hidden=8, seed=0)
    pre = cnn.preactivations(X[:5])
    assert pre.shape == (5, 8) and (pre < 0).any()
    np.testing.assert_allclose(np.maximum(pre, 0), cnn.transform(X[:5]), rtol=1e-6)


def test_models_without_preactivations_say_so(X):
    assert not kinds.get("spiking-mlp").has_preactivations and not kinds.get("spiking-wta").has_preactivations
    with pytest.raises(TypeError, match="SpikingMLP has no pre-activations"):
        SpikingMLP((784, 8, 10), seed=0).preactivations(X[:2])


def test_mlp_repu_is_the_hebbian_readouts_activation_and_round_trips(X, tmp_path):
    mlp = MLP((784, 16, 10), activation="repu", power=3.0, seed=0)
    pre = mlp.preactivations(X)
    np.testing.assert_allclose(mlp.transform(X), np.maximum(pre, 0) ** 3, rtol=1e-5, atol=1e-6)
    assert mlp.hyperparameters()["power"] == 3.0 and "power" not in MLP((784, 8, 10), seed=0).hyperparameters()
    mlp.save(tmp_path / "m.h5")
    back = MLP.load(tmp_path / "m.h5")
    np.testing.assert_array_equal(back.transform(X), mlp.transform(X))
    with pytest.raises(ValueError, match="power must be a number > 0"):
        MLP((784, 8, 10), activation="repu", power=0)
    with pytest.raises(ValueError, match="unknown activation 'relu4'"):
        MLP((784, 8, 10), activation="relu4")


@pytest.mark.parametrize("cls", [HebbianWTA, SoftWTA])
def test_diagnostics_every_thins_the_records_without_changing_learning(cls, X):
    kw = dict(n_units=8, batch_size=10, random_state=0, progress=False)
    every = cls(**kw).fit(X, epochs=5)
    thin = cls(**kw, diagnostics_every=2).fit(X, epochs=5)
    np.testing.assert_array_equal(every.weights_, thin.weights_)  # learning is the same
    assert [("converged" in r) for r in thin.history_] == [False, True, False, True, True]  # + the last
    assert all("converged" in r for r in every.history_)
    assert thin.fit_summary() == every.fit_summary()
    assert "diagnostics_every" in cls.neutral_params  # a resume may change it
    with pytest.raises(ValueError, match="diagnostics_every"):
        cls(**kw, diagnostics_every=0).fit(X, epochs=1)
