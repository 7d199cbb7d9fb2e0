"""diffusers' ``QwenImagePipeline`` with its text encoder swapped for an aligned Qwen2.5-VL, and a blend of the two.

Qwen-Image conditions its transformer on the last hidden states of a Qwen2.5-VL (the pipeline's ``text_encoder``).
An aligned policy from our SFT or GRPO stages has the same architecture, so it can sit in that slot, provided that
it reads the same tokens (the pipeline tokenizes with its own tokenizer) and emits hidden states of the width the
transformer's joint attention expects. :func:`check_encoder_fits` refuses anything else before an image is made.

:class:`EncoderBlend` keeps the base and the aligned weights on the CPU and loads
``w = (1 - alpha) * w_base + alpha * w_aligned`` into the pipeline's one encoder module for each trait-strength
``alpha``; alpha 0 and 1 load the stored tensors themselves, so alpha 0 is bit-for-bit the base pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cogip.models import is_adapter_dir, load_policy

# Tokens the pipeline's prompt template is built from; an encoder's tokenizer must map them to the same ids.
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


class EncoderMismatchError(ValueError):
    """The candidate text encoder cannot replace the pipeline's (hidden size, tokenizer or weight names differ)."""


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r} (use float32, bfloat16 or float16)")
    return dtype


def load_qwen_image_pipeline(name_or_path: str | Path, dtype: str | torch.dtype = "bfloat16"):
    """``QwenImagePipeline.from_pretrained`` for a hub id (``Qwen/Qwen-Image``) or a saved pipeline folder."""
    from diffusers import QwenImagePipeline

    return QwenImagePipeline.from_pretrained(str(name_or_path), dtype=torch_dtype(dtype))


@dataclass
class LoadedEncoder:
    model: torch.nn.Module  # a Qwen2_5_VLForConditionalGeneration (adapters already merged in)
    tokenizer: object
    source: str  # what was asked for
    resolved: dict  # what was actually loaded: {"path": ..., "adapter_base": ...}


def load_encoder(name_or_path: str | Path, dtype: str | torch.dtype = "bfloat16") -> LoadedEncoder:
    """An aligned policy as an encoder: full weights (GRPO, merged SFT) or a LoRA adapter folder (SFT), whose base
    (``base_model_name_or_path`` in its adapter_config.json) is loaded and the adapter merged on the fly."""
    resolved: dict = {"path": str(name_or_path)}
    if is_adapter_dir(name_or_path):
        from peft import PeftConfig

        resolved["adapter_base"] = PeftConfig.from_pretrained(str(name_or_path)).base_model_name_or_path
    model, processor = load_policy(str(name_or_path), dtype=torch_dtype(dtype), merge_adapter=True)
    return LoadedEncoder(model.eval(), processor.tokenizer, str(name_or_path), resolved)


def _text_hidden_size(model: torch.nn.Module) -> int | None:
    cfg = model.config
    text = getattr(cfg, "text_config", None)
    return getattr(text, "hidden_size", None) or getattr(cfg, "hidden_size", None)


def _vocab_fingerprint(tokenizer) -> dict[str, int]:
    return dict(tokenizer.get_vocab())


def check_encoder_fits(pipe, encoder: torch.nn.Module, tokenizer, name: str = "aligned encoder") -> None:
    """Raise :class:`EncoderMismatchError` unless ``encoder`` (with ``tokenizer``) can stand in for the pipeline's
    text encoder: same hidden size as the transformer's joint attention, same vocabulary and template token ids,
    an embedding table that covers the pipeline tokenizer, and the same architecture class."""
    problems = []
    want = pipe.transformer.config.joint_attention_dim
    got = _text_hidden_size(encoder)
    if got != want:
        problems.append(f"hidden size {got}, but the pipeline's transformer attends over text of width {want}")
    ref_cls = type(pipe.text_encoder).__name__ if pipe.text_encoder is not None else None
    if ref_cls and type(encoder).__name__ != ref_cls:
        problems.append(f"architecture {type(encoder).__name__}, but the pipeline's text encoder is {ref_cls}")
    ours, theirs = _vocab_fingerprint(pipe.tokenizer), _vocab_fingerprint(tokenizer)
    if ours != theirs:
        only_ours, only_theirs = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        moved = sum(1 for k in set(ours) & set(theirs) if ours[k] != theirs[k])
        problems.append(
            f"tokenizer differs from the pipeline's ({len(theirs)} vs {len(ours)} tokens; "
            f"{len(only_theirs)} only in the encoder's, e.g. {only_theirs[:3]}; {len(only_ours)} only in the "
            f"pipeline's, e.g. {only_ours[:3]}; {moved} with other ids)")
    for tok in TEMPLATE_TOKENS:
        if ours.get(tok) is None:
            problems.append(f"the pipeline tokenizer lacks the template token {tok}")
    rows = encoder.get_input_embeddings().weight.shape[0]
    if rows < len(pipe.tokenizer):
        problems.append(f"embedding table has {rows} rows, fewer than the pipeline tokenizer's {len(pipe.tokenizer)}")
    if problems:
        raise EncoderMismatchError(
            f"{name} cannot replace the Qwen-Image text encoder:\n  - " + "\n  - ".join(problems)
            + "\nUse a Qwen2.5-VL of the same size as the pipeline's encoder (Qwen-Image: Qwen2.5-VL-7B-Instruct) "
              "with its tokenizer.")


