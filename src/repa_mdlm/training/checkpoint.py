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

from ..io import (
    atomic_write_checked_json,
    atomic_write_text,
    file_sha256,
    folder_checksums,
    fsync_rename,
    json_digest,
)
from ..layout import (
    CHECKPOINT,
    CHECKPOINT_STATE,
    HEARTBEAT,
    MODEL,
    PARTIAL_LOG,
    PREVIOUS_CHECKPOINT,
    PROVENANCE,
    RUN_CONFIG,
    SUPERSEDED,
    TRAIN_LOG,
    TRAIN_LOG_SHA256,
    TRAIN_SUMMARY,
)

log = logging.getLogger(__name__)
TRAINED_ON = "trained_on"
"""train_summary.json's key for training_identity's hashes (spec, data, features) of the finished model."""



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


def training_identity(spec: dict, manifest: dict, features_meta: dict | None) -> dict:
    """What a checkpoint vouches it was trained on: the cell's spec (specs.vouched_cell_spec: every setting
    that changes the result) and its inputs (the token arrays it reads, the tokenizer with its mask
    id, the teacher's feature cache). A checkpoint is resumed only under the same identity."""
    data = {key: manifest.get(key) for key in ("seq_len", "eos_token_id", "mask_token_id", "tokenizer_size",
                                                "tokenizer_files")}
    data["splits"] = {split: manifest["splits"][split].get("sha256") for split in ("train", "val")}
    return {"spec_sha256": json_digest(spec), "spec": spec, "data_sha256": json_digest(data),
            "features_sha256": None if features_meta is None else features_meta.get("sha256")}


def identity_differences(saved: dict | None, current: dict) -> list[str]:
    """What differs between a checkpoint's identity and this run's, in words (empty: the same)."""
    if not saved:
        return ["it records no spec or inputs (written before checkpoints vouched for them)"]
    found = []
    if saved.get("spec_sha256") != current["spec_sha256"]:
        changed = sorted(_changed_keys(saved.get("spec") or {}, current["spec"]))
        found.append("the cell's spec differs (" + (", ".join(changed[:6]) or "unreadable") +
                     (", ..." if len(changed) > 6 else "") + ")")
    if saved.get("data_sha256") != current["data_sha256"]:
        found.append("the token arrays or the tokenizer (mask id included) were rebuilt since")
    if saved.get("features_sha256") != current["features_sha256"]:
        found.append("the teacher's feature cache differs")
    return found


def _changed_keys(old, new, prefix: str = ""):
    if isinstance(old, dict) and isinstance(new, dict):
        for key in set(old) | set(new):
            yield from _changed_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
    elif old != new:
        yield f"{prefix}: {old!r} -> {new!r}"


