"""Benchmark: drawing the synthetic benchmark (images + simulated raters) and its reliability ceiling.

    python bench/synthetic_benchmark.py              # 2,000 items at 56x56
    python bench/synthetic_benchmark.py --n 8000 --image_size 112

The last line printed is one JSON object: seconds to draw the items, seconds to build the ``datasets.Dataset``,
items per second, and the per-trait ceiling SRCC of the drawn items.
"""

from __future__ import annotations

import argparse
import json
import time

from cogip.data import items_to_dataset
from cogip.synthetic import generate_items, reliability


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--image_size", type=int, default=56)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    start = time.perf_counter()
    items = generate_items(args.n, seed=args.seed, image_size=args.image_size)
    drawn = time.perf_counter()
    ds = items_to_dataset(items)
    built = time.perf_counter()
    ceilings = {t: round(r["ceiling_srcc"], 3) for t, r in reliability(ds).items()}
    result = {"bench": "synthetic_benchmark", "n_items": args.n, "image_size": args.image_size,
              "seconds_draw": round(drawn - start, 3), "seconds_dataset": round(built - drawn, 3),
              "seconds_total": round(built - start, 3), "items_per_s": round(args.n / (built - start), 1),
              "ceiling_srcc": ceilings}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
