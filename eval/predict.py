"""Batched prediction of trait scores with any policy (base model, SFT or GRPO output, LoRA adapter).

Three decodings:

- ``greedy``: the parsed greedy answer.
- ``sample``: ``num_samples`` sampled answers per item; the score is the mean of the parsable ones.
- ``expected``: deterministic, and it uses the whole answer distribution rather than its mode. For each label ``L``
  of the trait, the answer is forced to start with ``L`` (after whatever the greedy answer wrote before its label,
  e.g. ``<answer>``): the label's probability ``P(L)`` is read off the same forward pass, and the number that
  follows is decoded greedily with every digit replaced by its expectation over the ten digit tokens, giving
  ``E[score | L]`` (in the band that holds the 10 of a 0-10 scale, a first digit "1" counts as the start of 10).
  The score is ``sum_L P(L) * E[score | L]`` and ``label_probs`` are the ``P(L)``. (Greedy
  decoding of a model that hedges between bands answers the single likeliest band for every image, e.g. "very
  low" because "very" is the likeliest first word, and loses every ranking the model knows.) Answers without a
  label fall back to the digit expectation along the greedy answer.

Every :class:`Prediction` keeps the raw text and the :class:`~cogip.answer.ParsedAnswer`, so nothing is hidden
from the metrics: ``score is None`` means unparsable, and :mod:`eval.scoring` says how those are counted.

The GRPO callback calls :func:`predict` on the live model; the model's train/eval mode is restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from cogip.answer import NUMBER_RE, ParsedAnswer, label_start, parse_answer
from cogip.models import digit_token_ids
from cogip.traits import Trait, get_trait, in_registry_order

DECODINGS = ("greedy", "expected", "sample")
_MAX_ENUM_DIGITS = 4  # 10**4 score values per item when turning digit distributions into label-bin probabilities


@dataclass
class Prediction:
    """One item's prediction. ``score`` is the decoded score (greedy parse, expectation, or sample mean), None
    when no number could be read; ``text`` is the raw greedy (or first sampled) completion."""

    id: str
    trait: str
    human: float
    text: str
    parsed: ParsedAnswer
    score: float | None
    decoding: str = "greedy"
    label_probs: dict[str, float] | None = None
    expected_exact: bool | None = None  # expected decoding: every digit of the greedy score was its own token
    samples: list[str] | None = None
    sample_scores: list[float | None] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["parsed"] = asdict(self.parsed)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Prediction:
        return cls(**{**d, "parsed": ParsedAnswer(**d["parsed"])})


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module that can ``generate``: DeepSpeed engines and DDP wrap it as ``.module``; peft models generate
    themselves. (ZeRO-3 callers gather the parameters first, e.g. trl's ``unwrap_model_for_generation``.)"""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Eval mode and no grad inside; the previous train/eval mode is restored on exit."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _rgb(img):
    return img.convert("RGB") if getattr(img, "mode", "RGB") != "RGB" else img


def _encode(processor, texts: list[str], images: list, device: torch.device) -> dict:
    """Model inputs for chat-templated ``texts`` with one image each (left-padded batch on ``device``)."""
    enc = processor(text=texts, images=[[_rgb(im)] for im in images], padding=True, return_tensors="pt")
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()}


def _completion_ids(seq: torch.Tensor, stop_ids: set[int]) -> list[int]:
    """Generated ids up to (not including) the first end-of-turn or pad token."""
    out = []
    for t in seq.tolist():
        if t in stop_ids:
            break
        out.append(t)
    return out


def _score_digits(pieces: list[str], parsed: ParsedAnswer, first: bool = False
                  ) -> tuple[list[tuple[int, float]], float] | None:
    """For the number parse_answer read, the (token index, place value) of each of its digits and its sign.

    ``pieces`` are the decoded generated tokens (their concatenation is the completion text); the number is the last
    one of the parsed value in it, or the first with ``first`` (the number right after a forced label). None when the
    number cannot be located, a digit shares its token with other characters, or the number starts with a zero that
    is not its units digit (``0000``: each other digit token would weigh 10 to 1000 times too much)."""
    if parsed.score is None:
        return None
    text = "".join(pieces)
    owner = [i for i, p in enumerate(pieces) for _ in p]  # char offset -> token index
    numbers = list(NUMBER_RE.finditer(text))
    for m in (numbers if first else reversed(numbers)):
        try:
            value = float(m.group().replace("\u2212", "-"))
        except ValueError:
            continue
        if value != parsed.score:
            continue
        body = m.group().lstrip("+-\u2212")
        start = m.end() - len(body)
        int_part = body.split(".")[0]
        if len(int_part) > 1 and int_part.startswith("0"):
            return None
        digits = []
        for k, ch in enumerate(body):
            if not ch.isdigit():
                continue
            pos = start + k
            tok = owner[pos]
            if pieces[tok] != ch:
                return None
            place = 10.0 ** (len(int_part) - 1 - k) if k < len(int_part) else 10.0 ** -(k - len(int_part))
            digits.append((tok, place))
        sign = -1.0 if m.group()[0] in "-\u2212" else 1.0
        return digits, sign
    return None


