"""Experiment tracking beside the JSONL log: TensorBoard event files or a W&B run (offline first).

One small interface, `Tracker`: `start(run_dir, cell, hparams, resume_step)`, `log(step, scalars)`,
`finish(summary)`. The trainer logs every row of its JSONL log (loss, N-ELBO, REPA, lr, grad norm,
tokens/s, validation PPL, ...) plus the process's peak memory; the evaluate job adds the cell's test
metrics with its hyperparameters (TensorBoard's HParams view, W&B's config + summary), in the same run.

A tracker never stops training: a missing package or any error of the tracker warns once
(`TrackingWarning`) and tracking stops for that process; the JSONL log stays the record.
Resume continues the same run without logging a step twice: TensorBoard purges the steps after the
checkpoint (`purge_step`), W&B resumes the run id recorded in `<run>/tracking.json`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

from ..config import Cell, Config, TrackingConfig

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
"""<run>/tensorboard/: the cell's event files (training, then the evaluation's `*.evaluation` file)."""
TRACKING_STATE = "tracking.json"
"""<run>/tracking.json: the W&B run id, so a resumed training and the evaluate job continue that run."""
EVALUATION_SUFFIX = ".evaluation"
TEST_METRICS = ("test_ppl", "test_nelbo", "test_nelbo_se", "test_nelbo_mc_se", "train_tokens_per_s", "train_wall_s")
"""metrics.json's numbers that go to the tracker's table as `test/...` (HParams metrics, W&B summary)."""


class TrackingWarning(UserWarning):
    """A tracker could not be used; training goes on with the JSONL log alone."""


# ---------------------------------------------------------------- what is logged
def scalar_tags(row: dict[str, Any]) -> dict[str, float]:
    """A JSONL row's numbers as tracker tags: val_* -> val/*, the rest -> train/*; the step, flags
    and missing values (REPA of a baseline) are left out."""
    out = {}
    for key, value in row.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
        out[name] = float(value)
    return out


def memory_scalars(device) -> dict[str, float]:
    """The process's peak memory: CUDA's peak allocation on a GPU, the peak resident set on a CPU."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        return {"memory/max_allocated_gb": torch.cuda.max_memory_allocated() / 2 ** 30}
    import resource

    return {"memory/max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}  # KiB on Linux


def cell_config(cfg: Config, cell: Cell) -> dict[str, Any]:
    """The cell's hyperparameters, nested (W&B config): its place in the grid, then its job spec."""
    from ..config.specs import cell_spec

    return {"cell": cell.name, "teacher": cell.teacher, "layer": cell.layer, "weight": cell.weight,
            "seed": cell.seed, **cell_spec(cfg, cell)}


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as TensorBoard HParams accepts it: dotted keys; str, number or bool values
    (None -> "none", lists -> JSON)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        elif value is None:
            out[name] = "none"
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value, separators=(",", ":"))
        else:
            out[name] = value
    return out


def test_summary(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json's finite numbers of TEST_METRICS as `test/<name>` (train_* keep their name)."""
    out = {}
    for key in TEST_METRICS:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key if key.startswith("train_") else f"test/{key[5:]}"] = float(value)
    return out


