"""Benchmark: how legible each visible attribute of the synthetic images is from raw pixels to a small CNN (no ViT,
no Qwen): a yardstick for the tiny vision tower's pretraining (``bench/vision_pretraining.py``), which reads the same
nine attributes of the same 8,000 + 400 images (the pretraining's own seed). If a convolutional network trained
directly on the pixels cannot read an attribute either, the ViT is not what hides it.

    OMP_NUM_THREADS=1 python bench/pixel_legibility.py                 # 16 channels, 1,200 steps: about 7 minutes
    OMP_NUM_THREADS=1 python bench/pixel_legibility.py --channels 32 --steps 3000   # about 30 minutes: reads more

Prints the held-out SRCC per attribute and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cnn(channels: int, outputs: int, side: int = 56):
    import torch

    c, act = channels, torch.nn.GELU
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, c, 3, padding=1), act(), torch.nn.Conv2d(c, c, 3, padding=1), act(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(c, 2 * c, 3, padding=1), act(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(2 * c, 2 * c, 3, padding=1), act(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(2 * c * (side // 8) ** 2, 128), act(), torch.nn.Linear(128, outputs))


def main() -> None:
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from cogip.synthetic import Factors, draw_item
    from cogip.tiny_pretrain import PRETRAIN_SEED

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--n_images", type=int, default=8000)
    p.add_argument("--n_heldout", type=int, default=400)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()
    rng = np.random.default_rng(PRETRAIN_SEED)
    n = args.n_images
    drawn = [draw_item(rng) for _ in range(n + args.n_heldout)]
    x = torch.tensor(np.stack([np.asarray(im, dtype=np.float32) / 255 for im, _ in drawn])).permute(0, 3, 1, 2)
    y = torch.tensor(np.array([dataclasses.astuple(f) for _, f in drawn], dtype=np.float32))
    net = cnn(args.channels, y.shape[1])
    opt = torch.optim.AdamW(net.parameters(), args.learning_rate)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.learning_rate, total_steps=args.steps)
    for _ in range(args.steps):
        idx = torch.randint(0, n, (64,))
        loss = torch.nn.functional.mse_loss(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        pred = net(x[n:]).numpy()
    names = [f.name for f in dataclasses.fields(Factors)]
    srcc = {name: float(spearmanr(pred[:, j], y[n:, j]).statistic) for j, name in enumerate(names)}
    mean = sum(srcc.values()) / len(srcc)
    seconds = time.perf_counter() - start
    print(" ".join(f"{k} {v:.2f}" for k, v in srcc.items()) + f" | mean {mean:.3f} | {seconds:.0f} s")
    print(json.dumps({"bench": "pixel_legibility", "channels": args.channels, "steps": args.steps,
                      "heldout_srcc": srcc, "mean_srcc": mean, "last_loss": float(loss), "seconds": seconds}))


if __name__ == "__main__":
    main()
