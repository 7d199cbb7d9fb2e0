"""GRPO on the tiny Qwen2.5-VL with trl's real GRPOTrainer: rewards, held-out correlation, checkpoints, resume."""

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from rl.callbacks import degenerate_group_warning
from rl.train_grpo import cli_main

CONFIG = str(Path(__file__).parents[1] / "configs" / "tiny" / "grpo.yaml")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_grpo_trains_logs_correlation_and_resumes(tmp_path, caplog):
    out = tmp_path / "run"
    args = ["--config", CONFIG, "--output_dir", str(out), "--synthetic_train_size", "16", "--synthetic_eval_size", "8",
            "--reward_funcs", "distance_gaussian", "format", "rank_global", "--reward_weights", "1", "0.2", "0.5",
            "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "8"]
    with caplog.at_level(logging.WARNING):
        assert cli_main([*args, "--max_steps", "2"]) == 0
    assert "advantage" in caplog.text  # num_generations=2 with group scaling is flagged
    base = _weights(out / "tiny-base")
    first = _weights(out)
    assert any(not torch.equal(base[k], first[k]) for k in base), "GRPO changed no weight"

    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    logged = {k for row in state["log_history"] for k in row}
    assert {"rewards/distance_gaussian/mean", "rewards/rank_global/mean", "reward"} <= logged
    assert "rewards/distance_gaussian/parse_fail_rate" in logged
    assert any(k.startswith("heldout/") and k.endswith("/srcc") for k in logged)
    rows = [json.loads(line) for line in (out / "correlation_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2]
    assert rows[1]["train_reward"] is not None and "Aesthetics/mae" in rows[1] and "parse_rate" in rows[1]
    assert (out / "cogalign_grpo_config.yaml").exists()

    # A half-written checkpoint (killed while saving) is never resumed from.
    (out / "checkpoint-7").mkdir()
    (out / "checkpoint-7" / "model.safetensors").write_bytes(b"")
    assert cli_main([*args, "--max_steps", "3"]) == 0
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    steps = [r["step"] for r in (json.loads(x) for x in (out / "correlation_log.jsonl").read_text().splitlines())]
    assert steps == [0, 2, 3]  # resumed at 2: no second step-0 evaluation


def test_degenerate_group_warning():
    assert "0.71" in degenerate_group_warning(2, "group")
    assert degenerate_group_warning(2, "batch") is not None  # still noisy
    assert degenerate_group_warning(8, "group") is None


def test_bad_data_is_refused_before_training(tmp_path, capsys):
    release = tmp_path / "release"
    release.mkdir()
    (release / "training_grpo.json").write_text(json.dumps([{"id": "0", "image": "Aesthetics/0.jpg", "conversations": [
        {"from": "human", "value": "rate"}, {"from": "gpt", "value": "<answer>high 7.000</answer>"}]}]))
    code = cli_main(["--config", CONFIG, "--output_dir", str(tmp_path / "run"), "--dataset", "upstream",
                     "--dataset_path", str(release / "training_grpo.json"), "--image_root", str(tmp_path)])
    assert code == 2
    assert "training_grpo.json[0]: missing image" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
