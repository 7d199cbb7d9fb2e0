"""The built-in synthetic benchmark: procedurally drawn images whose four trait scores are known functions of what
is visible, rated by simulated people.

Every image shows a background (random two-colour gradient and stripes: a nuisance that dominates global pixel
statistics), one main object, some clutter, sometimes a distinctive accent mark and sometimes "googly eyes".
Each trait combines at least two visible factors:

| trait | factors (weights on a 0-1 scale) |
| --- | --- |
| Aesthetics | object centred (0.45), object/background contrast (0.35), little clutter (0.20) |
| Emotional_Valence | warm object colour (0.60), round rather than spiky shape (0.40) |
| Memorability | size of the distinctive accent mark (0.50), size of the object (0.30), little clutter (0.20) |
| Funniness | object squashed or stretched (0.55), number of googly eyes (0.45) |

Each item's score is the mean of ``n_raters`` simulated raters (true score + Gaussian noise, clipped to the range),
so items carry ``score_std`` and each trait has a split-half reliability ceiling (:func:`reliability`).
Everything is drawn from a seed with numpy and PIL; nothing binary is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cogip.traits import get_trait

TRAITS = ("Aesthetics", "Funniness", "Emotional_Valence", "Memorability")
SPLITS = ("train", "validation", "test")  # in this order: split k is drawn with seed 1000 * seed + k
# Rater noise per trait, as a fraction of the trait's range (funniness is the one people agree on least).
RATER_NOISE = {"Aesthetics": 0.15, "Funniness": 0.20, "Emotional_Valence": 0.15, "Memorability": 0.15}
COLD, WARM = np.array([40.0, 90.0, 230.0]), np.array([245.0, 120.0, 25.0])


@dataclass(frozen=True)
class Factors:
    """What is visible in one image, each on 0-1 as realised in the drawing."""

    offset: float  # distance of the object's centre from the image centre, relative to the farthest allowed
    contrast: float  # |luminance(object) - luminance(background)| / 0.6
    clutter: float  # distractor count / 7
    warmth: float  # object colour, cold blue (0) to warm orange (1)
    roundness: float  # spiky star (0) to circle (1)
    accent: float  # size of the distinctive accent mark, 0 when absent
    size: float  # object radius, smallest (0) to largest (1)
    distortion: float  # how squashed or stretched the object is
    eyes: float  # googly eyes / 3

    def true_scores(self) -> dict[str, float]:
        """Noise-free score per trait (in the trait's own range)."""
        u = {
            "Aesthetics": 0.45 * (1 - self.offset) + 0.35 * self.contrast + 0.20 * (1 - self.clutter),
            "Emotional_Valence": 0.60 * self.warmth + 0.40 * self.roundness,
            "Memorability": 0.50 * self.accent + 0.30 * self.size + 0.20 * (1 - self.clutter),
            "Funniness": 0.55 * self.distortion + 0.45 * self.eyes,
        }
        out = {}
        for name, v in u.items():
            t = get_trait(name)
            out[name] = t.low + t.span * float(np.clip(v, 0.0, 1.0))
        return out


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]) / 255.0)


def _with_luma(rgb: np.ndarray, target: float) -> np.ndarray:
    """Scale a colour towards black or white until its luminance is ``target`` (keeps its hue)."""
    cur = max(_luma(rgb), 1e-3)
    if target <= cur:
        return rgb * target / cur
    w = (target - cur) / max(1.0 - cur, 1e-3)
    return rgb + (255.0 - rgb) * w


def _polygon(cx: float, cy: float, rx: float, ry: float, roundness: float, spin: float) -> list[tuple[float, float]]:
    # A 7-pointed star whose inner radius grows to the outer one as roundness -> 1 (a circle at 1).
    n, pts = 7, []
    inner = 0.35 + 0.65 * roundness
    for k in range(4 * n):
        a = spin + math.pi * k / (2 * n)
        spike = 1.0 if k % 4 == 0 else (inner if k % 4 == 2 else (1 + inner) / 2)
        r = 1.0 if roundness > 0.97 else spike
        pts.append((cx + rx * r * math.cos(a), cy + ry * r * math.sin(a)))
    return pts


# What each pixel of :func:`draw_item`'s mask shows (0: background); later layers cover earlier ones.
MASK_LAYERS = ("clutter", "object", "accent", "eyes")
MASK_VALUE = {name: k + 1 for k, name in enumerate(MASK_LAYERS)}  # the mask's pixel value for each layer


