"""trl's ``GRPOTrainer`` with the per-part learning rates (ViT, merger, LLM) of the cogalign recipe."""

from __future__ import annotations

from trl import GRPOTrainer

from sft_warmstart.trainable import PartLearningRatesMixin


class CogGRPOTrainer(PartLearningRatesMixin, GRPOTrainer):
    pass
