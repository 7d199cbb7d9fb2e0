"""Arguments of the SFT stage: where the data comes from (:class:`SFTScriptArguments`) and how to train
(:class:`SoftLabelSFTConfig`, trl's ``SFTConfig`` plus the soft-label loss, freezing and per-part learning rates).

Both are plain dataclasses, so ``TrlParser`` reads them from the command line and from ``--config file.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from cogip.data_sources import DataArguments, check_at_least
from sft_warmstart.soft_label_loss import LOSS_KINDS, SoftLabelConfig
from sft_warmstart.trainable import TrainablePartsArguments

TINY_MODEL = "tiny"  # model_name_or_path value that builds a tiny random Qwen2.5-VL into <output_dir>/tiny-base


@dataclass
class SFTScriptArguments(DataArguments):
    """Where the data comes from (shared with the other stages) and what to save."""

    answer_tags: bool = field(default=False, metadata={"help": "Wrap answers as <answer>...</answer>."})
    tiny_vision_pretrain_steps: int = field(
        default=0,
        metadata={"help": "With model_name_or_path 'tiny': first train the tiny model's vision tower and merger for "
                          "this many steps to see the synthetic images' visible attributes (never a trait score), "
                          "the stand-in for a real checkpoint's pretrained vision (cogip.tiny_pretrain). 0: leave "
                          "the tiny model random."})
    tiny_vision_position_targets: bool = field(
        default=True,
        metadata={"help": "In that pretraining, also teach each image token where it lies (x, y, distance from the "
                          "centre); false reproduces the towers before these targets (BENCHMARKS.md)."})
    tiny_vision_pretrain_threads: int | None = field(
        default=None,
        metadata={"help": "Torch threads of that pretraining (unset: OMP_NUM_THREADS when set, else the cores this "
                          "process may use, at most 4; give 1 when other work shares the CPU)."})
    merge_lora: bool = field(
        default=False,
        metadata={"help": "After LoRA training, also save base + adapter merged into <output_dir>/merged."})
    resume: bool = field(
        default=True,
        metadata={"help": "Resume from the last complete checkpoint in output_dir when there is one."})

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, {"tiny_vision_pretrain_threads": 1})


@dataclass
class SoftLabelSFTConfig(SFTConfig, TrainablePartsArguments):
    """trl's ``SFTConfig`` plus the soft-label loss on score digits and the vision/merger/LLM training recipe."""

    soft_label_loss: str = field(
        default="triangular", metadata={"help": f"Loss on the score digits: one of {LOSS_KINDS}.",
                                        "choices": list(LOSS_KINDS)})
    soft_label_eta: float = field(default=0.15, metadata={"help": "Weight of the soft part of each digit's target."})
    soft_label_lambda: float = field(
        default=2.0, metadata={"help": "Weight of a score-digit token against any other answer token."})
    soft_label_width: float = field(
        default=0.2, metadata={"help": "triangular: distance (fraction of the trait's range) where psi reaches 0."})
    soft_label_sigma_fraction: float = field(
        default=0.05, metadata={"help": "gaussian: sigma as a fraction of the trait's range without score_std."})
    soft_label_chunk_elements: int = field(
        default=1 << 22, metadata={"help": "Logit elements per block in the loss (bounds its extra memory)."})

    def __post_init__(self):
        super().__post_init__()
        self.soft_label_config()  # a bad value from a YAML config fails here, not after the model has loaded
        self.check_reporting()

    def soft_label_config(self) -> SoftLabelConfig:
        return SoftLabelConfig(kind=self.soft_label_loss, eta=self.soft_label_eta, lam=self.soft_label_lambda,
                               width=self.soft_label_width, sigma_fraction=self.soft_label_sigma_fraction,
                               chunk_elements=self.soft_label_chunk_elements)
