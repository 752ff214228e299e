"""`repa-mdlm status`: every cell of the grid with its state, test PPL or current step.

What Snakemake's --summary lacks: the cell's place in the grid, whether it is running
right now (a trainer that lives, with the heartbeat it writes), how far it got, whether it
left a checkpoint to resume from, and its result.

What it says Snakemake will do is what the workflow does, from any working directory: a cell
trained with another config (stale_reason) is re-trained, forced when the Snakefile is parsed
(stale_cells, snakemake_plan.forced_training).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Cell, Config, ConfigError
from ..config.specs import vouched_cell_spec
from ..io import DataError, json_digest, read_json_object
from ..layout import (
    CHECKPOINT,
    CHECKPOINT_STATE,
    METRICS,
    PARTIAL_LOG,
    RUN_CONFIG,
    RUNS,
    TRAIN_SUMMARY,
    TRAINING_OUTPUTS,
    cell_results,
    job_log,
    run_dir,
)
from .results_lock import read_heartbeat, trainer_of

STATES = ("done", "running", "trained", "kept", "stopped", "failed", "preempted", "outdated", "not started")


@dataclass
class CellStatus:
    cell: Cell
    state: str
    step: int | None = None
    steps: int | None = None
    test_ppl: float | None = None
    test_ppl_se: float | None = None
    detail: str = ""
    tokens_per_s: float | None = None
    eta_s: float | None = None
    rung: str = ""
    """Successive halving: the last rung the cell passed, or where its configuration stopped."""

    @property
    def target(self) -> str:
        return f"{RUNS}/{self.cell.name}/{METRICS}"


def _tail_has_error(path: Path) -> str | None:
    if not path.exists():
        return None
    lines = path.read_text(errors="replace").splitlines()[-60:]
    for line in reversed(lines):
        if "Error" in line or "error:" in line or "Traceback" in line or "Killed" in line:  # error: as cli prints it
            return line.strip()[:120]
    return None


def _timed_rows(partial_log: Path, last: int = 2) -> list[dict]:
    """The last `last` rows of the growing log that carry the training clock (elapsed_s)."""
    try:
        lines = partial_log.read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:  # a line being written
            continue
        if isinstance(row, dict) and row.get("elapsed_s") and row.get("step"):
            rows.insert(0, row)
            if len(rows) == last:
                break
    return rows


def training_rate(partial_log: Path, tokens_per_step: int) -> tuple[float | None, float | None]:
    """(tokens/s, seconds per optimizer step) of a running cell, from its log's last two timed rows
    (elapsed_s is the training clock: optimizer steps only, not validation or checkpoints); one row:
    the average since step 0; none: unknown."""
    rows = _timed_rows(partial_log)
    if not rows:
        return None, None
    if len(rows) == 2 and rows[1]["elapsed_s"] > rows[0]["elapsed_s"] and rows[1]["step"] > rows[0]["step"]:
        per_step = (rows[1]["elapsed_s"] - rows[0]["elapsed_s"]) / (rows[1]["step"] - rows[0]["step"])
    else:
        per_step = rows[-1]["elapsed_s"] / rows[-1]["step"]
    return tokens_per_step / per_step, per_step


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def running_status(cfg: Config, cell: Cell, run: Path, beat: dict) -> CellStatus:
    """A running cell: its step from the heartbeat, tokens/s and an ETA from its growing log."""
    rate, per_step = training_rate(run / PARTIAL_LOG, cfg.train.global_batch * cfg.seq_len)
    eta = None if per_step is None else max(beat["steps"] - beat["step"], 0) * per_step
    detail = f"on {beat['host']}"
    if rate is not None:
        detail += f", {rate:,.0f} tok/s, ETA {format_duration(eta)}"
    return CellStatus(cell, "running", beat["step"], beat["steps"], detail=detail, tokens_per_s=rate, eta_s=eta)


def trained_with_another_spec(cfg: Config, cell: Cell, run: Path) -> bool:
    """Whether the run was trained with another spec of this cell than the current config gives it: the
    spec hash its train_summary.json records (trained_on), else its saved config.yaml. Unknown (False)
    where neither can be read."""
    import yaml

    try:
        trained_on = json.loads((run / TRAIN_SUMMARY).read_text()).get("trained_on") or {}
        if trained_on.get("spec_sha256"):
            return trained_on["spec_sha256"] != json_digest(vouched_cell_spec(cfg, cell))
    except (OSError, ValueError, AttributeError):
        pass
    try:
        saved = yaml.safe_load((run / RUN_CONFIG).read_text())
        saved.pop("cell", None)
        return vouched_cell_spec(Config.from_dict(saved, job_spec=True), cell) != vouched_cell_spec(cfg, cell)
    except (OSError, ValueError, TypeError, AttributeError, KeyError, ConfigError, yaml.YAMLError):
        return False


def results_of(cfg: Config, run: Path) -> list[Path]:
    """The cell's files made from its training (layout.cell_results), as the workflow asks for them."""
    return [run / name for name in cell_results(cfg.generative.samples > 0, [t.name for t in cfg.evaluate.zero_shot_sets()])]


