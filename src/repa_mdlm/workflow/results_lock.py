"""Which Snakemake is writing a results folder, so that a second one is told the truth.

Snakemake's own lock lives in the working directory's `.snakemake/`, and a second run on
the same results first trips over the first run's in-progress outputs with advice to use
`--rerun-incomplete`, which then hits the lock. The workflow records its writer in the
results folder (`onstart`), checks it when the Snakefile is parsed, and removes it when the
run ends; a record left by a killed run names a dead process and is ignored.

A killed Snakemake can leave its trainers running (orphans). While one lives, no Snakemake may
start on the folder, `--unlock` included: its `--rerun-incomplete` would start a second trainer
on the cell, which the trainer's own lock refuses, and Snakemake's clean-up of that failed job
would delete the live run's files (`live_trainers`).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from ..layout import HEARTBEAT, RUNS, TRAIN_SUMMARY, WRITER_FILE

TRAINER_LOCK = ".lock"
"""<run>/.lock: the trainer's flock (training.trainer._RunLock) while it trains the cell."""
HEARTBEAT_STALE_S = 15 * 60
"""A trainer on another host (its life cannot be checked) counts as live while its heartbeat is younger."""


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
    - a trainer of the folder that lives with no live Snakemake (refuse_orphan_trainers): refused,
      `--unlock` included;
    - `--unlock` otherwise removes the record with the locks.
    """
    where = Path(results_dir) / WRITER_FILE
    record = read(results_dir)
    here = record is not None and record.get("host") == socket.gethostname()
    if record is not None and not here and not unlocking:
        raise ResultsLockError(
            f"{results_dir} is being written by {describe(record)}, according to {where}. If that run "
            "still goes on, wait for it to end. If it has ended without cleaning up (killed, or its node "
            "lost), run your command once with --unlock added, then with --rerun-incomplete added.")
    if here and record["pid"] == os.getpid():
        return
    if here and _alive(record):
        refused = ("--unlock would remove its locks and let two writers in" if unlocking else
                   "A second Snakemake cannot write beside it; neither --rerun-incomplete nor --unlock helps "
                   "while it runs")
        raise ResultsLockError(
            f"{results_dir} is being written by {describe(record)}. {refused}. Watch it with "
            f"`{status_command}`, wait for it to end, or stop it with `kill -INT {record['pid']}` (Snakemake "
            "then cleans up its running jobs), and run your command again.")
    refuse_orphan_trainers(results_dir, status_command, record)
    if record is None:
        return
    if unlocking:
        where.unlink(missing_ok=True)
        return
    locks = _locks_under(results_dir, Path(lock_dir))
    if locks:
        raise ResultsLockError(
            f"The last writer of {results_dir}, {describe(record)}, was killed without cleaning up: its "
            f"locks remain ({', '.join(str(p) for p in locks)}). Run your command once with --unlock added, "
            "then with --rerun-incomplete added (the jobs it left half-done are run again; finished "
            "outputs and training checkpoints are kept).")


# ---------------------------------------------------------------- live trainers of a results folder
def _flock_holders() -> dict[tuple[int, int, int], int]:
    """(device major, minor, inode) -> pid of every flock held on this host, from /proc/locks. Read,
    never taken: a probe that took the lock, however briefly, could make a starting trainer refuse."""
    held = {}
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return held
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":  # "->" rows are waiters
            continue
        try:
            major, minor, inode = parts[5].split(":")
            held[(int(major, 16), int(minor, 16), int(inode))] = int(parts[4])
        except ValueError:
            continue
    return held


def _train_run_dir(argv: list[str]) -> str | None:
    """The --run-dir of a `repa-mdlm train` command line (or of the shell about to exec one), else None."""
    words = [w for arg in argv for w in (_split(arg) if " " in arg else [arg])]
    for i, word in enumerate(words[:-1]):
        if (os.path.basename(word) == "repa-mdlm" or word == "repa_mdlm") and words[i + 1] == "train":
            rest = words[i + 2:]
            for j, arg in enumerate(rest):
                if arg == "--run-dir" and j + 1 < len(rest):
                    return rest[j + 1]
                if arg.startswith("--run-dir="):
                    return arg.split("=", 1)[1]
    return None


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _training_processes() -> dict[Path, int]:
    """Run folder -> pid of each `repa-mdlm train` on this host, including one still starting (in its
    imports, before it takes its lock) and the job's shell that is about to become it."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            run = _train_run_dir(argv)
            if run is not None and int(proc.name) != os.getpid():
                found[(Path(os.readlink(proc / "cwd")) / run).resolve()] = int(proc.name)
        except (OSError, ValueError):
            continue
    return found


