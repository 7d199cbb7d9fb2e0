"""Generate seed-paired images with Qwen-Image's text encoder swapped for the aligned policy, and judge them.

For every prompt of every trait, the same seeds are sampled with the base encoder (alpha 0), the aligned one
(alpha 1) and any blend in between; each image is scored on its trait by a cognition model (the aligned policy by
default) and the run reports judged score per alpha and the aligned-vs-base win rate with bootstrap intervals.

    python generation/generate.py --config configs/tiny/generation.yaml          # CPU, tiny models, < 1 minute
    python generation/generate.py --config configs/qwen_image/generation.yaml \
        --aligned_model runs/qwen2_5_vl_7b/grpo/checkpoint-500                      # one GPU (>= 80 GB, or offload)
    cogalign generate --config configs/tiny/generation.yaml                        # the same, installed

Writes to --output_dir: images/<trait>/<prompt>/seed<S>_alpha<A>.png, grids/<trait>__<prompt>.png,
generation.json (every setting, seed and checkpoint), judgement.json, judgement.md and alpha_curve.png. Started again
in the same --output_dir, it generates only the images it lacks (images/manifest.json; ``--resume false``: all).
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from cogip.data import release_prompts
from cogip.files import write_json_atomic, write_text_atomic
from generation.comparison_grid import write_grids
from generation.encoder_swap import EncoderMismatchError, build_swapped_pipeline, torch_dtype
from generation.generation_args import GenerationArgs
from generation.judging import judge_images, plot_alpha_curve, print_summary, summarize, to_markdown
from generation.prompt_sets import collect_prompts
from generation.run_setup import alphas_of, call_kwargs, images_key, resolve_models, seeds_of
from generation.seed_paired import generate_seed_paired


def _versions() -> dict:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}


def main(args: GenerationArgs) -> dict:
    start, out = time.time(), Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    # 1. What to run: prompts, seeds, alphas and checkpoints (the tiny ones are built here).
    prompts = collect_prompts(args.traits, args.prompt_files, args.prompts_per_trait)
    questions = release_prompts(args.judge_prompts) if args.judge and args.judge_prompts else None
    seeds, alphas = seeds_of(args), alphas_of(args)
    models = resolve_models(args)

    # 2. The pipeline with the swapped encoder; a mismatched encoder is refused here, before any image.
    swapped = build_swapped_pipeline(models["pipeline"], models["aligned"], models["base_encoder"],
                                     dtype=args.dtype, device=args.device, cpu_offload=args.cpu_offload)
    record = {"settings": asdict(args), "checkpoints": swapped.checkpoints | {"judge": models["judge"]},
              "notes": models["notes"], "seeds": seeds, "alphas": alphas, "call": call_kwargs(args),
              "encoder_max_weight_distance": swapped.blend.max_weight_distance(), "versions": _versions(),
              "prompts": [asdict(p) for p in prompts]}

    # 3. Seed-paired images: the same prompts and seeds for every alpha.
    call = call_kwargs(args)
    images = generate_seed_paired(swapped.pipe, swapped.blend, prompts, seeds, alphas, out, call,
                                  args.images_per_batch, args.progress, images_key(args, models, call), args.resume)
    record |= {"images": [r.to_dict() for r in images], "generation_seconds": time.time() - start}
    write_json_atomic(out / "generation.json", record)
    del swapped
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the judge needs the memory the pipeline held

    # 4. Judge every image on its trait, summarise per trait and alpha.
    scores, summary = None, None
    if args.judge:
        from cogip.models import load_policy

        judge, processor = load_policy(models["judge"], dtype=torch_dtype(args.dtype), merge_adapter=True)
        judge.to(args.device)
        judged = judge_images(judge, processor, images, out, args.judge_decoding, args.judge_prompt_style,
                              args.judge_image_size, args.judge_batch_size, args.progress, questions)
        del judge
        asked = {r.trait: j.pop("question") for r, j in zip(images, judged)}  # one question per trait
        scores = {j["file"]: j["score"] for j in judged}
        summary = summarize(images, judged, args.unparsable, args.n_boot, args.seed)
        summary |= {"judge": models["judge"], "decoding": args.judge_decoding, "notes": models["notes"],
                    "questions": args.judge_prompts or f"cogalign's own ({args.judge_prompt_style})", "asked": asked,
                    "images": judged}
        write_json_atomic(out / "judgement.json", summary)
        write_text_atomic(out / "judgement.md", to_markdown(summary, "\n".join(models["notes"])))
        plot_alpha_curve(summary, out / "alpha_curve.png")

    # 5. Grids (with the judged scores under each image) and the table.
    grids = write_grids(images, out, args.grid_cell_size, scores)
    if summary:
        print_summary(summary, f"Judged by {models['judge']}")
    for note in models["notes"]:
        print(f"note: {note}")
    print(f"{len(images)} images, {len(grids)} grids in {out} ({time.time() - start:.1f} s)")
    return {"images": images, "grids": grids, "summary": summary, "generation": record}


def make_parser():
    from cogip.cli import stage_parser

    return stage_parser((GenerationArgs,), "Generate images with Qwen-Image from the base and the aligned text "
                                           "encoder, blended by alpha, and judge them with the aligned policy.")


def cli_main(argv: list[str] | None = None) -> int:
    """Parse flags (and ``--config file.yaml``) and run; shared by ``__main__`` and ``cogalign generate``."""
    from cogip.cli import run_stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # a model folder that is not there, or an encoder that does not fit the pipeline
    return run_stage(make_parser(), main, argv, refused=(FileNotFoundError, EncoderMismatchError))


if __name__ == "__main__":
    sys.exit(cli_main())
