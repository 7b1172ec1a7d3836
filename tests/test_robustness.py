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


@pytest.fixture
def seeded_global_torch_rng():
    """torchattacks draws its random start from torch's global RNG: seed it for the test and
    restore the caller's state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


# ------------------------------------------------------------------ agreement with torchattacks
def _same_points(ours, theirs, atol=1e-6, flips=1e-3):
    """Two runs of a deterministic attack give the same adversarial images. A gradient component
    within float32 rounding of zero may take the other sign under another BLAS and move its pixel
    by a step, so up to a fraction ``flips`` of the pixels may differ by more than ``atol`` (here:
    none). Comparing accuracies alone let a 20% smaller PGD step pass (0.004 apart)."""
    ours = np.asarray(ours, np.float32).reshape(-1)
    theirs = np.asarray(theirs.detach().numpy() if hasattr(theirs, "detach") else theirs, np.float32).reshape(-1)
    assert ours.shape == theirs.shape
    off = np.abs(ours - theirs) > atol
    assert off.mean() <= flips, f"{off.mean():.2%} of pixels differ by more than {atol} (max {np.abs(ours - theirs).max():.3g})"


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_fgsm_and_pgd_agree_with_torchattacks(fmnist, eps, seeded_global_torch_rng):
    torchattacks = pytest.importorskip("torchattacks")
    model, X, y, _ = fmnist
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    ours_adv, theirs_adv = R.fgsm(model, X, y, eps), torchattacks.FGSM(model, eps=eps)(Xt, yt)
    _same_points(ours_adv, theirs_adv)     # deterministic: the same adversarial images
    assert abs(R.accuracy(model, ours_adv, y) - R.accuracy(model, theirs_adv, y)) <= 0.01
    steps, alpha = 10, 2.5 * eps / 10
    for random_start in (False, True):
        # torchattacks returns the last iterate: so does keep_best=False
        ours_adv = R.pgd(model, X, y, eps, steps=steps, step_size=alpha, random_start=random_start, seed=0,
                         keep_best=False)
        theirs_adv = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)(Xt, yt)
        if not random_start:               # deterministic: the same iterates, not only the same accuracy
            _same_points(ours_adv, theirs_adv)
        last, theirs = R.accuracy(model, ours_adv, y), R.accuracy(model, theirs_adv, y)
        assert abs(last - theirs) <= 0.01, (random_start, last, theirs)
        # the default keeps each sample's strongest point of the same run: never weaker
        best = R.accuracy(model, R.pgd(model, X, y, eps, steps=steps, step_size=alpha, random_start=random_start,
                                       seed=0), y)
        assert best <= last
    clean = R.accuracy(model, X, y)
    assert last < clean - 0.2  # the attack works at all


def test_pgd_l2_agrees_with_torchattacks_without_random_start(fmnist):
    torchattacks = pytest.importorskip("torchattacks")
    model, X, y, _ = fmnist
    X4 = torch.from_numpy(X[:300]).reshape(-1, 1, 28, 28)  # torchattacks' PGDL2 needs 4-d input
    yt = torch.from_numpy(y[:300])
    ours_adv = R.pgd(model, X4, yt, 1.0, norm="l2", steps=10, random_start=False, keep_best=False)
    atk = torchattacks.PGDL2(model, eps=1.0, alpha=0.25, steps=10, random_start=False)
    theirs_adv = atk(X4, yt)
    _same_points(ours_adv, theirs_adv, atol=1e-5)   # L2 steps divide by the norm: float32 rounding only
    assert abs(R.accuracy(model, ours_adv, yt) - R.accuracy(model, theirs_adv, yt)) <= 0.01


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
    for steps in (0, 1, 3, 20):
        for keep_best in (False, True):  # the k-th iterate (same seed), or the best point visited
            adv = R.pgd(model, X, y, eps, norm=norm, steps=steps, step_size=eps / 2, seed=3, keep_best=keep_best)
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


def _correct(model, X, y):
    return R._predict(model, torch.from_numpy(X), 256).numpy() == y


def test_pgd_is_at_least_as_strong_as_fgsm(fmnist):
    """Issue #11: on a small MLP, PGD-20 (last iterate, random start, steps of 2.5 eps / 20) left
    samples correct that one FGSM step fools. The default PGD keeps each sample's strongest
    point, FGSM's included, so every sample FGSM fools, PGD fools too."""
    model, X, y, _ = fmnist
    missed = 0
    for eps in (0.02, 0.03, 0.1):
        fgsm_ok = _correct(model, R.fgsm(model, X, y, eps), y)
        last_ok = _correct(model, R.pgd(model, X, y, eps, steps=20, seed=0, keep_best=False), y)
        missed += np.sum(last_ok & ~fgsm_ok)
        pgd_ok = _correct(model, R.pgd(model, X, y, eps, steps=20, seed=0), y)
        assert not np.any(pgd_ok & ~fgsm_ok), eps
        assert np.all(pgd_ok <= last_ok)  # and every sample the last iterate fools
    assert missed > 0  # the last iterate alone does miss samples FGSM fools


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
    assert np.median(used[fooled & ~wrong]) < budget / 2


