"""Perception pretraining of the tiny Qwen2.5-VL's vision tower: the stand-in for the pretrained vision a real
Qwen2.5-VL checkpoint comes with.

A real checkpoint already sees colour, shape, size and position before anyone fine-tunes it on people's judgments.
A freshly initialised tiny model sees nothing, and one noisy score per image, reaching the vision tower through a
random language model, is far too weak a signal for it to learn to see within the demo's minutes: the language model
learns each trait's score marginal and leaves the image unread (measured: no trait's SRCC above noise after 1,500
SFT steps). So :func:`pretrain_vision` first trains the vision tower and merger, through a small temporary head on
the merged image tokens, to regress the nine visible attributes of synthetic images (:class:`cogip.synthetic.
Factors`: position, contrast, clutter, colour, shape, accent mark, size, stretch, eyes). It never sees a trait score
or a rater; how people turn those attributes into aesthetics, funniness, valence and memorability is left to SFT and
GRPO. The images come from a seed of their own, apart from the benchmark's splits.

The head reads the *mean* of the merged image tokens, as an attention head of the language model reads them (a
weighted average), not their concatenation: features that are only readable token by token are lost to the tiny
language model. Measured (validation, 400 items, expected decoding, same SFT recipe): with a head on the
concatenated tokens the SFT model reached mean SRCC 0.25 (its last hidden state held little more: ridge probe 0.33),
with the head on the mean 0.49.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

PRETRAIN_RECORD = "vision_pretraining.json"  # written last: its presence means the pretraining finished
PRETRAIN_SEED = 7_000_003  # far from the benchmark's split seeds (1000 * seed + 0, 1, 2)


def _images(processor, n: int, rng: np.random.Generator, side: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    from cogip.synthetic import draw_item

    drawn = [draw_item(rng, side) for _ in range(n)]
    enc = processor.image_processor(images=[im for im, _ in drawn], return_tensors="pt")
    pixels = enc["pixel_values"].view(n, -1, enc["pixel_values"].shape[-1])  # (images, patches, patch dim)
    factors = np.array([dataclasses.astuple(f) for _, f in drawn], dtype=np.float32)
    return pixels, enc["image_grid_thw"][:1], factors


def pretrain_vision(model_dir: str | Path, steps: int = 800, batch_size: int = 64, n_images: int = 8000,
                    n_heldout: int = 400, learning_rate: float = 3e-3, seed: int = PRETRAIN_SEED,
                    progress: bool = True) -> dict:
    """Train the vision tower and merger of the tiny checkpoint in ``model_dir`` to see the synthetic images'
    visible attributes; save the model back in place and write :data:`PRETRAIN_RECORD` (steps, losses and the
    held-out SRCC per attribute), which is also returned."""
    from scipy.stats import spearmanr
    from tqdm.auto import tqdm
    from transformers import Qwen2_5_VLForConditionalGeneration

    from cogip.models import load_processor
    from cogip.synthetic import Factors

    model_dir = Path(model_dir)
    processor = load_processor(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    visual = model.model.visual
    side = math.isqrt(int(processor.image_processor.size["longest_edge"]))  # the tiny processor keeps side x side
    rng = np.random.default_rng(seed)
    pixels, grid, factors = _images(processor, n_images + n_heldout, rng, side)
    hidden = model.config.text_config.hidden_size
    tokens = int(grid.prod()) // visual.spatial_merge_size ** 2
    torch.manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.Linear(hidden, 128), torch.nn.GELU(),
                               torch.nn.Linear(128, len(dataclasses.fields(Factors))))
    targets = torch.from_numpy(factors)

    def predict(idx: torch.Tensor) -> torch.Tensor:
        out = visual(pixels[idx].flatten(0, 1), grid_thw=grid.repeat(len(idx), 1))
        merged = getattr(out, "pooler_output", out)  # (images * tokens, hidden)
        return head(merged.reshape(len(idx), tokens, hidden).mean(1))  # read as attention would: averaged

    params = list(visual.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    visual.train()
    losses = []
    for _ in tqdm(range(steps), desc="vision pretraining", disable=not progress):
        idx = torch.from_numpy(rng.integers(0, n_images, batch_size))
        loss = torch.nn.functional.mse_loss(predict(idx), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    visual.eval()
    with torch.no_grad():
        held = torch.arange(n_images, n_images + n_heldout)
        pred = torch.cat([predict(held[i:i + 100]) for i in range(0, n_heldout, 100)]).numpy()
    names = [f.name for f in dataclasses.fields(Factors)]
    record = {"steps": steps, "batch_size": batch_size, "n_images": n_images, "learning_rate": learning_rate,
              "seed": seed, "first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:])),
              "heldout_srcc": {n: float(spearmanr(pred[:, j], factors[n_images:, j]).statistic)
                               for j, n in enumerate(names)}}
    model.save_pretrained(model_dir, safe_serialization=True)
    (model_dir / PRETRAIN_RECORD).write_text(json.dumps(record, indent=2))
    return record
