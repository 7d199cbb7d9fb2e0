"""Reward functions by name: ``build_reward_funcs(["distance_gaussian", "format"], sigma_frac=0.1)``.

Each built function carries its registry name as ``__name__``, which is what trl logs as ``rewards/<name>/mean``.
Options are passed to every function that takes them (so ``unparsable_penalty`` applies to all that have one).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from rewards.answer_format import format_reward, label_consistency
from rewards.distance import distance_crps, distance_gaussian, distance_laplace, distance_linear, distance_upstream
from rewards.rank import rank_global

REWARD_FUNCS: dict[str, Callable[..., list[float]]] = {
    "distance_linear": distance_linear,
    "distance_gaussian": distance_gaussian,
    "distance_laplace": distance_laplace,
    "distance_upstream": distance_upstream,
    "distance_crps": distance_crps,
    "format": format_reward,
    "label_consistency": label_consistency,
    "rank_global": rank_global,
}


def _options_of(fn: Callable) -> set[str]:
    return {n for n, p in inspect.signature(fn).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_reward_func(name: str, **options) -> Callable[..., list[float]]:
    """One reward function by name, with those ``options`` it accepts bound (others are ignored)."""
    try:
        fn = REWARD_FUNCS[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; known: {', '.join(REWARD_FUNCS)}") from None
    bound = {k: v for k, v in options.items() if k in _options_of(fn)}

    @functools.wraps(fn)
    def reward(completions, **columns):
        return fn(completions, **{**columns, **bound})

    reward.__name__ = name
    return reward


def build_reward_funcs(names: list[str] | str, **options) -> list[Callable[..., list[float]]]:
    """Reward functions for trl's ``GRPOTrainer(reward_funcs=...)``; ``names`` may be a comma-separated string.
    An option no named function accepts is an error (a typo would otherwise be silently ignored)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    known = set().union(*(_options_of(REWARD_FUNCS[n]) for n in names if n in REWARD_FUNCS)) if names else set()
    unused = set(options) - known
    if unused:
        raise ValueError(f"reward option(s) {sorted(unused)} are taken by none of {names}")
    return [build_reward_func(n, **options) for n in names]
