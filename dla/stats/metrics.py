"""Per-study and cohort metrics for voxel-wise vessel classification (paper: "Statistical Analysis", Table 1).

Following the paper, every labeled voxel of the reference standard (class id != UNLABELED, optionally
inside an anatomical ROI) is scored vessel vs non-vessel; a two-by-two table per patient gives accuracy,
sensitivity (recall), positive predictive value (precision), Dice (F1) and specificity. Cohort rows average
the per-patient values and report a 95 % CI (Student t by default, seeded percentile bootstrap on request),
formatted like the paper ("98.5% [97.6, 99.3]%"). Undefined quantities are ``None`` with a reason, never
NaN. This module also owns the single frequency formatter (``format_frequency``: "23/62 (37.1%)") used by
the artifact and reader-study statistics. Pure numpy/scipy, no Django.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from dla.classes import BONE, LABELED_CLASSES, SOFT_TISSUE, UNLABELED, VESSEL

__all__ = [
    "CLASS_CONFUSION_ORDER",
    "Confusion",
    "MetricsError",
    "PAPER_TABLE1",
    "StudyMetrics",
    "Summary",
    "TABLE1_METRICS",
    "class_confusion",
    "cohort_summary",
    "format_frequency",
    "format_paper_pct",
    "format_pct",
    "PairedTest",
    "paired_difference",
    "paired_tests",
    "study_metrics",
    "table1",
    "vessel_confusion",
]


class MetricsError(ValueError):
    """Bad input to a metrics function; the message names the problem."""


# --------------------------------------------------------------------------------------------- formatting


def format_frequency(n_positive: int, n_total: int, *, decimals: int = 1) -> str:
    """Format a count as ``"23/62 (37.1%)"``; the one frequency formatter of the product.

    The paper writes "37% (23/62)"; we keep count first and one decimal so the numbers can be re-derived.
    Raises MetricsError when ``n_total <= 0`` or ``n_positive`` is outside ``[0, n_total]``.
    """
    if isinstance(n_positive, bool) or isinstance(n_total, bool):
        raise MetricsError("frequency counts must be integers, not booleans")
    if int(n_positive) != n_positive or int(n_total) != n_total:
        raise MetricsError(f"frequency counts must be integers, got {n_positive!r}/{n_total!r}")
    n_positive, n_total = int(n_positive), int(n_total)
    if n_total <= 0:
        raise MetricsError(f"frequency needs a positive total, got {n_total}")
    if not 0 <= n_positive <= n_total:
        raise MetricsError(f"frequency count {n_positive} outside [0, {n_total}]")
    return f"{n_positive}/{n_total} ({100.0 * n_positive / n_total:.{decimals}f}%)"


# --------------------------------------------------------------------------------------------- confusion


@dataclass(frozen=True)
class Confusion:
    """Two-by-two voxel counts for vessel (positive) vs non-vessel (bone + soft tissue)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def __add__(self, other: Confusion) -> Confusion:
        """Pooled counts (voxel-weighted); the paper averages per-patient metrics instead."""
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)


def _evaluation_region(reference: np.ndarray, predicted: np.ndarray, roi_mask: np.ndarray | None):
    """Validate inputs; return (reference values, predicted values) at labeled voxels inside the ROI."""
    reference = np.asarray(reference)
    predicted = np.asarray(predicted)
    if reference.shape != predicted.shape:
        raise MetricsError(f"shape mismatch: reference {reference.shape} vs predicted {predicted.shape}")
    if reference.ndim != 3:
        raise MetricsError(f"label maps must be 3-D [z, y, x], got {reference.ndim}-D {reference.shape}")
    for name, arr in (("reference", reference), ("predicted", predicted)):
        if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
            raise MetricsError(f"{name} must be an integer class-id map (uint8), got dtype {arr.dtype}")
    select = reference != UNLABELED
    if roi_mask is not None:
        roi_mask = np.asarray(roi_mask)
        if roi_mask.shape != reference.shape:
            raise MetricsError(f"shape mismatch: roi_mask {roi_mask.shape} vs reference {reference.shape}")
        if roi_mask.dtype != np.bool_:
            raise MetricsError(f"roi_mask must be boolean, got dtype {roi_mask.dtype}")
        select &= roi_mask
    if not select.any():
        raise MetricsError("no labeled voxels inside the ROI")
    ref = reference[select]
    pred = predicted[select]
    allowed = np.array(LABELED_CLASSES)
    bad_ref = ~np.isin(ref, allowed)
    if bad_ref.any():
        raise MetricsError(f"reference contains unknown class ids {sorted(np.unique(ref[bad_ref]).tolist())}")
    bad_pred = ~np.isin(pred, allowed)
    if bad_pred.any():
        raise MetricsError(
            "predicted contains class ids outside vessel/bone/soft tissue at labeled voxels: "
            f"{sorted(np.unique(pred[bad_pred]).tolist())}"
        )
    return ref, pred


