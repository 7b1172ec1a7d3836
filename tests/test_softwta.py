"""SoftWTA (SoftHebb, Journé et al. ICLR 2023) layer: the kernel through the layer equals the
NumPy reference, determinism, partial_fit, resume, persistence and bad input."""

import numpy as np
import pytest

from bioreps import io
from bioreps.data import make_classes
from bioreps.layers import HebbianWTA, SoftWTA

import _float32
from reference import softhebb_epoch


@pytest.fixture(scope="module")
def blobs():
    return make_classes(300, n_features=40, n_classes=5, noise=0.15, random_state=1)


def _rel(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)


@pytest.mark.parametrize("adaptive, p", [(True, 2.0), (False, 2.0), (True, 3.0)])
def test_layer_epoch_equals_reference(blobs, adaptive, p):
    X, _ = blobs
    W0 = (0.3 * np.random.default_rng(2).standard_normal((30, 40))).astype(np.float32)
    layer = SoftWTA(n_units=30, p=p, temperature=0.5, lr=0.02, adaptive=adaptive, batch_size=25, shuffle=False,
                    init=W0, backend="cpu").fit(X, epochs=1)
    R = softhebb_epoch(W0.astype(np.float64), X, np.arange(len(X)), 25, 2.0, 0.02, p, 0.5, adaptive)
    assert _rel(R, W0) > 1e-3
    assert _rel(layer.weights_, R) < 1e-4


def test_seed_partial_fit_and_resume(blobs, tmp_path):
    X, _ = blobs
    params = dict(n_units=20, batch_size=30, backend="cpu", random_state=5)
    a = SoftWTA(**params).fit(X, epochs=3)
    b = SoftWTA(**params).fit(X, epochs=3)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert [r["lr"] for r in a.history_] == [0.01] * 3  # constant schedule by default
    full = SoftWTA(shuffle=False, **params).fit(X, epochs=1)
    parts = SoftWTA(shuffle=False, **params).partial_fit(X[:150]).partial_fit(X[150:])
    np.testing.assert_array_equal(full.weights_, parts.weights_)
    ckpt = tmp_path / "soft.h5"
    SoftWTA(**params).fit(X, epochs=3, checkpoint=ckpt, checkpoint_every=1, callback=lambda l, r: r["epoch"] < 1)
    resumed = SoftWTA.load(ckpt).fit(X, epochs=3, resume=True)
    np.testing.assert_array_equal(resumed.weights_, a.weights_)


def test_transform_defaults_to_rectified_currents_and_export(blobs, tmp_path):
    X, y = blobs
    layer = SoftWTA(n_units=12, backend="cpu", random_state=0).fit(X, epochs=1)
    # the layer multiplies by a contiguous copy of W.T, this test by a view: another summation
    # order, so the float32 rounding bound (see _float32)
    _float32.assert_relu_power_close(layer.transform(X[:5]), np.maximum(X[:5] @ layer.weights_.T, 0), X[:5],
                                     layer.weights_)
    layer.export(tmp_path / "s.h5", {"test": (X, y)})
    with io.load(tmp_path / "s.h5") as f:
        assert f.model.kind == "soft-wta" and f.model.hyperparameters["temperature"] == pytest.approx(1 / 12)
        assert f.representations["test"].attrs["description"] == "ReLU(W x)^1"
    with pytest.raises(ValueError, match="holds a 'soft-wta' model, not 'hebbian-wta'"):
        HebbianWTA.load(tmp_path / "s.h5")
    np.testing.assert_array_equal(SoftWTA.load(tmp_path / "s.h5").weights_, layer.weights_)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=0.0), "temperature must be > 0"),
    (dict(power_lr=-1.0), "power_lr must be >= 0"),
    (dict(adaptive="yes"), "adaptive must be True or False"),
    (dict(schedule="cosine"), "schedule must be 'linear' or 'constant'"),
    (dict(center=1), "center must be True or False"),
])
def test_bad_parameters(blobs, kwargs, message):
    layer = SoftWTA(n_units=10, backend="cpu", random_state=0).fit(blobs[0], epochs=1)
    before = layer.weights_.copy()
    for key, value in kwargs.items():
        setattr(layer, key, value)
    with pytest.raises(ValueError, match=message):
        layer.fit(blobs[0], epochs=1)
    np.testing.assert_array_equal(layer.weights_, before)
