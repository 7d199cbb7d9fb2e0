"""The SFT stage's data: any cogip source (see :mod:`cogip.data_sources`), validated before training starts, in
trl's conversational prompt/completion format with an ``images`` column."""

from __future__ import annotations

from cogip.data import to_sft_format
from cogip.data_sources import load_canonical_splits
from sft_warmstart.config import SFTScriptArguments


def load_sft_splits(script_args: SFTScriptArguments, with_eval: bool):
    """(train, eval or None) for ``SoftLabelSFTTrainer``."""
    train, evals = load_canonical_splits(script_args, with_eval)
    convert = lambda ds: None if ds is None else to_sft_format(ds, answer_tags=script_args.answer_tags)
    return convert(train), convert(evals)
