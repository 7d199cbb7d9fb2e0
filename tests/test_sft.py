"""The SFT stage end to end on the tiny Qwen2.5-VL: real trl SFTTrainer, real data paths, no mocks."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cogip.checkpoints import last_complete_checkpoint, list_complete_checkpoints
from cogip.models import digit_token_ids, load_policy
from sft_warmstart.collator import SOFT_LABEL_KEYS, SoftLabelCollator
from sft_warmstart.config import SoftLabelSFTConfig
from sft_warmstart.soft_label_loss import SoftLabelConfig, soft_label_loss
from sft_warmstart.trainable import parameter_groups, part_of, prepare_model, trainable_counts
from sft_warmstart.trainer import SoftLabelSFTTrainer

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "tiny" / "sft.yaml"
# The tiny config fine-tunes the language model of a vision-pretrained tiny model; these tests cover the LoRA path
# (adapter, resume, merge) on a random one, with the vision tower and merger trained too.
TINY_LORA = ["--use_peft", "true", "--lora_r", "16", "--lora_alpha", "32", "--tiny_vision_pretrain_steps", "0",
             "--freeze_vision_tower", "false", "--freeze_merger", "false"]


def _model_args(**kw):
    from trl import ModelConfig

    return ModelConfig(model_name_or_path="tiny", **kw)


def _args(out: Path, **kw) -> SoftLabelSFTConfig:
    base = dict(output_dir=str(out), use_cpu=True, bf16=False, max_steps=2, per_device_train_batch_size=4,
                report_to="none", activation_checkpointing=False, save_strategy="no", learning_rate=1e-2,
                logging_steps=1, max_length=None, dataloader_num_workers=0)
    return SoftLabelSFTConfig(**{**base, **kw})


def _sft(ds, n=None):
    from cogip.data import to_sft_format

    return to_sft_format(ds if n is None else ds.select(range(n)))


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint discovery


def test_only_complete_checkpoints_are_resumed_from(tmp_path):
    assert last_complete_checkpoint(tmp_path) is None
    for step, state in ((2, {"global_step": 2}), (10, {"global_step": 10}), (12, None), (14, "half")):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if state == "half":
            (d / "trainer_state.json").write_text('{"global_step": 1')  # killed while writing
        elif state is not None:
            (d / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in list_complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")

    from types import SimpleNamespace

    from cogip.checkpoints import finished_at

    def run(max_steps=-1, epochs=3.0):
        return SimpleNamespace(max_steps=max_steps, num_train_epochs=epochs)

    last = tmp_path / "checkpoint-10"
    assert finished_at(last, run(10)) and finished_at(last, run(8)) and not finished_at(last, run(12))
    assert not finished_at(None, run(1)) and not finished_at(tmp_path / "checkpoint-14", run(1))
    # counted in epochs (max_steps -1): finished at its last epoch, not when given more epochs
    (last / "trainer_state.json").write_text(json.dumps({"global_step": 10, "max_steps": 10, "epoch": 2.0}))
    assert finished_at(last, run(epochs=2)) and not finished_at(last, run(epochs=3))


# ---------------------------------------------------------------------------------------------------------------
# Collator: the score digits it finds spell the answer's score


def test_collator_finds_the_score_digits(tiny_model_dir, synthetic_splits):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    _, processor = load_policy(tiny_model_dir)
    tok = processor.tokenizer
    collator = SoftLabelCollator(DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True), tok)
    ds = _sft(synthetic_splits["train"], 6)
    batch = collator([ds[i] for i in range(6)])
    ids = digit_token_ids(tok)
    for b in range(6):
        pos = batch["score_digit_positions"][b]
        places = batch["score_digit_places"][b][pos >= 0].tolist()
        digits = [ids.index(int(batch["labels"][b, p])) for p in pos[pos >= 0].tolist()]
        value = sum(d * 10.0 ** p for d, p in zip(digits, places))
        assert abs(value - abs(ds[b]["score"])) < 1e-6
        assert batch["score_sigma"][b].item() == pytest.approx(ds[b]["score_std"], rel=1e-5)


def test_collator_positions_are_the_models_own(tiny_model_dir, synthetic_splits):
    """The rotary positions the collator computes (in a data-loader worker) are those the model would work out,
    padding included, and the forward pass gives the same logits with them."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from sft_warmstart.collator import RopeIndex

    model, processor = load_policy(tiny_model_dir)
    base = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    collator = SoftLabelCollator(base, processor.tokenizer, RopeIndex.for_model(model))
    ds = _sft(synthetic_splits["train"], 10)
    for rows in (range(5), range(5, 10)):  # the second batch reuses the layouts the first worked out
        batch = collator([ds[i] for i in rows])
        assert batch["attention_mask"].min() == 0  # rows of different lengths: padding is part of the check
        own, _ = model.model.get_rope_index(batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                                            image_grid_thw=batch["image_grid_thw"],
                                            attention_mask=batch["attention_mask"])
        assert torch.equal(batch["position_ids"], own) and batch["position_ids"].shape[0] == 3
    inputs = {k: v for k, v in batch.items() if k not in (*SOFT_LABEL_KEYS, "labels")}
    with torch.no_grad():
        given = model(**inputs).logits
        inputs.pop("position_ids")
        computed = model(**inputs).logits
    assert torch.equal(given, computed)
    assert RopeIndex.for_model(torch.nn.Linear(2, 2)) is None


