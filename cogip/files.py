"""Writing result files so that a reader, or a run killed mid-write, never sees half of one."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path


class InputNotFoundError(FileNotFoundError):
    """A model or data location the user named is not there (so a run can refuse it with one line, while a file
    missing deep inside a run still ends with its traceback)."""


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move the file into place in one step; on
    failure nothing is left behind and an earlier ``path`` is kept as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one per call: two writers never share it, even two processes with the same pid in containers on one disk
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
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
