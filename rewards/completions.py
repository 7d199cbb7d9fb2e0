"""Reading trl completions (plain strings or conversational message lists) through the one answer grammar."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cogip.answer import ParsedAnswer, parse_answer
from cogip.traits import Trait, get_trait, has_trait


def completion_text(completion: object) -> str:
    """The text of one completion: a string, or the content of the last message of a conversational completion."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""
    return ""


def parse_completions(completions: Sequence, traits: Sequence[str]) -> list[tuple[Trait | None, ParsedAnswer]]:
    """Parse each completion for its own item's trait (unknown traits give an unparsed answer, never an error)."""
    out = []
    for c, name in zip(completions, traits):
        trait = get_trait(name) if isinstance(name, str) and has_trait(name) else None
        parsed = parse_answer(completion_text(c), trait) if trait else parse_answer(None, "Aesthetics")
        out.append((trait, parsed))
    return out


def log_reward_stats(name: str, rewards: list[float], parsed: list[tuple[Trait | None, ParsedAnswer]],
                     log_metric: Callable[[str, float], None] | None) -> None:
    """Log the parse-failure rate and the mean reward per trait through trl's ``log_metric`` hook."""
    if log_metric is None or not rewards:
        return
    log_metric(f"rewards/{name}/parse_fail_rate", sum(p.score is None for _, p in parsed) / len(parsed))
    by_trait: dict[str, list[float]] = {}
    for r, (trait, _) in zip(rewards, parsed):
        if trait is not None:
            by_trait.setdefault(trait.name, []).append(r)
    for trait_name, values in by_trait.items():
        log_metric(f"rewards/{name}/{trait_name}", sum(values) / len(values))


def gather(local: list) -> list:
    """All processes' lists, concatenated in rank order (the local list when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, local)
    return [x for part in everyone for x in part]
