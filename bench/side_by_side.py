"""What the side-by-side benches share: the model they need and the order of their arms."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path


def require_model(path: str) -> str:
    """``path`` made absolute, or exit with how to make the tiny SFT model the benches default to."""
    if not (Path(path) / "config.json").exists():
        sys.exit(f"{path}: no model there; run python sft_warmstart/train_sft.py --config configs/tiny/sft.yaml "
                 "first (or pass --model)")
    return str(Path(path).resolve())


def alternating(rounds: int) -> Iterator[tuple[int, bool]]:
    """(round, arm on) for both arms of every round, off first in even rounds and on first in odd ones, so that
    neither arm always runs on the machine as the other left it."""
    for r in range(rounds):
        for on in (False, True) if r % 2 == 0 else (True, False):
            yield r, on
