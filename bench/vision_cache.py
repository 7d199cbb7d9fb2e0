"""Benchmark: what the frozen-vision cache (``cogip/vision_cache.py``, option ``vision_cache_gb``) saves.

Two workloads, each timed with the cache off and on, in alternating rounds so that both see the same machine load:

- evaluation: ``eval.predict.predict`` with expected decoding (as the demo evaluates) on ``--n_eval`` synthetic test
  items; each image passes the tower once per decoding pass without the cache (the greedy answer, then one row
  per label), once in all with it. The predictions must be the same.
- GRPO: ``rl/train_grpo.py --config configs/tiny/grpo.yaml`` from the SFT model for ``--grpo_steps`` steps; trl's
  ``train_runtime`` (each image is encoded for every generation and again for the loss without the cache).

    OMP_NUM_THREADS=1 python bench/vision_cache.py --model runs/tiny-sft     # any tiny SFT output

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from side_by_side import alternating, require_model  # noqa: E402


def eval_seconds(model_dir: str, n: int, cached: bool) -> tuple[float, list]:
    import torch

    from cogip.models import load_policy
    from cogip.synthetic import make_benchmark
    from cogip.vision_cache import install_vision_caches
    from eval.predict import predict

    model, processor = load_policy(model_dir, dtype="float32")
    model.requires_grad_(False)
    install_vision_caches(model, 2.0 if cached else 0.0)
    test = make_benchmark(n_train=0, n_validation=0, n_test=n, seed=0)["test"]
    start = time.perf_counter()
    with torch.no_grad():
        preds = predict(model, processor, test, decoding="expected", progress=False)
    return time.perf_counter() - start, [p.score for p in preds]


def grpo_seconds(model_dir: str, steps: int, cached: bool) -> float:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "rl/train_grpo.py", "--config", "configs/tiny/grpo.yaml", "--model_name_or_path",
               model_dir, "--output_dir", out, "--max_steps", str(steps), "--save_strategy", "no",
               "--eval_steps", str(10 * steps), "--vision_cache_gb", "2" if cached else "0"]
        log = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return float(re.findall(r"'train_runtime': '?([0-9.]+)", log)[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/tiny-sft", help="a tiny SFT output (train_sft.py --config "
                                                           "configs/tiny/sft.yaml writes runs/tiny-sft)")
    p.add_argument("--n_eval", type=int, default=400)
    p.add_argument("--grpo_steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    model = require_model(args.model)
    times = {"eval": {False: [], True: []}, "grpo": {False: [], True: []}}
    scores = {}
    for r, cached in alternating(args.rounds):
        seconds, scores[cached] = eval_seconds(model, args.n_eval, cached)
        times["eval"][cached].append(seconds)
        times["grpo"][cached].append(grpo_seconds(model, args.grpo_steps, cached))
        print(f"round {r}, cache {'on' if cached else 'off'}: eval {times['eval'][cached][-1]:.1f} s, "
              f"GRPO {times['grpo'][cached][-1]:.1f} s", flush=True)
    diff = max(abs(a - b) for a, b in zip(scores[False], scores[True]) if a is not None and b is not None)
    print(f"eval scores, cache on vs off: max abs difference {diff:.2e}")
    result = {"bench": "vision_cache", "model": args.model, "n_eval": args.n_eval, "grpo_steps": args.grpo_steps,
              "machine": platform.processor() or platform.machine(), "max_score_diff": diff}
    for work, t in times.items():
        off, on = min(t[False]), min(t[True])
        result[work] = {"off_s": off, "on_s": on, "speedup": off / on}
        print(f"{work}: cache off {off:.1f} s, on {on:.1f} s, speedup {off / on:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
