"""GRPO on the tiny Qwen2.5-VL with trl's real GRPOTrainer: rewards, held-out correlation, checkpoints, resume."""

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_eval_support import fitted_model_dir  # noqa: F401  (fixture)

from cogip.checkpoints import last_complete_checkpoint, load_checkpoint_weights
from cogip.cli import plain
from rl.callbacks import degenerate_group_warning
from rl.train_grpo import AdapterMergeError, check_adapter_start, cli_main, make_parser

CONFIG = str(Path(__file__).parents[1] / "configs" / "tiny" / "grpo.yaml")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    # Through from_pretrained: a ZeRO-3 save names tensors differently on disk, the loaded model is what counts.
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path).state_dict()


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return sum(float((a[k].float() - b[k].float()).abs().sum()) for k in a)


def test_grpo_trains_logs_correlation_and_resumes(tmp_path, caplog, fitted_model_dir):  # noqa: F811
    from transformers import AutoModelForImageTextToText

    # From a briefly fitted model (what SFT hands over): its answers parse, so the rewards differ within a group.
    out = tmp_path / "run"
    args = ["--config", CONFIG, "--output_dir", str(out), "--model_name_or_path", str(fitted_model_dir),
            "--synthetic_train_size", "16", "--synthetic_eval_size", "8",
            "--reward_funcs", "distance_gaussian", "format", "rank_global", "--reward_weights", "1", "0.2", "0.5",
            "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "8",
            "--logging_steps", "1", "--save_steps", "2", "--eval_steps", "2"]
    with caplog.at_level(logging.WARNING):
        assert cli_main([*args, "--max_steps", "2"]) == 0
    assert "advantage" in caplog.text  # num_generations=2 with group scaling is flagged
    base = _weights(fitted_model_dir)
    first = _weights(out)
    assert any(not torch.equal(base[k], first[k]) for k in base), "GRPO changed no weight"
    # What resuming loads into the model (the Trainer's own loader would keep the starting weights): every weight.
    model = AutoModelForImageTextToText.from_pretrained(fitted_model_dir)
    load_checkpoint_weights(model, out / "checkpoint-2")
    assert all(torch.equal(v, first[k]) for k, v in model.state_dict().items())
    cut = tmp_path / "cut"
    cut.mkdir()
    saved = load_file(out / "checkpoint-2" / "model.safetensors")
    save_file({k: v for k, v in saved.items() if not k.endswith("mlp.down_proj.weight")}, cut / "model.safetensors")
    with pytest.raises(RuntimeError, match="does not match the model: missing"):
        load_checkpoint_weights(model, cut)

    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    logged = {k for row in state["log_history"] for k in row}
    rewarded = [row["step"] for row in state["log_history"] if "reward" in row]
    assert rewarded == sorted(set(rewarded)), "a step's training reward was logged twice"
    assert {"rewards/distance_gaussian/mean", "rewards/rank_global/mean", "reward"} <= logged
    assert "rewards/distance_gaussian/parse_fail_rate" in logged
    # SRCC is left out while a trait's predictions are constant (undefined); MAE and parse rate always exist
    assert "heldout/parse_rate" in logged and any(k.startswith("heldout/") and k.endswith("/mae") for k in logged)
    rows = [json.loads(line) for line in (out / "correlation_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2] and {r["split"] for r in rows} == {"validation"}
    assert rows[1]["train_reward"] is not None and "Aesthetics/mae" in rows[1] and "parse_rate" in rows[1]
    # the saved config launches the same run: every field parses back to what this run had
    relaunch = make_parser().parse_args_and_config(["--config", str(out / "cogalign_grpo_config.yaml")],
                                                   fail_with_unknown_args=True)
    given = make_parser().parse_args_and_config([*args, "--max_steps", "2"])
    assert [plain(dataclasses.asdict(a)) for a in relaunch] == [plain(dataclasses.asdict(a)) for a in given]

    # A half-written checkpoint (killed while saving) is never resumed from.
    (out / "checkpoint-7").mkdir()
    (out / "checkpoint-7" / "model.safetensors").write_bytes(b"")
    assert cli_main([*args, "--max_steps", "3"]) == 0
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    # It took up checkpoint-2's weights: step 3 lies one step from them, not one step from where the run began.
    third = _weights(out / "checkpoint-3")
    assert _distance(third, first) < _distance(third, base) / 2, (_distance(third, first), _distance(third, base))
    steps = [r["step"] for r in (json.loads(x) for x in (out / "correlation_log.jsonl").read_text().splitlines())]
    assert steps == [0, 2, 3]  # resumed at 2: no second step-0 evaluation

    # Launched again once finished (mid-epoch), it trains nothing: the Trainer would take a step past max_steps.
    final, results = _weights(out), (out / "train_results.json").read_text()
    assert cli_main([*args, "--max_steps", "3"]) == 0
    assert not (out / "checkpoint-4").exists() and all(torch.equal(final[k], v) for k, v in _weights(out).items())
    assert (out / "train_results.json").read_text() == results and "train_runtime" in results


def test_averaged_weights_are_the_mean_of_the_steps_and_are_taken_up_on_resume(tmp_path, capsys,
                                                                               fitted_model_dir):  # noqa: F811
    """average_weights: the final model is the mean of the weights of steps 2, 3 and 4 (start 1, every step), though
    the run is cut after step 2 and resumed; each checkpoint keeps its own step's weights; launched once more, with or
    without the flag, the finished run keeps its mean, or writes it again where its final save is missing."""
    out = tmp_path / "run"
    args = ["--config", CONFIG, "--output_dir", str(out), "--model_name_or_path", str(fitted_model_dir),
            "--synthetic_train_size", "16", "--synthetic_eval_size", "0", "--per_device_train_batch_size", "8",
            "--max_completion_length", "8", "--logging_steps", "1", "--save_steps", "1", "--save_total_limit", "5"]
    plain_args, args = args, [*args, "--average_weights", "true", "--average_weights_start", "1",
                              "--average_weights_every", "1"]
    assert cli_main([*args, "--max_steps", "2"]) == 0
    step = {n: _weights(out / f"checkpoint-{n}") for n in (1, 2)}
    first = _weights(out)
    assert all(torch.equal(first[k], v) for k, v in step[2].items())  # the mean of one step
    assert (out / "checkpoint-2" / "weight_average.safetensors").is_file()
    assert not (out / "weight_average.safetensors").exists()

    assert cli_main([*args, "--max_steps", "4"]) == 0
    step |= {n: _weights(out / f"checkpoint-{n}") for n in (3, 4)}
    final, base = _weights(out), _weights(fitted_model_dir)
    for k, v in final.items():
        assert torch.allclose(v, (step[2][k] + step[3][k] + step[4][k]) / 3, atol=1e-6), k
    assert any(not torch.equal(final[k], step[4][k]) for k in final), "the final model is the last step's"
    assert any(not torch.equal(step[3][k], step[4][k]) for k in final) and _distance(final, base) > 0

    (out / "model.safetensors").unlink()  # launched again once finished: the mean comes back from checkpoint-4
    assert cli_main([*args, "--max_steps", "4"]) == 0
    assert all(torch.allclose(final[k], v) for k, v in _weights(out).items())
    assert cli_main([*plain_args, "--max_steps", "4"]) == 0  # without the flag: the mean is kept, not overwritten
    assert all(torch.allclose(final[k], v) for k, v in _weights(out).items())
    (out / "model.safetensors").unlink()  # ... and written again from the checkpoint's mean when it is not there
    assert cli_main([*plain_args, "--max_steps", "4"]) == 0
    assert all(torch.allclose(final[k], v) for k, v in _weights(out).items())
    (out / "model.safetensors").unlink()  # a mean saved by another layout of processes is refused, not ignored
    mean = out / "checkpoint-4" / "weight_average.safetensors"
    mean.rename(mean.with_name("weight_average-rank0.safetensors"))
    assert cli_main([*args, "--max_steps", "4"]) == 2 and "another layout of processes" in capsys.readouterr().err
    mean.with_name("weight_average-rank0.safetensors").rename(mean)

    # Resumed from a checkpoint of another folder, the run takes up the mean that checkpoint holds.
    other = tmp_path / "other"
    assert cli_main([*args, "--output_dir", str(other), "--max_steps", "4",
                     "--resume_from_checkpoint", str(out / "checkpoint-2")]) == 0
    third, fourth = (_weights(other / f"checkpoint-{n}") for n in (3, 4))
    for k, v in _weights(other).items():
        assert torch.allclose(v, (step[2][k] + third[k] + fourth[k]) / 3, atol=1e-6), k

    code = cli_main([*args, "--max_steps", "5", "--average_weights_every", "2"])  # not the mean checkpoint-4 has
    assert code == 2 and "taken from step 1 every 1 steps" in capsys.readouterr().err
    code = cli_main([*args, "--output_dir", str(tmp_path / "b"), "--max_steps", "1"])  # nothing after step 1
    assert code == 2 and "no step after average_weights_start 1" in capsys.readouterr().err


def test_grpo_trains_the_vision_tower_after_held_out_scoring(tmp_path, fitted_model_dir):  # noqa: F811
    # The held-out scoring at step 0 runs in inference mode and fills the tower's cache of positions and windows;
    # the training steps after it use them in their backward.
    out = tmp_path / "run"
    assert cli_main(["--config", CONFIG, "--output_dir", str(out), "--model_name_or_path", str(fitted_model_dir),
                     "--synthetic_train_size", "8", "--synthetic_eval_size", "4", "--per_device_train_batch_size", "4",
                     "--num_generations", "2", "--max_completion_length", "8", "--max_steps", "2",
                     "--freeze_vision_tower", "false", "--freeze_merger", "false", "--vision_lr", "1e-3",
                     "--save_steps", "2"]) == 0
    base, trained = _weights(fitted_model_dir), _weights(out)
    assert any(not torch.equal(base[k], trained[k]) for k in base if ".visual.blocks." in k), "the tower did not train"


def test_an_sft_adapter_is_not_merged_where_merging_goes_wrong(tmp_path, capsys, fitted_model_dir):  # noqa: F811
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    adapter = tmp_path / "sft-lora"
    model = AutoModelForImageTextToText.from_pretrained(fitted_model_dir)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    out = tmp_path / "run"
    args = ["--config", CONFIG, "--output_dir", str(out), "--model_name_or_path", str(adapter),
            "--synthetic_train_size", "8", "--synthetic_eval_size", "0"]
    # LoRA on a merged adapter: the new adapter would name the base, not the SFT model, as its base.
    assert cli_main([*args, "--use_peft", "true"]) == 2
    err = capsys.readouterr().err
    assert "record the base model, not the SFT model" in err and "--sft_adapter train" in err
    (adapter / "merged").mkdir()
    (adapter / "merged" / "config.json").write_text("{}")
    assert cli_main([*args, "--use_peft", "true"]) == 2
    assert f"Start from --model_name_or_path {adapter / 'merged'}" in capsys.readouterr().err
    # A KL term against the adapter's base would pull the policy back to before SFT, merged or trained further.
    for mode in ("merge", "train"):
        assert cli_main([*args, "--sft_adapter", mode, "--beta", "0.04"]) == 2
        assert "trl's KL reference would be its base model, not the SFT model" in capsys.readouterr().err
    assert not out.exists()
    # Full fine-tuning under ZeRO-3 (what a --deepspeed ZeRO-3 config sets up): peft would merge into one process's
    # shard of the base.
    check_adapter_start(str(adapter))
    zero3 = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}})
    try:
        with pytest.raises(AdapterMergeError, match="under ZeRO-3 the base is split across processes"):
            check_adapter_start(str(adapter))
    finally:
        del zero3
        unset_hf_deepspeed_config()


