"""Benchmark: the SFT losses (ce, triangular, gaussian) at the same budget and seeds, on the synthetic benchmark.

Each loss trains the tiny Qwen2.5-VL with ``sft_warmstart/train_sft.py --config configs/tiny/sft.yaml`` (plus the
overrides below, the same for every loss), then ``eval/run.py`` scores the validation split with expected decoding.
Runs are resumable: a loss whose output folder already holds its final checkpoint is only evaluated again.

    python bench/sft_losses.py                                   # all three, 1,000 steps each, one thread each
    python bench/sft_losses.py --losses ce gaussian --max_steps 300 --out runs/bench-sft-losses

Prints a table per loss (well-formed rate, SRCC and MAE per trait, minutes of training) and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN_OVERRIDES = [  # the tiny recipe (vision-pretrained tiny model, LM fully fine-tuned), the same for every loss
    "--use_peft", "false", "--merge_lora", "false", "--synthetic_train_size", "4000", "--synthetic_eval_size", "16",
    "--per_device_train_batch_size", "32", "--learning_rate", "3e-3", "--warmup_steps", "20",
    "--logging_steps", "100", "--save_total_limit", "1", "--seed", "0", "--synthetic_seed", "0",
]


def run_logged(cmd: list[str], log: Path, threads: int) -> float:
    """Run ``cmd`` from the repository root with ``threads`` torch threads, appending its output to ``log``; return
    its wall time in seconds (the other bench scripts that launch the entry scripts use it too)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.time()
    with log.open("a") as fh:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return time.time() - start


def cached_run(cmd: list[str], run_dir: Path, log: Path, threads: int, after: object = None) -> float:
    """Run ``cmd`` (a training command writing ``run_dir``) unless ``run_dir/bench_timing.json`` says the same
    command finished there, ``after`` the same thing (the run it starts from); its wall time in seconds. A run made
    otherwise is removed and made again."""
    timing, key = run_dir / "bench_timing.json", {"cmd": cmd[1:], "after": after}  # the interpreter's path aside
    try:
        done = json.loads(timing.read_text())
    except (OSError, ValueError):
        done = {}
    if {k: done.get(k) for k in key} == key:
        return done["seconds"]
    shutil.rmtree(run_dir, ignore_errors=True)
    seconds = run_logged(cmd, log, threads)
    timing.write_text(json.dumps({"seconds": seconds, **key}))
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--losses", nargs="+", default=["ce", "triangular", "gaussian"])
    p.add_argument("--max_steps", type=int, default=1000)
    p.add_argument("--n_validation", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench-sft-losses")
    args = p.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for loss in args.losses:
        run = out / loss
        train_cmd = [sys.executable, "sft_warmstart/train_sft.py", "--config", "configs/tiny/sft.yaml",
                     "--output_dir", str(run), "--soft_label_loss", loss, "--max_steps", str(args.max_steps),
                     "--save_steps", str(args.max_steps), *TRAIN_OVERRIDES]
        train_s = cached_run(train_cmd, run, out / f"{loss}.log", args.threads)
        run_logged([sys.executable, "eval/run.py", "--checkpoint", str(run), "--split", "validation",
              "--synthetic_n", str(args.n_validation), "--output_dir", str(run / "eval"), "--no_blindness",
              "--n_boot", "200", "--decoding", "expected"], out / f"{loss}.log", args.threads)
        metrics = json.loads((run / "eval" / "metrics.json").read_text())["checkpoints"][0]["metrics"]
        results[loss] = {
            "train_minutes": train_s / 60,  # the whole training command: start-up, data, training, saving
            "well_formed": sum(t["well_formed_rate"] * t["n"] for t in metrics["traits"].values()) / sum(
                t["n"] for t in metrics["traits"].values()),
            "srcc": {k: t["srcc"] for k, t in metrics["traits"].items()},
            "mae": {k: t["mae"] for k, t in metrics["traits"].items()},
            "mean_srcc": metrics["overall"]["mean_srcc"],
            "mean_mae": sum(t["mae"] for t in metrics["traits"].values()) / len(metrics["traits"]),
        }
    traits = list(next(iter(results.values()))["srcc"])
    print(f"{'loss':<11} {'min':>5} {'wf':>5}  " + "  ".join(f"{t[:15]:>15}" for t in traits) + "   mean SRCC / MAE")
    for loss, r in results.items():
        cells = "  ".join(f"{_f(r['srcc'][t])} / {r['mae'][t]:6.3f}" for t in traits)
        print(f"{loss:<11} {r['train_minutes']:5.2f} {r['well_formed']:5.2f}  {cells}   {_f(r['mean_srcc'])} / "
              f"{r['mean_mae']:.3f}")
    print(json.dumps({"bench": "sft_losses", "max_steps": args.max_steps, "threads": args.threads, **results}))


def _f(x) -> str:
    return "   nan" if x is None else f"{x:6.3f}"


if __name__ == "__main__":
    main()
