"""Writes a CogIP-Bench release in the upstream file layout (our own prompt wording, random scores, tiny JPEGs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from cogip.answer import render_answer
from cogip.traits import get_trait

TRAITS = ("Aesthetics", "Funniness", "Emotional_Valence", "Memorability")
FULL_TRAIN = {t: 800 for t in TRAITS}  # 3,200 training / GRPO items
FULL_TEST = {"Aesthetics": 120, "Funniness": 199, "Emotional_Valence": 700, "Memorability": 700}  # 1,719
# Scores on bin edges go to the upper bin; every edge appears in the fixture.
EDGES = {"Aesthetics": [0.0, 3.5, 5.0, 6.5, 8.0, 10.0], "Funniness": [3.5, 5.0], "Emotional_Valence": [-3, 0, 3],
         "Memorability": [0.35, 0.5, 0.65, 0.8, 1.0]}


def _scores(rng: np.random.Generator, trait: str, n: int) -> list[float]:
    t = get_trait(trait)
    if trait == "Emotional_Valence":  # integers in the real data
        vals = rng.integers(-3, 4, n).astype(float)
    else:
        vals = np.round(rng.uniform(t.low, t.high, n), 3)
    vals[: len(EDGES[trait])] = EDGES[trait][:n]
    return [float(v) for v in vals]


def _prompt(trait: str) -> str:
    return f"Judge the {trait} of this picture, give a band and a score with three decimals."


def write_release(root: Path, train: dict[str, int] = FULL_TRAIN, test: dict[str, int] = FULL_TEST,
                  seed: int = 0, images: bool = True) -> tuple[Path, Path]:
    """Write the four upstream file kinds under ``root/release`` and tiny images under ``root/images``."""
    rng = np.random.default_rng(seed)
    rel, img_root = root / "release", root / "images"
    conv, grpo = [], []
    (rel / "cognition_scores").mkdir(parents=True, exist_ok=True)
    for trait in TRAITS:
        lines = []
        for k, s in enumerate(_scores(rng, trait, train[trait])):
            image = f"{trait}/{k:06d}.jpg"
            ans = render_answer(trait, s)
            conv.append({"id": f"{k:05d}", "image": [image], "conversations": [
                {"from": "human", "value": "<image>  \n" + _prompt(trait)}, {"from": "gpt", "value": ans}]})
            grpo.append({"id": f"{k:05d}", "image": image, "conversations": [
                {"from": "human", "value": _prompt(trait)}, {"from": "gpt", "value": f"<answer>{ans}</answer>"}]})
            lines.append(f"{k:06d}.jpg\t{s:.3f}")
        (rel / "cognition_scores" / f"{trait}_scores.txt").write_text("\n".join(lines) + "\n")
        msgs, answers = [], []
        start = train[trait]
        for k, s in enumerate(_scores(rng, trait, test[trait])):
            image = f"{trait}/{start + k:06d}.jpg"
            msgs.append([{"role": "user", "content": [{"type": "image", "image": image},
                                                      {"type": "text", "text": "<image>  \n" + _prompt(trait)}]}])
            answers.append(render_answer(trait, s))
        d = rel / "test_msg_file" / trait
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{trait}_messages.json").write_text(json.dumps(msgs, indent=1))
        (d / f"{trait}_scores.json").write_text(json.dumps(answers, indent=1))
        if images:
            (img_root / trait).mkdir(parents=True, exist_ok=True)
            for k in range(train[trait] + test[trait]):
                Image.new("RGB", (4, 4), tuple(int(v) for v in rng.integers(0, 255, 3))).save(
                    img_root / trait / f"{k:06d}.jpg")
    (rel / "cognition_training.json").write_text(json.dumps(conv, indent=1))
    (rel / "training_grpo.json").write_text(json.dumps(grpo, indent=1))
    return rel, img_root
