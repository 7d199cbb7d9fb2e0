"""eval/run.py end to end on a fake training run (checkpoints saved like HF Trainer's), the training-log join, and
the paired comparison through `python eval/run.py`."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_eval_support import fitted_model_dir, make_run_dir, one_thread  # noqa: F401  (fixtures)

from cogip.answer import parse_answer
from cogip.traits import get_trait
from eval.training_log import read_correlation_log, read_log_history, training_at_step

REPO = Path(__file__).resolve().parents[1]


def within_half_range(completions, trait, score, **columns) -> list[float]:
    """1 when the answer is within half the trait's range of the human score (a reward defined for this test)."""
    out = []
    for c, t, s in zip(completions, trait, score, strict=True):
        p = parse_answer(c[0]["content"], t)
        out.append(float(p.score is not None and abs(p.score - s) <= get_trait(t).span / 2))
    return out


HISTORY = [{"step": s, "reward": s / 10, "rewards/closeness/mean": s / 20, "loss": 0.0, "learning_rate": 1e-3}
           for s in range(1, 7)]
CORRELATION = [{"step": 3, "split": "validation", "Aesthetics/srcc": 0.3, "mean_srcc": 0.25},
               {"step": 6, "split": "validation", "Aesthetics/srcc": 0.6, "mean_srcc": 0.5}]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir, fitted_model_dir):  # noqa: F811
    return make_run_dir(tmp_path_factory.mktemp("grpo-run"), {3: tiny_model_dir, 6: fitted_model_dir}, HISTORY,
                        incomplete_step=9, correlation_log=CORRELATION)


def test_training_log_join(run_dir, tmp_path):
    history, corr = read_log_history(run_dir), read_correlation_log(run_dir)
    assert len(history) == 6 and [e["step"] for e in corr] == [3, 6]
    at6 = training_at_step(history, corr, 6, previous_step=3)
    assert at6["log_steps"] == [4, 6] and at6["reward"] == pytest.approx(0.5)  # mean of steps 4..6
    assert at6["rewards"] == {"closeness": pytest.approx(0.25)}
    assert at6["correlation"] == {"step": 6, "mean_srcc": 0.5, "train_reward": None, "srcc": {"Aesthetics": 0.6}}
    # Absent logs and a torn last line (a run killed while writing) are handled.
    (tmp_path / "correlation_log.jsonl").write_text('{"step": 2, "mean_srcc": 0.1}\n{"step": 4, "mean')
    assert [e["step"] for e in read_correlation_log(tmp_path)] == [2]
    # Killed after scoring step 3, resumed from 2: its second step 3 replaces the first.
    (tmp_path / "correlation_log.jsonl").write_text("".join(json.dumps({"step": s, "mean_srcc": v}) + "\n" for s, v in
                                                          [(0, 0.1), (2, 0.2), (3, 0.9), (3, 0.3), (4, 0.4)]))
    assert [(e["step"], e["mean_srcc"]) for e in read_correlation_log(tmp_path)] == [(0, 0.1), (2, 0.2), (3, 0.3),
                                                                                     (4, 0.4)]
    # The first checkpoint evaluated averages the save_steps before it (earlier checkpoints may be deleted).
    assert training_at_step(history, corr, 6, save_steps=3)["log_steps"] == [4, 6]
    assert read_log_history(tmp_path / "nothing") == []
    assert training_at_step([], [], 5) == {"log_steps": None, "reward": None, "rewards": {}, "loss": None}


