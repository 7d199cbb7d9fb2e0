"""`cogalign demo` end to end: the real stages (synthetic benchmark, SFT, GRPO from the SFT output, evaluation of
every checkpoint, generation) on the tiny configs with a few steps and items; then a second run that skips every
stage, a third whose changed settings re-run exactly the stages that depend on them, and bad input that writes
nothing."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from cogip.cli import main as cogalign
from cogip.synthetic import TRAITS

REPO = Path(__file__).resolve().parents[1]
# The tiny configs as they are, cut down to a few steps and items.
TINY = ["--sft_max_steps", "2", "--grpo_max_steps", "2", "--n_test", "16", "--n_boot", "100",
        "--set", "sft.synthetic_train_size=16", "--set", "sft.save_steps=1",
        "--set", "sft.tiny_vision_pretrain_steps=0",  # covered in test_models; here it would draw 8,000 images
        "--set", "grpo.synthetic_train_size=8", "--set", "grpo.synthetic_eval_size=4",
        "--set", "generation.images_per_prompt=1", "--set", "generation.alphas=0 1",
        "--set", "generation.n_boot=100"]
STAGES = ["data", "sft", "eval_base", "eval_sft", "grpo", "eval_grpo", "generation"]


def _markers(out: Path) -> dict[str, float]:
    return {p.stem: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("demo") / "runs-demo"
    assert cogalign(["demo", "--output_dir", str(out), *TINY]) == 0
    yield out
    torch.set_num_threads(threads)


def test_summary_has_every_figure(demo):
    s = json.loads((demo / "summary.json").read_text())
    assert set(s["ceiling_srcc"]) == set(TRAITS) and all(0 < v <= 1 for v in s["ceiling_srcc"].values())
    assert s["ceiling_mean"] == pytest.approx(sum(s["ceiling_srcc"].values()) / 4)
    assert s["target"] == pytest.approx(0.8 * s["ceiling_mean"])
    for key in ("srcc_base", "srcc_sft", "srcc_grpo"):
        assert set(s[key]) == {*TRAITS, "mean"} and isinstance(s[key]["mean"], float)
    lo, hi = s["srcc_grpo_minus_sft_ci"]
    assert lo <= s["srcc_grpo_minus_sft"] <= hi
    assert s["srcc_grpo_minus_sft"] == pytest.approx(s["srcc_grpo"]["mean"] - s["srcc_sft"]["mean"])
    lo, hi = s["mae_per_range_grpo_minus_sft_ci"]
    assert 0 <= s["mae_per_range_sft"] <= 1 and 0 <= s["mae_per_range_grpo"] <= 1
    assert lo <= s["mae_per_range_grpo"] - s["mae_per_range_sft"] <= hi
    assert s["passed"] == {"grpo_mean_srcc_reaches_target": s["srcc_grpo"]["mean"] >= s["target"],
                           "grpo_beats_sft_ci_above_zero": s["srcc_grpo_minus_sft_ci"][0] > 0}
    assert s["minutes"] > 0 and {"torch", "transformers", "trl", "diffusers"} <= set(s["versions"])
    assert list(s["stages"]) == STAGES and all(r["status"] == "ran" and r["seconds"] > 0
                                               for r in s["stages"].values())
    # The SFT stage's evaluations ran as their own command lines in a child process, logged beside the markers.
    assert [k for k, r in s["stages"].items() if r.get("background")] == ["eval_base", "eval_sft"]
    assert "SRCC" in (demo / "stages" / "eval_sft.log").read_text()
    # The test split is disjoint from what the stages trained and validated on.
    assert s["test_split"]["n_items"] == 16 and s["test_split"]["overlap_with_training_items"] == 0

    # Every checkpoint was evaluated once (the runs' final saves are their last checkpoints), the summary's
    # figures are the evaluation's, and the GRPO run started from the SFT output.
    names = [(r["run"], r["name"]) for r in s["checkpoints"]]
    assert names == [("base", "tiny-base"), ("sft", "checkpoint-1"), ("sft", "checkpoint-2"),
                     ("grpo", "checkpoint-2")]
    grpo_eval = json.loads((demo / "eval" / "grpo" / "metrics.json").read_text())["checkpoints"][-1]
    for t in TRAITS:
        assert s["srcc_grpo"][t] == grpo_eval["metrics"]["traits"][t]["srcc"]
    assert yaml.safe_load((demo / "grpo" / "cogalign_grpo_config.yaml").read_text())["model_name_or_path"] == str(
        demo / "sft")
    assert (demo / "grpo" / "correlation_log.jsonl").read_text().count("\n") >= 2


def test_reports_are_complete_and_self_contained(demo):
    md = (demo / "report.md").read_text()
    assert all(t in md for t in TRAITS) and "Blindness check" in md and "Judge table" in md
    assert "| eval_sft | ran, in a second process beside the stages after it |" in md
    assert "while training on 4 validation items (about 1 per trait" in md  # grpo.synthetic_eval_size=4
    lo, hi = json.loads((demo / "summary.json").read_text())["srcc_grpo_minus_sft_ci"]
    assert ("Why GRPO may add little here" in md) is (lo <= 0 <= hi)  # the reason, shown when GRPO ties with SFT
    assert not lo <= 0 <= hi or f"test items give an interval {hi - lo:.3f} wide" in md
    page = (demo / "report.html").read_text()
    grids = list((demo / "generation" / "grids").glob("*.png"))
    assert len(grids) == 4
    # Training curves, the two eval curves, the alpha curve and every grid, embedded.
    assert page.count('src="data:image/png;base64,') == 4 + len(grids)
    assert not re.search(r"""(?:src|href)\s*=\s*(?!["']?data:)""", page, flags=re.I)
    assert not re.search(r"https?://|<script|<link", page, flags=re.I)
    assert all(t in page for t in TRAITS)


def test_second_run_skips_and_changed_settings_rerun_what_depends_on_them(demo, capsys):
    before = _markers(demo)
    checkpoint = demo / "grpo" / "checkpoint-2" / "model.safetensors"
    trained = checkpoint.stat().st_mtime_ns
    capsys.readouterr()
    assert cogalign(["demo", "--output_dir", str(demo), *TINY]) == 0
    s = json.loads((demo / "summary.json").read_text())
    assert {r["status"] for r in s["stages"].values()} == {"skipped"}
    assert _markers(demo) == before
    assert "min this run (the skipped stages' own times are in summary.json" in capsys.readouterr().out

    # More test items: the benchmark and the evaluations run again, saying why; training and generation do not.
    capsys.readouterr()
    assert cogalign(["demo", "--output_dir", str(demo), *TINY, "--n_test", "20"]) == 0
    printed = capsys.readouterr().out
    assert "--n_test '16' -> '20': starting data/ over" in printed
    assert "so will the stages built on it: eval_base, eval_sft, eval_grpo" in printed
    s = json.loads((demo / "summary.json").read_text())
    status = {k: r["status"] for k, r in s["stages"].items()}
    assert status == {"data": "ran", "sft": "skipped", "grpo": "skipped", "eval_base": "ran", "eval_sft": "ran",
                      "eval_grpo": "ran", "generation": "skipped"}
    assert s["test_split"]["n_items"] == 20 and checkpoint.stat().st_mtime_ns == trained

    # A stage of its own that fails: one error line naming the stage and where its traceback is, exit 1, and no
    # report of the run before beside the outputs of this one.
    bad = demo / "bad_prompts.json"
    bad.write_text("{not json")
    capsys.readouterr()
    assert cogalign(["demo", "--output_dir", str(demo), *TINY, "--n_test", "20", "--set",
                     f"generation.prompt_files={bad}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cogalign demo: error: stage generation failed: ") and "Traceback" not in err
    assert "bad_prompts.json" in err and (demo / "stages" / "generation.traceback.txt").exists()
    assert not (demo / "summary.json").exists() and not (demo / "report.html").exists()


def test_stage_markers_decide_skip_resume_and_restart(tmp_path):
    from cogip.demo_stages import StageBook, fingerprint, stage_inputs

    book, folder = StageBook(tmp_path), tmp_path / "grpo"
    fp = fingerprint(stage_inputs(["--max_steps", "4"]))
    assert book.decide("grpo", fp, folder, resumable=True) == "new"
    folder.mkdir()
    (folder / "checkpoint-2").mkdir()
    assert book.decide("grpo", fp, folder, resumable=True) == "restart"  # outputs no marker accounts for
    book.start("grpo", fp)  # killed after this: a training stage resumes, any other starts over
    assert book.decide("grpo", fp, folder, resumable=True) == "resume"
    assert book.decide("grpo", fp, folder, resumable=False) == "restart"
    book.finish("grpo", fp, seconds=1.0)
    assert book.decide("grpo", fp, folder, resumable=True) == "skip"
    (folder / "checkpoint-2").rmdir()  # its outputs removed since: run again, not skipped
    assert book.decide("grpo", fp, folder, resumable=True) == "restart"
    (folder / "checkpoint-2").mkdir()
    assert book.decide("grpo", fingerprint(stage_inputs(["--max_steps", "8"])), folder, resumable=True) == "restart"
    assert fingerprint(stage_inputs(["a"], upstream={"sft": "x"})) != fingerprint(stage_inputs(["a"],
                                                                                             upstream={"sft": "y"}))


def test_a_stage_that_starts_over_says_why(tmp_path):
    from cogip.demo_stages import StageBook, stage_inputs, what_changed

    config = tmp_path / "grpo.yaml"
    config.write_text("max_steps: 4\n")
    old = stage_inputs(["--config", str(config), "--n_test", "16", "--alphas", "0", "1"], [config], {"sft": "a"}, "c")
    book = StageBook(tmp_path)
    book.start("grpo", "fp", old)
    book.finish("grpo", "fp", seconds=1.0)  # the inputs stay in the marker
    assert book.read("grpo")["inputs"] == old and book.read("grpo")["status"] == "done"
    config.write_text("max_steps: 8\n")
    new = stage_inputs(["--config", str(config), "--n_test", "20", "--seed=1"], [config], {"sft": "b"}, "d")
    assert what_changed(old, new) == ["--n_test '16' -> '20'", "--alphas removed", "--seed added",
                                      "config grpo.yaml changed", "its code changed", "sft ran again"]
    assert what_changed(old, old) == [] and what_changed(None, new) == []


def test_no_stage_builds_on_one_that_runs_in_the_background():
    from cogip.demo import STAGES

    background = {s.name for s in STAGES if s.background}
    assert background and not any(background & set(s.upstream) for s in STAGES)


def test_a_failed_background_stage_stops_the_queue_and_names_its_log(tmp_path):
    from cogip.demo_stages import Background, BackgroundStageError, StageBook

    book = StageBook(tmp_path)
    runner = Background(book)
    python = [sys.executable, "-c"]
    runner.submit("ok", "fp1", [*python, "print('fine')"], tmp_path / "ok.log")
    runner.submit("bad", "fp2", [*python, "import sys; print('the reason'); sys.exit(3)"], tmp_path / "bad.log")
    runner.submit("after", "fp3", [*python, "print('never')"], tmp_path / "after.log")
    with pytest.raises(BackgroundStageError, match=r"(?s)stage bad exited with code 3.*bad\.log.*the reason"):
        runner.wait()
    assert book.read("ok")["status"] == "done" and runner.records["ok"]["seconds"] > 0
    assert book.read("bad")["status"] == "running"  # so the next demo runs it again
    assert book.read("after")["status"] == "running" and not (tmp_path / "after.log").exists()  # never started

    runner = Background(book)  # a program that is not there fails its stage the same way
    runner.submit("missing", "fp4", [str(tmp_path / "no-such-program")], tmp_path / "missing.log")
    with pytest.raises(BackgroundStageError, match=r"(?s)stage missing could not start.*could not start"):
        runner.wait()
    runner = Background(book)  # and so does a log that cannot be written
    runner.submit("no_log", "fp5", [*python, "print('fine')"], tmp_path)
    with pytest.raises(BackgroundStageError, match=r"stage no_log failed to run \(IsADirectoryError"):
        runner.wait()


def test_a_stopped_demo_leaves_its_background_stages_to_run_again(tmp_path):
    import time

    from cogip.demo_stages import Background, BackgroundStageError, StageBook

    book = StageBook(tmp_path)
    book.finish("queued", "old settings", seconds=1.0)  # done once, with other settings, its folder since emptied
    runner = Background(book)
    runner.submit("slow", "fp1", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "slow.log")
    runner.submit("queued", "fp2", [sys.executable, "-c", "print('never')"], tmp_path / "queued.log")
    # Both are marked as started with their new settings from the moment they are queued, so a demo stopped now
    # reruns them both next time (the old "done" of the queued one no longer matches).
    assert book.read("queued") == {"stage": "queued", "fingerprint": "fp2", "status": "running"}
    for _ in range(100):
        if runner._proc is not None:
            break
        time.sleep(0.05)
    t0 = time.time()
    runner.stop()
    assert time.time() - t0 < 15 and runner._proc.poll() is not None  # the sleeping child was ended
    with pytest.raises(BackgroundStageError, match="stage slow exited with code"):
        runner.wait()
    assert book.decide("slow", "fp1", tmp_path / "slow", resumable=False) == "restart"
    assert book.decide("queued", "fp2", tmp_path / "queued", resumable=False) == "restart"
    assert not (tmp_path / "queued.log").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows: the demo folder is not locked there")
def test_a_demo_folder_in_use_is_refused_even_by_a_child_its_demo_left_running(tmp_path, capsys, monkeypatch):
    import time

    import cogip.demo
    from cogip.demo_stages import Background, OutputInUse, OutputLock, StageBook

    def no_stages(*args, **kwargs):
        raise AssertionError("the demo ran its stages in a folder in use")

    monkeypatch.setattr(cogip.demo, "_run_stages", no_stages)  # a lock that fails to hold fails here, at once
    started = tmp_path / "started"
    with OutputLock(tmp_path) as lock:
        with pytest.raises(OutputInUse, match="is in use"), OutputLock(tmp_path):
            pass
        runner = Background(StageBook(tmp_path), keep_fds=lock.fds)
        runner.submit("eval", "fp", [sys.executable, "-c", f"import pathlib, time; pathlib.Path({str(started)!r})"
                                     ".touch(); time.sleep(120)"], tmp_path / "eval.log")
        for _ in range(400):
            if started.exists():
                break
            time.sleep(0.05)
        assert started.exists()
    try:
        # The demo has let go (as a killed one would), its child still holds the folder: a new demo is turned away
        # before it empties anything (--fresh would have emptied stages/, where the child's marker is).
        assert cogalign(["demo", "--output_dir", str(tmp_path), "--fresh"]) == 1
        assert "is in use" in capsys.readouterr().err
        assert (tmp_path / "stages" / "eval.json").exists()
    finally:
        runner.stop()
    with OutputLock(tmp_path):  # free once the child is gone
        pass


@pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")
def test_a_file_system_without_flock_runs_the_demo_unlocked_and_says_so(tmp_path, monkeypatch):
    import errno
    import fcntl

    from cogip.demo_stages import OutputLock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock .*No locks available"), OutputLock(tmp_path) as lock:
        assert lock.fds == ()  # not "in use": nothing holds it


def test_background_children_run_this_checkout(tmp_path):
    import os

    from cogip.demo import _child_env, make_parser, plan_demo

    env = _child_env(plan_demo(make_parser().parse_args(["--output_dir", str(tmp_path), "--threads", "2"])))
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO) and env["OMP_NUM_THREADS"] == "2"
    assert env["TQDM_MININTERVAL"] == os.environ.get("TQDM_MININTERVAL", "10")  # a log line every 10 s, not per batch


def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cogalign(["demo", "--output_dir", str(out), "--sft_config", str(tmp_path / "missing.yaml")]) == 2
    assert "SFT config not found" in capsys.readouterr().err
    assert cogalign(["demo", "--output_dir", str(out), "--set", "grpo.no_such_field=1"]) == 2
    assert "no_such_field" in capsys.readouterr().err
    assert cogalign(["demo", "--output_dir", str(out), "--set", "grpo"]) == 2
    assert cogalign(["demo", "--output_dir", str(out), "--set", "grpo.model_name_or_path=x"]) == 2
    assert "chain the stages" in capsys.readouterr().err
    release = yaml.safe_load((REPO / "configs" / "tiny" / "sft.yaml").read_text()) | {"dataset": "release",
                                                                                 "dataset_path": str(tmp_path)}
    (tmp_path / "release.yaml").write_text(yaml.safe_dump(release))
    assert cogalign(["demo", "--output_dir", str(out), "--sft_config", str(tmp_path / "release.yaml")]) == 2
    assert "synthetic benchmark" in capsys.readouterr().err
    # more SFT items without moving GRPO's start: the two stages would share items 2,000-3,999
    assert cogalign(["demo", "--output_dir", str(out), "--set", "sft.synthetic_train_size=4000"]) == 2
    assert "overlap SFT's (0-3999)" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()  # a folder holding files of its own: the demo would empty data/, eval/, generation/ ... in it
    (out / "generation").mkdir()
    (out / "generation" / "mine.py").write_text("x = 1\n")
    assert cogalign(["demo", "--output_dir", str(out)]) == 2
    assert "holds generation, which no demo wrote" in capsys.readouterr().err
    assert (out / "generation" / "mine.py").exists()
    other = tmp_path / "other"  # a folder of other files, none of them the demo's: taken
    other.mkdir()
    (other / "demo.log").write_text("")  # what `cogalign demo ... | tee <folder>/demo.log` makes first
    assert cogalign(["demo", "--output_dir", str(other), "--n_boot", "5"]) == 2
    assert "--n_boot" in capsys.readouterr().err
    (out / "stages").mkdir()  # a demo folder (one an older demo wrote before it kept a lock file): taken up
    assert cogalign(["demo", "--output_dir", str(out), "--n_boot", "5"]) == 2 and "--n_boot" in capsys.readouterr().err


def test_threads_given_to_the_demo_reach_the_vision_pretraining_and_do_not_restart_it(tmp_path):
    from cogip.demo import _without_speed_flags, make_parser, plan_demo

    default = plan_demo(make_parser().parse_args(["--output_dir", str(tmp_path)]))
    assert "--tiny_vision_pretrain_threads" not in default.argv["sft"]  # the cores it may use, up to 4
    one = plan_demo(make_parser().parse_args(["--output_dir", str(tmp_path), "--threads", "1"]))
    assert one.argv["sft"][one.argv["sft"].index("--tiny_vision_pretrain_threads") + 1] == "1"
    assert _without_speed_flags(one.argv["sft"]) == default.argv["sft"]  # so a rerun with --threads 1 resumes


def test_a_config_given_to_a_stage_counts_in_its_fingerprint_by_content(tmp_path):
    from cogip.demo import STAGES, make_parser, plan_demo, stage_argv, stage_fingerprint

    config = tmp_path / "eval.yaml"
    config.write_text("# eval settings\nn_boot: 200\n")
    plan = plan_demo(make_parser().parse_args(["--output_dir", str(tmp_path / "out"), "--set",
                                               f"eval.config={config}"]))
    stage = {s.name: s for s in STAGES}["eval_sft"]
    upstream = dict.fromkeys(stage.upstream, "x")
    before = stage_fingerprint(stage, stage_argv(stage, plan), upstream)
    assert before == stage_fingerprint(stage, stage_argv(stage, plan), upstream)
    config.write_text("# eval settings\nn_boot: 300\n")
    assert stage_fingerprint(stage, stage_argv(stage, plan), upstream) != before
    # so does a text file a flag or a config names (a prompt set given with --set, or in the config)
    prompts = tmp_path / "prompts.json"
    prompts.write_text('{"trait": "Funniness", "prompts": ["a red apple"]}')
    (tmp_path / "gen.yaml").write_text((REPO / "configs" / "tiny" / "generation.yaml").read_text()
                                       + f"prompt_files: [{prompts}]\n")
    gen = {s.name: s for s in STAGES}["generation"]
    for flags in (["--set", f"generation.prompt_files={prompts}"],
                  ["--generation_config", str(tmp_path / "gen.yaml")]):
        plan = plan_demo(make_parser().parse_args(["--output_dir", str(tmp_path / "out"), *flags]))
        argv = plan.argv["generation"]
        prompts.write_text('{"trait": "Funniness", "prompts": ["a red apple"]}')
        before = stage_fingerprint(gen, argv, dict.fromkeys(gen.upstream, "x"))
        prompts.write_text('{"trait": "Funniness", "prompts": ["a lonely lighthouse"]}')
        assert stage_fingerprint(gen, argv, dict.fromkeys(gen.upstream, "x")) != before