def vessel_confusion(
    reference: np.ndarray, predicted: np.ndarray, roi_mask: np.ndarray | None = None
) -> Confusion:
    """Vessel vs non-vessel two-by-two table for one study.

    reference, predicted: integer (uint8) class-id maps, shape [z, y, x], ids from dla.classes.
    roi_mask: optional bool [z, y, x]; only voxels inside it are scored.
    Only labeled reference voxels (reference != UNLABELED) are scored, as in the paper; the prediction there
    must be a labeled class (vessel, bone or soft tissue). Raises MetricsError on shape/dtype mismatch,
    unknown class ids, or an empty evaluation region ("no labeled voxels inside the ROI").
    """
    ref, pred = _evaluation_region(reference, predicted, roi_mask)
    ref_v = ref == VESSEL
    pred_v = pred == VESSEL
    tp = int(np.count_nonzero(ref_v & pred_v))
    fp = int(np.count_nonzero(~ref_v & pred_v))
    fn = int(np.count_nonzero(ref_v & ~pred_v))
    tn = int(ref_v.size - tp - fp - fn)
    return Confusion(tp=tp, fp=fp, fn=fn, tn=tn)


CLASS_CONFUSION_ORDER = (VESSEL, BONE, SOFT_TISSUE)
"""Row/column order of :func:`class_confusion`."""


