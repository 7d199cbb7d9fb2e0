"""``rank_global``: reward a completion for ordering its image correctly against the other images of the batch.

Distance rewards teach absolute error; correlation with people is about order. For each completion i (item a,
predicted score p_i) and each other item b of the same trait in the batch gathered from all processes (reference
prediction q_b = mean parsed score of b's completions; human score y_b), the reward averages how well p_i orders a
against b compared with the humans:

- ``concordance``: 1 if sign(p_i - q_b) = sign(y_a - y_b), 0.5 on a predicted tie, 0 otherwise;
- ``thurstone``: Phi(sign(y_a - y_b) * (p_i - q_b) / (sqrt(2) * sigma)), sigma = ``sigma_frac`` of the range, a smooth
  version that still pays for getting the order right by a wider margin.

Pairs with equal human scores carry no order and are skipped. A completion with no readable score gets
``unparsable_penalty``; an item with no comparable partner gets 0.5 (no information either way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rewards.completions import gather, log_reward_stats, parse_completions


def rank_global(completions: Sequence, trait: Sequence[str], score: Sequence[float], id: Sequence | None = None, *,
                mode: str = "concordance", sigma_frac: float = 0.05, unparsable_penalty: float = 0.0,
                log_metric=None, **_) -> list[float]:
    """Pairwise order agreement with people over the whole (gathered) batch.

    >>> rank_global(["low 4.000", "high 7.000", "very low 1.000"], trait=["Funniness"] * 3, score=[5.0, 6.0, 1.0])
    [1.0, 1.0, 1.0]
    """
    if mode not in ("concordance", "thurstone"):
        raise ValueError(f"rank_global mode must be 'concordance' or 'thurstone', not {mode!r}")
    parsed = parse_completions(completions, trait)
    ids = list(id) if id is not None else list(range(len(parsed)))
    # Scores outside the trait's range count clipped to it, as in evaluation: one "999" would otherwise move its
    # item's mean prediction past every other item.
    local_rows = [(str(i), t.name if t else None, float(y), t.clip(p.score) if t and p.score is not None else None)
                  for i, (t, p), y in zip(ids, parsed, score)]
    # Keys must be unique across processes when ids are missing: tag them with the process rank.
    if id is None:
        import torch.distributed as dist

        r = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        local_rows = [(f"{r}:{k}", *rest) for k, *rest in local_rows]
    rows = gather(local_rows)

    refs: dict[str, list] = {}  # item key -> [trait, human score, sum of predictions, count]
    for key, tname, y, pred in rows:
        ref = refs.setdefault(key, [tname, y, 0.0, 0])
        if pred is not None and math.isfinite(pred):
            ref[2] += pred
            ref[3] += 1
    items = [(k, tn, y, s / n) for k, (tn, y, s, n) in refs.items() if n > 0 and tn is not None]

    rewards = []
    for (key, tname, y, pred), (t, _) in zip(local_rows, parsed):
        if pred is None or t is None:
            rewards.append(unparsable_penalty)
            continue
        sigma = sigma_frac * t.span * math.sqrt(2.0)
        total, n = 0.0, 0
        for k2, tn2, y2, q in items:
            if k2 == key or tn2 != tname or y2 == y:
                continue
            direction = 1.0 if y > y2 else -1.0
            if mode == "concordance":
                diff = direction * (pred - q)
                total += 1.0 if diff > 0 else (0.5 if diff == 0 else 0.0)
            else:
                total += 0.5 * (1.0 + math.erf(direction * (pred - q) / (sigma * math.sqrt(2.0))))
            n += 1
        rewards.append(total / n if n else 0.5)
    log_reward_stats("rank_global", rewards, parsed, log_metric)
    return rewards
