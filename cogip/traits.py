"""The trait registry: every perceptual trait cogalign knows, with its score range, label bins and prompt.

Every stage asks this module for ranges, labels and prompts; nothing else hard-codes them.

>>> t = get_trait("aesthetics")
>>> t.name, t.low, t.high, t.label_for(5.0)
('Aesthetics', 0.0, 10.0, 'medium')
>>> get_trait("Emotional_Valence").label_for(0.0)
'neutral'
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class LabelBin:
    """One describe-then-predict label; a score belongs to the last bin whose lower edge it passes.

    ``lower=None`` means unbounded below. ``inclusive`` says whether a score equal to ``lower`` is in the bin: the
    upstream release puts a score on a boundary in the upper bin (``medium 5.000``), except that valence keeps 0 as
    ``neutral`` and starts ``positive`` strictly above it.
    """

    label: str
    lower: float | None = None
    inclusive: bool = True

    def admits(self, score: float) -> bool:
        if self.lower is None:
            return True
        return score >= self.lower if self.inclusive else score > self.lower


@dataclass(frozen=True)
class Trait:
    name: str
    low: float
    high: float
    bins: tuple[LabelBin, ...]
    description: str
    decimals: int = 3
    example: str = ""
    aliases: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"trait {self.name!r}: range [{self.low}, {self.high}] is empty")
        if not self.bins or self.bins[0].lower is not None:
            raise ValueError(f"trait {self.name!r}: the first label bin must be unbounded below (lower: null)")
        lowers = [b.lower for b in self.bins[1:]]
        if any(x is None for x in lowers) or lowers != sorted(lowers):
            raise ValueError(f"trait {self.name!r}: label bin edges must be given in increasing order")

    @property
    def span(self) -> float:
        """Width of the score range (used to scale distances)."""
        return self.high - self.low

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(b.label for b in self.bins)

    def label_for(self, score: float) -> str:
        label = self.bins[0].label
        for b in self.bins[1:]:
            if b.admits(score):
                label = b.label
        return label

    def label_index(self, score: float) -> int:
        return self.labels.index(self.label_for(score))

    def in_range(self, score: float) -> bool:
        return math.isfinite(score) and self.low <= score <= self.high

    def clip(self, score: float) -> float:
        """The score moved into the trait's range (a stated score outside it counts as the nearer end)."""
        return min(max(score, self.low), self.high)

    def round(self, score: float) -> float:
        """The score as answers write it (``decimals`` places, no negative zero)."""
        return round(float(score), self.decimals) + 0.0

    def rules_text(self) -> str:
        """The bins as prompt lines, e.g. ``- low: from 3.5 to below 5``."""
        lines = []
        for b, nxt in zip(self.bins, (*self.bins[1:], None)):
            hi = None if nxt is None else nxt.lower
            start = f"{'from' if b.inclusive else 'above'} {_num(b.lower)}" if b.lower is not None else ""
            if b.lower is None:
                text = f"below {_num(hi)}"
            elif hi == b.lower:
                text = f"exactly {_num(hi)}"
            elif hi is None:
                text = start
            else:
                text = f"{start} to below {_num(hi)}"
            lines.append(f"- {b.label}: {text}")
        return "\n".join(lines)

    @property
    def prompt(self) -> str:
        """The describe-then-predict instruction for this trait (our wording; the bins come from the registry)."""
        example = self.example or f"{self.labels[-1]} {self.high:.{self.decimals}f}"
        return (
            f"Trait: {self.name.replace('_', ' ')}. {self.description}\n"
            f"Rate the image on a scale from {_num(self.low)} to {_num(self.high)}. First name the band the image "
            f"falls in, then give the score. The bands are:\n{self.rules_text()}\n"
            f"Write the score with exactly {self.decimals} decimals. Reply with the band and the score only, "
            f"for example: {example}"
        )

    @property
    def short_prompt(self) -> str:
        """A one-line instruction for tiny models, where every prompt token costs (byte-level tokenizers)."""
        return f"Rate {self.name.replace('_', ' ')} from {_num(self.low)} to {_num(self.high)} as: band score."

    def prompt_text(self, style: str = "full") -> str:
        if style not in ("full", "short"):
            raise ValueError(f"prompt style must be 'full' or 'short', not {style!r}")
        return self.prompt if style == "full" else self.short_prompt


def _num(x: float) -> str:
    return f"{x:g}"


_FIVE_BANDS = ("very low", "low", "medium", "high", "very high")


def _five_bins(edges: tuple[float, float, float, float]) -> tuple[LabelBin, ...]:
    return (LabelBin(_FIVE_BANDS[0]),) + tuple(LabelBin(lbl, e) for lbl, e in zip(_FIVE_BANDS[1:], edges))


