"""Statistics for the blinded DSA vs DLA reader study: paired tests, agreement and frequencies.

Paired binary reads (e.g. "residual bone artifact present" on the DSA and on the DLA of the same patient) are
compared with the exact McNemar test; paired ordinal scores (image quality, vessel conspicuity) with the
Wilcoxon signed-rank test; inter-reader agreement with Cohen's kappa (two readers, optionally linear or
quadratic weights) and Fleiss' kappa (any fixed number of readers). Frequencies are formatted with the single
product formatter ``dla.stats.metrics.format_frequency`` ("23/62 (37.1%)"). Undefined results are ``None``
with a reason, never NaN. Pure numpy/scipy, no Django.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from dla.stats.metrics import format_frequency

__all__ = [
    "KappaResult",
    "McNemarResult",
    "ReaderStatisticsError",
    "WilcoxonResult",
    "cohen_kappa",
    "fleiss_kappa",
    "frequency",
    "mcnemar_exact",
    "mcnemar_from_pairs",
    "ratings_to_table",
    "wilcoxon_signed_rank",
]


class ReaderStatisticsError(ValueError):
    """Bad input to a reader-study statistic; the message names the problem."""


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ReaderStatisticsError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ReaderStatisticsError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------- McNemar


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test. b: pairs positive on x only; c: positive on y only.

    statistic = min(b, c) (as in statsmodels' exact test); p_value is two-sided, capped at 1.
    """

    b: int
    c: int
    p_value: float
    statistic: int
    note: str = ""


def mcnemar_exact(b: int, c: int) -> McNemarResult:
    """Exact two-sided McNemar test on the discordant counts: p = min(1, 2 * P[Binom(b+c, 1/2) <= min(b, c)]).

    With no discordant pairs (b + c == 0) p = 1.0 and the note says so.
    """
    b = _count(b, "b")
    c = _count(c, "c")
    n = b + c
    k = min(b, c)
    if n == 0:
        return McNemarResult(b, c, 1.0, 0, "no discordant pairs: p = 1")
    p = min(1.0, 2.0 * float(stats.binom.cdf(k, n, 0.5)))
    return McNemarResult(b, c, p, k)


def _bools(values: Sequence[object], name: str) -> np.ndarray:
    out = []
    for v in values:
        if isinstance(v, bool | np.bool_):
            out.append(bool(v))
        elif isinstance(v, int | np.integer) and v in (0, 1):
            out.append(bool(v))
        else:
            raise ReaderStatisticsError(f"{name} must contain booleans, got {v!r}")
    return np.asarray(out, dtype=bool)


def mcnemar_from_pairs(x: Sequence[bool], y: Sequence[bool]) -> McNemarResult:
    """Exact McNemar test from paired binary reads of the same patients (x[i] and y[i] per patient).

    b = #(x True, y False), c = #(x False, y True). Lengths must match and be non-zero.
    """
    if len(x) != len(y):
        raise ReaderStatisticsError(f"paired reads need equal lengths, got {len(x)} and {len(y)}")
    if len(x) == 0:
        raise ReaderStatisticsError("no paired reads")
    xa = _bools(x, "x")
    ya = _bools(y, "y")
    return mcnemar_exact(int(np.count_nonzero(xa & ~ya)), int(np.count_nonzero(~xa & ya)))


# --------------------------------------------------------------------------------------------- Wilcoxon


@dataclass(frozen=True)
class WilcoxonResult:
    """Wilcoxon signed-rank result; unpacks as ``statistic, p_value, n_nonzero``.

    statistic: min(W+, W-) over non-zero differences (scipy's two-sided convention).
    """

    statistic: float
    p_value: float
    n_nonzero: int
    note: str = ""

    def __iter__(self):
        return iter((self.statistic, self.p_value, self.n_nonzero))


MIN_NONZERO_FOR_5PCT = 6
"""With fewer non-zero differences the smallest attainable exact two-sided p is 2 / 2**n >= 0.0625."""