def stale_reason(cfg: Config, cell: Cell) -> str | None:
    """Why the cell's existing outputs must be made again, whichever working directory runs Snakemake
    (its params trigger sees only the metadata in its own .snakemake/), or None. From the results alone:
    - trained with another spec than the config gives it (the run's config.yaml);
    - a training output is gone while results made from it remain: a re-train killed after Snakemake
      removed the old outputs, or a deleted model. Snakemake would keep the old results and no model."""
    run = Path(run_dir(cfg.results_dir, cell.name))
    gone = [name for name in TRAINING_OUTPUTS if not (run / name).exists()]
    if not gone:
        return "trained with another config" if trained_with_another_spec(cfg, cell, run) else None
    made = [p.relative_to(run).as_posix() for p in results_of(cfg, run) if p.exists()]
    if made:
        return f"{', '.join(gone)} gone, while {', '.join(made)} made from it remain"
    return None


def stale_cells(cfg: Config) -> dict[str, str]:
    """The cells whose finished training the results folder says is stale (stale_reason), with the reason:
    the Snakefile forces their re-training (snakemake_plan.forced_training), since Snakemake's own
    triggers see only its working directory's records. Reads only; a dry run changes nothing."""
    stale = {}
    for cell in cfg.cells():
        reason = stale_reason(cfg, cell)
        if reason and (Path(run_dir(cfg.results_dir, cell.name)) / TRAIN_SUMMARY).exists():
            stale[cell.name] = reason
    return stale


@dataclass
class HalvingPosition:
    """A halving sweep's REPA cell: the rung column, and why it stopped or goes on (None: neither yet)."""

    rung: str = ""
    stopped: str | None = None
    kept: str | None = None
    step: int | None = None
    """The step of the rung it stopped or was last kept at."""


def halving_position(cfg: Config, cell: Cell) -> HalvingPosition:
    """From the cell's rung records and the rungs' decisions (tables/halving/rung<k>.csv)."""
    import csv

    from ..analysis.halving import configuration_of
    from ..config import rung_steps
    from ..layout import TABLES, rung_decisions, rung_record

    if not cfg.halving.enabled or not cfg.repa.teachers:
        return HalvingPosition()
    if cell.is_baseline:
        return HalvingPosition("not judged")
    judged = rung_steps(cfg.halving.rungs, cfg.train.steps, cfg.train.val_every)[:-1]
    run, position = Path(run_dir(cfg.results_dir, cell.name)), HalvingPosition(f"0/{len(judged)}")
    for rung, step in enumerate(judged, start=1):
        decisions = Path(cfg.results_dir) / TABLES / rung_decisions(rung)
        if not (run / rung_record(step)).exists():
            break
        position = HalvingPosition(f"{rung}/{len(judged)}, being judged")
        row = None
        if decisions.exists():
            with open(decisions, newline="") as f:
                row = next((r for r in csv.DictReader(f) if r["configuration"] == configuration_of(cell)), None)
        if row is None:
            break
        if row["decision"] == "stopped":
            return HalvingPosition(f"stopped at {rung}/{len(judged)}", f"halving stopped it at rung {rung}: {row['why']}",
                                   step=step)
        last = rung == len(judged)
        position = HalvingPosition("end" if last else f"{rung}/{len(judged)}", kept=(
            f"kept at rung {rung} ({row['why']}); Snakemake trains it to "
            + ("the end" if last else f"rung {rung + 1}")), step=step)
    return position


def cell_status(cfg: Config, cell: Cell, now: float | None = None) -> CellStatus:
    position = halving_position(cfg, cell)
    status = _cell_status(cfg, cell, now)
    status.rung = position.rung
    # a rung job's log keeps an attempt's error after a retry that succeeded: the record says it did
    if position.stopped and status.state in ("not started", "preempted", "failed"):
        status.state, status.step, status.steps, status.detail = "stopped", position.step, cfg.train.steps, position.stopped
    elif position.kept and status.state in ("not started", "preempted"):
        status.state, status.step, status.steps, status.detail = "kept", position.step, cfg.train.steps, position.kept
    return status