def _bin_probs(trait: Trait, digit_probs: np.ndarray, places: list[float], sign: float) -> dict[str, float]:
    """Label-bin probabilities implied by independent digit distributions ``digit_probs`` (P, 10)."""
    keep = min(len(places), _MAX_ENUM_DIGITS)  # most significant first; the rest truncated toward zero
    grid_values = np.zeros(1)
    grid_probs = np.ones(1)
    for i in range(keep):
        grid_values = (grid_values[:, None] + places[i] * np.arange(10)[None, :]).ravel()
        grid_probs = (grid_probs[:, None] * digit_probs[i][None, :]).ravel()
    values = sign * grid_values
    # Bin edges increase, so the bins a value passes form a prefix: their count is its bin index.
    index = np.zeros(len(values), dtype=int)
    for b in trait.bins[1:]:
        index += (values >= b.lower) if b.inclusive else (values > b.lower)
    probs = np.bincount(index, weights=grid_probs, minlength=len(trait.bins))
    probs = probs / probs.sum()
    return {lbl: float(p) for lbl, p in zip(trait.labels, probs, strict=True)}


def _expected(trait: Trait, pieces: list[str], parsed: ParsedAnswer, step_logits: torch.Tensor,
              digit_ids: list[int], band: str | None = None) -> tuple[float | None, dict[str, float] | None, bool]:
    """Expected score from ``step_logits`` (T, V), the raw logits that produced each generated token; ``band`` is
    the label the answer was forced to start with, if any (see :func:`_top_of_band`)."""
    located = _score_digits(pieces, parsed, first=band is not None)
    if located is None:
        return parsed.score, None, False
    digits, sign = located
    if not digits:
        return parsed.score, None, False
    rows = step_logits[[t for t, _ in digits]][:, digit_ids].float()  # (P, 10): logits of the ten digits
    probs = torch.softmax(rows, dim=-1).cpu().numpy()
    places = [p for _, p in digits]
    value = _top_of_band(trait, band, places, probs) if sign > 0 else None
    if value is None:
        value = sign * _within_reach(places, probs, trait.high if sign > 0 else -trait.low)
    value = trait.clip(value)
    return value, _bin_probs(trait, probs, places, sign), True


def _forced_answer(label: str, pieces: list[str], trait: Trait) -> ParsedAnswer:
    """What a continuation ``pieces`` of a forced ``label`` answers: the label with what follows it up to the first
    tag (``</answer>`` or another ``<answer>``), read as a whole answer is (label and number)."""
    return parse_answer(label + "".join(pieces).split("<", 1)[0], trait)


def _digits_mean(places: list[float], probs: np.ndarray) -> float:
    """The expected value of digits at ``places`` with the distributions ``probs`` (one row of ten per place)."""
    return float(sum(pl * (pr @ np.arange(10)) for pl, pr in zip(places, probs, strict=True)))


def _within_reach(places: list[float], probs: np.ndarray, reach: float) -> float:
    """The expected size of a number whose digits at ``places`` have the distributions ``probs`` (P, 10), its first
    digit kept to the values a number of size at most ``reach`` can start with: 0 or 1 on Memorability's 0-1, 0 to
    3 on Valence's -3..3 (a weight on 2-9 there would push the number past the scale, and clipping would then make
    items alike). A first digit that reaches ``reach`` is the scale's end exactly (its fraction is zeros)."""
    lead, first, rest = probs[0], places[0], _digits_mean(places[1:], probs[1:])
    digits = [d for d in range(10) if d * first <= reach + 1e-9]
    mass = float(lead[digits].sum())
    if mass <= 0:  # nothing within reach (a number longer than the scale): the plain expectation, clipped later
        return _digits_mean(places, probs)
    return sum(float(lead[d]) / mass * (reach if d * first >= reach - 1e-9 else d * first + rest) for d in digits)


