"""Prompt sets per trait: the built-in ``generation/prompts/<trait>.json`` files and user files of the same shape.

A prompt file is JSON: ``{"trait": "Aesthetics", "prompts": [{"id": "lake-dawn", "text": "..."}, ...]}``; a prompt
may also be a plain string (its id is then ``p<index>``). The trait must be in the registry (:mod:`cogip.traits`),
because the judge scores every image on that trait.

>>> sets = builtin_prompt_sets(["aesthetics"], limit=2)
>>> [(p.trait, p.id) for p in sets]
[('Aesthetics', 'lake-dawn'), ('Aesthetics', 'ceramic-bowl')]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cogip.traits import get_trait, in_registry_order

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class GenerationPrompt:
    trait: str  # registry name
    id: str  # unique within its trait; used in file names
    text: str
    source: str  # the file it came from


def _builtin_dir():
    return resources.files("generation").joinpath("prompts")


def builtin_prompt_files() -> dict[str, str]:
    """Trait name -> built-in prompt file (shipped as package data), in the registry's trait order."""
    out = {}
    for entry in _builtin_dir().iterdir():
        if entry.name.endswith(".json"):
            out[get_trait(json.loads(entry.read_text())["trait"]).name] = str(entry)
    return {t: out[t] for t in in_registry_order(out)}


def parse_prompt_file(text: str, source: str) -> list[GenerationPrompt]:
    """The prompts of one file's JSON text; a clear ValueError naming ``source`` for anything malformed."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or "trait" not in doc or not isinstance(doc.get("prompts"), list):
        raise ValueError(f"{source}: expected {{\"trait\": ..., \"prompts\": [...]}}")
    try:
        trait = get_trait(doc["trait"]).name
    except KeyError as e:
        raise ValueError(f"{source}: {e.args[0]}") from None
    prompts, seen = [], set()
    for i, p in enumerate(doc["prompts"]):
        if isinstance(p, str):
            p = {"id": f"p{i}", "text": p}
        if not isinstance(p, dict) or not str(p.get("text", "")).strip():
            raise ValueError(f"{source}: prompt {i} needs a non-empty 'text'")
        pid = _SAFE_ID.sub("-", str(p.get("id") or f"p{i}")).strip("-") or f"p{i}"
        if pid in seen:
            raise ValueError(f"{source}: prompt id {pid!r} appears twice")
        seen.add(pid)
        prompts.append(GenerationPrompt(trait, pid, str(p["text"]).strip(), source))
    if not prompts:
        raise ValueError(f"{source}: no prompts")
    return prompts


def load_prompt_file(path: str | Path) -> list[GenerationPrompt]:
    return parse_prompt_file(Path(path).read_text(), str(path))


def builtin_prompt_sets(traits: list[str] | None = None, limit: int | None = None) -> list[GenerationPrompt]:
    """The built-in prompts of ``traits`` (all built-in traits when None), at most ``limit`` per trait."""
    files = builtin_prompt_files()
    names = list(files) if not traits else [get_trait(t).name for t in traits]
    missing = [n for n in names if n not in files]
    if missing:
        raise ValueError(f"no built-in prompt set for {missing}; give one with prompt_files (see generation/prompts/)")
    out = []
    for n in names:
        out.extend(load_prompt_file(files[n])[:limit])
    return out


def collect_prompts(traits: list[str] | None, prompt_files: list[str] | None,
                    limit: int | None) -> list[GenerationPrompt]:
    """User files when given (filtered to ``traits`` if both are set), else the built-in sets; ``limit`` prompts
    per trait at most, in file order."""
    if not prompt_files:
        return builtin_prompt_sets(traits, limit)
    wanted = {get_trait(t).name for t in traits} if traits else None
    out, per_trait = [], {}
    for f in prompt_files:
        for p in load_prompt_file(f):
            if (wanted is None or p.trait in wanted) and (limit is None or per_trait.get(p.trait, 0) < limit):
                per_trait[p.trait] = per_trait.get(p.trait, 0) + 1
                out.append(p)
    lacking = sorted((wanted or set()) - set(per_trait))
    if lacking:
        raise ValueError(f"none of {prompt_files} holds prompts for the trait(s) {lacking}")
    keys = [(p.trait, p.id) for p in out]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise ValueError(f"prompt ids repeat across files for the same trait: {sorted(dup)}")
    return out