def draw_item(rng: np.random.Generator, size: int = 56, with_mask: bool = False):
    """Draw one image; return it with the factors it realises (and, with ``with_mask``, a ``size x size`` uint8
    array telling which of :data:`MASK_LAYERS` each pixel shows, 1-based; drawing it takes nothing from ``rng``, so
    the image and factors are the same either way)."""
    s = size / 56.0  # every length below is for 56x56 and scales with the image
    # Background: gradient between two random colours plus faint stripes (random angle and strength).
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    bg_luma = rng.uniform(0.15, 0.85)
    c1, c2 = _with_luma(c1, bg_luma + rng.uniform(-0.1, 0.1)), _with_luma(c2, bg_luma + rng.uniform(-0.1, 0.1))
    yy, xx = np.mgrid[0:size, 0:size] / size
    ang = rng.uniform(0, math.pi)
    g = (np.cos(ang) * xx + np.sin(ang) * yy)[..., None]
    g = (g - g.min()) / max(float(np.ptp(g)), 1e-6)
    stripes = rng.uniform(0, 25) * np.sin(2 * math.pi * rng.uniform(2, 6) * (np.sin(ang) * xx - np.cos(ang) * yy))
    bg = np.clip(c1 * (1 - g) + c2 * g + stripes[..., None], 0, 255)
    img = Image.fromarray(bg.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    mask = Image.new("L", (size, size), 0)
    mdraw = ImageDraw.Draw(mask)
    layer = MASK_VALUE
    bg_l = _luma(bg.reshape(-1, 3).mean(0))

    # Clutter: small grey-ish squares and dots anywhere.
    n_clutter = int(rng.integers(0, 8))
    for _ in range(n_clutter):
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(1.5, 3.5) * s
        col = tuple(int(v) for v in rng.uniform(60, 200, 3))
        square = rng.random() < 0.5
        for d, fill in ((draw, col), (mdraw, layer["clutter"])):
            (d.rectangle if square else d.ellipse)([x - r, y - r, x + r, y + r], fill=fill)

    # Main object.
    size_f = rng.uniform()
    radius = (7 + 8 * size_f) * s
    distortion = rng.uniform()
    stretch = 1 + 0.8 * distortion
    rx, ry = (radius * stretch, radius / stretch) if rng.random() < 0.5 else (radius / stretch, radius * stretch)
    reach = max(size / 2 - max(rx, ry) - 1, 1.0)
    offset = rng.uniform()
    theta = rng.uniform(0, 2 * math.pi)
    cx, cy = size / 2 + offset * reach * math.cos(theta), size / 2 + offset * reach * math.sin(theta)
    warmth, roundness = rng.uniform(), rng.uniform()
    want = rng.uniform() * 0.6
    # Lighter or darker than the background, whichever has room; object luminance stays in [0.15, 0.85] so that
    # its colour (warm or cold) stays visible.
    sign = 1 if (bg_l + want <= 0.85 and (rng.random() < 0.5 or bg_l - want < 0.15)) else -1
    obj_l = float(np.clip(bg_l + sign * want, 0.15, 0.85))
    colour = _with_luma(COLD * (1 - warmth) + WARM * warmth, obj_l)
    outline = _polygon(cx, cy, rx, ry, roundness, rng.uniform(0, 2 * math.pi))
    draw.polygon(outline, fill=tuple(int(v) for v in colour))
    mdraw.polygon(outline, fill=layer["object"])
    contrast = min(abs(_luma(np.clip(colour, 0, 255)) - bg_l) / 0.6, 1.0)

    # Distinctive accent: a magenta ring-and-dot, present in about two thirds of the images.
    accent = 0.0 if rng.random() < 0.35 else rng.uniform(0.2, 1.0)
    if accent > 0:
        ar = (2 + 5 * accent) * s
        ax, ay = rng.uniform(ar, size - ar), rng.uniform(ar, size - ar)
        draw.ellipse([ax - ar, ay - ar, ax + ar, ay + ar], fill=(255, 0, 200), outline=(255, 255, 255))
        mdraw.ellipse([ax - ar, ay - ar, ax + ar, ay + ar], fill=layer["accent"])
        draw.ellipse([ax - ar / 3, ay - ar / 3, ax + ar / 3, ay + ar / 3], fill=(255, 255, 255))

    # Googly eyes on the object: white discs with black pupils looking in random directions.
    n_eyes = int(rng.integers(0, 4))
    for k in range(n_eyes):
        er = 2.6 * s
        ex = cx + (k - (n_eyes - 1) / 2) * 2.4 * er
        ey = cy - 0.25 * ry
        draw.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(255, 255, 255), outline=(0, 0, 0))
        mdraw.ellipse([ex - er, ey - er, ex + er, ey + er], fill=layer["eyes"])
        px, py = ex + rng.uniform(-1, 1) * er / 2, ey + rng.uniform(-1, 1) * er / 2
        draw.ellipse([px - er / 2, py - er / 2, px + er / 2, py + er / 2], fill=(0, 0, 0))

    factors = Factors(
        offset=offset, contrast=contrast, clutter=n_clutter / 7, warmth=warmth, roundness=roundness,
        accent=accent, size=size_f, distortion=distortion, eyes=n_eyes / 3,
    )
    return (img, factors, np.asarray(mask)) if with_mask else (img, factors)


