"""trl's ``GRPOTrainer`` with the per-part learning rates (ViT, merger, LLM) of the cogalign recipe."""

from __future__ import annotations

from trl import GRPOTrainer

from sft_warmstart.trainable import parameter_groups


class CogGRPOTrainer(GRPOTrainer):
    def create_optimizer(self, model=None):
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            groups = parameter_groups(opt_model, self.args, set(self.get_decay_parameter_names(opt_model)))
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer
