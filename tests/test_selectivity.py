"""Tests of bioreps.analysis.selectivity: class-selectivity index and ablation curves."""

import numpy as np
import pytest

from bioreps import io
from bioreps.analysis import selectivity as Se

torch = pytest.importorskip("torch")


# --- class selectivity -----------------------------------------------------------------------

def test_class_selectivity_hand_computed_tiny_example():
    # 3 classes, 2 samples each; unit means per class:
    #   unit 0: [1, 3, 2] -> mu_max 3, rest (1 + 2) / 2 = 1.5 -> (3 - 1.5) / (4.5) = 1/3
    #   unit 1: [4, 0, 0] -> (4 - 0) / (4 + 0) = 1 (up to eps)
    #   unit 2: [2, 2, 2] -> 0
    #   unit 3: [0, 0, 0] -> 0 (silent unit: 0 / eps)
    R = np.array([[0, 4, 2, 0], [2, 4, 2, 0],      # class 0
                  [3, 0, 1, 0], [3, 0, 3, 0],      # class 1
                  [2, 0, 2, 0], [2, 0, 2, 0]], dtype=np.float64)  # class 2
    y = np.array([0, 0, 1, 1, 2, 2])
    si, pref = Se.class_selectivity(R, y, return_preferred=True)
    np.testing.assert_allclose(si, [1 / 3, 1.0, 0.0, 0.0], atol=1e-7)
    assert pref[0] == 1 and pref[1] == 0
    np.testing.assert_array_equal(Se.class_selectivity(R, y, eps=0.0)[:3], [1 / 3, 1.0, 0.0])


def test_unit_active_for_one_class_only_is_one_and_equal_across_classes_is_zero(rng):
    y = np.repeat(np.arange(5), 20)
    one = np.where(y == 3, rng.uniform(0.5, 2.0, y.size), 0.0)
    flat = np.full(y.size, 0.7)
    si = Se.class_selectivity(np.column_stack([one, flat]), y)
    assert si[0] == pytest.approx(1.0, abs=1e-6)
    assert si[1] == pytest.approx(0.0, abs=1e-12)


def test_class_selectivity_uses_labels_stored_in_a_representation(tmp_path, rng):
    R = rng.uniform(0, 1, (40, 6)).astype(np.float32)
    y = rng.integers(0, 4, 40)
    path = io.save(tmp_path / "m.h5", model_kind="test",
                   representations={"test": {"activations": R, "labels": y}})
    with io.load(path) as f:
        got = Se.class_selectivity(f.representations["test"])
    np.testing.assert_allclose(got, Se.class_selectivity(R.astype(np.float64), y), rtol=1e-12)


def test_class_selectivity_bad_inputs(rng):
    R = rng.uniform(0, 1, (10, 3))
    y = np.repeat([0, 1], 5)
    neg = R.copy()
    neg[6, 2] = -0.5
    with pytest.raises(ValueError, match=r"negative activity \(e.g. unit 2 at row 6"):
        Se.class_selectivity(neg, y)
    with pytest.raises(ValueError, match="y has 9 labels but X has 10 rows"):
        Se.class_selectivity(R, y[:9])
    with pytest.raises(ValueError, match="at least 2"):
        Se.class_selectivity(R, np.zeros(10, int))
    with pytest.raises(ValueError, match="R must be 2-dimensional"):
        Se.class_selectivity(R[:, 0], y)
    with pytest.raises(ValueError, match="R is empty"):
        Se.class_selectivity(np.empty((0, 3)), y[:0])
    nan = R.copy()
    nan[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"R contains NaN or inf \(rows \[3\]"):
        Se.class_selectivity(nan, y)
    with pytest.raises(ValueError, match="y is required"):
        Se.class_selectivity(R)


# --- ablation --------------------------------------------------------------------------------

class TinyNet(torch.nn.Module):
    """x (n, 4) -> hidden = relu(x) (identity weights) -> logits = W hidden + b."""

    def __init__(self, W, b):
        super().__init__()
        self.hidden = torch.nn.ReLU()
        self.readout = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            self.readout.weight.copy_(torch.as_tensor(W, dtype=torch.float32))
            self.readout.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        self.representation_module = self.hidden

    def forward(self, x):
        return self.readout(self.hidden(x))


def _tiny_problem(rng, n=200):
    # 2 classes; unit 0 fires only for class 1 (highly selective), unit 1 weakly, units 2-3 not
    y = rng.integers(0, 2, n)
    X = np.column_stack([
        2.0 * y + 0.05 * rng.random(n),
        1.0 + 0.3 * y + 0.1 * rng.random(n),
        rng.random(n),
        rng.random(n),
    ]).astype(np.float32)
    W = np.array([[-1.0, -0.2, 0.1, 0.0], [1.0, 0.2, 0.0, 0.1]])
    b = np.array([0.6, -0.1])  # bias-only prediction: class 0
    return X, y, W, b


