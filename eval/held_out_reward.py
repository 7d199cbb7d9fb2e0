"""Training rewards computed on the eval predictions, so that curves can put held-out reward and held-out
correlation side by side on the same items (a reward that climbs while SRCC does not is being hacked).

Reward functions follow trl's contract: ``fn(completions, **columns) -> list[float | None]``, with conversational
completions ``[[{"role": "assistant", "content": text}], ...]`` and the dataset's columns (``trait``, ``score``,
``score_std``, ``answer``, ``id``) as keyword lists, plus ``prompts``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence

import numpy as np

from eval.predict import Prediction

RewardFn = Callable[..., list]


def reward_columns(predictions: Sequence[Prediction], dataset=None) -> dict[str, list]:
    """The keyword columns passed to reward functions: the dataset's own (minus images) or, without a dataset,
    those the predictions carry."""
    if dataset is not None:
        return {c: list(dataset[c]) for c in dataset.column_names if c not in ("image", "images")}
    return {"id": [p.id for p in predictions], "trait": [p.trait for p in predictions],
            "score": [p.human for p in predictions]}


def held_out_rewards(predictions: Sequence[Prediction], reward_fns: dict[str, RewardFn] | Sequence[RewardFn],
                     dataset=None) -> dict[str, dict]:
    """Mean of each reward over the predictions' texts, overall and per trait; ``None`` rewards (not applicable)
    are left out of the means and counted. Names are the dict keys, or each function's ``__name__``."""
    if not isinstance(reward_fns, dict):
        reward_fns = {getattr(f, "__name__", f"reward_{i}"): f for i, f in enumerate(reward_fns)}
    completions = [[{"role": "assistant", "content": p.text}] for p in predictions]
    cols = reward_columns(predictions, dataset)
    prompts = cols.pop("prompt", None)
    traits = [p.trait for p in predictions]
    out = {}
    for name, fn in reward_fns.items():
        values = fn(completions=completions, prompts=prompts, **cols)
        if len(values) != len(predictions):
            raise ValueError(f"reward {name!r} returned {len(values)} values for {len(predictions)} completions")
        v = np.array([math.nan if x is None else float(x) for x in values])
        res = {"mean": _nanmean(v), "n_none": int(np.isnan(v).sum()), "per_trait": {}}
        for t in dict.fromkeys(traits):
            res["per_trait"][t] = _nanmean(v[[i for i, x in enumerate(traits) if x == t]])
        out[name] = res
    return out


def _nanmean(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def resolve_reward(spec: str, **options) -> tuple[str, RewardFn]:
    """A reward by registry name (``rewards.build_reward_func``, with ``options`` it accepts) or as
    ``module:function``."""
    if ":" in spec:
        module, attr = spec.split(":", 1)
        return attr, getattr(importlib.import_module(module), attr)
    try:
        from rewards import build_reward_func
    except ImportError as e:
        raise ValueError(f"reward {spec!r}: the rewards package is not available; pass module:function") from e
    return spec, build_reward_func(spec, **options)