def _top_of_band(trait: Trait, band: str | None, places: list[float], probs: np.ndarray) -> float | None:
    """The expectation of a number in the band that holds the scale's top, when that top is a power of ten.

    On a 0-10 scale the first digit of ``9.500`` and of ``10.000`` is one token: a "1" there is the start of 10,
    not 1, in a band ("very high", from 8) that holds 10 and no 1.x; and an "8" or "9" where the answer wrote
    ``10.000`` starts a one-digit number (its fraction unknown: half a unit). The place values of the answer's
    own digits would read those as 1 and as 80-90. None where this does not apply (any other band or scale)."""
    top = trait.high
    if band is None or trait.low < 0 or top < 10 or 10 ** round(math.log10(top)) != top:
        return None
    unit = top / 10  # the place of the first digit of a number one digit shorter than the top
    lower = trait.bins[trait.labels.index(band)].lower if band in trait.labels else None
    if trait.label_for(top) != band or lower is None or lower < 2 * unit or places[0] not in (unit, top):
        return None
    lead = probs[0]
    if places[0] == unit:  # e.g. 9.500: the other digits are its fraction
        rest = _digits_mean(places[1:], probs[1:])
    else:  # e.g. 10.000: a one-digit number's fraction was never written
        rest = unit / 2
    return float(sum(lead[d] * (d * unit + rest) for d in range(10) if d != 1) + lead[1] * top)


def _label_lead(text: str, trait: str) -> str:
    """What the answer ``text`` wrote before the label of the answer it states, e.g. ``<answer>`` (not before a
    later mention of the label's word: "low 4.000, although the lighting is low")."""
    return text[:label_start(text, trait) or 0]


def _label_marginal(model, processor, texts: list[str], images: list, preds: list[Prediction], digit_ids: list[int],
                    stop_ids: set[int], max_new_tokens: int, device: torch.device) -> None:
    """The ``expected`` decoding of every labelled prediction in ``preds`` (see the module docstring), in place:
    one teacher-forced pass for the label probabilities, one greedy continuation per (item, label). ``texts`` are
    the items' chat-templated prompts."""
    tok = processor.tokenizer
    jobs = [(i, lbl) for i, p in enumerate(preds) if p.parsed.label is not None for lbl in get_trait(p.trait).labels]
    if not jobs:
        return
    prompt_len = {i: len(tok(texts[i], add_special_tokens=False).input_ids) for i in dict.fromkeys(i for i, _ in jobs)}
    base = [texts[i] for i, _ in jobs]
    # The label alone, no space after it: the tokenizer may join that space to what follows (" -" before a minus).
    forced = [_label_lead(preds[i].text, preds[i].trait) + lbl for i, lbl in jobs]
    n_forced = [len(tok(b + f, add_special_tokens=False).input_ids) - prompt_len[i]
                for b, f, (i, _) in zip(base, forced, jobs)]
    enc = _encode(processor, [b + f for b, f in zip(base, forced)], [images[i] for i, _ in jobs], device)
    keep = max(n_forced) + 1
    logits = model(**enc, logits_to_keep=keep).logits.float()  # (R, keep, V): only the positions we need
    ids = enc["input_ids"]
    logp = []
    for r, n in enumerate(n_forced):  # left padding: the forced tokens are the last n of every row
        rows = torch.log_softmax(logits[r, keep - 1 - n:keep - 1], dim=-1)
        logp.append(float(rows.gather(1, ids[r, -n:, None]).sum()))
    del logits
    gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=tok.pad_token_id, temperature=None, top_k=None,
                         top_p=None)
    seqs = gen.sequences[:, ids.shape[1]:]
    per_item: dict[int, list[tuple[str, float, float | None, bool]]] = {}
    for r, (i, lbl) in enumerate(jobs):
        trait = get_trait(preds[i].trait)
        cont = _completion_ids(seqs[r], stop_ids)
        pieces = [tok.decode([t], skip_special_tokens=True) for t in cont]
        value, exact = None, False
        parsed = _forced_answer(lbl, pieces, trait)
        if cont and parsed.score is not None:
            step_logits = torch.stack([lg[r] for lg in gen.logits[:len(cont)]])
            value, _, exact = _expected(trait, pieces, parsed, step_logits, digit_ids, band=lbl)
            value = None if value is None else trait.clip(value)
        per_item.setdefault(i, []).append((lbl, logp[r], value, exact))
    for i, rows in per_item.items():
        top = max(lp for _, lp, _, _ in rows)
        weights = {lbl: math.exp(lp - top) for lbl, lp, _, _ in rows}
        total = sum(weights.values())
        preds[i].label_probs = {lbl: w / total for lbl, w in weights.items()}
        scored = [(weights[lbl], v, ex) for lbl, _, v, ex in rows if v is not None]
        if scored:
            preds[i].score = sum(w * v for w, v, _ in scored) / sum(w for w, _, _ in scored)
            preds[i].expected_exact = all(ex for _, _, ex in scored)


