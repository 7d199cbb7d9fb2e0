"""Turning :class:`GenerationArgs` into concrete checkpoints, alphas, seeds and pipeline call arguments."""

from __future__ import annotations

import logging
from pathlib import Path

from cogip.models import check_model_exists
from cogip.stored import code_version, digest, model_identity
from generation.generation_args import GenerationArgs
from generation.tiny_checkpoints import (
    STANDIN_NOTE,
    ensure_standin_aligned,
    ensure_tiny_base,
    ensure_tiny_qwen_image,
    is_standin,
)

log = logging.getLogger("cogalign.generation")


def resolve_models(args: GenerationArgs) -> dict:
    """``{"pipeline", "aligned", "base_encoder", "judge", "notes"}`` as paths or hub ids. ``pipeline: tiny`` builds
    the tiny Qwen-Image checkpoint (and, without ``aligned_model``, the stand-in aligned encoder) under
    ``output_dir``; an existing build is reused."""
    for flag, ref in (("--aligned_model", args.aligned_model), ("--judge_model", args.judge_model),
                      ("--base_encoder", args.base_encoder), ("--pipeline", args.pipeline)):
        if ref != "tiny":
            check_model_exists(ref, flag, weights=flag != "--pipeline")  # before anything is built
    out = Path(args.output_dir)
    notes = []
    pipeline, aligned = args.pipeline, args.aligned_model
    if pipeline == "tiny":
        base = ensure_tiny_base(out / "tiny-base")
        pipeline = str(ensure_tiny_qwen_image(out / "tiny-qwen-image", base))
        notes.append("pipeline: a tiny random Qwen-Image (random transformer and VAE): images are noise-like")
        if not aligned:
            aligned = str(ensure_standin_aligned(out / "tiny-aligned-standin", base))
    if is_standin(aligned):
        notes.append(STANDIN_NOTE)
        log.warning(STANDIN_NOTE)
    return {"pipeline": pipeline, "aligned": aligned, "base_encoder": args.base_encoder,
            "judge": args.judge_model or aligned, "notes": notes}


def alphas_of(args: GenerationArgs) -> list[float]:
    """The alphas to run, sorted, always with 0 (base) and 1 (aligned)."""
    return sorted({0.0, 1.0, *(float(a) for a in args.alphas)})


def seeds_of(args: GenerationArgs) -> list[int]:
    return [args.seed + i for i in range(args.images_per_prompt)]


def call_kwargs(args: GenerationArgs) -> dict:
    """Keyword arguments for every QwenImagePipeline call (the same for both encoders)."""
    kw = {"height": args.height, "width": args.width, "num_inference_steps": args.num_inference_steps,
          "true_cfg_scale": args.true_cfg_scale, "max_sequence_length": args.max_sequence_length}
    if args.true_cfg_scale > 1 and args.negative_prompt is not None:
        kw["negative_prompt"] = args.negative_prompt
    return kw


def images_key(args: GenerationArgs, models: dict, call: dict) -> str:
    """A hash of what decides an image besides its prompt, seed and alpha: the pipeline and the two encoders (their
    files, :func:`cogip.stored.model_identity`), dtype, device, the seeds sampled per call, the pipeline call's
    arguments, and the code (generation, cogip, torch, diffusers and transformers versions)."""
    import diffusers
    import torch
    import transformers

    refs = {name: model_identity(models[name], recursive=name == "pipeline") if models[name] else None
            for name in ("pipeline", "aligned", "base_encoder")}
    return digest([refs, args.dtype, args.device, args.images_per_batch or args.images_per_prompt, call,
                   code_version(["generation", "cogip"]),
                   [torch.__version__, diffusers.__version__, transformers.__version__]])
