"""Benchmark: how well the tiny model's vision pretraining makes each visible attribute of the synthetic images
legible, and how long it takes, for a given tiny size and pretraining setting.

Builds a fresh tiny Qwen2.5-VL, runs ``cogip.tiny_pretrain.pretrain_vision`` on it (the demo's default: 800 steps of
64 images, the per-token coverage head at weight 0.5) and prints the held-out SRCC of each of the nine attributes
(400 images), their mean and the wall time. The last line printed is one JSON object.

    OMP_NUM_THREADS=1 python bench/vision_pretraining.py                          # the demo's setting
    OMP_NUM_THREADS=1 python bench/vision_pretraining.py --dense_weight 0         # the mean-token head alone
    OMP_NUM_THREADS=1 python bench/vision_pretraining.py --vision_hidden_size 128 --vision_depth 3 --steps 2400
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from cogip.models import TinySizes, build_tiny_qwen2_5_vl
    from cogip.tiny_pretrain import pretrain_vision

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(TinySizes):
        p.add_argument(f"--{f.name}", type=int, default=f.default, help="tiny model size (cogip.models.TinySizes)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--dense_weight", type=float, default=0.5, help="weight of the per-token coverage head (0: off)")
    args = p.parse_args()
    sizes = TinySizes(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TinySizes)})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_qwen2_5_vl(tmp, sizes)
        record = pretrain_vision(tmp, steps=args.steps, learning_rate=args.learning_rate,
                                 dense_weight=args.dense_weight)
    seconds = time.perf_counter() - start
    srcc = record["heldout_srcc"]
    mean = sum(srcc.values()) / len(srcc)
    print(" ".join(f"{k} {v:.2f}" for k, v in srcc.items()) + f" | mean {mean:.3f} | {seconds:.0f} s")
    print(json.dumps({"bench": "vision_pretraining", "sizes": dataclasses.asdict(sizes), "steps": args.steps,
                      "learning_rate": args.learning_rate, "dense_weight": args.dense_weight,
                      "heldout_srcc": srcc, "mean_srcc": mean, "seconds": seconds}))


if __name__ == "__main__":
    main()