def _cell_status(cfg: Config, cell: Cell, now: float | None = None) -> CellStatus:
    now = time.time() if now is None else now
    root = Path(cfg.results_dir)
    run = Path(run_dir(cfg.results_dir, cell.name))
    metrics = run / METRICS
    summary = run / TRAIN_SUMMARY
    # a metrics.json counts only for the latest training attempt: a failed re-run removes that
    # attempt's outputs (train_summary.json among them) but not the older evaluation
    current = metrics.exists() and summary.exists() and metrics.stat().st_mtime >= summary.stat().st_mtime
    stale = stale_reason(cfg, cell)
    if current and not stale:
        try:
            m = read_json_object(metrics, "metrics", rule="evaluate")
        except DataError as error:
            return CellStatus(cell, "failed", detail=f"evaluate: {error}")
        se = m["test_ppl"] * m["test_nelbo_se"]  # delta method: d exp(x) = exp(x) dx
        return CellStatus(cell, "done", m["steps"], m["steps"], m["test_ppl"], se)
    beat = read_heartbeat(run)
    # a heartbeat alone is no trainer: one killed on this host leaves a fresh one behind
    if beat and not summary.exists() and trainer_of(run, beat, now):
        return running_status(cfg, cell, run, beat)
    train_error = next(filter(None, (_tail_has_error(p) for p in [
        root / job_log("train", cell.name), *sorted((root / job_log("train_rung", "x")).parent.glob(f"{cell.name}_step*.log"))])),
        None)
    eval_error = _tail_has_error(root / job_log("evaluate", cell.name))
    checkpoint = run / CHECKPOINT / CHECKPOINT_STATE
    step = json.loads(checkpoint.read_text())["step"] if checkpoint.exists() and not summary.exists() else None
    if stale and (summary.exists() or not (train_error or step is not None)):  # else: failed or stopped, below
        return CellStatus(cell, "outdated", detail=f"{stale}; Snakemake re-runs it")
    if summary.exists():
        if eval_error:
            return CellStatus(cell, "failed", detail=f"evaluate: {eval_error}")
        return CellStatus(cell, "trained", detail="not evaluated yet" if not metrics.exists()
                          else "re-trained after its evaluation; not evaluated again yet")
    if train_error:
        return CellStatus(cell, "failed", step, cfg.train.steps, detail=f"train: {train_error}")
    if step is not None:
        gone = f"no trainer runs it (the last was pid {beat.get('pid')} on {beat.get('host')}); " if beat else ""
        return CellStatus(cell, "preempted", step, cfg.train.steps, detail=gone + _resume_outlook(cfg, cell, checkpoint))
    return CellStatus(cell, "not started")


def _resume_outlook(cfg: Config, cell: Cell, state_path: Path) -> str:
    """What the next run does with the checkpoint: resume it, or set it aside (checkpoint.training_identity)."""
    try:
        identity = json.loads(state_path.read_text()).get("identity") or {}
    except (OSError, ValueError):
        identity = {}
    if identity.get("spec_sha256") == json_digest(vouched_cell_spec(cfg, cell)):
        return "Snakemake resumes it from its checkpoint"
    return ("its checkpoint was made with another config (or records none): the next run sets it aside under "
            "superseded/ and trains from step 0")


def sweep_status(cfg: Config) -> list[CellStatus]:
    now = time.time()
    return [cell_status(cfg, cell, now) for cell in cfg.cells()]


def format_table(rows: list[CellStatus]) -> str:
    rungs = any(r.rung for r in rows)  # a halving sweep: its rung column
    head = f"{'rung':<14} " if rungs else ""
    lines = [f"{'cell':<34} {'state':<12} {'step':>11} {head}{'test PPL':>18}  detail"]
    for r in rows:
        step = f"{r.step}/{r.steps}" if r.step is not None else ""
        ppl = f"{r.test_ppl:.2f} ± {r.test_ppl_se:.2f}" if r.test_ppl is not None else ""
        rung = f"{r.rung:<14} " if rungs else ""
        lines.append(f"{r.cell.name:<34} {r.state:<12} {step:>11} {rung}{ppl:>18}  {r.detail}")
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" ({len(rows)} cells)")
    return "\n".join(lines)
