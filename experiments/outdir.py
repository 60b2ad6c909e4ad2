"""A run owns its --out folder: a lock held for the run's life, a RUNNING marker while it works,
and the checks that refuse a folder another run wrote."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import os
import pathlib
import shutil
import sys
from collections.abc import Iterator
from typing import IO

import jax

LOCK = ".lock"
RUNNING = "RUNNING"
# What a new run replaces when it resumes: the old ones would describe another run.
RESULTS = ("report.md", "metrics.json")


def writes_outputs() -> bool:
    """Whether this process owns --out and writes reports: process 0 of a multi-process run."""
    return jax.process_index() == 0


class FolderInUseError(RuntimeError):
    """Another live process holds the folder's lock."""


def check_out(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses, before any data is loaded, an --out this run cannot own.

    Refused (exit code 2, or 1 for a folder in use): a path that is a file, a folder that
    cannot be written, a folder another live run holds, and a folder holding another run's
    outputs unless --resume (continue it) or --overwrite (replace it) is given.
    """
    out = args.out
    if not writes_outputs():  # process 0 owns the folder; the others only share it
        return
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file, not a folder")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--out {out}: cannot write into {existing}")
    if not out.is_dir():
        return
    holder = _holder(out)
    if holder is not None:
        sys.exit(f"error: --out {out} is in use by another run (process {holder})")
    if _entries(out) and not (args.resume or args.overwrite):
        parser.error(
            f"--out {out} holds the outputs of a previous run: pass --resume to continue it, "
            "--overwrite to replace them, or choose another --out"
        )


@contextlib.contextmanager
def own(out: pathlib.Path, *, overwrite: bool, command: str) -> Iterator[None]:
    """Holds `out` for the run's life: locked, marked RUNNING, stale results removed.

    With `overwrite` every earlier output goes. On a clean exit the marker and the lock are
    removed; a run that dies leaves its RUNNING marker (the lock dies with the process). A
    folder this call created and that holds nothing else when the run fails is removed.

    Raises:
      FolderInUseError: another live process holds the lock.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    finished = False
    try:
        for entry in _entries(out) if overwrite else [out / name for name in RESULTS]:
            _remove(entry)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        (out / RUNNING).write_text(f"pid {os.getpid()}, started {started}: {command}\n")
        yield
        finished = True
    finally:
        if finished or not _entries(out, keep_marker=False):
            (out / RUNNING).unlink(missing_ok=True)
        (out / LOCK).unlink(missing_ok=True)
        lock.close()
        if created and not finished and not any(out.iterdir()):
            out.rmdir()


def _lock(out: pathlib.Path) -> IO[str]:
    """The open, exclusively locked lock file, holding this process's id."""
    handle = open(out / LOCK, "a+")  # noqa: SIM115 (held open for the run's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise FolderInUseError(f"--out {out} is in use by another run (process {holder})") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _holder(out: pathlib.Path) -> str | None:
    """The process id in a lock another live process holds, or None."""
    path = out / LOCK
    if not path.is_file():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
    return None


def _entries(out: pathlib.Path, *, keep_marker: bool = True) -> list[pathlib.Path]:
    """Everything in `out` but the lock (and, unless `keep_marker`, the RUNNING marker)."""
    skip = {LOCK} if keep_marker else {LOCK, RUNNING}
    return [p for p in out.iterdir() if p.name not in skip]


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
