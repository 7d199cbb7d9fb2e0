"""Model paths in and merged models out: the ``tiny`` stand-in model, and folding a LoRA adapter into its base."""

from __future__ import annotations

import json
from pathlib import Path

from cogip.data import WrongFileError
from cogip.models import TINY_BUILT
from sft_warmstart.config import TINY_MODEL

TINY_BASE_DIR = "tiny-base"


def resolve_model_path(name: str | None, output_dir: str | Path, vision_pretrain_steps: int = 0,
                       position_targets: bool = True, pretrain_threads: int | None = None) -> str:
    """``name`` as given (a local folder made absolute: a LoRA adapter trained on it records it as its base, to be
    found from any working folder), except ``tiny``: a tiny random Qwen2.5-VL built once into
    ``<output_dir>/tiny-base`` (no download; what the CPU demo and the tests train), its vision first pretrained for
    ``vision_pretrain_steps`` steps when that is > 0 (:mod:`cogip.tiny_pretrain`, with or without its
    ``position_targets``, on ``pretrain_threads`` torch threads; redone if it did not finish).
    The main process builds it, the others wait."""
    if not name:
        raise ValueError("model_name_or_path is required (a hub id, a folder, or 'tiny')")
    if name != TINY_MODEL:
        return str(Path(name).resolve()) if Path(name).is_dir() else name
    from accelerate import PartialState

    from cogip.models import build_tiny_qwen2_5_vl
    from cogip.tiny_pretrain import PRETRAIN_RECORD, pretrain_vision

    path = (Path(output_dir) / TINY_BASE_DIR).resolve()  # absolute: adapter_config.json records it as the base
    record = path / PRETRAIN_RECORD
    with PartialState().main_process_first():
        if vision_pretrain_steps > 0 and record.exists():
            asked = {"steps": vision_pretrain_steps, "position_targets": position_targets}
            pretrained = json.loads(record.read_text())
            done = {k: pretrained.get(k) for k in asked}
            if done != asked:  # the run's checkpoints were trained on the model that is there
                raise WrongFileError(f"{path} holds the tiny model pretrained with {done}, and this run asks for "
                                     f"{asked}: give another output_dir, or delete {path} to pretrain it again")
        if vision_pretrain_steps > 0 and not record.exists():
            build_tiny_qwen2_5_vl(path)  # from scratch, also when an earlier pretraining was cut short
            pretrain_vision(path, steps=vision_pretrain_steps, position_targets=position_targets,
                            threads=pretrain_threads)
        elif not (path / TINY_BUILT).exists():  # written last: a build cut short is done again
            build_tiny_qwen2_5_vl(path)
    return str(path)


def save_merged(adapter_dir: str | Path, out_dir: str | Path, dtype: str | None = None) -> Path:
    """Load base + adapter from ``adapter_dir``, merge the LoRA weights (and the saved ViT/merger) into the base
    and save a plain checkpoint with its processor: it loads with ``from_pretrained`` alone."""
    from cogip.models import load_policy, without_zero3_init

    # Only the main process merges: under ZeRO-3 a partitioned load would wait forever for the other ranks.
    with without_zero3_init():
        model, processor = load_policy(adapter_dir, dtype=dtype or "auto", merge_adapter=True)
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
