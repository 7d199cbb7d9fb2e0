"""Writing result files so that a reader, or a run killed mid-write, never sees half of one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move the file into place in one step; on
    failure nothing is left behind and an earlier ``path`` is kept as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: two writers never share it
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, newline: str | None = None) -> None:
    """``text`` written to ``path`` whole (``newline`` as in ``open``)."""
    write_atomic(path, lambda tmp: tmp.write_text(text, newline=newline))


def write_json_atomic(path: str | Path, doc: dict) -> None:
    write_text_atomic(path, json.dumps(doc, indent=2))
