"""Diehl & Cook (2015) spiking network: golden traces of the neuron and STDP kernels, the CPU
kernel against the NumPy reference on the same spike trains, the layer end to end, bad input and
persistence."""

import dataclasses
import math

import numpy as np
import pytest

from bioreps import backend, io
from bioreps.data import make_classes
from bioreps.kernels.cpu import lif
from bioreps.kernels.cpu.stdp import decay, normalize_columns, stdp_post, stdp_pre
from bioreps.kernels.poisson import counter_spike_trains, poisson_spike_trains, stream_key
from bioreps.layers import DiehlCookParams, SpikingWTA
from bioreps.layers.spiking import encode_input

from reference import diehl_cook_normalize, diehl_cook_presentation

P = DiehlCookParams()
DT = 0.5


def _step_e(v, ge, gi, ref, theta, spk, decay_ge=None, decay_gi=None):
    return lif.lif_step(v, ge, gi, ref, theta, P.v_rest_e_mv, P.v_reset_e_mv, P.v_thresh_e_mv, P.tau_mem_e_ms,
                        P.e_exc_mv, P.e_inh_e_mv, DT, math.exp(-DT / P.tau_ge_ms) if decay_ge is None else decay_ge,
                        math.exp(-DT / P.tau_gi_ms) if decay_gi is None else decay_gi,
                        lif.refractory_steps(P.refrac_e_ms, DT), spk, np.zeros(v.shape[0]))


def _pop(n=1, v=-65.0):
    return (np.full(n, v), np.zeros(n), np.zeros(n), np.zeros(n, np.int64), np.zeros(n), np.zeros(n, np.uint8))


# ---------------------------------------------------------------------- golden neuron traces
def test_membrane_decays_to_rest_as_the_analytic_exponential():
    v, ge, gi, ref, theta, spk = _pop(v=-58.0)
    for s in range(1, 401):
        assert _step_e(v, ge, gi, ref, theta, spk) == 0
        t = s * DT
        assert v[0] == pytest.approx(-65.0 + 7.0 * math.exp(-t / 100.0), abs=1e-10)


def test_conductances_decay_exponentially_and_drive_v_exactly():
    v, ge, gi, ref, theta, spk = _pop(v=-65.0)
    ge[0], gi[0] = 0.3, 0.2
    v0 = -65.0
    for s in range(1, 21):
        g_e, g_i = ge[0], gi[0]
        _step_e(v, ge, gi, ref, theta, spk)
        assert ge[0] == pytest.approx(0.3 * math.exp(-s * DT / 1.0), rel=1e-12)
        assert gi[0] == pytest.approx(0.2 * math.exp(-s * DT / 2.0), rel=1e-12)
        # one exponential-Euler step with the start-of-step conductances held
        gt = 1 + g_e + g_i
        v_inf = (-65.0 + g_e * 0.0 + g_i * -100.0) / gt
        v0 = v_inf + (v0 - v_inf) * math.exp(-DT * gt / 100.0)
        assert v[0] == pytest.approx(v0, abs=1e-10)


def test_held_conductance_relaxes_to_the_analytic_steady_state():
    v, ge, gi, ref, theta, spk = _pop(v=-65.0)
    ge[0], gi[0] = 0.1, 0.05
    theta[0] = 100.0  # no spike
    v_inf = (-65.0 + 0.1 * 0.0 + 0.05 * -100.0) / 1.15
    for s in range(1, 200):
        _step_e(v, ge, gi, ref, theta, spk, decay_ge=1.0, decay_gi=1.0)
        assert v[0] == pytest.approx(v_inf + (-65.0 - v_inf) * math.exp(-s * DT * 1.15 / 100.0), abs=1e-9)


def test_refractory_period_counts_as_brian2():
    # a huge held conductance fires the neuron whenever it integrates: spikes every R steps
    v, ge, gi, ref, theta, spk = _pop(v=-65.0)
    ge[0] = 1e3
    steps = [s for s in range(45) if _step_e(v, ge, gi, ref, theta, spk, decay_ge=1.0)]
    R = lif.refractory_steps(5.0, DT)
    assert R == 10 and steps == [0, 10, 20, 30, 40]
    assert lif.refractory_steps(2.0, 0.5) == 4 and lif.refractory_steps(5.0, 0.3) == 16
    assert lif.refractory_steps(2.2, 0.1) == 22  # Brian2's timestep() of a non-representable time


