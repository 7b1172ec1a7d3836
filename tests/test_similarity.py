"""Tests of bioreps.analysis.similarity: CKA (linear/RBF, debiased, minibatch), cka_matrix, RSA."""

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr, spearmanr

from bioreps import io
from bioreps.analysis import similarity as Sm


# --- independent reference: verbatim copy of Kornblith et al.'s functions from
# github.com/google-research/google-research, representation_similarity/Demo.ipynb
# (Apache-2.0, Copyright 2019 Google LLC); docstrings shortened.

def gram_linear(x):
  """Compute Gram (kernel) matrix for a linear kernel."""
  return x.dot(x.T)


def gram_rbf(x, threshold=1.0):
  """Compute Gram (kernel) matrix for an RBF kernel."""
  dot_products = x.dot(x.T)
  sq_norms = np.diag(dot_products)
  sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
  sq_median_distance = np.median(sq_distances)
  return np.exp(-sq_distances / (2 * threshold ** 2 * sq_median_distance))


def center_gram(gram, unbiased=False):
  """Center a symmetric Gram matrix."""
  if not np.allclose(gram, gram.T):
    raise ValueError('Input must be a symmetric matrix.')
  gram = gram.copy()

  if unbiased:
    # This formulation of the U-statistic, from Szekely, G. J., & Rizzo, M.
    # L. (2014). Partial distance correlation with methods for dissimilarities.
    # The Annals of Statistics, 42(6), 2382-2412, seems to be more numerically
    # stable than the alternative from Song et al. (2007).
    n = gram.shape[0]
    np.fill_diagonal(gram, 0)
    means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
    means -= np.sum(means) / (2 * (n - 1))
    gram -= means[:, None]
    gram -= means[None, :]
    np.fill_diagonal(gram, 0)
  else:
    means = np.mean(gram, 0, dtype=np.float64)
    means -= np.mean(means) / 2
    gram -= means[:, None]
    gram -= means[None, :]

  return gram


def cka(gram_x, gram_y, debiased=False):
  """Compute CKA."""
  gram_x = center_gram(gram_x, unbiased=debiased)
  gram_y = center_gram(gram_y, unbiased=debiased)

  # Note: To obtain HSIC, this should be divided by (n-1)**2 (biased variant) or
  # n*(n-3) (unbiased variant), but this cancels for CKA.
  scaled_hsic = gram_x.ravel().dot(gram_y.ravel())

  normalization_x = np.linalg.norm(gram_x)
  normalization_y = np.linalg.norm(gram_y)
  return scaled_hsic / (normalization_x * normalization_y)


def _debiased_dot_product_similarity_helper(
    xty, sum_squared_rows_x, sum_squared_rows_y, squared_norm_x, squared_norm_y,
    n):
  """Helper for computing debiased dot product similarity (i.e. linear HSIC)."""
  # This formula can be derived by manipulating the unbiased estimator from
  # Song et al. (2007).
  return (
      xty - n / (n - 2.) * sum_squared_rows_x.dot(sum_squared_rows_y)
      + squared_norm_x * squared_norm_y / ((n - 1) * (n - 2)))


def feature_space_linear_cka(features_x, features_y, debiased=False):
  """Compute CKA with a linear kernel, in feature space."""
  features_x = features_x - np.mean(features_x, 0, keepdims=True)
  features_y = features_y - np.mean(features_y, 0, keepdims=True)

  dot_product_similarity = np.linalg.norm(features_x.T.dot(features_y)) ** 2
  normalization_x = np.linalg.norm(features_x.T.dot(features_x))
  normalization_y = np.linalg.norm(features_y.T.dot(features_y))

  if debiased:
    n = features_x.shape[0]
    # Equivalent to np.sum(features_x ** 2, 1) but avoids an intermediate array.
    sum_squared_rows_x = np.einsum('ij,ij->i', features_x, features_x)
    sum_squared_rows_y = np.einsum('ij,ij->i', features_y, features_y)
    squared_norm_x = np.sum(sum_squared_rows_x)
    squared_norm_y = np.sum(sum_squared_rows_y)

    dot_product_similarity = _debiased_dot_product_similarity_helper(
        dot_product_similarity, sum_squared_rows_x, sum_squared_rows_y,
        squared_norm_x, squared_norm_y, n)
    normalization_x = np.sqrt(_debiased_dot_product_similarity_helper(
        normalization_x ** 2, sum_squared_rows_x, sum_squared_rows_x,
        squared_norm_x, squared_norm_x, n))
    normalization_y = np.sqrt(_debiased_dot_product_similarity_helper(
        normalization_y ** 2, sum_squared_rows_y, sum_squared_rows_y,
        squared_norm_y, squared_norm_y, n))

  return dot_product_similarity / (normalization_x * normalization_y)