# ---------------------------------------------------------------------------------------------------------------
# Which parameters train, at what rate


def test_lora_on_llm_with_vision_and_merger_at_their_own_rates(tiny_model_dir, tmp_path):
    model, _ = load_policy(tiny_model_dir)
    args = _args(tmp_path, freeze_vision_tower=True, merger_lr=1e-3, vision_lr=1e-4)
    model = prepare_model(model, _model_args(use_peft=True, lora_r=4, lora_alpha=8), args)
    counts = trainable_counts(model)
    assert counts["vision"] == 0 and counts["merger"] > 0 and counts["llm"] > 0
    lora_names = [n for n, p in model.named_parameters() if p.requires_grad and part_of(n) == "llm"]
    assert lora_names and all("lora_" in n for n in lora_names)
    assert not any("lora_" in n and "visual" in n for n, _ in model.named_parameters())  # no LoRA in the ViT
    groups = parameter_groups(model, args, decay_names=set())
    assert {g["name"]: g["lr"] for g in groups} == {"merger": 1e-3, "llm": 1e-2}
    with pytest.raises(ValueError):
        prepare_model(load_policy(tiny_model_dir)[0], _model_args(use_peft=True), _args(tmp_path, freeze_llm=True))


def test_full_finetuning_gaussian_trains_only_unfrozen_parts(tiny_model_dir, synthetic_splits, tmp_path):
    model, processor = load_policy(tiny_model_dir)
    loss = dict(soft_label_loss="gaussian", soft_label_eta=0.3, soft_label_lambda=3.0, soft_label_width=0.25,
                soft_label_sigma_fraction=0.1, soft_label_chunk_elements=1 << 20)  # none of them the default
    args = _args(tmp_path, freeze_merger=True, vision_lr=1e-3, max_steps=2, **loss)
    model = prepare_model(model, _model_args(), args)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = SoftLabelSFTTrainer(model=model, args=args, train_dataset=_sft(synthetic_splits["train"], 8),
                                  processing_class=processor)
    assert trainer.soft_label_config == SoftLabelConfig(kind="gaussian", eta=0.3, lam=3.0, width=0.25,
                                                        sigma_fraction=0.1, chunk_elements=1 << 20)
    trainer.train()
    assert {g["name"]: g["initial_lr"] for g in trainer.optimizer.param_groups} == {"vision": 1e-3, "llm": 1e-2}
    changed = {part: False for part in ("vision", "merger", "llm")}
    for n, p in model.named_parameters():
        changed[part_of(n)] |= not torch.equal(before[n], p.detach())
    assert changed == {"vision": True, "merger": False, "llm": True}
    logged = [h for h in trainer.state.log_history if "digit_loss" in h]
    assert logged and all(h["digit_loss"] > 0 for h in logged)


