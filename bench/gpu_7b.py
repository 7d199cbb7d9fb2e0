"""GPU figures of the 7B recipe on a random-initialised Qwen2.5-VL with the published Qwen2.5-VL-7B sizes (timing
needs no weights): GRPO steps with LoRA and gradient checkpointing at num_generations 8 (step time, generated
tokens/s), evaluation items/s batched against batch-1, and the peak GPU memory of each.

    python bench/gpu_7b.py                                                   # one GPU, the 7B sizes in bf16
    python bench/gpu_7b.py --sizes tiny --device cpu --n 4 --grpo_steps 2     # the same code on CPU, tiny sizes

The GRPO settings are configs/qwen2_5_vl_7b/grpo.yaml's (LoRA r 64 on the language model, the vision tower frozen,
the merger trained, 8 answers of up to 32 tokens per prompt, 8 per micro-batch and 2 micro-batches per step, so 16
answers generated in one call per optimizer step, gradient checkpointing, bf16) on synthetic items, on one GPU
without DeepSpeed; every answer is made exactly max_completion_length tokens long (``min_new_tokens``), so a random
model writes what a trained one could at most. Generated tokens/s times trl's generation call alone; the step time
holds generation, rewards, the forward/backward passes and the update.
The tokenizer and processor are the project's offline ones (no download), with the vocabulary padded to Qwen's
152,064 rows so that the embeddings and the LM head cost what they cost in the real model; images are resized to
``--image_size`` pixels square (448: 1,024 patches, 256 image tokens). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GRPO_CONFIG = REPO / "configs" / "qwen2_5_vl_7b" / "grpo.yaml"
# Qwen2.5-VL-7B-Instruct's published configuration
SEVEN_B = {"text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                    "rope_theta": 1000000.0, "mrope_section": [16, 24, 24], "tie_word_embeddings": False},
           "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                      "out_hidden_size": 3584, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]}}
# the same shape of model, small enough for a CPU run of this script
TINY = {"text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "vocab_size": None, "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                 "tie_word_embeddings": False},
        "vision": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                   "window_size": 112, "fullatt_block_indexes": [1]}}


def build_model(sizes: dict, tokenizer, device: str, dtype: torch.dtype):
    """A randomly initialised Qwen2.5-VL of ``sizes``, created on ``device`` in ``dtype``, with the batched vision
    tower the project's loader installs."""
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from cogip.batched_vision import install_on_model

    text, vision = dict(sizes["text"]), sizes["vision"]
    text["vocab_size"] = text["vocab_size"] or len(tokenizer)  # None: the tokenizer's own
    if text["vocab_size"] < len(tokenizer):
        raise ValueError(f"vocab_size {text['vocab_size']} is smaller than the tokenizer ({len(tokenizer)})")
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    config = Qwen2_5_VLConfig(
        text_config={**{k: text[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                             "num_attention_heads", "num_key_value_heads", "vocab_size",
                                             "tie_word_embeddings")},
                     "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
                     "rope_parameters": {"rope_type": "default", "rope_theta": text["rope_theta"],
                                         "mrope_section": text["mrope_section"]},
                     "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={**vision, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "tokens_per_second": 2},
        tie_word_embeddings=text["tie_word_embeddings"], **ids)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    install_on_model(model)
    return model


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def time_eval(model, processor, n: int, batch_size: int, max_new_tokens: int, device: str) -> dict:
    """eval.predict on ``n`` synthetic test items, batched and one at a time (greedy, the same answers)."""
    from cogip.synthetic import make_benchmark
    from eval.predict import predict

    items = make_benchmark(n_train=0, n_validation=0, n_test=n, seed=0)["test"]
    kw = {"decoding": "greedy", "max_new_tokens": max_new_tokens, "progress": False}
    model.eval()
    predict(model, processor, items.select(range(min(2, n))), batch_size=2, **kw)  # warm-up
    out = {}
    for name, bs in (("batched", batch_size), ("batch1", 1)):
        _peak_reset(device)
        t0 = time.perf_counter()
        preds = predict(model, processor, items, batch_size=bs, **kw)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        out[name] = {"items_per_s": round(n / seconds, 2), "seconds": round(seconds, 2), "peak_gib": _peak_gib(device),
                     "texts": [p.text for p in preds]}
    agree = sum(a == b for a, b in zip(out["batched"].pop("texts"), out["batch1"].pop("texts"))) / n
    if len(processor.tokenizer) < model.config.text_config.vocab_size:
        agree = None  # most ids a random model picks are beyond the small tokenizer and decode to "" either way
    return {"n_items": n, "batch_size": batch_size, "max_new_tokens": max_new_tokens, **out,
            "speedup": round(out["batch1"]["seconds"] / out["batched"]["seconds"], 2), "answers_agree": agree}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """Seconds of each optimizer step (generation, rewards, the accumulated forward/backward passes, the update)."""

    def __init__(self):
        self.times, self.start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.times.append(time.perf_counter() - self.start)


def _timed(fn, times: list[float]):
    def wrapper(*args, **kwargs):
        _sync()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync()
        times.append(time.perf_counter() - t0)
        return out

    return wrapper


def time_grpo(model, processor, steps: int, warmup: int, device: str, out_dir: str) -> dict:
    """``steps`` optimizer steps of our GRPO trainer with the 7B config's settings; medians after ``warmup``."""
    from cogip.data import to_grpo_format
    from cogip.data_sources import load_canonical_splits
    from rewards import build_reward_funcs
    from rl.callbacks import GuardCallback
    from rl.train_grpo import make_parser
    from rl.trainer import CogGRPOTrainer
    from sft_warmstart.trainable import prepare_model

    cpu = not device.startswith("cuda")
    argv = ["--config", str(GRPO_CONFIG), "--output_dir", out_dir, "--dataset", "synthetic",
            "--synthetic_train_size", "256", "--synthetic_eval_size", "0", "--max_steps", str(steps),
            "--save_strategy", "no", "--report_to", "none", "--deepspeed", "",  # one GPU: no ZeRO
            "--logging_steps", "1", "--log_completions", "false", "--warmup_steps", "0"]
    argv += ["--use_cpu", "true", "--bf16", "false"] if cpu else []
    script_args, args, model_args = make_parser().parse_args_and_config(argv)
    args.generation_kwargs = {"min_new_tokens": args.max_completion_length}  # every answer full length
    train, _ = load_canonical_splits(script_args, with_eval=False)
    model.train()
    model = prepare_model(model, model_args, args)  # as rl/train_grpo.py does; trl sets up the checkpointing
    timer = StepTimer()
    trainer = CogGRPOTrainer(
        model=model, args=args, train_dataset=to_grpo_format(train), processing_class=processor,
        reward_funcs=build_reward_funcs(script_args.reward_funcs, **script_args.reward_options()),
        callbacks=[GuardCallback(args.zero_std_warn_frac, args.zero_std_warn_logs), timer])
    generation_s: list[float] = []
    trainer._generate = _timed(trainer._generate, generation_s)  # trl's generation of one step's answers
    _peak_reset(device)
    trainer.train()
    step = statistics.median(timer.times[warmup:] or timer.times)
    generation = statistics.median(generation_s[warmup:] or generation_s)
    answers = args.generation_batch_size  # per device: one generation batch per optimizer step
    tokens = answers * args.max_completion_length
    return {"steps": steps, "warmup": warmup, "num_generations": args.num_generations, "answers_per_step": answers,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "completion_tokens": args.max_completion_length, "lora_r": model_args.lora_r,
            "gradient_checkpointing": args.gradient_checkpointing, "step_s_median": round(step, 3),
            "step_s": [round(t, 3) for t in timer.times], "generation_s_median": round(generation, 3),
            "generated_tokens_per_s": round(tokens / generation, 1),
            "completion_tokens_per_step_s": round(tokens / step, 1), "peak_gib": _peak_gib(device)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", choices=["7b", "tiny"], default="7b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--image_size", type=int, default=448, help="pixels per image side (448: 256 image tokens)")
    p.add_argument("--n", type=int, default=64, help="evaluation items")
    p.add_argument("--batch_size", type=int, default=32, help="evaluation batch")
    p.add_argument("--max_new_tokens", type=int, default=24, help="evaluation answer length")
    p.add_argument("--grpo_steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2, help="first GRPO steps left out of the median")
    args = p.parse_args(argv)

    from cogip.models import build_tiny_processor

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    processor = build_tiny_processor(args.image_size, patch_size=14)
    processor.tokenizer.padding_side = "left"
    t0 = time.perf_counter()
    model = build_model(SEVEN_B if args.sizes == "7b" else TINY, processor.tokenizer, args.device, dtype)
    result = {"bench": "gpu_7b", "sizes": args.sizes, "device": args.device,
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
              "parameters": sum(x.numel() for x in model.parameters()),
              "build_s": round(time.perf_counter() - t0, 1), "image_size": args.image_size, "dtype": str(dtype)}
    print(f"built {result['parameters'] / 1e9:.2f} B parameters in {result['build_s']} s", flush=True)
    result["eval"] = time_eval(model, processor, args.n, args.batch_size, args.max_new_tokens, args.device)
    print(f"eval: {result['eval']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        result["grpo"] = time_grpo(model, processor, args.grpo_steps, args.warmup, args.device, tmp)
    print(f"grpo: {result['grpo']}", flush=True)
    result |= {"python": platform.python_version(), "torch": torch.__version__}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