def class_confusion(
    reference: np.ndarray, predicted: np.ndarray, roi_mask: np.ndarray | None = None
) -> np.ndarray:
    """3x3 int64 confusion matrix: rows = reference class, columns = predicted class.

    Order is CLASS_CONFUSION_ORDER (vessel, bone, soft tissue). Same inputs, evaluation region and errors as
    :func:`vessel_confusion`.
    """
    ref, pred = _evaluation_region(reference, predicted, roi_mask)
    k = len(CLASS_CONFUSION_ORDER)
    r = np.zeros(ref.shape, dtype=np.int64)
    p = np.zeros(pred.shape, dtype=np.int64)
    for index, class_id in enumerate(CLASS_CONFUSION_ORDER):
        r[ref == class_id] = index
        p[pred == class_id] = index
    return np.bincount(r * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


# --------------------------------------------------------------------------------------------- study metrics


METRIC_NAMES = ("accuracy", "sensitivity", "ppv", "dice", "specificity")


@dataclass(frozen=True)
class StudyMetrics:
    """Per-study metrics from a :class:`Confusion`, as fractions in [0, 1].

    A metric is ``None`` when its denominator is zero; ``reasons[name]`` then says why.
    """

    confusion: Confusion
    accuracy: float | None
    sensitivity: float | None
    ppv: float | None
    dice: float | None
    specificity: float | None
    reasons: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_confusion(cls, confusion: Confusion) -> StudyMetrics:
        c = confusion
        for name in ("tp", "fp", "fn", "tn"):
            value = getattr(c, name)
            if int(value) != value or value < 0:
                raise MetricsError(f"confusion count {name}={value!r} must be a non-negative integer")
        reasons: dict[str, str] = {}

        def ratio(name: str, num: int, den: int, why: str) -> float | None:
            if den == 0:
                reasons[name] = why
                return None
            return num / den

        return cls(
            confusion=c,
            accuracy=ratio("accuracy", c.tp + c.tn, c.total, "no scored voxels"),
            sensitivity=ratio("sensitivity", c.tp, c.tp + c.fn, "no reference vessel voxels (TP + FN = 0)"),
            ppv=ratio("ppv", c.tp, c.tp + c.fp, "no predicted vessel voxels (TP + FP = 0)"),
            dice=ratio("dice", 2 * c.tp, 2 * c.tp + c.fp + c.fn, "no vessel in reference or prediction"),
            specificity=ratio(
                "specificity", c.tn, c.tn + c.fp, "no reference non-vessel voxels (TN + FP = 0)"
            ),
            reasons=reasons,
        )


def study_metrics(
    reference: np.ndarray, predicted: np.ndarray, roi_mask: np.ndarray | None = None
) -> StudyMetrics:
    """Convenience: :func:`vessel_confusion` followed by :meth:`StudyMetrics.from_confusion`."""
    return StudyMetrics.from_confusion(vessel_confusion(reference, predicted, roi_mask))


# --------------------------------------------------------------------------------------------- cohort


@dataclass(frozen=True)
class Summary:
    """Cohort summary of per-patient values (same unit as the inputs, fractions for the metrics).

    ``sd`` is the sample SD (ddof=1). ``ci_low``/``ci_high`` are None for a single patient. ``method`` is
    "t" or "bootstrap"; ``note`` explains missing CIs and ignored (None) values, or is "".
    """

    n: int
    mean: float
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    method: str
    note: str
    confidence: float = 0.95


_BOOT_CHUNK_ELEMENTS = 2_000_000


def _clean(values: Sequence[float | None], what: str) -> tuple[np.ndarray, int]:
    kept: list[float] = []
    n_missing = 0
    for v in values:
        if v is None:
            n_missing += 1
            continue
        if isinstance(v, bool):
            raise MetricsError(f"{what} must be numbers, got a boolean")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise MetricsError(f"{what} must be numbers or None, got {v!r}")
        if not math.isfinite(f):
            raise MetricsError(f"{what} contain a non-finite value ({f}); use None for undefined values")
        kept.append(f)
    return np.asarray(kept, dtype=np.float64), n_missing


def _summarize(
    arr: np.ndarray,
    n_missing: int,
    *,
    ci: str,
    confidence: float,
    n_boot: int,
    seed: int,
    what: str,
    bounds: tuple[float, float] | None = None,
) -> Summary:
    if ci not in ("t", "bootstrap"):
        raise MetricsError(f"unknown ci method {ci!r}; use 't' or 'bootstrap'")
    if not 0.0 < confidence < 1.0:
        raise MetricsError(f"confidence must be in (0, 1), got {confidence}")
    notes: list[str] = []
    if n_missing:
        notes.append(f"{n_missing} undefined (None) {what} ignored")
    n = int(arr.size)
    if n == 0:
        raise MetricsError(f"no {what} to summarize" + (f" ({notes[0]})" if notes else ""))
    mean = float(arr.mean())
    if n == 1:
        notes.insert(0, "one patient: no confidence interval")
        return Summary(1, mean, None, None, None, ci, "; ".join(notes), confidence)
    sd = float(arr.std(ddof=1))
    if ci == "t":
        half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        if int(n_boot) != n_boot or n_boot < 100:
            raise MetricsError(f"n_boot must be an integer >= 100, got {n_boot!r}")
        rng = np.random.default_rng(seed)
        rows = max(1, _BOOT_CHUNK_ELEMENTS // n)
        means = np.empty(int(n_boot), dtype=np.float64)
        for start in range(0, int(n_boot), rows):
            stop = min(int(n_boot), start + rows)
            idx = rng.integers(0, n, size=(stop - start, n))
            means[start:stop] = arr[idx].mean(axis=1)
        alpha = 1.0 - confidence
        low, high = (float(q) for q in np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0]))
    if bounds is not None and (low < bounds[0] or high > bounds[1]):
        low, high = max(low, bounds[0]), min(high, bounds[1])
        notes.append(f"CI clipped to the metric's range [{bounds[0]:g}, {bounds[1]:g}]")
    return Summary(n, mean, sd, float(low), float(high), ci, "; ".join(notes), confidence)


