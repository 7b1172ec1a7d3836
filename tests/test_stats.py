"""Mean and Student-t confidence interval across seeds (bioreps.studies.stats.mean_ci), against
hand-computed values."""

import math

import numpy as np
import pytest

from bioreps.studies.stats import mean_ci


def test_three_values_hand_computed():
    # mean 2, s = 1, half-width t_{0.975, 2} * 1 / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    out = mean_ci([1, 2, 3])
    assert out["mean"] == 2.0 and out["std"] == 1.0 and out["n"] == 3 and out["method"] == "t"
    assert out["ci_low"] == pytest.approx(2 - 2.484138, abs=1e-6)
    assert out["ci_high"] == pytest.approx(2 + 2.484138, abs=1e-6)
    assert "note" not in out


def test_other_confidence_and_sample():
    # [0.80, 0.84, 0.82, 0.86]: mean 0.83, s = sqrt(0.002/3) = 0.0258199, 90%: t_{0.95, 3} = 2.353363
    out = mean_ci(np.array([0.80, 0.84, 0.82, 0.86]), confidence=0.90)
    half = 2.353363 * math.sqrt(0.002 / 3) / 2
    assert out["mean"] == pytest.approx(0.83)
    assert out["std"] == pytest.approx(0.0258199, abs=1e-7)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((0.83 - half, 0.83 + half), abs=1e-6)
    assert out["confidence"] == 0.90


def test_one_value_has_a_point_interval_and_a_note():
    out = mean_ci([0.87])
    assert (out["mean"], out["ci_low"], out["ci_high"], out["std"], out["n"]) == (0.87, 0.87, 0.87, 0.0, 1)
    assert "one value" in out["note"]


def test_bad_values_are_refused_by_name():
    with pytest.raises(ValueError, match=r"non-finite values: value 1 is NaN \(non-finite at positions \[1\]"):
        mean_ci([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match=r"value 0 is infinite"):
        mean_ci([float("inf"), 2.0])
    with pytest.raises(ValueError, match="at least one value, got none"):
        mean_ci([])
    with pytest.raises(ValueError, match=r"confidence must be strictly between 0 and 1, got 1.0"):
        mean_ci([1, 2], confidence=1.0)
    with pytest.raises(ValueError, match=r"one-dimensional .* got shape \(2, 2\)"):
        mean_ci([[1, 2], [3, 4]])
    with pytest.raises(TypeError, match="needs numeric values"):
        mean_ci(["a", "b"])


def welch_reference(a, b, confidence=0.95):
    """(low, high, df) of the Welch interval of mean(a) - mean(b), from scipy's own Welch test:
    its statistic gives the standard error, its p-value pins the degrees of freedom (checked
    against the Welch-Satterthwaite formula), and scipy >= 1.11 also gives the interval itself."""
    from scipy import stats

    res = stats.ttest_ind(a, b, equal_var=False)
    diff = float(np.mean(a) - np.mean(b))
    se = abs(diff / res.statistic)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    assert 2 * stats.t.sf(abs(res.statistic), df) == pytest.approx(res.pvalue, rel=1e-9)
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    lo, hi = diff - half, diff + half
    if hasattr(res, "confidence_interval"):  # scipy >= 1.11
        assert res.confidence_interval(confidence) == pytest.approx((lo, hi), rel=1e-9)
    return lo, hi, df


def test_difference_of_two_models_matches_scipys_welch_interval():
    from bioreps.studies.stats import diff_ci

    a, b = [2.37, 2.51, 2.44], [2.32, 2.20, 2.41, 2.29]
    out = diff_ci(a, b)
    lo, hi, df = welch_reference(a, b)  # from scipy's own Welch test, an independent computation
    assert out["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((lo, hi), rel=1e-9)
    assert out["df"] == pytest.approx(df) and out["method"] == "welch"
    assert out["decided"] == (lo > 0 or hi < 0)
    # a clear difference is decided, one inside the seeds' noise is not
    assert diff_ci([3.0, 3.1, 2.9], [1.0, 1.1, 0.9])["decided"] is True
    assert diff_ci([1.0, 1.5, 0.5], [1.1, 0.6, 1.6])["decided"] is False
    # one seed on a side: no interval to judge by
    one = diff_ci([0.9], [0.8, 0.85])
    assert one["decided"] is None and "one value" in one["note"] and one["ci_low"] == one["ci_high"] == one["diff"]
    # no spread at all: the point interval decides by the sign alone
    assert diff_ci([1.0, 1.0], [2.0, 2.0])["decided"] is True and diff_ci([1.0, 1.0], [1.0, 1.0])["decided"] is False
    with pytest.raises(ValueError, match="value 1 is NaN"):
        diff_ci([1.0, float("nan")], [1.0, 2.0])