def predict(model, processor, dataset, decoding: str = "greedy", batch_size: int = 16, max_new_tokens: int = 24,
            num_samples: int = 8, temperature: float = 1.0, seed: int = 0, images: Sequence | None = None,
            progress: bool | str = True) -> list[Prediction]:
    """Predict every item of ``dataset`` (canonical schema). ``images`` replaces the dataset's images (blindness
    checks pass blank or shuffled ones). Batched with left padding; the model's mode is restored afterwards."""
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, not {decoding!r}")
    tokenizer = processor.tokenizer
    if tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"  # decoder-only generation must pad on the left
    model = unwrap_model(model)
    digit_ids = digit_token_ids(tokenizer) if decoding == "expected" else []
    stop_ids = {i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id,
                            tokenizer.convert_tokens_to_ids("<|im_end|>")) if isinstance(i, int) and i >= 0}
    n = len(dataset)
    out: list[Prediction] = []
    bar = tqdm(total=n, desc=progress if isinstance(progress, str) else f"predict ({decoding})",
               disable=not progress, leave=False)
    device = _device(model)
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    with eval_mode(model), rng:
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            rows = dataset[start:start + batch_size]
            batch_images = list(images[start:start + batch_size]) if images is not None else rows["image"]
            texts = [processor.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                     for p in rows["prompt"]]
            inputs = _encode(processor, texts, batch_images, device)
            prompt_len = inputs["input_ids"].shape[1]
            gen_kw = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
                      "return_dict_in_generate": True}
            if decoding == "sample":
                gen_kw |= {"do_sample": True, "temperature": temperature, "num_return_sequences": num_samples,
                           "top_k": 0, "top_p": 1.0}
            else:
                gen_kw |= {"do_sample": False, "output_logits": decoding == "expected",
                           "temperature": None, "top_k": None, "top_p": None}
            gen = model.generate(**inputs, **gen_kw)
            seqs = gen.sequences[:, prompt_len:]  # (B * num_return_sequences, T)
            for b in range(len(rows["id"])):
                trait = get_trait(rows["trait"][b])
                common = {"id": str(rows["id"][b]), "trait": trait.name, "human": float(rows["score"][b]),
                          "decoding": decoding}
                if decoding == "sample":
                    texts = [tokenizer.decode(_completion_ids(s, stop_ids), skip_special_tokens=True)
                             for s in seqs[b * num_samples:(b + 1) * num_samples]]
                    parses = [parse_answer(t, trait) for t in texts]
                    scores = [p.score for p in parses]
                    good = [trait.clip(s) for s in scores if s is not None]  # one 5528.0 must not decide the mean
                    out.append(Prediction(**common, text=texts[0], parsed=parses[0],
                                          score=float(np.mean(good)) if good else None, samples=texts,
                                          sample_scores=scores))
                    continue
                ids = _completion_ids(seqs[b], stop_ids)
                text = tokenizer.decode(ids, skip_special_tokens=True)
                parsed = parse_answer(text, trait)
                pred = Prediction(**common, text=text, parsed=parsed, score=parsed.score)
                if decoding == "expected" and parsed.label is None:  # labelled answers: _label_marginal below
                    pieces = [tokenizer.decode([t], skip_special_tokens=True) for t in ids]
                    step_logits = torch.stack([lg[b] for lg in gen.logits[:len(ids)]]) if ids else None
                    if step_logits is not None:
                        pred.score, pred.label_probs, pred.expected_exact = _expected(
                            trait, pieces, parsed, step_logits, digit_ids)
                    else:
                        pred.expected_exact = False
                out.append(pred)
            if decoding == "expected":
                _label_marginal(model, processor, texts, batch_images, out[start:], digit_ids, stop_ids,
                                max_new_tokens, device)
            bar.update(len(rows["id"]))
    bar.close()
    return out


def by_trait(predictions: Sequence[Prediction]) -> dict[str, list[Prediction]]:
    """The predictions of each trait, in their order; the traits in the registry's order (as every table lists
    them), any unregistered name after those."""
    groups: dict[str, list[Prediction]] = {}
    for p in predictions:
        groups.setdefault(p.trait, []).append(p)
    return {t: groups[t] for t in in_registry_order(groups)}
