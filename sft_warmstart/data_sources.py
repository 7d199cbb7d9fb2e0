"""The SFT stage's data: any cogip loader (synthetic benchmark, release folder, upstream file, HF dataset), validated
before training starts, converted to trl's prompt/completion + images format.

Bad data raises ``cogip.data.DataValidationError`` (every problem with file and index) unless
``drop_invalid_items`` is set, in which case the loader drops the bad items and logs how many.
"""

from __future__ import annotations

from cogip.data import load_hf, load_release, load_upstream, to_sft_format
from sft_warmstart.config import SFTScriptArguments


def _need_path(script_args: SFTScriptArguments) -> str:
    if not script_args.dataset_path:
        raise ValueError(f"dataset '{script_args.dataset}' needs dataset_path")
    return script_args.dataset_path


def load_canonical_splits(script_args: SFTScriptArguments, with_eval: bool):
    """(train, eval or None) in cogip's canonical schema."""
    a = script_args
    if a.dataset == "synthetic":
        from cogip.synthetic import TRAITS, make_benchmark

        traits = tuple(a.synthetic_traits or TRAITS)
        splits = make_benchmark(n_train=a.synthetic_train_size, n_validation=a.synthetic_eval_size if with_eval else 0,
                                n_test=0, seed=a.synthetic_seed, prompt_style=a.prompt_style)
        if traits != TRAITS:  # make_benchmark cycles all four; keep the asked ones
            splits = splits.filter(lambda t: t in traits, input_columns="trait")
        train, evals = splits["train"], splits["validation"]
    elif a.dataset == "release":
        splits = load_release(_need_path(a), a.image_root, drop_invalid=a.drop_invalid_items)
        train = splits[a.dataset_train_split]
        evals = splits[a.dataset_test_split] if with_eval and a.dataset_test_split in splits else None
    elif a.dataset == "upstream":
        train, evals = load_upstream(_need_path(a), a.image_root, drop_invalid=a.drop_invalid_items), None
    elif a.dataset == "hf":
        kw = {"trait": a.hf_trait, "score_std_column": a.hf_score_std_column, "prompt_style": a.prompt_style,
              "drop_invalid": a.drop_invalid_items}
        train = load_hf(_need_path(a), a.dataset_train_split, **kw)
        evals = load_hf(a.dataset_path, a.dataset_test_split, **kw) if with_eval else None
    else:
        raise ValueError(f"unknown dataset source {a.dataset!r}")
    if len(train) == 0:
        raise ValueError(f"no training items in {a.dataset} data {a.dataset_path or ''}".strip())
    return train, (evals if with_eval else None)


def load_sft_splits(script_args: SFTScriptArguments, with_eval: bool):
    """(train, eval or None) in trl's conversational prompt/completion format with an ``images`` column."""
    train, evals = load_canonical_splits(script_args, with_eval)
    convert = lambda ds: None if ds is None else to_sft_format(ds, answer_tags=script_args.answer_tags)
    return convert(train), convert(evals)
