"""Model and processor loading, for real checkpoints and for the tiny offline models that tests and the demo use.

The tiny factory writes a complete Qwen2.5-VL checkpoint (tokenizer, the stock ``Qwen2_5_VLProcessor``, config and
random safetensors weights) to a folder; it is then loaded by exactly the same :func:`load_policy` path as
``Qwen/Qwen2.5-VL-7B-Instruct``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from cogip.files import InputNotFoundError

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)


@dataclass
class TinySizes:
    """Sizes of the tiny Qwen2.5-VL. The defaults train on CPU in minutes and learn the synthetic traits."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    # three ViT blocks: the pretrained tokens hand the language model more of every trait than two (linear probe
    # 0.812 against 0.790) for ~20 s more pretraining; a fourth adds nothing (BENCHMARKS.md)
    vision_depth: int = 3
    vision_hidden_size: int = 64
    vision_heads: int = 4
    image_size: int = 56  # the processor keeps images of this many pixels square (min = max pixels)
    # ViT patch side in pixels; 2x2 patches merge into one LLM token. 7-pixel patches (16 image tokens instead of 4)
    # make the star and the stretch legible (held-out roundness 0.43 -> 0.62) and lift SFT's validation mean SRCC by
    # 0.02-0.05 (BENCHMARKS.md, "Sixteen image tokens")
    patch_size: int = 7


def _chat_template() -> str:
    return resources.files("trl").joinpath("chat_templates/qwen2_5_vl.jinja").read_text()


def digit_token_ids(tokenizer) -> list[int]:
    """Ids of the tokens "0".."9". Qwen and the tiny tokenizer write every digit as its own token; the soft-label
    loss and expected-score decoding rely on it, so anything else is an error."""
    ids = []
    for d in range(10):
        enc = tokenizer.encode(str(d), add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(f"digit {d} is not a single token in this tokenizer ({enc})")
        ids.append(enc[0])
    return ids


# Qwen2's pre-tokenizer split: words with their leading space or punctuation, and every digit on its own.
QWEN_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                      r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _tiny_tokenizer_corpus() -> list[str]:
    """The words the tiny models meet: every trait's prompts and labels, the chat template's system prompt."""
    from cogip.traits import all_traits

    texts = ["You are a helpful assistant.", "<answer> </answer>", "system", "user", "assistant"]
    for t in all_traits():
        texts += [t.prompt_text("full"), t.prompt_text("short"), t.name, *t.labels, " ".join(t.labels)]
    return texts


def build_tiny_tokenizer():
    """A Qwen2-style byte-level BPE tokenizer for the tiny models: the 256 byte symbols plus merges learned on the
    project's own prompts and label words, so that, as with Qwen's real tokenizer, a word is one or a few tokens
    and every digit is its own token (Qwen's split pattern keeps digits apart; the soft-label loss and
    expected-score decoding rely on it); then the Qwen special tokens. Built the same way every time (no
    download). A whole prompt is ~3x shorter than spelled byte by byte (39 tokens instead of ~120, 4 of them the
    image), which leaves the image a real share of what the answer attends to."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + 512, min_frequency=1, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(_tiny_tokenizer_corpus(), trainer=trainer)
    fast = Qwen2TokenizerFast(tokenizer_object=tok, errors="replace", clean_up_tokenization_spaces=False)
    fast.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    fast.eos_token, fast.pad_token = "<|im_end|>", "<|endoftext|>"
    fast.chat_template = _chat_template()
    return fast


def build_tiny_processor(image_size: int = 56, patch_size: int = 14):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels, patch_size=patch_size)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=build_tiny_tokenizer(), video_processor=Qwen2VLVideoProcessor(),
        chat_template=_chat_template(),
    )


def tiny_qwen2_5_vl_config(tokenizer, sizes: TinySizes):
    from transformers import Qwen2_5_VLConfig

    head_dim = sizes.hidden_size // sizes.num_attention_heads
    half = head_dim // 2  # mrope splits the rotary half-dimension over (time, height, width)
    section = [half - 2 * (half // 4), half // 4, half // 4]
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": sizes.hidden_size,
            "intermediate_size": sizes.intermediate_size, "num_hidden_layers": sizes.num_hidden_layers,
            "num_attention_heads": sizes.num_attention_heads, "num_key_value_heads": sizes.num_key_value_heads,
            "max_position_embeddings": 4096, "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": sizes.vision_depth, "hidden_size": sizes.vision_hidden_size,
            "intermediate_size": 2 * sizes.vision_hidden_size, "num_heads": sizes.vision_heads,
            "out_hidden_size": sizes.hidden_size, "patch_size": sizes.patch_size, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "window_size": 56, "fullatt_block_indexes": [sizes.vision_depth - 1],
        },
        tie_word_embeddings=True,
        **ids,
    )


@contextlib.contextmanager
def without_zero3_init():
    """Create or load weights as ordinary tensors even inside a configured ZeRO-3 run, where transformers would
    otherwise partition them under ``deepspeed.zero.Init`` (a collective every rank must join). For work one process
    does alone: building the tiny checkpoint, merging an adapter on the main process."""
    from transformers.integrations import deepspeed as hf_ds

    saved = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = saved


TINY_BUILT = "cogalign_tiny.json"  # written last by build_tiny_qwen2_5_vl: its presence means the folder is whole


def build_tiny_qwen2_5_vl(out_dir: str | Path, sizes: TinySizes | None = None, seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-VL checkpoint (model, tokenizer, processor) to ``out_dir`` and return it."""
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    sizes = sizes or TinySizes()
    out = Path(out_dir)
    processor = build_tiny_processor(sizes.image_size, sizes.patch_size)
    config = tiny_qwen2_5_vl_config(processor.tokenizer, sizes)
    torch.manual_seed(seed)
    with without_zero3_init():
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=processor.tokenizer.eos_token_id, pad_token_id=processor.tokenizer.pad_token_id,
        bos_token_id=config.text_config.bos_token_id)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / TINY_BUILT).write_text(json.dumps({"seed": seed, **sizes.__dict__}, indent=2))
    return out


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def init_deepspeed_comm(training_args) -> None:
    """Under a DeepSpeed run, start DeepSpeed's communication layer before the model is loaded: ZeRO-3 partitions
    weights while ``from_pretrained`` reads them and must see the real world size (on CPU runs the process group
    exists already, but DeepSpeed's own layer would otherwise report a world of one)."""
    if getattr(training_args, "deepspeed", None):
        import deepspeed

        training_args.device  # noqa: B018 - sets up the process group through the Trainer's device logic
        deepspeed.init_distributed()  # joins that group; zero.Init reads its world size from it


