"""Benchmark: how well the tiny model's vision pretraining makes each visible attribute of the synthetic images
legible, and how long it takes, for a given tiny size and pretraining setting.

Builds a fresh tiny Qwen2.5-VL, runs ``cogip.tiny_pretrain.pretrain_vision`` on it (the demo's default: 3,200 steps
of 32 images from 16,000 in random orientations, the per-token coverage and position head at weight 0.5) and prints
the held-out SRCC of each of the nine attributes (400 images), their mean and the wall time; then the trait probe:
how well a ridge regression from the mean image token reads each trait score of the synthetic benchmark (validation
SRCC): how much of each trait the vision hands the language model, read linearly. The last line printed is one JSON
object.

    OMP_NUM_THREADS=1 python bench/vision_pretraining.py                          # the demo's setting
    OMP_NUM_THREADS=1 python bench/vision_pretraining.py --dense_weight 0         # the mean-token head alone
    # the settings of earlier tiny configs (BENCHMARKS.md, "Tiny vision pretraining"):
    OMP_NUM_THREADS=1 python bench/vision_pretraining.py --no_position_targets    # 4f72228 to 3c7616e
    OMP_NUM_THREADS=1 python bench/vision_pretraining.py --no_position_targets --patch_size 14 --batch_size 64
    OMP_NUM_THREADS=1 python bench/vision_pretraining.py --no_position_targets --patch_size 14 --batch_size 64 \
        --vision_depth 2 --steps 2400 --n_images 8000 --no_augment                # until 2026-12-02, earlier
    OMP_NUM_THREADS=1 python bench/vision_pretraining.py --no_position_targets --patch_size 14 --batch_size 64 \
        --vision_depth 2 --steps 800 --n_images 8000 --no_augment                 # SFT on top 0.56
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
    p.add_argument("--steps", type=int, default=3200, help="pretraining steps (the tiny SFT config's)")
    p.add_argument("--batch_size", type=int, default=32, help="images per step (the tiny SFT config's)")
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--dense_weight", type=float, default=0.5, help="weight of the per-token coverage head (0: off)")
    p.add_argument("--n_images", type=int, default=16000, help="training images (drawn once)")
    p.add_argument("--no_augment", action="store_true", help="show every image upright (no turns or mirrors)")
    p.add_argument("--no_position_targets", action="store_true",
                   help="no per-token position targets (the tiny recipe until 2026-12-02)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores, at most 4)")
    args = p.parse_args()
    sizes = TinySizes(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TinySizes)})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_qwen2_5_vl(tmp, sizes)
        record = pretrain_vision(tmp, steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                 dense_weight=args.dense_weight, n_images=args.n_images,
                                 augment=not args.no_augment, position_targets=not args.no_position_targets,
                                 threads=args.threads)
        seconds = time.perf_counter() - start
        probe = trait_probe(tmp)
    srcc = record["heldout_srcc"]
    mean = sum(srcc.values()) / len(srcc)
    print(" ".join(f"{k} {v:.2f}" for k, v in srcc.items()) + f" | mean {mean:.3f} | {seconds:.0f} s")
    print("trait probe: " + " ".join(f"{k} {v:.3f}" for k, v in probe.items()))
    print(json.dumps({"bench": "vision_pretraining", "sizes": dataclasses.asdict(sizes), "steps": args.steps,
                      "batch_size": args.batch_size,
                      "learning_rate": args.learning_rate, "dense_weight": args.dense_weight,
                      "n_images": args.n_images, "augment": not args.no_augment,
                      "position_targets": not args.no_position_targets,
                      "heldout_srcc": srcc, "mean_srcc": mean, "seconds": seconds, "trait_probe_srcc": probe}))


def trait_probe(model_dir: str, ridge: float = 10.0) -> dict[str, float]:
    """Validation SRCC per trait (and their mean) of a ridge regression from the mean of an image's merged tokens
    (what an attention head of the language model reads) to the trait score, fitted on the synthetic benchmark's
    4,000 training items (seed 0) and scored on 400 validation items: how much of each trait the pretrained vision
    hands the language model, read linearly."""
    import numpy as np
    import torch
    from scipy.stats import spearmanr
    from transformers import Qwen2_5_VLForConditionalGeneration

    from cogip.models import load_processor
    from cogip.synthetic import TRAITS, make_benchmark

    processor = load_processor(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    splits = make_benchmark(n_train=4000, n_validation=400, n_test=0, seed=0)
    splits = {name: splits[name] for name in ("train", "validation")}

    def features(ds) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(ds), 200):
                enc = processor.image_processor(images=[im.convert("RGB") for im in ds[i:i + 200]["image"]],
                                                return_tensors="pt")
                merged = model.model.visual(enc["pixel_values"], grid_thw=enc["image_grid_thw"])
                merged = getattr(merged, "pooler_output", merged)
                out.append(merged.reshape(len(enc["image_grid_thw"]), -1, merged.shape[-1]).mean(1).numpy())
        return np.concatenate(out)

    x = {name: features(ds) for name, ds in splits.items()}
    mu, sd = x["train"].mean(0), x["train"].std(0) + 1e-6
    out = {}
    for trait in TRAITS:
        rows = {name: np.array(ds["trait"]) == trait for name, ds in splits.items()}
        a = (x["train"][rows["train"]] - mu) / sd
        y = np.array(splits["train"]["score"])[rows["train"]]
        w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ (y - y.mean()))
        pred = (x["validation"][rows["validation"]] - mu) / sd @ w
        out[trait] = float(spearmanr(pred, np.array(splits["validation"]["score"])[rows["validation"]]).statistic)
    out["mean"] = sum(out.values()) / len(TRAITS)
    return out


if __name__ == "__main__":
    main()
