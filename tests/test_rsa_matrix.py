"""rsa_matrix: equal to pairwise rsa, each representation's RDM computed once (also in compare)."""

import numpy as np
import pytest

from bioreps import io
from bioreps.analysis import similarity


def _reps(k=4, n=60, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 8))
    # related representations (mixtures of one base) and a few tied values, so ranks have ties
    return [np.round(base @ rng.standard_normal((8, 5 + i)) + 0.5 * rng.standard_normal((n, 5 + i)), 1)
            for i in range(k)]


def _counting(monkeypatch):
    calls = []
    original = similarity._rdm

    def counted(arr, metric, name):
        calls.append(name)
        return original(arr, metric, name)

    monkeypatch.setattr(similarity, "_rdm", counted)
    return calls


@pytest.mark.parametrize("metric", ["correlation", "euclidean", "cosine"])
@pytest.mark.parametrize("compare", ["spearman", "pearson"])
def test_rsa_matrix_equals_pairwise_rsa(metric, compare):
    reps = _reps()
    M = similarity.rsa_matrix(reps, metric=metric, compare=compare)
    k = len(reps)
    expected = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            expected[i, j] = expected[j, i] = similarity.rsa(reps[i], reps[j], metric=metric, compare=compare)
    assert np.abs(M - expected).max() < 1e-12
    assert 0.2 < M[0, 1] < 0.99      # not a trivial matrix


def test_rsa_matrix_computes_each_rdm_once(monkeypatch):
    calls = _counting(monkeypatch)
    similarity.rsa_matrix({f"m{i}": r for i, r in enumerate(_reps(k=5))})
    assert calls == ["m0", "m1", "m2", "m3", "m4"]   # N, not 2 * N (N - 1) / 2


def test_rsa_matrix_errors_name_the_representation():
    reps = _reps(k=3)
    with pytest.raises(ValueError, match=r"reps\[1\] has 59 samples but reps\[0\] has 60"):
        similarity.rsa_matrix([reps[0], reps[1][:59], reps[2]])
    with pytest.raises(ValueError, match="b's correlation dissimilarities are undefined"):
        similarity.rsa_matrix({"a": reps[0], "b": np.ones((60, 4))})
    with pytest.raises(ValueError, match="compare must be one of"):
        similarity.rsa_matrix(reps, compare="kendall")


def test_compare_files_computes_each_files_rdm_once(tmp_path, monkeypatch):
    from bioreps.studies.report import compare_files

    files = []
    for i, r in enumerate(_reps(k=4, n=50)):
        files.append(tmp_path / f"m{i}.h5")
        io.save(files[-1], model_kind="pixels",
                representations={"test": {"activations": r.astype(np.float32), "labels": np.arange(50) % 5}})
    calls = _counting(monkeypatch)
    res = compare_files(files, plots=False)
    assert len(calls) == 4
    M = np.array(res["rsa_spearman_correlation"])
    reps = [r.astype(np.float32) for r in _reps(k=4, n=50)]
    assert M[1, 3] == pytest.approx(similarity.rsa(reps[1], reps[3]), abs=1e-12)