def load_processor(model_name_or_path: str | Path, **kwargs):
    from transformers import AutoProcessor

    path = Path(model_name_or_path)
    if is_adapter_dir(path) and not (path / "tokenizer_config.json").exists():
        from peft import PeftConfig

        model_name_or_path = PeftConfig.from_pretrained(path).base_model_name_or_path
    processor = AutoProcessor.from_pretrained(model_name_or_path, **kwargs)
    processor.tokenizer.padding_side = "left"  # generation pads on the left
    return processor


def check_model_exists(ref: str | None, flag: str, revision: str | None = None, required: bool = False,
                       weights: bool = True) -> None:
    """Fail fast, before any work, on a model folder that is not there (:class:`InputNotFoundError`), one without
    model or adapter weights (unless ``weights`` is False: a diffusers pipeline keeps them in subfolders), and on no
    model at all when one is ``required``. A reference that is no folder here (``~`` expanded) must look like a hub
    id: ``name``, or ``org/name`` where ``org`` is no folder here either (``runs/x`` with a ``runs/`` folder is a
    path) unless the hub cache holds it; with ``HF_HUB_OFFLINE`` set the hub cache must hold it at ``revision``."""
    from cogip.checkpoints import WEIGHT_FILES, ZERO3_HINT, has_model_weights

    if not ref and required:
        raise InputNotFoundError(f"{flag} is required (a hub id, a folder, or 'tiny')")
    if ref and weights and Path(ref).expanduser().is_dir() and not has_model_weights(Path(ref).expanduser()):
        raise InputNotFoundError(f"{flag} {ref}: the folder holds no model or adapter weights (none of "
                                 f"{', '.join(WEIGHT_FILES)}); {ZERO3_HINT}")
    if not ref or Path(ref).expanduser().exists():
        return
    from huggingface_hub import constants, snapshot_download

    def cached() -> bool:
        try:
            snapshot_download(ref, revision=revision, local_files_only=True)
            return True
        except Exception:  # not in the cache, or not a valid hub id at all
            return False

    org_folder = ref.count("/") == 1 and Path(ref).parent.is_dir()
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or (org_folder and not cached()):
        also = (f" (a {Path(ref).parent}/ folder is here, so it was taken for a path; a hub id of that name is not "
                "in the local hub cache)") if org_folder else ""
        raise InputNotFoundError(f"{flag} {ref}: no such model folder{also}")
    if constants.HF_HUB_OFFLINE and not cached():
        raise InputNotFoundError(f"{flag} {ref}: no such model folder here, and not in the local hub cache "
                                 f"(HF_HUB_OFFLINE is set)")


