"""Shared helpers for the eval tests: a tiny Qwen2.5-VL fitted for a few dozen steps so that it writes well-formed
``"<label> <score>"`` answers, and a fake training run folder built from it. (No tests in this module.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cogip.models import load_policy


def fit_tiny(model_dir: str | Path, train, out_dir: str | Path, steps: int = 60, batch_size: int = 16,
             lr: float = 3e-3, seed: int = 0) -> Path:
    """Cross-entropy on the answer tokens of ``train`` (canonical schema) for ``steps`` steps; saved to
    ``out_dir`` like a real checkpoint."""
    model, processor = load_policy(model_dir)
    tok = processor.tokenizer
    tok.padding_side = "right"  # training batches: answers at the end of each row, pads after them
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    n = len(train)
    g = torch.Generator().manual_seed(seed)
    prompt_len: dict[str, int] = {}  # prompt text -> tokens with its image (images share one size per split)
    for _ in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=g).tolist()
        rows = train.select(idx)
        images = [[im.convert("RGB")] for im in rows["image"]]
        prompts = [processor.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                   for p in rows["prompt"]]
        for p, im in zip(prompts, images, strict=True):
            if p not in prompt_len:
                prompt_len[p] = len(processor(text=[p], images=[im])["input_ids"][0])
        full = [p + a + "<|im_end|>" for p, a in zip(prompts, rows["answer"], strict=True)]
        enc = processor(text=full, images=images, padding=True, return_tensors="pt")
        labels = enc["input_ids"].clone()
        for b, p in enumerate(prompts):
            labels[b, :prompt_len[p]] = -100  # loss on the answer only
        labels[enc["attention_mask"] == 0] = -100
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    tok.padding_side = "left"
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return Path(out_dir)


def make_run_dir(run_dir: Path, checkpoints: dict[int, Path], log_history: list[dict], incomplete_step: int | None,
                 correlation_log: list[dict] | None = None) -> Path:
    """A training output folder as HF Trainer leaves it: ``checkpoint-N`` folders (weights, optimizer and RNG state,
    training args, trainer_state.json), one incomplete checkpoint without trainer_state.json, the final
    trainer_state.json and the GRPO correlation log."""
    import shutil

    run_dir.mkdir(parents=True, exist_ok=True)
    for step, src in checkpoints.items():
        ck = run_dir / f"checkpoint-{step}"
        shutil.copytree(src, ck)
        state = {"global_step": step, "log_history": [e for e in log_history if e["step"] <= step]}
        (ck / "trainer_state.json").write_text(json.dumps(state))
        for name in ("optimizer.pt", "rng_state.pth", "training_args.bin"):  # what a Trainer checkpoint also holds
            (ck / name).write_bytes(f"{name} at step {step}".encode())
    if incomplete_step is not None:
        shutil.copytree(next(iter(checkpoints.values())), run_dir / f"checkpoint-{incomplete_step}")
    last = max(checkpoints)
    (run_dir / "trainer_state.json").write_text(json.dumps({"global_step": last, "log_history": log_history}))
    (run_dir / "training_args.bin").write_bytes(b"training args")
    if correlation_log is not None:
        (run_dir / "correlation_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in correlation_log))
    return run_dir


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    """Torch on one thread while a module runs: on this 2-core machine shared with other jobs, two OpenMP threads
    contend and a tiny model's step runs ~15x slower than on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fitted_model_dir(tiny_model_dir, synthetic_splits, tmp_path_factory):
    """The tiny model after 60 answer-fitting steps; cached in the session's temp root so that every eval test
    module shares one fit."""
    out = tmp_path_factory.getbasetemp() / "eval-fitted-tiny"
    if not (out / "config.json").exists():
        before = torch.get_num_threads()
        torch.set_num_threads(1)  # see one_thread
        try:
            fit_tiny(tiny_model_dir, synthetic_splits["train"], out, steps=60)
        finally:
            torch.set_num_threads(before)
    return out
