"""Adversarial attacks and robustness analyses: agreement with torchattacks, the constraints every
attack must keep, the Square attack's query budget, sanity checks of the curves, bad input."""

import warnings

import numpy as np
import pytest
import torch

from bioreps.analysis import robustness as R
from bioreps.torch_views import NumpyModule

from conftest import require_fashion_mnist


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models: threads only contend on a shared machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _mlp(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 10))


def _train(model, X, y, seed, epochs=5):
    gen = torch.Generator().manual_seed(seed)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y).long()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(Xt), generator=gen)
        for i in range(0, len(Xt), 100):
            idx = order[i:i + 100]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(Xt[idx]), yt[idx]).backward()
            opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


@pytest.fixture(scope="module")
def fmnist():
    """A 784-64-10 MLP trained on 8000 Fashion-MNIST images, and 500 test images."""
    require_fashion_mnist()
    from bioreps import data

    X, y = data.load("fashion-mnist", "train")
    Xte, yte = data.load("fashion-mnist", "test")
    model = _train(_mlp(0), X[:8000], y[:8000], seed=0)
    return model, Xte[:500], yte[:500].astype(np.int64), (X[8000:16000], y[8000:16000])


@pytest.fixture
def small():
    """A random MLP on 4 x 4 'images' (no data set needed)."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))
    X = rng.random((40, 16)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(X)).argmax(1).numpy()
    y[:5] = (y[:5] + 1) % 3  # a few misclassified samples
    return model, X, y


# ------------------------------------------------------------------ agreement with torchattacks
@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_fgsm_and_pgd_agree_with_torchattacks(fmnist, eps):
    torchattacks = pytest.importorskip("torchattacks")
    model, X, y, _ = fmnist
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    ours = R.accuracy(model, R.fgsm(model, X, y, eps), y)
    theirs = R.accuracy(model, torchattacks.FGSM(model, eps=eps)(Xt, yt), y)
    assert abs(ours - theirs) <= 0.01
    steps, alpha = 10, 2.5 * eps / 10
    for random_start in (False, True):
        ours = R.accuracy(model, R.pgd(model, X, y, eps, steps=steps, random_start=random_start, seed=0), y)
        atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        theirs = R.accuracy(model, atk(Xt, yt), y)
        assert abs(ours - theirs) <= 0.01, (random_start, ours, theirs)
    clean = R.accuracy(model, X, y)
    assert ours < clean - 0.2  # the attack works at all


def test_pgd_l2_agrees_with_torchattacks_without_random_start(fmnist):
    torchattacks = pytest.importorskip("torchattacks")
    model, X, y, _ = fmnist
    X4 = torch.from_numpy(X[:300]).reshape(-1, 1, 28, 28)  # torchattacks' PGDL2 needs 4-d input
    yt = torch.from_numpy(y[:300])
    ours = R.accuracy(model, R.pgd(model, X4, yt, 1.0, norm="l2", steps=10, random_start=False), yt)
    atk = torchattacks.PGDL2(model, eps=1.0, alpha=0.25, steps=10, random_start=False)
    theirs = R.accuracy(model, atk(X4, yt), yt)
    assert abs(ours - theirs) <= 0.01


# ------------------------------------------------------------------ constraints
def test_eps_zero_changes_nothing(small):
    model, X, y = small
    clean = R.accuracy(model, X, y)
    for attack in (R.fgsm, R.pgd, R.square_attack):
        adv = attack(model, X, y, 0.0)
        np.testing.assert_array_equal(adv, X)
        assert R.accuracy(model, adv, y) == clean


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.7)])
def test_pgd_iterates_stay_in_the_ball_and_the_box(small, norm, eps):
    model, X, y = small
    for steps in (0, 1, 3, 20):  # the k-step result is the k-th iterate (same seed)
        adv = R.pgd(model, X, y, eps, norm=norm, steps=steps, step_size=eps / 2, seed=3)
        d = adv - X
        size = np.abs(d).max(axis=1) if norm == "linf" else np.linalg.norm(d, axis=1)
        assert size.max() <= eps + 1e-5
        assert adv.min() >= 0 and adv.max() <= 1
    assert size.max() > 0.9 * eps  # it does move to the boundary


def test_l2_random_start_is_uniform_in_the_ball():
    # with a constant model the iterates never move: the result is the random start
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.zero_()
    X = np.full((4000, 2), 0.5, np.float32)
    adv = R.pgd(model, X, np.zeros(4000, int), 0.2, norm="l2", steps=1, seed=0)
    r = np.linalg.norm(adv - X, axis=1) / 0.2
    assert r.max() <= 1 + 1e-5
    # uniform in a disc: P(r <= 1/2) = 1/4
    assert abs(np.mean(r <= 0.5) - 0.25) < 0.03


def test_pgd_is_at_least_as_strong_as_fgsm(fmnist):
    model, X, y, _ = fmnist
    for eps in (0.03, 0.1):
        a_fgsm = R.accuracy(model, R.fgsm(model, X, y, eps), y)
        a_pgd = R.accuracy(model, R.pgd(model, X, y, eps, steps=10, seed=0), y)
        assert a_pgd <= a_fgsm


def test_seeded_reproducibility(small):
    model, X, y = small
    a = R.pgd(model, X, y, 0.1, steps=2, seed=1)
    b = R.pgd(model, X, y, 0.1, steps=2, seed=1)
    c = R.pgd(model, X, y, 0.1, steps=2, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    s1 = R.square_attack(model, X, y, 0.1, n_queries=30, seed=1)
    s2 = R.square_attack(model, X, y, 0.1, n_queries=30, seed=1)
    np.testing.assert_array_equal(s1, s2)
    state = torch.random.get_rng_state()
    R.pgd(model, X, y, 0.1, steps=1, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone


class _Recorder(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.modes, self.shapes, self.rows = [], [], 0

    def forward(self, x):
        self.modes.append(self.training)
        self.shapes.append(tuple(x.shape[1:]))
        self.rows += x.shape[0]
        return self.inner(x)


def test_training_flags_restored_eval_used_and_no_parameter_grads(small):
    model, X, y = small
    rec = _Recorder(torch.nn.Sequential(model, torch.nn.Dropout(0.5)))
    rec.train()
    rec.inner[0][1].eval()  # mixed flags must come back as they were
    before = [m.training for m in rec.modules()]
    for attack in (R.fgsm, R.pgd):
        attack(rec, X, y, 0.1)
    R.square_attack(rec, X, y, 0.1, n_queries=20, seed=0)
    R.accuracy(rec, X, y)
    assert [m.training for m in rec.modules()] == before
    assert not any(rec.modes)  # every forward ran in eval mode
    assert all(p.grad is None for p in rec.parameters())


def test_types_devices_and_image_shapes_are_kept(fmnist):
    model, X, y, _ = fmnist
    rec = _Recorder(model)
    X4 = torch.from_numpy(X[:50]).reshape(-1, 1, 28, 28).double()
    for attack in (R.fgsm, R.pgd):
        out = attack(rec, X4, torch.from_numpy(y[:50]), 0.05)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == X4.shape
    out = R.square_attack(rec, X4, y[:50], 0.05, n_queries=10, seed=0)
    assert out.shape == X4.shape and out.dtype == torch.float64
    assert set(rec.shapes) == {(1, 28, 28)}  # the model always sees the user's layout
    out = R.fgsm(model, X[:5], y[:5], 0.05)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (5, 784)


# ------------------------------------------------------------------ Square attack
def test_square_attack_succeeds_within_eps_and_budget(fmnist):
    model, X, y, _ = fmnist
    rec = _Recorder(model)
    eps, budget = 0.1, 500
    clean = R.accuracy(model, X, y)
    adv, used = R.square_attack(rec, X, y, eps, n_queries=budget, seed=0, return_n_queries=True)
    assert np.abs(adv - X).max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    acc = R.accuracy(model, adv, y)
    assert acc < clean - 0.4  # 0.83 -> about 0.2 (PGD: 0.13)
    assert used.max() <= budget
    assert rec.rows == len(X) + used.sum()  # one clean query each, then exactly the counted ones
    wrong = R._predict(model, torch.from_numpy(X), 256).numpy() != y
    assert wrong.any() and np.all(used[wrong] == 0)
    np.testing.assert_array_equal(adv[wrong], X[wrong])  # misclassified samples are not touched
    fooled = R._predict(model, torch.from_numpy(adv), 256).numpy() != y
    assert np.all(used[fooled & ~wrong] < budget) or budget in used  # stops early once fooled
    assert np.median(used[fooled & ~wrong]) < budget / 2


def test_square_p_schedule_matches_the_paper():
    n = 10000
    assert R._p_selection(0.8, 10, n) == 0.8 and R._p_selection(0.8, 11, n) == 0.4
    assert R._p_selection(0.8, 500, n) == 0.1 and R._p_selection(0.8, 501, n) == 0.05
    assert R._p_selection(0.8, 8001, n) == 0.8 / 512
    assert R._p_selection(0.8, 2, 1000) == 0.4  # iteration 2 of 1000 is iteration 20 of 10000


def test_square_attack_on_a_numpy_model_matches_the_torch_model(fmnist):
    model, X, y, _ = fmnist
    W1, b1 = model[1].weight.detach().numpy().T, model[1].bias.detach().numpy()
    W2, b2 = model[3].weight.detach().numpy().T, model[3].bias.detach().numpy()

    def forward(A):
        return np.maximum(A.reshape(len(A), -1) @ W1 + b1, 0) @ W2 + b2

    npm = NumpyModule(forward, 10)
    Xs, ys = X[:200], y[:200]
    a_torch = R.accuracy(model, R.square_attack(model, Xs, ys, 0.1, n_queries=200, seed=4), ys)
    a_numpy = R.accuracy(npm, R.square_attack(npm, Xs, ys, 0.1, n_queries=200, seed=4), ys)
    assert abs(a_torch - a_numpy) <= 0.01
    assert a_numpy < R.accuracy(npm, Xs, ys) - 0.3
    with pytest.raises(TypeError, match="square_attack"):
        R.pgd(npm, Xs, ys, 0.1)
    with pytest.raises(TypeError, match="square_attack"):
        R.fgsm(npm, Xs, ys, 0.1)


# ------------------------------------------------------------------ curves
def test_robust_accuracy_curve_on_an_undefended_mlp(fmnist, tmp_path):
    model, X, y, _ = fmnist
    with warnings.catch_warnings():
        warnings.simplefilter("error", R.GradientMaskingWarning)
        res = R.robust_accuracy_curve(model, X[:300], y[:300], [0.3, 0.0, 0.05, 0.1], seed=0,
                                      pgd={"steps": 10})
    np.testing.assert_array_equal(res.eps, [0, 0.05, 0.1, 0.3])
    clean = R.accuracy(model, X[:300], y[:300])
    assert res.clean_accuracy == clean
    for name in ("fgsm", "pgd"):
        assert res.accuracy[name][0] == clean
        assert np.all(np.diff(res.accuracy[name]) <= 0)
    assert np.all(np.diff(res.worst_case) <= 0) and res.worst_case[-1] <= 0.02
    assert np.all(res.worst_case <= np.minimum(res.accuracy["fgsm"], res.accuracy["pgd"]))
    # the white-box PGD point is reproducible by calling pgd with the same seed
    assert res.accuracy["pgd"][2] == R.accuracy(model, R.pgd(model, X[:300], y[:300], 0.1, steps=10, seed=0),
                                                y[:300])
    assert res.warnings == []
    fig = R.plot_robust_accuracy(res, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0 and len(fig.axes[0].lines) == 4


class _Quantise(torch.nn.Module):
    """Zero-gradient input quantisation: a textbook case of gradient masking."""

    def forward(self, x):
        return torch.round(x * 10) / 10


def test_gradient_masking_is_flagged(fmnist):
    model, X, y, _ = fmnist
    masked = torch.nn.Sequential(_Quantise(), model)
    with pytest.warns(R.GradientMaskingWarning, match="Square"):
        res = R.robust_accuracy_curve(masked, X[:200], y[:200], [0.1], attacks=("pgd", "square"), seed=0,
                                      pgd={"steps": 5}, square={"n_queries": 300})
    assert res.accuracy["square"][-1] < res.accuracy["pgd"][-1] - 0.3
    assert any("Square" in w for w in res.warnings)


def test_curve_checks_flag_rising_and_stuck_curves():
    eps = np.array([0.0, 0.1, 0.3, 0.5])
    good = {"pgd": np.array([0.9, 0.5, 0.1, 0.0])}
    assert R._curve_warnings(eps, good, good["pgd"], "linf", 784, 0.1) == []
    rising = {"pgd": np.array([0.9, 0.3, 0.5, 0.05])}
    msgs = R._curve_warnings(eps, rising, rising["pgd"], "linf", 784, 0.1)
    assert any("pgd accuracy rises" in m for m in msgs) and any("worst case accuracy rises" in m for m in msgs)
    stuck = {"pgd": np.array([0.9, 0.6, 0.6, 0.6])}
    assert any("grey image" in m for m in R._curve_warnings(eps, stuck, stuck["pgd"], "linf", 784, 0.1))
    fgsm_wins = {"fgsm": np.array([0.9, 0.2]), "pgd": np.array([0.9, 0.5])}
    assert any("FGSM" in m for m in R._curve_warnings(eps[:2], fgsm_wins, fgsm_wins["fgsm"], "linf", 784, 0.1))


def test_non_differentiable_models_skip_gradient_attacks(small):
    model, X, y = small

    def forward(A):
        with torch.no_grad():
            return model(torch.from_numpy(A)).numpy()

    npm = NumpyModule(forward, 3)
    with pytest.warns(UserWarning, match="not differentiable"):
        res = R.robust_accuracy_curve(npm, X, y, [0, 0.2], attacks=("fgsm", "pgd", "square"), seed=0,
                                      square={"n_queries": 50})
    assert res.attacks == ("square",) and res.skipped == ("fgsm", "pgd")
    with pytest.raises(ValueError, match="square"):
        R.robust_accuracy_curve(npm, X, y, [0.1], attacks=("pgd",))


# ------------------------------------------------------------------ transfer
def test_transfer_matrix(fmnist):
    model, X, y, (Xtr, ytr) = fmnist
    other = _train(_mlp(1), Xtr, ytr, seed=1, epochs=3)
    Xs, ys = X[:200], y[:200]
    res = R.transfer_matrix({"a": model, "b": other}, Xs, ys, 0.1, steps=10, seed=0)
    assert res.names == ["a", "b"] and res.matrix.shape == (2, 2)
    assert np.all((res.matrix >= 0) & (res.matrix <= 1))
    for i, m in enumerate((model, other)):
        assert res.matrix[i, i] == R.accuracy(m, R.pgd(m, Xs, ys, 0.1, steps=10, seed=0), ys)
        assert res.clean_accuracy[i] == R.accuracy(m, Xs, ys)
    # transfer is weaker than white box, yet far below clean (Szegedy et al.)
    assert res.matrix[0, 1] > res.matrix[1, 1] and res.matrix[0, 1] < res.clean_accuracy[1] - 0.1
    res2 = R.transfer_matrix([model, other], Xs, ys, 0.1, attack="fgsm")
    assert res2.names == ["model0", "model1"]


# ------------------------------------------------------------------ bad input
def test_bad_input_is_rejected_with_clear_errors(small):
    model, X, y = small
    with pytest.raises(ValueError, match="eps"):
        R.pgd(model, X, y, -0.1)
    with pytest.raises(ValueError, match="eps"):
        R.fgsm(model, X, y, float("nan"))
    with pytest.raises(ValueError, match="norm"):
        R.pgd(model, X, y, 0.1, norm="l1")
    with pytest.raises(ValueError, match="attack"):
        R.robust_accuracy_curve(model, X, y, [0.1], attacks=("cw",))
    with pytest.raises(ValueError, match="attack"):
        R.transfer_matrix([model], X, y, 0.1, attack="deepfool")
    with pytest.raises(ValueError, match="eps_list"):
        R.robust_accuracy_curve(model, X, y, [0.1, -1])
    with pytest.raises(ValueError, match="L-inf"):
        R.robust_accuracy_curve(model, X, y, [0.1], attacks=("fgsm",), norm="l2")
    with pytest.raises(ValueError, match="39 labels but X has 40 rows"):
        R.fgsm(model, X, y[:-1], 0.1)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        R.pgd(model, bad, y, 0.1)
    with pytest.raises(ValueError, match=r"X must lie in \[0, 1\]"):
        R.square_attack(model, X * 2, y, 0.1)
    with pytest.raises(ValueError, match="label 7"):
        R.accuracy(model, X, np.full(len(X), 7))
    with pytest.raises(ValueError, match="image_shape"):
        R.square_attack(model, X[:, :15], y, 0.1)
    with pytest.raises(ValueError, match="n_queries"):
        R.square_attack(model, X, y, 0.1, n_queries=0)
    with pytest.raises(ValueError, match="p_init"):
        R.square_attack(model, X, y, 0.1, p_init=1.5)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        R.fgsm(lambda x: x, X, y, 0.1)
    with pytest.raises(TypeError, match="steps"):
        R.robust_accuracy_curve(model, X, y, [0.1], attacks=("fgsm",), steps=3)