def load_policy(model_name_or_path: str | Path, *, dtype: str | torch.dtype = "auto",
                attn_implementation: str | None = None, device_map: str | dict | None = None,
                trust_remote_code: bool = False, merge_adapter: bool = False, is_trainable: bool = False,
                revision: str | None = None):
    """Load a policy and its processor from a hub id or a folder: full weights, or a peft LoRA adapter folder (its
    base is loaded, then the adapter; ``merge_adapter=True`` folds it into the weights). ``revision``: the hub
    revision of a model given by id (a branch, tag or commit).

    Returns ``(model, processor)``.
    """
    from transformers import AutoModelForImageTextToText

    from cogip.batched_vision import install_on_model

    if isinstance(dtype, str) and dtype not in ("auto", None):
        dtype = getattr(torch, dtype)
    kw = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    if device_map is not None:
        kw["device_map"] = device_map
    if str(model_name_or_path).startswith("~"):  # a folder named in a config file, where no shell expands ~
        model_name_or_path = str(Path(model_name_or_path).expanduser())
    path, weights = Path(model_name_or_path), model_name_or_path
    adapter = is_adapter_dir(path)
    if adapter:  # its base, as the adapter was trained on it (the adapter folder itself has no revision)
        from peft import PeftConfig, PeftModel

        config = PeftConfig.from_pretrained(path)
        weights, revision = config.base_model_name_or_path, config.revision
    revision_kw = {"revision": revision} if revision else {}
    model = AutoModelForImageTextToText.from_pretrained(weights, **kw, **revision_kw)
    if adapter:
        model = PeftModel.from_pretrained(model, path, is_trainable=is_trainable and not merge_adapter)
        if merge_adapter:
            model = model.merge_and_unload()
    install_on_model(model)  # the vision tower attends all equal-sized images at once (same weights and outputs)
    return model, load_processor(model_name_or_path, trust_remote_code=trust_remote_code, **revision_kw)


def limit_image_pixels(processor, max_pixels: int | None) -> None:
    """Have ``processor`` resize images to at most ``max_pixels`` (kept when it is saved); a bound it already has
    that is lower stays, and None leaves it as is."""
    if max_pixels:
        size = processor.image_processor.size
        size["longest_edge"] = min(size["longest_edge"], max_pixels)
        size["shortest_edge"] = min(size["shortest_edge"], size["longest_edge"])


# ---------------------------------------------------------------------------------------------------------------
# Tiny QwenImage components (diffusers), sized to sit on the tiny text encoder.


def build_tiny_qwen_image_components(text_hidden_size: int = 64, seed: int = 0) -> dict:
    """Transformer, VAE and scheduler for a ``QwenImagePipeline`` whose joint attention matches a text encoder of
    ``text_hidden_size``. 32x32 images, a couple of steps, on CPU."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=3,
        joint_attention_dim=text_hidden_size, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[False, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    )
    return {"transformer": transformer.eval(), "vae": vae.eval(), "scheduler": FlowMatchEulerDiscreteScheduler()}
