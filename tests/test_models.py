import json

import numpy as np
import torch
from PIL import Image

from cogip.models import build_tiny_qwen_image_components, load_policy


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
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]  # 56x56 -> 4x4 patches of 14
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
    record = pretrain_vision(path, steps=300, n_images=1500, n_heldout=200, progress=False)
    after = load_file(path / "model.safetensors")
    assert json.loads((path / PRETRAIN_RECORD).read_text()) == record and record["dense_weight"] > 0
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
