"""Every config under configs/ parses; every YAML opens with a comment saying what it runs and how to launch it."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
YAMLS = sorted(p for ext in ("*.yaml", "*.yml") for p in CONFIGS.rglob(ext))
JSONS = sorted(CONFIGS.rglob("*.json"))
SFT_CONFIGS = sorted([CONFIGS / "tiny" / "sft.yaml", *CONFIGS.glob("qwen2_5_vl_7b/sft_*.yaml")])


def test_there_are_configs():
    assert SFT_CONFIGS and all(p.exists() for p in SFT_CONFIGS)
    assert {p.name for p in JSONS} >= {"zero2.json", "zero3.json", "zero3_offload.json"}


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_yaml_parses_and_opens_with_a_comment(path):
    text = path.read_text()
    assert text.lstrip().startswith("#"), f"{path} must open with a comment: what it runs and how to launch it"
    assert isinstance(yaml.safe_load(text), dict)


@pytest.mark.parametrize("path", JSONS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_json_parses(path):
    doc = json.loads(path.read_text())
    if path.parent.name == "deepspeed":
        assert doc["zero_optimization"]["stage"] in (2, 3)
        assert doc["train_micro_batch_size_per_gpu"] == "auto"  # filled in from the training config
        assert "optimizer" not in doc  # the trainer builds it: per-part learning rates need our param groups


@pytest.mark.parametrize("path", SFT_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_sft_configs_hold_only_known_fields(path, monkeypatch):
    from sft_warmstart.train_sft import make_parser

    doc = yaml.safe_load(path.read_text())
    assert "sft_warmstart/train_sft.py --config" in path.read_text().split("\n\n")[0]  # the launch line
    monkeypatch.chdir(CONFIGS.parent)  # paths in the configs are relative to the repository root
    # CPU here: switch the GPU-only settings off; everything else is parsed as written.
    script, training, model = make_parser().parse_args_and_config(
        ["--config", str(path), "--bf16", "false", "--use_cpu", "true"] if "deepspeed" in doc
        else ["--config", str(path)], fail_with_unknown_args=True)
    assert training.soft_label_loss in ("triangular", "gaussian", "ce")
    if "qwen2_5_vl_7b" in str(path):
        assert (training.soft_label_eta, training.soft_label_lambda) == (0.15, 2.0)
        assert training.per_device_train_batch_size * training.gradient_accumulation_steps * 8 == 128
        assert training.lr_scheduler_type == "cosine" and doc["deepspeed"].endswith("zero3.json")
        assert (training.merger_lr, training.vision_lr) == (1e-5, 2e-6)
    if path.name == "sft_lora.yaml":
        assert (model.lora_r, model.lora_alpha, model.lora_dropout, training.learning_rate) == (64, 64, 0.05, 3e-5)


GRPO_CONFIGS = sorted([CONFIGS / "tiny" / "grpo.yaml", *CONFIGS.glob("qwen2_5_vl_7b/grpo*.yaml")])


@pytest.mark.parametrize("path", GRPO_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_grpo_configs_hold_only_known_fields(path, monkeypatch):
    from rewards import REWARD_FUNCS
    from rl.train_grpo import make_parser

    assert "rl/train_grpo.py --config" in path.read_text().split("\n\n")[0]  # the launch line
    monkeypatch.chdir(CONFIGS.parent)
    gpu_off = ["--bf16", "false", "--use_cpu", "true"] if yaml.safe_load(path.read_text()).get("bf16") else []
    script, training, model = make_parser().parse_args_and_config(["--config", str(path), *gpu_off],
                                                                  fail_with_unknown_args=True)
    assert set(script.reward_funcs) <= set(REWARD_FUNCS)
    assert len(training.reward_weights) == len(script.reward_funcs)
    if "qwen2_5_vl_7b" in str(path):
        assert training.num_generations == 8 and training.scale_rewards == "group"
        assert training.deepspeed.endswith("zero3.json")  # fp32 master weights for what trains in bf16
        assert model.use_peft == (path.name == "grpo.yaml")


@pytest.mark.parametrize("path", [CONFIGS / "tiny" / "generation.yaml", CONFIGS / "qwen_image" / "generation.yaml"],
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_generation_configs_hold_only_known_fields(path, monkeypatch):
    from generation.generate import make_parser

    monkeypatch.chdir(CONFIGS.parent)
    cpu = ["--device", "cpu"] if yaml.safe_load(path.read_text()).get("device", "cuda") != "cpu" else []
    (args,) = make_parser().parse_args_and_config(["--config", str(path), *cpu], fail_with_unknown_args=True)
    assert args.judge and 0.0 in args.alphas and max(args.alphas) == 1.0


def test_reward_funcs_may_be_one_comma_separated_string(tmp_path):
    from rl.train_grpo import make_parser

    config = tmp_path / "grpo.yaml"
    config.write_text((CONFIGS / "tiny" / "grpo.yaml").read_text() + "reward_funcs: distance_crps, format\n")
    script, training, _ = make_parser().parse_args_and_config(["--config", str(config)])
    assert script.reward_funcs == ["distance_crps", "format"] and len(training.reward_weights) == 2


def test_a_typo_in_a_config_value_fails_when_the_config_is_read(tmp_path):
    from rl.train_grpo import make_parser as grpo_parser
    from sft_warmstart.train_sft import make_parser as sft_parser

    # values from a YAML file become argparse defaults, which argparse never checks against the choices
    cases = [(sft_parser, "soft_label_loss: gausian\n", "soft_label_loss: 'gausian' is not one of triangular"),
             (sft_parser, "prompt_style: shrot\n", "prompt_style: 'shrot' is not one of full, short"),
             (grpo_parser, "correlation_decoding: expectd\n", "correlation_decoding: 'expectd' is not one of"),
             (grpo_parser, "dtype: float23\n", "dtype: 'float23' is not one of auto, bfloat16"),  # trl's ModelConfig
             (sft_parser, "lr_scheduler_type: cosin\n", "lr_scheduler_type: 'cosin' is not one of linear, cosine")]
    path = tmp_path / "typo.yaml"
    for make_parser, yaml_text, message in cases:
        path.write_text("output_dir: " + str(tmp_path / "out") + "\nuse_cpu: true\n" + yaml_text)
        with pytest.raises(ValueError, match=message):
            make_parser().parse_args_and_config(["--config", str(path)])
    # one value for a field that takes several is a list of one, as the same flag would give
    path.write_text(f"output_dir: {tmp_path / 'out'}\nuse_cpu: true\nreward_funcs: distance_crps\n"
                    "reward_weights: 1.0\n")
    script, training, _ = grpo_parser().parse_args_and_config(["--config", str(path)])
    assert script.reward_funcs == ["distance_crps"] and training.reward_weights == [1.0]
    path.write_text(f"output_dir: {tmp_path / 'out'}\nuse_cpu: true\nsave_strategy: no\n")  # YAML reads false
    assert sft_parser().parse_args_and_config(["--config", str(path)])[1].save_strategy == "no"


@pytest.mark.parametrize("stage", ["sft", "grpo", "generate", "eval"])
def test_bad_config_files_end_each_command_with_one_line_and_exit_2(stage, tmp_path, capsys, monkeypatch):
    from cogip.cli import main as cogalign

    monkeypatch.setattr(sys, "argv", ["cogalign"])
    unknown = tmp_path / "unknown.yaml"
    # no required field either: the unknown one is named first, not the missing field it would otherwise trip
    unknown.write_text(f"output_dir: {tmp_path / 'out'}\nno_such_field: 3\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("learning_rate: [1e-4\n")
    cases = [(["--config", str(unknown)], "unknown field(s): no_such_field"),
             (["--config", str(broken)], "broken.yaml"),
             (["--config", str(tmp_path / "missing.yaml")], "missing.yaml"),
             (["--output_dir", str(tmp_path / "out"), "--chekpoint", "x"], "unrecognized arguments: --chekpoint"),
             (["--output_dir", str(tmp_path / "out"), "--seed", "two"], "invalid int value: 'two'"),
             (["--output_dir", str(tmp_path / "out"), "--config"], "--config needs a YAML file"),
             ([f"--config={unknown}"], "write --config FILE with a space")]
    for argv, named in cases:
        assert cogalign([stage, *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cogalign {stage}: error: ") and named in err and "Traceback" not in err
        assert "usage:" not in err  # not argparse's whole usage first
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as stopped:
        cogalign([stage, "--help"])
    assert stopped.value.code == 0 and capsys.readouterr().out.startswith(f"usage: cogalign {stage} ")


def test_the_7b_configs_chain_sft_into_grpo_into_generation():
    """What each 7B stage reads is what the stage before it writes, as the README runs them one after another."""
    def cfg(name):
        return yaml.safe_load((CONFIGS / name).read_text())

    sft = [cfg(f"qwen2_5_vl_7b/{n}") for n in ("sft_lora.yaml", "sft_full.yaml")]
    # GRPO under ZeRO-3 starts from a model folder: the LoRA stage's merged model, or the full stage's output
    sft_out = {s["output_dir"] + ("/merged" if s.get("merge_lora") else "") for s in sft}
    grpo = [cfg(f"qwen2_5_vl_7b/{n}") for n in ("grpo.yaml", "grpo_full.yaml")]
    assert all(g["model_name_or_path"] in sft_out for g in grpo)
    assert len({c["image_root"] for c in [*sft, *grpo]}) == 1  # the images in one place for every stage
    assert len({c["image_max_pixels"] for c in [*sft, *grpo]}) == 1  # and seen at one size
    assert cfg("qwen_image/generation.yaml")["aligned_model"] in {g["output_dir"] for g in grpo}


def test_training_stages_refuse_a_missing_model_a_misspelt_reward_and_a_data_source_without_path(
        tmp_path, capsys, monkeypatch):
    from cogip.cli import main as cogalign

    monkeypatch.setattr(sys, "argv", ["cogalign"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # so runs/nope can only be a folder, not a hub id
    base = ["--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]
    rank_typo = tmp_path / "rank.yaml"  # argparse checks the choices of flags only, not of config values
    rank_typo.write_text("reward_funcs: [distance_crps, rank_global]\nrank_mode: thurston\n")
    cases = [("sft", ["--model_name_or_path", "runs/nope"], "--model_name_or_path runs/nope: no such model folder"),
             ("grpo", ["--model_name_or_path", "runs/nope"], "--model_name_or_path runs/nope: no such model folder"),
             ("grpo", ["--reward_funcs", "distance_gausian", "format"], "unknown reward 'distance_gausian'"),
             ("sft", ["--dataset", "release"], "dataset 'release' needs dataset_path"),
             ("grpo", ["--model_name_or_path", "tiny", "--reward_funcs", "format", "distance_linear",
                       "--reward_weights", "1"],
              "reward_weights [1.0] has 1 weights for 2 reward_funcs ['format', 'distance_linear']"),
             ("grpo", ["--config", str(rank_typo)], "rank_mode: 'thurston' is not one of concordance, thurstone"),
             ("sft", ["--report_to", "wandb"], "report_to: wandb is not installed here"),
             ("sft", ["--synthetic_traits", "Aesthetcs"], "synthetic_traits: unknown trait 'Aesthetcs'"),
             ("grpo", ["--report_to", "wandb"], "report_to: wandb is not installed here")]
    for stage, argv, named in cases:
        assert cogalign([stage, *base, *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cogalign {stage}: error: ") and named in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_console_script_names_an_unknown_command_and_tells_its_version(capsys):
    from cogip.cli import main as cogalign

    assert cogalign(["trian"]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("cogalign: error: unknown command 'trian'") and "grpo" in out.err and not out.out
    assert cogalign(["--version"]) == 0 and capsys.readouterr().out.startswith("cogalign 0.")
    assert cogalign([]) == 2 and capsys.readouterr().err.startswith("usage: cogalign <command>")
    assert cogalign(["--help"]) == 0 and capsys.readouterr().out.startswith("usage: cogalign <command>")
    # the deepspeed launcher puts --local_rank=N before the command: the command is still found
    assert cogalign(["--local_rank=0", "grpo", "--no_such_flag"]) == 2
    assert "cogalign grpo: error: unrecognized arguments: --no_such_flag" in capsys.readouterr().err


def test_a_saved_config_keeps_what_the_run_was_given_and_its_env(tmp_path, monkeypatch):
    from cogip.cli import parse_strictly, plain, relaunch_config
    from rl.train_grpo import make_parser

    monkeypatch.chdir(CONFIGS.parent)
    for name in ("COGALIGN_TEST_ENV", "COGALIGN_TEST_TOKEN", "TOKENIZERS_PARALLELISM"):  # trl sets the file's env
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    cfg = tmp_path / "c.yaml"
    cfg.write_text((CONFIGS / "qwen2_5_vl_7b" / "grpo.yaml").read_text() + "env:\n  COGALIGN_TEST_ENV: '1'\n")
    argv = ["--config", str(cfg), "--bf16", "false", "--use_cpu", "true", "--learning_r", "2e-6"]  # abbreviated
    given = parse_strictly(make_parser(), argv)
    saved = relaunch_config(given)
    assert saved["env"] == {"COGALIGN_TEST_ENV": "1"} and saved["learning_rate"] == 2e-6
    assert "steps_per_generation" not in saved  # trl derives it: given with generation_batch_size it is refused
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(saved))
    again = make_parser().parse_args_and_config(["--config", str(tmp_path / "again.yaml")],
                                                fail_with_unknown_args=True)
    assert [plain(dataclasses.asdict(a)) for a in again] == [plain(dataclasses.asdict(a)) for a in given]

    # tokens, secret-named env variables and the first run's resume point are not written
    cfg.write_text(cfg.read_text() + "  COGALIGN_TEST_TOKEN: hf_secret\n  TOKENIZERS_PARALLELISM: 'false'\n")
    saved = relaunch_config(parse_strictly(make_parser(), [*argv, "--hub_token", "hf_secret", "--resume", "false",
                                                           "--resume_from_checkpoint", "runs/x/checkpoint-5"]))
    assert saved["env"] == {"COGALIGN_TEST_ENV": "1", "TOKENIZERS_PARALLELISM": "false"}  # not a secret's name
    assert "hf_secret" not in yaml.safe_dump(saved) and "resume" not in saved  # a relaunch resumes
    assert "resume_from_checkpoint" not in saved and saved["learning_rate"] == 2e-6
    from sft_warmstart.train_sft import make_parser as sft_parser  # a *_token field that is no secret is kept

    saved = relaunch_config(parse_strictly(sft_parser(), ["--config", str(CONFIGS / "tiny" / "sft.yaml"),
                                                          "--eos_token", "<|im_end|>"]))
    assert saved["eos_token"] == "<|im_end|>"


def test_model_references_that_can_only_be_missing_folders_are_refused(tmp_path, monkeypatch):
    from cogip.files import InputNotFoundError
    from cogip.models import check_model_exists

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "runs" / "sft").mkdir(parents=True)
    (tmp_path / "runs" / "sft" / "adapter_model.safetensors").touch()
    for ok in ("runs/sft", "runs/sft/", "~/runs/sft", str(tmp_path / "runs" / "sft")):
        check_model_exists(ok, "--m")
    (tmp_path / "runs" / "zero3").mkdir()  # shards only, say
    with pytest.raises(InputNotFoundError, match="--m runs/zero3: the folder holds no model or adapter weights"):
        check_model_exists("runs/zero3", "--m")
    check_model_exists("runs/zero3", "--pipeline", weights=False)  # a diffusers pipeline's are in subfolders
    for missing in ("runs/nope", "./nope", "~/nope", "a/b/c"):
        with pytest.raises(InputNotFoundError, match=f"--m {missing}: no such model folder"):
            check_model_exists(missing, "--m")


def test_held_out_split_defaults_to_the_sources_own_and_deepspeed_without_a_launcher_gets_one_process(
        tmp_path, monkeypatch):
    from dataclasses import dataclass

    from trl import TrlParser

    from cogip.cli import parse_strictly
    from cogip.data_sources import DataArguments

    @dataclass
    class Run:  # the two fields that matter here, without building a Trainer's arguments in this process
        deepspeed: str | None = None
        max_steps: int = 0

    assert DataArguments(dataset="release", dataset_path="x").dataset_test_split == "test"
    assert DataArguments().dataset_test_split == "validation"
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(k, "")  # recorded, so what the function sets is taken back after the test
        monkeypatch.delenv(k)
    parse_strictly(TrlParser((Run,)), ["--max_steps", "2"], launch_env=True)
    assert "RANK" not in os.environ  # no DeepSpeed asked for: left alone
    cfg = tmp_path / "ds.yaml"
    cfg.write_text("deepspeed: configs/deepspeed/zero2.json\n")
    parse_strictly(TrlParser((Run,)), ["--config", str(cfg)])
    assert "RANK" not in os.environ  # a parse that does not launch (the demo's checks): left alone
    parse_strictly(TrlParser((Run,)), ["--config", str(cfg)], launch_env=True)
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("0", "1", "0")
    assert int(os.environ["MASTER_PORT"]) > 0
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")  # mpirun: DeepSpeed reads the ranks from Open MPI's variables
    parse_strictly(TrlParser((Run,)), ["--config", str(cfg)], launch_env=True)
    assert "RANK" not in os.environ
