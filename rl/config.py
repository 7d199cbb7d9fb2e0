"""Arguments of the GRPO stage: data and rewards (:class:`GRPOScriptArguments`) and training
(:class:`CogGRPOConfig`: trl's ``GRPOConfig`` plus the freeze flags and per-part learning rates of the SFT stage)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from cogip.data_sources import DataArguments
from eval.predict import DECODINGS
from sft_warmstart.trainable import TrainablePartsArguments


@dataclass
class GRPOScriptArguments(DataArguments):
    reward_funcs: list[str] = field(
        default_factory=lambda: ["distance_gaussian", "format"],
        metadata={"help": "Reward functions by name (rewards.REWARD_FUNCS): distance_linear, distance_gaussian, "
                          "distance_laplace, distance_upstream, distance_crps, format, label_consistency, "
                          "rank_global. Weights: reward_weights."})
    reward_sigma_frac: float | None = field(
        default=None, metadata={"help": "distance_gaussian / rank_global: sigma as a fraction of the trait's range."})
    reward_use_score_std: bool | None = field(
        default=None, metadata={"help": "distance_gaussian: use the item's rater spread (score_std) as sigma."})
    reward_unparsable_penalty: float | None = field(
        default=None, metadata={"help": "Reward for a completion with no readable score (unset: each "
                                        "function's own, 0 or -0.5 for distance_upstream)."})
    rank_mode: str | None = field(
        default=None, metadata={"help": "rank_global: 'concordance' or 'thurstone'.",
                                "choices": ["concordance", "thurstone"]})
    sft_adapter: str = field(
        default="merge",
        metadata={"help": "When model_name_or_path is a LoRA adapter (e.g. the SFT output): 'merge' it into the base "
                          "and train as configured (refused under ZeRO-3 and with use_peft: start from the SFT "
                          "stage's merged model then), or 'train' the same adapter further.",
                  "choices": ["merge", "train"]})
    correlation_eval_size: int | None = field(
        default=None, metadata={"help": "Held-out items scored every eval_steps (unset: the whole split)."})
    correlation_batch_size: int = field(default=16, metadata={"help": "Batch size of the held-out scoring."})
    correlation_decoding: str = field(
        default="greedy",
        metadata={"help": "Decoding of the held-out scoring, as in eval/run.py: greedy, or expected (the score "
                          "averaged over the answer distribution: what a model that hedges between bands believes).",
                  "choices": list(DECODINGS)})
    resume: bool = field(
        default=True, metadata={"help": "Resume from the last complete checkpoint in output_dir when there is one."})

    def __post_init__(self):
        super().__post_init__()
        from rewards import build_reward_funcs

        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [self.reward_funcs]
        # "distance_crps,format" in a config
        self.reward_funcs = [n.strip() for item in self.reward_funcs for n in str(item).split(",") if n.strip()]
        try:  # unknown names and options no named reward takes: refused here, before any data or model loads
            build_reward_funcs(self.reward_funcs, **self.reward_options())
        except KeyError as e:
            raise ValueError(f"reward_funcs: {e.args[0]}") from None

    def reward_options(self) -> dict:
        """Options for rewards.build_reward_funcs, only those that were set."""
        opts = {"sigma_frac": self.reward_sigma_frac, "use_score_std": self.reward_use_score_std,
                "unparsable_penalty": self.reward_unparsable_penalty, "mode": self.rank_mode}
        return {k: v for k, v in opts.items() if v is not None}


class RewardWeightsError(ValueError):
    """reward_weights that do not pair with reward_funcs."""


def check_reward_weights(script_args: GRPOScriptArguments, training_args) -> None:
    weights, funcs = training_args.reward_weights, script_args.reward_funcs
    if weights is not None and len(weights) != len(funcs):
        raise RewardWeightsError(f"reward_weights {list(weights)} has {len(weights)} weights for {len(funcs)} "
                                 f"reward_funcs {list(funcs)}: give one per function, in the same order")


@dataclass
class CogGRPOConfig(GRPOConfig, TrainablePartsArguments):
    """trl's ``GRPOConfig`` plus which parts of Qwen2.5-VL train and at what rate (as in the SFT stage)."""

    zero_std_warn_frac: float = field(
        default=0.5, metadata={"help": "Warn when frac_reward_zero_std stays above this for zero_std_warn_logs logs."})
    zero_std_warn_logs: int = field(default=5, metadata={"help": "See zero_std_warn_frac."})
    average_weights: bool = field(
        default=False,
        metadata={"help": "Save as the final model the mean of the trainable weights over the run's steps (from "
                          "average_weights_start, every average_weights_every steps) instead of the last ones; "
                          "each checkpoint keeps its own step's weights and the running mean (cogip.weight_average)."})
    average_weights_start: int = field(
        default=0, metadata={"help": "Steps after which the weights are averaged: steps start + every, start + "
                                     "2 x every, ... are taken into the mean."})
    average_weights_every: int = field(default=10, metadata={"help": "Steps between two weights taken into the mean."})

    def __post_init__(self):
        super().__post_init__()
        self.check_reporting()
        from cogip.weight_average import check_settings

        check_settings(self.average_weights_start, self.average_weights_every,
                       self.max_steps if self.average_weights else 0)