def test_under_gradient_accumulation_the_loss_is_the_mean_over_every_micro_batch_token(tiny_model_dir,
                                                                                       synthetic_splits, tmp_path,
                                                                                       monkeypatch):
    import sft_warmstart.trainer as trainer_module

    seen = []  # what the loss was given, and how many labelled tokens it found, per micro-batch

    def observed(*args, **kwargs):
        out = soft_label_loss(*args, **kwargs)
        seen.append((int(kwargs["num_items_in_batch"]), out.num_text + out.num_digits))
        return out

    monkeypatch.setattr(trainer_module, "soft_label_loss", observed)
    model, processor = load_policy(tiny_model_dir)
    args = _args(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=2)
    trainer = SoftLabelSFTTrainer(model=prepare_model(model, _model_args(), args), args=args,
                                  train_dataset=_sft(synthetic_splits["train"], 8), processing_class=processor)
    trainer.train()
    assert len(seen) == 4
    for first, second in (seen[:2], seen[2:]):  # the two micro-batches of one optimizer step
        assert first[0] == second[0] == first[1] + second[1]


# ---------------------------------------------------------------------------------------------------------------
# The entry script and `cogalign sft`: train, save, resume, merge


def test_tiny_config_trains_resumes_and_merges(tmp_path, capfd):
    from transformers import AutoModelForImageTextToText

    from cogip.cli import main as cogalign

    out = tmp_path / "run"
    common = ["--output_dir", str(out), "--synthetic_train_size", "48", "--save_steps", "8", "--logging_steps", "4",
              "--save_total_limit", "3",
              *TINY_LORA, "--per_device_train_batch_size", "8", "--learning_rate", "1e-2", "--merger_lr", "3e-3",
              "--vision_lr", "1e-3", "--warmup_steps", "2"]
    # 1) As users launch it: python sft_warmstart/train_sft.py --config configs/tiny/sft.yaml
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(ROOT / "sft_warmstart" / "train_sft.py"), "--config", str(TINY_CONFIG),
                           *common, "--max_steps", "24", "--merge_lora", "false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert last_complete_checkpoint(out) == str(out / "checkpoint-24")
    state = json.loads((out / "checkpoint-24" / "trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "loss" in h]
    # It learned: the loss fell and far more answer tokens are predicted right than at the start.
    assert logs[-1]["loss"] < logs[0]["loss"] - 0.2, logs
    assert logs[-1]["mean_token_accuracy"] > logs[0]["mean_token_accuracy"] + 0.2, logs
    assert (out / "adapter_model.safetensors").exists() and "Stage 1 of cogalign" in (out / "README.md").read_text()

    # 2) `cogalign sft` in the same folder resumes from checkpoint-24 and ignores a half-written checkpoint-40.
    (out / "checkpoint-40").mkdir()
    capfd.readouterr()
    saved = {p.name: p.stat().st_mtime_ns for p in (out / "checkpoint-24").iterdir()}
    assert cogalign(["sft", "--config", str(TINY_CONFIG), *common, "--max_steps", "26", "--merge_lora", "true"]) == 0
    assert f"Resuming from {out / 'checkpoint-24'}" in capfd.readouterr().out
    # it took the run up at step 24: a run started over would have saved checkpoint-24 again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "checkpoint-24").iterdir()} == saved
    assert json.loads((out / "checkpoint-26" / "trainer_state.json").read_text())["global_step"] == 26
    # Its saved config launches the same run (the relative paths as given, from the same folder).
    from cogip.cli import plain
    from sft_warmstart.train_sft import make_parser

    again, given = (make_parser().parse_args_and_config(argv) for argv in (
        ["--config", str(out / "cogalign_sft_config.yaml")],
        ["--config", str(TINY_CONFIG), *common, "--max_steps", "26", "--merge_lora", "true"]))
    assert [plain(dataclasses.asdict(a)) for a in again] == [plain(dataclasses.asdict(a)) for a in given]

    # The adapter holds trained LoRA weights and the trained ViT/merger copy.
    adapter = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())
    # it records the base's revision (model_revision), which loading it passes on for the base
    assert json.loads((out / "adapter_config.json").read_text())["revision"] == "main"
    assert any("visual" in k and "merger" in k for k in adapter)

    # 3) The merged model loads with plain from_pretrained and equals base + adapter.
    merged = AutoModelForImageTextToText.from_pretrained(out / "merged")
    peft_model, processor = load_policy(out)
    base = AutoModelForImageTextToText.from_pretrained(out / "tiny-base")
    ids = torch.tensor([processor.tokenizer("very high 8.130").input_ids])
    with torch.no_grad():
        a, b, c = (m.eval()(input_ids=ids).logits for m in (merged, peft_model, base))
    assert torch.allclose(a, b, atol=1e-4) and not torch.allclose(a, c, atol=1e-3)
    assert (out / "merged" / "README.md").exists()

    # 4) Launched again once finished: nothing trains, and neither its metrics nor the merged model are rewritten
    # (evaluations and generations keyed on them stay valid).
    written = {p.name: p.stat().st_mtime_ns for p in [*(out / "merged").iterdir(), out / "train_results.json"]}
    assert cogalign(["sft", "--config", str(TINY_CONFIG), *common, "--max_steps", "26", "--merge_lora", "true"]) == 0
    assert "reached the run's last step: nothing left to train" in capfd.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in [*(out / "merged").iterdir(), out / "train_results.json"]} == written


