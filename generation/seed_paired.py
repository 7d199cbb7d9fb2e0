"""Seed-paired sampling: every prompt, every seed, every alpha, so that images differ only by the text encoder."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from generation.encoder_swap import EncoderBlend
from generation.prompt_sets import GenerationPrompt


@dataclass
class GeneratedImage:
    trait: str
    prompt_id: str
    prompt: str
    seed: int
    alpha: float
    file: str  # relative to the output folder

    def to_dict(self) -> dict:
        return asdict(self)


def image_path(trait: str, prompt_id: str, seed: int, alpha: float) -> str:
    return f"images/{trait}/{prompt_id}/seed{seed}_alpha{alpha:.2f}.png"


def seed_generators(seeds: list[int]) -> list[torch.Generator]:
    # CPU generators: the starting noise of a seed is then the same on every device, so pairs survive a GPU change.
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def generate_seed_paired(pipe, blend: EncoderBlend, prompts: list[GenerationPrompt], seeds: list[int],
                         alphas: list[float], out_dir: str | Path, call_kwargs: dict,
                         images_per_batch: int | None = None, progress: bool = True) -> list[GeneratedImage]:
    """Generate ``len(prompts) * len(seeds) * len(alphas)`` PNGs under ``out_dir/images``.

    Alpha is the outer loop so the encoder weights are blended once per alpha, not once per prompt."""
    out = Path(out_dir)
    step = images_per_batch or len(seeds)
    pipe.set_progress_bar_config(disable=True)  # one bar for the whole run instead of one per call
    records: list[GeneratedImage] = []
    bar = tqdm(total=len(alphas) * len(prompts) * len(seeds), desc="generate", unit="img", disable=not progress)
    for alpha in alphas:
        blend.set_alpha(alpha)
        bar.set_postfix(alpha=f"{alpha:g}")
        for p in prompts:
            for start in range(0, len(seeds), step):
                chunk = seeds[start:start + step]
                images = pipe(prompt=p.text, num_images_per_prompt=len(chunk), generator=seed_generators(chunk),
                              **call_kwargs).images
                for seed, img in zip(chunk, images, strict=True):
                    rec = GeneratedImage(p.trait, p.id, p.text, seed, alpha, image_path(p.trait, p.id, seed, alpha))
                    (out / rec.file).parent.mkdir(parents=True, exist_ok=True)
                    img.save(out / rec.file)
                    records.append(rec)
                bar.update(len(chunk))
    bar.close()
    return records
