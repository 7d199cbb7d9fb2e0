"""Finding the checkpoints a run can resume from, and loading their weights back.

The HF ``Trainer`` writes ``checkpoint-<step>/`` in this order: weights, optimizer, scheduler, RNG state and, last,
``trainer_state.json``. A folder whose ``trainer_state.json`` is missing or unreadable is what a run killed while
saving leaves behind; it is never picked up (the DESIGN rule: resume from the last *complete* checkpoint).

>>> last_complete_checkpoint("/nonexistent") is None
True
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

TRAINER_STATE = "trainer_state.json"
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


def is_complete_checkpoint(path: str | Path) -> bool:
    """True when ``path`` holds a ``trainer_state.json`` that parses and records a global step."""
    state = Path(path) / TRAINER_STATE
    try:
        with open(state) as f:
            return isinstance(json.load(f).get("global_step"), int)
    except (OSError, ValueError, AttributeError):
        # Missing, half-written (killed during the write) or not a JSON object.
        return False


# What ``save_pretrained`` writes for a full model or a LoRA adapter, whole or sharded (an index names the shards).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")


ZERO3_HINT = ("a DeepSpeed ZeRO-3 checkpoint saved without stage3_gather_16bit_weights_on_model_save keeps only its "
              "shards: 'python <checkpoint>/zero_to_fp32.py <checkpoint> <checkpoint> --safe_serialization' writes "
              "the weights")


def has_model_weights(path: str | Path) -> bool:
    """True when ``path`` holds model or adapter weights that ``from_pretrained`` can load. A DeepSpeed ZeRO-3
    checkpoint saved without ``stage3_gather_16bit_weights_on_model_save`` has only its partitioned shards
    (``global_step*/``): training resumes from it, but nothing can be evaluated from it until DeepSpeed's
    ``zero_to_fp32.py`` has written the weights."""
    return any((Path(path) / name).is_file() for name in WEIGHT_FILES)


def list_complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete ``checkpoint-<step>`` folders under ``output_dir``, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _CHECKPOINT_DIR.match(child.name)
        if m and child.is_dir() and is_complete_checkpoint(child):
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The highest-step complete checkpoint under ``output_dir`` as a string (what ``resume_from_checkpoint``
    takes), or None when there is none."""
    done = list_complete_checkpoints(output_dir)
    return str(done[-1]) if done else None


def set_aside_incomplete(output_dir: str | Path) -> list[Path]:
    """Rename each incomplete ``checkpoint-<step>`` folder under ``output_dir`` to ``incomplete-checkpoint-<step>``
    (kept, not deleted). Left as it was, the Trainer's ``save_total_limit`` rotation counts it as a checkpoint: one of
    a higher step than the next save is kept as the newest while complete ones are deleted. The new paths."""
    moved = []
    for child in sorted(Path(output_dir).glob("checkpoint-*")):
        if _CHECKPOINT_DIR.match(child.name) and child.is_dir() and not is_complete_checkpoint(child):
            target, n = child.with_name(f"incomplete-{child.name}"), 1
            while target.exists():
                n += 1
                target = child.with_name(f"incomplete-{child.name}.{n}")
            moved.append(child.rename(target))
    return moved


def resume_point(training_args, auto_resume: bool = True) -> str | None:
    """Where a training run starts from: ``resume_from_checkpoint`` when given, else (with ``auto_resume``) the last
    complete checkpoint in ``output_dir``, else None (a fresh start)."""
    if training_args.resume_from_checkpoint is not None:
        return training_args.resume_from_checkpoint
    return last_complete_checkpoint(training_args.output_dir) if auto_resume else None


# What a Trainer checkpoint holds besides the model: the training state, never part of a final save.
_TRAINING_STATE = re.compile(r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth|trainer_state\.json|"
                             r"training_args\.bin|latest|zero_to_fp32\.py|weight_average.*\.safetensors)$")
_WEIGHT_SHARD = re.compile(r"^(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)$")


def is_weight_file(path: Path) -> bool:
    """Whether ``path`` holds model or adapter weights of a save (whole, a shard, or a shard index)."""
    return path.name in WEIGHT_FILES or bool(_WEIGHT_SHARD.match(path.name))