def test_stdp_traces_after_a_known_spike_train():
    W = np.full((2, 1), 0.5)
    x_pre, x1, x2 = np.zeros(2), np.zeros(1), np.zeros(1)

    def run(n):  # n steps of exact decay
        for _ in range(n):
            decay(x_pre, math.exp(-DT / 20)), decay(x1, math.exp(-DT / 20)), decay(x2, math.exp(-DT / 40))

    stdp_pre(W, 0, x_pre, x1, 1e-4, 1.0)          # t = 0: input 0 fires; no post trace yet
    assert W[0, 0] == 0.5 and x_pre[0] == 1.0
    run(10)                                        # t = 5 ms: neuron fires (x_post2 was 0)
    stdp_post(W, 0, x_pre, x1, x2, 1e-2, 1.0)
    assert W[0, 0] == 0.5 and x1[0] == x2[0] == 1.0
    run(20)                                        # t = 15 ms: fires again
    stdp_post(W, 0, x_pre, x1, x2, 1e-2, 1.0)
    assert x_pre[0] == pytest.approx(math.exp(-15 / 20), rel=1e-12)
    assert W[0, 0] == pytest.approx(0.5 + 1e-2 * math.exp(-15 / 20) * math.exp(-10 / 40), rel=1e-12)
    assert W[1, 0] == 0.5                          # input 1 never fired: x_pre = 0
    run(4)                                         # t = 17 ms: input 1 fires
    stdp_pre(W, 1, x_pre, x1, 1e-4, 1.0)
    assert W[1, 0] == pytest.approx(0.5 - 1e-4 * math.exp(-2 / 20), rel=1e-12)
    W[:] = 0.99995
    stdp_post(W, 0, x_pre, x1, x2, 1e-2, 1.0)      # clipped at w_max
    assert W[0, 0] == 1.0


def _state(n_in, n):
    return lif.LIFState(n_in, n, P.v_rest_e_mv, P.v_rest_i_mv)


def test_theta_grows_by_exactly_theta_plus_per_spike():
    p = DiehlCookParams(tau_theta_ms=1e300)  # decay factor exactly 1
    c = lif.make_constants(DT, **p.to_dict())
    rng = np.random.default_rng(0)
    W = rng.random((100, 8)) * 0.5
    indptr, indices = poisson_spike_trains(np.full(100, 60.0), 700, DT, 1)
    st, counts = _state(100, 8), np.zeros(8, np.int64)
    total = lif.run_presentation(W, indptr, indices, 0, c, True, st, counts)
    assert total > 10
    np.testing.assert_allclose(st.theta, 0.05 * counts, rtol=1e-12, atol=0)


def test_zero_input_gives_zero_spikes():
    c = lif.make_constants(DT, **P.to_dict())
    W = np.full((50, 5), 1.0)
    st, counts = _state(50, 5), np.ones(5, np.int64)
    indptr, indices = poisson_spike_trains(np.zeros(50), 700, DT, 0)
    assert indices.size == 0
    assert lif.run_presentation(W, indptr, indices, 300, c, True, st, counts) == 0
    assert not counts.any() and np.all(st.v_e == -65.0) and np.all(W == 1.0)


def test_normalisation_makes_every_neurons_inputs_sum_to_78():
    W = np.random.default_rng(2).random((784, 7))
    normalize_columns(W, 78.0, np.zeros(7))
    np.testing.assert_allclose(W.sum(axis=0), 78.0, rtol=1e-12)


