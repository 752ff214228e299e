"""Crash-safe file writes: temp name, fsync, rename. A half-written file is never read as complete."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A file on disk is missing, truncated, corrupt or stale; the message names it and the fix."""


def rebuild_command(target: str | os.PathLike, rule: str) -> str:
    """The one command that rebuilds `target` whatever state its file is in (corrupt files keep
    their mtime, so Snakemake alone would see nothing to do): the job is forced. tests/faults runs it."""
    return f"`snakemake {target} --forcerun {rule}` (with the --profile or --configfile of the sweep)"


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_rename(tmp: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move a finished file or folder into place; an existing folder at dst is replaced."""
    tmp, dst = Path(tmp), Path(dst)
    if tmp.is_dir():
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        if dst.exists():
            old = dst.with_name(dst.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dst)
    else:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    fsync_dir(dst.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    fsync_rename(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
