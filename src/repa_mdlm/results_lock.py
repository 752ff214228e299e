"""Which Snakemake is writing a results folder, so that a second one is told the truth.

Snakemake's own lock lives in the working directory's `.snakemake/`, and a second run on
the same results first trips over the first run's in-progress outputs with advice to use
`--rerun-incomplete`, which then hits the lock. The workflow records its writer in the
results folder (`onstart`), checks it when the Snakefile is parsed, and removes it when the
run ends; a record left by a killed run names a dead process and is ignored.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

WRITER_FILE = ".snakemake-writer.json"


class ResultsLockError(RuntimeError):
    """Another Snakemake writes this results folder."""


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux), to tell a live writer from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(record: dict) -> bool:
    pid = int(record["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    started = _process_start(pid)
    return record.get("process_start") is None or started is None or started == record["process_start"]


def claim(results_dir: str | Path) -> None:
    """Record this process as the results folder's writer (Snakemake's onstart: the lock is held)."""
    path = Path(results_dir) / WRITER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_start": _process_start(os.getpid()),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(sys.argv),
        "workdir": os.getcwd(),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)


def release(results_dir: str | Path) -> None:
    """Remove the record if it is this process's (onsuccess / onerror)."""
    path = Path(results_dir) / WRITER_FILE
    record = read(results_dir)
    if record and record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def read(results_dir: str | Path) -> dict | None:
    try:
        record = json.loads((Path(results_dir) / WRITER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def live_writer(results_dir: str | Path) -> dict | None:
    """The record of the Snakemake writing the folder, if it runs (or may run, on another host)."""
    record = read(results_dir)
    if record is None or (record.get("host") == socket.gethostname() and not _alive(record)):
        return None
    return record


def describe(record: dict) -> str:
    return (f"Snakemake pid {record['pid']} on {record.get('host')}, started {record.get('started')} as "
            f"`{record.get('command')}` in {record.get('workdir')}")


def _locks_under(results_dir: str | Path, lock_dir: Path) -> list[Path]:
    """Snakemake lock files (one path per line) that name a file in the results folder."""
    prefix = str(Path(results_dir).resolve()).rstrip("/") + "/"
    found = []
    for lock in sorted(lock_dir.glob("*.lock")):
        try:
            if any(line.startswith(prefix) for line in lock.read_text().splitlines()):
                found.append(lock)
        except OSError:
            continue
    return found


def refuse_second_writer(results_dir: str | Path, unlocking: bool, status_command: str = "repa-mdlm status",
                         lock_dir: str | Path = ".snakemake/locks") -> None:
    """Stop a second Snakemake with the true reason, before it looks at any output.

    - a live writer on this host: refused, and so is `--unlock` (it would let two writers in);
    - a writer on another host: refused until `--unlock` says it has ended;
    - a killed writer whose Snakemake locks remain: refused with the two recovery steps in order
      (Snakemake alone names --rerun-incomplete first, which then hits the lock);
    - `--unlock` otherwise removes the record with the locks.
    """
    where = Path(results_dir) / WRITER_FILE
    record = read(results_dir)
    if record is None:
        return
    if unlocking and (record.get("host") != socket.gethostname() or not _alive(record)):
        where.unlink(missing_ok=True)
        return
    if record.get("host") != socket.gethostname():
        raise ResultsLockError(
            f"{results_dir} is being written by {describe(record)}, according to {where}. If that run "
            "still goes on, wait for it to end. If it has ended without cleaning up (killed, or its node "
            "lost), run your command once with --unlock added, then with --rerun-incomplete added.")
    if record["pid"] == os.getpid():
        return
    if _alive(record):
        refused = ("--unlock would remove its locks and let two writers in" if unlocking else
                   "A second Snakemake cannot write beside it; neither --rerun-incomplete nor --unlock helps "
                   "while it runs")
        raise ResultsLockError(
            f"{results_dir} is being written by {describe(record)}. {refused}. Watch it with "
            f"`{status_command}`, wait for it to end, or stop it with `kill -INT {record['pid']}` (Snakemake "
            "then cleans up its running jobs), and run your command again.")
    locks = _locks_under(results_dir, Path(lock_dir))
    if locks:
        raise ResultsLockError(
            f"The last writer of {results_dir}, {describe(record)}, was killed without cleaning up: its "
            f"locks remain ({', '.join(str(p) for p in locks)}). Run your command once with --unlock added, "
            "then with --rerun-incomplete added (the jobs it left half-done are run again; finished "
            "outputs and training checkpoints are kept).")
