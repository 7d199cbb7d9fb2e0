"""Per-checkpoint results of a ``--run_dir`` evaluation, kept as each checkpoint finishes so that a rerun (after a
crash, or once training has saved more checkpoints) evaluates only what is new.

Each result is stored in ``<output_dir>/per_checkpoint/<name>.json`` under a key: a hash of the evaluation's
:func:`run_basis` (every setting that changes the figures, every column of every item and its image, the train
means, the device, and the code: eval, rewards, cogip, any ``module:function`` reward, torch and transformers
versions) and of the checkpoint's files (:func:`cogip.stored.model_identity`). A result whose key differs is
evaluated again; the training-log join is always redone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from cogip.stored import code_version, digest, model_identity, read_keyed, write_keyed
from eval.eval_args import EvalArgs
from eval.predict import Prediction

RESULTS_DIR = "per_checkpoint"
# fields that say where things are, how fast they run, or which checks run on which model, not what a figure is
_NOT_IN_KEY = ("run_dir", "checkpoint", "compare", "output_dir", "include_final", "vision_cache_gb", "resume",
               "blindness", "blindness_models")


def run_basis(args: EvalArgs, dataset, train_means: dict | None, device: str) -> str:
    """A hash of what every checkpoint's result depends on besides the checkpoint (computed once per run)."""
    import torch
    import transformers

    settings = {k: v for k, v in asdict(args).items() if k not in _NOT_IN_KEY}
    return digest([settings, _items(dataset), train_means, device, code_version(["eval", "cogip", "rewards"]),
                   _reward_sources(args.reward_funcs or []), torch.__version__, transformers.__version__])


def result_key(basis: str, model_path: str | Path) -> str:
    return digest([basis, model_identity(model_path)])


def _items(dataset) -> str:
    """A hash of every item: every column (what the held-out rewards see too), and the image (its bytes, else its
    file's path, size and time written)."""
    from datasets import Image

    h = hashlib.sha256()
    images = [c for c in ("image", "images") if c in dataset.column_names]
    columns = [c for c in dataset.column_names if c not in images]
    h.update(json.dumps([columns, *(dataset[c] for c in columns)], default=str).encode())
    for c in images:
        values = dataset[c] if not isinstance(dataset.features[c], Image) else \
            dataset.cast_column(c, Image(decode=False))[c]
        for im in values:
            if isinstance(im, dict) and im.get("bytes"):
                h.update(im["bytes"])
            elif isinstance(im, dict) and im.get("path"):
                try:
                    st = Path(im["path"]).stat()
                    h.update(f"{im['path']}\0{st.st_size}\0{st.st_mtime_ns}".encode())
                except OSError:  # prediction will say what is wrong with it
                    h.update(f"{im['path']}\0missing".encode())
            else:
                h.update(repr(im).encode())
    return h.hexdigest()


def _reward_sources(specs: list[str]) -> list[str]:
    """The source of each ``module:function`` reward (the registry's own live in ``rewards/``)."""
    import importlib.util

    out = []
    for spec in specs:
        found = importlib.util.find_spec(spec.split(":")[0]) if ":" in spec else None
        if found and found.origin and Path(found.origin).is_file():
            out.append(hashlib.sha256(Path(found.origin).read_bytes()).hexdigest())
    return out


def _path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / RESULTS_DIR / f"{name}.json"


def load_result(out_dir: str | Path, name: str, key: str, blindness: bool) -> tuple[dict, list[Prediction]] | None:
    """The stored result and predictions of checkpoint ``name`` under ``key``, or None when there is none. A
    result stored without the blindness check does not serve a run that wants it; one stored with it serves a run
    that does not, without it."""
    doc = read_keyed(_path(out_dir, name), key)
    try:
        result, preds = doc["result"], [Prediction.from_dict(p) for p in doc["predictions"]]
    except (TypeError, KeyError, AttributeError):  # none stored, or not by this code
        return None
    if blindness and "blindness" not in result:
        return None
    if not blindness:
        result.pop("blindness", None)
    return result, preds


def save_result(out_dir: str | Path, name: str, key: str, result: dict, preds: list[Prediction]) -> None:
    write_keyed(_path(out_dir, name), key, {"result": result, "predictions": [p.to_dict() for p in preds]})
