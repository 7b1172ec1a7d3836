"""Krotov-Hopfield HebbianWTA: kernel vs the notebook's rule, determinism, partial_fit, resume,
diagnostics, persistence and bad input."""

import warnings

import numpy as np
import pytest
import torch

from bioreps import backend, io
from bioreps.data import make_classes
from bioreps.kernels.cpu.hebbian import hebbian_epoch
from bioreps.layers import CollapseWarning, HebbianWTA
from bioreps.layers.hebbian import lp_norms

import _float32
from reference import krotov_hopfield_epoch


def _rel(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_classes(600, n_features=64, n_classes=6, noise=0.15, random_state=3)
    return X, y


@pytest.mark.parametrize("p, k, delta", [(3.0, 7, 0.4), (2.0, 2, 0.4), (4.5, 3, 0.2)])
def test_cpu_kernel_matches_reference_after_20_batches(p, k, delta):
    rng = np.random.default_rng(0)
    X = rng.random((1000, 100)).astype(np.float32)
    W0 = rng.standard_normal((120, 100)).astype(np.float32)
    order = rng.permutation(1000)  # 20 batches of 50
    W = W0.copy()
    assert hebbian_epoch(W, X, order, 50, k, delta, 0.02, p) == 20
    R = krotov_hopfield_epoch(W0.astype(np.float64), X, order, 50, k, delta, 0.02, p)
    assert _rel(R, W0) > 1e-3  # the weights really moved
    assert _rel(W, R) < 1e-4


def test_final_short_batch_is_learned():
    rng = np.random.default_rng(1)
    X = rng.random((130, 30)).astype(np.float32)
    W0 = rng.standard_normal((40, 30)).astype(np.float32)
    W = W0.copy()
    assert hebbian_epoch(W, X, np.arange(130), 50, 2, 0.4, 0.05, 3.0) == 3
    R = krotov_hopfield_epoch(W0.astype(np.float64), X, np.arange(130), 50, 2, 0.4, 0.05, 3.0)
    assert _rel(W, R) < 1e-4


def test_layer_fit_equals_reference_epoch(blobs):
    X, _ = blobs
    W0 = np.random.default_rng(5).standard_normal((50, 64)).astype(np.float32)
    W0_before = W0.copy()
    layer = HebbianWTA(n_units=50, k=3, batch_size=40, lr=0.03, shuffle=False, init=W0, backend="cpu").fit(X, epochs=1)
    R = krotov_hopfield_epoch(W0.astype(np.float64), X, np.arange(len(X)), 40, 3, 0.4, 0.03, 3.0)
    assert _rel(layer.weights_, R) < 1e-4
    assert layer.n_samples_seen_ == 600 and layer.backend_ == "cpu"
    # the init array is copied, not trained in place (compared as float32 arrays: a float32
    # element == a Python float is True under numpy 2's promotion but False under numpy 1.x)
    assert not np.shares_memory(layer.weights_, W0)
    np.testing.assert_array_equal(W0, W0_before)


def test_schedule_decays_linearly(blobs):
    X, _ = blobs
    layer = HebbianWTA(n_units=30, k=2, lr=0.04, backend="cpu", random_state=0).fit(X, epochs=4)
    assert [r["lr"] for r in layer.history_] == pytest.approx([0.04, 0.03, 0.02, 0.01])


def test_same_seed_same_weights(blobs):
    X, _ = blobs
    a = HebbianWTA(n_units=30, k=2, backend="cpu", random_state=11).fit(X, epochs=2)
    b = HebbianWTA(n_units=30, k=2, backend="cpu", random_state=11).fit(X, epochs=2)
    c = HebbianWTA(n_units=30, k=2, backend="cpu", random_state=12).fit(X, epochs=2)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert not np.array_equal(a.weights_, c.weights_)


def test_partial_fit_on_halves_equals_one_epoch(blobs):
    X, _ = blobs
    params = dict(n_units=40, k=3, batch_size=50, shuffle=False, backend="cpu", random_state=4)
    full = HebbianWTA(**params).fit(X, epochs=1)
    parts = HebbianWTA(**params).partial_fit(X[:300]).partial_fit(X[300:])
    np.testing.assert_array_equal(full.weights_, parts.weights_)
    assert parts.n_samples_seen_ == 600


def test_resume_from_checkpoint_equals_uninterrupted(blobs, tmp_path):
    X, _ = blobs
    params = dict(n_units=30, k=2, batch_size=60, backend="cpu", random_state=8)
    whole = HebbianWTA(**params).fit(X, epochs=5)
    ckpt = tmp_path / "ckpt.h5"
    HebbianWTA(**params).fit(X, epochs=5, checkpoint=ckpt, checkpoint_every=1,
                             callback=lambda layer, rec: rec["epoch"] < 2)  # "crash" after epoch 2
    resumed = HebbianWTA.load(ckpt)
    assert resumed.epochs_done_ == 2
    resumed.fit(X, epochs=5, resume=True)
    np.testing.assert_array_equal(resumed.weights_, whole.weights_)
    assert [r["epoch"] for r in resumed.history_] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="saved schedule has 5 epochs"):
        HebbianWTA.load(ckpt).fit(X, epochs=7, resume=True)


