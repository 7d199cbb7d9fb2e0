"""Writing result files so that a reader, or a run killed mid-write, never sees half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str, newline: str | None = None) -> None:
    """Write ``text`` beside ``path`` first, then move it into place in one step (``newline`` as in ``open``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: two writers never share it
    try:
        tmp.write_text(text, newline=newline)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, doc: dict) -> None:
    write_text_atomic(path, json.dumps(doc, indent=2))