def test_ablation_fraction_zero_is_clean_accuracy_and_all_ablated_is_bias_only(rng):
    X, y, W, b = _tiny_problem(rng)
    model = TinyNet(W, b)
    with torch.no_grad():
        clean = (model(torch.from_numpy(X)).argmax(1).numpy() == y).mean()
    assert clean > 0.95
    curve = Se.ablation_curve(model, X, y, order="random", n_steps=5, seed=0)
    assert curve.fractions[0] == 0 and curve.n_ablated[0] == 0
    assert curve.accuracies[0] == clean == curve.clean_accuracy
    np.testing.assert_array_equal(curve.n_ablated, [0, 1, 2, 3, 4])
    # every unit clamped to 0: logits = b, so the prediction is argmax(b) for every input
    assert curve.accuracies[-1] == pytest.approx(np.mean(y == np.argmax(b)))
    # mean fill: logits constant too, W @ mean + b
    mean_curve = Se.ablation_curve(model, X, y, fill="mean", n_steps=3, seed=0)
    const = np.argmax(W @ X.astype(np.float64).mean(axis=0) + b)
    assert mean_curve.accuracies[-1] == pytest.approx(np.mean(y == const))


def test_ablation_hook_is_removed_and_model_mode_restored(rng):
    X, y, W, b = _tiny_problem(rng)
    model = TinyNet(W, b).train()
    xt = torch.from_numpy(X)
    before = model(xt).detach().clone()
    Se.ablation_curve(model, X, y, n_steps=3, seed=0)
    assert model.training
    assert not model.hidden._forward_hooks
    torch.testing.assert_close(model(xt).detach(), before, rtol=0, atol=0)
    # also after an error inside the call
    with pytest.raises(ValueError, match="selectivity has 3 values"):
        Se.ablation_curve(model, X, y, order="selective", selectivity=np.ones(3))
    assert not model.hidden._forward_hooks


def test_selective_order_ablates_highest_selectivity_first(rng):
    X, y, W, b = _tiny_problem(rng)
    model = TinyNet(W, b)
    curve = Se.ablation_curve(model, X, y, order="selective", n_steps=5)
    expected_sel = Se.class_selectivity(X.astype(np.float64), y)   # hidden = relu(X) = X
    np.testing.assert_allclose(curve.selectivity, expected_sel, rtol=1e-6)
    assert curve.order[0] == 0 and curve.order[1] == 1   # unit 0 is the most selective
    np.testing.assert_array_equal(curve.order, np.argsort(-expected_sel, kind="stable"))
    # ablating the one selective unit hurts accuracy far more than a random unselective one
    unsel = Se.ablation_curve(model, X, y, order="unselective", n_steps=5)
    assert unsel.order[-1] == 0
    assert curve.accuracies[1] < unsel.accuracies[1] - 0.2
    # a given selectivity overrides the computed one
    given = Se.ablation_curve(model, X, y, order="selective", selectivity=[0, 0, 0, 1.0], n_steps=2)
    assert given.order[0] == 3


def test_ablation_layer_by_name_and_callable_pair(rng):
    X, y, W, b = _tiny_problem(rng)
    model = TinyNet(W, b)
    by_attr = Se.ablation_curve(model, X, y, order="selective", n_steps=5)
    by_name = Se.ablation_curve(model, X, y, order="selective", layer="hidden", n_steps=5)
    np.testing.assert_array_equal(by_attr.accuracies, by_name.accuracies)

    def encode(x):
        return np.maximum(np.asarray(x, dtype=np.float64), 0)

    def readout(h):
        return h @ W.T + b

    pair = Se.ablation_curve((encode, readout), X, y, order="selective", n_steps=5)
    np.testing.assert_array_equal(pair.accuracies, by_attr.accuracies)
    np.testing.assert_array_equal(pair.order, by_attr.order)


def test_ablation_bad_inputs(rng):
    X, y, W, b = _tiny_problem(rng, n=20)
    plain = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="representation_module"):
        Se.ablation_curve(plain, X, y)
    with pytest.raises(ValueError, match="not a submodule"):
        Se.ablation_curve(plain, X, y, layer="nope")
    model = TinyNet(W, b)
    with pytest.raises(ValueError, match="y has 19 labels but X has 20 rows"):
        Se.ablation_curve(model, X, y[:19])
    with pytest.raises(ValueError, match="order"):
        Se.ablation_curve(model, X, y, order="best")
    with pytest.raises(ValueError, match="fill"):
        Se.ablation_curve(model, X, y, fill="noise")
    with pytest.raises(ValueError, match="X is empty"):
        Se.ablation_curve(model, X[:0], y[:0])
    with pytest.raises(TypeError, match="model"):
        Se.ablation_curve("model", X, y)
