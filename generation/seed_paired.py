"""Seed-paired sampling: every prompt, every seed, every alpha, so that images differ only by the text encoder."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cogip.files import write_atomic
from cogip.stored import read_keyed, write_keyed
from generation.encoder_swap import EncoderBlend
from generation.prompt_sets import GenerationPrompt

log = logging.getLogger("cogalign.generation")


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


def _entry(rec: GeneratedImage) -> list:
    """What the manifest holds for an image: its prompt text, seed and alpha (file names round alpha)."""
    return [rec.prompt, rec.seed, rec.alpha]


def generate_seed_paired(pipe, blend: EncoderBlend, prompts: list[GenerationPrompt], seeds: list[int],
                         alphas: list[float], out_dir: str | Path, call_kwargs: dict,
                         images_per_batch: int | None = None, progress: bool = True, key: str = "",
                         resume: bool = True) -> list[GeneratedImage]:
    """Generate ``len(prompts) * len(seeds) * len(alphas)`` PNGs under ``out_dir/images``.

    Alpha is the outer loop so the encoder weights are blended once per alpha, not once per prompt. Each finished
    pipeline call is recorded in ``images/manifest.json`` under ``key`` (a hash of the models and the sampling
    settings; without one nothing is recorded or reused); with ``resume``, a call whose images the manifest holds
    under the same key, for the same prompt text, seed and alpha, is not made again."""
    out = Path(out_dir)
    manifest_path = out / "images" / "manifest.json"
    stored = read_keyed(manifest_path, key) if resume and key else None
    done = dict(stored.get("images") or {}) if stored else {}
    step = images_per_batch or len(seeds)
    pipe.set_progress_bar_config(disable=True)  # one bar for the whole run instead of one per call
    records: list[GeneratedImage] = []
    reused = 0
    bar = tqdm(total=len(alphas) * len(prompts) * len(seeds), desc="generate", unit="img", disable=not progress)
    for alpha in alphas:
        bar.set_postfix(alpha=f"{alpha:g}")
        for p in prompts:
            for start in range(0, len(seeds), step):
                chunk = seeds[start:start + step]
                recs = [GeneratedImage(p.trait, p.id, p.text, s, alpha, image_path(p.trait, p.id, s, alpha))
                        for s in chunk]
                if all(done.get(r.file) == _entry(r) and (out / r.file).is_file() for r in recs):
                    reused += len(recs)
                else:
                    blend.set_alpha(alpha)  # a no-op when it already is
                    images = pipe(prompt=p.text, num_images_per_prompt=len(chunk),
                                  generator=seed_generators(chunk), **call_kwargs).images
                    for rec, img in zip(recs, images, strict=True):
                        # moved into place whole: a killed run leaves no torn PNG
                        write_atomic(out / rec.file, lambda tmp, img=img: img.save(tmp, format="PNG"))
                        done[rec.file] = _entry(rec)
                    if key:
                        write_keyed(manifest_path, key, {"images": done})
                records += recs
                bar.update(len(chunk))
    bar.close()
    if reused:
        log.info("reused %d of %d images generated earlier with the same models and settings", reused, len(records))
    return records