def newest_weights(folder: str | Path) -> float:
    """The modification time of the newest weight file in ``folder`` (0 when it has none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0.0
    return max((p.stat().st_mtime for p in folder.iterdir() if is_weight_file(p)), default=0.0)


def copy_model_files(checkpoint: str | Path, out: Path, weights: bool = True) -> None:
    """Copy what a final save holds (``weights`` too, or all but the weights) from ``checkpoint`` into ``out``,
    skipping files already there unchanged."""
    for src in Path(checkpoint).iterdir():
        dst = out / src.name
        same = dst.is_file() and (dst.stat().st_size, dst.stat().st_mtime_ns) == (
            src.stat().st_size, src.stat().st_mtime_ns)
        if src.is_file() and not _TRAINING_STATE.match(src.name) and not same and (weights or not is_weight_file(src)):
            shutil.copy2(src, dst)


def finished_at(checkpoint: str | Path | None, args) -> bool:
    """Whether ``checkpoint`` ends the run ``args`` describe: it reached ``max_steps`` (when > 0), or else its
    ``num_train_epochs`` (a run given more epochs goes on; one given more data for the same epochs does not: start
    that in a new output_dir)."""
    if checkpoint is None:
        return False
    try:
        state = json.loads((Path(checkpoint) / TRAINER_STATE).read_text())
        if args.max_steps and args.max_steps > 0:
            return state["global_step"] >= args.max_steps
        return state["epoch"] >= args.num_train_epochs - 1e-9
    except (OSError, ValueError, KeyError, TypeError):
        return False


def train_and_save(trainer, resume: str | None) -> dict:
    """``trainer.train(resume_from_checkpoint=resume)`` then ``save_model`` to the output folder, and the training
    metrics, also saved as ``train_results.json`` (the Trainer's ``save_metrics``). A ``resume`` checkpoint that
    already ends the run (:func:`finished_at`) is the final model: the Trainer, resumed there, would take one step
    more (mid-epoch) or train none and save new metrics over the run's, so nothing trains, the checkpoint's model
    files are copied to the output folder (where they are not there already; from a run that averaged its weights,
    all but the weights: its final model is the mean, :func:`cogip.weight_average.finish_saved_run`) and the metrics
    are those the finished run saved."""
    from cogip.weight_average import averaging, finish_saved_run, holds_average

    out = Path(trainer.args.output_dir)
    if (avg := averaging(trainer)) is not None:
        avg.resume_from = resume  # where a resumed run's running mean of the weights is
    if not finished_at(resume, trainer.args):
        if trainer.accelerator.is_main_process:
            for moved in set_aside_incomplete(out):
                trainer.accelerator.print(f"Set aside an incomplete checkpoint (killed while saving): {moved}")
        trainer.accelerator.wait_for_everyone()
        if resume:
            trainer.accelerator.print(f"Resuming from {resume}")
        metrics = trainer.train(resume_from_checkpoint=resume).metrics
        trainer.save_model(str(out))
        trainer.save_metrics("train", metrics, combined=False)
        return metrics
    trainer.accelerator.print(f"{resume} reached the run's last step: nothing left to train")
    if trainer.accelerator.is_main_process:  # a run that averaged its weights: the mean, not these, is its model
        copy_model_files(resume, out, weights=not holds_average(resume))
    finish_saved_run(trainer, resume)
    trainer.accelerator.wait_for_everyone()
    try:
        return json.loads((out / "train_results.json").read_text())
    except (OSError, ValueError):
        return {}


def load_checkpoint_weights(model, checkpoint: str | Path) -> None:
    """Load the weights ``save_pretrained`` wrote to ``checkpoint`` into ``model``, every one of them.

    transformers 5 saves VLMs such as Qwen2.5-VL under their original key names (``visual.*``, ``model.layers.*``)
    while the module holds ``model.visual.*`` and ``model.language_model.*``. The Trainer's own resume loads the file
    without renaming and non-strictly, so it silently keeps the weights it started with (transformers#43701). Keys
    are renamed here as ``from_pretrained`` renames them, and a weight left unloaded (tied ones aside) is an error.
    """
    from safetensors.torch import load_file
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    folder = Path(checkpoint)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    own = model.state_dict()
    state = {}
    for name in files:
        for key, tensor in load_file(folder / name, device="cpu").items():
            renamed, converter = rename_source_key(key, renamings, converters, model.base_model_prefix, own)
            if converter is not None:
                raise NotImplementedError(f"{key} in {folder} needs a weight conversion, not just a new name")
            state[renamed if renamed in own else key] = tensor
    result = model.load_state_dict(state, strict=False)
    missing = set(result.missing_keys) - set(getattr(model, "all_tied_weights_keys", None) or {})
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{folder} does not match the model: missing {sorted(missing)[:5]} "
                           f"({len(missing)}), unexpected {sorted(result.unexpected_keys)[:5]} "
                           f"({len(result.unexpected_keys)})")


class FullWeightsResumeMixin:
    """For Trainer subclasses: resuming from a full-weights checkpoint restores the weights through
    :func:`load_checkpoint_weights`. DeepSpeed, FSDP and LoRA-adapter checkpoints keep the Trainer's own loaders."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        folder = Path(resume_from_checkpoint)
        full = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
        if model is None and full and not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            return load_checkpoint_weights(self.model, folder)
        return super()._load_from_checkpoint(resume_from_checkpoint, model)
