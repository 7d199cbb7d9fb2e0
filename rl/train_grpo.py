"""GRPO of Qwen2.5-VL against human scores: per-trait distance (and rank) rewards on trl's GRPOTrainer, held-out
correlation logged while it trains (stage 2 of cogalign).

# Tiny demo on CPU (`model_name_or_path: tiny` builds a tiny random Qwen2.5-VL; point it at an SFT output instead)
```bash
python rl/train_grpo.py --config configs/tiny/grpo.yaml
cogalign grpo --config configs/tiny/grpo.yaml
```

# Qwen2.5-VL-7B from the SFT warm-start, 8 GPUs, ZeRO-3
```bash
deepspeed --num_gpus 8 rl/train_grpo.py --config configs/qwen2_5_vl_7b/grpo.yaml \
    --deepspeed configs/deepspeed/zero3.json
accelerate launch --config_file configs/accelerate/zero3.yaml rl/train_grpo.py \
    --config configs/qwen2_5_vl_7b/grpo.yaml
```

Rewards are chosen by name (`--reward_funcs distance_gaussian format rank_global --reward_weights 1 0.2 0.5`).
A run started again in the same output_dir resumes from its last complete checkpoint. Bad data is refused before
training starts (or dropped, with `--drop_invalid_items`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from trl import ModelConfig, TrlParser

from cogip.checkpoints import resume_point, train_and_save
from cogip.cli import relaunch_config, run_stage, stage_parser
from cogip.data import balanced_subset, to_grpo_format
from cogip.data_sources import load_canonical_splits
from cogip.models import check_model_exists, init_deepspeed_comm, is_adapter_dir, limit_image_pixels, load_policy
from cogip.weight_average import WeightAverage, WeightAverageError, check_zero3_gathers
from rewards import build_reward_funcs
from rl.callbacks import BEST_CHECKPOINT, CorrelationCallback, GuardCallback
from rl.config import CogGRPOConfig, GRPOScriptArguments, RewardWeightsError, check_reward_weights
from rl.trainer import CogGRPOTrainer
from sft_warmstart.artifacts import resolve_model_path
from sft_warmstart.config import TINY_MODEL
from sft_warmstart.model_card import GRPO_CONFIG_FILE, write_config
from sft_warmstart.trainable import TrainablePartsError, lora_config_for, prepare_model


def main(script_args: GRPOScriptArguments, training_args: CogGRPOConfig, model_args: ModelConfig) -> dict:
    # The fields as given, kept before training adjusts any (what relaunches this run).
    config = relaunch_config((script_args, training_args, model_args))
    # A model folder that is not there or an adapter it cannot merge, parts to train that do not go together, then
    # bad items: each stops the run here, before any model is loaded.
    if model_args.model_name_or_path != TINY_MODEL:
        check_model_exists(model_args.model_name_or_path, "--model_name_or_path", model_args.model_revision,
                           required=True)
        if is_adapter_dir(model_args.model_name_or_path):
            check_adapter_start(model_args.model_name_or_path, script_args.sft_adapter, model_args.use_peft,
                                training_args.beta)
    lora_config_for(model_args, training_args)
    check_reward_weights(script_args, training_args)
    check_zero3_gathers(training_args.average_weights)
    train, held_out = load_canonical_splits(script_args, with_eval=True)
    if held_out is not None and script_args.correlation_eval_size:
        held_out = balanced_subset(held_out, script_args.correlation_eval_size)
    if training_args.process_index == 0:  # now, so that a run killed before its end can be launched again too
        write_config(Path(training_args.output_dir) / GRPO_CONFIG_FILE, config, "grpo")
    reward_funcs = build_reward_funcs(script_args.reward_funcs, **script_args.reward_options())

    # Policy: a base model, an SFT checkpoint, or an SFT LoRA adapter (merged, or trained further).
    init_deepspeed_comm(training_args)
    model_path = resolve_model_path(model_args.model_name_or_path, training_args.output_dir)
    keep_adapter = is_adapter_dir(model_path) and script_args.sft_adapter == "train"
    model, processor = load_policy(model_path, dtype=model_args.dtype or "auto", revision=model_args.model_revision,
                                   attn_implementation=model_args.attn_implementation,
                                   merge_adapter=not keep_adapter, is_trainable=keep_adapter)
    limit_image_pixels(processor, script_args.image_max_pixels)
    model = prepare_model(model, model_args, training_args)

    # Trainer with held-out correlation and the guards.
    correlation = None
    callbacks = [GuardCallback(training_args.zero_std_warn_frac, training_args.zero_std_warn_logs,
                               script_args.reward_funcs)]
    if held_out is not None and len(held_out):
        every = int(training_args.eval_steps or training_args.save_steps)
        correlation = CorrelationCallback(held_out, processor, eval_steps=every,
                                          batch_size=script_args.correlation_batch_size,
                                          max_new_tokens=training_args.max_completion_length,
                                          decoding=script_args.correlation_decoding,
                                          split=script_args.dataset_test_split)
        if script_args.dataset_test_split == "test" and training_args.process_index == 0:
            logging.getLogger(__name__).warning(
                "held-out scoring on the test split: %s is then picked on the items eval/run.py reports, which "
                "flatters that checkpoint; report the last checkpoint, or score another split while training",
                BEST_CHECKPOINT)
        callbacks.append(correlation)
    if training_args.average_weights:  # after the held-out scoring: its last score is the last checkpoint's
        callbacks.append(WeightAverage(training_args.average_weights_start, training_args.average_weights_every))
    trainer = CogGRPOTrainer(model=model, reward_funcs=reward_funcs, args=training_args,
                             train_dataset=to_grpo_format(train), processing_class=processor, callbacks=callbacks)
    if correlation is not None:
        correlation.trainer = trainer

    # Train, from the last complete checkpoint when the output folder has one.
    # Saved: the policy and its processor.
    metrics = train_and_save(trainer, resume_point(training_args, script_args.resume))
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.print(f"Saved to {training_args.output_dir}.")
    return metrics


class AdapterMergeError(ValueError):
    """An SFT LoRA adapter this run cannot merge into its base on loading."""


def check_adapter_start(adapter: str, sft_adapter: str = "merge", use_peft: bool = False, beta: float = 0.0) -> None:
    """Refuse to start from an SFT LoRA adapter where that goes wrong. With ``beta > 0`` trl's KL reference would be
    the adapter's base, not the SFT model (the KL term would pull the policy back to before SFT). With
    ``sft_adapter: merge``: under ZeRO-3 every process holds only its shard of the base when peft merges (it fails),
    and with ``use_peft`` the new LoRA would name the base model, not the merged SFT model, as its base (evaluation
    and generation would load base + GRPO adapter and silently lose the SFT stage). The SFT stage's merged folder
    (``merge_lora: true``) is the policy to start from then."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    merging = sft_adapter == "merge"
    why = (f"with beta {beta:g} trl's KL reference would be its base model, not the SFT model" if beta > 0
           else "LoRA on top of it would record the base model, not the SFT model, as its base" if merging and use_peft
           else "under ZeRO-3 the base is split across processes before the merge"
           if merging and is_deepspeed_zero3_enabled() else None)
    if why is None:
        return
    merged = Path(adapter) / "merged"
    start = (f"--model_name_or_path {merged}" if (merged / "config.json").exists()
             else "the merged model the SFT stage writes with merge_lora: true (<its output_dir>/merged)")
    further = ", or train the adapter further with --sft_adapter train" if merging and use_peft else ""
    raise AdapterMergeError(f"--model_name_or_path {adapter} is a LoRA adapter (sft_adapter: {sft_adapter}), but "
                            f"{why}. Start from {start}{further}.")


def make_parser() -> TrlParser:
    return stage_parser((GRPOScriptArguments, CogGRPOConfig, ModelConfig),
                        "GRPO of a Qwen2.5-VL with rewards from the distance to people's scores.")


def cli_main(argv: list[str] | None = None) -> int:
    """Parse flags (and ``--config file.yaml``) and run; shared by ``__main__`` and ``cogalign grpo``."""
    refused = (AdapterMergeError, RewardWeightsError, TrainablePartsError, WeightAverageError)
    return run_stage(make_parser(), main, argv, refused=refused)


if __name__ == "__main__":
    sys.exit(cli_main())
