"""``cogalign demo``: the whole pipeline on the synthetic benchmark, on CPU.

Stage 1 (here now): build the synthetic benchmark and the tiny Qwen2.5-VL, report the benchmark's reliability
ceiling per trait. The training, evaluation and generation stages are appended as they land.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from cogip.models import build_tiny_qwen2_5_vl
    from cogip.synthetic import make_benchmark, reliability

    p = argparse.ArgumentParser(prog="cogalign demo", description=__doc__)
    p.add_argument("--output_dir", default="runs/demo")
    p.add_argument("--n_train", type=int, default=2000)
    p.add_argument("--n_validation", type=int, default=200)
    p.add_argument("--n_test", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    console, start = Console(), time.time()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    with console.status("building the synthetic benchmark"):
        splits = make_benchmark(args.n_train, args.n_validation, args.n_test, seed=args.seed)
        splits.save_to_disk(out / "data")
    console.print(f"synthetic benchmark: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} -> {out / 'data'}")
    with console.status("building the tiny Qwen2.5-VL"):
        model_dir = build_tiny_qwen2_5_vl(out / "tiny-base", seed=args.seed)
    console.print(f"tiny Qwen2.5-VL -> {model_dir}")

    ceiling = reliability(splits["test"])
    table = Table(title="Synthetic benchmark: reliability of the simulated raters (test split)")
    for col in ("trait", "items", "split-half SRCC", "Spearman-Brown", "ceiling SRCC"):
        table.add_column(col, justify="right" if col != "trait" else "left")
    for trait, r in ceiling.items():
        table.add_row(trait, str(r["n"]), f"{r['split_half_srcc']:.3f}", f"{r['spearman_brown']:.3f}",
                      f"{r['ceiling_srcc']:.3f}")
    console.print(table)
    summary = {"ceiling_srcc": {t: r["ceiling_srcc"] for t, r in ceiling.items()},
               "minutes": (time.time() - start) / 60}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"summary -> {out / 'summary.json'}")
    return 0
