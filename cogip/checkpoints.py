"""Finding the checkpoints a run can resume from.

The HF ``Trainer`` writes ``checkpoint-<step>/`` in this order: weights, optimizer, scheduler, RNG state and, last,
``trainer_state.json``. A folder whose ``trainer_state.json`` is missing or unreadable is what a run killed while
saving leaves behind; it is never picked up (the DESIGN rule: resume from the last *complete* checkpoint).

>>> last_complete_checkpoint("/nonexistent") is None
True
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TRAINER_STATE = "trainer_state.json"
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


def is_complete_checkpoint(path: str | Path) -> bool:
    """True when ``path`` holds a ``trainer_state.json`` that parses and records a global step."""
    state = Path(path) / TRAINER_STATE
    try:
        with open(state) as f:
            return isinstance(json.load(f).get("global_step"), int)
    except (OSError, ValueError, AttributeError):
        # Missing, half-written (killed during the write) or not a JSON object.
        return False


def list_complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete ``checkpoint-<step>`` folders under ``output_dir``, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _CHECKPOINT_DIR.match(child.name)
        if m and child.is_dir() and is_complete_checkpoint(child):
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The highest-step complete checkpoint under ``output_dir`` as a string (what ``resume_from_checkpoint``
    takes), or None when there is none."""
    done = list_complete_checkpoints(output_dir)
    return str(done[-1]) if done else None


def resume_point(training_args, auto_resume: bool = True) -> str | None:
    """Where a training run starts from: ``resume_from_checkpoint`` when given, else (with ``auto_resume``) the last
    complete checkpoint in ``output_dir``, else None (a fresh start)."""
    if training_args.resume_from_checkpoint is not None:
        return training_args.resume_from_checkpoint
    return last_complete_checkpoint(training_args.output_dir) if auto_resume else None