# ---------------------------------------------------------------------- Poisson inputs
def test_poisson_trains_are_seeded_csr_with_the_right_rate():
    rates = np.linspace(0, 63.75, 200)
    a = poisson_spike_trains(rates, 2000, DT, np.random.default_rng(7))
    b = poisson_spike_trains(rates, 2000, DT, 7)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    indptr, indices = a
    assert indptr.shape == (2001,) and indptr[0] == 0 and indptr[-1] == indices.size
    assert not np.isin(0, indices)  # rate 0 never fires
    for s in range(0, 2000, 97):
        assert np.all(np.diff(indices[indptr[s]:indptr[s + 1]]) > 0)
    expected = rates.sum() * 2000 * DT / 1000
    assert abs(indices.size - expected) < 4 * math.sqrt(expected)


def test_poisson_trains_are_bernoulli_per_step():
    # every step fires with probability p independently: per-step means and count variances
    p = np.array([0.0, 0.05, 0.5, 1.0])
    n_steps, reps = 40, 2000
    per_step = np.zeros((4, n_steps))
    totals = np.zeros((reps, 4))
    for k in range(reps):
        indptr, indices = poisson_spike_trains(p * 2000.0, n_steps, DT, k)
        steps = np.repeat(np.arange(n_steps), np.diff(indptr))
        np.add.at(per_step, (indices, steps), 1)
        totals[k] = np.bincount(indices, minlength=4)
    assert np.all(per_step[3] == reps) and np.all(per_step[0] == 0)  # p = 1: every step
    np.testing.assert_allclose(per_step[1:3] / reps, p[1:3, None] * np.ones(n_steps), atol=0.05)
    np.testing.assert_allclose(totals.mean(0), n_steps * p, rtol=0.03)
    np.testing.assert_allclose(totals.var(0)[1:3], (n_steps * p * (1 - p))[1:3], rtol=0.15)


# ---------------------------------------------------------------------- kernel vs reference
def test_cpu_kernel_matches_the_numpy_reference():
    n_in, n = 100, 6
    p = DiehlCookParams(weight_sum=12.0)
    c = lif.make_constants(DT, **p.to_dict())
    pd = p.to_dict()
    rng = np.random.default_rng(3)
    W = (rng.random((n_in, n)) + 0.01) * 0.3
    R = W.copy()
    st = _state(n_in, n)
    ref_state = {k: getattr(st, k).copy() for k in ("v_e", "ge_e", "gi_e", "ref_e", "theta", "v_i", "ge_i", "ref_i",
                                                    "x_pre", "x_post1", "x_post2")}
    counts = np.zeros(n, np.int64)
    images = rng.random((4, n_in)) ** 2
    moved = 0
    for k, (img, learn) in enumerate(zip(images, (True, True, True, False))):
        indptr, indices = poisson_spike_trains(img * 63.75, 700, DT, np.random.default_rng([5, k]))
        if learn:
            normalize_columns(W, p.weight_sum, np.zeros(n))
            R = diehl_cook_normalize(R, p.weight_sum)
        W0 = W.copy()
        total = lif.run_presentation(W, indptr, indices, 300, c, learn, st, counts)
        R, ref_state, rc = diehl_cook_presentation(R, indptr, indices, 300, pd, DT, learn, ref_state)
        np.testing.assert_array_equal(counts, rc)
        assert total == rc.sum() and total > 0
        np.testing.assert_allclose(W, R, atol=1e-5, rtol=0)
        np.testing.assert_allclose(st.theta, ref_state["theta"], atol=1e-9)
        np.testing.assert_allclose(st.v_e, ref_state["v_e"], atol=1e-6)
        moved += np.abs(W - W0).max() > 1e-4
    assert moved >= 2  # STDP really changed the weights
    np.testing.assert_array_equal(st.ref_e, ref_state["ref_e"])


# ---------------------------------------------------------------------- layer
@pytest.fixture(scope="module")
def data():
    return make_classes(24, n_features=784, n_classes=3, noise=0.1, random_state=0)


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return SpikingWTA(n_neurons=10, backend="cpu", random_state=0).fit(X)