def test_run_dir_evaluation_writes_every_output(run_dir, tmp_path):
    from eval.run import cli_main

    out = tmp_path / "eval"
    out.mkdir()
    (out / "predictions_other-model.jsonl").write_text("{}\n")  # an earlier evaluation of another model: removed
    rc = cli_main(["--run_dir", str(run_dir), "--synthetic_n", "16", "--n_boot", "100", "--output_dir", str(out),
                   "--reward_funcs", "test_eval_run:within_half_range", "--max_new_tokens", "16",
                   "--blindness_items", "8"])
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    names = [c["name"] for c in doc["checkpoints"]]
    assert names == ["checkpoint-3", "checkpoint-6"]  # checkpoint-9 is incomplete: skipped
    ck6 = doc["checkpoints"][1]
    assert ck6["training"]["reward"] == pytest.approx(0.5) and ck6["training"]["correlation"]["step"] == 6
    assert "within_half_range" in ck6["held_out_rewards"]
    for r in ck6["metrics"]["traits"].values():
        assert r["n"] == 4 and 0 <= r["parse_rate"] <= 1 and "srcc_ci" in r and "parsed_only" in r
    assert ck6["metrics"]["overall"]["n_unparsable"] < 8  # the fitted checkpoint's own answers, not checkpoint-3's
    # The random checkpoint answers garbage: every item is counted as unparsable, none dropped.
    ck3 = doc["checkpoints"][0]["metrics"]["overall"]
    assert ck3["n"] == 16 and ck3["n_unparsable"] == 16
    assert set(doc["checkpoints"][0]["blindness"]["unreadable"]) == set(ck6["metrics"]["traits"])  # not judged
    # --blindness_items 8: the first 8 of the 16 items re-scored, two per trait
    assert [r["n"] for r in doc["checkpoints"][0]["blindness"]["shuffled"].values()] == [2, 2, 2, 2]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 8 and {"srcc", "train_reward", "held_out_within_half_range"} <= set(rows[0])
    report = (out / "report.md").read_text()
    assert "middle of the trait's range" in report and "ignores the image" in report
    assert (out / "curves.png").stat().st_size > 10_000
    preds = [json.loads(x) for x in (out / "predictions_checkpoint-6.jsonl").read_text().splitlines()]
    assert len(preds) == 16 and {"text", "parsed", "score"} <= set(preds[0])
    assert sorted(p.name for p in out.glob("predictions_*")) == ["predictions_checkpoint-3.jsonl",
                                                                   "predictions_checkpoint-6.jsonl"]
    # each file was written beside itself and moved into place: no temporary file is left, the CSV keeps its rows
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert (out / "metrics.csv").read_bytes().count(b"\r\n") == len(rows) + 1


def test_a_run_evaluated_again_reuses_what_did_not_change(run_dir, tmp_path, caplog):
    import logging
    import shutil

    from eval.run import cli_main

    run, out = tmp_path / "run", tmp_path / "eval"
    shutil.copytree(run_dir, run)
    argv = ["--run_dir", str(run), "--synthetic_n", "8", "--n_boot", "100", "--output_dir", str(out),
            "--max_new_tokens", "16", "--blindness", "false", "--blindness_items", "4"]
    caplog.set_level(logging.INFO, logger="eval.checkpoint_eval")

    def evaluated(extra=()) -> list[str]:
        caplog.clear()
        assert cli_main([*argv, *extra]) == 0
        reused = {r.getMessage().split(":")[0] for r in caplog.records if "reusing" in r.getMessage()}
        return [n for n in ("checkpoint-3", "checkpoint-6") if n not in reused]

    assert evaluated() == ["checkpoint-3", "checkpoint-6"]
    first = (out / "metrics.json").read_text()
    assert sorted(p.name for p in (out / "per_checkpoint").iterdir()) == ["checkpoint-3.json", "checkpoint-6.json"]
    assert evaluated() == [] and (out / "metrics.json").read_text() == first  # the same figures, from the store
    # the blindness check on the final model: only that one lacks it; its stored result then serves without it
    assert evaluated(["--blindness", "true", "--blindness_models", "final"]) == ["checkpoint-6"]
    assert evaluated() == [] and (out / "metrics.json").read_text() == first
    # scoring settings change the figures, not the predictions: nothing is predicted again
    assert evaluated(["--n_boot", "50", "--unparsable", "worst", "--reward_funcs", "distance_linear"]) == []
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["settings"]["n_boot"] == 50 and "held_out_rewards" in doc["checkpoints"][0]
    assert evaluated(["--blindness", "true", "--blindness_models", "final", "--blindness_tolerance", "0.5"]) == []
    assert evaluated(["--blindness", "true", "--blindness_models", "final", "--blindness_items", "3"]) == [
        "checkpoint-6"]  # other items in the check
    shutil.copy(run / "checkpoint-3" / "model.safetensors", run / "checkpoint-6")  # saved again, other weights
    assert evaluated() == ["checkpoint-6"]
    assert evaluated(["--synthetic_n", "12"]) == ["checkpoint-3", "checkpoint-6"]  # other items
    assert evaluated(["--synthetic_n", "12", "--resume", "false"]) == ["checkpoint-3", "checkpoint-6"]


