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
from ..io import atomic_write_checked_json, json_digest, read_json_object
from ..layout import CHECKPOINT_STATE
from .checkpoint import TRAINED_ON, CheckpointError, RunPaths
from .trainer import Preempted, train_cell

log = logging.getLogger(__name__)


def checkpoint_step(paths: RunPaths) -> int | None:
    """The step of the newest readable checkpoint, or None (resume checks it in full)."""
    steps = []
    for ckpt in (paths.checkpoint, paths.previous_checkpoint):
        try:
            steps.append(int(json.loads((ckpt / CHECKPOINT_STATE).read_text())["step"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(steps, default=None)


def _log_rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a last row cut short: after any checkpoint, so after any rung already passed
    return rows


def _finished_log(cfg: Config, cell: Cell, paths: RunPaths) -> Path | None:
    """The finished run's log, when the run was trained on this cell's spec (a full grid made before
    halving was turned on): its first rows are the rung's."""
    if not paths.summary.exists():
        return None
    summary = read_json_object(paths.summary, "training summary", rule="train")
    if (summary.get(TRAINED_ON) or {}).get("spec_sha256") != json_digest(vouched_cell_spec(cfg, cell)):
        return None
    return paths.train_log


def train_to_rung(cfg: Config, cell: Cell, data_dir, run_dir, features_dir, step: int, record: str) -> dict:
    """Train the cell to `step` (resuming its checkpoint; nothing to do when it is there or beyond) and
    write the rung's record: its validation PPL at the step and its validation curve up to it."""
    if not 0 < step < cfg.train.steps or step % cfg.train.val_every:
        raise ConfigError(f"a rung's step must be a validation step (train.val_every = {cfg.train.val_every}) "
                          f"before train.steps = {cfg.train.steps}; got {step} (halving.rungs)")
    paths = RunPaths(Path(run_dir))
    finished = _finished_log(cfg, cell, paths)
    if finished is None and (checkpoint_step(paths) or 0) < step:
        try:
            train_cell(cfg, cell, data_dir, run_dir, features_dir, stop_at_step=step)
        except Preempted as stopped:
            if stopped.step != step:  # a real preemption before the rung: exit 75, run again
                raise
    source = finished or paths.partial_log
    rows = [r for r in _log_rows(source) if r.get("step", 0) <= step and "val_ppl" in r]
    if not rows or rows[-1]["step"] != step:
        raise CheckpointError(f"{source}: no validation row at step {step}, the rung's; move the run folder "
                              f"aside and train {cell.name} again")
    out = {"cell": cell.name, "step": step, "steps": cfg.train.steps, "val_ppl": rows[-1]["val_ppl"],
           "val_nelbo": rows[-1]["val_nelbo"], "val_curve": [[r["step"], r["val_ppl"]] for r in rows],
           "from": "the finished run's log" if finished else "the run's checkpoint"}
    Path(record).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_checked_json(record, out)
    log.info("%s: at rung step %d, val PPL %.4g (%s)", cell.name, step, out["val_ppl"], out["from"])
    return out
