import json

import numpy as np
import torch
from PIL import Image

from cogip.models import TinySizes, build_tiny_qwen_image_components, load_policy


def test_tiny_checkpoint_loads_like_a_real_one(tiny_model_dir):
    files = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= files
    model, processor = load_policy(str(tiny_model_dir), dtype="float32")
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    tok = processor.tokenizer
    # digits are single tokens, as in real Qwen; the answer grammar's characters round-trip
    assert [tok.decode([i]) for i in tok("8.130", add_special_tokens=False).input_ids] == list("8.130")
    assert tok.decode(tok("negative -2.000").input_ids) == "negative -2.000"
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 56, 3), dtype=np.uint8))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate Aesthetics."}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text, text], images=[img, img], return_tensors="pt", padding=True)
    side = TinySizes().image_size // TinySizes().patch_size  # 56x56 -> 8x8 patches of 7
    assert batch["image_grid_thw"].tolist() == [[1, side, side], [1, side, side]]
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)
    loss = model(**batch, labels=batch["input_ids"]).loss
    assert torch.isfinite(loss)


def test_tiny_qwen_image_pipeline_runs_on_tiny_encoder(tiny_model_dir):
    from diffusers import QwenImagePipeline

    model, processor = load_policy(str(tiny_model_dir), dtype="float32")
    parts = build_tiny_qwen_image_components(text_hidden_size=model.config.text_config.hidden_size)
    pipe = QwenImagePipeline(text_encoder=model, tokenizer=processor.tokenizer, **parts)
    pipe.set_progress_bar_config(disable=True)
    kw = {"prompt": "a warm round shape", "height": 32, "width": 32, "num_inference_steps": 2, "output_type": "np"}
    a = pipe(**kw, generator=torch.Generator().manual_seed(0)).images
    b = pipe(**kw, generator=torch.Generator().manual_seed(0)).images
    assert a.shape == (1, 32, 32, 3) and np.isfinite(a).all()
    assert np.array_equal(a, b)


def test_vision_pretraining_teaches_the_vision_tower_to_see_and_leaves_the_language_model(tmp_path):
    from safetensors.torch import load_file

    from cogip.models import build_tiny_qwen2_5_vl
    from cogip.tiny_pretrain import PRETRAIN_RECORD, pretrain_vision

    path = build_tiny_qwen2_5_vl(tmp_path / "tiny")
    before = load_file(path / "model.safetensors")
    threads = torch.get_num_threads()
    record = pretrain_vision(path, steps=300, n_images=1500, n_heldout=200, progress=False)
    after = load_file(path / "model.safetensors")
    assert torch.get_num_threads() == threads  # it takes the idle cores while it runs, then gives them back
    assert json.loads((path / PRETRAIN_RECORD).read_text()) == record and record["dense_weight"] > 0
    assert record["position_targets"] and record["threads"] >= 1  # what the figures after it depend on
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("visual" in k for k in changed)  # only the vision tower and merger were trained
    assert any("merger" in k for k in changed) and any("blocks" in k for k in changed)
    assert record["last_loss"] < record["first_loss"]
    # The most salient attributes are already readable from the merged image tokens on held-out images (after 300
    # steps; colour comes later, once the per-token coverage targets have shaped the patch embedding).
    srcc = record["heldout_srcc"]
    assert set(srcc) == {"offset", "contrast", "clutter", "warmth", "roundness", "accent", "size", "distortion",
                         "eyes"}
    assert srcc["contrast"] > 0.4 and srcc["accent"] > 0.4 and srcc["size"] > 0.3, srcc


def test_vision_pretraining_threads(monkeypatch):
    import os

    from cogip.tiny_pretrain import _torch_threads

    before, default = torch.get_num_threads(), min(len(os.sched_getaffinity(0)), 4)
    # a user's OMP_NUM_THREADS is followed (5: never the default of at most 4), an explicit count wins over it
    for omp, expected in [("5", 5), ("5,2", 5), ("0", default), ("auto", default), ("", default)]:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
        with _torch_threads(None):
            assert torch.get_num_threads() == expected, omp
        with _torch_threads(2):
            assert torch.get_num_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    with _torch_threads(None):
        assert torch.get_num_threads() == default
    assert torch.get_num_threads() == before


