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

A second, dense target teaches the patch embedding to pick small things out of the busy background: for each merged
image token, the share of its pixels covered by clutter, the object, the accent mark and the googly eyes (masks drawn
with the same PIL calls as the image, :data:`cogip.synthetic.MASK_LAYERS`), standardised per layer, through a linear
head on each token, weighted by ``dense_weight``. One global regression per image left the eyes and the clutter
nearly unread (held-out SRCC 0.24 and 0.14 after 800 steps); the per-token coverage raised them to 0.46 and 0.60 and
the mean over the nine attributes from 0.52 to 0.63 in the same 800 steps and time. Steps are what it lacks most
after that: 2,400 steps instead of 800 took the attribute mean to 0.72 (eyes 0.81) and the SFT model's validation
mean SRCC from 0.56 to 0.69 (BENCHMARKS.md). The steps run the tower through
:func:`cogip.batched_vision.batched_vision` (all 64 images attended at once, positions precomputed, patches embedded
by one matrix product): the same tower and weights, 1.7x as fast as its stock forward, which is what lets the demo
afford 2,400 of them.
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


def _images(processor, n: int, rng: np.random.Generator, side: int, cell: int):
    """``n`` drawn images as patches, their grid, their factors, and per merged token (``cell`` pixels square, raster
    order as the vision tower emits them) the share of its pixels each of the mask layers covers."""
    from cogip.synthetic import MASK_VALUE, draw_item

    drawn = [draw_item(rng, side, with_mask=True) for _ in range(n)]
    enc = processor.image_processor(images=[im for im, _, _ in drawn], return_tensors="pt")
    pixels = enc["pixel_values"].view(n, -1, enc["pixel_values"].shape[-1])  # (images, patches, patch dim)
    factors = np.array([dataclasses.astuple(f) for _, f, _ in drawn], dtype=np.float32)
    masks = np.stack([m for _, _, m in drawn])  # (images, side, side)
    k = side // cell
    cells = masks.reshape(n, k, cell, k, cell).transpose(0, 1, 3, 2, 4).reshape(n, k * k, cell * cell)
    cover = np.stack([(cells == v).mean(-1) for v in MASK_VALUE.values()], -1).astype(np.float32)
    return pixels, enc["image_grid_thw"][:1], factors, cover


def pretrain_vision(model_dir: str | Path, steps: int = 800, batch_size: int = 64, n_images: int = 8000,
                    n_heldout: int = 400, learning_rate: float = 3e-3, dense_weight: float = 0.5,
                    seed: int = PRETRAIN_SEED, progress: bool = True) -> dict:
    """Train the vision tower and merger of the tiny checkpoint in ``model_dir`` to see the synthetic images'
    visible attributes and what each image token covers; save the model back in place and write
    :data:`PRETRAIN_RECORD` (steps, losses and the held-out SRCC per attribute), which is also returned."""
    from scipy.stats import spearmanr
    from tqdm.auto import tqdm
    from transformers import Qwen2_5_VLForConditionalGeneration

    from cogip.batched_vision import batched_vision
    from cogip.models import load_processor
    from cogip.synthetic import Factors

    model_dir = Path(model_dir)
    processor = load_processor(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    visual = model.model.visual
    side = math.isqrt(int(processor.image_processor.size["longest_edge"]))  # the tiny processor keeps side x side
    rng = np.random.default_rng(seed)
    cell = model.config.vision_config.patch_size * visual.spatial_merge_size
    pixels, grid, factors, cover = _images(processor, n_images + n_heldout, rng, side, cell)
    hidden = model.config.text_config.hidden_size
    tokens = int(grid.prod()) // visual.spatial_merge_size ** 2
    torch.manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.Linear(hidden, 128), torch.nn.GELU(),
                               torch.nn.Linear(128, len(dataclasses.fields(Factors))))
    dense_head = torch.nn.Linear(hidden, cover.shape[-1])
    targets = torch.from_numpy(factors)
    # Per-token coverage, standardised per layer so that small things (eyes, clutter) weigh as much as the object.
    cover_t = torch.from_numpy(cover)
    cover_t = (cover_t - cover_t[:n_images].mean((0, 1))) / cover_t[:n_images].std((0, 1)).clamp_min(1e-6)

    params = list(visual.parameters()) + list(head.parameters()) + list(dense_head.parameters())
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    losses = []
    with batched_vision(visual) as vision:  # the same tower, 1.7x as fast on these equal-sized images

        def predict(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = vision(pixels[idx].flatten(0, 1), grid.repeat(len(idx), 1))
            merged = out.pooler_output.reshape(len(idx), tokens, hidden)
            return head(merged.mean(1)), dense_head(merged)  # the factors read as attention would: averaged

        visual.train()
        for _ in tqdm(range(steps), desc="vision pretraining", disable=not progress):
            idx = torch.from_numpy(rng.integers(0, n_images, batch_size))
            pred, dense = predict(idx)
            loss = torch.nn.functional.mse_loss(pred, targets[idx]) + dense_weight * torch.nn.functional.mse_loss(
                dense, cover_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        visual.eval()
        with torch.no_grad():
            held = torch.arange(n_images, n_images + n_heldout)
            pred = torch.cat([predict(held[i:i + 100])[0] for i in range(0, n_heldout, 100)]).numpy()
    names = [f.name for f in dataclasses.fields(Factors)]
    record = {"steps": steps, "batch_size": batch_size, "n_images": n_images, "learning_rate": learning_rate,
              "dense_weight": dense_weight,
              "seed": seed, "first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:])),
              "heldout_srcc": {n: float(spearmanr(pred[:, j], factors[n_images:, j]).statistic)
                               for j, n in enumerate(names)}}
    model.save_pretrained(model_dir, safe_serialization=True)
    (model_dir / PRETRAIN_RECORD).write_text(json.dumps(record, indent=2))
    return record