def simulate_raters(rng: np.random.Generator, trait: str, true_score: float, n_raters: int) -> np.ndarray:
    t = get_trait(trait)
    ratings = true_score + rng.normal(0.0, RATER_NOISE[t.name] * t.span, n_raters)
    return np.clip(ratings, t.low, t.high)


def generate_items(n: int, seed: int = 0, image_size: int = 56, n_raters: int = 6,
                   traits: tuple[str, ...] = TRAITS, prompt_style: str = "short", start: int = 0) -> list[dict]:
    """Items ``start`` to ``start + n - 1`` of the stream that ``seed`` draws, cycling through ``traits``, each with
    its own image, in the canonical schema (plus ``true_score`` and ``ratings``). The first ``start`` are drawn and
    dropped, so items keep their image, scores and id whatever ``start`` is."""
    from cogip.answer import render_answer
    from cogip.data import make_prompt

    if start < 0:
        raise ValueError(f"the first item to draw must be >= 0, got start={start}")
    rng = np.random.default_rng(seed)
    items = []
    for i in range(start + n):
        trait = get_trait(traits[i % len(traits)])
        img, factors = draw_item(rng, image_size)
        true = factors.true_scores()[trait.name]
        ratings = simulate_raters(rng, trait.name, true, n_raters)
        if i < start:
            continue
        score = trait.round(float(ratings.mean()))
        items.append({
            "id": f"synthetic-{seed}-{i:06d}", "image": img, "trait": trait.name, "score": score,
            "score_std": float(ratings.std(ddof=1)) if n_raters > 1 else None,
            "answer": render_answer(trait, score), "prompt": make_prompt(trait.prompt_text(prompt_style)),
            "true_score": true, "ratings": [float(r) for r in ratings],
        })
    return items


def make_benchmark(n_train: int = 2000, n_validation: int = 200, n_test: int = 400, seed: int = 0,
                   image_size: int = 56, n_raters: int = 6, prompt_style: str = "short", train_start: int = 0):
    """The synthetic benchmark as a ``datasets.DatasetDict`` with train / validation / test splits (disjoint seeds).
    The training split holds items ``train_start`` to ``train_start + n_train - 1`` of its stream: a later stage
    can train on items an earlier one never saw."""
    from datasets import DatasetDict

    from cogip.data import items_to_dataset

    sizes = dict(zip(SPLITS, ((n_train, train_start), (n_validation, 0), (n_test, 0))))
    return DatasetDict({
        split: items_to_dataset(generate_items(n, seed * 1000 + k, image_size, n_raters, prompt_style=prompt_style,
                                               start=start))
        for k, (split, (n, start)) in enumerate(sizes.items())
    })


def _srcc(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def reliability(dataset) -> dict[str, dict[str, float]]:
    """Per trait: split-half SRCC of the simulated raters (odd vs even raters; None with one rater), its
    Spearman-Brown correction to the full panel (for two equal halves; an odd panel's halves differ by one rater),
    and ``ceiling_srcc``: the SRCC between the noise-free score and the panel mean, the best a model that saw the
    truth perfectly could reach against these labels."""
    if "trait" not in dataset.column_names:
        raise TypeError(f"reliability takes one split (e.g. make_benchmark()['test']), not {type(dataset).__name__} "
                        f"with {', '.join(dataset) if isinstance(dataset, dict) else dataset.column_names}")
    out = {}
    traits = dataset["trait"]
    ratings, scores, true = dataset["ratings"], dataset["score"], dataset["true_score"]
    for name in dict.fromkeys(traits):
        idx = [i for i, t in enumerate(traits) if t == name]
        r = np.array([ratings[i] for i in idx])
        half = _srcc(r[:, 0::2].mean(1), r[:, 1::2].mean(1)) if r.shape[1] > 1 else None
        out[name] = {
            "n": len(idx),
            "split_half_srcc": half,
            "spearman_brown": None if half is None else 2 * half / (1 + half),
            "ceiling_srcc": _srcc([true[i] for i in idx], [scores[i] for i in idx]),
        }
    return out
