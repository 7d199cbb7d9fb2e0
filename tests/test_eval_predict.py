"""The predictor on real tiny models: batching, expected-score decoding, sampling, mode handling, blindness,
held-out rewards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_eval_support import fitted_model_dir, one_thread  # noqa: F401  (fixtures)

from cogip.answer import parse_answer, render_answer
from cogip.models import load_policy
from cogip.traits import LabelBin, Trait, get_trait
from eval.blindness import blindness_result, movement, shuffled_images
from eval.held_out_reward import held_out_rewards
from eval.predict import Prediction, _bin_probs, _expected, _forced_answer, _score_digits, by_trait, predict
from eval.report import ignores_image


@pytest.fixture(scope="module")
def fitted(fitted_model_dir):  # noqa: F811
    return load_policy(fitted_model_dir)


@pytest.fixture(scope="module")
def test_items(synthetic_splits):
    return synthetic_splits["test"].select(range(16))


def test_batched_generation_matches_batch_of_one(fitted, test_items):
    model, processor = fitted
    batched = predict(model, processor, test_items, batch_size=8, progress=False)
    single = predict(model, processor, test_items, batch_size=1, progress=False)
    assert [p.text for p in batched] == [p.text for p in single]
    assert [p.id for p in batched] == list(test_items["id"])
    assert all(p.parsed == parse_answer(p.text, p.trait) for p in batched)  # raw text and its parse are kept


def test_expected_decoding_is_deterministic_and_scores_every_well_formed_item(fitted, test_items):
    model, processor = fitted
    first = predict(model, processor, test_items, decoding="expected", batch_size=8, progress=False)
    second = predict(model, processor, test_items, decoding="expected", batch_size=5, progress=False)
    assert [p.score for p in first] == pytest.approx([p.score for p in second], abs=1e-5)
    well_formed = [p for p in first if p.parsed.well_formed]
    assert len(well_formed) >= len(first) // 2, [p.text for p in first]  # the fit taught the answer format
    for p in well_formed:
        t = get_trait(p.trait)
        assert p.score is not None and t.low <= p.score <= t.high and p.expected_exact
        assert set(p.label_probs) == set(t.labels) and sum(p.label_probs.values()) == pytest.approx(1.0)
    # Expectations move off the greedy digits: the expected decoding is not the greedy one in disguise.
    assert any(abs(p.score - p.parsed.score) > 1e-6 for p in well_formed)


def test_expected_decoding_weighs_every_label_by_its_probability(fitted, test_items):
    # The label probabilities equal the model's own, computed here one label at a time without padding, and the
    # score lies between the smallest and largest per-label expectation (it is their weighted mean).
    model, processor = fitted
    preds = predict(model, processor, test_items.select(range(6)), decoding="expected", batch_size=6,
                    progress=False)
    tok = processor.tokenizer
    checked = 0
    for p, item in zip(preds, test_items.select(range(6))):
        if not p.parsed.well_formed:
            continue
        base = processor.apply_chat_template(item["prompt"], tokenize=False, add_generation_prompt=True)
        n_base = len(tok(base).input_ids)
        logp = {}
        for lbl in get_trait(p.trait).labels:
            enc = processor(text=[base + lbl], images=[[item["image"]]], return_tensors="pt")
            n = len(tok(base + lbl).input_ids) - n_base
            with torch.no_grad():
                lp = torch.log_softmax(model(**enc).logits[0, -n - 1:-1].float(), -1)
            logp[lbl] = float(lp.gather(1, enc["input_ids"][0, -n:, None]).sum())
        z = max(logp.values())
        total = sum(math.exp(v - z) for v in logp.values())
        for lbl, v in logp.items():
            assert p.label_probs[lbl] == pytest.approx(math.exp(v - z) / total, abs=1e-4)
        t = get_trait(p.trait)
        assert t.low <= p.score <= t.high
        checked += 1
    assert checked >= 3


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["Aesthetics", "Funniness", "Emotional_Valence", "Memorability"]), st.floats(0, 1))
def test_digits_of_a_rendered_answer_rebuild_its_score(trait_name, u):
    t = get_trait(trait_name)
    answer = render_answer(t, t.low + u * t.span)
    pieces = list(answer)  # one character per token, as the byte-level tokenizer splits digits
    parsed = parse_answer(answer, t)
    digits, sign = _score_digits(pieces, parsed)
    value = sign * sum(place * int(pieces[i]) for i, place in digits)
    assert value == pytest.approx(parsed.score, abs=1e-9)
    # Certain digits (one-hot distributions) put all label probability on the answer's own bin.
    onehot = np.eye(10)[[int(pieces[i]) for i, _ in digits]]
    probs = _bin_probs(t, onehot, [pl for _, pl in digits], sign)
    assert probs[t.label_for(parsed.score)] == pytest.approx(1.0)


def test_a_forced_label_is_read_with_the_number_right_after_it():
    # The expected decoding forces each label and reads the number its greedy continuation writes next to it: the
    # digits located are that number's, not a later one's of the same value, and a tag after it ends the answer.
    t = get_trait("Aesthetics")
    pieces = list(" 7.000 or 7")
    parsed = _forced_answer("high", pieces, t)
    assert (parsed.label, parsed.score, parsed.well_formed) == ("high", 7.0, True)
    digits, sign = _score_digits(pieces, parsed, first=True)
    assert [i for i, _ in digits] == [1, 3, 4, 5] and sign == 1.0
    assert _forced_answer("high", list(" 7.500</answer><answer>"), t).score == 7.5
    assert _forced_answer("low", list(" 4.7.7"), t).score is None  # a number that runs on is no answer


def _expected_with_first_digit(trait, answer: str, first: dict[int, float], band: str | None) -> float:
    """``_expected`` on ``answer`` (one character per token) whose digits are certain but the first, which takes the
    distribution ``first``."""
    pieces, digit_ids = list(answer), list(range(10))
    logits = torch.full((len(pieces), 20), -1e4)
    for i, ch in enumerate(pieces):
        if ch.isdigit():
            logits[i, int(ch)] = 0.0
    lead = next(i for i, ch in enumerate(pieces) if ch.isdigit())
    logits[lead, :10] = torch.log(torch.tensor([first.get(d, 0.0) for d in range(10)]) + 1e-12)
    return _expected(get_trait(trait), pieces, parse_answer(answer, trait), logits, digit_ids, band=band)[0]


def test_expected_digits_near_the_top_of_a_zero_to_ten_scale():
    # In the band holding 10, a "1" where the answer wrote 9.500 starts 10.000 (it was read as 1: 6.3).
    assert _expected_with_first_digit("Aesthetics", "very high 9.500", {9: 0.6, 1: 0.4}, "very high") == \
        pytest.approx(0.6 * 9.5 + 0.4 * 10, abs=1e-4)
    # Where it wrote 10.000, a "9" starts a one-digit number (it was read as 90, clipped to 10).
    assert _expected_with_first_digit("Funniness", "very high 10.000", {1: 0.6, 9: 0.4}, "very high") == \
        pytest.approx(0.6 * 10 + 0.4 * 9.5, abs=1e-4)
    # A number with leading zeros is read as written, not through its digits' place values (0000 scored 10).
    assert _expected_with_first_digit("Aesthetics", "0000", {0: 0.9, 9: 0.1}, None) == 0.0
    # Elsewhere place values hold: a "1" in "very low" is 1.x, and in a top band that holds 1.x too.
    assert _expected_with_first_digit("Aesthetics", "very low 2.500", {2: 0.5, 1: 0.5}, "very low") == \
        pytest.approx(2.0, abs=1e-4)
    wide = Trait("Wide", 0, 10, (LabelBin("low"), LabelBin("high", 1.5)), "a top band from 1.5")
    assert _expected_with_first_digit(wide, "high 1.700", {1: 1.0}, "high") == pytest.approx(1.7, abs=1e-4)


def test_expected_digits_on_scales_that_end_at_one_and_at_three():
    # Memorability's first digit is 0 or 1 (1 only in 1.000): weight on 2-9 is not read as 2.x-9.x, clipped to 1.
    assert _expected_with_first_digit("Memorability", "high 0.750", {0: 0.6, 1: 0.3, 7: 0.1}, "high") == \
        pytest.approx((0.6 * 0.75 + 0.3 * 1.0) / 0.9, abs=1e-4)
    assert _expected_with_first_digit("Memorability", "very high 1.000", {1: 0.5, 0: 0.5}, "very high") == \
        pytest.approx(0.5, abs=1e-4)  # the fraction after a 0 was written as 000 here
    # Valence: 0 to 3 either side, a 3 being the end of the scale itself.
    assert _expected_with_first_digit("Emotional_Valence", "negative -0.880", {0: 0.5, 1: 0.3, 8: 0.2},
                                      "negative") == pytest.approx(-(0.5 * 0.88 + 0.3 * 1.88) / 0.8, abs=1e-4)
    assert _expected_with_first_digit("Emotional_Valence", "positive 2.500", {2: 0.5, 3: 0.5}, "positive") == \
        pytest.approx(0.5 * 2.5 + 0.5 * 3.0, abs=1e-4)


def test_sample_decoding_averages_parsable_samples(fitted, test_items):
    model, processor = fitted
    items = test_items.select(range(4))
    preds = predict(model, processor, items, decoding="sample", num_samples=3, batch_size=4, seed=1,
                    progress=False)
    again = predict(model, processor, items, decoding="sample", num_samples=3, batch_size=4, seed=1,
                    progress=False)
    assert [p.samples for p in preds] == [p.samples for p in again]  # seeded
    for p in preds:
        assert len(p.samples) == 3 and p.text == p.samples[0]
        good = [get_trait(p.trait).clip(s) for s in p.sample_scores if s is not None]  # each clipped to the scale
        assert (p.score is None) if not good else p.score == pytest.approx(np.mean(good))


def test_mode_is_restored_and_wrapped_models_work(tiny_model_dir, test_items):
    from peft import LoraConfig, get_peft_model

    model, processor = load_policy(tiny_model_dir)
    items = test_items.select(range(4))
    base = predict(model, processor, items, max_new_tokens=4, progress=False)
    model.train()
    predict(model, processor, items, max_new_tokens=4, progress=False)
    assert model.training  # restored

    class Engine(torch.nn.Module):  # what DeepSpeed / DDP look like from outside: the model as .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    wrapped = predict(Engine(peft_model), processor, items, max_new_tokens=4, progress=False)
    assert [p.text for p in wrapped] == [p.text for p in base]  # a fresh LoRA (B = 0) changes nothing


def _p(trait: str, human: float, score: float | None, text: str = "") -> Prediction:
    return Prediction(id="x", trait=trait, human=human, text=text, parsed=parse_answer(text, trait), score=score)


def test_predictions_by_trait_keep_their_order_and_list_traits_as_the_registry_does():
    preds = [_p(t, h, None) for t, h in (("Memorability", 0.1), ("Aesthetics", 1), ("Emotional_Valence", 0),
                                          ("Aesthetics", 2), ("Funniness", 3), ("Memorability", 0.2))]
    groups = by_trait(preds)
    assert list(groups) == ["Aesthetics", "Funniness", "Emotional_Valence", "Memorability"]
    assert [p.human for p in groups["Aesthetics"]] == [1, 2]
    assert [p.human for p in groups["Memorability"]] == [0.1, 0.2]


def test_blindness_movement_and_flag():
    original = [_p("Aesthetics", h, s) for h, s in ((1, 2.0), (5, 5.0), (9, 8.0))]
    same = [_p("Aesthetics", h, s) for h, s in ((1, 2.0), (5, 5.0), (9, 8.0))]
    moved = [_p("Aesthetics", h, s) for h, s in ((1, 8.0), (5, None), (9, 2.0))]
    assert movement(original, same)["Aesthetics"]["ignores_image"]
    m = movement(original, moved)["Aesthetics"]
    assert not m["ignores_image"] and m["changed_rate"] == pytest.approx(2 / 3)
    assert m["mean_abs_shift_of_range"] == pytest.approx((6 + 0 + 6) / 3 / 10)  # None scored as midpoint 5
    # Not one readable original answer: every score is the same stand-in, so nothing can be told
    unread = [_p("Aesthetics", h, None) for h in (1, 5, 9)]
    m = movement(unread, unread)["Aesthetics"]
    assert m["readable_rate"] == 0 and m["ignores_image"] is None
    assert blindness_result(unread, {"blank": unread, "shuffled": unread}) | {"blank": None, "shuffled": None} == {
        "blank": None, "shuffled": None, "flagged": [], "unreadable": ["Aesthetics"], "tolerance": 0.02}
    # the verdict per trait that the CSV, the console flags and the demo report read: True ignores, False looks,
    # None not judged
    verdicts = [ignores_image(blindness_result(before, {"blank": after, "shuffled": after}), "Aesthetics")
                for before, after in ((original, same), (original, moved), (unread, unread))]
    assert verdicts == [True, False, None] and ignores_image(None, "Aesthetics") is None
    perm = shuffled_images(list(range(7)), seed=3)
    assert sorted(perm) == list(range(7)) and all(a != b for a, b in zip(perm, range(7), strict=True))


def test_blindness_does_not_judge_a_model_without_readable_answers(tiny_model_dir, test_items):
    from eval.blindness import blindness_check

    model, processor = load_policy(tiny_model_dir)  # random: no readable answer, whatever the image
    items = test_items.select(range(8))
    original = predict(model, processor, items, max_new_tokens=4, progress=False)
    assert all(p.score is None for p in original)
    res = blindness_check(model, processor, items, original, max_new_tokens=4, progress=False)
    assert set(res["unreadable"]) == set(items["trait"]) and res["flagged"] == []


def closeness(completions, trait, score, **columns) -> list[float]:
    """1 - |parsed - human| / span; 0 for unparsable text. A reward written for this test, in trl's contract."""
    out = []
    for c, t, s in zip(completions, trait, score, strict=True):
        p = parse_answer(c[0]["content"], t)
        out.append(0.0 if p.score is None else 1 - min(1.0, abs(p.score - s) / get_trait(t).span))
    return out