def _ckatorch_core():
    """ckatorch.core (a second, independent implementation), or skip when not installed.

    ``import ckatorch`` also imports its trainer and plotting helpers, which need pyyaml,
    safetensors and seaborn; the CKA functions themselves need only torch, so when those
    extras are missing the package's ``core`` module is loaded without its ``__init__``.
    """
    pytest.importorskip("torch")
    try:
        return importlib.import_module("ckatorch.core")
    except ImportError:
        spec = importlib.util.find_spec("ckatorch")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("ckatorch not installed (pip install --no-deps ckatorch==1.0.3)")
    saved = {k: v for k, v in sys.modules.items() if k == "ckatorch" or k.startswith("ckatorch.")}
    for k in saved:
        del sys.modules[k]
    pkg = types.ModuleType("ckatorch")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["ckatorch"] = pkg
    try:
        return importlib.import_module("ckatorch.core")
    finally:
        for k in [k for k in sys.modules if k == "ckatorch" or k.startswith("ckatorch.")]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.fixture
def xy(rng):
    X = rng.standard_normal((60, 12))
    Y = X @ rng.standard_normal((12, 9)) + rng.standard_normal((60, 9))
    return X, Y


def _random_rotation(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# --- CKA properties --------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_representation_with_itself_is_one(xy, kernel, debiased):
    X, _ = xy
    assert Sm.cka(X, X, kernel=kernel, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_invariant_to_orthogonal_transform_isotropic_scaling_translation(xy, rng):
    X, Y = xy
    base = Sm.cka(X, Y)
    Q = _random_rotation(rng, Y.shape[1])
    for Y2 in (Y @ Q, 3.7 * Y, Y + rng.standard_normal(Y.shape[1]) * 10, 0.2 * (Y @ Q) - 5):
        assert Sm.cka(X, Y2) == pytest.approx(base, abs=1e-10)
        assert Sm.cka(X, Y2, debiased=True) == pytest.approx(Sm.cka(X, Y, debiased=True), abs=1e-10)
    # not invariant to an anisotropic scaling (sanity: the test could fail)
    assert abs(Sm.cka(X, Y * np.linspace(0.1, 5, Y.shape[1])) - base) > 1e-3


def test_rbf_cka_invariant_to_orthogonal_transform_and_translation(xy, rng):
    X, Y = xy
    base = Sm.cka(X, Y, kernel="rbf")
    Q = _random_rotation(rng, X.shape[1])
    assert Sm.cka(X @ Q, Y, kernel="rbf") == pytest.approx(base, abs=1e-10)
    assert Sm.cka(X + 42.0, Y - 3.0, kernel="rbf") == pytest.approx(base, abs=1e-9)
    # isotropic scaling too, since sigma follows the median distance
    assert Sm.cka(2.5 * X, Y, kernel="rbf") == pytest.approx(base, abs=1e-10)


def test_debiased_cka_of_independent_data_is_near_zero_when_units_exceed_samples(rng):
    n = 30
    X = rng.standard_normal((n, 2000))
    Y = rng.standard_normal((n, 2000))
    biased = Sm.cka(X, Y)
    debiased = Sm.cka(X, Y, debiased=True)
    assert biased > 0.8          # biased CKA of independent wide data approaches 1
    assert abs(debiased) < 0.05


# --- agreement with independent implementations ----------------------------------------------

@pytest.mark.parametrize("n", [40, 41, 200])  # 200 > d1 + d2: the feature-space path
def test_cka_matches_kornblith_reference_to_1e6(rng, n):
    X = rng.standard_normal((n, 15)) * rng.uniform(0.1, 3, 15) + 1.0
    Y = np.tanh(X @ rng.standard_normal((15, 20))) + 0.5 * rng.standard_normal((n, 20))
    for debiased in (False, True):
        ref_gram = cka(gram_linear(X), gram_linear(Y), debiased=debiased)
        ref_feat = feature_space_linear_cka(X, Y, debiased=debiased)
        got = Sm.cka(X, Y, debiased=debiased)
        assert got == pytest.approx(ref_gram, abs=1e-6)
        assert got == pytest.approx(ref_feat, abs=1e-6)
        for frac in (0.5, 1.0):
            ref = cka(gram_rbf(X, frac), gram_rbf(Y, frac), debiased=debiased)
            assert Sm.cka(X, Y, kernel="rbf", sigma_frac=frac, debiased=debiased) == \
                pytest.approx(ref, abs=1e-6)


def test_cka_matches_ckatorch_to_1e6(rng):
    core = _ckatorch_core()
    import torch

    n = 41  # odd n: n**2 is odd, so torch.median (lower middle) equals np.median
    X = rng.standard_normal((n, 10))
    Y = X @ rng.standard_normal((10, 6)) + rng.standard_normal((n, 6))
    tx, ty = torch.from_numpy(X), torch.from_numpy(Y)
    for debiased in (False, True):
        ref = float(core.cka_base(tx, ty, kernel="linear", unbiased=debiased))
        assert Sm.cka(X, Y, debiased=debiased) == pytest.approx(ref, abs=1e-6)
        ref = float(core.cka_base(tx, ty, kernel="rbf", unbiased=debiased, threshold=0.5))
        assert Sm.cka(X, Y, kernel="rbf", debiased=debiased) == pytest.approx(ref, abs=1e-6)
    # minibatch CKA (Nguyen et al.) over 3 equal batches of 12 rows; ckatorch builds Gram
    # matrices of the raw rows, we centre features first: HSIC_1 is translation-invariant
    Xb, Yb = X[:36].reshape(3, 12, 10), Y[:36].reshape(3, 12, 6)
    ref = float(core.cka_batch(torch.from_numpy(Xb), torch.from_numpy(Yb)))
    got = Sm.minibatch_cka(zip(Xb, Yb))
    assert got == pytest.approx(ref, abs=1e-6)
    assert Sm.cka(X[:36], Y[:36], batch_size=12) == pytest.approx(ref, abs=1e-6)


# --- minibatch -------------------------------------------------------------------------------

def test_minibatch_cka_with_one_batch_equals_full_unbiased_cka(xy):
    X, Y = xy
    full = Sm.cka(X, Y, debiased=True)
    assert Sm.minibatch_cka([(X, Y)]) == pytest.approx(full, abs=1e-12)
    assert Sm.cka(X, Y, batch_size=len(X)) == pytest.approx(full, abs=1e-12)
    assert Sm.cka(X, Y, batch_size=10 * len(X)) == pytest.approx(full, abs=1e-12)
    rbf = Sm.cka(X, Y, kernel="rbf", debiased=True)
    assert Sm.minibatch_cka([(X, Y)], kernel="rbf") == pytest.approx(rbf, abs=1e-12)


def test_minibatch_cka_streams_a_representation_from_file(tmp_path, rng):
    X = rng.standard_normal((200, 8)).astype(np.float32)
    Y = (X @ rng.standard_normal((8, 5))).astype(np.float32) + rng.standard_normal((200, 5)).astype(np.float32)
    path = io.save(tmp_path / "m.h5", model_kind="test", representations={"a": X, "b": Y})
    expect = Sm.cka(X.astype(np.float64), Y.astype(np.float64), batch_size=50)
    with io.load(path) as f:
        got = Sm.cka(f.representations["a"], f.representations["b"], batch_size=50)
        assert got == pytest.approx(expect, abs=1e-12)
        assert Sm.cka(f.representations["a"], f.representations["b"]) == pytest.approx(
            Sm.cka(X.astype(np.float64), Y.astype(np.float64)), abs=1e-10)
    # shuffled batches are reproducible and close to the in-order estimate
    s1 = Sm.cka(X, Y, batch_size=50, shuffle=True, seed=0)
    assert s1 == Sm.cka(X, Y, batch_size=50, shuffle=True, seed=0)
    assert s1 == pytest.approx(expect, abs=0.1)


# --- cka_matrix and plot ---------------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_matrix_symmetric_unit_diagonal_and_equal_to_pairwise(rng, kernel):
    A = rng.standard_normal((50, 6))
    reps = {"a": A, "b": np.maximum(A @ rng.standard_normal((6, 30)), 0), "c": rng.standard_normal((50, 4))}
    M = Sm.cka_matrix(reps, kernel=kernel)
    assert M.shape == (3, 3)
    np.testing.assert_array_equal(M, M.T)
    np.testing.assert_array_equal(np.diag(M), 1.0)
    names = list(reps)
    for i in range(3):
        for j in range(i + 1, 3):
            assert M[i, j] == pytest.approx(Sm.cka(reps[names[i]], reps[names[j]], kernel=kernel), abs=1e-12)
    Md = Sm.cka_matrix(list(reps.values()), kernel=kernel, debiased=True)
    assert Md[0, 1] == pytest.approx(Sm.cka(reps["a"], reps["b"], kernel=kernel, debiased=True), abs=1e-12)
    Mb = Sm.cka_matrix(reps, kernel=kernel, batch_size=25)
    np.testing.assert_array_equal(np.diag(Mb), 1.0)
    np.testing.assert_array_equal(Mb, Mb.T)


def test_plot_cka_matrix_writes_png(tmp_path, rng):
    M = Sm.cka_matrix([rng.standard_normal((20, 3)) for _ in range(3)])
    fig = Sm.plot_cka_matrix(M, ["x", "y", "z"], path=tmp_path / "cka.png")
    assert (tmp_path / "cka.png").read_bytes()[:4] == b"\x89PNG"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["x", "y", "z"]
    with pytest.raises(ValueError, match="names"):
        Sm.plot_cka_matrix(M, ["x"])


# --- RSA -------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["correlation", "euclidean", "cosine"])
@pytest.mark.parametrize("compare", ["spearman", "pearson"])
def test_rsa_identical_is_one_and_matches_scipy(xy, metric, compare):
    X, Y = xy
    assert Sm.rsa(X, X, metric=metric, compare=compare) == pytest.approx(1.0, abs=1e-12)
    a, b = pdist(X, metric=metric), pdist(Y, metric=metric)
    ref = spearmanr(a, b)[0] if compare == "spearman" else pearsonr(a, b)[0]
    assert Sm.rsa(X, Y, metric=metric, compare=compare) == pytest.approx(ref, abs=1e-12)


# --- bad inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [Sm.cka, Sm.rsa])
def test_bad_inputs_give_clear_errors_naming_the_argument(fn, rng):
    X = rng.standard_normal((10, 3))
    with pytest.raises(ValueError, match="same number of samples"):
        fn(X, rng.standard_normal((9, 3)))
    bad = X.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"Y contains NaN or inf \(rows \[4\]"):
        fn(X, bad)
    with pytest.raises(ValueError, match="X must be 2-dimensional"):
        fn(np.ones(10), X)
    with pytest.raises(ValueError, match="Y is empty"):
        fn(X, np.empty((0, 3)))


def test_cka_argument_errors(rng):
    X = rng.standard_normal((10, 3))
    with pytest.raises(ValueError, match="kernel"):
        Sm.cka(X, X, kernel="poly")
    with pytest.raises(ValueError, match="sigma_frac"):
        Sm.cka(X, X, kernel="rbf", sigma_frac=0)
    with pytest.raises(ValueError, match="batch_size"):
        Sm.cka(X, X, batch_size=3)
    with pytest.raises(ValueError, match="no variance"):
        Sm.cka(X, np.ones((10, 2)))
    with pytest.raises(ValueError, match="at least 4"):
        Sm.cka(X[:3], X[:3], debiased=True)
    with pytest.raises(ValueError, match="empty"):
        Sm.minibatch_cka([])
    with pytest.raises(ValueError, match="at least 4"):
        Sm.minibatch_cka([(X[:3], X[:3])])