def test_model_identity_follows_weights_configs_and_an_adapters_base(tmp_path):
    from cogip.stored import model_identity

    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir(), adapter.mkdir()
    (base / "config.json").write_text('{"hidden_size": 8}')
    (base / "model.safetensors").write_bytes(b"weights" * 3_000_000)  # large: known by size and time written
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    seen = [model_identity(adapter)]
    (base / "config.json").write_text('{"hidden_size": 16}')  # the base's config edited
    seen.append(model_identity(adapter))
    st = (base / "model.safetensors").stat()
    os.utime(base / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the base saved again
    seen.append(model_identity(adapter))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.bin").write_bytes(b"1")
    (tmp_path / "sub" / "gone.json").symlink_to(tmp_path / "nothing")  # a dangling link is named, not fatal
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "lock").write_text("")  # hidden folders are not the model's
    seen.append(model_identity(tmp_path, recursive=True))
    assert len({json.dumps(x) for x in seen}) == 4
    assert [x[0] for x in seen[-1][-2:]] == ["sub/gone.json", "sub/x.bin"] and seen[-1][-2][1] is None
    assert not any(x[0].startswith(".cache") for x in seen[-1])
    assert model_identity("no-such-org/no-such-model") == ["no-such-org/no-such-model"]


def test_stored_results_are_keyed_by_every_column_and_image(tmp_path):
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    from eval.resume import _items

    PILImage.new("RGB", (4, 4), "red").save(tmp_path / "a.png")
    feats = Features({"id": Value("string"), "image": Image(), "score": Value("float64"),
                      "score_std": Value("float64")})

    def items(std: float = 1.0, colour: str = "red") -> str:
        PILImage.new("RGB", (4, 4), colour).save(tmp_path / "b.png")
        return _items(Dataset.from_dict({"id": ["a", "b"], "image": [str(tmp_path / "a.png"), str(tmp_path / "b.png")],
                                         "score": [1.0, 2.0], "score_std": [0.5, std]}, features=feats))

    first = items()
    assert items(std=2.0) != first  # held-out rewards read score_std
    assert items(colour="blue") != first  # the image file was written again
    assert _items(Dataset.from_dict({"id": ["a"], "image": ["not/an/image.png"]})) != _items(
        Dataset.from_dict({"id": ["a"]}))  # a plain string column and no image column work too


