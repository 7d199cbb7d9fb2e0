"""Predictions to per-trait metrics, with an explicit policy for answers that could not be parsed.

Nothing is dropped silently. For every trait the result holds the parse rate and the metrics computed two ways:
on all items, where an unparsable answer is scored by ``unparsable`` (see :data:`UNPARSABLE_POLICIES`), and on the
parsed subset only (``parsed_only``). Scores outside the trait's range are clipped to it and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cogip.traits import Trait, get_trait
from eval import metrics as M
from eval.predict import Prediction, by_trait

UNPARSABLE_POLICIES = {
    "midpoint": "scored as the middle of the trait's range",
    "worst": "scored as the end of the trait's range farthest from the human score (the harshest choice)",
    "train_mean": "scored as the mean human score of the training split for that trait",
}


def readable(pred: Prediction) -> bool:
    """Whether a prediction holds a score of its own (a finite number was parsed from its answer)."""
    return pred.score is not None and math.isfinite(pred.score)


def fill_score(pred: Prediction, trait: Trait, policy: str, train_mean: float | None = None) -> float:
    """The score a prediction counts with: its own (clipped to the range), or the policy's stand-in."""
    if readable(pred):
        return trait.clip(pred.score)
    if policy == "midpoint":
        return (trait.low + trait.high) / 2
    if policy == "worst":
        return trait.low if abs(pred.human - trait.low) > abs(pred.human - trait.high) else trait.high
    if policy == "train_mean":
        if train_mean is None:
            raise ValueError(f"unparsable='train_mean' needs the train mean of {trait.name}")
        return train_mean
    raise ValueError(f"unparsable must be one of {sorted(UNPARSABLE_POLICIES)}, not {policy!r}")


def filled_scores(preds: Sequence[Prediction], trait: Trait, policy: str,
                  train_means: dict[str, float] | None = None) -> list[float]:
    """:func:`fill_score` of each prediction of ``trait``, with the trait's training mean where ``policy`` needs it."""
    mean = (train_means or {}).get(trait.name)
    return [fill_score(p, trait, policy, mean) for p in preds]


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def trait_result(preds: Sequence[Prediction], trait: Trait, unparsable: str = "midpoint",
                 train_mean: float | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    human = np.array([p.human for p in preds], float)
    parsed = np.array([readable(p) for p in preds])
    filled = np.array([fill_score(p, trait, unparsable, train_mean) for p in preds], float)
    res = {"n": len(preds), "n_unparsable": int((~parsed).sum()), "parse_rate": float(parsed.mean()),
           "well_formed_rate": float(np.mean([p.parsed.well_formed for p in preds])),
           "label_consistent_rate": float(np.mean([p.parsed.label_consistent for p in preds])),
           "n_out_of_range": int(sum(p.score is not None and not trait.in_range(p.score) for p in preds)),
           "label_accuracy": float(np.mean([p.parsed.label == trait.label_for(p.human) for p in preds]))}
    res |= M.correlations_and_errors(filled, human, n_boot=n_boot, seed=seed)
    sub = {"n": int(parsed.sum())}
    if parsed.sum() >= 2:
        sub |= M.correlations_and_errors(filled[parsed], human[parsed], n_boot=0)
    res["parsed_only"] = sub
    res["spread"] = M.spread(filled, human)
    res["reference"] = {
        "label_oracle_srcc": M.label_oracle_srcc(human, trait.label_index),
        "train_mean": train_mean,
        "train_mean_mae": None if train_mean is None else M.constant_mae(human, train_mean),
    }
    return res


def evaluate(predictions: Sequence[Prediction], dataset=None, *, unparsable: str = "midpoint",
             train_means: dict[str, float] | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per-trait metrics of ``predictions``; ``dataset`` (optional) is checked to hold the same items in order.

    ``train_means`` (trait -> mean train score) gives the constant-predictor reference line and the
    ``train_mean`` policy. Returns ``{"traits": {name: {...}}, "overall": {...}, "unparsable_policy": ...}``.
    """
    if unparsable not in UNPARSABLE_POLICIES:
        raise ValueError(f"unparsable must be one of {sorted(UNPARSABLE_POLICIES)}, not {unparsable!r}")
    if dataset is not None:
        ids = [str(i) for i in dataset["id"]]
        if ids != [p.id for p in predictions]:
            raise ValueError("predictions and dataset do not hold the same items in the same order")
    train_means = train_means or {}
    traits = {}
    for name, preds in by_trait(predictions).items():
        traits[name] = trait_result(preds, get_trait(name), unparsable, train_means.get(name), n_boot, seed)
    return {"unparsable_policy": unparsable, "unparsable_policy_text": UNPARSABLE_POLICIES[unparsable],
            "decoding": predictions[0].decoding if predictions else None, "traits": traits,
            "overall": overall(traits)}


def overall(traits: dict[str, dict]) -> dict:
    """Unweighted means over traits (each trait counts once, as in the paper's tables) and pooled parse rate.

    A correlation a trait leaves undefined (its predictions all alike) counts as 0 in the mean, as in the paired
    comparison and the demo's summary: left out, a model that collapsed on three traits would be ranked by its fourth
    (and could be picked as the best checkpoint)."""
    def mean_of(key: str, undefined: float | None = None) -> float | None:
        vals = [r.get(key) for r in traits.values()]
        vals = [v if v is not None and math.isfinite(v) else undefined for v in vals]
        vals = [v for v in vals if v is not None]
        return _finite(float(np.mean(vals))) if vals else None

    n = sum(r["n"] for r in traits.values())
    return {"n": n, "n_unparsable": sum(r["n_unparsable"] for r in traits.values()),
            "parse_rate": (sum(r["parse_rate"] * r["n"] for r in traits.values()) / n) if n else None,
            "mean_srcc": mean_of("srcc", 0.0), "mean_plcc": mean_of("plcc", 0.0), "mean_krcc": mean_of("krcc", 0.0),
            "mean_plcc_logistic": mean_of("plcc_logistic", 0.0), "mean_label_accuracy": mean_of("label_accuracy"),
            "collapsed_traits": [t for t, r in traits.items() if r["spread"]["collapsed"]]}


def train_means_of(dataset) -> dict[str, float]:
    """Mean human score per trait of a (training) split."""
    sums: dict[str, list[float]] = {}
    for t, s in zip(dataset["trait"], dataset["score"], strict=True):
        sums.setdefault(get_trait(t).name, []).append(float(s))
    return {t: float(np.mean(v)) for t, v in sums.items()}


def flat_metrics(result: dict, keys: tuple[str, ...] = ("srcc", "plcc", "mae", "parse_rate")) -> dict[str, float]:
    """One flat dict for loggers and the GRPO correlation log: ``{"<Trait>/srcc": ..., "mean_srcc": ...,
    "parse_rate": ...}`` from :func:`evaluate`'s result (undefined values are left out)."""
    flat = {f"{t}/{k}": r[k] for t, r in result["traits"].items() for k in keys
            if r.get(k) is not None and math.isfinite(r[k])}
    ov = result["overall"]
    flat |= {k: ov[k] for k in ("mean_srcc", "mean_plcc", "parse_rate") if ov.get(k) is not None}
    return flat
