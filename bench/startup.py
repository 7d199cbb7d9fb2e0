"""Benchmark: how long a new Python process takes to import what every cogalign stage imports, with and without a
bytecode cache (what the Makefile's ``PYTHONPYCACHEPREFIX`` gives where ``PYTHONDONTWRITEBYTECODE`` is set).

    python bench/startup.py              # 3 rounds, the two settings alternating
    python bench/startup.py --rounds 5

Each round starts one process that compiles from source (``PYTHONDONTWRITEBYTECODE=1``, no cache) and one that reads a
cache in a temporary folder (filled by one process before the rounds). The last line printed is one JSON object with
every time and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

IMPORTS = ("import torch, transformers, trl, datasets, peft; "
           "from transformers import Qwen2_5_VLForConditionalGeneration; from trl import GRPOTrainer, SFTTrainer")


def timed_import(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], env=env, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE")}
    no_cache = base | {"PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory() as cache_dir:
        cached = base | {"PYTHONPYCACHEPREFIX": cache_dir}
        fill = timed_import(cached)  # compiles and writes the cache
        times = {"no_cache": [], "cache": []}
        for _ in range(args.rounds):
            times["no_cache"].append(timed_import(no_cache))
            times["cache"].append(timed_import(cached))
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"bench": "startup", "rounds": args.rounds, "seconds_filling_cache": round(fill, 2),
              "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
              "median_no_cache": round(medians["no_cache"], 2), "median_cache": round(medians["cache"], 2),
              "speedup": round(medians["no_cache"] / medians["cache"], 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
