"""Where a training or evaluation run takes its data from: the arguments every stage shares, and one function that
turns them into canonical splits through the loaders of :mod:`cogip.data`.

Bad data raises :class:`cogip.data.DataValidationError` (every problem with file and index) before anything
trains, unless ``drop_invalid_items`` is set, in which case the bad items are dropped and counted in the log.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from cogip.data import MissingSplitError, load_hf, load_release, load_upstream, release_splits
from cogip.traits import get_trait, load_traits_file, traits_file_field


def check_choices(args) -> None:
    """Check every field that lists ``choices`` in its metadata. argparse checks only values given as flags; values
    from ``--config file.yaml`` become parser defaults, which it does not check, so a typo there would otherwise
    fail late (after a model has loaded) or not at all."""
    for f in dataclasses.fields(args):
        choices, value = f.metadata.get("choices"), getattr(args, f.name)
        if choices is not None and value is not None and value not in choices:  # None: left unset
            raise ValueError(f"{f.name}: {value!r} is not one of {', '.join(map(str, choices))}")


def check_traits(name: str, values: list[str] | None) -> None:
    """Refuse a field listing trait names that names one the registry does not know (unset, None, passes)."""
    try:
        for value in values or []:
            get_trait(value)
    except KeyError as e:
        raise ValueError(f"{name}: {e.args[0]}") from None


def check_device(name: str, value: str | None) -> None:
    """Refuse a device torch cannot name, or a CUDA device where none is visible (unset, None, passes)."""
    import torch

    if value is None:
        return
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise ValueError(f"--{name}: {value!r} is not a device (cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--{name} {value}: no CUDA device is visible here (use --{name} cpu)")


def check_at_least(args, lows: dict[str, int]) -> None:
    """Refuse a field of ``args`` below its lower bound in ``lows`` (a field left unset, None, passes)."""
    for name, low in lows.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise ValueError(f"--{name} must be at least {low}, not {value}")


@dataclass
class DataArguments:
    dataset: str = field(
        default="synthetic",
        metadata={"help": "Data source: 'synthetic' (built-in benchmark), 'release' (a CogIP-Bench release folder), "
                          "'upstream' (one upstream file or folder), or 'hf' (hub id or load_from_disk folder).",
                  "choices": ["synthetic", "release", "upstream", "hf"]},
    )
    dataset_path: str | None = field(default=None, metadata={"help": "Release folder, upstream file or HF dataset."})
    image_root: str | None = field(
        default=None, metadata={"help": "Folder the upstream '<Trait>/<id>.jpg' image paths are relative to."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(
        default=None,
        metadata={"help": "Held-out split (unset: 'test' for a release, 'validation' for the others)."})
    hf_trait: str | None = field(default=None, metadata={"help": "hf: the trait of a dataset without a trait column."})
    hf_score_std_column: str | None = field(default=None, metadata={"help": "hf: column holding score_std."})
    synthetic_train_size: int = field(default=256, metadata={"help": "synthetic: number of training items."})
    synthetic_eval_size: int = field(default=32, metadata={"help": "synthetic: number of validation items."})
    synthetic_seed: int = field(default=0, metadata={"help": "synthetic: seed of the benchmark."})
    synthetic_train_start: int = field(
        default=0, metadata={"help": "synthetic: first training item to use (skip the ones an earlier stage saw)."})
    synthetic_traits: list[str] | None = field(
        default=None, metadata={"help": "synthetic: traits to keep (unset: all four; names or aliases). The sizes "
                                        "count items of all four traits, so one trait keeps a quarter of them."})
    prompt_style: str = field(
        default="full",
        metadata={"help": "Prompt wording for synthetic/hf data: 'full' (bands spelled out) or 'short' (tiny models)",
                  "choices": ["full", "short"]})
    drop_invalid_items: bool = field(
        default=False,
        metadata={"help": "Drop invalid items (and say how many) instead of refusing to start."})
    image_max_pixels: int | None = field(
        default=None,
        metadata={"help": "Resize each image to at most this many pixels before the vision tower (28 x 28 per image "
                          "token: 1003520 is 1,280 tokens), which bounds a step's memory. Saved with the processor, "
                          "so evaluation and generation see images as training did. Unset: the processor's own "
                          "(12.8 MP for Qwen2.5-VL-7B-Instruct)."})
    traits_file: str | None = traits_file_field()

    def __post_init__(self):
        load_traits_file(self.traits_file)
        check_choices(self)
        check_traits("synthetic_traits", self.synthetic_traits)
        check_at_least(self, {"image_max_pixels": 28 * 28})  # one image token
        if self.dataset_test_split is None:
            self.dataset_test_split = "test" if self.dataset == "release" else "validation"
        if self.dataset != "synthetic" and not self.dataset_path:
            raise ValueError(f"dataset '{self.dataset}' needs dataset_path (--dataset_path)")


def load_canonical_splits(args: DataArguments, with_eval: bool):
    """``(train, held_out or None)`` in cogip's canonical schema."""
    if args.dataset == "synthetic":
        from cogip.synthetic import TRAITS, make_benchmark

        traits = tuple(get_trait(t).name for t in args.synthetic_traits) if args.synthetic_traits else TRAITS
        splits = make_benchmark(n_train=args.synthetic_train_size,
                                n_validation=args.synthetic_eval_size if with_eval else 0, n_test=0,
                                seed=args.synthetic_seed, prompt_style=args.prompt_style,
                                train_start=args.synthetic_train_start)
        if traits != TRAITS:  # make_benchmark cycles all four; keep the asked ones
            splits = splits.filter(lambda t: t in traits, input_columns="trait")
        train, held_out = splits["train"], splits["validation"]
    elif args.dataset == "release":
        present, wanted = release_splits(args.dataset_path), [args.dataset_train_split]
        if with_eval and args.dataset_test_split not in present:
            logging.getLogger(__name__).warning(
                "%s has no held-out split %r (it has: %s): no held-out scoring; set --dataset_test_split",
                args.dataset_path, args.dataset_test_split, ", ".join(present))
        elif with_eval:
            wanted.append(args.dataset_test_split)
        splits = load_release(args.dataset_path, args.image_root, drop_invalid=args.drop_invalid_items,
                              splits=wanted)
        train, held_out = splits[args.dataset_train_split], splits.get(args.dataset_test_split)
    elif args.dataset == "upstream":
        train, held_out = load_upstream(args.dataset_path, args.image_root, drop_invalid=args.drop_invalid_items), None
    elif args.dataset == "hf":
        kw = {"trait": args.hf_trait, "score_std_column": args.hf_score_std_column, "prompt_style": args.prompt_style,
              "drop_invalid": args.drop_invalid_items}
        train = load_hf(args.dataset_path, args.dataset_train_split, **kw)
        held_out = None
        if with_eval:
            try:
                held_out = load_hf(args.dataset_path, args.dataset_test_split, **kw)
            except MissingSplitError as e:
                logging.getLogger(__name__).warning("%s: no held-out scoring; set --dataset_test_split", e)
    else:
        raise ValueError(f"unknown dataset source {args.dataset!r}")
    if len(train) == 0:
        raise ValueError(f"no training items in {args.dataset} data {args.dataset_path or ''}".strip())
    return train, (held_out if with_eval else None)
