"""Benchmark: does GRPO improve on its SFT start? Tiny model, synthetic benchmark, CPU.

1. SFT: ``sft_warmstart/train_sft.py --config configs/tiny/sft.yaml``.
2. GRPO from that output: ``rl/train_grpo.py --config configs/tiny/grpo.yaml`` (timed; the target is <= 10 min).
3. ``eval/run.py --compare GRPO SFT`` on the validation split (expected decoding, as the demo evaluates; the same
   items for both): per-trait SRCC and MAE, and the paired bootstrap 95% interval of the difference in the mean
   over traits of SRCC and of MAE divided by each trait's range.

    python bench/grpo_vs_sft.py                                          # defaults: the tiny configs as they are
    python bench/grpo_vs_sft.py --out runs/bench-grpo-vs-sft --grpo_args --reward_funcs distance_linear format

A stage whose output is complete is not run again. Prints a table and, last, one JSON object with ``improved``:
true when the GRPO - SFT interval of mean SRCC lies above 0 or that of mean MAE-per-range lies below 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sft_losses import cached_run, run_logged  # bench/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-grpo-vs-sft")
    p.add_argument("--n_validation", type=int, default=1200)  # 400 items resolve +-0.010 to 0.015, GRPO adds ~0.013
    p.add_argument("--n_boot", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--grpo_args", nargs=argparse.REMAINDER, default=[],
                   help="extra train_grpo.py arguments (everything after it)")
    args = p.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sft, grpo = out / "sft", out / "grpo"
    sft_s = cached_run([sys.executable, "sft_warmstart/train_sft.py", "--config", "configs/tiny/sft.yaml",
                        "--output_dir", str(sft)], sft, out / "sft.log", args.threads)
    grpo_s = cached_run([sys.executable, "rl/train_grpo.py", "--config", "configs/tiny/grpo.yaml",
                         "--model_name_or_path", str(sft), "--output_dir", str(grpo), *args.grpo_args], grpo,
                        out / "grpo.log", args.threads, after=sft_s)  # an SFT model made again: GRPO again too
    run_logged([sys.executable, "eval/run.py", "--compare", str(grpo), str(sft), "--split", "validation",
          "--synthetic_n", str(args.n_validation), "--no_blindness", "--n_boot", str(args.n_boot),
          "--decoding", "expected",
          "--output_dir", str(out / "compare")], out / "compare.log", args.threads)
    res = json.loads((out / "compare" / "metrics.json").read_text())
    per = {r["name"].split(": ", 1)[0]: r["metrics"]["traits"] for r in res["checkpoints"]}  # "A" = GRPO, "B" = SFT
    mean = res["comparison"]["mean_over_traits"]
    print(f"{'trait':<18} {'SRCC SFT':>9} {'SRCC GRPO':>10} {'MAE SFT':>8} {'MAE GRPO':>9} "
          f"{'well-formed SFT/GRPO':>21}")
    for trait in per["B"]:
        b, a = per["B"][trait], per["A"][trait]
        print(f"{trait:<18} {_f(b['srcc']):>9} {_f(a['srcc']):>10} {b['mae']:8.3f} {a['mae']:9.3f} "
              f"{b['well_formed_rate']:>10.2f} / {a['well_formed_rate']:.2f}")
    for m, r in mean.items():
        print(f"mean {m}: SFT {r['b']:.3f}  GRPO {r['a']:.3f}  GRPO - SFT {r['diff']:+.3f} "
              f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]")
    improved = {"srcc": mean["srcc"]["ci"][0] > 0, "mae_per_range": mean["mae_per_range"]["ci"][1] < 0}
    print(json.dumps({
        "bench": "grpo_vs_sft", "sft_minutes": sft_s / 60, "grpo_minutes": grpo_s / 60, "threads": args.threads,
        "n_validation": res["n_items"],
        "per_trait": {t: {"srcc_sft": per["B"][t]["srcc"], "srcc_grpo": per["A"][t]["srcc"],
                          "mae_sft": per["B"][t]["mae"], "mae_grpo": per["A"][t]["mae"]} for t in per["B"]},
        **{f"mean_{m}": {"sft": r["b"], "grpo": r["a"], "grpo_minus_sft": r["diff"], "ci": r["ci"]}
           for m, r in mean.items()},
        "improved": improved, "improved_any": any(improved.values())}))


def _f(x) -> str:
    return "nan" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
