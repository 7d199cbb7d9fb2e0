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
mean SRCC from 0.56 to 0.69 (BENCHMARKS.md). Those 2,400 steps of 64 went 19 times over 8,000 images, and the tower
learnt them rather than how to see: 16,000 images, each shown in a random one of its eight orientations (none changes
an attribute), took the held-out attribute mean to 0.79 and the SFT model on top to 0.74. The steps run the tower
through :func:`cogip.batched_vision.batched_vision` (all the step's images attended at once, positions precomputed,
patches embedded by one matrix product): the same tower and weights, 1.7x as fast as its stock forward, on the
cores the stages after it leave idle (two threads: 1.3x as fast as one), which is what lets the demo afford 3,200 of
them. With 7-pixel patches (16 image tokens, the tiny model since 2026-12-02) a step of 64 images costs three times as
much, so the tiny config's 3,200 steps take 32 images each: about half the time of 64 (held-out attribute mean 0.85
against 0.89), and the SFT model on top still beats the one on 14-pixel patches (validation mean SRCC 0.796 against
0.772 on the default draw; BENCHMARKS.md, "Sixteen image tokens").

The dense head also regresses where each token lies: its centre's x and y and its distance from the image centre, the
same for every image (:func:`_position_maps`). The tower's only positions are rotary ones, relative between tokens, so
the plain mean of its tokens cannot tell a centred object from an off-centre one unless each token says where it
lies, which it can learn from where the image's edges are. With 4 tokens every token touches two edges and the
held-out offset (how far the object sits from the centre, 45 % of Aesthetics) reached 0.84; with 16 it fell to 0.63,
and the position targets take it to 0.88 (the SFT model's validation Aesthetics 0.70 -> 0.84 on the default draw;
BENCHMARKS.md, "Where each token lies").
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import torch

from cogip.files import write_json_atomic