def test_diagnostics_and_learning_units_move_to_unit_norm(blobs):
    X, _ = blobs
    W0 = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
    layer = HebbianWTA(n_units=20, p=2.0, k=2, lr=0.05, batch_size=20, init=W0, backend="cpu",
                       random_state=0).fit(X, epochs=30)
    first, last = layer.history_[0], layer.history_[-1]
    assert last["converged"] > first["converged"]
    # units the competition never selected keep their initial weights; winners reach unit norm
    # (units that mostly come k-th are pushed away by the anti-Hebbian term, so not all that moved)
    norms = lp_norms(layer.weights_, 2.0)
    moved = np.any(layer.weights_ != W0, axis=1)
    at_one = np.abs(norms - 1) < 0.05
    assert 0 < moved.sum() < 20 and at_one.sum() >= 3
    assert np.all(moved[at_one])
    assert last["converged"] == pytest.approx(np.mean(np.abs(norms - 1) < 0.05))
    val = X[np.sort(np.random.default_rng([layer.seed_, 2]).choice(600, 600, replace=False))]
    assert last["winners"] == np.unique(layer.winners(val)).size
    np.testing.assert_allclose(lp_norms([[3.0, -4.0]], 2), [5.0])


def test_collapse_warning():
    rng = np.random.default_rng(0)
    X = rng.random((200, 16)).astype(np.float32)
    W0 = 1e-3 * rng.standard_normal((50, 16)).astype(np.float32)
    W0[0] = 10.0  # one unit wins every sample
    layer = HebbianWTA(n_units=50, k=2, lr=1e-6, init=W0, backend="cpu", random_state=0)
    with pytest.warns(CollapseWarning, match="only 1 distinct units"):
        layer.fit(X, epochs=1)
    assert layer.history_[0]["winners"] == 1 and layer.history_[0]["collapsed"]


def test_transform_and_torch_view(blobs):
    X, _ = blobs
    layer = HebbianWTA(n_units=25, k=2, backend="cpu", random_state=0).fit(X, epochs=1)
    W = layer.weights_
    # float32 products summed in another order (numpy's W.T view vs the layer's contiguous copy,
    # torch's GEMM and pow vs NumPy's): within the float32 rounding bound (see _float32)
    H1 = layer.transform(X[:10], power=1)
    _float32.assert_relu_power_close(H1, np.maximum(X[:10] @ W.T, 0), X[:10], W)
    H = layer.transform(X[:10])
    assert H.dtype == np.float32 and H.shape == (10, 25)
    _float32.assert_relu_power_close(H, H1 ** np.float32(4.5), X[:10], W, 4.5)
    module = layer.to_torch()
    with torch.no_grad():
        _float32.assert_relu_power_close(module(torch.from_numpy(X[:10])).numpy(), H, X[:10], W, 4.5)
    np.testing.assert_array_equal(layer.winners(X[:10]), np.argmax(layer.currents(X[:10]), axis=1))


def test_input_norm_scales_rows(blobs):
    X, _ = blobs
    layer = HebbianWTA(n_units=10, k=2, input_norm=3, backend="cpu", random_state=0).fit(X, epochs=1)
    Xn = X / (np.sum(X ** 3, axis=1, keepdims=True) ** (1 / 3))
    # both routes divide by a float32 norm of 64 terms: 64 + 4 more roundings per term
    _float32.assert_relu_power_close(layer.transform(X, power=1), np.maximum(Xn @ layer.weights_.T, 0), Xn,
                                     layer.weights_, extra_terms=X.shape[1] + 4)


