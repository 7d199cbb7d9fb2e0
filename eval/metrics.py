"""Agreement between model scores and human scores: correlations, errors, bootstrap intervals, paired tests.

Every function takes plain arrays (``pred``, ``human``) of one trait's items. :func:`trait_metrics` bundles them
into the dict that reports, curves and the GRPO callback read.

>>> import numpy as np
>>> round(srcc(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0])), 3)
0.5
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import optimize, stats

# Metrics whose bootstrap interval is computed by default. Not the logistic PLCC: it refits the logistic on every
# resample, which took ~70 s of a ~100 s evaluation of 400 items (1,000 resamples, measured with cProfile); pass
# ``ci_metrics`` to correlations_and_errors to have it.
CI_METRICS = ("srcc", "plcc", "krcc", "mae", "rmse")
HIGHER_IS_BETTER = {"srcc": True, "plcc": True, "plcc_logistic": True, "krcc": True, "mae": False, "rmse": False,
                    "label_accuracy": True}


def _constant(x: np.ndarray) -> bool:
    return len(x) < 2 or float(np.ptp(x)) == 0.0


def srcc(pred: np.ndarray, human: np.ndarray) -> float:
    """Spearman rank correlation (ties get average ranks); NaN when either side is constant."""
    if _constant(pred) or _constant(human):
        return math.nan
    return _pearson(stats.rankdata(pred), stats.rankdata(human))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, float) - np.mean(x), np.asarray(y, float) - np.mean(y)
    # Scaled to a maximum of 1 first, so that tiny spreads (1e-200) do not underflow the sums of squares.
    x, y = x / (np.max(np.abs(x)) or 1.0), y / (np.max(np.abs(y)) or 1.0)
    den = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / den) if den > 0 else math.nan


def plcc(pred: np.ndarray, human: np.ndarray) -> float:
    """Pearson linear correlation of the raw scores."""
    if _constant(pred) or _constant(human):
        return math.nan
    return _pearson(pred, human)


def krcc(pred: np.ndarray, human: np.ndarray) -> float:
    """Kendall rank correlation (tau-b, the tie-corrected form scipy computes)."""
    if _constant(pred) or _constant(human):
        return math.nan
    return float(stats.kendalltau(pred, human).statistic)


def mae(pred: np.ndarray, human: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - human))) if len(pred) else math.nan


def rmse(pred: np.ndarray, human: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, float) - human) ** 2))) if len(pred) else math.nan


# ---------------------------------------------------------------------------------------------------------------
# The 4-parameter logistic of the VQEG quality-assessment protocol: PLCC is computed after mapping the model's
# scores through a monotonic logistic fitted to the human scores, so that a model is not punished for a
# nonlinear-but-monotonic scale.


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``: rises from ``b2`` to ``b1`` around ``b3``."""
    z = np.clip(-(np.asarray(x, float) - b3) / (abs(b4) + 1e-12), -60.0, 60.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def fit_logistic4(pred: np.ndarray, human: np.ndarray, p0: tuple[float, ...] | None = None) -> np.ndarray | None:
    """Least-squares fit of :func:`logistic4` mapping ``pred`` onto ``human``; None when the fit fails."""
    pred, human = np.asarray(pred, float), np.asarray(human, float)
    if len(pred) <= 4:  # four parameters: fewer points than that leave nothing to fit
        return None
    if p0 is None:
        p0 = (float(human.max()), float(human.min()), float(np.mean(pred)), float(np.std(pred)) / 4 or 1.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, pred, human, p0=p0, maxfev=5000)
    except (RuntimeError, ValueError, TypeError, optimize.OptimizeWarning):
        return None
    return params if np.all(np.isfinite(params)) else None


def plcc_logistic(pred: np.ndarray, human: np.ndarray, p0: tuple[float, ...] | None = None) -> float:
    """PLCC between the logistic-mapped model scores and the human scores; falls back to the raw PLCC when the
    fit fails or maps everything to one value."""
    if _constant(pred) or _constant(human):
        return math.nan
    params = fit_logistic4(pred, human, p0)
    if params is None:
        return plcc(pred, human)
    mapped = logistic4(pred, *params)
    return plcc(pred, human) if _constant(mapped) else _pearson(mapped, human)


METRIC_FNS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "srcc": srcc, "plcc": plcc, "plcc_logistic": plcc_logistic, "krcc": krcc, "mae": mae, "rmse": rmse,
}


# ---------------------------------------------------------------------------------------------------------------
# Bootstrap


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (n_boot, n) item indices


