"""SFT warm-start of Qwen2.5-VL on describe-then-predict answers ("<label> <score>") with a soft-label loss on the
score's digit tokens (stage 1 of cogalign).

# Tiny demo on CPU (`model_name_or_path: tiny` builds a tiny random Qwen2.5-VL into <output_dir>/tiny-base)
```bash
python sft_warmstart/train_sft.py --config configs/tiny/sft.yaml
cogalign sft --config configs/tiny/sft.yaml
```

# Qwen2.5-VL-7B-Instruct, the paper's recipe (LoRA r=64 on the LLM, merger and ViT at lower rates), 8 GPUs
```bash
deepspeed --num_gpus 8 sft_warmstart/train_sft.py --config configs/qwen2_5_vl_7b/sft_lora.yaml
accelerate launch --config_file configs/accelerate/zero3.yaml sft_warmstart/train_sft.py \
    --config configs/qwen2_5_vl_7b/sft_lora.yaml
```

Any field can be overridden on the command line (`--soft_label_loss gaussian`, `--dataset release --dataset_path
data/CogIP-Bench --image_root data/images`). A run started again in the same output_dir resumes from its last
complete checkpoint. Bad data is refused before training starts (or dropped, with `--drop_invalid_items`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from transformers import IntervalStrategy
from trl import ModelConfig, TrlParser

from cogip.checkpoints import finished_at, resume_point, train_and_save
from cogip.cli import relaunch_config, run_stage, stage_parser
from cogip.models import check_model_exists, init_deepspeed_comm, limit_image_pixels, load_policy
from sft_warmstart.artifacts import resolve_model_path, save_merged
from sft_warmstart.config import TINY_MODEL, SFTScriptArguments, SoftLabelSFTConfig
from sft_warmstart.data_sources import load_sft_splits
from sft_warmstart.model_card import CONFIG_FILE, write_config, write_model_card
from sft_warmstart.trainable import TrainablePartsError, lora_config_for, prepare_model
from sft_warmstart.trainer import SoftLabelSFTTrainer


def main(script_args: SFTScriptArguments, training_args: SoftLabelSFTConfig, model_args: ModelConfig) -> dict:
    # The fields as given, kept before training adjusts any (what relaunches this run).
    config = relaunch_config((script_args, training_args, model_args))
    # A model folder that is not there, parts to train that do not go together, then bad items: each stops the run
    # here, before any model is loaded.
    if model_args.model_name_or_path != TINY_MODEL:
        check_model_exists(model_args.model_name_or_path, "--model_name_or_path", model_args.model_revision,
                           required=True)
    lora_config_for(model_args, training_args)
    if script_args.merge_lora and not model_args.use_peft:
        logging.getLogger(__name__).warning("merge_lora applies to LoRA runs: a full fine-tuning's output folder is "
                                            "the model, and no merged/ is written")
    train_dataset, eval_dataset = load_sft_splits(script_args, with_eval=training_args.eval_strategy != "no")
    if training_args.eval_strategy != "no" and not eval_dataset:  # the Trainer would refuse, after the model loads
        logging.getLogger(__name__).warning("no held-out items in this data: eval_strategy %r set to 'no'",
                                            training_args.eval_strategy.value)
        training_args.eval_strategy = IntervalStrategy.NO
    if training_args.process_index == 0:  # now, so that a run killed before its end can be launched again too
        write_config(Path(training_args.output_dir) / CONFIG_FILE, config, "sft")

    # Model and processor; LoRA on the LLM and the freeze flags (ZeRO-3 partitions the weights as they load).
    init_deepspeed_comm(training_args)
    model_path = resolve_model_path(model_args.model_name_or_path, training_args.output_dir,
                                    script_args.tiny_vision_pretrain_steps,
                                    script_args.tiny_vision_position_targets,
                                    script_args.tiny_vision_pretrain_threads)
    model, processor = load_policy(model_path, dtype=model_args.dtype or "auto", revision=model_args.model_revision,
                                   attn_implementation=model_args.attn_implementation,
                                   trust_remote_code=getattr(training_args, "trust_remote_code", False))
    limit_image_pixels(processor, script_args.image_max_pixels)
    model = prepare_model(model, model_args, training_args)

    trainer = SoftLabelSFTTrainer(model=model, args=training_args, train_dataset=train_dataset,
                                  eval_dataset=eval_dataset, processing_class=processor)

    # Train, from the last complete checkpoint when the output folder has one.
    # Saved: adapter or full weights + processor; then the model card and, optionally, the merged model.
    resume = resume_point(training_args, script_args.resume)
    finished = finished_at(resume, training_args)  # a finished run launched again: nothing changes
    metrics = train_and_save(trainer, resume)
    merged = Path(training_args.output_dir) / "merged"
    if trainer.accelerator.is_main_process:
        write_model_card(training_args.output_dir, script_args, training_args, model_args, config, metrics,
                         model_path)
        # Written again only when the adapter changed: what was evaluated or generated from it stays valid.
        if script_args.merge_lora and model_args.use_peft and not (finished and (merged / "README.md").exists()):
            merged = save_merged(training_args.output_dir, merged, dtype=model_args.dtype)
            write_model_card(merged, script_args, training_args, model_args, config, metrics, model_path,
                             merged=True)
            trainer.accelerator.print(f"Merged model saved to {merged}.")
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.print(f"Saved to {training_args.output_dir}.")
    trainer.end()
    return metrics


def make_parser() -> TrlParser:
    return stage_parser((SFTScriptArguments, SoftLabelSFTConfig, ModelConfig),
                        "SFT warm-start of a Qwen2.5-VL with the soft-label loss on the score digits.")


def cli_main(argv: list[str] | None = None) -> int:
    """Parse flags (and ``--config file.yaml``) and run; shared by ``__main__`` and ``cogalign sft``."""
    return run_stage(make_parser(), main, argv, refused=(TrainablePartsError,))


if __name__ == "__main__":
    sys.exit(cli_main())
