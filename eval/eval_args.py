"""The options of ``eval/run.py`` (and ``cogalign eval``), as a dataclass for ``HfArgumentParser``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cogip.traits import load_traits_file, traits_file_field


@dataclass
class EvalArgs:
    run_dir: str | None = field(default=None, metadata={
        "help": "training output folder: every complete checkpoint-N in it is evaluated (incomplete ones skipped)"})
    checkpoint: str | None = field(default=None, metadata={
        "help": "evaluate one model instead: a folder (full weights or LoRA adapter) or a hub id"})
    compare: list[str] | None = field(default=None, metadata={
        "help": "two models A B: paired bootstrap comparison on the same items"})
    data: str = field(default="synthetic", metadata={
        "help": "'synthetic' (the built-in benchmark), an upstream CogIP-Bench file or release folder, or a "
                "datasets.save_to_disk folder"})
    image_root: str | None = field(default=None, metadata={"help": "folder of the upstream <Trait>/<id>.jpg"})
    split: str = field(default="test", metadata={"help": "split of a release / DatasetDict / the synthetic benchmark"})
    drop_invalid: bool = field(default=False, metadata={"help": "drop invalid upstream items (counted) instead of "
                                                                "refusing to run"})
    synthetic_n: int = field(default=400, metadata={"help": "items in the synthetic split evaluated"})
    synthetic_seed: int = field(default=0, metadata={"help": "seed of the synthetic benchmark (as in training)"})
    image_size: int = field(default=56, metadata={"help": "synthetic image size"})
    prompt_style: str | None = field(default=None, metadata={
        "help": "items without a question (synthetic ones, a dataset of image / trait / score): ask the 'full' or "
                "'short' one (unset: as the model was trained, from its run's saved config; without one, short on "
                "synthetic items and full on a dataset's)", "choices": ["full", "short"]})
    max_items_per_trait: int | None = field(default=None, metadata={
        "help": "evaluate only the first N (>= 1) items of each trait (unset: all; upstream sampled 120 at random)"})
    output_dir: str | None = field(default=None, metadata={
        "help": "where results go (unset: <run_dir>/eval or ./eval_results)"})
    decoding: str = field(default="greedy", metadata={"help": "greedy | expected | sample",
                                                      "choices": ["greedy", "expected", "sample"]})
    num_samples: int = field(default=8, metadata={"help": "samples per item with --decoding sample"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature with --decoding sample"})
    batch_size: int = field(default=16, metadata={"help": "items per generate call"})
    max_new_tokens: int = field(default=24, metadata={"help": "generation length (answers are short)"})
    unparsable: str = field(default="midpoint", metadata={
        "help": "how unparsable answers are scored: midpoint | worst | train_mean (they are always counted)",
        "choices": ["midpoint", "worst", "train_mean"]})
    n_boot: int = field(default=1000, metadata={
        "help": "bootstrap resamples for the 95%% intervals (0: none; --compare takes at least 200, since its "
                "verdict rests on the interval)"})
    blindness: bool = field(default=True, metadata={"help": "re-score with blank and shuffled images"})
    blindness_models: str = field(default="all", metadata={
        "help": "with --run_dir: run the blindness check on 'all' checkpoints or only on the run's 'final' model",
        "choices": ["all", "final"]})
    blindness_items: int | None = field(default=None, metadata={
        "help": "re-score only the first this many items in the blindness check (unset: all)"})
    blindness_tolerance: float = field(default=0.02, metadata={
        "help": "flag a trait whose predictions move less than this share of its range under shuffled images"})
    reward_funcs: list[str] | None = field(default=None, metadata={
        "help": "rewards to compute on the predictions (registry names or module:function)"})
    dtype: str = field(default="auto", metadata={"help": "model dtype", "choices": ["auto", "bfloat16", "float16",
                                                                                  "float32"]})
    image_max_pixels: int | None = field(default=None, metadata={
        "help": "resize every evaluated model's images to at most this many pixels, as training's image_max_pixels "
                "(e.g. a base model from the hub beside a checkpoint trained at 1003520; unset: each model's "
                "processor's own bound)"})
    vision_cache_gb: float = field(default=0.0, metadata={
        "help": "GiB of image tokens kept so that each image passes the vision tower once (cogip.vision_cache; "
                "0: off)"})
    device: str | None = field(default=None, metadata={"help": "cuda / cpu (unset: cuda when available)"})
    seed: int = field(default=0, metadata={"help": "seed for sampling, shuffles and the bootstrap"})
    include_final: bool = field(default=True, metadata={
        "help": "also evaluate the model saved at the top of --run_dir when no checkpoint has its step"})
    resume: bool = field(default=True, metadata={
        "help": "with --run_dir: reuse the predictions of each checkpoint already evaluated with the same decoding "
                "settings, items and weights (kept in <output_dir>/per_checkpoint/) and score them again; false "
                "predicts for every checkpoint again"})
    traits_file: str | None = traits_file_field()

    def __post_init__(self) -> None:
        modes = sum(x is not None for x in (self.run_dir, self.checkpoint, self.compare))
        if modes != 1:
            raise ValueError("give exactly one of --run_dir, --checkpoint, --compare A B")
        if self.compare is not None and len(self.compare) != 2:
            raise ValueError("--compare takes two models")
        from cogip.data_sources import check_at_least, check_choices, check_device

        load_traits_file(self.traits_file)
        check_choices(self)  # values from --config are not checked by argparse
        check_device("device", self.device)
        check_at_least(self, {"blindness_items": 1, "n_boot": 0, "max_items_per_trait": 1, "synthetic_n": 1,
                              "batch_size": 1, "num_samples": 1, "max_new_tokens": 1, "image_max_pixels": 28 * 28})
        from rewards import build_reward_func

        for spec in self.reward_funcs or []:  # registry names checked now, not after the models have answered
            try:
                if ":" not in spec:  # module:function is imported when the rewards are computed
                    build_reward_func(spec)
            except KeyError as e:
                raise ValueError(f"--reward_funcs: {e.args[0]}") from None
        from cogip.synthetic import SPLITS

        if self.data == "synthetic" and self.split not in SPLITS:
            raise ValueError(f"--split of the synthetic data must be one of {', '.join(SPLITS)}, not {self.split!r}")
        if self.data == "synthetic" and self.image_root:
            raise ValueError("--image_root is where the images of --data are; without --data the synthetic "
                             "benchmark (which makes its own) would be evaluated")

    def results_dir(self) -> Path:
        """Where the results go: ``--output_dir``, else ``<run_dir>/eval``, else ``./eval_results``."""
        return Path(self.output_dir or (Path(self.run_dir) / "eval" if self.run_dir else "eval_results"))

    def check_models_exist(self) -> None:
        """Fail fast on a model folder that is not there (called when the evaluation starts: the demo builds its
        settings before the models exist)."""
        from cogip.models import check_model_exists

        if self.run_dir is not None and not Path(self.run_dir).is_dir():
            raise FileNotFoundError(f"--run_dir {self.run_dir}: no such folder")
        if self.run_dir is not None and re.fullmatch(r"checkpoint-\d+", Path(self.run_dir).resolve().name):
            from cogip.data import WrongFileError

            raise WrongFileError(f"--run_dir {self.run_dir} is one checkpoint of a run: give the run's folder "
                                 f"({Path(self.run_dir).resolve().parent}), or --checkpoint {self.run_dir}")
        for ref in [self.checkpoint] if self.checkpoint else self.compare or []:
            check_model_exists(ref, "--checkpoint" if self.checkpoint else "--compare")
