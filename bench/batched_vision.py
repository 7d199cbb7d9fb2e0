"""Benchmark: one vision pretraining step of the tiny Qwen2.5-VL (forward and backward of the vision tower and merger
on a batch of 56x56 synthetic images) through transformers' stock forward and through
``cogip.batched_vision.batched_vision``, taking turns step by step in one process; also the largest difference
between the two outputs and gradients. The last line printed is one JSON object.

    OMP_NUM_THREADS=1 python bench/batched_vision.py
    OMP_NUM_THREADS=1 python bench/batched_vision.py --batch_size 32 --steps 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import numpy as np
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from cogip.batched_vision import batched_vision
    from cogip.models import build_tiny_qwen2_5_vl, load_processor
    from cogip.synthetic import draw_item

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=64, help="images per step (the pretraining's is 64)")
    p.add_argument("--steps", type=int, default=30, help="timed steps of each kind (after 3 warm-up steps)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_qwen2_5_vl(tmp)
        processor = load_processor(tmp)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp, dtype=torch.float32)
    visual = model.model.visual.train()
    rng = np.random.default_rng(0)
    enc = processor.image_processor(images=[draw_item(rng)[0] for _ in range(args.batch_size)], return_tensors="pt")
    pixels, grid = enc["pixel_values"], enc["image_grid_thw"]
    weights = list(visual.parameters())

    def step(forward) -> tuple[float, torch.Tensor, list[torch.Tensor]]:
        start = time.perf_counter()
        out = forward(pixels, grid).pooler_output
        grads = torch.autograd.grad(out.square().mean(), weights)
        return time.perf_counter() - start, out.detach(), grads

    stock = lambda x, g: visual(x, grid_thw=g)
    times = {"stock": [], "batched": []}
    for k in range(args.steps + 3):
        t, ref, ref_grads = step(stock)
        with batched_vision(visual) as fast:
            t_fast, out, grads = step(fast)
        if k >= 3:
            times["stock"].append(t)
            times["batched"].append(t_fast)
    stock_s, batched_s = statistics.median(times["stock"]), statistics.median(times["batched"])
    print(f"vision step, {args.batch_size} images: stock {stock_s * 1e3:.1f} ms, batched {batched_s * 1e3:.1f} ms, "
          f"speedup {stock_s / batched_s:.2f}")
    print(json.dumps({
        "bench": "batched_vision", "batch_size": args.batch_size, "steps": args.steps, "threads": args.threads,
        "stock_step_s": stock_s, "batched_step_s": batched_s, "speedup": stock_s / batched_s,
        "max_abs_output_diff": float((out - ref).abs().max()),
        "max_abs_grad_diff": max(float((a - b).abs().max()) for a, b in zip(grads, ref_grads))}))


if __name__ == "__main__":
    main()
