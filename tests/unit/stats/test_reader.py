"""Tests for dla.stats.reader against sklearn/statsmodels and hand-computed cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from dla.stats.metrics import format_frequency
from dla.stats.reader import (
    KappaResult,
    ReaderStatisticsError,
    cohen_kappa,
    fleiss_kappa,
    frequency,
    mcnemar_exact,
    mcnemar_from_pairs,
    ratings_to_table,
    wilcoxon_signed_rank,
)

# --------------------------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize("seed", range(10))
def test_mcnemar_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    x = rng.random(n) < 0.4
    y = np.where(rng.random(n) < 0.7, x, rng.random(n) < 0.5)
    table = np.array([[np.sum(x & y), np.sum(x & ~y)], [np.sum(~x & y), np.sum(~x & ~y)]])
    ref = mcnemar(table, exact=True)
    got = mcnemar_from_pairs(list(x), list(y))
    assert (got.b, got.c) == (table[0, 1], table[1, 0])
    assert got.p_value == pytest.approx(ref.pvalue)
    assert got.statistic == ref.statistic


@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (5, 5), (0, 23), (23, 0), (3, 10), (100, 60)])
def test_mcnemar_exact_hand_and_statsmodels(b, c):
    got = mcnemar_exact(b, c)
    n = b + c
    # direct binomial sum
    k = min(b, c)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    assert got.p_value == pytest.approx(p)
    if n:
        assert got.p_value == pytest.approx(mcnemar([[10, b], [c, 10]], exact=True).pvalue)
    else:
        assert "no discordant" in got.note
    assert mcnemar_exact(c, b).p_value == pytest.approx(got.p_value)


def test_mcnemar_bad_inputs():
    with pytest.raises(ReaderStatisticsError, match="b must be a non-negative integer"):
        mcnemar_exact(-1, 3)
    with pytest.raises(ReaderStatisticsError, match="c must be"):
        mcnemar_exact(1, 2.5)
    with pytest.raises(ReaderStatisticsError, match="equal lengths"):
        mcnemar_from_pairs([True], [True, False])
    with pytest.raises(ReaderStatisticsError, match="booleans"):
        mcnemar_from_pairs([True, "yes"], [True, False])


# --------------------------------------------------------------------------------------------- Wilcoxon


def test_wilcoxon_hand_computed_small_case():
    # differences 1..5 all positive: W+ = 15, W- = 0; exact two-sided p = 2 * (1/32)
    statistic, p, n_nonzero = wilcoxon_signed_rank([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])
    assert statistic == 0.0 and n_nonzero == 5
    assert p == pytest.approx(2 / 32)
    assert "cannot reach p < 0.05" in wilcoxon_signed_rank([1, 2, 3, 4, 5], [0] * 5).note
    # differences (+1, -2, +3, +4, +5, +6): W- = 2; P(W <= 2) counts subsets of 1..6 with sum <= 2:
    # {}, {1}, {2} -> 3 of 64; two-sided p = 6/64
    r = wilcoxon_signed_rank([1, 0, 3, 4, 5, 6], [0, 2, 0, 0, 0, 0])
    assert r.statistic == 2.0 and r.n_nonzero == 6 and r.note == ""
    assert r.p_value == pytest.approx(6 / 64)
    # zero differences are dropped ("wilcox"): adding two ties leaves n_nonzero at 6
    assert wilcoxon_signed_rank([1, 0, 3, 4, 5, 6, 7, 7], [0, 2, 0, 0, 0, 0, 7, 7]).n_nonzero == 6


@pytest.mark.parametrize("seed", range(5))
def test_wilcoxon_symmetry(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 6, 25)
    y = rng.integers(1, 6, 25)
    a = wilcoxon_signed_rank(list(x), list(y))
    b = wilcoxon_signed_rank(list(y), list(x))
    assert a.statistic == pytest.approx(b.statistic)
    assert a.p_value == pytest.approx(b.p_value)
    assert a.n_nonzero == b.n_nonzero == int(np.count_nonzero(x - y))
    assert 0.0 <= a.p_value <= 1.0
    # shifting both readers' scores by a constant changes nothing
    c = wilcoxon_signed_rank(list(x + 10), list(y + 10))
    assert c.p_value == pytest.approx(a.p_value)


def test_wilcoxon_all_zero_and_bad_inputs():
    r = wilcoxon_signed_rank([3, 4, 5], [3, 4, 5])
    assert (r.statistic, r.p_value, r.n_nonzero) == (0.0, 1.0, 0)
    assert "all paired differences are zero" in r.note
    with pytest.raises(ReaderStatisticsError, match="equal lengths"):
        wilcoxon_signed_rank([1, 2], [1])
    with pytest.raises(ReaderStatisticsError, match="no paired scores"):
        wilcoxon_signed_rank([], [])
    with pytest.raises(ReaderStatisticsError, match="non-finite"):
        wilcoxon_signed_rank([1.0, float("nan")], [1.0, 2.0])


# --------------------------------------------------------------------------------------------- kappa


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matches_sklearn(seed, weights):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 120))
    k = int(rng.integers(2, 6))
    r1 = rng.integers(1, k + 1, n)
    r2 = np.where(rng.random(n) < 0.6, r1, rng.integers(1, k + 1, n))
    got = cohen_kappa(list(r1), list(r2), weights=weights)
    assert isinstance(got, KappaResult) and got.reason == ""
    assert got.value == pytest.approx(cohen_kappa_score(r1, r2, weights=weights))
    assert float(got) == got.value
    # explicit categories including an unused one (matches sklearn's labels=)
    cats = list(range(1, k + 2))
    got = cohen_kappa(list(r1), list(r2), categories=cats, weights=weights)
    assert got.value == pytest.approx(cohen_kappa_score(r1, r2, labels=cats, weights=weights))


def test_cohen_kappa_hand_computed_and_strings():
    # 2x2: both yes 20, both no 15, r1 yes/r2 no 5, r1 no/r2 yes 10 (n=50)
    r1 = ["yes"] * 20 + ["no"] * 15 + ["yes"] * 5 + ["no"] * 10
    r2 = ["yes"] * 20 + ["no"] * 15 + ["no"] * 5 + ["yes"] * 10
    po = 35 / 50
    pe = (25 / 50) * (30 / 50) + (25 / 50) * (20 / 50)
    assert cohen_kappa(r1, r2).value == pytest.approx((po - pe) / (1 - pe))


def test_cohen_kappa_undefined_and_bad_inputs():
    undefined = cohen_kappa([2, 2, 2], [2, 2, 2])
    assert undefined.value is None and "single category" in undefined.reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(cohen_kappa_score([2, 2, 2], [2, 2, 2]))  # sklearn gives NaN; we give None
    with pytest.raises(ReaderStatisticsError, match="kappa is undefined"):
        float(undefined)
    assert cohen_kappa([1, 1], [1, 1], weights="quadratic").value is None
    with pytest.raises(ReaderStatisticsError, match="different numbers of items"):
        cohen_kappa([1, 2], [1])
    with pytest.raises(ReaderStatisticsError, match="no rated items"):
        cohen_kappa([], [])
    with pytest.raises(ReaderStatisticsError, match="unknown weights"):
        cohen_kappa([1, 2], [1, 2], weights="cubic")
    with pytest.raises(ReaderStatisticsError, match="not among the categories"):
        cohen_kappa([1, 5], [1, 2], categories=[1, 2, 3])


@pytest.mark.parametrize("seed", range(10))
def test_fleiss_kappa_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(5, 60))
    n_raters = int(rng.integers(2, 7))
    k = int(rng.integers(2, 5))
    truth = rng.integers(0, k, n_items)
    ratings = np.where(
        rng.random((n_items, n_raters)) < 0.6, truth[:, None], rng.integers(0, k, (n_items, n_raters))
    )
    sm_table, sm_cats = aggregate_raters(ratings)
    table = ratings_to_table(ratings.tolist())
    np.testing.assert_array_equal(table, sm_table)
    got = fleiss_kappa(table)
    assert got.value == pytest.approx(sm_fleiss_kappa(sm_table, method="fleiss"))
    # explicit categories with an unused one only adds a zero column and keeps kappa
    cats = list(sm_cats) + [99]
    wide = ratings_to_table(ratings.tolist(), cats)
    assert wide.shape == (n_items, len(cats)) and wide[:, -1].sum() == 0
    assert fleiss_kappa(wide).value == pytest.approx(got.value)


def test_fleiss_two_raters_hand_computed():
    # two raters, 4 items: agree, agree, disagree, agree ; categories a/b
    ratings = [["a", "a"], ["b", "b"], ["a", "b"], ["a", "a"]]
    table = ratings_to_table(ratings, ["a", "b"])
    np.testing.assert_array_equal(table, [[2, 0], [0, 2], [1, 1], [2, 0]])
    p_bar = (1 + 1 + 0 + 1) / 4
    p_a, p_b = 5 / 8, 3 / 8
    pe = p_a**2 + p_b**2
    assert fleiss_kappa(table).value == pytest.approx((p_bar - pe) / (1 - pe))


def test_fleiss_undefined_and_bad_inputs():
    r = fleiss_kappa([[3, 0], [3, 0]])
    assert r.value is None and "one category" in r.reason
    with pytest.raises(ReaderStatisticsError, match="same number of raters"):
        fleiss_kappa([[2, 1], [1, 1]])
    with pytest.raises(ReaderStatisticsError, match="at least 2 raters"):
        fleiss_kappa([[1, 0], [0, 1]])
    with pytest.raises(ReaderStatisticsError, match="negative"):
        fleiss_kappa([[3, -1], [1, 1]])
    with pytest.raises(ReaderStatisticsError, match="2-D"):
        fleiss_kappa([1, 2, 3])
    with pytest.raises(ReaderStatisticsError, match="item 1 has 1 ratings"):
        ratings_to_table([[1, 2], [1]])
    with pytest.raises(ReaderStatisticsError, match="not among the categories"):
        ratings_to_table([[1, 2], [1, 3]], [1, 2])


# --------------------------------------------------------------------------------------------- frequency


def test_frequency_uses_shared_formatter():
    values = [True] * 23 + [False] * 39
    assert frequency(values) == "23/62 (37.1%)" == format_frequency(23, 62)
    assert frequency(["artifact", "clean", "artifact"], "artifact") == "2/3 (66.7%)"
    with pytest.raises(ReaderStatisticsError, match="None"):
        frequency([True, None])
    with pytest.raises(ReaderStatisticsError, match="no values"):
        frequency([])
