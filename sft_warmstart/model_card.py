"""The model card written next to an SFT result: what was trained, on what, with which loss, and the config that
launches the same run again."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from cogip.cli import plain

CONFIG_FILE = "cogalign_sft_config.yaml"
GRPO_CONFIG_FILE = "cogalign_grpo_config.yaml"


def write_config(path: str | Path, config: dict, stage: str) -> None:
    """Write a run's :func:`cogip.cli.relaunch_config` to ``path``, headed by how to launch it again."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    head = (f"# The fields this run was given (the rest are defaults). Again: cogalign {stage} --config <this file>\n"
            "# (under deepspeed / accelerate launch / torchrun as before for more than one process); tokens and\n"
            "# secret-named env variables are not written here: set them in the environment again\n")
    Path(path).write_text(head + yaml.safe_dump(config, sort_keys=True))


def write_model_card(out_dir: str | Path, script_args, training_args, model_args, config: dict,
                     metrics: dict | None = None, base_model: str | None = None, merged: bool = False) -> Path:
    """Write ``README.md`` and ``config`` (the run's :func:`cogip.cli.relaunch_config`) as
    ``cogalign_sft_config.yaml`` into ``out_dir``; return the README path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / CONFIG_FILE, config, "sft")
    t = training_args
    kind = "merged full weights" if merged else ("LoRA adapter" if model_args.use_peft else "full weights")
    lora = (f"r {model_args.lora_r}, alpha {model_args.lora_alpha}, dropout {model_args.lora_dropout}"
            if model_args.use_peft else "no (full fine-tuning)")
    flags = (("vision", t.freeze_vision_tower), ("merger", t.freeze_merger), ("llm", t.freeze_llm))
    frozen = ", ".join(n for n, f in flags if f) or "nothing"
    data = f"`{script_args.dataset}`" + (f" `{script_args.dataset_path}`" if script_args.dataset_path else "")
    lines = [
        "---",
        yaml.safe_dump({"library_name": "transformers" if merged or not model_args.use_peft else "peft",
                        "base_model": base_model or model_args.model_name_or_path,
                        "tags": ["cogalign", "sft", "soft-label", "qwen2.5-vl"]}, sort_keys=False).strip(),
        "---",
        "",
        f"# cogalign SFT warm-start ({kind})",
        "",
        "Stage 1 of cogalign: describe-then-predict answers (`<label> <score>`) trained with a soft-label loss on "
        "the score's digit tokens.",
        "",
        f"- base model: `{base_model or model_args.model_name_or_path}`",
        f"- data: {data}",
        f"- loss: `{t.soft_label_loss}` (eta {t.soft_label_eta}, lambda {t.soft_label_lambda})",
        f"- LoRA: {lora}",
        f"- learning rates: LLM {t.learning_rate}, merger {t.merger_lr or t.learning_rate}, "
        f"vision {t.vision_lr or t.learning_rate}; frozen: {frozen}",
        "",
        "## Final metrics",
        "",
        "```json",
        json.dumps(plain(metrics or {}), indent=2),
        "```",
        "",
        "## Configuration",
        "",
        f"The fields the run was given (the rest are defaults); `cogalign sft --config {CONFIG_FILE}` runs it again.",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).strip(),
        "```",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
