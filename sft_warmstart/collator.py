"""Batches for the soft-label loss: trl's vision-language collator, plus where each answer's score digits are.

trl's ``DataCollatorForVisionLanguageModeling`` tokenizes prompt + completion and processes the images. This wrapper
adds, per row, the label positions and place values of the score's digit tokens (found in the decoded completion
tokens), the trait's span and the item's ``score_std``. The trainer takes these keys out before the forward pass.

It also computes the batch's multimodal rotary positions (``position_ids``, with :class:`RopeIndex`), which the model
would otherwise work out sample by sample in the training process (14 % of its time in the tiny SFT steps on CPU;
computed here, in the data-loader worker, the step is 1.08x as fast: BENCHMARKS.md, "SFT positions in the collator").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

from cogip.traits import get_trait, has_trait
from sft_warmstart.soft_label_loss import score_digit_index

SOFT_LABEL_KEYS = ("score_digit_positions", "score_digit_places", "score_span", "score_sigma")
ITEM_COLUMNS = ("trait", "score", "score_std", "id")  # dataset columns the collator reads, not the processor


class RopeIndex:
    """transformers' own Qwen2.5-VL ``get_rope_index`` without the model: it reads only the config, so a data-loader
    worker can run it (and pickle it) without the weights. Rows laid out alike (the same token types and image grids:
    the same prompt, an answer of the same length) get the same positions, so each layout is worked out once."""

    get_rope_index = Qwen2_5_VLModel.get_rope_index
    get_vision_position_ids = Qwen2_5_VLModel.get_vision_position_ids  # which get_rope_index calls

    def __init__(self, config, max_layouts: int = 4096):
        self.config = config
        self.max_layouts = max_layouts
        self._layouts: dict[tuple, torch.Tensor] = {}

    @classmethod
    def for_model(cls, model) -> RopeIndex | None:
        """One for ``model`` (peft-wrapped too) when it is a Qwen2.5-VL; None for any other model."""
        config = getattr(model, "config", None)
        return cls(config) if getattr(config, "model_type", None) == "qwen2_5_vl" else None

    def __call__(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """The (3, B, T) positions of ``batch``, or None when it has no image or holds video (left to the model)."""
        ids, types, grids = batch["input_ids"], batch.get("mm_token_type_ids"), batch.get("image_grid_thw")
        if grids is None or types is None or batch.get("video_grid_thw") is not None:
            return None
        mask = batch.get("attention_mask")
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        is_image = types == 1
        starts = is_image & ~torch.nn.functional.pad(is_image, (1, 0))[:, :-1]  # first token of each image
        row_grids = grids.split(starts.sum(1).tolist())
        out = torch.zeros(3, *ids.shape, dtype=ids.dtype)
        for row in range(len(ids)):
            row_types, row_grid = types[row][mask[row]], row_grids[row]
            key = (row_types.numpy().tobytes(), row_grid.numpy().tobytes())
            if key not in self._layouts:
                if len(self._layouts) >= self.max_layouts:
                    self._layouts.clear()
                self._layouts[key] = self.get_rope_index(
                    ids[row][mask[row]][None], mm_token_type_ids=row_types[None], image_grid_thw=row_grid)[0][:, 0]
            out[:, row, mask[row]] = self._layouts[key]
        return out


@dataclass
class SoftLabelCollator:
    """Wraps ``base`` (a trl collator) and adds :data:`SOFT_LABEL_KEYS` to every batch, and ``position_ids`` when
    given ``positions`` (a :class:`RopeIndex`)."""

    base: Any
    tokenizer: Any
    positions: RopeIndex | None = None
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
        position_ids = self.positions(batch) if self.positions is not None and "position_ids" not in batch else None
        if position_ids is not None:
            batch["position_ids"] = position_ids
        return batch