def test_grpo_on_a_release_scores_its_test_split(tmp_path, caplog, fitted_model_dir):  # noqa: F811
    from release_fixture import TRAITS, write_release

    release, images = write_release(tmp_path, {t: 2 for t in TRAITS}, {t: 1 for t in TRAITS})
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert cli_main(["--config", CONFIG, "--output_dir", str(out), "--model_name_or_path", str(fitted_model_dir),
                         "--dataset", "release", "--dataset_path", str(release), "--image_root", str(images),
                         "--dataset_train_split", "grpo", "--per_device_train_batch_size", "4",
                         "--num_generations", "2", "--max_completion_length", "8", "--max_steps", "1"]) == 0
    rows = [json.loads(line) for line in (out / "correlation_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(0, "test"), (1, "test")]
    assert "held-out scoring on the test split: best_checkpoint.json" in caplog.text


def test_an_sft_adapter_trained_further_keeps_the_freeze_flags(tmp_path, fitted_model_dir):  # noqa: F811
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    adapter, out = tmp_path / "sft-lora", tmp_path / "run"
    model = AutoModelForImageTextToText.from_pretrained(fitted_model_dir)
    get_peft_model(model, LoraConfig(r=2, target_modules=r"^(?!.*\bvisual\b).*\.(q_proj|v_proj)$",
                                     modules_to_save=["visual"])).save_pretrained(adapter)
    assert cli_main(["--config", CONFIG, "--output_dir", str(out), "--model_name_or_path", str(adapter),
                     "--sft_adapter", "train", "--freeze_vision_tower", "true", "--freeze_merger", "false",
                     "--merger_lr", "1e-2", "--synthetic_train_size", "8", "--synthetic_eval_size", "0",
                     "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "8",
                     "--max_steps", "2", "--save_steps", "2"]) == 0
    before, after = load_file(adapter / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    blocks = [k for k in before if ".blocks." in k]
    merger = [k for k in before if ".merger." in k]
    assert blocks and all(torch.equal(before[k], after[k]) for k in blocks)  # the ViT stayed frozen
    assert any(not torch.equal(before[k], after[k]) for k in merger)  # the merger trained


def test_the_best_step_names_a_checkpoint_only_where_one_was_saved(tmp_path):
    from types import SimpleNamespace

    from rl.callbacks import BEST_CHECKPOINT, CorrelationCallback

    callback = CorrelationCallback(None, None, eval_steps=1)
    args = SimpleNamespace(output_dir=str(tmp_path), save_steps=2, save_total_limit=3)
    best = []
    for step, srcc in [(0, 0.0), (1, 0.2), (2, 0.4)]:  # nothing readable at first: mean SRCC 0, not undefined
        callback._record(args, SimpleNamespace(global_step=step), {"mean_srcc": srcc}, None)
        best.append(json.loads((tmp_path / BEST_CHECKPOINT).read_text())["checkpoint"])
    assert best == [None, None, str(tmp_path / "checkpoint-2")]  # no checkpoint-0 or -1 was ever saved
    callback._record(args, SimpleNamespace(global_step=3), {"mean_srcc": 0.9}, None)  # lost: killed before step 4
    # Resumed at checkpoint-2: the best so far is the log's up to there, not whatever the resumed run scores first.
    resumed = CorrelationCallback(None, None, eval_steps=1)
    resumed._take_up(args, 2)
    state = SimpleNamespace(global_step=3, best_model_checkpoint=None)
    resumed._record(args, state, {"mean_srcc": 0.3}, None)
    assert json.loads((tmp_path / BEST_CHECKPOINT).read_text())["step"] == 2
    assert state.best_model_checkpoint == str(tmp_path / "checkpoint-2")  # kept by the save_total_limit rotation


def test_the_guards_warn_when_their_condition_holds_and_only_then(tmp_path, caplog):
    from types import SimpleNamespace

    from rl.callbacks import CorrelationCallback, GuardCallback

    args = SimpleNamespace(output_dir=str(tmp_path), save_steps=10, save_total_limit=None)
    with caplog.at_level(logging.WARNING, logger="rl.callbacks"):
        # Held-out SRCC falling while the reward rises: reward hacking. Either one alone is no reason to warn.
        callback = CorrelationCallback(None, None, eval_steps=1)
        rise, fall = callback.reward_rise * 2, callback.srcc_fall * 2
        history = [(0.3, 0.6), (0.3 + rise, 0.6), (0.3 + rise, 0.6 - fall), (0.3 + 2 * rise, 0.6 - 2 * fall)]
        for step, (reward, srcc) in enumerate(history):
            callback._record(args, SimpleNamespace(global_step=step), {"mean_srcc": srcc}, reward)
        hacked = [r for r in caplog.records if "exploiting the reward" in r.message]
        assert len(hacked) == 1 and hacked[0].message.startswith("step 3:")
        caplog.clear()
        # Most groups without spread for warn_logs logs in a row: once. A run broken by a lower value starts over.
        guard = GuardCallback(warn_frac=0.5, warn_logs=3)
        for frac in (0.9, 0.9, 0.1, 0.9, 0.9):
            guard.on_log(None, None, None, logs={"frac_reward_zero_std": frac})
        assert not caplog.records
        for frac in (0.9, 0.9, 0.9):
            guard.on_log(None, None, None, logs={"frac_reward_zero_std": frac})
        assert [r.message.split(":")[0] for r in caplog.records] == [
            "frac_reward_zero_std has stayed above 0.50 for 3 logs (now 0.90)"]


def test_degenerate_group_warning():
    assert "0.71" in degenerate_group_warning(2, "group")
    assert degenerate_group_warning(2, "batch") is not None  # still noisy
    assert degenerate_group_warning(8, "group") is None
    assert degenerate_group_warning(8, "group", ["distance_crps", "format"]) is None
    assert "distance_crps" in degenerate_group_warning(2, "batch", ["distance_crps"])
    both = degenerate_group_warning(2, "group", ["distance_crps"])
    assert "0.71" in both and "distance_crps" in both


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


ROOT = Path(__file__).parents[1]


def _launch(launcher: str, zero: str, out: Path, port: int, model: Path) -> list[str]:
    script = [str(ROOT / "rl" / "train_grpo.py"), "--config", CONFIG, "--output_dir", str(out), "--max_steps", "2",
              "--model_name_or_path", str(model), "--logging_steps", "1",
              "--synthetic_train_size", "16", "--synthetic_eval_size", "8", "--per_device_train_batch_size", "4",
              "--max_completion_length", "8", "--reward_funcs", "distance_gaussian", "rank_global",
              "--reward_weights", "1", "0.5"]
    if launcher == "deepspeed":
        return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(port),
                *script, "--deepspeed", str(ROOT / "configs" / "deepspeed" / f"{zero}.json")]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "configs" / "accelerate" / f"{zero}.yaml"), "--num_processes", "2", "--main_process_port",
            str(port), *script]


