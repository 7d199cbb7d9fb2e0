"""Batches for the soft-label loss: trl's vision-language collator, plus where each answer's score digits are.

trl's ``DataCollatorForVisionLanguageModeling`` tokenizes prompt + completion and processes the images. This wrapper
adds, per row, the label positions and place values of the score's digit tokens (found in the decoded completion
tokens), the trait's span and the item's ``score_std``. The trainer takes these keys out before the forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from cogip.traits import get_trait, has_trait
from sft_warmstart.soft_label_loss import score_digit_index

SOFT_LABEL_KEYS = ("score_digit_positions", "score_digit_places", "score_span", "score_sigma")
ITEM_COLUMNS = ("trait", "score", "score_std", "id")  # dataset columns the collator reads, not the processor


@dataclass
class SoftLabelCollator:
    """Wraps ``base`` (a trl collator) and adds :data:`SOFT_LABEL_KEYS` to every batch."""

    base: Any
    tokenizer: Any
    _pieces: dict[int, str] = field(default_factory=dict, repr=False)

    def _piece(self, token_id: int) -> str:
        # Decoding one token at a time is what maps characters back to token positions; cache it per id.
        if token_id not in self._pieces:
            self._pieces[token_id] = self.tokenizer.decode([token_id])
        return self._pieces[token_id]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        spans, sigmas = [], []
        for ex in examples:
            trait = ex.get("trait")
            spans.append(get_trait(trait).span if isinstance(trait, str) and has_trait(trait) else 1.0)
            std = ex.get("score_std")
            sigmas.append(float(std) if isinstance(std, (int, float)) and math.isfinite(std) else math.nan)
        batch = self.base([{k: v for k, v in ex.items() if k not in ITEM_COLUMNS} for ex in examples])
        positions, places = score_digit_index(batch["labels"], self._piece)
        batch["score_digit_positions"] = positions
        batch["score_digit_places"] = places
        batch["score_span"] = torch.tensor(spans, dtype=torch.float32)
        batch["score_sigma"] = torch.tensor(sigmas, dtype=torch.float32)
        return batch
