"""Resumable stages for ``cogalign demo``: which stages ran, with which settings, and which a new run can skip.

Each stage leaves a marker ``<demo dir>/stages/<name>.json`` with the fingerprint of its settings (its argument
list, the text of the config files it reads, the project code it runs, and the fingerprints of the stages it builds
on), those inputs themselves (hashed where they are long) and a status:
``running`` from the moment it starts, ``done`` (with its duration) once its outputs are complete. On the next run
a stage is

- **skipped** when its marker says ``done`` with the same fingerprint;
- **resumed** when it started with the same fingerprint but never finished (training continues from its last
  complete checkpoint; the other stages simply run again in an emptied folder);
- **started over** (its folder emptied first) when its settings or code changed (the demo says which:
  :func:`what_changed`), or when its folder holds outputs that no marker accounts for.

A stage that runs also empties the stages built on it, so nothing downstream outlives what it was made from.

:class:`Background` runs stages (their own command lines) one after another in a child process, alongside the
stages the demo runs meanwhile: the tiny models' stages use one core each, so the evaluations of the SFT stage's
models need not wait for GRPO.

:class:`OutputLock` keeps a second demo out of a folder one is working in. The background children hold the lock too,
so an evaluation left running by a demo that was killed outright still keeps the next run from emptying its folder.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cogip.files import write_json_atomic
from cogip.stored import digest

MARKER_DIR = "stages"


def stage_inputs(argv: Iterable[str], config_files: Iterable[str | Path] = (), upstream: dict[str, str] | None = None,
                 code: str = "") -> dict:
    """What a stage's outputs depend on: its arguments, a hash of each config file's text, the fingerprints of the
    stages it builds on (by name) and a hash of its code."""
    return {"argv": [str(a) for a in argv], "configs": {str(p): digest(Path(p).read_text()) for p in config_files},
            "upstream": dict(upstream or {}), "code": code}


def fingerprint(inputs: dict) -> str:
    """A short hash of what a stage's outputs depend on (its :func:`stage_inputs`)."""
    return digest(inputs)


def _flags(argv: list[str]) -> dict[str, str]:
    """``--flag value...`` and ``--flag=value`` as flag -> value; leading positional arguments under ``""``."""
    out: dict[str, list[str]] = {}
    key = ""
    for a in argv:
        if a.startswith("--"):
            key, eq, value = a.partition("=")
            out[key] = [value] if eq else []
        else:
            out.setdefault(key, []).append(a)
    return {k: " ".join(v) for k, v in out.items()}


def what_changed(old: dict | None, new: dict) -> list[str]:
    """Why a stage's inputs (:func:`stage_inputs`) differ from those it last ran with, in words; empty when the
    earlier ones are not known."""
    if not old:
        return []
    reasons = []
    before, after = _flags(old.get("argv", [])), _flags(new["argv"])
    for flag in dict.fromkeys([*before, *after]):
        if before.get(flag) != after.get(flag):
            name = flag or "arguments"
            reasons.append(f"{name} {before[flag]!r} -> {after[flag]!r}" if flag in before and flag in after
                           else f"{name} {'added' if flag in after else 'removed'}")
    for path in dict.fromkeys([*old.get("configs", {}), *new["configs"]]):
        if old.get("configs", {}).get(path) != new["configs"].get(path):
            reasons.append(f"config {Path(path).name} changed")
    if old.get("code") != new["code"]:
        reasons.append("its code changed")
    reasons += [f"{u} ran again" for u, fp in new["upstream"].items() if old.get("upstream", {}).get(u) != fp]
    return reasons


def empty_folder(path: str | Path) -> None:
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


class OutputInUse(RuntimeError):
    """The demo folder is in use by another demo, or by a stage that a stopped demo started."""


