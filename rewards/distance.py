"""Rewards for how close the predicted score is to the human score, scaled by each item's own trait.

All follow trl's contract ``fn(completions, trait, score, **columns) -> list[float]`` and return finite numbers on
any text: an answer with no readable score gets ``unparsable_penalty``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rewards.completions import gather, log_reward_stats, parse_completions

# The scale the upstream reward divides by, per trait (it is the range width, except 6 for valence's -3..3).
UPSTREAM_SCALE = {"Aesthetics": 10.0, "Funniness": 10.0, "Emotional_Valence": 6.0, "Memorability": 1.0}


def _distances(completions, trait, score, score_std=None):
    parsed = parse_completions(completions, trait)
    stds = score_std if score_std is not None else [None] * len(parsed)
    return parsed, [
        (t, None if (t is None or p.score is None) else abs(p.score - float(y)), s)
        for (t, p), y, s in zip(parsed, score, stds)
    ]


def distance_linear(completions: Sequence, trait: Sequence[str], score: Sequence[float], *,
                    unparsable_penalty: float = 0.0, log_metric=None, **_) -> list[float]:
    """``1 - |pred - human| / range``, floored at 0.

    >>> distance_linear(["high 7.000"], trait=["Aesthetics"], score=[8.0])
    [0.9]
    """
    parsed, rows = _distances(completions, trait, score)
    rewards = [unparsable_penalty if d is None else max(0.0, 1.0 - d / t.span) for t, d, _ in rows]
    log_reward_stats("distance_linear", rewards, parsed, log_metric)
    return rewards


def _sigma(trait, std, sigma_frac: float, use_score_std: bool, min_sigma_frac: float) -> float:
    if use_score_std and std is not None and math.isfinite(std):
        return max(float(std), min_sigma_frac * trait.span)
    return sigma_frac * trait.span


def distance_gaussian(completions: Sequence, trait: Sequence[str], score: Sequence[float],
                      score_std: Sequence[float | None] | None = None, *, sigma_frac: float = 0.1,
                      use_score_std: bool = True, min_sigma_frac: float = 0.02, unparsable_penalty: float = 0.0,
                      log_metric=None, **_) -> list[float]:
    """``exp(-(d / sigma)^2 / 2)`` with sigma the item's rater spread (``score_std``) where known, else
    ``sigma_frac`` of the trait's range.

    >>> distance_gaussian(["medium 0.600"], trait=["Memorability"], score=[0.6])
    [1.0]
    """
    parsed, rows = _distances(completions, trait, score, score_std)
    rewards = [
        unparsable_penalty if d is None else _gaussian(d / _sigma(t, s, sigma_frac, use_score_std, min_sigma_frac))
        for t, d, s in rows
    ]
    log_reward_stats("distance_gaussian", rewards, parsed, log_metric)
    return rewards


def _gaussian(z: float) -> float:
    """``exp(-z**2 / 2)``; 0 far out, where squaring a huge stated number would overflow."""
    return 0.0 if z > 40.0 else math.exp(-0.5 * z * z)


def distance_laplace(completions: Sequence, trait: Sequence[str], score: Sequence[float], *, scale_frac: float = 0.1,
                     unparsable_penalty: float = 0.0, log_metric=None, **_) -> list[float]:
    """``exp(-d / b)`` with ``b = scale_frac * range``: sharper near the target than the Gaussian, heavier tails.

    >>> distance_laplace(["negative -3.000"], trait=["Emotional_Valence"], score=[-3.0])
    [1.0]
    """
    parsed, rows = _distances(completions, trait, score)
    rewards = [unparsable_penalty if d is None else math.exp(-d / (scale_frac * t.span)) for t, d, _ in rows]
    log_reward_stats("distance_laplace", rewards, parsed, log_metric)
    return rewards


def distance_upstream(completions: Sequence, trait: Sequence[str], score: Sequence[float], *,
                      unparsable_penalty: float = -0.5, log_metric=None, **_) -> list[float]:
    """The CogIP-Bench paper's reward, ``1 - |pred - human| / s`` clipped to [-1, 1] with s = 10, 10, 6, 1 for
    aesthetics, funniness, valence and memorability (the range for other traits), -0.5 when no number parses, but
    scaled by each item's real trait (upstream scaled every trait as aesthetics).

    >>> distance_upstream(["positive 1.000", "no idea"], trait=["Emotional_Valence"] * 2, score=[2.0, 2.0])
    [0.8333333333333334, -0.5]
    """
    parsed, rows = _distances(completions, trait, score)
    rewards = [
        unparsable_penalty if d is None else max(-1.0, min(1.0, 1.0 - d / UPSTREAM_SCALE.get(t.name, t.span)))
        for t, d, _ in rows
    ]
    log_reward_stats("distance_upstream", rewards, parsed, log_metric)
    return rewards


def distance_crps(completions: Sequence, trait: Sequence[str], score: Sequence[float], id: Sequence | None = None,
                  prompts: Sequence | None = None, *, unparsable_penalty: float = -1.0, log_metric=None,
                  **_) -> list[float]:
    """A distance reward that does not pay the policy for false certainty: for completion i of an item whose GRPO
    group (gathered from all processes) holds G completions, ``(c * mean_j |x_i - x_j| - |x_i - y|) / range`` over
    the group's other readable scores x_j, with ``c = (G - 1) / (G - 2)``.

    The plain distance rewards are maximised by answering the single most likely score every time, so an unsure
    policy learns to give the central score to every image (measured: label entropy 1.42 -> 0.75 nats in 200 steps,
    half the spread of its predictions) before it learns anything about the image. Here the expected policy
    gradient, after GRPO subtracts the group's mean reward (which takes back (G - 2) / (G - 1) of the spread term,
    hence ``c``; with G = 2 the spread term cancels altogether), is the gradient of minus the continuous ranked
    probability score ``E|X - y| - E|X - X'| / 2``, a strictly proper scoring rule: its optimum is the calibrated
    distribution of scores, spread exactly as wide as the policy's uncertainty about the image. Completions are
    grouped by item ``id`` (by prompt when there is none); one with no readable score in the trait's range gets
    ``unparsable_penalty`` and is left out of the others' spread.

    >>> distance_crps(["medium 5.000", "high 7.000", "high 7.000"], trait=["Aesthetics"] * 3, score=[6.0] * 3,
    ...               id=["a"] * 3)
    [0.3, 0.1, 0.1]
    """
    parsed = parse_completions(completions, trait)
    if id is not None:
        keys = [str(k) for k in id]
    else:
        keys = [repr(p) for p in (prompts if prompts is not None else [None] * len(parsed))]
    # A score outside the trait's range (infinite ones included) counts as unreadable: it must not widen the spread
    # the others are paid for.
    local = [(k, p.score if t is not None and p.in_range else None) for k, (t, p) in zip(keys, parsed)]
    sizes: dict[str, int] = {}
    readable: dict[str, list[float]] = {}
    for key, pred in gather(local):
        sizes[key] = sizes.get(key, 0) + 1
        if pred is not None:
            readable.setdefault(key, []).append(pred)
    rewards = []
    for (key, pred), (t, _), y in zip(local, parsed, score):
        if pred is None:
            rewards.append(unparsable_penalty)
            continue
        others = list(readable[key])
        others.remove(pred)  # this completion itself
        g = sizes[key]
        c = (g - 1) / (g - 2) if g > 2 else 1.0
        spread = sum(abs(pred - o) for o in others) / len(others) if others else 0.0
        rewards.append((c * spread - abs(pred - float(y))) / t.span)
    log_reward_stats("distance_crps", rewards, parsed, log_metric)
    return rewards
