"""trl's ``GRPOTrainer`` with the per-part learning rates (ViT, merger, LLM) of the cogalign recipe, and a resume
that really restores the weights of a full fine-tuning checkpoint (see ``cogip.checkpoints.load_checkpoint_weights``).
"""

from __future__ import annotations

from pathlib import Path

from trl import GRPOTrainer

from cogip.checkpoints import load_checkpoint_weights
from sft_warmstart.trainable import PartLearningRatesMixin


class CogGRPOTrainer(PartLearningRatesMixin, GRPOTrainer):
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # Full weights saved by save_pretrained only; DeepSpeed, FSDP and LoRA adapters have loaders that work.
        folder = Path(resume_from_checkpoint)
        full = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
        if model is None and full and not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            return load_checkpoint_weights(self.model, folder)
        return super()._load_from_checkpoint(resume_from_checkpoint, model)
