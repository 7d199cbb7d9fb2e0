"""Arguments of the SFT stage: where the data comes from (:class:`SFTScriptArguments`) and how to train
(:class:`SoftLabelSFTConfig`, trl's ``SFTConfig`` plus the soft-label loss, freezing and per-part learning rates).

Both are plain dataclasses, so ``TrlParser`` reads them from the command line and from ``--config file.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from sft_warmstart.soft_label_loss import LOSS_KINDS, SoftLabelConfig

TINY_MODEL = "tiny"  # model_name_or_path value that builds a tiny random Qwen2.5-VL into <output_dir>/tiny-base


@dataclass
class SFTScriptArguments:
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
    dataset_test_split: str = field(
        default="validation",
        metadata={"help": "Split to evaluate on when eval_strategy is not 'no' (release: 'test'; synthetic: "
                          "'validation')."})
    hf_trait: str | None = field(default=None, metadata={"help": "hf: the trait of a dataset without a trait column."})
    hf_score_std_column: str | None = field(default=None, metadata={"help": "hf: column holding score_std."})
    synthetic_train_size: int = field(default=256, metadata={"help": "synthetic: number of training items."})
    synthetic_eval_size: int = field(default=32, metadata={"help": "synthetic: number of validation items."})
    synthetic_seed: int = field(default=0, metadata={"help": "synthetic: seed of the benchmark."})
    synthetic_traits: list[str] | None = field(
        default=None, metadata={"help": "synthetic: traits to draw (default: all four)."})
    prompt_style: str = field(
        default="full",
        metadata={"help": "Prompt wording for synthetic/hf data: 'full' (bands spelled out) or 'short' (tiny models)",
                  "choices": ["full", "short"]})
    answer_tags: bool = field(default=False, metadata={"help": "Wrap answers as <answer>...</answer>."})
    drop_invalid_items: bool = field(
        default=False,
        metadata={"help": "Drop invalid items (and say how many) instead of refusing to start."})
    merge_lora: bool = field(
        default=False,
        metadata={"help": "After LoRA training, also save base + adapter merged into <output_dir>/merged."})
    resume: bool = field(
        default=True,
        metadata={"help": "Resume from the last complete checkpoint in output_dir when there is one."})


@dataclass
class SoftLabelSFTConfig(SFTConfig):
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
    freeze_vision_tower: bool = field(default=False, metadata={"help": "Do not train the ViT blocks."})
    freeze_merger: bool = field(default=False, metadata={"help": "Do not train the vision-language merger."})
    freeze_llm: bool = field(default=False, metadata={"help": "Do not train the language model (full FT only)."})
    vision_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the ViT blocks (default: learning_rate)."})
    merger_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the merger (default: learning_rate)."})

    def soft_label_config(self) -> SoftLabelConfig:
        return SoftLabelConfig(kind=self.soft_label_loss, eta=self.soft_label_eta, lam=self.soft_label_lambda,
                               width=self.soft_label_width, sigma_fraction=self.soft_label_sigma_fraction,
                               chunk_elements=self.soft_label_chunk_elements)
