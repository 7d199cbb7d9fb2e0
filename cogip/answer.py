"""The one answer grammar of cogalign: ``"<label> <score>"``, optionally inside ``<answer>...</answer>``.

Rewards, evaluation and generation judging all parse model text through :func:`parse_answer`, so they can never
disagree about what a completion said.

>>> render_answer("Aesthetics", 8.13)
'very high 8.130'
>>> a = parse_answer("I think <answer>negative -2</answer>", "Emotional_Valence")
>>> a.label, a.score, a.well_formed, a.label_consistent
('negative', -2.0, True, True)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from cogip.traits import Trait, get_trait

# A number as models write it: optional sign (ASCII or Unicode minus), digits, optional decimals; not a piece of a
# longer run of digits and points ("4.7.7", "7.7.70.5", a version or a date is no score; a full stop after it is).
_NUMBER = r"(?<![\d.])[-+\u2212]?(?:\d+(?:\.\d*)?|\.\d+)(?!\.?\d)"
NUMBER_RE = re.compile(_NUMBER)
_TAGGED = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_ONE_BLOCK = re.compile(r"\s*<answer>([^<]*)</answer>\s*", re.IGNORECASE)
# What comes before the scale's top in "7 out of 10" or "7.5/10": that number is not the score.
_SCALE_TOP_BEFORE = re.compile(r"(?:/|\bout\s+of)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedAnswer:
    """What a piece of model text says about one trait.

    ``score`` is set whenever a finite number could be read (even without a label); ``well_formed`` means a label
    of the trait followed by a number; ``label_consistent`` means that label is the bin of its own score.
    """

    label: str | None
    score: float | None
    well_formed: bool
    label_consistent: bool
    in_range: bool = False


_EMPTY = ParsedAnswer(None, None, False, False, False)


@lru_cache(maxsize=256)
def _patterns(labels: tuple[str, ...]) -> tuple[re.Pattern, re.Pattern]:
    # Longest labels first so "very high" wins over "high".
    alts = "|".join(re.escape(lbl).replace(r"\ ", r"\s+") for lbl in sorted(labels, key=len, reverse=True))
    pair = re.compile(rf"(?<![A-Za-z])({alts})\b[\s:=,]*({_NUMBER})", re.IGNORECASE)
    return pair, NUMBER_RE


def _to_float(text: str) -> float | None:
    try:
        value = float(text.replace("\u2212", "-"))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def render_answer(trait: str | Trait, score: float) -> str:
    """The ground-truth answer for ``score``: label of its (rounded) bin and the score with the trait's decimals."""
    t = get_trait(trait)
    if not t.in_range(float(score)):
        raise ValueError(f"{t.name} score {score!r} is outside [{t.low}, {t.high}]")
    s = t.round(score)
    return f"{t.label_for(s)} {s:.{t.decimals}f}"


def _read_pair(t: Trait, m: re.Match | None) -> ParsedAnswer | None:
    """The answer a ``<label> <number>`` match states, or None when there is no match or no finite number."""
    score = _to_float(m.group(2)) if m else None
    if score is None:
        return None
    label = next(lbl for lbl in t.labels if lbl.lower() == " ".join(m.group(1).lower().split()))
    return ParsedAnswer(label, score, True, label == t.label_for(t.round(score)), t.in_range(score))


def parse_answer(text: object, trait: str | Trait, *, exact: bool = False) -> ParsedAnswer:
    """Read label and score from model text. Never raises on any input.

    The last ``<answer>`` block that holds an answer is used when there is one (a trailing empty or cut-off block
    does not hide a complete one before it), else the whole text; inside it, the last ``<label> <number>`` pair
    wins (models that reason first state the answer last). With no pair, the last bare number is kept as the score
    and the answer is not well-formed; a number that tops a scale (the 10 of ``7 out of 10`` or ``7.5/10``) is not
    taken for the score.

    ``exact`` is for ground-truth files: the text must be the pair alone, or the pair alone in one closed
    ``<answer>`` block; anything else is not well-formed.
    """
    if not isinstance(text, str):
        return _EMPTY
    t = get_trait(trait)
    pair_re, num_re = _patterns(t.labels)
    if exact:
        block = _ONE_BLOCK.fullmatch(text)
        return _read_pair(t, pair_re.fullmatch((block.group(1) if block else text).strip())) or _EMPTY
    return next(_answers(text, t, pair_re, num_re), (_EMPTY, None))[0]


def label_start(text: str, trait: str | Trait) -> int | None:
    """Where, in ``text``, the label of the answer :func:`parse_answer` reads begins (None without a label): what
    a model wrote before its answer, such as ``<answer>``, is ``text[:label_start(text, trait)]``."""
    t = get_trait(trait)
    return next(_answers(text, t, *_patterns(t.labels)), (_EMPTY, None))[1]


def _answers(text: str, t: Trait, pair_re: re.Pattern, num_re: re.Pattern):
    """Each answer ``text`` states, with where its label starts (None for a bare number), in the order
    :func:`parse_answer` prefers them."""
    blocks = [(m.group(1), m.start(1)) for m in _TAGGED.finditer(text)]
    for body, offset in reversed(blocks or [(text, 0)]):
        for m in reversed(list(pair_re.finditer(body))):
            if parsed := _read_pair(t, m):
                yield parsed, offset + m.start(1)
        for m in reversed(list(num_re.finditer(body))):
            if _SCALE_TOP_BEFORE.search(body, max(0, m.start() - 16), m.start()):
                continue
            score = _to_float(m.group(0))
            if score is not None:
                yield ParsedAnswer(None, score, False, False, t.in_range(score)), None
