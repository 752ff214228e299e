"""A run folder's files during and after training: the rolling checkpoint (write, verify, rotate,
resume), the growing log, and the declared outputs written when training finishes.

The rolling checkpoint (`<run>/checkpoint/`) and the growing log (`<run>/train_log.partial.jsonl`)
are never declared Snakemake outputs, so a failed or preempted job keeps them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .io import atomic_write_checked_json, atomic_write_text, file_sha256, folder_checksums, fsync_rename
from .layout import (
    CHECKPOINT,
    CHECKPOINT_STATE,
    HEARTBEAT,
    MODEL,
    PARTIAL_LOG,
    PREVIOUS_CHECKPOINT,
    PROVENANCE,
    RUN_CONFIG,
    TRAIN_LOG,
    TRAIN_SUMMARY,
)

log = logging.getLogger(__name__)



class CheckpointError(RuntimeError):
    pass


@dataclass
class RunPaths:
    run_dir: Path

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def previous_checkpoint(self) -> Path:
        return self.run_dir / PREVIOUS_CHECKPOINT

    @property
    def partial_log(self) -> Path:
        return self.run_dir / PARTIAL_LOG

    @property
    def model(self) -> Path:
        return self.run_dir / MODEL

    @property
    def train_log(self) -> Path:
        return self.run_dir / TRAIN_LOG

    @property
    def summary(self) -> Path:
        return self.run_dir / TRAIN_SUMMARY

    @property
    def heartbeat(self) -> Path:
        return self.run_dir / HEARTBEAT

    @property
    def resolved_config(self) -> Path:
        return self.run_dir / RUN_CONFIG


@dataclass
class TrainingState:
    """What a checkpoint restores beside the weights and the optimizer: where the loop stood."""
    step: int = 0
    train_wall_s: float = 0.0
    bad_batches: int = 0


class Checkpointer:
    """Saves and restores one cell's training state (student, projection, optimizer, TrainingState)
    in its run folder, and turns it into the declared outputs at the end."""

    def __init__(self, paths: RunPaths, cell_name: str, model: torch.nn.Module, projection: torch.nn.Module | None,
                 optimizer: torch.optim.Optimizer, optimizer_name: str, device: torch.device, config=None):
        """config: the cell's Config (its hash and hub revisions go into the summary's provenance);
        None: the run folder's config.yaml, which train_cell writes before training."""
        self.paths, self.cell_name, self.config = paths, cell_name, config
        self.model, self.projection = model, projection
        self.optimizer, self.optimizer_name = optimizer, optimizer_name
        self.device = device

    def save(self, state: TrainingState) -> None:
        """Write `checkpoint.tmp/`, then rotate: checkpoint -> checkpoint.prev, tmp -> checkpoint.

        Every file's checksum goes into state.json, so a truncated or flipped file is caught
        on resume, which then falls back to checkpoint.prev.
        """
        from safetensors.torch import save_model

        tmp = self.paths.run_dir / f"{CHECKPOINT}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            save_model(self.model, str(tmp / "model.safetensors"))
            if self.projection is not None:
                save_model(self.projection, str(tmp / "projection.safetensors"))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
            (tmp / CHECKPOINT_STATE).write_text(json.dumps({
                "step": state.step, "train_wall_s": state.train_wall_s, "optimizer": self.optimizer_name,
                "bad_batches": state.bad_batches, "cell": self.cell_name, "files": files}))
        except OSError as e:  # disk full, quota, permissions: the last good checkpoint stays as it was
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"writing the step-{state.step} checkpoint to {tmp} failed: {e}. "
                                  f"The previous checkpoint in {self.paths.checkpoint} is intact; free space "
                                  "and re-run to resume from it.") from e
        current, previous = self.paths.checkpoint, self.paths.previous_checkpoint
        if current.exists():
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(current, previous)
        fsync_rename(tmp, current)

    def problem(self, ckpt: Path) -> str | None:
        """Why `ckpt` cannot be resumed from, or None."""
        try:
            state = json.loads((ckpt / CHECKPOINT_STATE).read_text())
        except (OSError, ValueError) as e:
            return f"{ckpt / CHECKPOINT_STATE}: unreadable ({e})"
        for name, digest in state.get("files", {}).items():
            if not (ckpt / name).exists() or file_sha256(ckpt / name) != digest:
                return f"{ckpt / name}: missing, truncated or corrupt (checksum differs)"
        if state["optimizer"] != self.optimizer_name:
            return f"{ckpt} was written with {state['optimizer']}, this run uses {self.optimizer_name}"
        return None

    def resume(self, truncate_log: bool) -> TrainingState | None:
        """Load the newest valid checkpoint (a corrupt one falls back to the previous) and return its
        state; None when there is none. `truncate_log`: drop log rows written after it (rank 0)."""
        from safetensors.torch import load_model

        candidates = [c for c in (self.paths.checkpoint, self.paths.previous_checkpoint) if c.exists()]
        problems = []
        for ckpt in candidates:
            problem = self.problem(ckpt)
            if problem:
                log.warning("%s; trying an older checkpoint", problem)
                problems.append(problem)
                continue
            saved = json.loads((ckpt / CHECKPOINT_STATE).read_text())
            load_model(self.model, str(ckpt / "model.safetensors"), device=str(self.device))
            if self.projection is not None:
                load_model(self.projection, str(ckpt / "projection.safetensors"), device=str(self.device))
            self.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=self.device,
                                                      weights_only=True))
            state = TrainingState(saved["step"], saved["train_wall_s"], saved.get("bad_batches", 0))
            if truncate_log:
                self.truncate_log(state.step)
            log.info("resumed %s from %s at step %d", self.cell_name, ckpt, state.step)
            return state
        if problems:
            raise CheckpointError(
                "no usable checkpoint:\n  " + "\n  ".join(problems) +
                f"\nDelete {self.paths.checkpoint} and {self.paths.previous_checkpoint} to restart {self.cell_name} "
                "from step 0.")
        return None

    def truncate_log(self, step: int) -> None:
        """Drop log rows written after the checkpoint: they will be written again."""
        if not self.paths.partial_log.exists():
            return
        rows = [line for line in self.paths.partial_log.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        atomic_write_text(self.paths.partial_log, "".join(r + "\n" for r in rows))

    def finish(self, summary: dict) -> None:
        """Write the declared outputs (model, log, summary with the run's provenance), then drop the
        rolling checkpoint, the partial log and the heartbeat. Rank 0 only."""
        from safetensors.torch import save_model

        from .provenance import collect

        tmp = self.paths.model.with_name("model.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        if self.projection is not None:
            save_model(self.projection, str(tmp / "repa_projection.safetensors"))
        fsync_rename(tmp, self.paths.model)
        atomic_write_text(self.paths.train_log, self.paths.partial_log.read_text())
        summary["model_files"] = folder_checksums(self.paths.model)  # checked by evaluate before use
        # the config as config.yaml holds it (the cell's name, then the whole config), so both hash alike
        config = ({"cell": self.cell_name, **self.config.to_dict()} if self.config is not None
                  else self.paths.resolved_config if self.paths.resolved_config.exists() else None)
        summary[PROVENANCE] = collect(config)
        atomic_write_checked_json(self.paths.summary, summary)
        shutil.rmtree(self.paths.checkpoint, ignore_errors=True)
        shutil.rmtree(self.paths.previous_checkpoint, ignore_errors=True)
        self.paths.partial_log.unlink(missing_ok=True)
        self.paths.heartbeat.unlink(missing_ok=True)


def verified_summary(run_dir: str | os.PathLike) -> dict:
    """A finished cell's train_summary.json, after checking the model folder's files against the
    checksums training recorded there (bit rot stops here, naming the file and the command that
    retrains the cell)."""
    from .io import DataError, changed_files, read_json_object, rebuild_command

    summary_path = Path(run_dir) / TRAIN_SUMMARY
    summary = read_json_object(summary_path, "training summary", rule="train")
    changed = changed_files(Path(run_dir) / MODEL, summary.get("model_files"))
    if changed:
        raise DataError(f"{changed[0]}: the trained model differs from the one training wrote (bit rot or a "
                        f"replaced file); train the cell again with {rebuild_command(summary_path, 'train')}")
    return summary


def load_trained_student(run_dir: str | os.PathLike, device: torch.device | str = "cpu"):
    """(model, train_summary) of a finished cell, its files checked first (verified_summary)."""
    from .model import load_student

    summary = verified_summary(run_dir)
    return load_student(Path(run_dir) / MODEL).to(device), summary