# ---------------------------------------------------------------- the trackers
class Tracker:
    """No tracking (backend none): every call does nothing. The backends override the three calls."""

    name = "none"
    package: str | None = None

    def start(self, run_dir: Path, cell: str, hparams: dict[str, Any], resume_step: int) -> None:
        """Open the cell's run; resume_step > 0 continues it after that step (nothing later is kept)."""

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Scalars of one step (`train/loss`, `val/ppl`, ...)."""

    def finish(self, summary: dict[str, float] | None = None) -> None:
        """Close the run; summary (the evaluation's test metrics) goes to the tracker's table."""


class TensorBoardTracker(Tracker):
    """Event files in <run>/tensorboard/; the evaluation writes the HParams summaries there too, so the
    HParams view has one row per cell with its training curves."""

    name, package = "tensorboard", "tensorboard"

    def __init__(self, evaluation: bool = False):
        self.evaluation, self.writer, self.hparams = evaluation, None, {}

    def start(self, run_dir, cell, hparams, resume_step):
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(run_dir) / TENSORBOARD_DIR
        self.hparams = flat_hparams(hparams)
        if self.evaluation:  # a re-evaluation replaces the previous one
            for old in folder.glob(f"*{EVALUATION_SUFFIX}"):
                old.unlink()
            self.writer = SummaryWriter(str(folder), filename_suffix=EVALUATION_SUFFIX)
        elif resume_step > 0:  # steps after the checkpoint were logged by the stopped process: purge them
            self.writer = SummaryWriter(str(folder), purge_step=resume_step + 1)
        else:  # a fresh start: a previous training of this cell is no longer its history
            shutil.rmtree(folder, ignore_errors=True)
            self.writer = SummaryWriter(str(folder))

    def log(self, step, scalars):
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def finish(self, summary=None):
        if summary and self.evaluation:
            from torch.utils.tensorboard.summary import hparams

            for summ in hparams(self.hparams, summary):
                self.writer.file_writer.add_summary(summ)
            step = int(self.hparams.get("train.steps", 0))
            for tag, value in summary.items():
                self.writer.add_scalar(tag, value, step)
        self.writer.close()


class WandbTracker(Tracker):
    """A W&B run per cell, named after it, its config the cell's hyperparameters; offline by default
    (each job's offline folder goes under $WANDB_DIR, or the cell's run folder, as
    <cell>.<phase>/wandb/offline-run-*: `wandb sync` them later; one run id joins them)."""

    name, package = "wandb", "wandb"

    def __init__(self, settings: TrackingConfig, evaluation: bool = False):
        self.settings, self.evaluation, self.run = settings, evaluation, None

    def start(self, run_dir, cell, hparams, resume_step):
        import wandb

        run_dir = Path(run_dir)
        state = run_dir / TRACKING_STATE
        run_id = None
        if (resume_step > 0 or self.evaluation) and state.exists():
            run_id = json.loads(state.read_text()).get("wandb_id")
        if run_id is None:
            from ..io import atomic_write_json

            run_id = f"{cell}-{uuid.uuid4().hex[:8]}"
            atomic_write_json(state, {"wandb_id": run_id})
        s = self.settings
        # one folder per job: wandb names an offline run by its second and id, so a training and its
        # evaluation started within one second would otherwise share (and overwrite) a folder
        phase = "evaluate" if self.evaluation else f"train-from-{resume_step}"
        folder = Path(os.environ.get("WANDB_DIR") or run_dir) / f"{cell}.{phase}"
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=s.project, entity=s.entity, group=s.group, tags=list(s.tags) or None,
                              mode=s.mode, name=cell, id=run_id, resume="allow", config=hparams,
                              dir=str(folder), reinit="create_new")

    def log(self, step, scalars):
        self.run.log(scalars, step=step)

    def finish(self, summary=None):
        if summary:
            self.run.summary.update(summary)
        self.run.finish()


class SafeTracker(Tracker):
    """A backend that can never stop training: its first error (an ImportError of a missing package
    included) warns once, names the fix, and turns tracking off for this process."""

    def __init__(self, backend: Tracker):
        self.backend, self.failed = backend, False

    def _call(self, what: str, *args) -> None:
        if self.failed:
            return
        try:
            getattr(self.backend, what)(*args)
        except Exception as e:  # noqa: BLE001 - a tracker's error must never end a training
            self.failed = True
            b = self.backend
            fix = (f"install it (pip install '{b.package}', or the project's [tracking] extra)"
                   if isinstance(e, ImportError) else "see the error")
            warnings.warn(f"tracking.backend = {b.name}: {what} failed ({type(e).__name__}: {e}); {fix}. "
                          "Tracking is off for this job; the JSONL log is still the record.",
                          TrackingWarning, stacklevel=3)

    def start(self, run_dir, cell, hparams, resume_step):
        self._call("start", Path(run_dir), cell, hparams, resume_step)

    def log(self, step, scalars):
        self._call("log", step, scalars)

    def finish(self, summary=None):
        self._call("finish", summary)


def make_tracker(settings: TrackingConfig, evaluation: bool = False) -> Tracker:
    """The configured tracker, wrapped so that it never stops a job. evaluation: the evaluate job's,
    which adds the test metrics to the training's run."""
    if settings.backend == "tensorboard":
        return SafeTracker(TensorBoardTracker(evaluation))
    if settings.backend == "wandb":
        return SafeTracker(WandbTracker(settings, evaluation))
    return Tracker()


def track_evaluation(cfg: Config, cell: Cell, run_dir, metrics: dict[str, Any]) -> None:
    """The evaluate job's part: the cell's test metrics with its hyperparameters, in its run."""
    tracker = make_tracker(cfg.tracking, evaluation=True)
    tracker.start(Path(run_dir), cell.name, cell_config(cfg, cell), 0)
    tracker.finish(test_summary(metrics))
