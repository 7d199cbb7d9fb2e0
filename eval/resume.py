"""Per-checkpoint results of a ``--run_dir`` evaluation, kept as each checkpoint finishes so that a rerun (after a
crash, or once training has saved more checkpoints) evaluates only what is new.

Each result is stored in ``<output_dir>/per_checkpoint/<name>.json`` with a key: a hash of every setting that
changes the figures, of the items (images included) and the train means, of the checkpoint's files
(:func:`cogip.checkpoints.model_identity`), of whether the blindness check ran, of the device, and of the code
(evaluation, rewards, torch and transformers versions). A result whose key differs is evaluated again; the
training-log join is always redone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from cogip.checkpoints import model_identity
from cogip.files import write_json_atomic
from eval.eval_args import EvalArgs
from eval.predict import Prediction

RESULTS_DIR = "per_checkpoint"
# fields that say where things are or how fast they run, not what the figures are
_NOT_IN_KEY = ("run_dir", "checkpoint", "compare", "output_dir", "include_final", "vision_cache_gb", "resume")


def result_key(args: EvalArgs, dataset, model_path: str | Path, blindness: bool, train_means: dict | None,
               device: str) -> str:
    from cogip.demo_stages import code_version

    settings = {k: v for k, v in asdict(args).items() if k not in _NOT_IN_KEY}
    doc = [settings, _items(dataset), train_means, model_identity(model_path), blindness, device,
           code_version(["eval", "cogip", "rewards"]), _reward_sources(args.reward_funcs or []), _versions()]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _items(dataset) -> str:
    """A hash of every item: id, trait, human score, prompt, and the image (its bytes, else its file's path, size
    and time written)."""
    from datasets import Image

    h = hashlib.sha256()
    columns = [dataset[c] for c in ("id", "trait", "score", "prompt") if c in dataset.column_names]
    h.update(json.dumps(list(zip(*columns)), default=str).encode())
    if "image" in dataset.column_names:
        for im in dataset.cast_column("image", Image(decode=False))["image"]:
            if im.get("bytes"):
                h.update(im["bytes"])
            else:
                st = Path(im["path"]).stat()
                h.update(f"{im['path']}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _reward_sources(specs: list[str]) -> list[str]:
    """The source of each ``module:function`` reward (the registry's own live in ``rewards/``, hashed above)."""
    import importlib.util

    out = []
    for spec in specs:
        found = importlib.util.find_spec(spec.split(":")[0]) if ":" in spec else None
        if found and found.origin and Path(found.origin).is_file():
            out.append(hashlib.sha256(Path(found.origin).read_bytes()).hexdigest())
    return out


def _versions() -> list[str]:
    import torch
    import transformers

    return [torch.__version__, transformers.__version__]


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