def _cpu_state(model: torch.nn.Module, copy: bool = True) -> dict[str, torch.Tensor]:
    # The live module's tensors are overwritten by every alpha, so its state must be a copy; a model loaded only to
    # lend its weights can give them up without one (``copy=False``), which saves a whole encoder of memory.
    return {k: v.detach().to("cpu", copy=copy) for k, v in model.state_dict().items()}


class EncoderBlend:
    """Holds the base and aligned encoder weights (CPU copies) and loads their blend into ``module``.

    ``module`` is the pipeline's live text encoder; it may sit on a GPU or under model CPU offload, because
    ``load_state_dict`` copies into the existing parameters wherever they live.
    """

    def __init__(self, module: torch.nn.Module, base_state: dict[str, torch.Tensor],
                 aligned_state: dict[str, torch.Tensor]):
        live = module.state_dict()
        for name, state in (("base", base_state), ("aligned", aligned_state)):
            missing, extra = sorted(set(live) - set(state)), sorted(set(state) - set(live))
            bad = [k for k in set(live) & set(state) if live[k].shape != state[k].shape]
            if missing or extra or bad:
                raise EncoderMismatchError(
                    f"{name} encoder weights do not match the pipeline's text encoder parameter for parameter: "
                    f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}), "
                    f"{len(bad)} with other shapes (e.g. {sorted(bad)[:2]})")
        self.module, self.base, self.aligned = module, base_state, aligned_state
        self.alpha: float | None = None

    @classmethod
    def from_modules(cls, module: torch.nn.Module, base: torch.nn.Module, aligned: torch.nn.Module) -> EncoderBlend:
        """Weights of ``base`` and ``aligned``; a model other than ``module`` lends its tensors without a copy."""
        return cls(module, _cpu_state(base, copy=base is module), _cpu_state(aligned, copy=aligned is module))

    @torch.no_grad()
    def set_alpha(self, alpha: float) -> None:
        if alpha == self.alpha:
            return
        if alpha == 0.0 or alpha == 1.0:
            state = self.base if alpha == 0.0 else self.aligned
        else:
            # Interpolate in float32 so that bf16 weights do not lose the small alpha steps, then cast back.
            state = {k: torch.lerp(b.float(), self.aligned[k].float(), alpha).to(b.dtype) if b.is_floating_point()
                     else b for k, b in self.base.items()}
        self.module.load_state_dict(state, strict=True)
        self.alpha = alpha

    def max_weight_distance(self) -> float:
        """Largest absolute difference between base and aligned weights (0 means the two encoders are the same)."""
        return max(float((self.aligned[k].float() - b.float()).abs().max()) for k, b in self.base.items()
                   if b.is_floating_point() and b.numel())


@dataclass
class SwappedPipeline:
    pipe: object  # QwenImagePipeline whose text_encoder is driven by ``blend``
    blend: EncoderBlend
    checkpoints: dict  # what was loaded, for generation.json


def build_swapped_pipeline(pipeline: str | Path, aligned: str | Path, base_encoder: str | Path | None = None,
                           dtype: str = "bfloat16", device: str = "cpu", cpu_offload: bool = False) -> SwappedPipeline:
    """Load the Qwen-Image pipeline, check the aligned encoder (and ``base_encoder``, default: the pipeline's own
    text encoder) against it, and return the pipeline with an :class:`EncoderBlend` over the two.

    Nothing is generated here, so a mismatched encoder is refused before any image exists."""
    pipe = load_qwen_image_pipeline(pipeline, dtype)
    aligned_enc = load_encoder(aligned, dtype)
    check_encoder_fits(pipe, aligned_enc.model, aligned_enc.tokenizer, f"aligned encoder {aligned}")
    checkpoints = {"pipeline": str(pipeline), "aligned_encoder": aligned_enc.resolved,
                   "base_encoder": {"path": str(base_encoder)} if base_encoder else "the pipeline's own text encoder"}
    if base_encoder:
        base_enc = load_encoder(base_encoder, dtype)
        check_encoder_fits(pipe, base_enc.model, base_enc.tokenizer, f"base encoder {base_encoder}")
        checkpoints["base_encoder"] = base_enc.resolved
        blend = EncoderBlend.from_modules(pipe.text_encoder, base_enc.model, aligned_enc.model)
        del base_enc
    else:
        blend = EncoderBlend.from_modules(pipe.text_encoder, pipe.text_encoder, aligned_enc.model)
    del aligned_enc  # its weights live on in blend.aligned
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return SwappedPipeline(pipe, blend, checkpoints)
