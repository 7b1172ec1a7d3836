"""Per-image critical perturbations and the eps at 50% relative accuracy
(bioreps.analysis.robustness.critical_perturbation / eps_at_level): analytic flip radii of a linear
model, the filtering to correctly classified images, the relative-accuracy curve, the noise
baseline, the Square attack on a non-differentiable model, interpolation and censoring, bad input."""

import json
import math

import numpy as np
import pytest
import torch

from bioreps.analysis import robustness as R
from bioreps.torch_views import NumpyModule

from conftest import require_fashion_mnist

GRID = np.round(np.arange(0.01, 0.1501, 0.01), 2)  # 0.01 .. 0.15


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models: threads only contend on a shared machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def linear():
    """A 2-class linear model (float64, no bias) on 6 features in [0.3, 0.7], the analytic FGSM
    flip radius of every image (margin / ||w_y - w_other||_1), and labels with rows 0 and 1 wrong."""
    rng = np.random.default_rng(1)
    d = 6
    W = rng.choice([-1, 1], size=(2, d)) * rng.uniform(0.3, 1.0, size=(2, d))
    X = rng.uniform(0.3, 0.7, size=(12, d)).astype(np.float32)
    model = torch.nn.Linear(d, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(W))
    logits = X.astype(np.float64) @ W.T
    y_true = logits.argmax(1)
    radius = np.abs(logits[:, 0] - logits[:, 1]) / np.abs(W[0] - W[1]).sum()
    y = y_true.copy()
    y[:2] = 1 - y[:2]  # two misclassified images
    return model, X, y, radius


def _expected_critical(radius):
    """The first grid eps above each analytic radius (inf beyond the grid)."""
    return np.array([GRID[GRID > r][0] if np.any(GRID > r) else np.inf for r in radius])


def test_fgsm_and_pgd_critical_eps_of_a_linear_model_match_the_analytic_radius(linear):
    model, X, y, radius = linear
    keep = np.arange(2, 12)
    expected = _expected_critical(radius[keep])
    # the fixture covers both cases, and no radius sits on a grid point
    assert np.isinf(expected).sum() == 2 and np.isfinite(expected).sum() == 8
    assert np.min(np.abs(radius[:, None] - GRID[None, :])) > 1e-4
    for attack in ("fgsm", "pgd"):  # FGSM is optimal for a linear model in L-inf; PGD keeps its point
        res = R.critical_perturbation(model, X, y, GRID, attack, seed=0)
        np.testing.assert_array_equal(res.indices, keep)
        np.testing.assert_array_equal(res.critical_eps, expected)
        assert res.attack == attack and res.norm == "linf" and res.n_images == 12
        assert res.clean_accuracy == pytest.approx(10 / 12)
    # l2 is the norm of the actual flipping example: no clipping here, so eps * sqrt(d) for FGSM
    res = R.critical_perturbation(model, X, y, GRID, "fgsm")
    tens = R.critical_perturbation(model, torch.from_numpy(X), torch.from_numpy(y), GRID, "fgsm")
    np.testing.assert_array_equal(tens.critical_eps, res.critical_eps)
    finite = np.isfinite(expected)
    np.testing.assert_allclose(res.l2[finite], expected[finite] * math.sqrt(6), rtol=1e-6)
    assert np.all(np.isinf(res.l2[~finite]))
    j = int(np.flatnonzero(finite)[0])
    X_adv = R.fgsm(model, X[keep[j]:keep[j] + 1], y[keep[j]:keep[j] + 1], float(expected[j]))
    assert res.l2[j] == pytest.approx(float(np.linalg.norm(X_adv.astype(np.float64) - X[keep[j]])), rel=1e-6)


