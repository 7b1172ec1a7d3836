"""Tests of bioreps.analysis.spectrum: eigenspectra, power-law fits, cvPCA, bootstrap CI, plot."""

import numpy as np
import pytest

from bioreps import io
from bioreps.analysis import spectrum as S
from bioreps.data import make_powerlaw


# --- independent references: verbatim copies from github.com/MouseLand/stringer-pachitariu-et-al-2018b,
# python/utils.py (commit 79850dba). Only the PCA import is made optional (scikit-learn is a
# test-only extra); _MinimalPCA below is what sklearn's PCA(n_components).fit computes with the
# full SVD solver, used when scikit-learn is absent.

def get_powerlaw(ss, trange):
    ''' fit exponent to variance curve'''
    logss = np.log(np.abs(ss))
    y = logss[trange][:,np.newaxis]
    trange += 1
    nt = trange.size
    x = np.concatenate((-np.log(trange)[:,np.newaxis], np.ones((nt,1))), axis=1)
    w = 1.0 / trange.astype(np.float32)[:,np.newaxis]
    b = np.linalg.solve(x.T @ (x * w), (w * x).T @ y).flatten()

    allrange = np.arange(0, ss.size).astype(int) + 1
    x = np.concatenate((-np.log(allrange)[:,np.newaxis], np.ones((ss.size,1))), axis=1)
    ypred = np.exp((x * b).sum(axis=1))
    alpha = b[0]
    return alpha,ypred


def cvPCA(X):
    ''' X is 2 x stimuli x neurons '''
    pca = PCA(n_components=min(1024, X.shape[1])).fit(X[0].T)
    u = pca.components_.T
    sv = pca.singular_values_

    xproj = X[0].T @ (u / sv)
    cproj0 = X[0] @ xproj
    cproj1 = X[1] @ xproj
    ss = (cproj0 * cproj1).sum(axis=0)
    return ss


class _MinimalPCA:
    def __init__(self, n_components):
        self.n_components = n_components

    def fit(self, X):
        Xc = X - X.mean(axis=0)
        _, s, vt = np.linalg.svd(Xc, full_matrices=False)
        self.components_ = vt[:self.n_components]
        self.singular_values_ = s[:self.n_components]
        return self


try:
    from sklearn.decomposition import PCA
except ImportError:  # pragma: no cover - depends on the test environment
    PCA = _MinimalPCA


# --- eigenspectrum ---------------------------------------------------------------------------

def test_eigenspectrum_blocked_equals_direct_eigvalsh_of_np_cov(rng):
    X = rng.standard_normal((503, 17)) @ rng.standard_normal((17, 17)) + 100.0  # large offset
    ref = np.linalg.eigvalsh(np.cov(X.T))[::-1]
    ref = np.clip(ref, 0, None) / ref.sum()
    for block_rows in (1, 7, 100, 503, 10_000):
        eigs = S.eigenspectrum(X, block_rows=block_rows)
        np.testing.assert_allclose(eigs, ref, rtol=1e-9, atol=1e-14)
    assert eigs.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diff(eigs) <= 0)
    raw = S.eigenspectrum(X, normalize=False)
    np.testing.assert_allclose(raw, np.linalg.eigvalsh(np.cov(X.T))[::-1], rtol=1e-9)


def test_eigenspectrum_rank_deficient_is_clipped_nonnegative(rng):
    X = rng.standard_normal((10, 40))  # rank 9 covariance in 40 dims
    eigs = S.eigenspectrum(X)
    assert np.all(eigs >= 0) and eigs.sum() == pytest.approx(1.0)
    assert np.all(eigs[9:] < 1e-12)


def test_fewer_samples_than_units_gives_the_covariances_eigenvalues_through_the_gram_matrix(rng, monkeypatch,
                                                                                            tmp_path):
    X = rng.standard_normal((30, 70)) @ np.diag(np.arange(70, 0, -1.0)) + 50.0  # n < d, offset
    ref = np.clip(np.linalg.eigvalsh(np.cov(X.T))[::-1], 0, None)
    for block_rows in (4, 100):
        raw = S.eigenspectrum(X, block_rows=block_rows, normalize=False)
        assert raw.shape == (70,)
        np.testing.assert_allclose(raw[:29], ref[:29], rtol=1e-9)
        assert np.all(raw[29:] < 1e-9 * raw[0])
    path = io.save(tmp_path / "wide.h5", model_kind="test", representations={"test": X.astype(np.float32)})
    np.testing.assert_allclose(S.eigenspectrum(path, split="test", block_rows=7),
                               S.eigenspectrum(X.astype(np.float32).astype(np.float64)), rtol=1e-9, atol=1e-15)
    # the Gram matrix is the path taken (the covariance is never formed)
    monkeypatch.setattr(S, "_covariance", lambda *a, **k: pytest.fail("the d x d covariance was formed"))
    S.eigenspectrum(X)
    monkeypatch.setattr(S, "GRAM_BYTES", 0)  # over the memory bound: the covariance, as before
    with pytest.raises(pytest.fail.Exception, match="covariance was formed"):
        S.eigenspectrum(X)