def test_vision_pretraining_batches_are_the_processors_patches_and_turn_with_their_coverage(tiny_model_dir):
    from cogip.models import load_processor
    from cogip.tiny_pretrain import _coverage, _dihedral, _draw, _patches, _position_maps

    processor = load_processor(tiny_model_dir)
    images, factors, masks = _draw(6, np.random.default_rng(0), 56)
    assert images.shape == (6, 3, 56, 56) and images.dtype == torch.uint8 and factors.shape == (6, 9)
    enc = processor.image_processor(images=[Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images],
                                    return_tensors="pt")
    # the same patches the processor gives the model in SFT, GRPO and evaluation
    torch.testing.assert_close(_patches(processor.image_processor, images, 2).flatten(0, 1), enc["pixel_values"])

    cover = _coverage(masks, 28)  # 2x2 merged tokens of 28 pixels, raster order
    assert cover.shape == (6, 4, 4) and torch.all(cover.sum(-1) <= 1 + 1e-6)
    assert torch.equal(cover[:, 1], _coverage(masks[:, :28, 28:], 28)[:, 0])  # token 1 is the top-right cell
    which = torch.arange(6)  # 0 turns, 1-3 quarter turns, 4-5 mirrored
    turned_images, turned = _dihedral(images, which), _coverage(_dihedral(masks, which), 28)
    assert torch.equal(turned_images[0], images[0]) and torch.equal(turned_images[4], images[4].flip(-1))
    assert torch.equal(turned_images[2], images[2].flip(-1).flip(-2))  # a half turn
    # coverage moves between tokens with the image and is otherwise unchanged
    assert torch.equal(turned[4], cover[4][[1, 0, 3, 2]]) and torch.equal(turned[2], cover[2][[3, 2, 1, 0]])
    assert torch.equal(turned[1], cover[1][[1, 3, 0, 2]])  # a quarter turn anticlockwise
    assert torch.allclose(turned.sort(1).values, cover.sort(1).values)
    # where each token lies, in the same raster order: x, y in [-1, 1] and the distance from the centre
    r = 0.5 ** 0.5
    assert torch.allclose(_position_maps(2), torch.tensor([[-0.5, -0.5, r], [0.5, -0.5, r], [-0.5, 0.5, r],
                                                            [0.5, 0.5, r]]))
    assert _position_maps(4)[[5, 6, 9, 10], 2].max() < _position_maps(4)[[0, 3, 12, 15], 2].min()  # centre tokens

def test_batched_vision_is_the_same_tower_with_the_same_gradients(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    from cogip.batched_vision import batched_vision

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)  # the stock tower
    visual = model.model.visual
    visual.train()
    patch_dim = visual.patch_embed.proj.weight[0].numel()
    # Three equal images (the batched path), then images of two sizes (the per-segment path).
    for grid in ([[1, 4, 4]] * 3, [[1, 4, 4], [1, 4, 8], [1, 8, 4]]):
        grid = torch.tensor(grid)
        pixels = torch.randn(int(grid.prod(-1).sum()), patch_dim, generator=torch.Generator().manual_seed(0))
        weights = list(visual.parameters())
        ref = visual(pixels, grid_thw=grid).pooler_output
        ref_grads = torch.autograd.grad(ref.square().sum(), weights)
        with batched_vision(visual) as vision:
            out = vision(pixels, grid).pooler_output
            assert visual.config._attn_implementation != "sdpa"
        grads = torch.autograd.grad(out.square().sum(), weights)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
    # Nothing of it stays on the tower.
    assert visual.config._attn_implementation == model.config.vision_config._attn_implementation == "sdpa"
    assert "forward" not in vars(visual.patch_embed)


def test_load_policy_installs_the_batched_tower_and_changes_no_output(tiny_model_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    from cogip.batched_vision import ATTENTION

    stock = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model, processor = load_policy(str(tiny_model_dir), dtype="float32")
    assert model.model.visual.config._attn_implementation == ATTENTION
    assert model.config.text_config._attn_implementation == "sdpa"  # the language model is left as it was
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)) for _ in range(3)]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate Aesthetics."}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text] * 3, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, stock(**batch).logits, atol=1e-5, rtol=1e-5)
    # Saved, it is an ordinary checkpoint: nothing of the installation is written.
    model.save_pretrained(tmp_path / "saved")
    assert "cogalign" not in (tmp_path / "saved" / "config.json").read_text()
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "saved")
    assert reloaded.model.visual.config._attn_implementation == "sdpa"