def test_held_out_rewards_use_trl_contract(test_items):
    preds = [_p(t, s, None, render_answer(t, s)) for t, s in zip(test_items["trait"], test_items["score"],
                                                                   strict=True)]
    preds[0] = _p(preds[0].trait, preds[0].human, None, "no idea")

    def not_applicable(completions, **kw):
        return [None] * len(completions)

    res = held_out_rewards(preds, {"closeness": closeness, "na": not_applicable}, test_items)
    assert res["closeness"]["mean"] == pytest.approx((len(preds) - 1) / len(preds))
    assert res["na"]["mean"] is None and res["na"]["n_none"] == len(preds)
    assert set(res["closeness"]["per_trait"]) == set(test_items["trait"])
    assert not math.isnan(res["closeness"]["per_trait"][preds[1].trait])


def test_evaluation_blindness_check_rescores_with_the_evaluation_decoding(fitted, test_items):
    # A model that hedges between bands can give one greedy answer for every image while its expected scores follow
    # the image: the blindness check must judge the scores the evaluation counts.
    from eval.blindness import blindness_check
    from eval.checkpoint_eval import evaluate_model
    from eval.eval_args import EvalArgs

    model, processor = fitted
    items = test_items.select(range(8))
    args = EvalArgs(checkpoint="fitted", decoding="expected", n_boot=0, blindness=True)
    result, preds = evaluate_model(model, processor, items, args)
    assert all(p.decoding == "expected" for p in preds)
    again = blindness_check(model, processor, items, preds, decoding="expected", progress=False)
    assert result["blindness"] == again


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):  # noqa: F811
    yield