def cohort_summary(
    values: Sequence[float | None],
    *,
    ci: str = "t",
    confidence: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
    bounds: tuple[float, float] | None = None,
) -> Summary:
    """Mean, SD and CI of per-patient values.

    ``bounds``: the metric's possible range (e.g. (0, 1) for proportions); a CI reaching beyond it (a
    t-interval with few patients) is clipped to it and ``note`` says so.

    ci="t": mean +/- t_{(1+confidence)/2, n-1} * sd / sqrt(n) (the usual reading of the paper's "95% CI").
    ci="bootstrap": percentile interval of ``n_boot`` resampled means, reproducible for a given ``seed``.
    ``None`` values (undefined per-patient metrics) are ignored and counted in ``note``; NaN/inf raise.
    n == 1 gives no CI (note "one patient: no confidence interval"); n == 0 raises MetricsError.
    """
    arr, n_missing = _clean(values, "values")
    return _summarize(
        arr, n_missing, ci=ci, confidence=confidence, n_boot=n_boot, seed=seed, what="values", bounds=bounds
    )


def paired_difference(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    ci: str = "t",
    confidence: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
) -> Summary:
    """Summary of per-patient differences ``a[i] - b[i]`` (e.g. model A vs model B on the same patients).

    Pairs where either value is None are dropped and counted in ``note``. Lengths must match.
    """
    if len(a) != len(b):
        raise MetricsError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    complete = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    n_missing = len(a) - len(complete)
    xa, _ = _clean([x for x, _ in complete], "values")
    xb, _ = _clean([y for _, y in complete], "values")
    return _summarize(
        xa - xb, n_missing, ci=ci, confidence=confidence, n_boot=n_boot, seed=seed, what="pairs"
    )


@dataclass(frozen=True)
class PairedTest:
    """Two-sided paired tests of per-patient values a vs b (same patients).

    n: complete pairs; t_p: paired Student t-test p-value; wilcoxon_p: Wilcoxon signed-rank p-value (zero
    differences dropped, scipy's exact distribution for small n without ties, else the normal approximation);
    either is None when undefined (fewer than two pairs, all differences zero, or, for t, zero variance), with
    the reason in ``note``.
    """

    n: int
    t_statistic: float | None
    t_p: float | None
    wilcoxon_statistic: float | None
    wilcoxon_p: float | None
    note: str


def paired_tests(a: Sequence[float | None], b: Sequence[float | None]) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of ``a[i]`` vs ``b[i]``; pairs with a None are dropped.

    Lengths must match (MetricsError otherwise); NaN/inf raise MetricsError as in :func:`cohort_summary`.
    """
    if len(a) != len(b):
        raise MetricsError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    complete = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    xa, _ = _clean([x for x, _ in complete], "values")
    xb, _ = _clean([y for _, y in complete], "values")
    n = int(xa.size)
    notes = []
    if len(a) - n:
        notes.append(f"{len(a) - n} incomplete pairs dropped")
    d = xa - xb
    t_stat = t_p = w_stat = w_p = None
    if n < 2:
        notes.insert(0, f"{n} complete pair(s): no test")
    elif not np.any(d != 0):
        notes.insert(0, "all differences are zero: no test")
    else:
        if float(np.ptp(d)) > 1e-12 * max(1.0, float(np.abs(d).max())):  # not a constant difference
            res = stats.ttest_rel(xa, xb)
            t_stat, t_p = float(res.statistic), float(res.pvalue)
        else:
            notes.append("t-test undefined: the differences have zero variance")
        res = stats.wilcoxon(xa, xb, zero_method="wilcox")
        w_stat, w_p = float(res.statistic), float(res.pvalue)
    return PairedTest(n, t_stat, t_p, w_stat, w_p, "; ".join(notes))


# --------------------------------------------------------------------------------------------- Table 1

TABLE1_METRICS = ("sensitivity", "ppv", "dice", "accuracy")
"""Metric columns of the paper's Table 1, in the paper's order."""

PAPER_TABLE1: dict[str, dict[str, object]] = {
    "Validation": {
        "n": 8,
        "sensitivity": (97.8, 96.9, 98.7),
        "ppv": (97.2, 96.4, 98.1),
        "dice": (97.5, 97.0, 98.0),
        "accuracy": (98.4, 98.0, 98.7),
    },
    "Testing": {
        "n": 62,
        "sensitivity": (98.5, 97.6, 99.3),
        "ppv": (97.6, 96.5, 98.6),
        "dice": (98.0, 97.4, 98.7),
        "accuracy": (98.7, 98.3, 99.1),
    },
}
"""The paper's Table 1 as (mean, ci_low, ci_high) in percent, for side-by-side reporting.