def test_layer_end_to_end(fitted, data):
    X, y = data
    m = fitted
    assert m.weights_.shape == (784, 10) and m.weights_.dtype == np.float64
    assert m.theta_.shape == (10,) and np.all(m.theta_ > 0)
    assert m.n_samples_seen_ == 24 and m.backend_ == "cpu"
    C = m.transform(X)
    assert C.shape == (24, 10) and C.dtype == np.float32 and np.all(C >= 0)
    assert np.all(C.sum(axis=1) >= m.min_spikes)
    np.testing.assert_array_equal(C, m.transform(X))  # deterministic
    m.assign_labels(X, y, counts=C)
    assert m.labels_.shape == (10,) and set(m.labels_) <= {0, 1, 2}
    pred = m.predict(X, counts=C)
    assert pred.shape == (24,) and set(pred) <= {0, 1, 2}
    np.testing.assert_array_equal(pred, m.predict(X))


def test_zero_image_gives_zero_counts(fitted):
    C = fitted.transform(np.zeros((2, 784)))
    assert not C.any()


def test_same_seed_same_weights_other_seed_other_weights(data, fitted):
    X, _ = data
    a = SpikingWTA(n_neurons=10, backend="cpu", random_state=0).fit(X)
    np.testing.assert_array_equal(a.weights_, fitted.weights_)
    np.testing.assert_array_equal(a.theta_, fitted.theta_)
    b = SpikingWTA(n_neurons=10, backend="cpu", random_state=1).fit(X)
    assert not np.array_equal(b.weights_, fitted.weights_)


def test_params_round_trip_and_validation():
    p = DiehlCookParams(nu_post=2e-2)
    assert DiehlCookParams.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="tau_ge_ms"):
        DiehlCookParams(tau_ge_ms=-1.0).validate()
    with pytest.raises(ValueError, match="tau_mem_e_ms"):
        DiehlCookParams(tau_mem_e_ms=0.0).validate()
    with pytest.raises(ValueError, match=r"unknown DiehlCookParams fields: \['tau_foo'\]"):
        DiehlCookParams.from_dict({"tau_foo": 1})
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'nu_post'"):
        p.nu_post = 1.0  # frozen


def test_encode_input_scales_each_image_to_the_same_total():
    X = np.array([[0.1, 0.2, 0.1, 0.0],   # dim: scaled up to sum 1.2
                  [0.9, 0.9, 0.9, 0.0],   # bright: scaled down
                  [0.0, 0.0, 0.0, 0.0],   # blank stays blank
                  [1.0, 0.1, 0.0, 0.0]])  # scaled x3 would give 3.0: clipped to 1
    np.testing.assert_array_equal(encode_input(X, DiehlCookParams()), X)  # the paper's encoding: unchanged
    E = encode_input(X, DiehlCookParams(input_sum=1.2))
    np.testing.assert_allclose(E[0], [0.3, 0.6, 0.3, 0.0])
    np.testing.assert_allclose(E[1], [0.4, 0.4, 0.4, 0.0])
    np.testing.assert_array_equal(E[2], 0.0)
    np.testing.assert_allclose(E[3], [1.0, 1.2 / 1.1 * 0.1, 0.0, 0.0])
    assert E.max() <= 1.0 and not np.shares_memory(E, X)
    with pytest.raises(ValueError, match="input_sum"):
        DiehlCookParams(input_sum=-1.0).validate()


def test_input_sum_is_the_same_as_feeding_scaled_images(data):
    X, _ = data
    X = X * np.linspace(0.3, 1.0, X.shape[0])[:, None]  # images of different brightness
    p = DiehlCookParams(input_sum=60.0)
    a = SpikingWTA(n_neurons=6, params=p, backend="cpu", random_state=3).fit(X[:8])
    b = SpikingWTA(n_neurons=6, backend="cpu", random_state=3).fit(encode_input(X[:8], p))
    np.testing.assert_array_equal(a.weights_, b.weights_)
    np.testing.assert_array_equal(a.transform(X[8:12]), b.transform(encode_input(X[8:12], p)))
    # ... and it really changes what the network sees
    c = SpikingWTA(n_neurons=6, backend="cpu", random_state=3).fit(X[:8])
    assert not np.array_equal(a.weights_, c.weights_)


