import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cogip.answer import parse_answer, render_answer
from cogip.traits import all_traits, get_trait, load_traits_yaml, trait_names

BUILTIN = ("Aesthetics", "Funniness", "Emotional_Valence", "Memorability")


def test_builtin_ranges_bins_and_boundaries():
    assert trait_names()[:4] == list(BUILTIN)
    a, v, m = get_trait("Aesthetics"), get_trait("valence"), get_trait("memorability")
    assert (a.low, a.high, v.low, v.high, m.low, m.high) == (0, 10, -3, 3, 0, 1)
    assert [a.label_for(x) for x in (3.499, 3.5, 4.999, 5.0, 6.5, 7.99, 8.0, 10)] == [
        "very low", "low", "low", "medium", "high", "high", "very high", "very high"]
    assert [v.label_for(x) for x in (-3, -0.001, 0.0, 0.001, 3)] == [
        "negative", "negative", "neutral", "positive", "positive"]
    assert [m.label_for(x) for x in (0.349, 0.35, 0.5, 0.65, 0.8)] == [
        "very low", "low", "medium", "high", "very high"]
    assert get_trait("Funniness").labels == a.labels
    assert all(t.decimals == 3 for t in all_traits())
    with pytest.raises(KeyError, match="unknown trait 'cuteness'"):
        get_trait("cuteness")


def test_prompts_name_every_band():
    for t in all_traits():
        assert all(lbl in t.prompt for lbl in t.labels) and "3 decimals" in t.prompt
        assert t.name.split("_")[-1] in t.short_prompt


def test_user_trait_from_yaml(tmp_path):
    (tmp_path / "t.yaml").write_text("""
traits:
  - name: Coziness
    range: [1, 5]
    description: How warm and snug the scene feels.
    decimals: 2
    bins:
      - {label: cold}
      - {label: snug, from: 3}
      - {label: toasty, above: 4.5}
""")
    (t,) = load_traits_yaml(tmp_path / "t.yaml")
    assert get_trait("coziness") is t
    assert [t.label_for(x) for x in (2.99, 3, 4.5, 4.51)] == ["cold", "snug", "snug", "toasty"]
    assert render_answer("Coziness", 4.567) == "toasty 4.57"
    assert parse_answer("<answer>snug 3.25</answer>", t).label_consistent
    (tmp_path / "bad.yaml").write_text("traits:\n  - {name: X, range: [0, 1], description: d, bins: [{label: a}, "
                                       "{label: b}]}\n")
    with pytest.raises(ValueError, match="needs 'from' or 'above'"):
        load_traits_yaml(tmp_path / "bad.yaml")


def test_a_trait_registered_over_another_takes_its_place_and_drops_its_old_aliases():
    import dataclasses

    from cogip.traits import register_trait

    old = get_trait("Emotional_Valence")
    try:
        register_trait(dataclasses.replace(old, low=-5, high=5, aliases=("mood",)), overwrite=True)
        assert get_trait("mood").low == get_trait("Emotional_Valence").low == -5 and trait_names()[2] == old.name
        with pytest.raises(KeyError):
            get_trait("valence")  # an alias of the replaced trait only
    finally:
        register_trait(old, overwrite=True)
    assert get_trait("valence") is old and "mood" not in str(trait_names())


def test_render_examples():
    assert render_answer("Aesthetics", 8.13) == "very high 8.130"
    assert render_answer("Emotional_Valence", -2) == "negative -2.000"
    assert render_answer("Emotional_Valence", -0.0001) == "neutral 0.000"
    assert render_answer("Memorability", 0) == "very low 0.000"
    with pytest.raises(ValueError):
        render_answer("Memorability", 1.2)


@pytest.mark.parametrize("text,trait,label,score,well,consistent", [
    ("very high 8.130", "Aesthetics", "very high", 8.13, True, True),
    ("<answer>medium 5.577</answer>", "Aesthetics", "medium", 5.577, True, True),
    ("The picture is calm. <answer> Negative  −2 </answer>", "valence", "negative", -2.0, True, True),
    ("positive 7", "valence", "positive", 7.0, True, True),
    ("high 2.000", "Funniness", "high", 2.0, True, False),
    ("about 0.7", "Memorability", None, 0.7, False, False),
    ("I'd say 7 out of 10", "Aesthetics", None, 7.0, False, False),  # the scale's top is not the score
    ("score: 7.5/10", "Funniness", None, 7.5, False, False),
    ("10", "Aesthetics", None, 10.0, False, False),
    ("very", "Aesthetics", None, None, False, False),
    # a trailing empty or cut-off block does not hide the complete answer before it
    ("<answer>high 7.000</answer><answer>", "Aesthetics", "high", 7.0, True, True),
    ("<answer>high 7.000</answer> (in the <answer> format)", "Aesthetics", "high", 7.0, True, True),
    ("", "Aesthetics", None, None, False, False),
    # a number that runs on into more digits and points is no score (GRPO once drifted into "low 4.7.7"), but a
    # full stop after it ends a sentence
    ("low 4.7.7", "Aesthetics", None, None, False, False),
    ("high 7.7.70.5", "Aesthetics", None, None, False, False),
    ("<answer>high 7.000.</answer>", "Aesthetics", "high", 7.0, True, True),
    ("version 2.7.1, then high 7", "Aesthetics", "high", 7.0, True, True),
])
def test_parse_cases(text, trait, label, score, well, consistent):
    p = parse_answer(text, trait)
    assert (p.label, p.score, p.well_formed, p.label_consistent) == (label, score, well, consistent)


def test_label_start_is_where_the_stated_answer_begins():
    from cogip.answer import label_start

    text = "<answer>low 4.000</answer>, although the lighting is low"
    assert text[:label_start(text, "Aesthetics")] == "<answer>"  # not before the later mention of "low"
    assert label_start("about 0.7", "Memorability") is None


def test_parse_out_of_range_is_flagged():
    p = parse_answer("positive 7", "valence")
    assert p.well_formed and not p.in_range


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(BUILTIN), st.floats(0, 1), st.booleans())
def test_render_parse_round_trip(trait, u, tagged):
    t = get_trait(trait)
    score = t.low + u * t.span
    text = render_answer(t, score)
    p = parse_answer(f"<answer>{text}</answer>" if tagged else text, t)
    assert p.well_formed and p.label_consistent and p.in_range
    assert p.score == t.round(score) and p.label == t.label_for(t.round(score))


@settings(max_examples=500, deadline=None)
@given(st.text(), st.sampled_from(BUILTIN))
def test_arbitrary_text_never_raises(text, trait):
    p = parse_answer(text, trait)
    assert p.score is None or math.isfinite(p.score)
    assert p.well_formed == (p.label is not None)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
def test_non_text_never_raises(obj):
    assert not parse_answer(obj, "Aesthetics").well_formed


@given(st.text(alphabet="verylowhigh <>/answer.-0123456789", max_size=60))
def test_grammar_shaped_noise_never_raises(text):
    p = parse_answer(text, "Aesthetics")
    assert p.score is None or math.isfinite(p.score)
