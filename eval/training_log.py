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


def read_log_history(run_dir: str | Path) -> list[dict]:
    """The longest ``log_history`` among the run folder's and its checkpoints' ``trainer_state.json``."""
    run_dir = Path(run_dir)
    best: list[dict] = []
    for folder in [run_dir, *reversed(list_complete_checkpoints(run_dir))]:
        try:
            hist = json.loads((folder / "trainer_state.json").read_text()).get("log_history", [])
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(hist, list) and len(hist) > len(best):
            best = [e for e in hist if isinstance(e, dict) and isinstance(e.get("step"), int)]
    return best


def read_correlation_log(run_dir: str | Path, split: str | None = None) -> list[dict]:
    """Entries of ``correlation_log.jsonl`` (of ``split`` when given and they name one; a run scores one split);
    a torn last line from a killed run is skipped."""
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
            out.append(e)
    return sorted(out, key=lambda e: e["step"])


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def training_at_step(history: list[dict], correlation_log: list[dict], step: int | None,
                     previous_step: int | None = None) -> dict:
    """Training figures for the checkpoint saved at ``step``: means of the logged reward(s) and loss over the
    entries since the previous checkpoint (one logged batch is too noisy to compare), and the last correlation
    log entry at or before ``step``."""
    if step is None:
        return {}
    lo = -1 if previous_step is None else previous_step
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
