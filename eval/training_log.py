"""What the training run itself logged, joined to each evaluated checkpoint by step.

Two sources, each optional: the HF Trainer's ``log_history`` (``trainer_state.json`` in the run folder or its
newest checkpoint; GRPO entries carry ``reward`` and ``rewards/<name>/mean``, SFT entries ``loss``) and the GRPO
stage's ``correlation_log.jsonl`` (one JSON object a line: ``step``, ``split``, ``<Trait>/srcc``, ``mean_srcc``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from cogip.checkpoints import list_complete_checkpoints

_REWARD_KEY = re.compile(r"^rewards/(.+)/mean$")


def _trainer_states(run_dir: Path) -> list[dict]:
    """The ``trainer_state.json`` of the run folder and of its checkpoints, newest first (unreadable ones left out)."""
    states = []
    for folder in [run_dir, *reversed(list_complete_checkpoints(run_dir))]:
        try:
            state = json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict):
            states.append(state)
    return states


def read_log_history(run_dir: str | Path) -> list[dict]:
    """The longest ``log_history`` among the run folder's and its checkpoints' ``trainer_state.json``."""
    best: list[dict] = []
    for state in _trainer_states(Path(run_dir)):
        hist = state.get("log_history", [])
        if isinstance(hist, list) and len(hist) > len(best):
            best = [e for e in hist if isinstance(e, dict) and isinstance(e.get("step"), int)]
    return best


def read_prompt_style(model: str) -> str | None:
    """The prompt style (full / short) ``model`` was trained with, from its run's saved training config
    (``cogalign_{grpo,sft}_config.yaml``, in the model's folder or the run folder above a checkpoint-N; a config
    without the field means the stages' default, full). None without one (a hub id, a bare folder)."""
    import yaml

    from sft_warmstart.model_card import CONFIG_FILE, GRPO_CONFIG_FILE

    for folder in (Path(model), Path(model).parent):
        for name in (GRPO_CONFIG_FILE, CONFIG_FILE):
            try:
                config = yaml.safe_load((folder / name).read_text())
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(config, dict):
                return config.get("prompt_style", "full")
    return None


def read_save_steps(run_dir: str | Path) -> int | None:
    """The run's ``save_steps`` as its Trainer recorded it, or None."""
    for state in _trainer_states(Path(run_dir)):
        if isinstance(state.get("save_steps"), int) and state["save_steps"] > 0:
            return state["save_steps"]
    return None


def read_correlation_log(run_dir: str | Path, split: str | None = None) -> list[dict]:
    """Entries of ``correlation_log.jsonl`` (of ``split`` when given and they name one; a run scores one split),
    by step. A torn last line from a killed run is skipped, and so are the lines a resumed run logged again: where
    the steps go back, the lines at or past that step came from training that the resume threw away."""
    path = Path(run_dir) / "correlation_log.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if not isinstance(e, dict) or not isinstance(e.get("step"), int):
            continue
        if split is None or e.get("split", split) == split:
            out = [kept for kept in out if kept["step"] < e["step"]] + [e]
    return out


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def training_at_step(history: list[dict], correlation_log: list[dict], step: int | None,
                     previous_step: int | None = None, save_steps: int | None = None) -> dict:
    """Training figures for the checkpoint saved at ``step``: means of the logged reward(s) and loss over the
    entries since the previous checkpoint (one logged batch is too noisy to compare; for the first one evaluated,
    the ``save_steps`` before it, as the checkpoints before it may have been deleted), and the last correlation
    log entry at or before ``step``."""
    if step is None:
        return {}
    lo = previous_step if previous_step is not None else (step - save_steps if save_steps else -1)
    window = [e for e in history if lo < e["step"] <= step and "eval_loss" not in e]
    names = sorted({m.group(1) for e in window for k in e if (m := _REWARD_KEY.match(k))})
    out = {
        "log_steps": [window[0]["step"], window[-1]["step"]] if window else None,
        "reward": _mean([e.get("reward") for e in window]),
        "rewards": {n: _mean([e.get(f"rewards/{n}/mean") for e in window]) for n in names},
        "loss": _mean([e.get("loss") for e in window]),
    }
    corr = [e for e in correlation_log if e["step"] <= step]
    if corr:
        last = corr[-1]
        out["correlation"] = {"step": last["step"], "mean_srcc": last.get("mean_srcc"),
                              "train_reward": last.get("train_reward"),
                              "srcc": {k[: -len("/srcc")]: v for k, v in last.items() if k.endswith("/srcc")}}
    return out
