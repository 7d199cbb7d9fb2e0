"""Metrics against scipy, bootstrap coverage in simulation, the logistic PLCC against a direct fit, scoring policy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from cogip.answer import parse_answer
from eval import metrics as M
from eval.predict import Prediction
from eval.scoring import evaluate

finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=3, max_size=40))
def test_correlations_equal_scipy(pairs):
    x, y = np.array(pairs).T
    for ours, ref in ((M.srcc, lambda a, b: stats.spearmanr(a, b).statistic),
                      (M.plcc, lambda a, b: stats.pearsonr(a, b).statistic),
                      (M.krcc, lambda a, b: stats.kendalltau(a, b).statistic)):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            assert math.isnan(ours(x, y))
            continue
        expected = ref(x, y)
        # scipy's own pearson loses precision on near-degenerate inputs; compare where it is finite.
        if np.isfinite(expected):
            assert ours(x, y) == pytest.approx(expected, abs=1e-7)


def test_errors_and_random_data_against_scipy():
    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y = rng.normal(size=50), rng.normal(size=50)
        y = y + x * rng.uniform(0, 2)
        assert M.srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        assert M.plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
        assert M.krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
        assert M.mae(x, y) == pytest.approx(np.mean(np.abs(x - y)))
        assert M.rmse(x, y) == pytest.approx(math.sqrt(np.mean((x - y) ** 2)))


def test_vectorised_bootstrap_matches_scalar_metrics():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=30), rng.normal(size=30)
    idx = rng.integers(0, 30, size=(5, 30))
    for name in ("srcc", "plcc", "mae", "rmse"):
        fast = M.bootstrap_distribution(name, x, y, idx)
        slow = [M.METRIC_FNS[name](x[i], y[i]) for i in idx]
        np.testing.assert_allclose(fast, slow, atol=1e-12)


def coverage(n_sims: int = 200, n: int = 80, rho: float = 0.6, n_boot: int = 400) -> dict[str, float]:
    """Share of simulations whose 95% interval holds the population value (bivariate normal, known truth)."""
    rng = np.random.default_rng(0)
    truth = {"srcc": 6 / math.pi * math.asin(rho / 2), "plcc": rho,
             # x - y ~ N(0, 2 - 2 rho): E|x - y| = sqrt(2 (2 - 2 rho) / pi)
             "mae": math.sqrt(2 * (2 - 2 * rho) / math.pi), "rmse": math.sqrt(2 - 2 * rho)}
    hits = dict.fromkeys(truth, 0)
    cov = [[1, rho], [rho, 1]]
    for s in range(n_sims):
        x, y = rng.multivariate_normal([0, 0], cov, size=n).T
        for name, value in truth.items():
            lo, hi = M.bootstrap_ci(name, x, y, n_boot=n_boot, seed=s)
            hits[name] += lo <= value <= hi
    return {k: v / n_sims for k, v in hits.items()}


def test_bootstrap_intervals_cover_close_to_95_percent():
    cov = coverage()
    print("bootstrap coverage:", cov)
    for name, c in cov.items():
        # 200 simulations: binomial sd ~1.5 points; percentile intervals run a little narrow at n=80.
        assert 0.88 <= c <= 0.99, (name, c)


def test_logistic_plcc_matches_a_direct_fit():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 10, 200)
    y = M.logistic4(x, 9.0, 1.0, 5.0, 1.2) + rng.normal(0, 0.4, 200)
    ours = M.plcc_logistic(x, y)

    # Direct fit: minimise the squared error of the same 4-parameter curve with a different optimiser.
    def sse(b):
        return float(np.sum((M.logistic4(x, *b) - y) ** 2))

    b = optimize.minimize(sse, [y.max(), y.min(), x.mean(), 1.0], method="Nelder-Mead",
                          options={"maxiter": 20000, "xatol": 1e-10, "fatol": 1e-12}).x
    direct = stats.pearsonr(M.logistic4(x, *b), y).statistic
    assert ours == pytest.approx(direct, abs=1e-4)
    assert ours > M.plcc(x, y)  # the curve is nonlinear: the fit must help
    assert M.fit_logistic4(x, y) == pytest.approx([9.0, 1.0, 5.0, 1.2], abs=0.3)
    # Too few items to fit four parameters: the raw PLCC is reported instead of an error.
    assert M.plcc_logistic(x[:3], y[:3]) == pytest.approx(M.plcc(x[:3], y[:3]))


def test_paired_bootstrap_detects_the_better_model():
    rng = np.random.default_rng(4)
    human = rng.uniform(0, 10, 150)
    good = human + rng.normal(0, 1, 150)
    bad = human + rng.normal(0, 4, 150)
    res = M.paired_bootstrap("srcc", good, bad, human, n_boot=500)
    assert res["a_better"] and res["p_value"] < 0.01 and res["ci"][0] > 0
    same = M.paired_bootstrap("mae", good, good, human, n_boot=200)
    assert same["diff"] == 0 and same["a_better"] is None and same["p_value"] == 1.0
    # Resampled differences of exactly zero count half to each side: 3 of 4 items tie, one is better for a.
    ties = M.paired_bootstrap("mae", np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 3, 6]), np.array([1.0, 2, 3, 4]),
                              n_boot=2000)
    assert ties["ci"][1] == 0 and 0.25 < ties["p_value"] < 0.4  # 0.68 of resamples better, 0.32 tied: p = 0.32
    with pytest.raises(ValueError):
        M.paired_bootstrap("srcc", good[:10], bad, human)


def test_paired_bootstrap_of_a_mean_over_traits_resamples_within_each_trait():
    rng = np.random.default_rng(5)
    groups = {}
    for k, n in enumerate((40, 60, 80)):  # traits of different sizes, on different scales
        human = rng.uniform(0, 10 ** k, n)
        groups[f"t{k}"] = (human + rng.normal(0, 0.2 * 10 ** k, n), human + rng.normal(0, 2 * 10 ** k, n), human)
    res = M.paired_bootstrap_mean_over_groups("srcc", groups, n_boot=400)
    by_trait = {t: M.srcc(a, h) - M.srcc(b, h) for t, (a, b, h) in groups.items()}
    assert res["diff"] == pytest.approx(np.mean(list(by_trait.values())))
    assert res["a_better"] and 0 < res["ci"][0] < res["diff"] < res["ci"][1] and res["p_value"] < 0.01
    assert [g["n"] for g in res["groups"].values()] == [40, 60, 80]
    swapped = M.paired_bootstrap_mean_over_groups("srcc", {t: (b, a, h) for t, (a, b, h) in groups.items()},
                                                  n_boot=400)
    assert swapped["diff"] == pytest.approx(-res["diff"]) and swapped["ci"][1] < 0
    # A model with constant answers has no SRCC: it counts as 0 (the default) or is left out of the mean.
    human = groups["t0"][2]
    const = {"t0": (np.full(40, 5.0), groups["t0"][1], human), "t1": groups["t1"]}
    as_zero = M.paired_bootstrap_mean_over_groups("srcc", const, n_boot=200)
    assert as_zero["a"] == pytest.approx(M.srcc(*groups["t1"][::2]) / 2)
    left_out = M.paired_bootstrap_mean_over_groups("srcc", const, n_boot=200, undefined=None)
    assert left_out["a"] == pytest.approx(M.srcc(*groups["t1"][::2]))
    with pytest.raises(ValueError):
        M.paired_bootstrap_mean_over_groups("srcc", {"t0": (human[:5], human, human)})


def test_spread_flags_collapse_and_reference_lines():
    human = np.linspace(0, 10, 50)
    assert M.spread(np.full(50, 5.0), human)["collapsed"]
    assert not M.spread(human + 0.1, human)["collapsed"]
    assert M.constant_mae(human, 5.0) == pytest.approx(np.mean(np.abs(human - 5.0)))
    assert 0.9 < M.label_oracle_srcc(human, lambda s: int(s // 2)) < 1.0


def _pred(i: int, trait: str, human: float, text: str) -> Prediction:
    parsed = parse_answer(text, trait)
    return Prediction(id=str(i), trait=trait, human=human, text=text, parsed=parsed, score=parsed.score)


def test_unparsable_answers_are_counted_and_scored_by_the_policy():
    humans = [1.0, 3.0, 5.0, 7.0, 9.0, 2.0]
    texts = ["very low 1.5", "very low 2.5", "garbage", "high 7.2", "very high 9.9", "very high 12.0"]
    preds = [_pred(i, "Aesthetics", h, t) for i, (h, t) in enumerate(zip(humans, texts, strict=True))]
    res = evaluate(preds, n_boot=0)
    a = res["traits"]["Aesthetics"]
    assert a["n"] == 6 and a["n_unparsable"] == 1 and a["parse_rate"] == pytest.approx(5 / 6)
    assert a["n_out_of_range"] == 1  # 12.0 clipped to 10
    filled = np.array([1.5, 2.5, 5.0, 7.2, 9.9, 10.0])
    assert a["mae"] == pytest.approx(np.mean(np.abs(filled - humans)))
    assert a["parsed_only"]["n"] == 5
    worst = evaluate(preds, unparsable="worst", n_boot=0)["traits"]["Aesthetics"]
    assert worst["mae"] == pytest.approx(a["mae"] + 5.0 / 6)  # human 5.0 -> scored 0 or 10 (5 away), not 5.0
    assert res["unparsable_policy"] == "midpoint" and "middle" in res["unparsable_policy_text"]
    assert a["label_accuracy"] == pytest.approx(4 / 6)  # 2.5 says very low for human 3.0 (right), garbage wrong
    with pytest.raises(ValueError):
        evaluate(preds, unparsable="drop")


def test_the_train_mean_policy_reaches_the_blindness_check_and_the_comparisons():
    from eval.blindness import movement
    from eval.checkpoint_eval import paired_scores

    preds = [_pred(i, "Aesthetics", h, t) for i, (h, t) in enumerate([(2.0, "low 4.0"), (8.0, "?"), (5.0, "high 7")])]
    means = {"Aesthetics": 6.5}
    assert movement(preds, preds, "train_mean", train_means=means)["Aesthetics"]["mean_abs_shift_of_range"] == 0
    assert paired_scores(preds, preds, "train_mean", means)["Aesthetics"][0] == [4.0, 6.5, 7.0]
    with pytest.raises(ValueError, match="needs the train mean of Aesthetics"):
        paired_scores(preds, preds, "train_mean")


def test_a_trait_whose_answers_are_all_alike_counts_as_zero_in_the_mean():
    good = [_pred(i, "Aesthetics", h, f"medium {h:.1f}") for i, h in enumerate([1.0, 3.0, 5.0, 7.0, 9.0])]
    flat = [_pred(10 + i, "Emotional_Valence", h, "neutral 0.000") for i, h in enumerate([-2.0, -1.0, 0.0, 2.0])]
    overall = evaluate(good + flat, n_boot=0)["overall"]
    assert overall["collapsed_traits"] == ["Emotional_Valence"]
    assert overall["mean_srcc"] == pytest.approx((1.0 + 0.0) / 2)  # not 1.0: the collapse is not left out
    assert overall["mean_label_accuracy"] == pytest.approx((1 / 5 + 1 / 4) / 2)  # defined for both traits


@pytest.mark.slow
def test_bootstrap_coverage_in_a_large_simulation():
    """1,000 simulated data sets of 80 items, 1,000 resamples each (about 40 s): coverage within ~2.5 binomial
    standard errors of 95% for the correlations; percentile intervals of MAE/RMSE run about 1-2 points narrow."""
    cov = coverage(n_sims=1000, n=80, rho=0.6, n_boot=1000)
    print("bootstrap coverage (1000 simulations):", cov)
    assert 0.93 <= cov["srcc"] <= 0.97 and 0.93 <= cov["plcc"] <= 0.97
    assert 0.92 <= cov["mae"] <= 0.97 and 0.92 <= cov["rmse"] <= 0.97


def test_constant_predictions_have_no_correlation_interval():
    human = np.linspace(0.0, 1.0, 50)
    for name in ("plcc", "srcc"):
        assert all(math.isnan(v) for v in M.bootstrap_ci(name, np.full(50, 0.1), human, n_boot=200, seed=0))