def trainer_of(run: str | Path, beat: dict | None = None, now: float | None = None,
               held: dict | None = None, processes: dict | None = None) -> dict | None:
    """The trainer of this run folder if one lives ({pid, host, how}), else None: a process of this host
    that holds the run's lock or is starting to train it, or, on another host, one whose heartbeat
    (`beat`) is fresh. A heartbeat of this host alone proves nothing: its process may be dead."""
    run, host = Path(run), socket.gethostname()
    held = _flock_holders() if held is None else held
    try:
        st = (run / TRAINER_LOCK).stat()
        pid = held.get((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    except OSError:
        pid = None
    if pid is not None:
        return {"pid": pid, "host": host, "how": "holds the run's lock"}
    processes = _training_processes() if processes is None else processes
    if run.resolve() in processes:
        return {"pid": processes[run.resolve()], "host": host, "how": "starting"}
    if beat and beat.get("host") != host:
        age = (time.time() if now is None else now) - float(beat.get("time", 0))
        if age < HEARTBEAT_STALE_S:
            return {"pid": beat.get("pid"), "host": beat.get("host"),
                    "how": f"heartbeat {age:.0f} s old; that host cannot be asked, so it counts until "
                           f"{HEARTBEAT_STALE_S // 60} min"}
    return None


def read_heartbeat(run: str | Path) -> dict | None:
    """The trainer's heartbeat (<run>/progress.json), or None where there is none or it is being written."""
    try:
        beat = json.loads((Path(run) / HEARTBEAT).read_text())
    except (OSError, ValueError):
        return None
    return beat if isinstance(beat, dict) else None


def live_trainers(results_dir: str | Path, other_hosts: bool = True) -> dict[str, dict]:
    """Cell -> its live trainer (trainer_of), for every run folder of the results folder; with
    other_hosts=False only the trainers of this host (whose life is known, not guessed)."""
    held, processes = _flock_holders(), _training_processes()
    found = {}
    for run in sorted((Path(results_dir) / RUNS).glob("*/")):
        # a heartbeat beside a summary is a leftover
        beat = None if not other_hosts or (run / TRAIN_SUMMARY).exists() else read_heartbeat(run)
        trainer = trainer_of(run, beat, held=held, processes=processes)
        if trainer:
            found[run.name] = trainer
    return found


def refuse_orphan_trainers(results_dir: str | Path, status_command: str, record: dict | None) -> None:
    """Refuse any run, `--unlock` included, while a trainer of the folder lives that no live Snakemake
    runs (its Snakemake was killed): a second trainer of its cell would be refused, and Snakemake's
    clean-up of that failed job would delete the live run's files. Trainers of other hosts count only
    after a killed Snakemake (a `record` left behind): one that ended cleaned up its jobs, and a
    heartbeat left by a job that failed there would otherwise block the next run for minutes."""
    trainers = live_trainers(results_dir, other_hosts=record is not None)
    if not trainers:
        return
    by = f"left running by {describe(record)}" if record else "not started by a Snakemake that still runs"
    cells = "; ".join(f"{cell}: pid {t['pid']} on {t['host']} ({t['how']})" for cell, t in trainers.items())
    here = [str(t["pid"]) for t in trainers.values() if t["host"] == socket.gethostname()]
    stop = f"`kill -TERM {' '.join(here)}`" if here else "its host's scheduler"
    raise ResultsLockError(
        f"{results_dir}: a trainer still runs, {by}: {cells}. No Snakemake may start on this folder while it "
        "does, --unlock and --rerun-incomplete included: a second trainer of its cell would be refused and "
        "Snakemake's clean-up of that job would delete the running one's files. Watch it with "
        f"`{status_command}`; wait for it to end, or stop it with {stop} (it saves a checkpoint and exits, "
        "and the next run resumes from it); then run your command again.")