def test_a_local_model_folder_is_taken_absolute_and_a_hub_id_as_given(tmp_path, monkeypatch):
    from sft_warmstart.artifacts import resolve_model_path

    (tmp_path / "runs" / "sft" / "merged").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # a LoRA trained on runs/sft/merged names it as its base: from anywhere, absolute
    assert resolve_model_path("runs/sft/merged", "out") == str(tmp_path / "runs" / "sft" / "merged")
    assert resolve_model_path("Qwen/Qwen2.5-VL-7B-Instruct", "out") == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_the_tiny_base_is_built_whole_and_never_taken_for_one_pretrained_otherwise(tmp_path):
    from cogip.data import WrongFileError
    from cogip.models import TINY_BUILT
    from cogip.tiny_pretrain import PRETRAIN_RECORD
    from sft_warmstart.artifacts import resolve_model_path

    path = Path(resolve_model_path("tiny", tmp_path))
    (path / "model.safetensors").unlink()  # killed while building: config.json written, the weights not yet
    (path / TINY_BUILT).unlink()
    assert resolve_model_path("tiny", tmp_path) == str(path) and load_policy(path)[0] is not None
    # a run pretrained for 5 steps with position targets: another setting is refused, not silently reused
    (path / PRETRAIN_RECORD).write_text(json.dumps({"steps": 5, "position_targets": True}))
    assert resolve_model_path("tiny", tmp_path, 5) == str(path)
    for steps, targets in ((3200, True), (5, False)):
        with pytest.raises(WrongFileError, match="holds the tiny model pretrained with"):
            resolve_model_path("tiny", tmp_path, steps, position_targets=targets)