def test_on_off_encoding_splits_around_the_mean_image():
    X = np.array([[0.2, 0.5, 1.0], [0.6, 0.5, 0.0]])
    m = X.mean(axis=0)  # [0.4, 0.5, 0.5]
    E = encode_input(X, DiehlCookParams(), m)
    np.testing.assert_allclose(E, [[0.0, 0.0, 0.5, 0.2, 0.0, 0.0], [0.2, 0.0, 0.0, 0.0, 0.0, 0.5]])
    # then the gain, per channel: the ON inputs and the OFF inputs each sum to half of input_sum
    E = encode_input(X, DiehlCookParams(input_sum=1.4), m)
    np.testing.assert_allclose(E, [[0.0, 0.0, 0.7, 0.7, 0.0, 0.0], [0.7, 0.0, 0.0, 0.0, 0.0, 0.7]])
    E = encode_input(X, DiehlCookParams(input_sum=3.0), m)  # 1.5 per channel: clipped to 1
    np.testing.assert_allclose(E[0], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    E = encode_input(np.array([[0.5, 0.6, 0.9]]), DiehlCookParams(input_sum=1.0), m)  # nothing darker
    np.testing.assert_allclose(E, [[0.1 / 0.6 * 0.5, 0.1 / 0.6 * 0.5, 0.4 / 0.6 * 0.5, 0.0, 0.0, 0.0]])


def test_on_off_layer_is_the_pixel_layer_on_on_off_inputs(tmp_path, data):
    X, y = data
    p = DiehlCookParams(weight_sum=156.8, input_sum=60.0)
    a = SpikingWTA(n_neurons=6, params=p, encoding="on-off", backend="cpu", random_state=2).fit(X[:8])
    m = np.asarray(X[:8], np.float64).mean(axis=0)
    np.testing.assert_array_equal(a.input_mean_, m)
    assert a.weights_.shape == (2 * 784, 6) and a.n_features_in_ == 784
    b = SpikingWTA(n_neurons=6, params=p, backend="cpu", random_state=2).fit(encode_input(X[:8], p, m))
    np.testing.assert_array_equal(a.weights_, b.weights_)
    C = a.transform(X[8:14])
    np.testing.assert_array_equal(C, b.transform(encode_input(X[8:14], p, m)))
    rf = a.receptive_field_weights()
    assert rf.shape == (6, 784)
    np.testing.assert_array_equal(rf, (a.weights_[:784] - a.weights_[784:]).T)
    # persistence keeps the mean image
    a.save(tmp_path / "onoff.h5")
    c = SpikingWTA.load(tmp_path / "onoff.h5")
    assert c.encoding == "on-off" and c.n_features_in_ == 784
    np.testing.assert_array_equal(c.input_mean_, m)
    np.testing.assert_array_equal(c.transform(X[8:14]), C)
    # continuing with another encoding is refused, the state unchanged; fit starts afresh
    a.encoding = "pixels"
    with pytest.raises(ValueError, match="fitted with 'on-off'"):
        a.transform(X[:2])
    with pytest.raises(ValueError, match="fitted with 'on-off'"):
        a.partial_fit(X[:2])
    np.testing.assert_array_equal(a.weights_, b.weights_)
    a.fit(X[:4])
    assert a.input_mean_ is None and a.weights_.shape == (784, 6)
    with pytest.raises(ValueError, match="unknown encoding"):
        SpikingWTA(encoding="retina", backend="cpu").fit(X[:2])


@pytest.mark.parametrize("make_bad, match", [
    (lambda X: X[0], "2-dimensional"),
    (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), "NaN"),
    (lambda X: X * 2.0, r"\[0, 1\]"),
    (lambda X: X - 0.5, r"\[0, 1\]"),
])
def test_bad_input_raises_and_leaves_state_unchanged(data, make_bad, match):
    X, _ = data
    m = SpikingWTA(n_neurons=4, backend="cpu", random_state=0).fit(X[:3])
    W, th = m.weights_.copy(), m.theta_.copy()
    with pytest.raises(ValueError, match=match):
        m.fit(make_bad(X))
    with pytest.raises(ValueError, match=match):
        m.transform(make_bad(X))
    np.testing.assert_array_equal(m.weights_, W)
    np.testing.assert_array_equal(m.theta_, th)
    assert m.n_samples_seen_ == 3


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(dt_ms=6.0), ValueError, "refractory"),
    (dict(dt_ms=3.0), ValueError, "refractory"),
    (dict(dt_ms=-0.5), ValueError, "dt_ms"),
    (dict(n_neurons=0), ValueError, "n_neurons"),
    (dict(params=DiehlCookParams(tau_pre_ms=-20.0)), ValueError, "tau_pre_ms"),
    (dict(params={"tau_mem_e_ms": 100}), ValueError, "DiehlCookParams"),
    (dict(backend="tpu"), backend.BackendError, "unknown backend"),
])
def test_bad_parameters_raise_before_any_state_change(data, kwargs, err, match):
    X, _ = data
    m = SpikingWTA(n_neurons=4, backend="cpu", random_state=0).fit(X[:2])
    W = m.weights_.copy()
    for k, v in kwargs.items():
        setattr(m, k, v)
    with pytest.raises(err, match=match):
        m.fit(X[:2])
    np.testing.assert_array_equal(m.weights_, W)
    assert m.n_samples_seen_ == 2 and m.n_neurons_ == 4
    with pytest.raises(err, match=match):
        SpikingWTA(**{"backend": "cpu", **kwargs}).fit(X[:2])