def test_compare_two_checkpoints_from_the_command_line(tiny_model_dir, fitted_model_dir, tmp_path):  # noqa: F811
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [sys.executable, str(REPO / "eval" / "run.py"), "--compare", str(fitted_model_dir), str(tiny_model_dir),
         "--synthetic_n", "8", "--n_boot", "100", "--blindness", "false", "--max_new_tokens", "16",
         "--decoding", "expected", "--output_dir", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SRCC" in proc.stdout  # the rich table
    cmp = json.loads((out / "metrics.json").read_text())["comparison"]
    for per in cmp["traits"].values():
        mae = per["mae"]
        assert mae["n"] == 2 and mae["diff"] == pytest.approx(mae["a"] - mae["b"])
    assert "Paired comparison" in (out / "report.md").read_text()


def test_the_comparison_names_a_better_model_only_where_its_interval_leaves_out_zero():
    from eval.report import _comparison_lines

    def row(ci, a_better):
        return {"a": 0.5, "b": 0.4, "diff": 0.1, "ci": ci, "p_value": 0.3, "a_better": a_better}

    cmp = {"a": "x", "b": "y", "n_boot": 200, "mean_over_traits": {"srcc": row([0.01, 0.2], True)},
           "traits": {"Aesthetics": {"srcc": row([-0.1, 0.3], True), "mae": row([0.05, 0.2], False)}}}
    lines = _comparison_lines(cmp)
    assert [line.rsplit("|", 2)[-2].strip() for line in lines if line.startswith("| ") and "metric" not in line] \
        == ["n.s.", "B", "A"]
    assert "interval (200 resamples)" in lines[2]


def test_upstream_release_with_an_image_root(tiny_model_dir, tmp_path, capsys):  # noqa: F811
    """A release in the upstream file layout (tests/release_fixture.py) with its images under an image root; test
    split of the release, train means from its training file. Only the test split's images are there and the GRPO
    file is broken: neither is read for the test split."""
    from release_fixture import TRAITS, write_release

    from eval.run import cli_main

    sample, root = write_release(tmp_path, {t: 3 for t in TRAITS}, {t: 2 for t in TRAITS})
    for trait in TRAITS:
        for k in range(3):
            (root / trait / f"{k:06d}.jpg").unlink()
    (sample / "training_grpo.json").write_text("[{")
    out = tmp_path / "out"
    assert cli_main(["--checkpoint", str(tiny_model_dir), "--data", str(sample), "--image_root", str(root),
                     "--max_items_per_trait", "2", "--blindness", "false", "--n_boot", "0", "--max_new_tokens", "4",
                     "--output_dir", str(out)]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    traits = doc["checkpoints"][0]["metrics"]["traits"]
    assert set(traits) == {"Aesthetics", "Funniness", "Emotional_Valence", "Memorability"}
    assert all(r["n"] == 2 and r["reference"]["train_mean_mae"] is not None for r in traits.values())
    assert "split test" in doc["data"]
    # Without --image_root the images are looked for from the current folder, and the refusal says so.
    capsys.readouterr()
    assert cli_main(["--checkpoint", str(tiny_model_dir), "--data", str(sample), "--output_dir", str(out / "no-root"),
                     "--n_boot", "0"]) == 2
    err = capsys.readouterr().err
    assert "missing image" in err and err.count("(no image root given (--image_root)") == 1


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):  # noqa: F811
    yield


def test_a_final_save_identical_to_the_last_checkpoint_is_evaluated_once(tmp_path, tiny_model_dir,
                                                                          fitted_model_dir, caplog):  # noqa: F811
    import os
    import shutil

    from eval.checkpoint_eval import run_checkpoints
    from eval.eval_args import EvalArgs

    run = make_run_dir(tmp_path / "run", {3: tiny_model_dir, 6: fitted_model_dir}, HISTORY, incomplete_step=None)
    (run / "trainer_state.json").unlink()  # the Trainer's final save_model writes none at the top of the run
    for f in Path(fitted_model_dir).iterdir():  # ... but the same weights as its last checkpoint
        shutil.copy(f, run / f.name)
    listed = lambda: [(name, step) for name, _, step in run_checkpoints(EvalArgs(run_dir=str(run)))]
    assert listed() == [("checkpoint-3", 3), ("checkpoint-6", 6)]
    # The weights of an older checkpoint (a run resumed, then stopped before its final save): that checkpoint's.
    shutil.copy(Path(tiny_model_dir) / "model.safetensors", run / "model.safetensors")
    assert listed() == [("checkpoint-3", 3), ("checkpoint-6", 6)]
    (run / "model.safetensors").write_bytes(b"other weights")  # newer than every checkpoint: a model of its own
    assert listed() == [("checkpoint-3", 3), ("checkpoint-6", 6), ("final", None)]
    os.utime(run / "model.safetensors", (0, 0))  # older than the last checkpoint and like none: left out, saying why
    with caplog.at_level("WARNING", logger="eval.checkpoint_eval"):
        assert listed() == [("checkpoint-3", 3), ("checkpoint-6", 6)]
    assert "older than checkpoint-6 and the same as no checkpoint" in caplog.text


def test_a_checkpoint_without_weights_is_skipped_with_a_reason(tmp_path, tiny_model_dir, caplog):
    from eval.checkpoint_eval import run_checkpoints
    from eval.eval_args import EvalArgs

    run = make_run_dir(tmp_path / "run", {3: tiny_model_dir, 6: tiny_model_dir}, HISTORY, incomplete_step=None)
    (run / "checkpoint-6" / "model.safetensors").unlink()  # ZeRO-3 without gathered weights: shards only
    with caplog.at_level("WARNING", logger="eval.checkpoint_eval"):
        listed = [(name, step) for name, _, step in run_checkpoints(EvalArgs(run_dir=str(run), include_final=False))]
    assert listed == [("checkpoint-3", 3)]
    assert "no model or adapter weights: checkpoint-6" in caplog.text and "zero_to_fp32.py" in caplog.text


def test_curves_of_a_run_without_rewards_have_only_the_correlation_panel(tmp_path):
    from PIL import Image

    from eval.curves import plot_curves

    def ck(step, srcc, reward=None):
        return {"step": step, "metrics": {"traits": {"Aesthetics": {"srcc": srcc}}, "overall": {"mean_srcc": srcc}},
                "training": {"reward": reward}}

    sft = plot_curves({"checkpoints": [ck(1, 0.1), ck(2, 0.3)]}, tmp_path / "sft.png")
    grpo = plot_curves({"checkpoints": [ck(1, 0.1, 0.5), ck(2, 0.3, 0.7)]}, tmp_path / "grpo.png")
    (w1, h1), (w3, h3) = Image.open(sft).size, Image.open(grpo).size
    assert h1 == h3 and w3 > 2 * w1  # one panel instead of three


def test_blindness_items_must_be_positive():
    from eval.run import parse_args

    assert parse_args(["--checkpoint", "m", "--blindness_items", "3"]).blindness_items == 3
    with pytest.raises(ValueError, match="--blindness_items must be at least 1"):
        parse_args(["--checkpoint", "m", "--blindness_items", "0"])


def test_bad_input_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch):
    from release_fixture import TRAITS, write_release

    from eval.run import cli_main, parse_args

    assert cli_main(["--checkpoint", str(tmp_path / "runs" / "nope")]) == 2
    assert f"--checkpoint {tmp_path / 'runs' / 'nope'}: no such model folder" in capsys.readouterr().err
    assert cli_main(["--run_dir", str(tmp_path / "nope")]) == 2
    assert f"--run_dir {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err
    (tmp_path / "run" / "checkpoint-4").mkdir(parents=True)
    assert cli_main(["--checkpoint", str(tmp_path / "run" / "checkpoint-4")]) == 2
    assert "checkpoint-4: the folder holds no model or adapter weights" in capsys.readouterr().err
    assert cli_main(["--run_dir", str(tmp_path / "run" / "checkpoint-4")]) == 2
    assert f"is one checkpoint of a run: give the run's folder ({tmp_path / 'run'})" in capsys.readouterr().err
    assert cli_main(["--config", str(tmp_path / "nope.yaml")]) == 2 and "nope.yaml" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must be one of train, validation, test, not 'tset'"):
        parse_args(["--checkpoint", "m", "--split", "tset"])
    assert cli_main([]) == 2 and "give exactly one of --run_dir" in capsys.readouterr().err
    config = tmp_path / "eval.yaml"
    config.write_text("checkpoint: org/model\ndecoding: expected\ncompare: null\nn_boot: 0\n")
    args = parse_args(["--config", str(config), "--n_boot", "50"])  # flags win over the file, as in training
    assert (args.checkpoint, args.decoding, args.n_boot) == ("org/model", "expected", 50)
    config.write_text("checkpoint: org/model\ndecoding: expectd\n")  # argparse checks flags, not config values
    with pytest.raises(ValueError, match="decoding: 'expectd' is not one of greedy, expected, sample"):
        parse_args(["--config", str(config)])
    assert cli_main(["--checkpoint", "m", "--blindness_models", "last"]) == 2 and "invalid choice" in \
        capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    for flags, message in ((["--dtype", "bflaot16"], "invalid choice: 'bflaot16'"),
                           (["--device", "gpu"], "--device: 'gpu' is not a device"),
                           (["--device", "cuda"], "--device cuda: no CUDA device is visible here")):
        assert cli_main(["--checkpoint", "m", *flags]) == 2 and message in capsys.readouterr().err

    rel, images = write_release(tmp_path, {t: 2 for t in TRAITS}, {t: 2 for t in TRAITS})
    (tmp_path / "model.safetensors").touch()
    no_model = str(tmp_path)  # a folder with an empty weights file, never loaded: the data is refused first
    release = ["--checkpoint", no_model, "--data", str(rel), "--image_root", str(images)]
    assert cli_main(["--checkpoint", no_model, "--data", str(tmp_path / "no-data")]) == 2
    assert f"{tmp_path / 'no-data'} does not exist" in capsys.readouterr().err
    assert cli_main([*release, "--split", "tset"]) == 2
    assert "has no split 'tset'; it has: train, grpo, test, scores" in capsys.readouterr().err
    answers = rel / "test_msg_file" / "Funniness" / "Funniness_scores.json"
    assert cli_main(["--checkpoint", no_model, "--data", str(answers), "--image_root", str(images)]) == 2
    assert "holds the answers to Funniness_messages.json beside it" in capsys.readouterr().err  # no traceback
    assert cli_main([*release[:-1], str(tmp_path / "imgs")]) == 2
    assert "imgs does not exist (the folder the <Trait>/<id>.jpg paths are relative to)" in capsys.readouterr().err
    assert cli_main([*release[:-1], str(rel), "--drop_invalid"]) == 2  # the wrong folder: every image missing
    assert "no valid item left once the invalid ones are dropped" in capsys.readouterr().err
    assert cli_main([*release, "--reward_funcs", "distance_gausian"]) == 2  # before any model or data loads
    assert "unknown reward 'distance_gausian'" in capsys.readouterr().err
    assert cli_main([*release, "--split", "train", "--unparsable", "train_mean"]) == 2  # no other split's means
    assert "--unparsable train_mean counts an unreadable answer as its trait's mean training score, but" in \
        capsys.readouterr().err
    assert cli_main(["--checkpoint", no_model, "--image_root", str(images)]) == 2  # no --data: nothing to look in
    assert "--image_root is where the images of --data are" in capsys.readouterr().err
    assert cli_main([*release, "--n_boot", "0", "--blindness", "false"]) == 2  # weights that do not load: one line
    assert f"cannot load a model from {no_model}" in capsys.readouterr().err
    answers.write_text(json.dumps(["high 7.000", "low 11.000"]))
    assert cli_main(release) == 2
    err = capsys.readouterr().err
    assert "Refusing to evaluate on invalid data" in err
    assert "Funniness_messages.json[1]: Funniness score 11.0 outside [0, 10]" in err


