"""A cell trained to a rung of successive halving (config.halving): exactly the first `step` steps of its
full run. The schedule and the masking curriculum keep train.steps' horizon (the trainer never sees the
rung), and the checkpoint at the step is kept, so a configuration that goes on resumes it and ends
bit-identical to a run straight through. The rung's record holds its validation row, which the judge reads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..config import Cell, Config, ConfigError
from ..config.specs import vouched_cell_spec
from ..io import atomic_write_checked_json, read_json_object
from ..layout import CHECKPOINT_STATE
from .checkpoint import TRAINED_ON, CheckpointError, RunPaths, identity_differences, training_identity
from .trainer import NonFiniteLoss, Preempted, train_cell

VOUCHED = ("spec_sha256", "data_sha256", "features_sha256")
"""What a rung's record, a checkpoint and a finished run vouch they were trained on (training_identity)."""

log = logging.getLogger(__name__)


def expected_identity(cfg: Config, cell: Cell, data_dir, features_dir) -> dict:
    """The identity the trainer gives this cell's run (its spec, token arrays and feature cache)."""
    from ..data.dataset import read_manifest

    meta = json.loads((Path(features_dir) / "train.json").read_text()) if features_dir else None
    return training_identity(vouched_cell_spec(cfg, cell), read_manifest(data_dir), meta)


def checkpoint_step(paths: RunPaths, identity: dict) -> int | None:
    """The step of the newest readable checkpoint of this identity, or None (resume checks it in full;
    one of another identity is set aside there and training starts again)."""
    steps = []
    for ckpt in (paths.checkpoint, paths.previous_checkpoint):
        try:
            state = json.loads((ckpt / CHECKPOINT_STATE).read_text())
            if not identity_differences(state.get("identity"), identity):
                steps.append(int(state["step"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(steps, default=None)


def _log_rows(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if number < len(lines):  # only a last row may be cut short (the trainer killed while writing it)
                raise CheckpointError(f"{path}: row {number} of {len(lines)} is not a log row ({line[:60]!r}); "
                                      "the log is damaged: move the run folder aside and train the cell again") from None
    return rows


def _finished_log(paths: RunPaths, identity: dict) -> Path | None:
    """The finished run's log, when it was trained with this identity (a full grid made before halving
    was turned on): its first rows are the rung's."""
    if not paths.summary.exists():
        return None
    trained_on = read_json_object(paths.summary, "training summary", rule="train").get(TRAINED_ON) or {}
    return paths.train_log if all(trained_on.get(k) == identity[k] for k in VOUCHED) else None


def train_to_rung(cfg: Config, cell: Cell, data_dir, run_dir, features_dir, step: int, record: str) -> dict:
    """Train the cell to `step` (resuming its checkpoint; nothing to do when it is there or beyond) and
    write the rung's record: its validation PPL at the step and its validation curve up to it."""
    if not 0 < step < cfg.train.steps or step % cfg.train.val_every:
        raise ConfigError(f"a rung's step must be a validation step (train.val_every = {cfg.train.val_every}) "
                          f"before train.steps = {cfg.train.steps}; got {step} (halving.rungs)")
    paths = RunPaths(Path(run_dir))
    identity = expected_identity(cfg, cell, data_dir, features_dir)
    vouched = {k: identity[k] for k in VOUCHED}
    finished = _finished_log(paths, identity)
    if finished is None and (checkpoint_step(paths, identity) or 0) < step:
        try:
            train_cell(cfg, cell, data_dir, run_dir, features_dir, stop_at_step=step)
        except Preempted as stopped:
            if stopped.step != step:  # a real preemption before the rung: exit 75, run again
                raise
        except NonFiniteLoss as diverged:  # judged, not a failed sweep: it ranks last and stops
            out = {"cell": cell.name, "step": step, "steps": cfg.train.steps, "val_ppl": float("nan"),
                   "val_nelbo": float("nan"), "val_curve": [], "diverged": str(diverged), "trained_on": vouched}
            Path(record).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_checked_json(record, out)
            log.warning("%s: diverged before rung step %d (%s); the rung stops it", cell.name, step, diverged)
            return out
    source = finished or paths.partial_log
    rows = [r for r in _log_rows(source) if r.get("step", 0) <= step and "val_ppl" in r]
    if not rows or rows[-1]["step"] != step:
        raise CheckpointError(f"{source}: no validation row at step {step}, the rung's; move the run folder "
                              f"aside and train {cell.name} again")
    out = {"cell": cell.name, "step": step, "steps": cfg.train.steps, "val_ppl": rows[-1]["val_ppl"],
           "val_nelbo": rows[-1]["val_nelbo"], "val_curve": [[r["step"], r["val_ppl"]] for r in rows],
           "from": "the finished run's log" if finished else "the run's checkpoint", "trained_on": vouched}
    Path(record).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_checked_json(record, out)
    log.info("%s: at rung step %d, val PPL %.4g (%s)", cell.name, step, out["val_ppl"], out["from"])
    return out