class Checkpointer:
    """Saves and restores one cell's training state (student, projection, optimizer, TrainingState)
    in its run folder, and turns it into the declared outputs at the end."""

    def __init__(self, paths: RunPaths, cell_name: str, model: torch.nn.Module, projection: torch.nn.Module | None,
                 optimizer: torch.optim.Optimizer, optimizer_name: str, device: torch.device, config=None,
                 identity: dict | None = None):
        """config: the cell's Config (its hash and hub revisions go into the summary's provenance);
        None: the run folder's config.yaml, which train_cell writes before training. identity:
        training_identity of this run; a checkpoint of another identity is moved aside, never resumed."""
        self.paths, self.cell_name, self.config, self.identity = paths, cell_name, config, identity
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
                "bad_batches": state.bad_batches, "cell": self.cell_name, "files": files,
                "identity": self.identity}))
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

        self.set_aside_foreign_checkpoints()
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

    def set_aside_foreign_checkpoints(self) -> None:
        """Move every checkpoint trained on another spec or other inputs (and the partial log that goes
        with them) to <run>/superseded/<its spec hash>/: resuming it would finish a model trained under two
        configs, labelled with the second. Moved, never deleted; the log says why and where."""
        if self.identity is None:
            return
        foreign = {}
        for ckpt in (self.paths.checkpoint, self.paths.previous_checkpoint):
            try:
                saved = json.loads((ckpt / CHECKPOINT_STATE).read_text()).get("identity")
            except (OSError, ValueError):
                continue  # unreadable: problem() reports it, and resume falls back to the other one
            differences = identity_differences(saved, self.identity)
            if differences:
                foreign[ckpt] = (saved, differences)
        if not foreign:
            return
        saved = next(iter(foreign.values()))[0] or {}
        aside = _free_folder(self.paths.run_dir / SUPERSEDED / str(saved.get("spec_sha256") or "unvouched")[:16])
        aside.mkdir(parents=True)
        for ckpt, (_, differences) in foreign.items():
            os.replace(ckpt, aside / ckpt.name)
            log.warning("%s: not resuming %s: %s. Moved to %s; training starts again from its last valid "
                        "checkpoint or step 0.", self.cell_name, ckpt.name, "; ".join(differences), aside / ckpt.name)
        if not any(c.exists() for c in (self.paths.checkpoint, self.paths.previous_checkpoint)) \
                and self.paths.partial_log.exists():
            os.replace(self.paths.partial_log, aside / self.paths.partial_log.name)

    def truncate_log(self, step: int) -> None:
        """Drop log rows written after the checkpoint: they will be written again. A last row cut short
        (the trainer killed while appending it, or a full disk) was written after the checkpoint, since
        a step's row is appended before its checkpoint is saved: it goes too. A cut row before the last
        is damage the resume cannot undo, and is named."""
        if not self.paths.partial_log.exists():
            return
        lines = [line for line in self.paths.partial_log.read_text().splitlines() if line.strip()]
        rows = []
        for number, line in enumerate(lines, start=1):
            try:
                row_step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                if number == len(lines):
                    log.warning("%s: its last row is cut short (%d characters); dropped, it is written again",
                                self.paths.partial_log, len(line))
                    break
                raise CheckpointError(f"{self.paths.partial_log}: row {number} of {len(lines)} is not a log row "
                                      f"({line[:60]!r}); the log cannot be resumed. Move the run folder aside "
                                      "and train the cell again") from None
            if row_step <= step:
                rows.append(line)
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
        summary[TRAIN_LOG_SHA256] = file_sha256(self.paths.train_log)  # checked by every reader of the log
        if self.identity is not None:  # what the model was trained on, for whoever reads it later
            summary[TRAINED_ON] = {k: v for k, v in self.identity.items() if k != "spec"}
        # the config as config.yaml holds it (the cell's name, then the whole config), so both hash alike
        config = ({"cell": self.cell_name, **self.config.to_dict()} if self.config is not None
                  else self.paths.resolved_config if self.paths.resolved_config.exists() else None)
        summary[PROVENANCE] = collect(config)
        atomic_write_checked_json(self.paths.summary, summary)
        shutil.rmtree(self.paths.checkpoint, ignore_errors=True)
        shutil.rmtree(self.paths.previous_checkpoint, ignore_errors=True)
        self.paths.partial_log.unlink(missing_ok=True)
        self.paths.heartbeat.unlink(missing_ok=True)


def _free_folder(path: Path) -> Path:
    """path, or path-2, path-3, ...: the first that does not exist (never overwrite what was set aside)."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def verified_summary(run_dir: str | os.PathLike) -> dict:
    """A finished cell's train_summary.json, after checking the model folder's files against the
    checksums training recorded there (bit rot stops here, naming the file and the command that
    retrains the cell)."""
    from ..io import DataError, changed_files, read_json_object, rebuild_command

    summary_path = Path(run_dir) / TRAIN_SUMMARY
    summary = read_json_object(summary_path, "training summary", rule="train")
    changed = changed_files(Path(run_dir) / MODEL, summary.get("model_files"))
    if changed:
        raise DataError(f"{changed[0]}: the trained model differs from the one training wrote (bit rot or a "
                        f"replaced file); train the cell again with {rebuild_command(summary_path, 'train')}")
    return summary


def load_trained_student(run_dir: str | os.PathLike, device: torch.device | str = "cpu"):
    """(model, train_summary) of a finished cell, its files checked first (verified_summary)."""
    from ..model.student import load_student

    summary = verified_summary(run_dir)
    return load_student(Path(run_dir) / MODEL).to(device), summary