class OutputLock:
    """An exclusive lock on a demo folder (``flock`` on ``<folder>/.demo.lock``) while a demo works in it. Hand
    :attr:`fds` to the child processes (``pass_fds``) and they hold it as long as they run, even if the demo that
    started them is killed. Where ``fcntl`` is missing (Windows) nothing is locked and :attr:`fds` is empty."""

    FILE = ".demo.lock"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:
            return self
        path = self.folder / self.FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # a file system without flock
                warnings.warn(f"cannot lock {path} ({e}); nothing keeps a second demo out of {self.folder}",
                              stacklevel=2)
                return self
            raise OutputInUse(f"{self.folder} is in use: another `cogalign demo` is working there, or a stage that a "
                              f"stopped demo started is still finishing (its log is in {self.folder / MARKER_DIR}; "
                              f"`fuser -v {path}` lists the processes). Wait for it or stop it, or give this run "
                              "another --output_dir.") from None
        self.fd = fd
        return self

    @property
    def fds(self) -> tuple[int, ...]:
        """What to give the children as ``pass_fds``."""
        return () if self.fd is None else (self.fd,)

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the lock stays held while a child that inherited it still runs
            self.fd = None


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
            return "skip" if folder.is_dir() and any(folder.iterdir()) else "restart"  # outputs since removed
        return "resume" if resumable else "restart"

    def start(self, name: str, fp: str, inputs: dict | None = None) -> None:
        """Mark ``name`` running with fingerprint ``fp`` and, to say later what changed, the ``inputs`` behind it."""
        doc = {"stage": name, "fingerprint": fp, "status": "running"}
        write_json_atomic(self.marker(name), doc | ({"inputs": inputs} if inputs is not None else {}))

    def finish(self, name: str, fp: str, seconds: float, **extra) -> None:
        kept = {k: v for k, v in (self.read(name) or {}).items() if k == "inputs"}
        write_json_atomic(self.marker(name), {"stage": name, "fingerprint": fp, "status": "done",
                                              "seconds": seconds, **kept, **extra})

    def forget(self, name: str) -> None:
        self.marker(name).unlink(missing_ok=True)


class BackgroundStageError(RuntimeError):
    """A stage run in the background did not finish."""


class Background:
    """Stages run one at a time, each as a child process with its output in a log file, on a thread of their own;
    :meth:`wait` collects what they did. :meth:`submit` marks a stage ``running`` at once (so a demo stopped before
    its turn runs it next time), the thread marks it ``done`` when its process exited cleanly; after a failure the
    stages queued behind it do not start."""

    def __init__(self, book: StageBook, env: dict[str, str] | None = None, keep_fds: tuple[int, ...] = ()):
        self.book, self.env, self.keep_fds = book, env, keep_fds  # keep_fds: open in the children (the lock)
        self.records: dict[str, dict] = {}
        self.failed: tuple[str, str, Path] | None = None  # stage, what went wrong, its log
        self._submitted: list[str] = []
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._stopped = False
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def submit(self, name: str, fp: str, command: list[str], log: Path, inputs: dict | None = None) -> None:
        self.book.start(name, fp, inputs)
        self._submitted.append(name)
        self._jobs.put((name, fp, command, Path(log)))
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="demo-background", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            name, fp, command, log = job
            try:
                self._run(name, fp, command, log)
            except BaseException as e:  # a log that cannot be written, say: the stage failed, the demo says why
                self.failed = self.failed or (name, f"failed to run ({type(e).__name__}: {e})", log)

    def _run(self, name: str, fp: str, command: list[str], log: Path) -> None:
        with self._lock:
            if self._stopped or self.failed:
                return
            log.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            with open(log, "w", encoding="utf-8") as out:  # the child keeps its own handle
                try:
                    self._proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                                  stdin=subprocess.DEVNULL, pass_fds=self.keep_fds)
                except OSError as e:  # no such program, say
                    out.write(f"could not start {command[0]}: {e}\n")
                    self.failed = (name, "could not start", log)
                    return
        rc = self._proc.wait()
        if rc:
            self.failed = (name, f"exited with code {rc}", log)
            return
        seconds = time.time() - t0
        self.book.finish(name, fp, seconds)
        self.records[name] = {"status": "ran", "seconds": seconds, "background": True}

    def check(self) -> None:
        """Raise :class:`BackgroundStageError` now if a stage has failed already (the demo need not go on)."""
        if self.failed:
            name, what, log = self.failed
            try:
                lines = log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            except OSError:
                lines = []
            raise BackgroundStageError(f"stage {name} {what}; the end of its log {log}:\n{''.join(lines[-20:])}")

    def wait(self) -> dict[str, dict]:
        """Wait for every stage submitted; their records (status, seconds). Raises :class:`BackgroundStageError`
        naming the stage that failed, with the end of its log."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        self.check()
        missing = [n for n in self._submitted if n not in self.records]
        if missing:  # cannot happen unless stopped: then say so rather than fail later on a missing record
            raise BackgroundStageError(f"stages {', '.join(missing)} did not run (the demo was stopped)")
        return dict(self.records)

    def stop(self) -> None:
        """End the child still running, if any, and start no other (the demo stopped early): their stages stay
        ``running`` and run again next time."""
        with self._lock:
            self._stopped = True
            proc = self._proc
        if self._thread is not None:
            self._jobs.put(None)  # the thread ends once the child has
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
