"""Per-checkpoint predictions of a ``--run_dir`` evaluation, kept as each checkpoint finishes so that a rerun (after a
crash, once training has saved more checkpoints, or with other scoring settings) predicts only what is new.

Each checkpoint's predictions are stored in ``<output_dir>/per_checkpoint/<name>.json`` under a key: a hash of
:func:`prediction_basis` (the settings that change what the model answers, every column of every item and its
image, the device, and the code of eval and cogip with the torch and transformers versions) and of the
checkpoint's files (:func:`cogip.stored.model_identity`). The blindness check's predictions (blank and shuffled
images) are stored beside them under a key that adds the items it covers and the seed of the shuffle. The figures
are always computed again from the predictions, which takes a second: the bootstrap, the unparsable policy, the
held-out rewards, the train means and the blindness tolerance can change without predicting anything again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cogip.stored import code_version, digest, model_identity, read_keyed, write_keyed
from eval.eval_args import EvalArgs
from eval.predict import Prediction

RESULTS_DIR = "per_checkpoint"


def prediction_basis(args: EvalArgs, dataset, device: str) -> str:
    """A hash of what every checkpoint's predictions depend on besides the checkpoint (computed once per run)."""
    import torch
    import transformers

    settings = {k: getattr(args, k) for k in ("decoding", "batch_size", "max_new_tokens", "dtype", "image_max_pixels")}
    if args.decoding == "sample":  # the only decoding that draws anything
        settings |= {k: getattr(args, k) for k in ("num_samples", "temperature", "seed")}
    return digest([settings, _items(dataset), device, code_version(["eval", "cogip"]), torch.__version__,
                   transformers.__version__])


def prediction_key(basis: str, model_path: str | Path) -> str:
    return digest([basis, model_identity(model_path)])


def blindness_key(args: EvalArgs, key: str, n_items: int) -> str:
    """The key of the blindness check's predictions: the original ones' ``key``, the items it re-scores and the
    seed that shuffles the images."""
    return digest([key, n_items, args.seed])


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


def _path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / RESULTS_DIR / f"{name}.json"


def _predictions(rows) -> list[Prediction] | None:
    try:
        return [Prediction.from_dict(p) for p in rows]
    except (TypeError, KeyError, AttributeError):  # none stored, or not by this code
        return None


def load_predictions(out_dir: str | Path, name: str, key: str,
                     blind_key: str | None = None) -> tuple[list[Prediction] | None, dict | None]:
    """The stored predictions of checkpoint ``name`` under ``key`` (None when there are none) and, under
    ``blind_key``, those of its blindness check per condition (None when there are none or none is asked for)."""
    doc = read_keyed(_path(out_dir, name), key) or {}
    preds = _predictions(doc.get("predictions"))
    blind = doc.get("blindness")
    altered = None
    if preds is not None and blind_key is not None and isinstance(blind, dict) and blind.get("key") == blind_key:
        altered = {cond: _predictions(blind.get(cond)) for cond in ("blank", "shuffled")}
        altered = None if None in altered.values() else altered
    return preds, altered


def save_predictions(out_dir: str | Path, name: str, key: str, preds: list[Prediction],
                     blind_key: str | None = None, altered: dict | None = None) -> None:
    """Store ``preds`` under ``key``, with the blindness check's under ``blind_key`` when given; a blindness check
    already stored for the same predictions is kept."""
    if altered is None:
        doc = read_keyed(_path(out_dir, name), key) or {}
        blind = doc.get("blindness")
    else:
        blind = {"key": blind_key} | {cond: [p.to_dict() for p in ps] for cond, ps in altered.items()}
    write_keyed(_path(out_dir, name), key, {"predictions": [p.to_dict() for p in preds]}
                | ({"blindness": blind} if blind else {}))