def test_cuda_without_a_gpu_raises_before_any_state_change(data, monkeypatch):
    # (the CUDA kernels themselves are tested under the simulator in test_spiking_cuda.py)
    X, _ = data
    m = SpikingWTA(n_neurons=4, backend="cpu", random_state=0).fit(X[:2])
    W = m.weights_.copy()
    monkeypatch.setattr(backend, "cuda_status", lambda: (False, "no GPU in this test"))
    m.backend = "cuda"
    with pytest.raises(backend.BackendError, match="no GPU in this test"):
        m.fit(X[:2])
    np.testing.assert_array_equal(m.weights_, W)
    assert m.backend_ == "cpu"


def test_backend_choice_goes_through_resolve(data, monkeypatch):
    import bioreps.layers.spiking as spiking
    from bioreps.kernels.cpu import lif as cpu_lif

    X, _ = data
    asked = []
    monkeypatch.setattr(spiking, "resolve", lambda b: asked.append(b) or "cpu")
    m = SpikingWTA(n_neurons=3, backend="auto", random_state=0).fit(X[:1])
    assert m.backend_ == "cpu" and asked == ["auto"] and m._kernel() is cpu_lif


def test_not_fitted_errors(data):
    X, y = data
    m = SpikingWTA(n_neurons=4)
    with pytest.raises(RuntimeError, match="not fitted"):
        m.transform(X)
    m = SpikingWTA(n_neurons=4, backend="cpu", random_state=0).fit(X[:2])
    with pytest.raises(RuntimeError, match="assign_labels"):
        m.predict(X)


def test_save_load_and_export_round_trip(tmp_path, fitted, data):
    X, y = data
    m = fitted
    C = m.transform(X)
    m.assign_labels(X, y, counts=C)
    path = m.save(tmp_path / "snn.h5")
    r = SpikingWTA.load(path)
    np.testing.assert_array_equal(r.weights_, m.weights_)
    np.testing.assert_array_equal(r.theta_, m.theta_)
    np.testing.assert_array_equal(r.labels_, m.labels_)
    assert r.params == m.params and r.dt_ms == m.dt_ms and r.n_samples_seen_ == m.n_samples_seen_
    np.testing.assert_array_equal(r.transform(X), C)
    out = m.export(tmp_path / "snn_rep.h5", {"train": (X, y)}, dataset="synthetic", block_rows=10)
    with io.load(out) as f:
        assert f.model.kind == "spiking-wta"
        assert f.model.hyperparameters["params"]["w_ie"] == 17.0
        np.testing.assert_array_equal(f.representations["train"].read(), C)
    with pytest.raises(ValueError, match="spiking-wta"):
        from bioreps.layers import HebbianWTA
        HebbianWTA.load(path)