class _LogitLog(torch.nn.Module):
    """Records the logits of every query."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x):
        out = self.inner(x)
        self.calls.append(out.detach().clone())
        return out


def test_square_attack_stops_at_the_query_that_fools(fmnist):
    """Replays the queries: after the clean query every query holds, in order, the samples not
    yet fooled (the attack keeps them in ascending order), so each sample's queries can be
    counted independently. A sample stops at the first query that fools it (margin <= 0), with
    that point as its result; a sample never fooled spends exactly the budget."""
    model, X, y, _ = fmnist
    X, y = X[:200], y[:200]
    log = _LogitLog(model)
    budget = 300
    adv, used = R.square_attack(log, X, y, 0.08, n_queries=budget, seed=1, return_n_queries=True)

    def margin(logits, t):
        return R._margin(logits.double(), torch.as_tensor(t)).numpy()

    active = np.flatnonzero(margin(log.calls[0], y) > 0)
    count = np.zeros(len(X), np.int64)
    fooled_at = {}
    for q, logits in enumerate(log.calls[1:], start=1):
        assert len(logits) == len(active), f"query {q} holds {len(logits)} rows, {len(active)} not yet fooled"
        count[active] += 1
        now = margin(logits, y[active]) <= 0
        fooled_at.update({int(i): q for i in active[now]})
        active = active[~now]
    np.testing.assert_array_equal(used, count)
    assert 0 < len(fooled_at) and len(active) > 0  # both kinds occur
    assert all(used[i] == q for i, q in fooled_at.items())
    assert np.all(used[active] == budget)
    fooled = ~_correct(model, adv, y)
    np.testing.assert_array_equal(np.flatnonzero(fooled & (used > 0)), sorted(fooled_at))


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
        warnings.simplefilter("error", R.AttackWarning)
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

    def check(acc, eps=eps):
        worst = np.min(list(acc.values()), axis=0)
        return {msg: cat for msg, cat in R._curve_warnings(eps, acc, worst, "linf", 784, 0.1)}

    assert check({"pgd": np.array([0.9, 0.5, 0.1, 0.0])}) == {}
    msgs = check({"pgd": np.array([0.9, 0.3, 0.5, 0.05])})
    assert any("pgd accuracy rises" in m for m in msgs) and any("worst case accuracy rises" in m for m in msgs)
    assert set(msgs.values()) == {R.GradientMaskingWarning}
    assert any("grey image" in m for m in check({"pgd": np.array([0.9, 0.6, 0.6, 0.6])}))
    # PGD weaker than FGSM: any gap is an AttackWarning, a gap over 5 points a GradientMaskingWarning
    assert check({"fgsm": np.array([0.9, 0.5]), "pgd": np.array([0.9, 0.5])}, eps[:2]) == {}
    for pgd_acc, category in ((0.502, R.AttackWarning), (0.56, R.GradientMaskingWarning)):
        msgs = check({"fgsm": np.array([0.9, 0.5]), "pgd": np.array([0.9, pgd_acc])}, eps[:2])
        assert list(msgs.values()) == [category], msgs
        assert "PGD is weaker than a single FGSM step" in next(iter(msgs))
    assert issubclass(R.GradientMaskingWarning, R.AttackWarning)


def test_curve_warns_when_pgd_is_weaker_than_fgsm(fmnist):
    """Issue #11: PGD forced to a weak schedule (2 steps of eps/10: it cannot reach FGSM's corner)
    and to return its last iterate leaves more samples correct than FGSM: AttackWarning. The
    default keep_best returns FGSM's point where it is stronger: no warning, same settings."""
    model, X, y, _ = fmnist
    weak = {"steps": 2, "step_size": 0.01, "keep_best": False}
    with pytest.warns(R.AttackWarning, match=r"at eps=0.1 PGD leaves .* but one-step FGSM leaves"):
        res = R.robust_accuracy_curve(model, X[:200], y[:200], [0.1], seed=0, pgd=weak)
    assert res.accuracy["pgd"][0] > res.accuracy["fgsm"][0]
    assert any("weaker than a single FGSM step" in m for m in res.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("error", R.AttackWarning)
        res = R.robust_accuracy_curve(model, X[:200], y[:200], [0.1], seed=0, pgd=dict(weak, keep_best=True))
    assert res.accuracy["pgd"][0] <= res.accuracy["fgsm"][0] and res.warnings == []


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
