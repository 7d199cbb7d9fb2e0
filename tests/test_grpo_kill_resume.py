"""A GRPO run killed with SIGKILL resumes from its last complete checkpoint and never loads a half-written one.

Real processes: ``python rl/train_grpo.py --config configs/tiny/grpo.yaml`` is started, killed (the whole process
group) as soon as its first complete checkpoint exists, given a fake half-saved checkpoint with a higher step, and
started again with the same command.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cogip.checkpoints import is_complete_checkpoint, last_complete_checkpoint

ROOT = Path(__file__).parents[1]
MAX_STEPS = 8


def _command(out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "rl" / "train_grpo.py"), "--config", str(ROOT / "configs/tiny/grpo.yaml"),
            "--output_dir", str(out), "--max_steps", str(MAX_STEPS), "--save_steps", "2", "--save_total_limit", "10",
            "--synthetic_eval_size", "0", "--max_completion_length", "8", "--logging_steps", "1",
            "--synthetic_train_size", "64"]


def _start(out: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:  # a file, not a pipe: nobody reads while we poll
        return subprocess.Popen(_command(out), cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _logged_steps(text: str) -> int:
    return text.count("{'loss':")  # the Trainer prints one such dict per step (--logging_steps 1)


def test_sigkill_then_resume_from_last_complete_checkpoint(tmp_path):
    out, log1, log2 = tmp_path / "run", tmp_path / "first.log", tmp_path / "second.log"

    # 1. Train until the first complete checkpoint appears, then SIGKILL the process group mid-run.
    proc = _start(out, log1)
    try:
        deadline = time.monotonic() + 600
        while not is_complete_checkpoint(out / "checkpoint-2"):
            assert proc.poll() is None, f"the run ended before its first checkpoint:\n{log1.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no checkpoint after 600 s:\n{log1.read_text()[-3000:]}"
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    resume_from = last_complete_checkpoint(out)
    done = json.loads((Path(resume_from) / "trainer_state.json").read_text())["global_step"]
    assert 2 <= done < MAX_STEPS

    # 2. What a kill while saving leaves: a higher-step folder with part of the weights and no trainer_state.json.
    partial = out / "checkpoint-999"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x80\x00\x00\x00")
    assert last_complete_checkpoint(out) == resume_from

    # 3. The same command again: it resumes from the last complete checkpoint and trains only the missing steps.
    proc = _start(out, log2)
    assert proc.wait(timeout=600) == 0, log2.read_text()[-3000:]
    text = log2.read_text()
    assert f"Resuming from {resume_from}" in text
    # set aside, so that checkpoint rotation does not take it for the newest checkpoint and delete complete ones
    assert f"Set aside an incomplete checkpoint (killed while saving): {out / 'incomplete-checkpoint-999'}" in text
    assert not partial.exists()
    partial = out / "incomplete-checkpoint-999"
    assert "missing keys" not in text  # every weight came back (the Trainer's own loader restores none: rl/trainer)
    assert _logged_steps(text) == MAX_STEPS - done
    assert sorted(p.name for p in partial.iterdir()) == ["model.safetensors"]  # left as it was

    final = out / f"checkpoint-{MAX_STEPS}"
    assert last_complete_checkpoint(out) == str(final)
    state = json.loads((final / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS
    # one training log per step across both runs: nothing repeated, nothing skipped
    assert [row["step"] for row in state["log_history"] if "loss" in row] == list(range(1, MAX_STEPS + 1))
    assert (out / "model.safetensors").exists()


def test_an_incomplete_checkpoint_is_set_aside_so_that_rotation_keeps_the_complete_ones(tmp_path):
    from transformers.trainer_utils import rotate_checkpoints

    from cogip.checkpoints import set_aside_incomplete

    def complete(step):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))

    complete(2)  # resumed from here, after a kill that left checkpoint-999 half-written
    (tmp_path / "checkpoint-999").mkdir()
    (tmp_path / "checkpoint-999" / "model.safetensors").write_bytes(b"\x80")
    assert set_aside_incomplete(tmp_path) == [tmp_path / "incomplete-checkpoint-999"]
    complete(4)  # the resumed run's first save, then the Trainer's rotation (save_total_limit 1)
    rotate_checkpoints(str(tmp_path), save_total_limit=1, use_mtime=True)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")  # it kept checkpoint-999 instead
    assert (tmp_path / "incomplete-checkpoint-999" / "model.safetensors").exists()  # kept, not deleted
