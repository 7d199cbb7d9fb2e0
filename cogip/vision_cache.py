"""Reuse a frozen vision tower's output for images it has already encoded.

When the vision tower and merger are frozen (the tiny recipes, and a common choice for SFT and GRPO on real
checkpoints), the image tokens of an image never change: SFT sees each image once per epoch, GRPO encodes the same
image for each of its generations and again for the loss, and evaluation encodes it once per decoding pass.
:func:`install_vision_cache` wraps the tower's ``forward`` so that each image's merged tokens are computed once and
then looked up by a hash of its pixels and its grid. The tower runs as usual, and nothing is cached, whenever any
of its parameters requires a gradient or is partitioned by DeepSpeed ZeRO-3 (every rank must then run it to gather
the weights), so a tower that trains is never served stale tokens. The SFT and GRPO stages install it when their
config freezes both the tower and the merger and sets ``vision_cache_gb`` (0, off, by default; the tiny configs set
1: with 16 tokens per image evaluation runs 1.3x as fast in ``bench/vision_cache.py``, GRPO within noise, and SFT steps
take 17 % less time, BENCHMARKS.md); the evaluator likewise.

The cache holds at most ``max_bytes`` of tokens (the least recently used go first): the tiny model's tokens take 4 kB
an image (8 MB for the 2,000 SFT images, 51 MB for GRPO's 12,800); for a 7B checkpoint (3,584-wide tokens, a few
hundred per image) 2 GB holds about a thousand images.
"""

from __future__ import annotations

import hashlib
import types
from collections import OrderedDict

import torch

from cogip.batched_vision import ATTENTION, PRECOMPUTED, _cached_kwargs

DEFAULT_MAX_BYTES = 2 * 1024 ** 3


def _fingerprints(pixels: torch.Tensor, grid_thw: torch.Tensor, sizes: list[int]) -> list[tuple]:
    """One key per image: its grid and a hash of its exact pixel bytes (patch order included: two images whose
    patches are the same ones in another order are different images)."""
    raw = pixels.detach().contiguous().cpu()
    return [(tuple(g), hashlib.blake2b(chunk.view(torch.uint8).numpy(), digest_size=16).digest())
            for g, chunk in zip(grid_thw.tolist(), raw.split(sizes))]


def _cacheable(visual) -> bool:
    """Frozen and whole: no parameter requires a gradient or is a ZeRO-3 partition. A weight changed in place
    (``load_state_dict``, a resumed checkpoint) bumps its version counter, which empties the cache."""
    params = list(visual.parameters())
    if any(p.requires_grad or hasattr(p, "ds_id") for p in params):
        return False
    versions = tuple(p._version for p in params)
    if versions != visual._cogalign_vision_versions:
        visual._cogalign_vision_cache.clear()
        visual._cogalign_vision_cache_bytes[0] = 0
        visual._cogalign_vision_versions = versions
    return True


def install_vision_cache(visual, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Wrap ``visual`` (a Qwen2.5-VL vision tower) so that a frozen tower encodes each distinct image once."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    if getattr(visual, "_cogalign_vision_cache", None) is not None:
        return
    visual._cogalign_vision_cache = OrderedDict()
    visual._cogalign_vision_cache_bytes = [0, max_bytes]
    visual._cogalign_vision_kwargs = {}
    visual._cogalign_vision_versions = None
    plain = type(visual).forward

    def forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs):
        if not _cacheable(self):
            return plain(self, hidden_states, grid_thw=grid_thw, **kwargs)
        cache, used = self._cogalign_vision_cache, self._cogalign_vision_cache_bytes
        sizes = grid_thw.prod(-1).tolist()
        keys = _fingerprints(hidden_states, grid_thw, sizes)
        todo = [k for k in dict.fromkeys(keys) if k not in cache]
        if todo:  # encode each image not seen before once, in one call
            rows = [keys.index(k) for k in todo]
            chunks, sub_grid = hidden_states.split(sizes), grid_thw[rows]
            # what install_batched_vision's hook precomputed was for the whole batch: redo it for these images
            kwargs = {k: v for k, v in kwargs.items() if k not in PRECOMPUTED}
            if self.config._attn_implementation == ATTENTION:
                kwargs |= _cached_kwargs(self, self._cogalign_vision_kwargs, sub_grid)
            out = plain(self, torch.cat([chunks[r] for r in rows]), grid_thw=sub_grid, **kwargs)
            merge = self.spatial_merge_size ** 2
            for k, tokens in zip(todo, out.pooler_output.split([sizes[r] // merge for r in rows])):
                cache[k] = tokens.detach()
                used[0] += tokens.numel() * tokens.element_size()
        pooled = torch.cat([cache[k] for k in keys])
        for k in keys:
            cache.move_to_end(k)
        while used[0] > used[1] and len(cache) > 1:  # over the budget: drop the least recently used
            _, old = cache.popitem(last=False)
            used[0] -= old.numel() * old.element_size()
        return BaseModelOutputWithPooling(last_hidden_state=None, pooler_output=pooled)

    visual.forward = types.MethodType(forward, visual)


def install_vision_caches(model, max_gib: float) -> int:
    """:func:`install_vision_cache` on every Qwen2.5-VL vision tower inside ``model`` (a peft wrapper too), holding
    up to ``max_gib`` GiB each; returns how many were installed (none when ``max_gib`` is 0)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    if max_gib <= 0:
        return 0
    towers = [m for m in model.modules() if isinstance(m, Qwen2_5_VisionTransformerPretrainedModel)]
    for tower in towers:
        install_vision_cache(tower, int(max_gib * 1024 ** 3))
    return len(towers)