# The 7B recipe's launch (deepspeed, ZeRO-3) runs in the default suite; the other three combinations are slow.
@pytest.mark.parametrize(("launcher", "zero"), [("deepspeed", "zero3"),
                                                pytest.param("deepspeed", "zero2", marks=pytest.mark.slow),
                                                pytest.param("accelerate", "zero2", marks=pytest.mark.slow),
                                                pytest.param("accelerate", "zero3", marks=pytest.mark.slow)])
def test_two_process_launch_on_cpu(tmp_path, launcher, zero, fitted_model_dir):  # noqa: F811
    """Two CPU processes (gloo) under each launcher and ZeRO stage; rank_global gathers across them; the final model
    is the mean of the two steps' weights (average_weights; under ZeRO-3 each process averages its own slices). From
    a briefly fitted model: a random one answers nothing parsable, so every advantage is 0 and no weight moves."""
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    port = 29600 + 10 * ["zero2", "zero3"].index(zero) + ["deepspeed", "accelerate"].index(launcher)
    # From the repository root, as the README launches (the accelerate configs name their DeepSpeed JSON relatively).
    averaged = ["--save_steps", "1", "--average_weights", "true", "--average_weights_every", "1"]
    proc = subprocess.run(_launch(launcher, zero, out, port, fitted_model_dir) + averaged, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert last_complete_checkpoint(out) == str(out / "checkpoint-2")
    base, trained = _weights(fitted_model_dir), _weights(out)
    assert set(base) == set(trained) and any(not torch.equal(base[k], trained[k]) for k in base)
    one, two = _weights(out / "checkpoint-1"), _weights(out / "checkpoint-2")
    assert all(torch.allclose(trained[k], (one[k] + two[k]) / 2, atol=1e-6) for k in base)
    assert any(not torch.equal(trained[k], two[k]) for k in base)
    kept = {"weight_average-rank0.safetensors", "weight_average-rank1.safetensors"} if zero == "zero3" else {
        "weight_average.safetensors"}
    assert {p.name for p in (out / "checkpoint-2").glob("weight_average*")} == kept
    if zero == "zero3":  # launched again once finished: the mean it saved is kept; one it never saved is refused
        command = _launch(launcher, zero, out, port + 1, fitted_model_dir) + averaged
        again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert all(torch.equal(trained[k], v) for k, v in _weights(out).items())
        (out / "model.safetensors").unlink()
        again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        said = again.stdout + again.stderr
        assert again.returncode != 0 and "rename checkpoint-2 to incomplete-checkpoint-2" in said, said[-3000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert any("rewards/rank_global/mean" in row for row in state["log_history"])
    rows = [json.loads(x) for x in (out / "correlation_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2]


@pytest.mark.slow
def test_lora_with_the_merger_training_saves_under_zero3(tmp_path, fitted_model_dir):  # noqa: F811
    """The 7B recipe's parts (LoRA on the LLM, the merger trained in full, the ViT frozen) under ZeRO-3 on two CPU
    processes: its checkpoints save (with the whole vision module kept in full, the frozen ViT inside it was left
    out of ZeRO-3's save and peft failed on the first checkpoint) and load back with the trained merger."""
    from cogip.models import load_policy

    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = _launch("deepspeed", "zero3", out, 29650, fitted_model_dir) + [
        "--use_peft", "true", "--freeze_vision_tower", "true", "--freeze_merger", "false", "--merger_lr", "1e-3"]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert last_complete_checkpoint(out) == str(out / "checkpoint-2")
    assert json.loads((out / "adapter_config.json").read_text())["modules_to_save"] == ["merger"]
    base, trained = _weights(fitted_model_dir), load_policy(out, merge_adapter=True)[0].state_dict()
    merger = [k for k in base if ".merger." in k]
    assert merger and any(not torch.equal(base[k], trained[k]) for k in merger), "the merger did not train"
    assert all(torch.equal(base[k], trained[k]) for k in base if ".visual.blocks." in k)