def test_synthetic_items_are_asked_as_the_model_was_trained(tmp_path, caplog):
    from cogip.data import prompt_text
    from cogip.traits import all_traits
    from eval.checkpoint_eval import load_eval_data
    from eval.run import parse_args

    run = tmp_path / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    asked = {style: {t.prompt_text(style) for t in all_traits()} for style in ("full", "short")}

    def style_of(*argv):
        ds, _, desc = load_eval_data(parse_args([*argv, "--synthetic_n", "8"]))
        (style,) = (s for s, texts in asked.items() if {prompt_text(p) for p in ds["prompt"]} <= texts)
        assert desc.endswith(f"{style} prompts")
        return style

    checkpoint = ["--checkpoint", str(run / "checkpoint-4")]
    assert style_of(*checkpoint) == "short"  # no saved config: the synthetic benchmark's own
    (run / "cogalign_sft_config.yaml").write_text("output_dir: run\n")  # the stages' default: full
    assert style_of(*checkpoint) == style_of("--run_dir", str(run)) == "full"
    (run / "cogalign_sft_config.yaml").write_text("prompt_style: short\n")
    assert style_of(*checkpoint) == "short" and style_of(*checkpoint, "--prompt_style", "full") == "full"
    other = tmp_path / "other"  # compared with a model trained on the other wording: said, and the first one's used
    other.mkdir()
    (other / "cogalign_grpo_config.yaml").write_text("prompt_style: full\n")
    with caplog.at_level(logging.WARNING, logger="eval.checkpoint_eval"):
        assert style_of("--compare", str(run / "checkpoint-4"), str(other)) == "short"
    assert "trained on different questions" in caplog.text


