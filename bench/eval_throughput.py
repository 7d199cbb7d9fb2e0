"""Batched prediction (eval.predict, left padding) against a batch-1 loop over the same items, tiny Qwen2.5-VL.

    python bench/eval_throughput.py [--n 64] [--batch_size 32] [--max_new_tokens 12] [--decoding greedy] [--threads 1]

Both paths go through the same ``predict`` (so the same chat template, processor and parsing); only the batch size
differs. The answers must agree item for item. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="items (synthetic test split)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_new_tokens", type=int, default=12)
    p.add_argument("--decoding", default="greedy", choices=["greedy", "expected"])
    p.add_argument("--model", default=None, help="a checkpoint folder (default: a fresh tiny random model)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from cogip.models import build_tiny_qwen2_5_vl, load_policy
    from cogip.synthetic import make_benchmark
    from eval.predict import predict

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_tiny_qwen2_5_vl(tmp)
        model, processor = load_policy(model_dir)
        model.to(args.device)
        items = make_benchmark(n_train=0, n_validation=0, n_test=args.n, seed=0)["test"]
        kw = {"decoding": args.decoding, "max_new_tokens": args.max_new_tokens, "progress": False}
        predict(model, processor, items.select(range(min(4, args.n))), batch_size=4, **kw)  # warm-up

        t0 = time.perf_counter()
        batched = predict(model, processor, items, batch_size=args.batch_size, **kw)
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        single = predict(model, processor, items, batch_size=1, **kw)
        t_single = time.perf_counter() - t0

    agree = sum(a.text == b.text for a, b in zip(batched, single, strict=True)) / args.n
    result = {
        "bench": "eval_throughput", "n_items": args.n, "batch_size": args.batch_size, "decoding": args.decoding,
        "max_new_tokens": args.max_new_tokens, "device": args.device, "torch_threads": torch.get_num_threads(),
        "seconds_batched": round(t_batched, 3), "seconds_batch1": round(t_single, 3),
        "items_per_s_batched": round(args.n / t_batched, 2), "items_per_s_batch1": round(args.n / t_single, 2),
        "speedup": round(t_single / t_batched, 2), "answers_agree": agree,
        "python": platform.python_version(), "torch": torch.__version__,
    }
    print(f"batched (bs={args.batch_size}): {result['items_per_s_batched']} items/s; "
          f"batch-1 loop: {result['items_per_s_batch1']} items/s; same answers on {agree:.0%} of items")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
