"""Benchmark: the SFT step with the rotary positions computed by the collator (``sft_warmstart.collator.RopeIndex``,
in the data-loader worker) against the model computing them in the training process (sample by sample, as
transformers does when a batch has no ``position_ids``).

Both arms run ``SoftLabelSFTTrainer`` with the tiny SFT config (its batch of 64, one data-loader worker) for
``--steps`` steps from the same model, in alternating rounds so that both see the same machine load; the time is
trl's ``train_runtime``. The training losses must be the same: the positions are.

    OMP_NUM_THREADS=1 python bench/sft_positions.py --model runs/tiny-sft/tiny-base   # any tiny checkpoint

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from side_by_side import alternating, require_model  # noqa: E402


def train_seconds(model_dir: str, steps: int, in_collator: bool) -> tuple[float, float]:
    """(train_runtime, training loss) of ``steps`` SFT steps."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from cogip.models import load_policy
    from sft_warmstart.collator import SoftLabelCollator
    from sft_warmstart.data_sources import load_sft_splits
    from sft_warmstart.train_sft import make_parser
    from sft_warmstart.trainable import prepare_model
    from sft_warmstart.trainer import SoftLabelSFTTrainer

    with tempfile.TemporaryDirectory() as out:
        script_args, training_args, model_args = make_parser().parse_args_and_config(
            ["--config", str(ROOT / "configs/tiny/sft.yaml"), "--output_dir", out, "--max_steps", str(steps),
             "--save_strategy", "no", "--logging_steps", str(steps), "--disable_tqdm", "true"])
        train, _ = load_sft_splits(script_args, with_eval=False)
        model, processor = load_policy(model_dir, dtype="float32")
        model = prepare_model(model, model_args, training_args)
        kwargs = {}
        if not in_collator:  # the same collator without positions: the model works them out itself
            base = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
            kwargs["data_collator"] = SoftLabelCollator(base, processor.tokenizer)
        trainer = SoftLabelSFTTrainer(model=model, args=training_args, train_dataset=train,
                                      processing_class=processor, **kwargs)
        metrics = trainer.train().metrics
    return metrics["train_runtime"], metrics["train_loss"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/tiny-sft/tiny-base",
                   help="a tiny checkpoint (train_sft.py --config configs/tiny/sft.yaml writes one there)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    model = require_model(args.model)
    times: dict[bool, list[float]] = {False: [], True: []}
    losses: dict[bool, float] = {}
    for r, in_collator in alternating(args.rounds):
        seconds, losses[in_collator] = train_seconds(model, args.steps, in_collator)
        times[in_collator].append(seconds)
        print(f"round {r}, positions {'in the collator' if in_collator else 'in the model'}: {seconds:.1f} s "
              f"(loss {losses[in_collator]:.4f})", flush=True)
    model_s, collator_s = min(times[False]), min(times[True])
    result = {"bench": "sft_positions", "model": args.model, "steps": args.steps, "rounds": args.rounds,
              "machine": platform.processor() or platform.machine(), "in_model_s": model_s,
              "in_collator_s": collator_s, "speedup": model_s / collator_s,
              "same_loss": losses[False] == losses[True]}
    print(f"{args.steps} SFT steps: positions in the model {model_s:.1f} s, in the collator {collator_s:.1f} s, "
          f"speedup {model_s / collator_s:.2f}; same loss: {result['same_loss']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