def test_noise_moves_every_feature_by_eps_and_never_beats_the_optimal_linf_attack(linear):
    model, X, y, radius = linear
    res = R.critical_perturbation(model, X, y, GRID, "noise", seed=0)
    fin = np.isfinite(res.critical_eps)
    assert fin.sum() >= 3
    # x in [0.3, 0.7] and eps <= 0.15: nothing clipped, so every feature moved by exactly +-eps
    np.testing.assert_allclose(res.l2[fin], res.critical_eps[fin] * math.sqrt(6), rtol=1e-6)
    # for a linear model FGSM is the optimal L-inf attack: no eps-ball point flips an image earlier
    assert np.all(res.critical_eps >= _expected_critical(radius[2:]))
    # a SeedSequence seeds like its int and is not advanced by the call
    ss = np.random.SeedSequence(0)
    for _ in range(2):
        np.testing.assert_array_equal(R.critical_perturbation(model, X, y, GRID, "noise", seed=ss).l2, res.l2)


def test_only_correct_false_keeps_every_image_and_counts_wrong_ones_as_flipped_at_zero(linear):
    model, X, y, radius = linear
    res = R.critical_perturbation(model, X, y, GRID, "fgsm", only_correct=False)
    np.testing.assert_array_equal(res.indices, np.arange(12))
    assert res.critical_eps[:2].tolist() == [0.0, 0.0] and res.l2[:2].tolist() == [0.0, 0.0]
    np.testing.assert_array_equal(res.critical_eps[2:], _expected_critical(radius[2:]))
    # the curve is then the plain robust accuracy: the clean accuracy at eps 0
    grid0 = np.concatenate([[0.0], GRID])
    res0 = R.critical_perturbation(model, X, y, grid0, "fgsm", only_correct=False)
    assert res0.relative_accuracy()[0] == pytest.approx(10 / 12)


def test_never_flipped_images_are_inf(linear):
    model, X, y, radius = linear
    tiny = [0.001, 0.002]  # below every analytic radius
    assert radius.min() > 0.002
    res = R.critical_perturbation(model, X, y, tiny, "fgsm")
    assert np.all(np.isinf(res.critical_eps)) and np.all(np.isinf(res.l2))
    assert res.relative_accuracy().tolist() == [1.0, 1.0] and res.median_l2() == math.inf
    assert res.eps_at_level() == {"eps": math.inf, "lo": 0.002, "hi": math.inf, "censored": "above"}


def test_relative_accuracy_is_monotone_and_counts_images_above_each_eps(linear):
    model, X, y, radius = linear
    grid = np.concatenate([[0.0], GRID])
    res = R.critical_perturbation(model, X, y, grid, "fgsm")
    rel = res.relative_accuracy()
    expected_crit = _expected_critical(radius[2:])
    by_hand = np.array([np.sum(expected_crit > e) / 10 for e in grid])
    np.testing.assert_array_equal(rel, by_hand)
    assert rel[0] == 1.0 and np.all(np.diff(rel) <= 0) and rel[-1] == pytest.approx(0.2)
    # median: the middle two of the 10 sorted critical l2 values
    srt = np.sort(expected_crit * math.sqrt(6))
    assert res.median_l2() == pytest.approx((srt[4] + srt[5]) / 2, rel=1e-6)
    # the summary eps is eps_at_level of this curve
    assert res.eps_at_level(0.5) == R.eps_at_level(grid, by_hand, 0.5)


def test_to_dict_is_strict_json_with_inf_as_a_string(linear):
    model, X, y, _ = linear
    res = R.critical_perturbation(model, X, y, GRID, "fgsm")
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["critical_eps"].count("inf") == 2 and d["l2"].count("inf") == 2
    assert [float(v) for v in d["critical_eps"]] == res.critical_eps.tolist()
    assert d["indices"] == list(range(2, 12)) and d["attack"] == "fgsm" and d["n_images"] == 12
    assert d["relative_accuracy"] == res.relative_accuracy().tolist()
    assert R.critical_perturbation(model, X, y, [0.001], "fgsm").to_dict()["median_l2"] == "inf"