def wilcoxon_signed_rank(x: Sequence[float], y: Sequence[float]) -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test of paired scores x[i] vs y[i] (zero differences dropped, "wilcox").

    Uses scipy.stats.wilcoxon (exact distribution for small samples without ties, normal approximation with
    tie correction otherwise). All-zero differences give statistic 0, p = 1.0 and a note. Fewer than
    MIN_NONZERO_FOR_5PCT non-zero differences are allowed but noted (p cannot reach 0.05).
    Raises ReaderStatisticsError on unequal lengths, empty input or non-finite values.
    """
    if len(x) != len(y):
        raise ReaderStatisticsError(f"paired scores need equal lengths, got {len(x)} and {len(y)}")
    if len(x) == 0:
        raise ReaderStatisticsError("no paired scores")
    try:
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise ReaderStatisticsError("paired scores must be numbers")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise ReaderStatisticsError("paired scores contain non-finite values (NaN/inf)")
    d = xa - ya
    n_nonzero = int(np.count_nonzero(d))
    if n_nonzero == 0:
        return WilcoxonResult(0.0, 1.0, 0, "all paired differences are zero: p = 1")
    res = stats.wilcoxon(xa, ya, zero_method="wilcox", alternative="two-sided")
    note = ""
    if n_nonzero < MIN_NONZERO_FOR_5PCT:
        note = f"only {n_nonzero} non-zero differences: the test cannot reach p < 0.05"
    return WilcoxonResult(float(res.statistic), float(res.pvalue), n_nonzero, note)


# --------------------------------------------------------------------------------------------- kappa


@dataclass(frozen=True)
class KappaResult:
    """A kappa value, or None with ``reason`` when undefined (chance agreement leaves nothing to beat).

    ``float(result)`` gives the value and raises ReaderStatisticsError (with the reason) when undefined.
    """

    value: float | None
    reason: str = ""

    def __float__(self) -> float:
        if self.value is None:
            raise ReaderStatisticsError(f"kappa is undefined: {self.reason}")
        return self.value


def _category_index(values: Sequence[Hashable], categories: list, name: str) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(categories)}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        try:
            out[i] = lookup[v]
        except (KeyError, TypeError):
            raise ReaderStatisticsError(f"{name} contains {v!r}, not among the categories {categories}")
    return out


def cohen_kappa(
    r1: Sequence[Hashable],
    r2: Sequence[Hashable],
    *,
    categories: Sequence[Hashable] | None = None,
    weights: str | None = None,
) -> KappaResult:
    """Cohen's kappa between two readers rating the same items.

    r1, r2: one category per item. categories: the ordered category list (required order for weighted
    kappa; default = sorted union of observed values). weights: None, "linear" (|i-j|) or "quadratic"
    ((i-j)**2) on category positions. kappa = 1 - sum(w * O) / sum(w * E) with O the observed and E the
    chance-expected (outer product of marginals) proportions, w = 1 - identity when unweighted.
    Undefined (value None) when sum(w * E) == 0, e.g. both readers use one and the same category throughout.
    Raises ReaderStatisticsError on unequal lengths, no items, unknown weights or values outside categories.
    """
    if len(r1) != len(r2):
        raise ReaderStatisticsError(f"readers rated different numbers of items: {len(r1)} and {len(r2)}")
    if len(r1) == 0:
        raise ReaderStatisticsError("no rated items")
    if weights not in (None, "linear", "quadratic"):
        raise ReaderStatisticsError(f"unknown weights {weights!r}; use None, 'linear' or 'quadratic'")
    if categories is None:
        try:
            cats = sorted(set(r1) | set(r2))
        except TypeError:
            raise ReaderStatisticsError("mixed-type ratings cannot be ordered; pass categories explicitly")
    else:
        cats = list(categories)
        if len(set(cats)) != len(cats):
            raise ReaderStatisticsError(f"categories contain duplicates: {cats}")
    k = len(cats)
    a = _category_index(r1, cats, "r1")
    b = _category_index(r2, cats, "r2")
    observed = np.bincount(a * k + b, minlength=k * k).reshape(k, k).astype(np.float64) / len(a)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    idx = np.arange(k)
    diff = np.abs(idx[:, None] - idx[None, :]).astype(np.float64)
    if weights is None:
        w = (diff > 0).astype(np.float64)
    elif weights == "linear":
        w = diff
    else:
        w = diff**2
    denominator = float((w * expected).sum())
    if denominator <= 1e-15:
        return KappaResult(None, "chance disagreement is zero (both readers used a single category)")
    return KappaResult(float(1.0 - (w * observed).sum() / denominator))


def ratings_to_table(
    ratings: Sequence[Sequence[Hashable]], categories: Sequence[Hashable] | None = None
) -> np.ndarray:
    """Convert ratings [n_items][n_raters] into an int64 count table [n_items, n_categories].

    categories default to the sorted set of observed ratings (as statsmodels' aggregate_raters); columns
    follow their order. Every item must have the same number of raters.
    """
    rows = [list(r) for r in ratings]
    if not rows:
        raise ReaderStatisticsError("no rated items")
    n_raters = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != n_raters:
            raise ReaderStatisticsError(f"item {i} has {len(r)} ratings, expected {n_raters}")
    if n_raters == 0:
        raise ReaderStatisticsError("items have no ratings")
    if categories is None:
        try:
            cats = sorted({v for r in rows for v in r})
        except TypeError:
            raise ReaderStatisticsError("mixed-type ratings cannot be ordered; pass categories explicitly")
    else:
        cats = list(categories)
    k = len(cats)
    table = np.zeros((len(rows), k), dtype=np.int64)
    for i, r in enumerate(rows):
        table[i] = np.bincount(_category_index(r, cats, f"item {i}"), minlength=k)
    return table


def fleiss_kappa(table: np.ndarray | Sequence[Sequence[int]]) -> KappaResult:
    """Fleiss' kappa from a count table [n_items, n_categories] (every row sums to the same n_raters >= 2).

    kappa = (P_bar - P_e) / (1 - P_e), P_i = (sum_j n_ij^2 - n) / (n (n - 1)), P_e = sum_j p_j^2.
    Undefined (value None) when P_e == 1 (every rating in one category).
    """
    t = np.asarray(table)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ReaderStatisticsError(f"table must be a non-empty 2-D [items, categories] array, got {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        if not np.issubdtype(t.dtype, np.floating) or not np.all(t == np.round(t)):
            raise ReaderStatisticsError("table must contain integer counts")
        t = t.astype(np.int64)
    if (t < 0).any():
        raise ReaderStatisticsError("table contains negative counts")
    row_sums = t.sum(axis=1)
    n = int(row_sums[0])
    if not np.all(row_sums == n):
        raise ReaderStatisticsError(
            f"every item needs the same number of raters; row sums range {row_sums.min()}..{row_sums.max()}"
        )
    if n < 2:
        raise ReaderStatisticsError(f"Fleiss' kappa needs at least 2 raters per item, got {n}")
    tf = t.astype(np.float64)
    n_items = t.shape[0]
    p_j = tf.sum(axis=0) / (n_items * n)
    p_i = ((tf**2).sum(axis=1) - n) / (n * (n - 1))
    p_bar = float(p_i.mean())
    p_e = float((p_j**2).sum())
    if 1.0 - p_e <= 1e-15:
        return KappaResult(None, "all ratings fall in one category: chance agreement is 1")
    return KappaResult(float((p_bar - p_e) / (1.0 - p_e)))


# --------------------------------------------------------------------------------------------- frequency


def frequency(values: Sequence[Hashable], positive: Hashable = True) -> str:
    """Frequency of ``positive`` among ``values`` as "23/62 (37.1%)" (via dla.stats.metrics.format_frequency).

    None values are rejected (drop missing reads explicitly so the denominator is deliberate).
    """
    values = list(values)
    if not values:
        raise ReaderStatisticsError("no values")
    if any(v is None for v in values):
        raise ReaderStatisticsError("values contain None (missing reads); drop them before counting")
    return format_frequency(sum(1 for v in values if v == positive), len(values))