def bootstrap_mean_ci(x: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                      groups: Sequence | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``x`` (NaN with fewer than two values, or no resamples).

    With ``groups`` (one label per value) whole groups are resampled: values of one group (the seeds of one prompt)
    move together, and resampling them one by one would give an interval as if they were independent, too narrow.

    >>> x = np.repeat(np.arange(6.0), 4)  # six groups of four equal values
    >>> alone, grouped = bootstrap_mean_ci(x, 2000), bootstrap_mean_ci(x, 2000, groups=np.repeat(np.arange(6), 4))
    >>> bool(grouped[1] - grouped[0] > 1.5 * (alone[1] - alone[0]))
    True
    """
    x = np.asarray(x, float)
    if len(x) < 2 or n_boot < 1:
        return (math.nan, math.nan)
    a = (1 - level) / 2
    if groups is None:
        means = x[_resamples(len(x), n_boot, seed)].mean(axis=1)
    else:
        _, label = np.unique(np.asarray(groups), return_inverse=True)
        sums, counts = np.bincount(label, weights=x), np.bincount(label).astype(float)
        if len(sums) < 2:
            return (math.nan, math.nan)
        idx = _resamples(len(sums), n_boot, seed)  # (n_boot, groups) group indices
        means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson per row of (B, n) arrays; NaN for rows where a side is constant (by its values: centring a constant
    0.1 leaves float residue, which would give a correlation of 1e-16)."""
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(~constant & (den > 0), (x * y).sum(1) / den, np.nan)


def bootstrap_distribution(metric: str, pred: np.ndarray, human: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The metric on every resample ``idx`` (B, n). SRCC, PLCC, MAE and RMSE are vectorised over resamples; KRCC
    and the logistic PLCC loop (the latter refits, warm-started from the full-sample fit)."""
    p, h = np.asarray(pred, float)[idx], np.asarray(human, float)[idx]  # (B, n)
    if metric == "srcc":
        return _row_pearson(stats.rankdata(p, axis=1), stats.rankdata(h, axis=1))
    if metric == "plcc":
        return _row_pearson(p, h)
    if metric == "mae":
        return np.abs(p - h).mean(1)
    if metric == "rmse":
        return np.sqrt(((p - h) ** 2).mean(1))
    if metric == "plcc_logistic":
        full = fit_logistic4(pred, human)
        p0 = None if full is None else tuple(full)
        return np.array([plcc_logistic(a, b, p0) for a, b in zip(p, h, strict=True)])
    fn = METRIC_FNS[metric]
    return np.array([fn(a, b) for a, b in zip(p, h, strict=True)])


def bootstrap_ci(metric: str, pred: np.ndarray, human: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` over items (resampled with replacement)."""
    if len(pred) < 3:
        return (math.nan, math.nan)
    dist = bootstrap_distribution(metric, pred, human, _resamples(len(pred), n_boot, seed))
    dist = dist[np.isfinite(dist)]
    if len(dist) < n_boot // 2:
        return (math.nan, math.nan)
    a = (1 - level) / 2
    lo, hi = np.quantile(dist, [a, 1 - a])
    return float(lo), float(hi)


def paired_bootstrap(metric: str, pred_a: np.ndarray, pred_b: np.ndarray, human: np.ndarray, n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0) -> dict:
    """Compare two models scored on the same items: the same resamples are applied to both, so the item-to-item
    difficulty cancels. Returns the observed difference ``a - b``, its interval and a two-sided bootstrap p-value
    (twice the share of resampled differences on the far side of zero), and whether ``a`` is better."""
    pred_a, pred_b, human = (np.asarray(x, float) for x in (pred_a, pred_b, human))
    if not len(pred_a) == len(pred_b) == len(human):
        raise ValueError("paired comparison needs both models' scores on the same items")
    fn = METRIC_FNS[metric]
    diff = fn(pred_a, human) - fn(pred_b, human)
    idx = _resamples(len(human), n_boot, seed)
    d = bootstrap_distribution(metric, pred_a, human, idx) - bootstrap_distribution(metric, pred_b, human, idx)
    return {"metric": metric, "a": fn(pred_a, human), "b": fn(pred_b, human), **_difference(metric, diff, d, level),
            "n": len(human)}


def _difference(metric: str, diff: float, resampled: np.ndarray, level: float) -> dict:
    """The observed difference ``a - b``, the percentile interval and two-sided p-value of its resampled values
    (twice the share on the far side of zero, resamples of exactly zero counted half to each side: on a few items
    many resamples tie), and whether ``a`` is the better one."""
    d = resampled[np.isfinite(resampled)]
    a = (1 - level) / 2
    if len(d) == 0 or not math.isfinite(diff):
        lo = hi = p = math.nan
    else:
        lo, hi = (float(v) for v in np.quantile(d, [a, 1 - a]))
        ties = np.mean(d == 0) / 2
        p = float(min(1.0, 2 * (min(np.mean(d < 0), np.mean(d > 0)) + ties)))
    better = (diff > 0) == HIGHER_IS_BETTER[metric] if math.isfinite(diff) and diff != 0 else None
    return {"diff": diff, "ci": [lo, hi], "p_value": p, "a_better": better}


def paired_bootstrap_mean_over_groups(metric: str, groups: dict[str, tuple], n_boot: int = 2000,
                                      level: float = 0.95, seed: int = 0, undefined: float | None = 0.0) -> dict:
    """Compare two models by the mean over groups (traits) of ``metric``, each group scored on its own items.

    ``groups`` maps a name to ``(pred_a, pred_b, human)`` on that group's items. Every resample draws items with
    replacement *within* each group, the same items for both models, computes the metric per group and averages
    over groups, so the interval is that of the difference of the two means. A value the metric leaves undefined
    (NaN: SRCC of constant predictions) counts as ``undefined`` (0 by default: a constant ranks nothing), or is
    left out of the mean with ``undefined=None``.

    >>> rng = np.random.default_rng(0)
    >>> h = rng.normal(size=60)
    >>> good, bad = h + rng.normal(scale=0.3, size=60), h + rng.normal(scale=3.0, size=60)
    >>> r = paired_bootstrap_mean_over_groups("srcc", {"x": (good[:30], bad[:30], h[:30]),
    ...                                                "y": (good[30:], bad[30:], h[30:])}, n_boot=500)
    >>> r["ci"][0] > 0 and r["a_better"]
    True
    """
    if not groups:
        raise ValueError("no groups to compare")
    fn = METRIC_FNS[metric]

    def fill(x):
        x = np.asarray(x, float)
        return x if undefined is None else np.where(np.isfinite(x), x, undefined)

    def mean(rows: list) -> np.ndarray:  # rows: one array (or scalar) per group -> mean over groups
        stacked = np.vstack([np.atleast_1d(fill(r)) for r in rows])  # (groups, B)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            return np.nanmean(stacked, axis=0)

    point_a, point_b, dist_a, dist_b, per_group = [], [], [], [], {}
    for k, (name, (pred_a, pred_b, human)) in enumerate(groups.items()):
        pred_a, pred_b, human = (np.asarray(x, float) for x in (pred_a, pred_b, human))
        if not len(pred_a) == len(pred_b) == len(human) or len(human) == 0:
            raise ValueError(f"group {name!r}: a paired comparison needs both models' scores on the same items")
        idx = _resamples(len(human), n_boot, seed + k)  # (n_boot, n) item indices within this group
        point_a.append(fn(pred_a, human))
        point_b.append(fn(pred_b, human))
        dist_a.append(bootstrap_distribution(metric, pred_a, human, idx))
        dist_b.append(bootstrap_distribution(metric, pred_b, human, idx))
        per_group[name] = {"a": point_a[-1], "b": point_b[-1], "n": len(human)}
    a, b = float(mean(point_a)[0]), float(mean(point_b)[0])
    return {"metric": metric, "a": a, "b": b, **_difference(metric, a - b, mean(dist_a) - mean(dist_b), level),
            "groups": per_group, "undefined_as": undefined}


# ---------------------------------------------------------------------------------------------------------------
# Reference lines and collapse


def spread(pred: np.ndarray, human: np.ndarray, collapse_ratio: float = 0.25) -> dict:
    """Prediction spread against human spread. A model whose scores barely vary (std ratio below
    ``collapse_ratio``, or at most two distinct values) has collapsed onto a safe constant: its MAE can look fine
    while it ranks nothing."""
    ps, hs = float(np.std(pred)), float(np.std(human))
    ratio = ps / hs if hs > 0 else math.nan
    distinct = len(np.unique(np.round(pred, 6)))
    return {"pred_std": ps, "human_std": hs, "std_ratio": ratio, "distinct": distinct,
            "collapsed": bool(distinct <= 2 or (math.isfinite(ratio) and ratio < collapse_ratio))}


def label_oracle_srcc(human: np.ndarray, bin_index: Callable[[float], int]) -> float:
    """SRCC of a predictor that knows each item's true label bin and nothing finer: what answering only the
    describe-then-predict label can reach."""
    return srcc(np.array([bin_index(float(h)) for h in human], float), np.asarray(human, float))


def constant_mae(human: np.ndarray, constant: float) -> float:
    """MAE of always answering ``constant`` (the train-set mean): a model must beat this to know anything."""
    return mae(np.full(len(human), constant), np.asarray(human, float))


def correlations_and_errors(pred: np.ndarray, human: np.ndarray, n_boot: int = 1000, seed: int = 0,
                            ci_metrics: tuple[str, ...] = CI_METRICS) -> dict:
    """Every point metric, plus ``<metric>_ci`` for those in ``ci_metrics`` (``n_boot=0`` skips intervals)."""
    pred, human = np.asarray(pred, float), np.asarray(human, float)
    out: dict = {name: fn(pred, human) for name, fn in METRIC_FNS.items()}
    if n_boot:
        for name in ci_metrics:
            out[f"{name}_ci"] = list(bootstrap_ci(name, pred, human, n_boot=n_boot, seed=seed))
    return out
