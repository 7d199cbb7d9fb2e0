"""Tiny offline stand-ins for the generation stage: a tiny "Qwen-Image checkpoint" folder and a tiny "aligned" encoder.

Both are written to disk and then loaded by the same code as ``Qwen/Qwen-Image`` and a real aligned policy, so the
tiny configuration exercises the real loading path. The stand-in aligned encoder is the tiny base with seeded noise
added to its weights: it is *not* aligned with anything; it only makes the two encoders differ so that every part of
the comparison (seed pairing, alpha blending, judging) runs. Point ``aligned_model`` at an SFT or GRPO output for a
real comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cogip.models import TINY_BUILT, build_tiny_qwen2_5_vl, build_tiny_qwen_image_components, load_policy

STANDIN_NOTE = ("stand-in aligned encoder: the tiny base with seeded weight noise, not a trained model; "
                "set aligned_model to an SFT/GRPO output for a real comparison")


def _done(path: Path) -> bool:
    return (path / TINY_BUILT).exists() or (path / "model_index.json").exists()


def ensure_tiny_base(out_dir: str | Path, seed: int = 0) -> Path:
    """The tiny Qwen2.5-VL (the same one ``cogalign demo`` and the tiny SFT config build), built once."""
    out = Path(out_dir)
    return out if _done(out) else build_tiny_qwen2_5_vl(out, seed=seed)


def ensure_tiny_qwen_image(out_dir: str | Path, encoder_dir: str | Path, seed: int = 0) -> Path:
    """A tiny QwenImagePipeline (random transformer and VAE, the tiny Qwen2.5-VL as text encoder) saved with
    ``save_pretrained``, so that ``QwenImagePipeline.from_pretrained(out_dir)`` loads it like a hub checkpoint."""
    from diffusers import QwenImagePipeline

    out = Path(out_dir)
    if (out / "model_index.json").exists():
        return out
    model, processor = load_policy(str(encoder_dir), dtype=torch.float32)
    parts = build_tiny_qwen_image_components(text_hidden_size=model.config.text_config.hidden_size, seed=seed)
    QwenImagePipeline(text_encoder=model, tokenizer=processor.tokenizer, **parts).save_pretrained(out)
    return out


def ensure_standin_aligned(out_dir: str | Path, base_dir: str | Path, seed: int = 1, noise: float = 0.5) -> Path:
    """The base plus Gaussian noise of ``noise`` times each weight tensor's own std, saved with its processor."""
    out = Path(out_dir)
    if _done(out):
        return out
    model, processor = load_policy(str(base_dir), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=gen) * noise * p.std())
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / TINY_BUILT).write_text(json.dumps(
        {"stand_in": True, "note": STANDIN_NOTE, "base": str(base_dir), "seed": seed, "noise": noise}, indent=2))
    return out


def is_standin(path: str | Path) -> bool:
    meta = Path(path) / TINY_BUILT
    return meta.exists() and bool(json.loads(meta.read_text()).get("stand_in"))