def test_export_and_load(blobs, tmp_path):
    X, y = blobs
    layer = HebbianWTA(n_units=12, k=2, backend="cpu", random_state=0).fit(X, epochs=2)
    path = tmp_path / "hebb.h5"
    layer.export(path, {"train": (X, y), "test": X[:50]}, dataset="blobs", block_rows=128)
    with io.load(path) as f:
        assert f.model.kind == "hebbian-wta" and f.model.hyperparameters["k"] == 2
        np.testing.assert_array_equal(f.model.arrays["weights"], layer.weights_)
        # exported in blocks of 128 rows, compared with one transform of all 600: the float32
        # products may sum in another order (BLAS blocking depends on the row count)
        _float32.assert_relu_power_close(f.representations["train"].read(), layer.transform(X), X,
                                         layer.weights_, 4.5)
        np.testing.assert_array_equal(f.representations["train"].labels, y)
        assert f.representations["test"].shape == (50, 12)
        assert f.provenance["backend"] == "cpu"
    again = HebbianWTA.load(path)
    np.testing.assert_array_equal(again.weights_, layer.weights_)
    _float32.assert_relu_power_close(again.transform(X[:5]), layer.transform(X[:5]), X[:5], layer.weights_, 4.5)
    io.save(tmp_path / "pix.h5", model_kind="pixels")
    with pytest.raises(ValueError, match="holds a 'pixels' model"):
        HebbianWTA.load(tmp_path / "pix.h5")


@pytest.mark.parametrize("kwargs, fit_X, message", [
    (dict(k=40), None, "k=40 is larger than n_units=30"),
    (dict(p=0.5), None, "p must be >= 1"),
    (dict(delta=-0.1), None, "delta must be >= 0"),
    (dict(batch_size=0), None, "batch_size must be >= 1"),
    (dict(lr=0.0), None, "lr must be > 0"),
    (dict(init=np.zeros((30, 5))), None, r"init has shape \(30, 5\), expected"),
    (dict(init="uniform"), None, "init must be 'normal'"),
    (dict(backend="tpu"), None, "unknown backend 'tpu'"),
    (dict(), np.zeros(64), "must be 2-dimensional"),
    (dict(), np.full((4, 64), np.nan), "NaN"),
    (dict(), np.zeros((0, 64)), "empty"),
    (dict(), np.zeros((5, 63)), "63 features but the layer was fitted on 64"),
])
def test_bad_input_is_named_and_state_unchanged(blobs, kwargs, fit_X, message):
    X, _ = blobs
    layer = HebbianWTA(n_units=30, k=2, backend="cpu", random_state=0).fit(X, epochs=1)
    before = layer.weights_.copy(), layer.n_samples_seen_, len(layer.history_)
    for key, value in kwargs.items():
        setattr(layer, key, value)
    with pytest.raises((ValueError, backend.BackendError), match=message):
        if fit_X is not None and fit_X.ndim == 2 and fit_X.shape[1] == 63:
            layer.partial_fit(fit_X)
        else:
            layer.fit(X if fit_X is None else fit_X, epochs=1)
    np.testing.assert_array_equal(layer.weights_, before[0])
    assert (layer.n_samples_seen_, len(layer.history_)) == before[1:]


def test_values_outside_unit_interval_warn(blobs):
    X, _ = blobs
    with pytest.warns(UserWarning, match="outside \\[0, 1\\]"):
        HebbianWTA(n_units=10, k=2, backend="cpu", random_state=0).fit(X * 3, epochs=1)


def test_cuda_without_gpu_raises(blobs, monkeypatch):
    monkeypatch.setattr(backend, "cuda_status", lambda: (False, "no CUDA-capable GPU"))
    with pytest.raises(backend.BackendError, match="no CUDA-capable GPU"):
        HebbianWTA(n_units=10, k=2, backend="cuda").fit(blobs[0], epochs=1)


def test_not_fitted():
    with pytest.raises(RuntimeError, match="not fitted"):
        HebbianWTA().transform(np.zeros((2, 4)))


