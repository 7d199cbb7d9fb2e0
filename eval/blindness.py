"""Does the model look at the image? Re-score the same items with blank and with shuffled images.

A model that reads the trait from the prompt and answers a habitual score moves little when its image is swapped
for a grey square or for another item's image. We report, per trait and per condition, how far the predictions
move (mean absolute change, as a share of the trait's range), how many change at all, and the SRCC with people
that the model keeps without the right image. A trait is flagged ``ignores_image`` when shuffled images move the
predictions by less than ``tolerance`` of the range on average. A trait with no readable answer among the original
predictions cannot be judged (every one is the same stand-in score, whatever the image): it is listed as
``unreadable`` and ``ignores_image`` is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from cogip.traits import get_trait
from eval import metrics as M
from eval.predict import Prediction, predict
from eval.scoring import filled_scores, readable

CONDITIONS = ("blank", "shuffled")


def blank_images(images: Sequence) -> list:
    """A mid-grey image of each original's size."""
    return [Image.new("RGB", im.size, (128, 128, 128)) for im in images]


def shuffled_images(images: Sequence, seed: int = 0) -> list:
    """The same images, each moved to another item (a random derangement: no item keeps its own)."""
    n = len(images)
    if n < 2:
        return list(images)
    perm = np.random.default_rng(seed).permutation(n)
    perm = np.roll(perm, 1)[np.argsort(perm)]  # i -> the item after i in a random cycle: never i itself
    return [images[j] for j in perm]


def movement(original: Sequence[Prediction], altered: Sequence[Prediction], unparsable: str = "midpoint",
             tolerance: float = 0.02, train_means: dict[str, float] | None = None) -> dict[str, dict]:
    """Per trait: how far ``altered`` predictions moved from ``original`` ones (same items, same order);
    unreadable answers count as the ``unparsable`` policy says (``train_means`` for its ``train_mean``)."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(p.trait for p in original):
        trait = get_trait(name)
        pairs = [(a, b) for a, b in zip(original, altered, strict=True) if a.trait == name]
        x = np.array(filled_scores([a for a, _ in pairs], trait, unparsable, train_means))
        y = np.array(filled_scores([b for _, b in pairs], trait, unparsable, train_means))
        human = np.array([a.human for a, _ in pairs])
        shift = float(np.mean(np.abs(x - y)) / trait.span)
        readable_rate = float(np.mean([readable(a) for a, _ in pairs]))
        srcc_alt = M.srcc(y, human)
        out[name] = {"n": len(pairs), "mean_abs_shift_of_range": shift,
                     "changed_rate": float(np.mean(np.abs(x - y) > 1e-9)),
                     "srcc_with_people": None if math.isnan(srcc_alt) else srcc_alt,
                     "srcc_with_original": None if math.isnan(M.srcc(x, y)) else M.srcc(x, y),
                     "readable_rate": readable_rate,
                     "ignores_image": None if readable_rate == 0 else shift < tolerance}
    return out


def altered_predictions(model, processor, dataset, decoding: str = "greedy", batch_size: int = 16,
                        max_new_tokens: int = 24, num_samples: int = 8, temperature: float = 1.0, seed: int = 0,
                        progress: bool = True) -> dict[str, list[Prediction]]:
    """The predictions of ``dataset`` again, once with blank and once with shuffled images (per condition)."""
    images = list(dataset["image"])
    return {cond: predict(model, processor, dataset, decoding=decoding, batch_size=batch_size,
                          max_new_tokens=max_new_tokens, num_samples=num_samples, temperature=temperature,
                          images=imgs, seed=seed, progress=f"blindness ({cond})" if progress else False)
            for cond, imgs in (("blank", blank_images(images)), ("shuffled", shuffled_images(images, seed)))}


def blindness_result(original: Sequence[Prediction], altered: dict[str, Sequence[Prediction]],
                     unparsable: str = "midpoint", tolerance: float = 0.02,
                     train_means: dict[str, float] | None = None) -> dict:
    """How far each condition of :func:`altered_predictions` moved ``original`` (the same items, in order).

    Returns ``{"blank": {trait: {...}}, "shuffled": {trait: {...}}, "flagged": [traits that ignore the image],
    "unreadable": [traits without one readable original answer: not judged]}``.
    """
    result: dict = {cond: movement(original, altered[cond], unparsable, tolerance, train_means)
                    for cond in CONDITIONS}
    result["flagged"] = [t for t, r in result["shuffled"].items() if r["ignores_image"]]
    result["unreadable"] = [t for t, r in result["shuffled"].items() if r["ignores_image"] is None]
    result["tolerance"] = tolerance
    return result


def blindness_check(model, processor, dataset, original: Sequence[Prediction], decoding: str = "greedy",
                    batch_size: int = 16, max_new_tokens: int = 24, num_samples: int = 8, temperature: float = 1.0,
                    unparsable: str = "midpoint", tolerance: float = 0.02, seed: int = 0,
                    progress: bool = True, train_means: dict[str, float] | None = None) -> dict:
    """Predict ``dataset`` again with blank and with shuffled images and compare with ``original`` (which must have
    been predicted with the same ``decoding``): :func:`altered_predictions`, then :func:`blindness_result`."""
    altered = altered_predictions(model, processor, dataset, decoding=decoding, batch_size=batch_size,
                                  max_new_tokens=max_new_tokens, num_samples=num_samples, temperature=temperature,
                                  seed=seed, progress=progress)
    return blindness_result(original, altered, unparsable, tolerance, train_means)
