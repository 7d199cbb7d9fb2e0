"""Which parameters of a Qwen2.5-VL train, and at what learning rate.

A Qwen2.5-VL has three parts: the ViT (``model.visual`` minus its merger), the merger that projects vision tokens
into the LLM (``model.visual.merger``), and the LLM (everything else). The paper's recipe: LoRA on the LLM, the
merger and the ViT trained fully at lower rates. With LoRA, the ViT/merger are peft ``modules_to_save`` (so the
adapter folder holds them and ``merge_and_unload`` folds them in); without LoRA the freeze flags act directly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch

from cogip.vision_cache import install_vision_caches

logger = logging.getLogger(__name__)

VISION_MODULE = "visual"
MERGER_MODULE = "merger"
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainablePartsArguments:
    """Training-config fields shared by the SFT and GRPO stages: which parts train, and their learning rates."""

    freeze_vision_tower: bool = field(default=False, metadata={"help": "Do not train the ViT blocks."})
    freeze_merger: bool = field(default=False, metadata={"help": "Do not train the vision-language merger."})
    freeze_llm: bool = field(default=False, metadata={"help": "Do not train the language model (full FT only)."})
    vision_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the ViT blocks (unset: learning_rate)."})
    merger_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the merger (unset: learning_rate)."})
    vision_cache_gb: float = field(
        default=0.0,
        metadata={"help": "With the vision tower and merger frozen: keep up to this many GiB of image tokens and "
                          "skip the tower for images it has encoded before (cogip.vision_cache; never under "
                          "ZeRO-3). 0 (default): off."})


    def check_reporting(self) -> None:
        """Refuse a ``report_to`` integration that is not installed: the Trainer would stop on it only once the
        model had loaded, on every rank."""
        from transformers.integrations import get_available_reporting_integrations

        known = ("none", "all", *get_available_reporting_integrations())
        missing = [str(r) for r in self.report_to or [] if r not in known and r is not None]
        if missing:
            raise ValueError(f"report_to: {', '.join(missing)} is not installed here (pip install "
                             f"{' '.join(missing)}, or report_to: none)")


class TrainablePartsError(ValueError):
    """Freeze flags and LoRA that do not go together: the entry scripts stop before loading any model."""


class PartLearningRatesMixin:
    """For a ``transformers.Trainer`` subclass: build the optimizer from :func:`parameter_groups`."""

    def create_optimizer(self, model=None):
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            groups = parameter_groups(opt_model, self.args, set(self.get_decay_parameter_names(opt_model)))
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


def part_of(name: str) -> str:
    """'vision', 'merger' or 'llm' for a parameter name (works on plain, peft-wrapped and modules_to_save names)."""
    parts = name.split(".")
    if VISION_MODULE not in parts:
        return "llm"
    return "merger" if MERGER_MODULE in parts else "vision"


def lora_config_for(model_args, args):
    """A peft ``LoraConfig`` that puts LoRA on the LLM's linear layers only (the ViT has layers of the same names)
    and saves the ViT/merger in full when they train. None without ``use_peft``. Both stages call it before any
    model loads, so it also refuses the model options no stage carries out."""
    unused = [f"{name}: {getattr(model_args, name)}" for name in ("load_in_4bit", "load_in_8bit")
              if getattr(model_args, name, False)]
    if getattr(model_args, "lora_target_parameters", None):
        unused.append(f"lora_target_parameters: {model_args.lora_target_parameters}")
    if unused:
        raise TrainablePartsError(f"{', '.join(unused)}: cogalign trains unquantized weights, with LoRA on the "
                                  "language model's linear layers (lora_target_modules); leave these unset")
    if not model_args.use_peft:
        return None
    from peft import LoraConfig

    if args.freeze_llm:
        raise TrainablePartsError("freeze_llm with use_peft leaves nothing for LoRA to train; drop one of them")
    targets = model_args.lora_target_modules or list(DEFAULT_LORA_TARGETS)
    if isinstance(targets, str):
        targets = [targets]
    if targets in (["all-linear"], "all-linear"):
        targets = list(DEFAULT_LORA_TARGETS)
    # A regex string: peft then matches full module names, so the ViT's gate/up/down_proj are left alone.
    regex = rf"^(?!.*\b{VISION_MODULE}\b).*\.({'|'.join(targets)})$"
    modules_to_save = list(model_args.lora_modules_to_save or [])
    if not args.freeze_vision_tower:
        from transformers.integrations import is_deepspeed_zero3_enabled

        if args.freeze_merger and is_deepspeed_zero3_enabled():
            raise TrainablePartsError("use_peft with the ViT trained and the merger frozen cannot save under ZeRO-3: "
                                      "the ViT is kept in full with the merger inside it, and ZeRO-3 leaves frozen "
                                      "weights out of a LoRA checkpoint; train the merger too (freeze_merger: false) "
                                      "or freeze the ViT")
        modules_to_save.append(VISION_MODULE)
    elif not args.freeze_merger:
        # The merger alone: a frozen ViT inside a saved module is left out of ZeRO-3's save, which peft then misses.
        modules_to_save.append(MERGER_MODULE)
    return LoraConfig(
        r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
        target_modules=regex, modules_to_save=modules_to_save or None, task_type=model_args.lora_task_type,
        use_rslora=model_args.use_rslora, use_dora=model_args.use_dora, bias="none",
        revision=getattr(model_args, "model_revision", None),  # the base's, recorded for loading the adapter
    )


def prepare_model(model, model_args, args):
    """Apply LoRA (when asked) and the freeze flags. Returns the model to train (maybe a ``PeftModel``). A
    ``PeftModel`` given (an adapter trained further) keeps its LoRA; the flags still freeze its ViT and merger."""
    from peft import PeftModel, get_peft_model

    peft_config = None if isinstance(model, PeftModel) else lora_config_for(model_args, args)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    lora = isinstance(model, PeftModel)
    frozen = {"vision": args.freeze_vision_tower, "merger": args.freeze_merger, "llm": args.freeze_llm or lora}
    for name, param in model.named_parameters():
        part = part_of(name)
        if lora and part == "llm":
            continue  # peft already decided: LoRA weights train, base weights do not
        if lora and "modules_to_save" not in name and part != "llm":
            continue  # the frozen original copy that modules_to_save keeps beside the trained one
        param.requires_grad_(not frozen[part])
    counts = trainable_counts(model)
    if not any(counts.values()):
        raise ValueError("every parameter is frozen; nothing to train")
    if not counts["vision"] and not counts["merger"]:
        install_vision_caches(model, args.vision_cache_gb)
    logger.info("trainable parameters: %s", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    _warn_half_precision_updates(model, args)
    return model


def _warn_half_precision_updates(model, args) -> None:
    """Warn when weights train in bf16/fp16 with no fp32 master copy. Without DeepSpeed (which keeps one) the
    optimizer steps the half-precision weights themselves (so does FSDP with weights loaded in bf16), and an update
    smaller than half a unit in the last place (about 0.2 % of the weight in bf16, the rule at learning rates near
    1e-6) rounds back to the same weight. peft keeps LoRA adapters in fp32, so this concerns full fine-tuning and
    the ViT/merger beside LoRA."""
    deepspeed = getattr(args, "deepspeed", None) or getattr(args, "deepspeed_plugin", None)
    if deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):  # accelerate's too
        return
    half = {}
    for name, param in model.named_parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            half[part_of(name)] = half.get(part_of(name), 0) + _numel(param)
    if half:
        logger.warning("%s trainable parameters are %s with no fp32 master copy (no DeepSpeed): small "
                       "optimizer steps round away. Train under DeepSpeed (--deepspeed configs/deepspeed/zero2.json, "
                       "one GPU included) or load the model with --dtype float32",
                       ", ".join(f"{k} {v:,}" for k, v in half.items()),
                       next(p.dtype for p in model.parameters() if p.requires_grad and p.dtype != torch.float32))


def trainable_counts(model) -> dict[str, int]:
    counts = {"vision": 0, "merger": 0, "llm": 0}
    for name, param in model.named_parameters():
        if param.requires_grad:
            counts[part_of(name)] += _numel(param)
    return counts


def _numel(param: torch.nn.Parameter) -> int:
    # Under ZeRO-3 the local tensor is a placeholder; DeepSpeed records the full size in ds_numel.
    return int(getattr(param, "ds_numel", param.numel()))


def parameter_groups(model, args, decay_names: set[str]) -> list[dict]:
    """Optimizer groups: (vision, merger, llm) x (decay, no decay), each with its own learning rate."""
    rates = {"llm": args.learning_rate,
             "vision": args.learning_rate if args.vision_lr is None else args.vision_lr,
             "merger": args.learning_rate if args.merger_lr is None else args.merger_lr}
    groups: dict[tuple[str, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((part_of(name), name in decay_names), []).append(param)
    return [
        {"params": params, "lr": rates[part], "weight_decay": args.weight_decay if decay else 0.0, "name": part}
        for (part, decay), params in sorted(groups.items())
    ]
