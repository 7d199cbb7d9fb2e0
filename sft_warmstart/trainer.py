"""``SoftLabelSFTTrainer``: trl's ``SFTTrainer`` for vision-language prompt/completion data, trained with the
soft-label loss on the score digits, with per-part learning rates (ViT / merger / LLM).

Everything else is trl's: the collator, gradient checkpointing, PEFT handling, DeepSpeed ZeRO-2/3 through
accelerate, checkpoints and logging. The model must come prepared (LoRA and freezing, see :mod:`trainable`).
"""

from __future__ import annotations

import torch
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from cogip.checkpoints import FullWeightsResumeMixin
from cogip.models import digit_token_ids
from sft_warmstart.collator import ITEM_COLUMNS, SOFT_LABEL_KEYS, RopeIndex, SoftLabelCollator
from sft_warmstart.config import SoftLabelSFTConfig
from sft_warmstart.soft_label_loss import soft_label_loss
from sft_warmstart.trainable import PartLearningRatesMixin


class SoftLabelSFTTrainer(FullWeightsResumeMixin, PartLearningRatesMixin, SFTTrainer):
    _tag_names = ["trl", "sft", "cogalign", "soft-label"]

    def __init__(self, model, args: SoftLabelSFTConfig, train_dataset, eval_dataset=None, processing_class=None,
                 **kwargs):
        if processing_class is None:
            raise ValueError("pass the model's processor as processing_class")
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        self.soft_label_config = args.soft_label_config()
        self.digit_ids = torch.tensor(digit_token_ids(tokenizer))
        if kwargs.get("data_collator") is None:
            base = DataCollatorForVisionLanguageModeling(
                processor=processing_class, max_length=args.max_length,
                completion_only_loss=True if args.completion_only_loss is None else args.completion_only_loss,
                dataset_text_field=args.dataset_text_field,
            )
            kwargs["data_collator"] = SoftLabelCollator(base, tokenizer, RopeIndex.for_model(model))
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, **kwargs)
        # compute_loss takes num_items_in_batch (the loss is ours, whatever the model's forward accepts): the Trainer
        # then counts the labelled tokens of every micro-batch of a step on every rank, and the loss is their mean.
        self.model_accepts_loss_kwargs = True

    def _set_signature_columns_if_needed(self):
        # Keep the item columns (trait, score_std) that the soft-label collator reads next to trl's VLM columns.
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *ITEM_COLUMNS]))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        digits = {k: inputs.pop(k) for k in SOFT_LABEL_KEYS}
        labels = inputs.pop("labels")
        inputs["use_cache"] = False
        outputs = model(**inputs)  # the plain forward: full logits (B, T, V), the loss is ours
        out = soft_label_loss(
            outputs.logits, labels, digits["score_digit_positions"], digits["score_digit_places"], self.digit_ids,
            self.soft_label_config, span=digits["score_span"], sigma=digits["score_sigma"],
            num_items_in_batch=num_items_in_batch,
        )
        loss = out.loss
        # Like Trainer.compute_loss: num_items_in_batch counts every rank's tokens, and DDP averages gradients.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        self._log_parts(mode, out, inputs)
        return (loss, outputs) if return_outputs else loss

    def _log_parts(self, mode: str, out, inputs) -> None:
        device = out.loss.device
        sums = torch.stack([
            out.text_loss_sum.float(), out.digit_loss_sum.float(), out.digit_ce_sum.float(),
            torch.tensor(float(out.num_text), device=device), torch.tensor(float(out.num_digits), device=device),
            out.num_correct.float(), out.digits_correct.float(),
        ]).to(device)
        text, digit, digit_ce, n_text, n_digit, correct, digit_correct = (
            self.accelerator.gather_for_metrics(sums[None]).sum(0).tolist())
        metrics = self._metrics[mode]
        metrics["text_loss"].append(text / max(n_text, 1))
        metrics["digit_loss"].append(digit / max(n_digit, 1))
        metrics["digit_ce"].append(digit_ce / max(n_digit, 1))
        metrics["mean_token_accuracy"].append(correct / max(n_text + n_digit, 1))
        metrics["digit_accuracy"].append(digit_correct / max(n_digit, 1))
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()[None]).sum().item()
            self._total_train_tokens += int(tokens)
        metrics["num_tokens"] = [self._total_train_tokens]