# ------------------------------------------------------------------ trained model
@pytest.fixture(scope="module")
def fmnist():
    """A 784-32-10 MLP trained briefly on 2000 Fashion-MNIST images, and 100 test images."""
    require_fashion_mnist()
    from bioreps import data

    X, y = data.load("fashion-mnist", "train")
    Xte, yte = data.load("fashion-mnist", "test")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    gen = torch.Generator().manual_seed(0)
    Xt, yt = torch.from_numpy(X[:2000]), torch.from_numpy(y[:2000]).long()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(3):
        order = torch.randperm(len(Xt), generator=gen)
        for i in range(0, len(Xt), 100):
            idx = order[i:i + 100]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(Xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval(), Xte[:100], yte[:100].astype(np.int64)


FM_GRID = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2]


def test_noise_is_reproducible_and_weaker_than_pgd(fmnist):
    model, X, y = fmnist
    a = R.critical_perturbation(model, X, y, FM_GRID, "noise", seed=3)
    b = R.critical_perturbation(model, X, y, FM_GRID, "noise", seed=3)
    c = R.critical_perturbation(model, X, y, FM_GRID, "noise", seed=4)
    np.testing.assert_array_equal(a.critical_eps, b.critical_eps)
    np.testing.assert_array_equal(a.l2, b.l2)
    assert not np.array_equal(a.l2, c.l2)  # the seed is used
    p = R.critical_perturbation(model, X, y, FM_GRID, "pgd", seed=3)
    q = R.critical_perturbation(model, X, y, FM_GRID, "pgd", seed=3)
    np.testing.assert_array_equal(p.critical_eps, q.critical_eps)
    np.testing.assert_array_equal(p.l2, q.l2)
    # PGD (keep_best) is never weaker than FGSM at any eps, so it flips each image no later
    f = R.critical_perturbation(model, X, y, FM_GRID, "fgsm")
    assert np.all(p.critical_eps <= f.critical_eps) and np.any(p.critical_eps < f.critical_eps)
    assert p.clean_accuracy > 0.6 and p.indices.size == round(p.clean_accuracy * 100)
    rn, rp = a.relative_accuracy(), p.relative_accuracy()
    assert np.all(rn >= rp) and rn[-2] > rp[-2] + 0.3
    assert p.median_l2() < a.median_l2()
    # every flipping example lies in its L-inf ball
    fin = np.isfinite(p.critical_eps)
    assert fin.any() and np.all(p.l2[fin] <= p.critical_eps[fin] * math.sqrt(784) + 1e-5)
    assert np.all(p.l2[fin] > 0)


def test_square_attack_on_a_non_differentiable_model(fmnist):
    model, X, y = fmnist

    def forward(A):
        with torch.no_grad():
            return model(torch.from_numpy(A)).numpy()

    npm = NumpyModule(forward, 10)
    Xs, ys = X[:30], y[:30]
    grid = [0.05, 0.1, 0.2]
    res = R.critical_perturbation(npm, Xs, ys, grid, "square", n_queries=60, seed=1)
    again = R.critical_perturbation(npm, Xs, ys, grid, "square", n_queries=60, seed=1)
    np.testing.assert_array_equal(res.l2, again.l2)
    fin = np.isfinite(res.critical_eps)
    assert fin.sum() >= res.indices.size // 2
    assert np.all(res.l2[fin] <= res.critical_eps[fin] * math.sqrt(784) + 1e-5)
    assert R.critical_perturbation(npm, Xs, ys, grid, "noise", seed=0).indices.size == res.indices.size
    for attack in ("fgsm", "pgd"):
        with pytest.raises(TypeError, match=f"{attack} needs input gradients.*square_attack"):
            R.critical_perturbation(npm, Xs, ys, grid, attack)


# ------------------------------------------------------------------ eps_at_level
def test_eps_at_level_interpolates_in_log_eps():
    r = R.eps_at_level([0.01, 0.02, 0.04], [1.0, 0.8, 0.4])
    # crossing 3/4 of the way from 0.02 to 0.04 on a log scale
    assert r == {"eps": pytest.approx(0.02 * 2 ** 0.75), "lo": 0.02, "hi": 0.04, "censored": None}
    # a point exactly at the level is the crossing
    assert R.eps_at_level([0.01, 0.02, 0.04], [1.0, 0.5, 0.4]) == {"eps": pytest.approx(0.02), "lo": 0.01,
                                                                  "hi": 0.02, "censored": None}
    # the first crossing counts, and other levels
    assert R.eps_at_level([0.1, 0.2, 0.4, 0.8], [0.9, 0.2, 0.9, 0.1], level=0.7)["hi"] == 0.2
    r = R.eps_at_level([0.1, 1.0], [0.9, 0.1], level=0.3)
    assert r["eps"] == pytest.approx(0.1 * 10 ** 0.75) and r["censored"] is None


def test_eps_at_level_censoring():
    # the first eps > 0 is already below the level: linear from an eps-0 point, censored below
    r = R.eps_at_level([0.0, 0.1, 0.2], [1.0, 0.4, 0.1])
    assert r == {"eps": pytest.approx(0.1 * 5 / 6), "lo": 0.0, "hi": 0.1, "censored": "below"}
    assert R.eps_at_level([0.1, 0.2], [0.3, 0.1]) == {"eps": 0.1, "lo": 0.0, "hi": 0.1, "censored": "below"}
    assert R.eps_at_level([0.0, 0.1], [0.4, 0.1]) == {"eps": 0.0, "lo": 0.0, "hi": 0.0, "censored": "below"}
    assert R.eps_at_level([0.0, 0.1, 0.2], [1.0, 0.9, 0.6]) == {"eps": math.inf, "lo": 0.2, "hi": math.inf,
                                                               "censored": "above"}


def test_bad_input_is_rejected_with_clear_errors(linear):
    model, X, y, _ = linear
    cases = [([0.02, 0.01], r"eps_list\[1\] = 0.01 is smaller"),
             ([0.01, 0.01], r"eps_list\[1\] = 0.01 is a duplicate"),
             ([-0.1, 0.1], r"eps_list\[0\] is -0.1"),
             ([0.1, float("nan")], r"eps_list\[1\] is nan"),
             ([], "eps_list is empty"),
             ([0.0], "no eps > 0")]
    for grid, msg in cases:
        with pytest.raises(ValueError, match=msg):
            R.critical_perturbation(model, X, y, grid, "fgsm")
    with pytest.raises(ValueError, match=r"unknown attack 'cw'.*'fgsm', 'pgd', 'square', 'noise'"):
        R.critical_perturbation(model, X, y, GRID, "cw")
    with pytest.raises(ValueError, match="L-inf attack; with norm='l2' use attack='pgd'"):
        R.critical_perturbation(model, X, y, GRID, "noise", norm="l2")
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        R.critical_perturbation(model, X, y, GRID, "pgd", seed=-1)
    with pytest.raises(ValueError, match="y has 3 labels but X has 12 rows"):
        R.critical_perturbation(model, X, y[:3], GRID, "fgsm")
    with pytest.raises(ValueError, match="accuracy has 2 values but eps has 3"):
        R.eps_at_level([0.1, 0.2, 0.3], [1.0, 0.5])
    with pytest.raises(ValueError, match=r"eps\[1\] = 0.1 is a duplicate"):
        R.eps_at_level([0.1, 0.1], [1.0, 0.5])
    with pytest.raises(ValueError, match=r"eps\[0\] is -1.0"):
        R.eps_at_level([-1.0, 0.1], [1.0, 0.5])
    with pytest.raises(ValueError, match=r"accuracy\[1\] is nan"):
        R.eps_at_level([0.1, 0.2], [1.0, float("nan")])
    for level in (0.0, 1.0):
        with pytest.raises(ValueError, match=rf"level must be in \(0, 1\), got {level}"):
            R.eps_at_level([0.1, 0.2], [1.0, 0.5], level=level)
