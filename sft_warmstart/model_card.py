"""The model card written next to an SFT result: what was trained, on what, with which loss, and the full config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

CONFIG_FILE = "cogalign_sft_config.yaml"


def _plain(value):
    """A YAML-safe copy (enums, paths and other objects become strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def run_config(script_args, training_args, model_args) -> dict:
    training = training_args.to_dict() if hasattr(training_args, "to_dict") else dataclasses.asdict(training_args)
    return _plain({"script": dataclasses.asdict(script_args), "training": training,
                   "model": dataclasses.asdict(model_args)})


def write_model_card(out_dir: str | Path, script_args, training_args, model_args, metrics: dict | None = None,
                     base_model: str | None = None, merged: bool = False) -> Path:
    """Write ``README.md`` and ``cogalign_sft_config.yaml`` into ``out_dir``; return the README path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = run_config(script_args, training_args, model_args)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
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
        json.dumps(_plain(metrics or {}), indent=2),
        "```",
        "",
        "## Full configuration",
        "",
        f"Also in `{CONFIG_FILE}`.",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).strip(),
        "```",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