def test_bad_data_is_refused_before_training(tmp_path):
    from datasets import Dataset
    from PIL import Image

    img = Image.new("RGB", (56, 56), (200, 30, 30))
    rows = [{"image": img, "trait": "Aesthetics", "score": s} for s in (3.2, 12.5, 7.0, 4.4)]
    rows.append({"image": img, "trait": "Beauty", "score": 1.0})
    Dataset.from_list(rows).save_to_disk(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["--config", str(TINY_CONFIG), "--dataset", "hf", "--dataset_path", str(tmp_path / "data"),
            "--output_dir", str(out), "--max_steps", "1", "--merge_lora", "false", "--save_strategy", "no",
            "--per_device_train_batch_size", "2", *TINY_LORA]
    from sft_warmstart.train_sft import cli_main

    assert cli_main(argv) == 2
    assert not (out / "tiny-base").exists()  # refused before even a model was built
    # held-out scoring asked for where the data has no held-out split: off, not a crash once the model has loaded
    assert cli_main([*argv, "--drop_invalid_items", "--eval_strategy", "steps", "--eval_steps", "1",
                     "--image_max_pixels", "1568"]) == 0
    assert (out / "adapter_model.safetensors").exists()
    # the image size bound travels with the processor saved beside the model: evaluation resizes as training did
    from cogip.models import load_processor

    assert load_processor(out).image_processor.size["longest_edge"] == 1568  # below the tiny model's 56 x 56


def test_parts_that_cannot_train_together_are_refused_before_any_model_loads(tmp_path, capsys):
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    from sft_warmstart.train_sft import cli_main
    from sft_warmstart.trainable import TrainablePartsError, lora_config_for

    out = tmp_path / "run"
    assert cli_main(["--config", str(TINY_CONFIG), "--output_dir", str(out), *TINY_LORA, "--freeze_llm", "true"]) == 2
    assert "freeze_llm with use_peft leaves nothing for LoRA to train" in capsys.readouterr().err
    assert cli_main(["--config", str(TINY_CONFIG), "--output_dir", str(out), *TINY_LORA, "--load_in_4bit",
                     "true"]) == 2
    assert "load_in_4bit: True: cogalign trains unquantized weights" in capsys.readouterr().err  # not trained in bf16
    assert not (out / "tiny-base").exists()
    # LoRA with the ViT trained and the merger frozen: a checkpoint cannot save under ZeRO-3 (the frozen merger sits
    # inside the ViT kept in full, and ZeRO-3 leaves frozen weights out), so the run is refused there only.
    parts = _args(tmp_path, freeze_vision_tower=False, freeze_merger=True)
    assert lora_config_for(_model_args(use_peft=True), parts).modules_to_save == ["visual"]
    zero3 = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}})
    try:
        with pytest.raises(TrainablePartsError, match="train the merger too"):
            lora_config_for(_model_args(use_peft=True), parts)
    finally:
        del zero3
        unset_hf_deepspeed_config()
    assert lora_config_for(_model_args(use_peft=True), _args(tmp_path, freeze_vision_tower=True)).modules_to_save == [
        "merger"]


@pytest.mark.parametrize("zero", [pytest.param("zero2", marks=pytest.mark.slow), "zero3"])  # ZeRO-3 in every run
def test_deepspeed_zero_on_cpu(tmp_path, zero):
    """Two CPU processes under DeepSpeed (gloo), the tiny LoRA recipe."""
    out = tmp_path / zero
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2",
           str(ROOT / "sft_warmstart" / "train_sft.py"), "--config", str(TINY_CONFIG), "--output_dir", str(out),
           "--deepspeed", str(ROOT / "configs" / "deepspeed" / f"{zero}.json"), "--max_steps", "3",
           "--synthetic_train_size", "32", "--per_device_train_batch_size", "2", "--save_steps", "3", *TINY_LORA,
           "--merge_lora", "true"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "adapter_model.safetensors").exists() and last_complete_checkpoint(out)
    merged, processor = load_policy(out / "merged")
    adapter, _ = load_policy(out)
    ids = torch.tensor([processor.tokenizer("very high 8.130").input_ids])
    with torch.no_grad():
        a, b = (m.eval()(input_ids=ids).logits for m in (merged, adapter))
    assert torch.allclose(a, b, atol=1e-4)  # the merged model is base + the adapter the two ranks trained