def test_image_max_pixels_bounds_the_image_tokens(tiny_model_dir, tmp_path):
    from cogip.models import limit_image_pixels, load_processor

    processor = load_processor(tiny_model_dir)
    limit_image_pixels(processor, 10 ** 6)  # a bound, not a size: the tiny processor's 56 x 56 stays
    assert processor.image_processor.size["longest_edge"] == 56 * 56
    processor.image_processor.size["longest_edge"] = 10 ** 6  # a real checkpoint's range, not the tiny model's 56x56
    image = Image.new("RGB", (448, 448), (90, 30, 200))

    def patches():
        return int(processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"].prod())

    side = processor.image_processor.patch_size  # pixels per patch side
    assert patches() == (448 // side) ** 2
    limit_image_pixels(processor, 224 * 224)
    assert patches() == (224 // side) ** 2
    processor.save_pretrained(tmp_path)
    assert load_processor(tmp_path).image_processor.size["longest_edge"] == 224 * 224


def test_vision_cache_encodes_each_image_once_and_only_for_a_frozen_tower(tiny_model_dir):
    import copy

    from cogip.batched_vision import PRECOMPUTED, vision_kwargs
    from cogip.vision_cache import install_vision_caches

    stock, processor = load_policy(str(tiny_model_dir), dtype="float32")
    model, _ = load_policy(str(tiny_model_dir), dtype="float32")
    visual = model.model.visual
    assert install_vision_caches(model, 1.0) == 1
    calls = []
    visual.blocks[0].register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)) for _ in range(3)]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate Aesthetics."}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    def logits(imgs):
        batch = processor(text=[text] * len(imgs), images=imgs, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model(**batch).logits
            torch.testing.assert_close(out, stock(**batch).logits, atol=1e-5, rtol=1e-5)
        return out

    n = (TinySizes().image_size // TinySizes().patch_size) ** 2  # patches per image
    logits(images[:2])  # trainable tower: runs every time, keeps nothing
    assert calls == [2 * n] and not visual._cogalign_vision_cache
    model.requires_grad_(False)
    logits([images[0], images[1], images[0]])  # frozen: image 0 twice in one batch, encoded once
    logits([images[1], images[2], images[0]])  # only image 2 is new
    assert calls == [2 * n, 2 * n, n] and len(visual._cogalign_vision_cache) == 3
    logits(images)
    assert calls == [2 * n, 2 * n, n]
    # The same patches in another order (an object moved by a whole patch) is another image, with its own tokens.
    pixels = np.asarray(images[0]).copy()
    moved = Image.fromarray(np.concatenate([pixels[:, 28:], pixels[:, :28]], axis=1))
    logits([moved])
    assert calls == [2 * n, 2 * n, n, n]
    # A weight changed in place (a checkpoint loaded into the model) empties the cache; the tower runs again.
    with torch.no_grad():
        visual.blocks[0].mlp.down_proj.weight.mul_(1.5)
        stock.model.visual.blocks[0].mlp.down_proj.weight.mul_(1.5)
    logits(images)
    assert calls == [2 * n, 2 * n, n, n, 3 * n]
    # The cache drops exactly what the batched tower precomputes when it encodes a subset of a batch.
    assert set(vision_kwargs(visual, torch.tensor([[1, 4, 4]]))) == set(PRECOMPUTED)
    twin = copy.deepcopy(model)  # trl copies models (reference policy): the copy has its own tower and cache
    assert twin.model.visual.forward.__self__ is twin.model.visual
    assert twin.model.visual._cogalign_vision_cache is not visual._cogalign_vision_cache


def test_prepare_model_caches_the_vision_tower_only_when_it_and_the_merger_are_frozen(tiny_model_dir):
    from trl import ModelConfig

    from sft_warmstart.trainable import TrainablePartsArguments, prepare_model

    for freeze_merger, vision_cache_gb, cached in ((True, 2.0, True), (False, 2.0, False), (True, 0.0, False)):
        model, _ = load_policy(str(tiny_model_dir), dtype="float32")
        args = TrainablePartsArguments(freeze_vision_tower=True, freeze_merger=freeze_merger,
                                       vision_cache_gb=vision_cache_gb)
        prepare_model(model, ModelConfig(use_peft=False), args)
        assert (getattr(model.model.visual, "_cogalign_vision_cache", None) is not None) == cached


def test_prepare_model_warns_when_half_precision_weights_train_without_master_copies(tiny_model_dir, caplog):
    from trl import ModelConfig

    from sft_warmstart.trainable import TrainablePartsArguments, prepare_model

    def warned(dtype, use_peft, freeze_merger):
        caplog.clear()
        model, _ = load_policy(str(tiny_model_dir), dtype=dtype)
        with caplog.at_level("WARNING", logger="sft_warmstart.trainable"):
            prepare_model(model, ModelConfig(use_peft=use_peft, lora_r=4, lora_alpha=8),
                          TrainablePartsArguments(freeze_vision_tower=True, freeze_merger=freeze_merger))
        return caplog.text

    assert "llm" in warned("bfloat16", False, True) and "no fp32 master copy" in caplog.text
    assert "merger" in warned("bfloat16", True, False) and "llm" not in caplog.text  # LoRA weights are fp32
    assert warned("bfloat16", True, True) == ""
    assert warned("float32", False, False) == ""