def test_a_saved_dataset_of_images_traits_and_scores_is_evaluated_as_training_reads_it(tmp_path):
    from datasets import Dataset, DatasetDict
    from PIL import Image

    from cogip.data import prompt_text
    from cogip.traits import get_trait
    from eval.checkpoint_eval import load_eval_data
    from eval.run import parse_args

    rows = [{"image": Image.new("RGB", (8, 8), (40 * i, 0, 0)), "trait": t, "score": s}
            for i, (t, s) in enumerate([("aesthetics", 7.25), ("valence", -1.0), ("Funniness", 3.5)])]
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:2])}).save_to_disk(tmp_path / "hf")
    ds, means, desc = load_eval_data(parse_args(["--checkpoint", "m", "--data", str(tmp_path / "hf")]))
    assert ds["answer"] == ["high 7.250", "negative -1.000"] and desc.endswith("split test, full prompts")
    assert prompt_text(ds[0]["prompt"]) == get_trait("Aesthetics").prompt_text("full")
    assert means == {"Aesthetics": 7.25, "Emotional_Valence": -1.0, "Funniness": 3.5}


def test_image_max_pixels_bounds_every_evaluated_model_and_keys_its_predictions(tiny_model_dir):
    from eval.checkpoint_eval import _load, load_eval_data
    from eval.resume import prediction_basis
    from eval.run import parse_args

    given = ["--checkpoint", str(tiny_model_dir), "--synthetic_n", "4", "--device", "cpu"]
    args, bounded = parse_args(given), parse_args([*given, "--image_max_pixels", "1568"])
    assert _load(str(tiny_model_dir), args)[1].image_processor.size["longest_edge"] == 56 * 56
    assert _load(str(tiny_model_dir), bounded)[1].image_processor.size["longest_edge"] == 1568
    items = load_eval_data(args)[0]
    assert prediction_basis(args, items, "cpu") != prediction_basis(bounded, items, "cpu")  # not reused across