PRETRAIN_RECORD = "vision_pretraining.json"  # written last: its presence means the pretraining finished
PRETRAIN_SEED = 7_000_003  # far from the benchmark's split seeds (1000 * seed + 0, 1, 2)


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Run the block on ``threads`` torch threads, then restore. None: ``OMP_NUM_THREADS`` when it is set (two threads,
    one on a core another process keeps busy, take about twice as long as one), else the cores this process may use,
    at most 4."""
    saved = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)  # macOS
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()  # OpenMP also allows "4,2": the outer level
    torch.set_num_threads(threads or (int(omp) if omp.isdigit() and int(omp) > 0 else min(cores, 4)))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _draw(n: int, rng: np.random.Generator, side: int):
    """``n`` drawn images as a uint8 ``(n, 3, side, side)`` tensor, their factors and their layer masks."""
    from cogip.synthetic import draw_item

    drawn = [draw_item(rng, side, with_mask=True) for _ in range(n)]
    images = torch.from_numpy(np.stack([np.asarray(im) for im, _, _ in drawn])).permute(0, 3, 1, 2).contiguous()
    factors = np.array([dataclasses.astuple(f) for _, f, _ in drawn], dtype=np.float32)
    return images, torch.from_numpy(factors), torch.from_numpy(np.stack([m for _, _, m in drawn]))


def _patches(image_processor, images: torch.Tensor, merge: int) -> torch.Tensor:
    """uint8 images ``(n, 3, side, side)`` (already the processor's size) as the processor's patches ``(n, tokens,
    patch dim)``: rescaled, normalised and patchified by its own steps."""
    ip = image_processor
    mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
    x = (images.float() * ip.rescale_factor - mean) / std
    return ip.patchify(x, patch_size=ip.patch_size, merge_size=merge, temporal_patch_size=ip.temporal_patch_size)[0]


def _coverage(masks: torch.Tensor, cell: int) -> torch.Tensor:
    """Per merged token (``cell`` pixels square, raster order as the vision tower emits them), the share of its
    pixels each of the mask layers covers: ``(n, tokens, layers)``."""
    from cogip.synthetic import MASK_VALUE

    n, side = masks.shape[0], masks.shape[-1]
    k = side // cell
    cells = masks.reshape(n, k, cell, k, cell).permute(0, 1, 3, 2, 4).reshape(n, k * k, cell * cell)
    return torch.stack([(cells == v).float().mean(-1) for v in MASK_VALUE.values()], -1)


def _position_maps(k: int) -> torch.Tensor:
    """Where each merged token of a ``k`` x ``k`` grid lies (raster order): its centre's x and y in [-1, 1] and its
    distance from the image centre, ``(k * k, 3)``."""
    c = (torch.arange(k, dtype=torch.float32) + 0.5) / k * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten(), (x ** 2 + y ** 2).sqrt().flatten()], -1)


def _dihedral(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` (``(n, ..., side, side)``) turned by one of the square's eight symmetries (``which``:
    0-3 quarter turns, 4-7 the same after a mirror). None changes a visible attribute: position is measured from the
    centre, and shape, size, stretch, colour, counts and contrast do not depend on orientation."""
    out = x.clone()
    for w in which.unique().tolist():
        sel = which == w
        y = x[sel].flip(-1) if w >= 4 else x[sel]
        out[sel] = torch.rot90(y, w % 4, dims=(-2, -1))
    return out


def pretrain_vision(model_dir: str | Path, steps: int = 800, batch_size: int = 32, n_images: int = 16000,
                    n_heldout: int = 400, learning_rate: float = 3e-3, dense_weight: float = 0.5,
                    augment: bool = True, position_targets: bool = True, threads: int | None = None,
                    seed: int = PRETRAIN_SEED, progress: bool = True) -> dict:
    """Train the vision tower and merger of the tiny checkpoint in ``model_dir`` to see the synthetic images'
    visible attributes and what each image token covers; save the model back in place and write
    :data:`PRETRAIN_RECORD` (steps, losses and the held-out SRCC per attribute), which is also returned.
    ``augment`` shows each training image in a random one of its eight orientations (:func:`_dihedral`).
    ``position_targets``: the dense head also regresses where each token lies (:func:`_position_maps`).
    ``threads``: torch threads while it runs (default: ``OMP_NUM_THREADS`` when set, else the cores this process may
    use, at most 4, as the run does nothing else meanwhile); the stage after it gets its own setting back."""
    from scipy.stats import spearmanr
    from tqdm.auto import tqdm
    from transformers import Qwen2_5_VLForConditionalGeneration

    from cogip.batched_vision import batched_vision
    from cogip.models import load_processor
    from cogip.synthetic import MASK_LAYERS, Factors

    model_dir = Path(model_dir)
    processor = load_processor(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    visual = model.model.visual
    merge = visual.spatial_merge_size
    side = math.isqrt(int(processor.image_processor.size["longest_edge"]))  # the tiny processor keeps side x side
    rng = np.random.default_rng(seed)
    images, targets, masks = _draw(n_images + n_heldout, rng, side)
    cell = model.config.vision_config.patch_size * merge
    grid = torch.tensor([[1, side // cell * merge, side // cell * merge]])
    hidden = model.config.text_config.hidden_size
    tokens = (side // cell) ** 2
    torch.manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.Linear(hidden, 128), torch.nn.GELU(),
                               torch.nn.Linear(128, len(dataclasses.fields(Factors))))
    where = _position_maps(side // cell)
    if not position_targets:
        where = where[:, :0]  # no position columns: the coverage targets alone
    dense_head = torch.nn.Linear(hidden, len(MASK_LAYERS) + where.shape[1])

    def dense_targets(m: torch.Tensor) -> torch.Tensor:
        return torch.cat([_coverage(m, cell), where.expand(len(m), -1, -1)], -1)

    # Per-token coverage (and position), standardised per layer so that small things (eyes, clutter) weigh as much as
    # the object (the symmetries only move coverage between tokens: the statistics hold for turned images too).
    cover = dense_targets(masks[:n_images])
    cover_mean, cover_std = cover.mean((0, 1)), cover.std((0, 1)).clamp_min(1e-6)

    params = list(visual.parameters()) + list(head.parameters()) + list(dense_head.parameters())
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    losses = []
    # the same tower, 1.7x as fast on these equal-sized images, on the idle cores
    with _torch_threads(threads), batched_vision(visual) as vision:

        def predict(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pixels = _patches(processor.image_processor, x, merge)
            out = vision(pixels.flatten(0, 1), grid.repeat(len(x), 1))
            merged = out.pooler_output.reshape(len(x), tokens, hidden)
            return head(merged.mean(1)), dense_head(merged)  # the factors read as attention would: averaged

        used_threads = torch.get_num_threads()  # they change the rounding, so the figures after it
        visual.train()
        for _ in tqdm(range(steps), desc="vision pretraining", disable=not progress):
            idx = torch.from_numpy(rng.integers(0, n_images, batch_size))
            x, m = images[idx], masks[idx]
            if augment:
                which = torch.from_numpy(rng.integers(0, 8, batch_size))
                x, m = _dihedral(x, which), _dihedral(m, which)
            pred, dense = predict(x)
            loss = torch.nn.functional.mse_loss(pred, targets[idx]) + dense_weight * torch.nn.functional.mse_loss(
                dense, (dense_targets(m) - cover_mean) / cover_std)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        visual.eval()
        with torch.no_grad():
            held = images[n_images:]
            pred = torch.cat([predict(held[i:i + 100])[0] for i in range(0, n_heldout, 100)]).numpy()
    factors = targets.numpy()
    names = [f.name for f in dataclasses.fields(Factors)]
    record = {"steps": steps, "batch_size": batch_size, "n_images": n_images, "learning_rate": learning_rate,
              "dense_weight": dense_weight, "augment": augment, "position_targets": position_targets,
              "threads": used_threads,
              "seed": seed, "first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:])),
              "heldout_srcc": {n: float(spearmanr(pred[:, j], factors[n_images:, j]).statistic)
                               for j, n in enumerate(names)}}
    model.save_pretrained(model_dir, safe_serialization=True)
    write_json_atomic(model_dir / PRETRAIN_RECORD, record)  # never half there: its presence means finished
    return record
