"""Tests for dla.stats.metrics against sklearn/scipy and hand-computed tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from dla.classes import BONE, SOFT_TISSUE, UNLABELED, VESSEL
from dla.stats.metrics import (
    PAPER_TABLE1,
    TABLE1_METRICS,
    Confusion,
    MetricsError,
    StudyMetrics,
    Summary,
    class_confusion,
    cohort_summary,
    format_frequency,
    format_pct,
    paired_difference,
    study_metrics,
    table1,
    vessel_confusion,
)

SHAPE = (8, 12, 10)


def random_case(rng: np.random.Generator, shape=SHAPE, p_unlabeled=0.3):
    reference = rng.choice(
        [UNLABELED, VESSEL, BONE, SOFT_TISSUE], size=shape, p=[p_unlabeled, 0.3, 0.2, 0.5 - p_unlabeled]
    ).astype(np.uint8)
    # a prediction that mostly agrees with the reference
    noise = rng.choice([VESSEL, BONE, SOFT_TISSUE], size=shape).astype(np.uint8)
    keep = rng.random(shape) < 0.8
    predicted = np.where(keep & (reference != UNLABELED), reference, noise).astype(np.uint8)
    roi = rng.random(shape) < 0.7
    return reference, predicted, roi


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("use_roi", [False, True])
def test_vessel_confusion_and_metrics_match_sklearn(seed, use_roi):
    rng = np.random.default_rng(seed)
    reference, predicted, roi = random_case(rng)
    sel = reference != UNLABELED
    if use_roi:
        sel &= roi
    y_true = reference[sel] == VESSEL
    y_pred = predicted[sel] == VESSEL
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[False, True]).ravel()

    c = vessel_confusion(reference, predicted, roi if use_roi else None)
    assert (c.tp, c.fp, c.fn, c.tn) == (tp, fp, fn, tn)
    assert c.total == sel.sum()

    m = StudyMetrics.from_confusion(c)
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert m.sensitivity == pytest.approx(recall_score(y_true, y_pred))
    assert m.ppv == pytest.approx(precision_score(y_true, y_pred))
    assert m.dice == pytest.approx(f1_score(y_true, y_pred))
    assert m.specificity == pytest.approx(recall_score(~y_true, ~y_pred))
    assert m.reasons == {}


@pytest.mark.parametrize("seed", range(6))
def test_class_confusion_matches_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    reference, predicted, roi = random_case(rng)
    sel = (reference != UNLABELED) & roi
    expected = confusion_matrix(reference[sel], predicted[sel], labels=[VESSEL, BONE, SOFT_TISSUE])
    got = class_confusion(reference, predicted, roi)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    # the vessel 2x2 table is the vessel row/column of the 3x3 matrix
    c = vessel_confusion(reference, predicted, roi)
    assert c.tp == got[0, 0]
    assert c.fn == got[0, 1:].sum()
    assert c.fp == got[1:, 0].sum()
    assert c.tn == got[1:, 1:].sum()


def test_hand_computed_two_by_two():
    # 1x2x5 volume: reference V V V B S ; prediction V V B V S ; plus an unlabeled voxel predicted vessel
    reference = np.array([[[VESSEL, VESSEL, VESSEL, BONE, SOFT_TISSUE], [UNLABELED] * 5]], dtype=np.uint8)
    predicted = np.array([[[VESSEL, VESSEL, BONE, VESSEL, SOFT_TISSUE], [VESSEL] * 5]], dtype=np.uint8)
    c = vessel_confusion(reference, predicted)
    assert c == Confusion(tp=2, fp=1, fn=1, tn=1)
    m = StudyMetrics.from_confusion(c)
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.sensitivity == pytest.approx(2 / 3)
    assert m.ppv == pytest.approx(2 / 3)
    assert m.dice == pytest.approx(4 / 6)
    assert m.specificity == pytest.approx(1 / 2)
    assert study_metrics(reference, predicted) == m


def test_undefined_metrics_are_none_with_reason():
    m = StudyMetrics.from_confusion(Confusion(tp=0, fp=0, fn=0, tn=7))
    assert m.accuracy == 1.0 and m.specificity == 1.0
    for name in ("sensitivity", "ppv", "dice"):
        assert getattr(m, name) is None
        assert m.reasons[name]
    m = StudyMetrics.from_confusion(Confusion(tp=3, fp=0, fn=1, tn=0))
    assert m.specificity is None and "TN + FP" in m.reasons["specificity"]
    assert m.sensitivity == pytest.approx(0.75)


def test_bad_inputs_raise_with_message():
    ref = np.ones((2, 3, 4), np.uint8)
    with pytest.raises(MetricsError, match=r"\(2, 3, 4\).*\(2, 3, 5\)"):
        vessel_confusion(ref, np.ones((2, 3, 5), np.uint8))
    with pytest.raises(MetricsError, match="no labeled voxels inside the ROI"):
        vessel_confusion(ref, ref, np.zeros(ref.shape, bool))
    with pytest.raises(MetricsError, match="no labeled voxels inside the ROI"):
        vessel_confusion(np.zeros_like(ref), ref)
    with pytest.raises(MetricsError, match="roi_mask"):
        vessel_confusion(ref, ref, np.ones((2, 3, 3), bool))
    with pytest.raises(MetricsError, match="dtype"):
        vessel_confusion(ref.astype(np.float32), ref)
    bad = ref.copy()
    bad[0, 0, 0] = 9
    with pytest.raises(MetricsError, match="unknown class ids"):
        class_confusion(bad, ref)
    with pytest.raises(MetricsError, match="predicted contains"):
        class_confusion(ref, np.zeros_like(ref))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_t_interval_matches_scipy(seed, confidence):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 70))
    values = rng.normal(0.97, 0.02, n)
    s = cohort_summary(list(values), confidence=confidence)
    lo, hi = stats.t.interval(confidence, n - 1, loc=values.mean(), scale=stats.sem(values))
    assert s.n == n and s.method == "t" and s.note == ""
    assert s.mean == pytest.approx(values.mean())
    assert s.sd == pytest.approx(values.std(ddof=1))
    assert s.ci_low == pytest.approx(lo) and s.ci_high == pytest.approx(hi)


def test_t_interval_constant_values_is_degenerate():
    s = cohort_summary([0.5, 0.5, 0.5])
    assert (s.ci_low, s.ci_high, s.sd) == (0.5, 0.5, 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_bootstrap_ci_contains_mean_and_is_reproducible(seed):
    rng = np.random.default_rng(seed)
    values = list(rng.normal(0.98, 0.01, int(rng.integers(5, 40))))
    a = cohort_summary(values, ci="bootstrap", n_boot=2000, seed=seed)
    b = cohort_summary(values, ci="bootstrap", n_boot=2000, seed=seed)
    c = cohort_summary(values, ci="bootstrap", n_boot=2000, seed=seed + 1)
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.method == "bootstrap"
    assert a.ci_low < np.mean(values) < a.ci_high
    # percentile bootstrap of the mean is close to the t interval for roughly normal data
    t = cohort_summary(values)
    width_t = t.ci_high - t.ci_low
    assert abs((a.ci_high - a.ci_low) - width_t) < 0.35 * width_t


def test_bootstrap_independent_recomputation():
    values = np.array([0.95, 0.97, 0.99, 0.96, 0.985, 0.975])
    s = cohort_summary(list(values), ci="bootstrap", n_boot=5000, seed=3, confidence=0.9)
    # independent computation: all 6**6 resamples are too many, so compare with a large independent bootstrap
    rng = np.random.default_rng(12345)
    means = values[rng.integers(0, 6, size=(200_000, 6))].mean(axis=1)
    lo, hi = np.quantile(means, [0.05, 0.95])
    assert s.ci_low == pytest.approx(lo, abs=0.002)
    assert s.ci_high == pytest.approx(hi, abs=0.002)


def test_none_values_ignored_and_counted_and_single_patient():
    s = cohort_summary([0.9, None, 0.8, None, 0.7])
    assert s.n == 3 and s.mean == pytest.approx(0.8)
    assert "2 undefined" in s.note
    one = cohort_summary([0.93, None])
    assert one.n == 1 and one.ci_low is None and one.ci_high is None and one.sd is None
    assert "one patient: no confidence interval" in one.note
    assert "1 undefined" in one.note
    assert format_pct(one) == "93.0% [no CI]"


def test_cohort_summary_bad_inputs():
    with pytest.raises(MetricsError, match="no values"):
        cohort_summary([])
    with pytest.raises(MetricsError, match="no values"):
        cohort_summary([None, None])
    with pytest.raises(MetricsError, match="non-finite"):
        cohort_summary([0.5, float("nan")])
    with pytest.raises(MetricsError, match="ci method"):
        cohort_summary([0.5, 0.6], ci="wald")
    with pytest.raises(MetricsError, match="confidence"):
        cohort_summary([0.5, 0.6], confidence=95)


@pytest.mark.parametrize("seed", range(4))
def test_paired_difference(seed):
    rng = np.random.default_rng(seed)
    n = 20
    a = rng.normal(0.98, 0.01, n)
    b = a - rng.normal(0.005, 0.003, n)
    a_list: list = list(a)
    b_list: list = list(b)
    a_list[3] = None
    b_list[7] = None
    keep = np.ones(n, bool)
    keep[[3, 7]] = False
    d = a[keep] - b[keep]
    s = paired_difference(a_list, b_list)
    lo, hi = stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=stats.sem(d))
    assert s.n == 18 and "2 undefined" in s.note
    assert s.mean == pytest.approx(d.mean())
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    with pytest.raises(MetricsError, match="equal lengths"):
        paired_difference([0.1, 0.2], [0.1])


def test_format_pct_and_frequency():
    s = Summary(n=62, mean=0.985, sd=0.01, ci_low=0.976, ci_high=0.993, method="t", note="")
    assert format_pct(s) == "98.5% [97.6, 99.3]%"
    assert format_pct(None) == "n/a"
    assert format_frequency(23, 62) == "23/62 (37.1%)"
    assert format_frequency(0, 5) == "0/5 (0.0%)"
    with pytest.raises(MetricsError, match="positive total"):
        format_frequency(0, 0)
    with pytest.raises(MetricsError, match="outside"):
        format_frequency(7, 5)


def test_paper_table1_constant():
    assert PAPER_TABLE1["Validation"]["n"] == 8 and PAPER_TABLE1["Testing"]["n"] == 62
    # Table 1 (authoritative) vs the Results text: sensitivity and PPV are swapped there
    assert PAPER_TABLE1["Testing"]["sensitivity"] == (98.5, 97.6, 99.3)
    assert PAPER_TABLE1["Testing"]["ppv"] == (97.6, 96.5, 98.6)
    assert PAPER_TABLE1["Testing"]["accuracy"] == (98.7, 98.3, 99.1)
    for row in PAPER_TABLE1.values():
        for metric in TABLE1_METRICS:
            mean, lo, hi = row[metric]
            assert lo < mean < hi


def test_table1_rows():
    rng = np.random.default_rng(7)
    datasets = {}
    for name, n in (("Validation", 8), ("Testing", 30)):
        studies = []
        for _ in range(n):
            tp, fp, fn, tn = (int(v) for v in rng.integers(50, 1000, 4))
            studies.append(StudyMetrics.from_confusion(Confusion(tp, fp, fn, tn)))
        datasets[name] = studies
    # a study without any vessel: sensitivity/dice undefined, ignored in the cohort
    datasets["Testing"].append(StudyMetrics.from_confusion(Confusion(0, 0, 0, 100)))
    rows = table1(datasets)
    assert [r["dataset"] for r in rows] == ["Validation", "Testing"]
    assert rows[1]["n"] == 31
    assert rows[1]["paper"] is PAPER_TABLE1["Testing"]
    for row in rows:
        studies = datasets[row["dataset"]]
        for metric in TABLE1_METRICS:
            vals = np.array([getattr(s, metric) for s in studies if getattr(s, metric) is not None])
            summary = row[metric]
            assert summary.n == vals.size
            assert summary.mean == pytest.approx(vals.mean())
            half = stats.t.ppf(0.975, vals.size - 1) * vals.std(ddof=1) / math.sqrt(vals.size)
            assert summary.ci_high == pytest.approx(vals.mean() + half)
    assert "1 undefined" in rows[1]["sensitivity"].note
    assert rows[1]["accuracy"].n == 31
    only_empty = table1({"Empty": [StudyMetrics.from_confusion(Confusion(0, 0, 0, 5))]})
    assert only_empty[0]["sensitivity"] is None and only_empty[0]["accuracy"].n == 1
    with pytest.raises(MetricsError, match="no studies"):
        table1({"Testing": []})


def test_ci_of_a_proportion_is_clipped_to_its_range_and_says_so():
    from scipy import stats as st

    values = [0.2, 0.95, 0.99]
    raw = cohort_summary(values)
    low, high = st.t.interval(0.95, 2, loc=np.mean(values), scale=st.sem(values))
    assert raw.ci_low == pytest.approx(low) and raw.ci_high == pytest.approx(high) and high > 1
    clipped = cohort_summary(values, bounds=(0.0, 1.0))
    assert clipped.ci_low == pytest.approx(max(low, 0.0)) and clipped.ci_high == 1.0
    assert "clipped" in clipped.note and clipped.mean == raw.mean
