"""bench/gpu_7b.py, the script for the GPU figures: its model has the published Qwen2.5-VL-7B size, and the same
code runs end to end on CPU with tiny sizes. And every script in bench/ loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_the_random_7b_model_has_the_published_parameter_count():
    sys.path.insert(0, str(BENCH))
    try:
        from gpu_7b import SEVEN_B, build_model
    finally:
        sys.path.remove(str(BENCH))
    from cogip.models import build_tiny_processor

    model = build_model(SEVEN_B, build_tiny_processor(448, patch_size=14).tokenizer, "meta", torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656  # Qwen2.5-VL-7B-Instruct's 8.29 B


@pytest.mark.slow  # about 30 s, most of it starting the process
def test_the_gpu_bench_runs_on_cpu_with_tiny_sizes(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_7b.py"), "--sizes", "tiny", "--device", "cpu", "--n", "4", "--batch_size",
         "4", "--max_new_tokens", "8", "--grpo_steps", "2", "--warmup", "1", "--image_size", "56"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["eval"]["answers_agree"] == 1.0 and result["eval"]["batched"]["items_per_s"] > 0
    grpo = result["grpo"]
    assert len(grpo["step_s"]) == 2 and grpo["num_generations"] == 8 and grpo["lora_r"] == 64
    assert grpo["gradient_checkpointing"] and grpo["generated_tokens_per_s"] > 0


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_every_bench_script_imports(script):
    """Each bench script (and what it imports from its own folder) is there and loads; their work is run by hand."""
    import importlib.util

    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCH / script)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    finally:
        sys.path.remove(str(BENCH))
