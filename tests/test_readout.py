"""The softmax readout: learns separable data, is deterministic, and rejects bad input."""

import numpy as np
import pytest

from bioreps.data import make_classes
from bioreps.readout import LinearReadout


def test_readout_learns_class_structured_data():
    X, y = make_classes(600, n_features=50, n_classes=4, noise=0.1, random_state=0)
    r = LinearReadout(epochs=20, lr=1e-2, batch_size=64, random_state=0).fit(X[:400], y[:400])
    assert r.score(X[400:], y[400:]) > 0.9
    assert r.coef_.shape == (4, 50) and r.predict(X[:3]).dtype == np.int64


def test_readout_is_deterministic_for_a_seed():
    X, y = make_classes(200, n_features=20, n_classes=3, random_state=1)
    a = LinearReadout(epochs=3, random_state=7).fit(X, y)
    b = LinearReadout(epochs=3, random_state=7).fit(X, y)
    c = LinearReadout(epochs=3, random_state=8).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)


def test_readout_bad_input():
    X = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match="9 labels but X has 10 rows"):
        LinearReadout().fit(X, np.zeros(9, int))
    with pytest.raises(ValueError, match="NaN"):
        LinearReadout().fit(np.full((10, 3), np.nan), np.zeros(10, int))
    with pytest.raises(ValueError, match="outside 0..1"):
        LinearReadout().fit(X, np.full(10, 2), n_classes=2)
    with pytest.raises(RuntimeError, match="not fitted"):
        LinearReadout().predict(X)
    r = LinearReadout(epochs=1).fit(X, np.arange(10) % 2)
    with pytest.raises(ValueError, match="4 features but the readout was fitted on 3"):
        r.predict(np.zeros((2, 4)))


def test_linear_schedule_is_deterministic_learns_and_is_validated():
    """schedule="linear" is deterministic, differs from the constant schedule, still learns, and
    unknown schedules are refused."""
    import pytest

    from bioreps.data import make_classes

    X, y = make_classes(n_samples=600, n_features=20, n_classes=3, random_state=0)
    X = X.astype(np.float32)
    a = LinearReadout(epochs=5, lr=1e-2, schedule="linear", random_state=1, progress=False).fit(X, y)
    b = LinearReadout(epochs=5, lr=1e-2, schedule="linear", random_state=1, progress=False).fit(X, y)
    c = LinearReadout(epochs=5, lr=1e-2, schedule="constant", random_state=1, progress=False).fit(X, y)
    assert np.array_equal(a.coef_, b.coef_)
    assert not np.allclose(a.coef_, c.coef_)
    assert a.score(X, y) > 0.9
    with pytest.raises(ValueError, match="schedule"):
        LinearReadout(schedule="cosine", progress=False).fit(X, y)


def _step_learning_rates(readout, X, y):
    """The learning rate of every Adam step of ``readout.fit``, read from the optimizer at the step."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append([g["lr"] for g in opt.param_groups]))
    try:
        readout.fit(X, y)
    finally:
        handle.remove()
    assert all(len(set(lrs)) == 1 for lrs in seen)  # one rate for every parameter group
    return np.array([lrs[0] for lrs in seen])


def test_linear_schedule_rates_decay_linearly_to_zero():
    """Step k of K (0-based) uses lr * (1 - k / K): lr at the first step, lr / K at the last,
    reaching 0 where training ends; the constant schedule keeps lr."""
    X, y = make_classes(n_samples=600, n_features=20, n_classes=3, random_state=0)
    epochs, lr, batch = 4, 1e-2, 64
    K = epochs * -(-600 // batch)  # 10 steps per epoch, the last one partial
    rates = _step_learning_rates(LinearReadout(epochs=epochs, lr=lr, batch_size=batch, schedule="linear",
                                               random_state=1, progress=False), X, y)
    assert len(rates) == K == 40
    np.testing.assert_allclose(rates, lr * (1 - np.arange(K) / K), rtol=1e-12)
    assert rates[0] == lr and rates[-1] == pytest.approx(lr / K)
    assert rates[-1] - (rates[-2] - rates[-1]) == pytest.approx(0, abs=1e-15)  # one more step: 0
    constant = _step_learning_rates(LinearReadout(epochs=epochs, lr=lr, batch_size=batch, random_state=1,
                                                  progress=False), X, y)
    np.testing.assert_array_equal(constant, np.full(K, lr))
