import numpy as np
import pytest
from scipy.stats import spearmanr

from cogip.answer import parse_answer
from cogip.synthetic import TRAITS, generate_items, make_benchmark, reliability
from cogip.traits import get_trait


@pytest.fixture(scope="module")
def items():
    return generate_items(1200, seed=3)


def test_deterministic_from_seed():
    a, b = generate_items(8, seed=5), generate_items(8, seed=5)
    assert [x["score"] for x in a] == [x["score"] for x in b]
    assert all(np.array_equal(np.asarray(x["image"]), np.asarray(y["image"])) for x, y in zip(a, b))
    assert [x["score"] for x in generate_items(8, seed=6)] != [x["score"] for x in a]


def test_items_follow_trait_rules(items):
    assert {t: sum(i["trait"] == t for i in items) for t in TRAITS} == {t: 300 for t in TRAITS}
    for it in items:
        t = get_trait(it["trait"])
        assert t.in_range(it["score"]) and it["score_std"] >= 0
        p = parse_answer(it["answer"], t)
        assert p.well_formed and p.label_consistent and p.score == it["score"]
        assert it["image"].size == (56, 56)
    for t in TRAITS:  # every label occurs (valence's "neutral" is exactly 0.000, rare for a mean of raters)
        labels = {parse_answer(i["answer"], t).label for i in items if i["trait"] == t}
        assert labels >= set(get_trait(t).labels) - {"neutral"}


def _global_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    r, g, b = images[..., 0], images[..., 1], images[..., 2]
    mx, mn = images.max(-1), images.min(-1)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    edges = np.abs(np.diff(luma, axis=1)).mean((1, 2)) + np.abs(np.diff(luma, axis=2)).mean((1, 2))
    return {
        "brightness": luma.mean((1, 2)), "saturation": ((mx - mn) / (mx + 1e-6)).mean((1, 2)),
        "red": r.mean((1, 2)), "green": g.mean((1, 2)), "blue": b.mean((1, 2)), "warmth": (r - b).mean((1, 2)),
        "contrast": luma.std((1, 2)), "edge_density": edges, "chroma": (mx - mn).mean((1, 2)),
        "colorfulness": np.hypot((r - g).std((1, 2)), ((r + g) / 2 - b).std((1, 2))),
    }


def test_no_global_mean_statistic_predicts_a_trait_but_the_marks_colours_do(items):
    images = np.stack([np.asarray(i["image"], dtype=np.float64) / 255 for i in items])
    stats = _global_stats(images)
    trait = np.array([i["trait"] for i in items])
    score = np.array([i["score"] for i in items])
    for t in TRAITS:
        m = trait == t
        for name, values in stats.items():
            rho = spearmanr(values[m], score[m]).statistic
            assert abs(rho) < 0.5, (t, name, rho)
    # The accent mark is always magenta and the pupils black: the share of those colours is a shortcut to a trait.
    r, g, b = images[..., 0], images[..., 1], images[..., 2]
    shares = {"Memorability": ((r > 0.9) & (g < 0.1) & (np.abs(b - 0.784) < 0.1)).mean((1, 2)),
              "Funniness": ((r < 0.05) & (g < 0.05) & (b < 0.05)).mean((1, 2))}
    for t, share in shares.items():
        m = trait == t
        assert abs(spearmanr(share[m], score[m]).statistic) > 0.5, t


def test_every_trait_depends_on_its_factors(items):
    # the noise-free score spreads over most of the range: the traits are not near-constant
    for t in TRAITS:
        true = np.array([i["true_score"] for i in items if i["trait"] == t])
        assert np.ptp(true) > 0.6 * get_trait(t).span


def test_reliability_ceiling(synthetic_splits):
    with pytest.raises(TypeError, match=r"one split \(e.g. make_benchmark\(\)\['test'\]\)"):
        reliability(synthetic_splits)
    rel = reliability(synthetic_splits["train"])
    assert set(rel) == set(TRAITS)
    for r in rel.values():
        assert 0.7 < r["ceiling_srcc"] <= 1.0
        assert 0.3 < r["split_half_srcc"] < r["spearman_brown"] < 1.0
    one = reliability(make_benchmark(n_train=16, n_validation=0, n_test=0, n_raters=1)["train"])  # no halves
    assert all(r["split_half_srcc"] is None and r["spearman_brown"] is None and r["ceiling_srcc"] > 0
               for r in one.values())


def test_mask_tells_what_each_pixel_shows_without_changing_the_drawing():
    from cogip.synthetic import MASK_LAYERS, MASK_VALUE, draw_item

    layer = MASK_VALUE
    for seed in range(30):
        img, factors = draw_item(np.random.default_rng(seed))
        img2, factors2, mask = draw_item(np.random.default_rng(seed), with_mask=True)
        assert factors == factors2 and np.array_equal(np.asarray(img), np.asarray(img2))
        assert mask.shape == (56, 56) and mask.dtype == np.uint8 and mask.max() <= len(MASK_LAYERS)
        pixels = np.asarray(img)
        assert ((mask == layer["eyes"]).any()) == (factors.eyes > 0)
        assert ((mask == layer["accent"]).any()) == (factors.accent > 0)
        assert (mask == layer["object"]).sum() > 20
        # googly eyes are white and black, the accent magenta
        eye = pixels[mask == layer["eyes"]]
        assert eye.size == 0 or (eye.min(-1) > 240).mean() + (eye.max(-1) < 15).mean() > 0.8
        acc = pixels[mask == layer["accent"]]
        assert acc.size == 0 or (np.abs(acc.astype(int) - [255, 0, 200]).sum(-1) < 30).mean() > 0.4


def test_generate_items_start_skips_items_without_changing_them():
    whole, tail = generate_items(7, seed=5), generate_items(4, seed=5, start=3)
    assert [x["id"] for x in tail] == [x["id"] for x in whole[3:]]
    assert [x["score"] for x in tail] == [x["score"] for x in whole[3:]]
    assert all(np.array_equal(np.asarray(a["image"]), np.asarray(b["image"])) for a, b in zip(tail, whole[3:]))
    with pytest.raises(ValueError, match="start=-1"):
        generate_items(2, seed=5, start=-1)
