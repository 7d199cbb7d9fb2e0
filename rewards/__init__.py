"""Reward functions in trl's contract ``fn(completions, trait, score, **columns) -> list[float]``, by name."""

from rewards.registry import REWARD_FUNCS, build_reward_func, build_reward_funcs

__all__ = ["REWARD_FUNCS", "build_reward_func", "build_reward_funcs"]