def test_eigenspectrum_reads_a_representation_lazily_from_file(tmp_path, rng):
    X = (rng.standard_normal((300, 12)) * np.arange(1, 13)).astype(np.float32)
    path = io.save(tmp_path / "m.h5", model_kind="test", representations={"test": X})
    direct = S.eigenspectrum(X.astype(np.float64))
    with io.load(path) as f:
        rep = f.representations["test"]
        np.testing.assert_allclose(S.eigenspectrum(rep, block_rows=64), direct, rtol=1e-9)
        np.testing.assert_allclose(S.eigenspectrum(f, split="test"), direct, rtol=1e-9)
    np.testing.assert_allclose(S.eigenspectrum(path, split="test"), direct, rtol=1e-9)


def test_eigenspectrum_accepts_torch_tensor(rng):
    torch = pytest.importorskip("torch")
    X = rng.standard_normal((50, 6))
    np.testing.assert_allclose(S.eigenspectrum(torch.from_numpy(X)), S.eigenspectrum(X))


@pytest.mark.parametrize("bad, match", [
    (np.ones(5), "2-dimensional"),
    (np.empty((0, 3)), "empty"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
    (np.ones((1, 3)), "at least 2 samples"),
    (np.ones((5, 3)), "no variance"),
])
def test_eigenspectrum_bad_inputs_name_the_argument(bad, match):
    with pytest.raises(ValueError, match=match) as err:
        S.eigenspectrum(bad)
    assert "R" in str(err.value)


# --- power-law fit ---------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.7, 2.0])
def test_powerlaw_alpha_recovers_exact_power_law_to_1e8(alpha):
    n = np.arange(1, 1001, dtype=np.float64)
    eigs = 3.0 * n ** -alpha
    fit = S.powerlaw_alpha(eigs)
    assert fit.alpha == pytest.approx(alpha, abs=1e-8)
    assert fit.intercept == pytest.approx(np.log(3.0), abs=1e-8)
    assert fit.residual < 1e-8
    assert fit.ranks == (11, 500) and fit.n_used == 490 and fit.method == "stringer"
    assert float(fit) == fit.alpha
    np.testing.assert_allclose(fit.predict(n), eigs, rtol=1e-7)


def test_powerlaw_nassar_and_stringer_conventions_on_exact_power_law():
    n = np.arange(1, 801, dtype=np.float64)
    eigs = 5.0 * n ** -1.3
    st = S.powerlaw_alpha(eigs, method="stringer")
    na = S.powerlaw_alpha(eigs, method="nassar")
    assert st.alpha == pytest.approx(1.3, abs=1e-8) and na.alpha == pytest.approx(1.3, abs=1e-8)
    # nassar: spectrum / lambda_1 -> intercept log(1) = 0; half-open [10, 500) -> ranks 10..499
    assert na.intercept == pytest.approx(0.0, abs=1e-8)
    assert st.intercept == pytest.approx(np.log(5.0), abs=1e-8)
    assert na.ranks == (10, 499) and na.n_used == 490
    assert st.ranks == (11, 500) and st.n_used == 490
    np.testing.assert_allclose(na.predict(n), eigs, rtol=1e-7)


def test_powerlaw_window_clipping_conventions():
    eigs = np.arange(1, 101, dtype=np.float64) ** -1.0
    assert S.powerlaw_alpha(eigs).ranks == (11, 98)                       # len - 2
    assert S.powerlaw_alpha(eigs, method="nassar").ranks == (10, 100)     # all eigenvalues
    assert S.powerlaw_alpha(eigs, ranks=(1, 5), method="nassar").ranks == (1, 4)


def test_powerlaw_alpha_matches_verbatim_stringer_get_powerlaw(rng):
    # a noisy, non-power-law spectrum so that the weights matter
    n = np.arange(1, 701, dtype=np.float64)
    ss = n ** -1.1 * np.exp(0.2 * rng.standard_normal(n.size))
    ss = np.sort(ss)[::-1]
    ss /= ss.sum()
    for first, last in ((11, 500), (1, 100), (5, 698)):
        ref_alpha, ypred = get_powerlaw(ss, np.arange(first - 1, last))  # 0-based trange
        fit = S.powerlaw_alpha(ss, ranks=(first, last))
        # the reference rounds its weights to float32; ours are float64
        assert fit.alpha == pytest.approx(ref_alpha, abs=1e-6)
        np.testing.assert_allclose(fit.predict(n), ypred, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_powerlaw_alpha_recovered_from_rotated_gaussian_samples(alpha):
    # d = 200 units, n = 40 d samples; ranks 5..100 lie inside the well-estimated part of the
    # sample spectrum (the top few are noisy, the tail past ~d/2 bends away from the power law
    # because of finite n). Observed |error| < 0.008 over seeds; tolerance 0.03.
    X = make_powerlaw(8000, 200, alpha=alpha, random_state=7)
    eigs = S.eigenspectrum(X)
    assert S.powerlaw_alpha(eigs, ranks=(5, 100)).alpha == pytest.approx(alpha, abs=0.03)


def test_powerlaw_alpha_errors():
    eigs = np.arange(1, 51, dtype=np.float64) ** -1.0
    with pytest.raises(ValueError, match="too few ranks"):
        S.powerlaw_alpha(eigs[:12])                    # window 11..10 after clipping
    with pytest.raises(ValueError, match="too few ranks"):
        S.powerlaw_alpha(eigs, ranks=(20, 21))
    bad = eigs.copy()
    bad[[14, 29]] = [0.0, -1e-3]
    with pytest.raises(ValueError, match=r"non-positive values at ranks \[15, 30\]"):
        S.powerlaw_alpha(bad)
    bad[14] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        S.powerlaw_alpha(bad)
    with pytest.raises(ValueError, match="1-dimensional"):
        S.powerlaw_alpha(eigs[None, :])
    with pytest.raises(ValueError, match="empty"):
        S.powerlaw_alpha(np.array([]))
    with pytest.raises(ValueError, match="method"):
        S.powerlaw_alpha(eigs, method="ols")
    with pytest.raises(ValueError, match="1-based"):
        S.powerlaw_alpha(eigs, ranks=(0, 10))


# --- cvPCA -----------------------------------------------------------------------------------

def _double_centre(X):
    X = X - X.mean(axis=(0, 1))            # each unit over both repeats and all stimuli
    return X - X.mean(axis=2, keepdims=True)  # each stimulus across units (row-centred)


def test_cvpca_matches_verbatim_stringer_cvPCA_on_fixed_data_and_shuffles(rng):
    n_stim, n_units = 60, 80
    signal = rng.standard_normal((n_stim, 20)) @ rng.standard_normal((20, n_units))
    X = np.stack([signal + rng.standard_normal((n_stim, n_units)) for _ in range(2)])
    X = _double_centre(X)  # where the reference's sklearn centring (across units) is a no-op
    ref = cvPCA(X.copy()) / n_stim
    got = S.cvpca(X[0], X[1], n_shuffles=0)
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-10)
    # shuffled: the same flips as shuff_cvPCA, drawn from default_rng(seed) in order
    flips_rng = np.random.default_rng(3)
    ref_ss = []
    for _ in range(4):
        iflip = flips_rng.random(n_stim) > 0.5
        X0 = X.copy()
        X0[0, iflip] = X[1, iflip]
        X0[1, iflip] = X[0, iflip]
        ref_ss.append(cvPCA(X0))
    np.testing.assert_allclose(S.cvpca(X[0], X[1], n_shuffles=4, seed=3),
                               np.mean(ref_ss, axis=0) / n_stim, rtol=1e-8, atol=1e-10)


def test_cvpca_is_unbiased_under_independent_noise_where_plain_pca_is_not():
    rng = np.random.default_rng(11)
    n, d, sigma = 2000, 100, 0.15
    signal = make_powerlaw(n, d, alpha=1.0, random_state=rng)
    r1 = signal + sigma * rng.standard_normal((n, d))
    r2 = signal + sigma * rng.standard_normal((n, d))
    truth = S.eigenspectrum(signal, normalize=False)
    cv = S.cvpca(r1, r2, n_shuffles=5, seed=0)
    plain = S.eigenspectrum(r1, normalize=False)
    head, tail = slice(0, 10), slice(50, 100)
    # plain PCA adds the noise variance (sigma**2) to every eigenvalue: the tail is inflated
    assert np.mean(plain[tail] / truth[tail]) > 1.5
    np.testing.assert_allclose(plain[tail] - truth[tail], sigma ** 2, rtol=0.5)
    # cvPCA estimates the signal spectrum itself
    np.testing.assert_allclose(cv[head], truth[head], rtol=0.08)
    assert np.mean(cv[tail] / truth[tail]) == pytest.approx(1.0, abs=0.15)
    # and so does its exponent
    fit_cv = S.powerlaw_alpha(cv / cv.sum(), ranks=(2, 60))
    fit_plain = S.powerlaw_alpha(plain / plain.sum(), ranks=(2, 60))
    assert fit_cv.alpha == pytest.approx(1.0, abs=0.05)
    assert fit_plain.alpha < 0.85


def test_cvpca_can_be_negative_and_checks_inputs(rng):
    # pure independent noise: no signal, so about half the cross-validated variances are < 0
    cv = S.cvpca(rng.standard_normal((100, 20)), rng.standard_normal((100, 20)), seed=0)
    assert (cv < 0).any()
    with pytest.raises(ValueError, match="same shape"):
        S.cvpca(np.ones((10, 3)), np.ones((9, 3)))
    with pytest.raises(ValueError, match="R2 contains NaN"):
        S.cvpca(rng.standard_normal((10, 3)), np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match="R1 must be 2-dimensional"):
        S.cvpca(np.ones(10), np.ones(10))


# --- bootstrap CI ----------------------------------------------------------------------------

def test_alpha_ci_contains_true_alpha_and_is_reproducible():
    # d = 60, n = 3000, ranks 2..30 (well estimated). A percentile bootstrap interval is not
    # exact: in a check over 8 datasets the 95% interval held the true alpha 7 times.
    X = make_powerlaw(3000, 60, alpha=1.0, random_state=0)
    res = S.alpha_ci(X, ranks=(2, 30), n_boot=60, seed=1)
    assert res.low < res.alpha < res.high
    assert res.low <= 1.0 <= res.high
    assert res.high - res.low < 0.1
    assert res.boots.shape == (60,)
    again = S.alpha_ci(X, ranks=(2, 30), n_boot=60, seed=1)
    np.testing.assert_array_equal(res.boots, again.boots)
    assert (res.low, res.high) == (again.low, again.high)
    other = S.alpha_ci(X, ranks=(2, 30), n_boot=60, seed=2)
    assert not np.array_equal(res.boots, other.boots)
    assert res.alpha == pytest.approx(S.powerlaw_alpha(S.eigenspectrum(X), ranks=(2, 30)).alpha)


def test_alpha_ci_checks_arguments(rng):
    X = rng.standard_normal((50, 5))
    with pytest.raises(ValueError, match="ci"):
        S.alpha_ci(X, ranks=(1, 4), ci=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        S.alpha_ci(X, ranks=(1, 4), n_boot=0)


# --- plot ------------------------------------------------------------------------------------

def test_plot_spectrum_writes_png_and_returns_figure(tmp_path):
    eigs = np.arange(1, 301, dtype=np.float64) ** -1.0
    fit = S.powerlaw_alpha(eigs)
    out = tmp_path / "spectrum.png"
    fig = S.plot_spectrum(eigs, fit=fit, path=out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.lines) == 2  # spectrum and fit
    assert not list(tmp_path.glob(".*tmp*"))


def test_alpha_ci_resamples_are_the_stacked_drawn_rows():
    """Each bootstrap exponent is the exponent of the drawn rows stacked (repeats included),
    fitted over the full data's window: the weighted scatter of the drawn rows and the top
    eigenvalues only change rounding."""
    rng = np.random.default_rng(4)
    n, d = 300, 60
    X = rng.standard_normal((n, d)) * (np.arange(1, d + 1) ** -0.6)
    for method in ("stringer", "nassar"):
        res = S.alpha_ci(X, ranks=(3, 20), n_boot=4, seed=9, method=method)
        draw = np.random.default_rng(9)  # the same generator and draws as alpha_ci
        lo, hi = res.fit.ranks
        window = (lo, hi) if method == "stringer" else (lo, hi + 1)
        for i in range(4):
            counts = draw.multinomial(n, np.full(n, 1.0 / n))
            stacked = np.repeat(X - X.mean(axis=0), counts, axis=0)
            eigs = np.linalg.eigvalsh(np.cov(stacked, rowvar=False, bias=True))[::-1]
            ref = S.powerlaw_alpha(np.clip(eigs, 0, None) / np.clip(eigs, 0, None).sum(), ranks=window,
                                   method=method, cliff=False).alpha
            assert res.boots[i] == pytest.approx(ref, rel=1e-9)
