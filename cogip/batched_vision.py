"""A faster Qwen2.5-VL vision tower forward for batches of images that all have the same size (on CPU above all).

Transformers' vision tower takes every image's patches packed into one sequence. Without flash-attention it splits
the packed sequence image by image and calls attention once per image and per block, and it recomputes the
rotary positions and window order of every image in Python at each call. For the tiny model's 64 images of 16
patches a step, that bookkeeping and the Conv3d patch embedding (its backward is slow on CPU) took about half of a
vision pretraining step. :func:`batched_vision` runs the same tower, with the same weights and the same result
(to float rounding; tested), but

- passes the position ids, sequence boundaries and window order precomputed once per batch shape (transformers'
  ``vision_utils`` accepts them as keyword arguments);
- attends all images in one batched ``scaled_dot_product_attention`` call: an attention function registered with
  transformers under :data:`ATTENTION`, a "flash"-style name so that the tower hands it the packed sequence with
  its boundaries; it handles any boundaries, batching the segments when they are all the same length;
- embeds patches with a matrix product on the Conv3d's own weight (kernel = stride, so the two are the same map).

:func:`install_batched_vision` puts the first two on a loaded model for good (:func:`cogip.models.load_policy` does
so for every model whose vision tower runs on sdpa); the patch embedding keeps its Conv3d there, since ZeRO-3
partitions that weight.
"""

from __future__ import annotations

import contextlib

import torch

# Transformers passes packed sequences with their boundaries (cu_seqlens) only to implementations named "flash...".
ATTENTION = "flash_cogalign_packed_sdpa"


def packed_sdpa(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, cu_seq_lens_q=None,
                **kwargs):
    """Attention within each segment of a packed sequence. ``query`` etc.: (1, heads, N, head_dim); returns
    (1, N, heads, head_dim) as flash-attention does."""
    _, heads, n, dim = query.shape
    bounds = cu_seq_lens_q if cu_seq_lens_q is not None else torch.tensor([0, n])
    lengths = (bounds[1:] - bounds[:-1]).tolist()
    dropout = dropout if module.training else 0.0
    if len(set(lengths)) == 1:  # equal segments: one batched call, (segments, heads, length, head_dim)
        seg, length = len(lengths), lengths[0]
        q, k, v = (t[0].view(heads, seg, length, dim).transpose(0, 1) for t in (query, key, value))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
        return out.permute(0, 2, 1, 3).reshape(1, n, heads, dim), None
    outs = [torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
            for q, k, v in zip(*(t.split(lengths, dim=2) for t in (query, key, value)))]
    return torch.cat(outs, dim=2).transpose(1, 2), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, packed_sdpa)


# What vision_kwargs precomputes: a caller that runs the tower on other images must drop these and compute them anew.
PRECOMPUTED = ("position_ids", "cu_seqlens", "window_index", "cu_window_seqlens")


def vision_kwargs(visual, grid_thw: torch.Tensor) -> dict:
    """What the tower would otherwise recompute in Python at every call, for images of ``grid_thw``."""
    from transformers import vision_utils as vu

    window_index, cu_window_seqlens = vu.get_vision_window_index(
        grid_thw, visual.spatial_merge_size, visual.window_size, visual.patch_size)
    return {"position_ids": vu.get_vision_position_ids(grid_thw, visual.spatial_merge_size),
            "cu_seqlens": vu.get_vision_cu_seqlens(grid_thw),
            "window_index": window_index, "cu_window_seqlens": cu_window_seqlens}


def _cached_kwargs(visual, cache: dict, grid_thw: torch.Tensor, limit: int = 64) -> dict:
    key = (str(grid_thw.device), tuple(grid_thw.flatten().tolist()))
    if key not in cache:
        if len(cache) >= limit:  # images of many sizes (real data): keep the newest shapes only
            cache.pop(next(iter(cache)))
        with torch.inference_mode(False):  # made while evaluating, they are used again in training steps' backward
            cache[key] = vision_kwargs(visual, grid_thw)
    return cache[key]


def install_batched_vision(visual) -> bool:
    """Make ``visual`` (a Qwen2.5-VL vision tower on sdpa attention) attend with :func:`packed_sdpa` and reuse its
    precomputed positions and windows, for the rest of its life (a forward pre-hook, so copies of the model keep
    it). Returns whether the tower runs :func:`packed_sdpa` now; a tower on another attention implementation is
    left alone (flash-attention already works on the packed sequence)."""
    if visual.config._attn_implementation != "sdpa":
        return visual.config._attn_implementation == ATTENTION
    _register()
    visual.config._attn_implementation = ATTENTION
    cache: dict = {}

    def add_kwargs(module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        grid_thw = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
        return args, {**_cached_kwargs(module, cache, grid_thw), **kwargs}

    visual.register_forward_pre_hook(add_kwargs, with_kwargs=True)
    return True


def install_on_model(model) -> int:
    """:func:`install_batched_vision` on every Qwen2.5-VL vision tower inside ``model`` (a peft wrapper too);
    returns how many were installed."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    return sum(install_batched_vision(m) for m in model.modules()
               if isinstance(m, Qwen2_5_VisionTransformerPretrainedModel))


@contextlib.contextmanager
def batched_vision(visual):
    """Within the block, ``forward(pixels, grid_thw)`` runs ``visual`` (a Qwen2.5-VL vision tower) the fast way;
    the tower is left as it was afterwards (nothing of this is saved with the model)."""
    _register()
    config, embed = visual.config, visual.patch_embed
    saved_attention = config._attn_implementation
    weight = embed.proj.weight  # (hidden, channels, temporal, patch, patch)
    cache: dict[tuple, dict] = {}

    def forward(pixels: torch.Tensor, grid_thw: torch.Tensor):
        return visual(pixels, grid_thw=grid_thw, **_cached_kwargs(visual, cache, grid_thw))

    embed.forward = lambda x: x.to(weight.dtype) @ weight.view(weight.shape[0], -1).t()
    config._attn_implementation = ATTENTION
    try:
        yield forward
    finally:
        config._attn_implementation = saved_attention
        del embed.forward  # back to the class's Conv3d forward
