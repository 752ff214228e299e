"""Crash-safe file writes: temp name, fsync, rename. A half-written file is never read as complete."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable


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


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temp file next to ``path`` (for writers that need a path: savefig,
    to_csv, to_parquet), then fsync it and rename it into place; a failed write leaves no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        fsync_rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


CONTENT_CHECKSUM = "content_sha256"


def json_digest(obj: dict) -> str:
    """sha256 of the object's canonical JSON (floats round-trip exactly, so re-reading gives it back)."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def atomic_write_checked_json(path: str | os.PathLike, obj: dict) -> None:
    """A results JSON (metrics, training summary) that carries the checksum of its own content, so bit
    rot that keeps the file parseable and its mtime is still seen by `read_json_object`."""
    atomic_write_json(path, {**obj, CONTENT_CHECKSUM: json_digest(obj)})


def read_json_object(path: str | os.PathLike, what: str, rule: str | None = None) -> dict:
    """A JSON object from `path`, its content checksum (if it has one) verified and removed.

    A file written before checksums existed has none and is read as is. `rule` is the Snakemake rule
    that rebuilds the file, named in the error."""
    fix = f" Rebuild it with {rebuild_command(path, rule)}." if rule else ""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the {what} ({e}).{fix}") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: the {what} should be a JSON object, got {type(obj).__name__}.{fix}")
    recorded = obj.pop(CONTENT_CHECKSUM, None)
    if recorded is not None and recorded != json_digest(obj):
        raise DataError(f"{path}: its content differs from the checksum recorded in it (bit rot or a hand "
                        f"edit), so none of its numbers can be trusted.{fix}")
    return obj


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder_checksums(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of each file of a model or tokenizer folder, recorded when it is written."""
    # dotfiles (Snakemake's .snakemake_timestamp, NFS's .nfs*) are not the model
    return {p.name: file_sha256(p) for p in sorted(Path(folder).iterdir())
            if p.is_file() and not p.name.startswith(".")}


def changed_files(folder: str | os.PathLike, recorded: dict[str, str] | None) -> list[Path]:
    """The folder's files that differ from, or are missing against, the recorded checksums (none
    recorded: written before checksums existed, nothing to compare)."""
    if recorded is None:
        return []
    found = folder_checksums(folder)
    return [Path(folder) / name for name in sorted(recorded.keys() | found.keys())
            if recorded.get(name) != found.get(name)]