def _reference_layer_run(X, W, p, seed, learn, phase, min_spikes, state=None):
    """The layer's protocol written out with the NumPy reference: per-sample seeds, weight
    normalisation before every training presentation, the low-activity retry."""
    pd = p.to_dict()
    n = W.shape[1]
    rest = {"v_e": np.full(n, p.v_rest_e_mv), "v_i": np.full(n, p.v_rest_i_mv), "ref_e": np.zeros(n, np.int64),
            "ref_i": np.zeros(n, np.int64), "ge_e": np.zeros(n), "gi_e": np.zeros(n), "ge_i": np.zeros(n),
            "x_pre": np.zeros(W.shape[0]), "x_post1": np.zeros(n), "x_post2": np.zeros(n)}
    if state is None:
        state = {**rest, "theta": np.zeros(n)}
    out = []
    for r, x in enumerate(X):
        if not learn:
            state = {**rest, "theta": state["theta"]}
        for attempt in range(p.max_retries + 1):
            key = stream_key(seed, phase, r, attempt)
            indptr, indices = counter_spike_trains(x * (p.max_rate_hz + attempt * p.rate_boost_hz), 700, DT, key)
            if learn:
                W = diehl_cook_normalize(W, p.weight_sum)
            W, state, counts = diehl_cook_presentation(W, indptr, indices, 300, pd, DT, learn, state)
            if counts.sum() >= min_spikes or attempt == p.max_retries:
                break
        out.append(counts)
    return W, state, np.array(out)


def test_layer_fit_and_transform_follow_the_reference_protocol():
    X, _ = make_classes(3, n_features=784, n_classes=3, noise=0.1, random_state=4)
    X[1] *= 0.02  # a faint image: exercises the retry
    m = SpikingWTA(n_neurons=5, backend="cpu", random_state=0, min_spikes=5).fit(X)
    assert m.seed_ == 0 and m.n_retries_ >= 1
    W0 = (np.random.default_rng([0, 0]).random((784, 5)) + 0.01) * 0.3
    W, state, _ = _reference_layer_run(X, W0, m.params, 0, True, 1, 5)
    np.testing.assert_allclose(m.weights_, W, atol=1e-5, rtol=0)
    np.testing.assert_allclose(m.theta_, state["theta"], atol=1e-9)
    _, _, counts = _reference_layer_run(X, m.weights_, m.params, 0, False, 2, 5, state={"theta": m.theta_})
    np.testing.assert_array_equal(m.transform(X), counts)


# ---------------------------------------------------------------------- partial_fit, checkpoints
def _small(**kw):
    return SpikingWTA(**{**dict(n_neurons=5, t_present_ms=40.0, t_rest_ms=20.0, backend="cpu", random_state=4,
                                progress=False), **kw})


def test_partial_fit_over_two_halves_equals_one_epoch_of_fit(data):
    """partial_fit carries weights, thresholds, network state and the sample counter (which keys
    the Poisson spikes), so halves == one fit epoch, and a third call == a second epoch."""
    X, _ = data
    whole = _small().fit(X, epochs=2)
    parts = _small()
    parts.partial_fit(X[:9])
    parts.partial_fit(X[9:])
    one_epoch = _small().fit(X, epochs=1)
    np.testing.assert_array_equal(parts.weights_, one_epoch.weights_)
    np.testing.assert_array_equal(parts.theta_, one_epoch.theta_)
    parts.partial_fit(X)
    np.testing.assert_array_equal(parts.weights_, whole.weights_)
    np.testing.assert_array_equal(parts.theta_, whole.theta_)
    assert parts.n_samples_seen_ == whole.n_samples_seen_ == 48