BUILTIN_TRAITS: tuple[Trait, ...] = (
    Trait(
        "Aesthetics", 0.0, 10.0, _five_bins((3.5, 5.0, 6.5, 8.0)),
        "How beautiful the picture is as a picture: harmony of its colours, balance of its composition, its light.",
        example="high 7.215",
    ),
    Trait(
        "Funniness", 0.0, 10.0, _five_bins((3.5, 5.0, 6.5, 8.0)),
        "How amusing people find the picture: surprise, absurdity, things that do not belong together.",
        example="low 4.080",
    ),
    Trait(
        "Emotional_Valence", -3.0, 3.0,
        (LabelBin("negative"), LabelBin("neutral", 0.0), LabelBin("positive", 0.0, inclusive=False)),
        "The feeling the picture leaves: unpleasant and gloomy (negative) through neutral to pleasant and warm "
        "(positive).",
        example="positive 2.000",
        aliases=("valence", "emotion"),
    ),
    Trait(
        "Memorability", 0.0, 1.0, _five_bins((0.35, 0.50, 0.65, 0.80)),
        "How likely a person is to remember having seen this picture after one glance.",
        example="medium 0.583",
    ),
)

_REGISTRY: dict[str, Trait] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register_trait(trait: Trait, *, overwrite: bool = False) -> Trait:
    """Add a trait to the registry (its name and aliases become lookup keys)."""
    keys = [_key(trait.name), *(_key(a) for a in trait.aliases)]
    for k in keys:
        if k in _REGISTRY and not overwrite and _REGISTRY[k] != trait:
            raise ValueError(f"trait {k!r} is already registered")
    # A replaced trait loses every key it had (an old alias must not find it), keeping its place in the order.
    replaced = {_REGISTRY[k].name for k in keys if k in _REGISTRY}
    kept = {k: (trait if t.name in replaced else t) for k, t in _REGISTRY.items()
            if t.name not in replaced or k in keys}
    _REGISTRY.clear()
    _REGISTRY.update(kept)
    for k in keys:
        _REGISTRY[k] = trait
    return trait


def get_trait(name: str | Trait) -> Trait:
    """Look a trait up by name or alias (case, spaces and dashes do not matter)."""
    if isinstance(name, Trait):
        return name
    try:
        return _REGISTRY[_key(str(name))]
    except KeyError:
        raise KeyError(f"unknown trait {name!r}; known: {', '.join(trait_names())}") from None


def has_trait(name: str) -> bool:
    return isinstance(name, str) and _key(name) in _REGISTRY


def trait_names() -> list[str]:
    """Registered trait names, built-ins first, each once."""
    return list(dict.fromkeys(t.name for t in _REGISTRY.values()))


def in_registry_order(names: Iterable[str]) -> list[str]:
    """``names`` (each once) in the registry's order, as every table lists traits; unregistered names after those."""
    order = {name: i for i, name in enumerate(trait_names())}
    return sorted(dict.fromkeys(names), key=lambda n: (order.get(n, len(order)), n))


def all_traits() -> list[Trait]:
    return [get_trait(n) for n in trait_names()]


def trait_from_dict(spec: dict) -> Trait:
    """Build a trait from a YAML mapping (see ``configs/traits_example.yaml``)."""
    missing = {"name", "range", "bins", "description"} - set(spec)
    if missing:
        raise ValueError(f"trait spec {spec.get('name', '?')!r} lacks {sorted(missing)}")
    low, high = (float(x) for x in spec["range"])
    bins = []
    for i, b in enumerate(spec["bins"]):
        if "above" in b:
            bins.append(LabelBin(str(b["label"]), float(b["above"]), inclusive=False))
        elif b.get("from") is not None:
            bins.append(LabelBin(str(b["label"]), float(b["from"])))
        elif i == 0:
            bins.append(LabelBin(str(b["label"])))
        else:
            raise ValueError(f"trait {spec['name']!r}: bin {i} ({b.get('label')!r}) needs 'from' or 'above'")
    return Trait(
        name=str(spec["name"]), low=low, high=high, bins=tuple(bins), description=str(spec["description"]),
        decimals=int(spec.get("decimals", 3)), example=str(spec.get("example", "")),
        aliases=tuple(spec.get("aliases", ())),
    )


def traits_file_field():
    """The ``traits_file`` option of every stage's arguments (each calls :func:`load_traits_file` on it first)."""
    return field(default=None, metadata={
        "help": "A YAML file of your own traits (see configs/traits_example.yaml): registered before anything is "
                "read, so that data, rewards and prompts may name them."})


def load_traits_file(path: str | Path | None) -> None:
    """Register the traits of a ``traits_file`` option (None: nothing to do). Registering the same file again, as
    every rank of a launch and every stage of a process do, changes nothing."""
    if path:
        load_traits_yaml(path)


def load_traits_yaml(path: str | Path, *, overwrite: bool = False) -> list[Trait]:
    """Register the user-defined traits listed under ``traits:`` in a YAML file and return them."""
    with open(path) as f:
        try:
            doc = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not YAML: {e}") from None
    specs = doc.get("traits") if isinstance(doc, dict) else None
    if not isinstance(specs, list):
        raise ValueError(f"{path}: expected a top-level 'traits:' list")
    return [register_trait(trait_from_dict(s), overwrite=overwrite) for s in specs]


for _t in BUILTIN_TRAITS:
    register_trait(_t)
