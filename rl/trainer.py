"""trl's ``GRPOTrainer`` with the per-part learning rates (ViT, merger, LLM) of the cogalign recipe, and a resume
that really restores the weights of a full fine-tuning checkpoint (see ``cogip.checkpoints.load_checkpoint_weights``).
"""

from __future__ import annotations

import warnings

from trl import GRPOTrainer

from cogip.checkpoints import FullWeightsResumeMixin
from sft_warmstart.trainable import PartLearningRatesMixin

# trl reads transformers' deprecated `model.is_gradient_checkpointing` on every generation: a warning our users cannot
# act on, printed into the progress bar each time.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


class CogGRPOTrainer(FullWeightsResumeMixin, PartLearningRatesMixin, GRPOTrainer):
    """trl's GRPOTrainer with per-part learning rates and a full-weights resume that restores the weights."""