def test_checkpoint_mid_epoch_then_resume_equals_uninterrupted(tmp_path, data):
    """A fit stopped after a checkpoint inside an epoch and resumed from the saved file ends with
    the weights, thresholds and counters of an uninterrupted fit."""
    X, _ = data
    whole = _small().fit(X, epochs=2)
    ck = tmp_path / "ck.h5"
    seen = []
    _small().fit(X, epochs=2, checkpoint=ck, checkpoint_every=7,
                 callback=lambda layer, rec: seen.append(rec["samples"]) or rec["samples"] < 14)
    assert seen == [7, 14]
    back = SpikingWTA.load(ck)
    assert back.n_samples_seen_ == 14 and back.n_epochs_ == 2 and back.n_fit_rows_ == 24
    back.progress = False
    back.fit(X, epochs=2, resume=True, checkpoint=ck, checkpoint_every=7,
             callback=lambda layer, rec: seen.append(rec["samples"]))
    assert seen == [7, 14, 21, 24, 28, 35, 42, 48]  # checkpoint boundaries and epoch ends
    np.testing.assert_array_equal(back.weights_, whole.weights_)
    np.testing.assert_array_equal(back.theta_, whole.theta_)
    assert back.n_retries_ == whole.n_retries_
    final = SpikingWTA.load(ck)
    np.testing.assert_array_equal(final.weights_, whole.weights_)


def test_resume_with_another_schedule_is_refused(tmp_path, data):
    X, _ = data
    ck = tmp_path / "ck.h5"
    _small().fit(X, epochs=1, checkpoint=ck)
    back = SpikingWTA.load(ck)
    w = back.weights_.copy()
    with pytest.raises(ValueError, match="cannot resume"):
        back.fit(X, epochs=3, resume=True)
    with pytest.raises(ValueError, match="cannot resume"):
        back.fit(X[:10], epochs=1, resume=True)
    np.testing.assert_array_equal(back.weights_, w)
    with pytest.raises(ValueError, match="checkpoint_every"):
        _small().fit(X, checkpoint=ck, checkpoint_every=0)


def test_continuous_transform_is_the_kernel_run_on_the_whole_sequence():
    """The released code's test protocol: images back to back, each followed by its rest, the
    state never reset; equals run_presentation called image after image on one state."""
    rng = np.random.default_rng(7)
    n_in, N, n, n_present, n_rest = 200, 6, 5, 200, 40
    W = rng.random((n_in, N))
    theta = rng.random(N)
    X = rng.random((n, n_in))
    c = lif.make_constants(0.5, **DiehlCookParams().to_dict())
    cont = np.zeros((n, N), np.float32)
    lif.transform_samples(W, theta, X, 11, 2, 0, n_present, n_rest, c, 0, 0, cont, continuous=True)
    st = lif.LIFState(n_in, N, c[lif.V_REST_E], c[lif.V_REST_I], theta=theta.copy())
    by_hand = np.zeros((n, N))
    for r in range(n):
        rates = X[r] * c[lif.MAX_RATE]
        indptr, indices = counter_spike_trains(rates, n_present, 0.5, stream_key(11, 2, r, 0))
        counts = np.zeros(N, np.int64)
        lif.run_presentation(W.copy(), indptr, indices, 0, c, False, st, counts)  # the image
        lif.run_presentation(W.copy(), np.zeros(n_rest + 1, np.int64), np.zeros(0, np.int64), 0, c, False, st,
                             np.zeros(N, np.int64))  # its rest: no input, the state decays
        by_hand[r] = counts
    np.testing.assert_array_equal(cont, by_hand)
    reset = np.zeros((n, N), np.float32)
    lif.transform_samples(W, theta, X, 11, 2, 0, n_present, n_rest, c, 0, 0, reset)
    assert cont.sum() > 0 and not np.array_equal(cont, reset)  # the protocols differ
    np.testing.assert_array_equal(cont[0], reset[0])  # the first image starts from rest in both


def test_layer_transform_protocols():
    X, _ = make_classes(6, n_features=64, n_classes=2, random_state=0)
    m = SpikingWTA(n_neurons=5, random_state=0, progress=False, t_present_ms=40.0, t_rest_ms=20.0,
                   backend="cpu").fit(X[:2])
    cont = m.transform(X, protocol="continuous")
    assert cont.shape == (6, 5) and not np.array_equal(cont, m.transform(X))
    np.testing.assert_array_equal(cont, m.transform(X, protocol="continuous"))  # reproducible
    with pytest.raises(ValueError, match="protocol must be 'reset' or 'continuous', got 'carry'"):
        m.transform(X, protocol="carry")