Table 1 is taken as authoritative. Note a discrepancy in the paper: the Results text (and the brief, which
attributes it to the abstract; the abstract itself only quotes accuracy 98.7% [98.3, 99.1]) gives the testing
sensitivity as 97.6% [96.5, 98.6] and PPV as 98.5% [97.6, 99.3], i.e. the two swapped relative to Table 1
(sensitivity 98.5% [97.6, 99.3], PPV 97.6% [96.5, 98.6]). The paper's Table 1 has a training row heading but
gives no training numbers, so none are listed here.
"""


def format_pct(summary: Summary | None, *, decimals: int = 1) -> str:
    """Format a fraction Summary like the paper: ``"98.5% [97.6, 99.3]%"``.

    Without a CI (one patient): ``"98.5% [no CI]"``; ``None`` (metric undefined for the whole cohort):
    ``"n/a"``.
    """
    if summary is None:
        return "n/a"
    mean = f"{100.0 * summary.mean:.{decimals}f}%"
    if summary.ci_low is None or summary.ci_high is None:
        return f"{mean} [no CI]"
    return f"{mean} [{100.0 * summary.ci_low:.{decimals}f}, {100.0 * summary.ci_high:.{decimals}f}]%"


def format_paper_pct(entry: tuple[float, float, float]) -> str:
    """Format a PAPER_TABLE1 (mean, low, high) percent triple the same way as :func:`format_pct`."""
    mean, low, high = entry
    return f"{mean:.1f}% [{low:.1f}, {high:.1f}]%"


def table1(
    rows: dict[str, Sequence[StudyMetrics]],
    *,
    ci: str = "t",
    confidence: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
) -> list[dict[str, object]]:
    """Table 1 rows: ``{"dataset", "n", "sensitivity", "ppv", "dice", "accuracy"}`` per dataset.

    Each metric is a :class:`Summary` over the per-patient values (patients whose metric is undefined are
    ignored and counted in the Summary note), or None when no patient of the dataset defines it. ``n`` is the
    number of patients. When the dataset name matches a PAPER_TABLE1 key, the row also carries
    ``"paper"`` = that entry. Row order follows ``rows``.
    """
    out: list[dict[str, object]] = []
    for dataset, studies in rows.items():
        studies = list(studies)
        if not studies:
            raise MetricsError(f"dataset {dataset!r} has no studies")
        for s in studies:
            if not isinstance(s, StudyMetrics):
                raise MetricsError(f"dataset {dataset!r}: expected StudyMetrics, got {type(s).__name__}")
        row: dict[str, object] = {"dataset": dataset, "n": len(studies)}
        for metric in TABLE1_METRICS:
            values = [getattr(s, metric) for s in studies]
            if all(v is None for v in values):
                row[metric] = None
            else:
                row[metric] = cohort_summary(
                    values, ci=ci, confidence=confidence, n_boot=n_boot, seed=seed, bounds=(0.0, 1.0)
                )
        if dataset in PAPER_TABLE1:
            row["paper"] = PAPER_TABLE1[dataset]
        out.append(row)
    return out
