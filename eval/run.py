"""Evaluate checkpoints against human scores: per-trait SRCC / PLCC / KRCC / MAE with 95% intervals, a blindness
check, held-out rewards, and reward-vs-correlation curves.

Every checkpoint of a training run (incomplete ones skipped), joined with the training log at its step:

    python eval/run.py --run_dir outputs/grpo-tiny                       # synthetic test split
    python eval/run.py --run_dir outputs/grpo-7b --data /data/CogIP-Bench --image_root /data/images \
        --decoding expected --reward_funcs distance_gaussian format

One model, or a paired comparison of two on the same items:

    python eval/run.py --checkpoint outputs/sft-tiny
    python eval/run.py --compare Qwen/Qwen2.5-VL-7B-Instruct outputs/grpo-7b/checkpoint-500 --data ...

``cogalign eval ...`` takes the same flags, and both read them from ``--config file.yaml`` too. Writes
metrics.json, metrics.csv, report.md, predictions_<model>.jsonl and (for a run) curves.png to --output_dir (default
<run_dir>/eval, else ./eval_results). Run again on the same run, it reuses the predictions of each checkpoint that
nothing they depend on has changed for, and scores them again (``eval/resume.py``).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict

from trl import TrlParser

from cogip.cli import stage_parser
from eval.checkpoint_eval import evaluate_compare, evaluate_run, evaluate_single
from eval.curves import plot_curves
from eval.eval_args import EvalArgs
from eval.report import print_table, write_outputs


def main(args: EvalArgs) -> dict:
    # 1. Evaluate: a whole run, one model, or two models on the same items.
    args.check_models_exist()
    if args.run_dir:
        results = evaluate_run(args)
    elif args.checkpoint:
        results = evaluate_single(args)
    else:
        results = evaluate_compare(args)

    # 2. Write metrics.json / metrics.csv / report.md / predictions, and the curves.
    out = args.results_dir()
    out.mkdir(parents=True, exist_ok=True)
    curves = plot_curves(results, out / "curves.png")
    paths = write_outputs(results, out, asdict(args) | {"curves": curves is not None})

    # 3. Show the per-trait table.
    print_table(results)
    shown = [p.name for k, p in paths.items() if not k.startswith("predictions")] + ([curves.name] if curves else [])
    print(f"results in {out}: " + ", ".join(shown))
    return results


def make_parser() -> TrlParser:
    return stage_parser((EvalArgs,), "Evaluate checkpoints against people's scores: per-trait SRCC, PLCC, KRCC "
                                     "and MAE with 95% intervals, a blindness check and curves.")


def parse_args(argv: list[str] | None = None) -> EvalArgs:
    """The flags of ``eval/run.py`` (and ``--config file.yaml``) as :class:`EvalArgs` (shared with ``cogalign eval``
    and ``cogalign demo``)."""
    from cogip.cli import parse_strictly

    (args,) = parse_strictly(make_parser(), argv)
    return args


def cli_main(argv: list[str] | None = None) -> int:
    """``main`` with bad input (flags, config file, model folders, data) ended by a message and exit code 2."""
    from cogip.cli import run_stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # any file that is not there (a run folder, an upstream file) besides the input errors every stage refuses
    from eval.checkpoint_eval import ModelLoadError

    return run_stage(make_parser(), main, argv, refused=(FileNotFoundError, ModelLoadError), verb="evaluate",
                     drop_flag="--drop_invalid")


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