def test_noise_units_found_and_pruned(blobs):
    X, _ = blobs
    layer = HebbianWTA(n_units=40, p=3.0, k=2, lr=0.05, batch_size=20, backend="cpu", random_state=0).fit(X, epochs=20)
    moved = np.abs(lp_norms(layer.weights_, 3.0) - 1) < 0.05  # learned units
    noise = layer.noise_units()
    assert noise.sum() > 0 and not np.any(noise & moved)
    pruned = layer.prune()
    assert pruned.n_units_ == 40 - noise.sum() == pruned.weights_.shape[0]
    # a product with fewer weight rows may be blocked differently: the float32 rounding bound
    _float32.assert_relu_power_close(pruned.transform(X[:3], power=1), layer.transform(X[:3], power=1)[:, ~noise],
                                     X[:3], pruned.weights_)
    assert layer.n_units_ == 40  # the original is untouched
    # a layer whose units all learned alike has no noise component
    same = HebbianWTA(n_units=10, k=2, backend="cpu", random_state=0).fit(X, epochs=1)
    same.weights_ = np.random.default_rng(0).normal(0, 0.1, (10, 64)).astype(np.float32)
    assert not same.noise_units().any()


def test_center_subtracts_the_training_mean_everywhere(blobs, tmp_path):
    X, _ = blobs
    layer = HebbianWTA(n_units=15, k=2, center=True, input_norm=2, backend="cpu", random_state=0).fit(X, epochs=2)
    np.testing.assert_allclose(layer.mean_, X.mean(axis=0), rtol=1e-5, atol=1e-7)
    Xc = X[:8] - layer.mean_
    Xc /= np.linalg.norm(Xc, axis=1, keepdims=True)
    expected = np.maximum(Xc @ layer.weights_.T, 0)
    # three routes (the layer, this test, torch) centre, normalise by a float32 norm (64 terms)
    # and multiply in their own orders: the float32 rounding bound with 64 + 4 extra roundings
    close = dict(X=Xc, W=layer.weights_, extra_terms=X.shape[1] + 4)
    _float32.assert_relu_power_close(layer.transform(X[:8], power=1), expected, **close)
    with torch.no_grad():
        _float32.assert_relu_power_close(layer.to_torch(power=1)(torch.from_numpy(X[:8])).numpy(), expected, **close)
    layer.save(tmp_path / "c.h5")
    _float32.assert_relu_power_close(HebbianWTA.load(tmp_path / "c.h5").transform(X[:8]), layer.transform(X[:8]),
                                     power=4.5, **close)
    # the kernel saw centred, normalised inputs: same as fitting plain on pre-processed data
    Xp = (X - X.mean(axis=0)) / np.linalg.norm(X - X.mean(axis=0), axis=1, keepdims=True)
    plain = HebbianWTA(n_units=15, k=2, backend="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # centred data leaves [0, 1]
        plain.fit(Xp.astype(np.float32), epochs=2)
    np.testing.assert_allclose(plain.weights_, layer.weights_, rtol=1e-4, atol=1e-5)


_LAYER_ON_SIMULATOR = r"""
import json, sys, warnings
import numpy as np
from bioreps.data import make_classes
from bioreps.layers import HebbianWTA
from bioreps.kernels.cuda import hebbian as cuda_hebbian
cuda_hebbian.TILE = 8  # the persistent epoch kernel with 16 threads: the simulator's cost is its threads
X, _ = make_classes(21, n_features=20, n_classes=4, random_state=0)
out = {}
for backend in ("cpu", "cuda"):
    layer = HebbianWTA(n_units=24, k=3, batch_size=7, lr=0.05, center=True, input_norm=2, backend=backend,
                       random_state=3, progress=False)
    layer.fit(X, epochs=2, X_val=X)  # 2 epochs of 3 batches
    out[backend] = {"W": layer.weights_.tolist(), "backend_": layer.backend_,
                    "winners": [r["winners"] for r in layer.history_]}
print(json.dumps(out))
"""


@pytest.mark.slow  # the CUDA simulator
def test_layer_on_cuda_simulator_equals_cpu():
    """HebbianWTA(backend="cuda") in the CUDA simulator (a subprocess: Numba reads the flag at
    import) learns the same weights as the CPU backend."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", BIOREPS_CUDA_BLOCK="8", BIOREPS_PROGRESS="0")
    proc = subprocess.run([sys.executable, "-c", _LAYER_ON_SIMULATOR], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cpu"]["backend_"] == "cpu" and out["cuda"]["backend_"] == "cuda"
    assert out["cpu"]["winners"] == out["cuda"]["winners"]
    assert _rel(out["cuda"]["W"], np.array(out["cpu"]["W"])) < 1e-5
