"""Rewards for the shape of the answer: the grammar, and a label that agrees with the score."""

from __future__ import annotations

from collections.abc import Sequence

from rewards.completions import log_reward_stats, parse_completions


def format_reward(completions: Sequence, trait: Sequence[str], **kwargs) -> list[float]:
    """1.0 for ``"<label> <score>"`` with a label of the item's trait and a score inside its range, else 0.0.

    >>> format_reward(["very high 8.130", "8.130", "very high 12.000"], trait=["Aesthetics"] * 3)
    [1.0, 0.0, 0.0]
    """
    parsed = parse_completions(completions, trait)
    rewards = [float(p.well_formed and p.in_range) for _, p in parsed]
    log_reward_stats("format", rewards, parsed, kwargs.get("log_metric"))
    return rewards


def label_consistency(completions: Sequence, trait: Sequence[str], **kwargs) -> list[float]:
    """1.0 when the label is the bin of the answer's own score, else 0.0.

    >>> label_consistency(["low 4.000", "high 4.000"], trait=["Funniness"] * 2)
    [1.0, 0.0]
    """
    parsed = parse_completions(completions, trait)
    rewards = [float(p.label_consistent) for _, p in parsed]
    log_reward_stats("label_consistency", rewards, parsed, kwargs.get("log_metric"))
    return rewards
