"""Results kept on disk under a key: a hash of everything they were made from, so that a later run reuses a result
only when nothing it depends on has changed (the demo's stages, eval's per-checkpoint results, generated images).

>>> digest({"b": 1, "a": [2]}) == digest({"a": [2], "b": 1})
True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from cogip.files import write_json_atomic

_LARGE = 16 * 2**20  # files above this are known by size and time written instead of content (weights, mostly)


def digest(doc) -> str:
    """A short hash of a JSON-able document (keys sorted; other objects by ``str``)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_keyed(path: str | Path, key: str) -> dict | None:
    """The document stored at ``path`` by :func:`write_keyed` under ``key``; None when there is none, it was
    stored under another key, or it cannot be read."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("key") == key else None


def write_keyed(path: str | Path, key: str, doc: dict) -> None:
    write_json_atomic(path, {"key": key, **doc})


def code_version(packages: Iterable[str], exclude: tuple[str, ...] = ("demo",)) -> str:
    """A hash of the Python sources and JSON data (the built-in prompt sets) of ``packages`` (files whose name starts
    with one of ``exclude`` left out), so that outputs made by code that has since changed are not taken as
    complete."""
    import importlib.util

    h = hashlib.sha256()
    for pkg in sorted(packages):
        spec = importlib.util.find_spec(pkg)
        for root in (spec.submodule_search_locations or []) if spec else []:
            for path in sorted([*Path(root).rglob("*.py"), *Path(root).rglob("*.json")]):
                if not path.name.startswith(exclude):
                    h.update(f"{pkg}/{path.relative_to(root).as_posix()}\0".encode() + path.read_bytes())
    return h.hexdigest()[:16]


def _file_identity(path: Path) -> list:
    try:
        st = path.stat()
        if st.st_size > _LARGE:
            return [st.st_size, st.st_mtime_ns]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
        return [h.hexdigest()]
    except OSError:  # a dangling link, a file that cannot be read: the model may never need it
        return [None]


def model_identity(ref: str | Path, recursive: bool = False, _depth: int = 0) -> list:
    """What tells a model apart from the one a stored result was made with. For a folder: its files (those in its
    subfolders too with ``recursive``, links followed, hidden folders such as ``.git`` and ``.cache`` left out), small
    ones (configs, tokenizer, chat template) by content, large ones (weights) by size and time written, and for a
    LoRA adapter its base model's identity. For a hub id: the id and the snapshot of it in the local cache, if
    any."""
    root = Path(ref)
    if not root.is_dir():
        try:
            from huggingface_hub import snapshot_download

            return [str(ref), snapshot_download(str(ref), local_files_only=True)]
        except Exception:  # not in the cache, or not a hub id at all
            return [str(ref)]
    if recursive:
        files = []
        for folder, subfolders, names in os.walk(root, followlinks=True):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            files += [Path(folder) / n for n in names]
    else:
        files = [p for p in root.iterdir() if not p.is_dir()]
    out = [[p.relative_to(root).as_posix(), *_file_identity(p)] for p in sorted(files)]
    try:
        base = json.loads((root / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):  # not an adapter, or a config PEFT would refuse anyway
        base = None
    if base and _depth < 3:
        out.append(["base_model", model_identity(base, _depth=_depth + 1)])
    return out
