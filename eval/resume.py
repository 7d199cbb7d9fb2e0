"""Per-checkpoint results of a ``--run_dir`` evaluation, kept as each checkpoint finishes so that a rerun (after a
crash, or once training has saved more checkpoints) evaluates only what is new.

Each result is stored in ``<output_dir>/per_checkpoint/<name>.json`` with a key: a hash of every setting that
changes the figures, of the items (id, trait, human score), of the checkpoint's weight files (name, size, time
written), of whether the blindness check ran, and of the evaluation code. A result whose key differs is evaluated
again; the training-log join is always redone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from cogip.checkpoints import weight_files
from cogip.files import write_json_atomic
from eval.eval_args import EvalArgs
from eval.predict import Prediction

RESULTS_DIR = "per_checkpoint"
# fields that say where things are or how fast they run, not what the figures are
_NOT_IN_KEY = ("run_dir", "checkpoint", "compare", "output_dir", "include_final", "vision_cache_gb", "resume")


def result_key(args: EvalArgs, dataset, model_path: str | Path, blindness: bool) -> str:
    from cogip.demo_stages import code_version

    settings = {k: v for k, v in asdict(args).items() if k not in _NOT_IN_KEY}
    items = list(zip(dataset["id"], dataset["trait"], dataset["score"]))
    doc = [settings, items, weight_files(model_path), blindness, code_version(["eval", "cogip"])]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / RESULTS_DIR / f"{name}.json"


def load_result(out_dir: str | Path, name: str, key: str) -> tuple[dict, list[Prediction]] | None:
    """The stored result and predictions of checkpoint ``name``, or None when there is none with this key."""
    try:
        doc = json.loads(_path(out_dir, name).read_text())
        if doc.get("key") != key:
            return None
        return doc["result"], [Prediction.from_dict(p) for p in doc["predictions"]]
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or not one this code wrote
        return None


def save_result(out_dir: str | Path, name: str, key: str, result: dict, preds: list[Prediction]) -> None:
    write_json_atomic(_path(out_dir, name), {"key": key, "result": result,
                                             "predictions": [p.to_dict() for p in preds]})
