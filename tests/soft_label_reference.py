"""The soft-label target of one score digit, written for reading, not speed: the reference that the vectorised loss
is tested against (tests/test_soft_label_loss.py) and timed against (bench/soft_label_loss.py)."""

from __future__ import annotations

import math

from sft_warmstart.soft_label_loss import SoftLabelConfig


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def reference_target(number: list[tuple[int, int]], j: int, span: float, sigma: float,
                      cfg: SoftLabelConfig) -> list[float]:
    """Target over 0..9 for the j-th digit of a number given as [(digit, place), ...]."""
    true, place = number[j]
    one_hot = [1.0 if d == true else 0.0 for d in range(10)]
    if cfg.kind == "ce":
        return one_hot
    if cfg.kind == "triangular":
        psi = [max(0.0, 1.0 - abs(d - true) * 10.0 ** place / (cfg.width * span)) for d in range(10)]
    else:
        magnitude = sum(d * 10.0 ** p for d, p in number)
        prefix = sum(d * 10.0 ** p for d, p in number[:j])
        half = 0.5 * 10.0 ** min(p for _, p in number)
        psi = []
        for d in range(10):
            low = prefix + d * 10.0 ** place - half
            high = low + 10.0 ** place
            psi.append(_phi((high - magnitude) / sigma) - _phi((low - magnitude) / sigma))
    total = sum(psi)
    return [(1 - cfg.eta) * o + cfg.eta * p / total for o, p in zip(one_hot, psi)]
