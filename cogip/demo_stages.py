"""Resumable stages for ``cogalign demo``: which stages ran, with which settings, and which a new run can skip.

Each stage leaves a marker ``<demo dir>/stages/<name>.json`` with the fingerprint of its settings (its argument
list, the text of the config files it reads, the project code it runs, and the fingerprints of the stages it builds
on) and a status:
``running`` from the moment it starts, ``done`` (with its duration) once its outputs are complete. On the next run
a stage is

- **skipped** when its marker says ``done`` with the same fingerprint;
- **resumed** when it started with the same fingerprint but never finished (training continues from its last
  complete checkpoint; the other stages simply run again in an emptied folder);
- **started over** (its folder emptied first) when its settings or code changed, or when its folder holds outputs
  that no marker accounts for.

A stage that runs also empties the stages built on it, so nothing downstream outlives what it was made from.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cogip.files import write_json_atomic
from cogip.stored import digest

MARKER_DIR = "stages"


def fingerprint(argv: Iterable[str], config_files: Iterable[str | Path] = (), upstream: Iterable[str] = (),
                code: str = "") -> str:
    """A short hash of what a stage's outputs depend on."""
    doc = {"argv": [str(a) for a in argv],
           "configs": {str(p): Path(p).read_text() for p in config_files},
           "upstream": list(upstream), "code": code}
    return digest(doc)


def empty_folder(path: str | Path) -> None:
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


@dataclass
class StageBook:
    """The markers of one demo folder."""

    root: Path

    def marker(self, name: str) -> Path:
        return Path(self.root) / MARKER_DIR / f"{name}.json"

    def read(self, name: str) -> dict | None:
        try:
            doc = json.loads(self.marker(name).read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def decide(self, name: str, fp: str, folder: Path, resumable: bool) -> str:
        """``skip``, ``resume``, ``restart`` (settings changed or unexplained outputs: empty the folder first) or
        ``new``."""
        doc = self.read(name)
        if doc is None:
            return "restart" if folder.is_dir() and any(folder.iterdir()) else "new"
        if doc.get("fingerprint") != fp:
            return "restart"
        if doc.get("status") == "done":
            return "skip"
        return "resume" if resumable else "restart"

    def start(self, name: str, fp: str) -> None:
        write_json_atomic(self.marker(name), {"stage": name, "fingerprint": fp, "status": "running"})

    def finish(self, name: str, fp: str, seconds: float, **extra) -> None:
        write_json_atomic(self.marker(name), {"stage": name, "fingerprint": fp, "status": "done",
                                              "seconds": seconds, **extra})

    def forget(self, name: str) -> None:
        self.marker(name).unlink(missing_ok=True)
