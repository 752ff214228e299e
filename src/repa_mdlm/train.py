"""One cell's training: N-ELBO + lambda * REPA, with a rolling checkpoint and automatic resume.

Every source of randomness is a pure function of (seed, step): the batch's sequences,
its diffusion times and its masks. A resumed run therefore replays exactly what an
uninterrupted run would have done, given the restored weights and optimizer state.

The rolling checkpoint (`<run>/checkpoint/`) and the growing log (`<run>/train_log.partial.jsonl`)
are never declared Snakemake outputs, so a failed or preempted job keeps them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import Cell, Config, ConfigError, cell_data_seed, compile_mode
from .data import Prefetcher, batch_indices, load_tokenizer, open_split, read_manifest
from .diffusion import corrupt, curriculum_t_max, diffusion_nelbo, masked_positions, sample_t
from .distributed import Distributed
from .evaluate import autocast_context, nelbo_per_sequence
from .io import (
    atomic_write_checked_json,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    folder_checksums,
    fsync_rename,
)
from .model import build_student
from .repa import Projection, alignment_loss, pool_student
from .status import HEARTBEAT

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint written, run again to resume
CHECKPOINT = "checkpoint"
PARTIAL_LOG = "train_log.partial.jsonl"
COMPILE_CACHE = ".torch-compile-cache"  # beside the run folders, shared by all cells


class CheckpointError(RuntimeError):
    pass


class NonFiniteLoss(FloatingPointError):
    pass


class Preempted(SystemExit):
    def __init__(self, step: int):
        super().__init__(EXIT_PREEMPTED)
        self.step = step


@dataclass
class RunPaths:
    run_dir: Path

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def previous_checkpoint(self) -> Path:
        return self.run_dir / f"{CHECKPOINT}.prev"

    @property
    def partial_log(self) -> Path:
        return self.run_dir / PARTIAL_LOG

    @property
    def model(self) -> Path:
        return self.run_dir / "model"

    @property
    def train_log(self) -> Path:
        return self.run_dir / "train_log.jsonl"

    @property
    def summary(self) -> Path:
        return self.run_dir / "train_summary.json"

    @property
    def resolved_config(self) -> Path:
        return self.run_dir / "config.yaml"


def step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def learning_rate(cfg: Config, step: int) -> float:
    tc = cfg.train
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "cosine":
        progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
        return tc.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    return tc.lr


def optimizer_class(cfg: Config) -> tuple[type[torch.optim.Optimizer], str]:
    """The optimizer the config names, and nothing else: the paper's 8-bit AdamW never silently
    becomes another optimizer (other numerics, 3 GB more memory) because a build is missing.
    Called before the model is built, so a job without bitsandbytes stops within seconds."""
    if cfg.train.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit, "bitsandbytes.AdamW8bit"
        except Exception as e:  # no usable bitsandbytes build on this machine
            raise ConfigError(
                f"train.optimizer = adamw8bit needs bitsandbytes, which failed to load here ({type(e).__name__}: "
                f"{e}). Install a bitsandbytes build for torch {torch.__version__} (`pip install bitsandbytes`), "
                "or set train.optimizer: adamw to train with torch's 32-bit AdamW instead (another optimizer, "
                "so every cell re-runs).") from e
    return torch.optim.AdamW, "torch.AdamW"


def make_optimizer(cfg: Config, params: list[torch.nn.Parameter]) -> tuple[torch.optim.Optimizer, str]:
    tc = cfg.train
    cls, name = optimizer_class(cfg)
    return cls(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay), name


def compile_backbone(model, cache_dir: Path, mode: str = "backbone") -> None:
    """torch.compile the transformer in place: "backbone", the whole stack as one graph, or "blocks",
    each block on its own (one graph reused by every block: a short cold compile). Parameter names are
    unchanged, so checkpoints stay interchangeable. Inductor's on-disk caches make every later process
    on the same shapes skip most of the compile; $TORCHINDUCTOR_CACHE_DIR overrides the place."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir.resolve())
    if mode == "blocks":
        for block in model.model.layers:
            block.compile(dynamic=False)
    elif mode == "backbone":
        model.model.compile(dynamic=False)
    else:
        raise ValueError(f"compile mode {mode!r}: choose backbone or blocks")


class _StopFlag:
    """SIGTERM (Slurm preemption, or its signal before the time limit) and SIGUSR1 ask for a stop."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        log.warning("received signal %d: checkpointing after this step", signum)
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _RunLock:
    """One writer per run folder: a second training process on the same cell is refused."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "w")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{self.path.parent}: another process is training this cell; refusing to run twice") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


class Trainer:
    def __init__(self, cfg: Config, cell: Cell, data_dir: str | os.PathLike, run_dir: str | os.PathLike,
                 features_dir: str | os.PathLike | None = None):
        self.cfg, self.cell = cfg, cell
        self.paths = RunPaths(Path(run_dir))
        optimizer_class(cfg)  # a missing bitsandbytes stops the job before the model is built
        self.dist = Distributed.from_env()
        self.device = self.dist.device()
        if cfg.train.global_batch % (self.dist.world_size * cfg.train.micro_batch):
            raise ConfigError(
                f"train.global_batch = {cfg.train.global_batch} must divide into {self.dist.world_size} ranks "
                f"x train.micro_batch = {cfg.train.micro_batch}")
        if self.device.type == "cuda" and cfg.train.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.data_dir = Path(data_dir)
        self.manifest = read_manifest(data_dir)
        if self.manifest["seq_len"] != cfg.seq_len:
            raise ConfigError(f"seq_len = {cfg.seq_len} but {data_dir} holds {self.manifest['seq_len']}-token sequences")
        self.train_tokens = open_split(data_dir, "train", verify=True)
        val = open_split(data_dir, "val", verify=True)
        self.val_tokens = val[: cfg.train.val_sequences]
        self.tokenizer = load_tokenizer(self.data_dir / "tokenizer")
        self.model = build_student(cfg.student, len(self.tokenizer), self.tokenizer.mask_token_id,
                                   self.tokenizer.eos_token_id, seed=cell.seed).to(self.device)
        self.model.config.diffusion_eps = cfg.diffusion.eps
        self.model.train()
        if cfg.train.activation_checkpointing:
            self.model.activation_checkpointing_enable({"use_reentrant": False})
        mode = compile_mode(cfg.train.compile)
        if mode != "off":
            compile_backbone(self.model, self.paths.run_dir.parent / COMPILE_CACHE, mode)
        params = list(self.model.parameters())
        self.teacher = self.features = self.projection = None
        if not cell.is_baseline:
            tcfg = cfg.teacher(cell.teacher)
            if cfg.teacher_features == "cached":
                from .teachers import FeatureCache

                if features_dir is None:
                    raise ConfigError("teacher_features = cached needs the teacher's feature folder")
                self.features = FeatureCache(Path(features_dir) / "train",
                                             self.manifest["splits"]["train"]["sha256"])
                teacher_dim = self.features.dim
            else:
                from .teachers import Teacher

                self.teacher = Teacher(tcfg, self.tokenizer, self.device)
                teacher_dim = self.teacher.dim
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cell.seed + 1)
                self.projection = Projection(cfg.student.hidden_size, teacher_dim, cfg.repa.projection_bias).to(self.device)
            params += list(self.projection.parameters())
        self.optimizer, self.optimizer_name = make_optimizer(cfg, params)
        self.params = params
        self.micro_steps = cfg.train.global_batch // cfg.train.micro_batch
        self.data_seed = cell_data_seed(cfg, cell)
        self.step = 0
        self.train_wall_s = 0.0
        self.bad_batches = 0

    # ---------------------------------------------------------------- one optimizer step
    def load_batch(self, step: int) -> dict:
        """Host-side inputs of `step` (runs on the prefetch thread): the global batch's clean
        tokens, and this rank's cached teacher features."""
        indices = batch_indices(len(self.train_tokens), step, self.cfg.train.global_batch, self.data_seed)
        batch = {"x0": torch.from_numpy(np.asarray(self.train_tokens[indices], dtype=np.int64))}
        if self.features is not None:
            batch["targets"] = self.features[indices[self.dist.shard(len(indices))]]
        return batch

    def train_step(self, step: int, batch: dict | None = None) -> dict:
        cfg, B = self.cfg, self.cfg.train.global_batch
        batch = batch or self.load_batch(step)
        x0 = batch["x0"].to(self.device, non_blocking=True)
        generator = torch.Generator(device=self.device).manual_seed(step_seed(self.cell.seed, step))
        t_max = curriculum_t_max(step, cfg.train.steps, cfg.diffusion.curriculum)
        t = sample_t(B, cfg.diffusion.eps, generator, cfg.diffusion.antithetic, t_max, device=self.device)
        x_t, masked = corrupt(x0, t, self.model.config.mask_token_id, cfg.diffusion.eps, generator)
        # every rank drew the whole global batch (antithetic t over all of it); keep this rank's shard
        shard = self.dist.shard(B)
        x0, t, x_t, masked = x0[shard], t[shard], x_t[shard], masked[shard]
        targets = None
        if "targets" in batch:
            targets = batch["targets"].to(self.device, non_blocking=True)
        elif self.teacher is not None:
            targets = self.teacher.encode(x0).to(self.device)
        lr = learning_rate(cfg, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        layer = None if self.cell.is_baseline else self.cell.layer
        mb = cfg.train.micro_batch
        positions = masked_positions(masked, mb)
        nelbo_total = torch.zeros((), device=self.device)
        repa_total = torch.zeros((), device=self.device)
        for k, start in enumerate(range(0, len(x0), mb)):
            sl = slice(start, start + mb)
            with autocast_context(self.device, cfg.train.precision):
                nelbo_sum, _, hidden = diffusion_nelbo(self.model, x0[sl], t[sl], masked[sl], x_t[sl], layer,
                                                       positions=positions[k])
                nelbo = nelbo_sum / B
                loss = nelbo
                if hidden is not None:
                    predicted = self.projection(pool_student(hidden))
                    repa = alignment_loss(predicted, targets[sl], cfg.repa.loss) * (mb / B)
                    loss = loss + self.cell.weight * repa
                    repa_total += repa.detach()
            loss.backward()
            nelbo_total += nelbo.detach()
        self.dist.sum_gradients(self.params)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.train.grad_clip or float("inf"))
        # one transfer reads every metric, and gates the optimizer step on them being finite
        sums = self.dist.sum_tensor(torch.stack([nelbo_total, repa_total]).double())
        nelbo_value, repa_value, grad_norm = torch.cat([sums, grad_norm.double().reshape(1)]).tolist()
        if self.cell.is_baseline:
            repa_value = None
        loss_value = nelbo_value + (self.cell.weight * repa_value if repa_value is not None else 0.0)
        metrics = {"loss": loss_value, "nelbo": nelbo_value, "repa": repa_value, "lr": lr,
                   "grad_norm": grad_norm, "t_max": t_max}
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            # never step on a bad batch: it would poison the weights and every later checkpoint
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_batches += 1
            where = (f"{self.cell.name}: non-finite loss or gradient at step {step + 1} "
                     f"(nelbo={nelbo_value}, repa={repa_value}, grad_norm={grad_norm})")
            if self.bad_batches > cfg.train.max_bad_batches:
                kept = (f"the last good checkpoint is kept in {self.paths.checkpoint}"
                        if self.paths.checkpoint.exists() else
                        "no checkpoint had been written yet, so a re-run starts from step 0")
                raise NonFiniteLoss(
                    f"{where}. Stopped; {kept}. "
                    f"train.max_bad_batches = {cfg.train.max_bad_batches} allows skipping a few bad batches.")
            log.warning("%s: skipped (%d of %d allowed)", where, self.bad_batches, cfg.train.max_bad_batches)
            return {**metrics, "skipped": True}
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return metrics

    def validate(self) -> dict:
        tc = self.cfg.train
        per_seq = nelbo_per_sequence(self.model, self.val_tokens, t_draws=2, eps=self.cfg.diffusion.eps,
                                     seed=self.cfg.evaluate.seed, batch_size=tc.micro_batch, precision=tc.precision)
        val_nelbo = float(per_seq.mean())
        return {"val_nelbo": val_nelbo, "val_ppl": math.exp(val_nelbo)}

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> None:
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
            (tmp / "state.json").write_text(json.dumps({
                "step": self.step, "train_wall_s": self.train_wall_s, "optimizer": self.optimizer_name,
                "bad_batches": self.bad_batches, "cell": self.cell.name, "files": files}))
        except OSError as e:  # disk full, quota, permissions: the last good checkpoint stays as it was
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"writing the step-{self.step} checkpoint to {tmp} failed: {e}. "
                                  f"The previous checkpoint in {self.paths.checkpoint} is intact; free space "
                                  "and re-run to resume from it.") from e
        current, previous = self.paths.checkpoint, self.paths.previous_checkpoint
        if current.exists():
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(current, previous)
        fsync_rename(tmp, current)

    def _checkpoint_problem(self, ckpt: Path) -> str | None:
        try:
            state = json.loads((ckpt / "state.json").read_text())
        except (OSError, ValueError) as e:
            return f"{ckpt / 'state.json'}: unreadable ({e})"
        for name, digest in state.get("files", {}).items():
            if not (ckpt / name).exists() or file_sha256(ckpt / name) != digest:
                return f"{ckpt / name}: missing, truncated or corrupt (checksum differs)"
        if state["optimizer"] != self.optimizer_name:
            return f"{ckpt} was written with {state['optimizer']}, this run uses {self.optimizer_name}"
        return None

    def try_resume(self) -> bool:
        """Resume from the newest valid checkpoint; a corrupt one falls back to the previous."""
        from safetensors.torch import load_model

        candidates = [c for c in (self.paths.checkpoint, self.paths.previous_checkpoint) if c.exists()]
        problems = []
        for ckpt in candidates:
            problem = self._checkpoint_problem(ckpt)
            if problem:
                log.warning("%s; trying an older checkpoint", problem)
                problems.append(problem)
                continue
            state = json.loads((ckpt / "state.json").read_text())
            load_model(self.model, str(ckpt / "model.safetensors"), device=str(self.device))
            if self.projection is not None:
                load_model(self.projection, str(ckpt / "projection.safetensors"), device=str(self.device))
            self.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=self.device,
                                                      weights_only=True))
            self.step, self.train_wall_s = state["step"], state["train_wall_s"]
            self.bad_batches = state.get("bad_batches", 0)
            if self.dist.is_main:
                self._truncate_log(self.step)
            log.info("resumed %s from %s at step %d", self.cell.name, ckpt, self.step)
            return True
        if problems:
            raise CheckpointError(
                "no usable checkpoint:\n  " + "\n  ".join(problems) +
                f"\nDelete {self.paths.checkpoint} and {self.paths.previous_checkpoint} to restart {self.cell.name} "
                "from step 0.")
        return False

    def _truncate_log(self, step: int) -> None:
        """Drop log rows written after the checkpoint: they will be written again."""
        if not self.paths.partial_log.exists():
            return
        rows = [line for line in self.paths.partial_log.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        atomic_write_text(self.paths.partial_log, "".join(r + "\n" for r in rows))

    def _log(self, row: dict) -> None:
        with open(self.paths.partial_log, "a") as f:
            f.write(json.dumps(row) + "\n")
        # heartbeat for `repa-mdlm status`
        atomic_write_json(self.paths.run_dir / HEARTBEAT, {"step": row["step"], "steps": self.cfg.train.steps,
                                                           "time": time.time(), "host": socket.gethostname(),
                                                           "pid": os.getpid()})

    # ---------------------------------------------------------------- the loop
    def run(self, stop_at_step: int | None = None) -> dict:
        from tqdm import tqdm

        cfg, tc = self.cfg, self.cfg.train
        main = self.dist.is_main
        if not self.try_resume() and main:
            self.paths.partial_log.unlink(missing_ok=True)
            self._log({"step": 0, **self.validate()})
        tokens_per_step = tc.global_batch * cfg.seq_len
        prefetch = Prefetcher(self.load_batch, tc.prefetch_batches, pin_memory=self.device.type == "cuda",
                              stop=tc.steps)
        with _StopFlag() as stop, prefetch, tqdm(total=tc.steps, initial=self.step, desc=self.cell.name,
                                                 unit="step", mininterval=5, disable=not main) as bar:
            while self.step < tc.steps:
                began = time.perf_counter()
                # no device synchronize: train_step's metrics read already waits for the step's
                # backward; the optimizer's kernels finish before the next step's first host sync
                metrics = self.train_step(self.step, prefetch.get(self.step))
                elapsed = time.perf_counter() - began
                self.train_wall_s += elapsed
                self.step += 1
                bar.update(1)
                row = {"step": self.step, **metrics} if metrics.get("skipped") else None
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    row = {"step": self.step, **metrics, "tokens_per_s": tokens_per_step / elapsed,
                           "elapsed_s": self.train_wall_s}
                    bar.set_postfix(loss=f"{metrics['loss']:.3f}")
                if main and (self.step % tc.val_every == 0 or self.step == tc.steps):
                    row = {**(row or {"step": self.step}), **self.validate()}
                if row and main:
                    self._log(row)
                interrupted = self.dist.any(stop.signum is not None) or self.step == stop_at_step
                if interrupted or (self.step % tc.checkpoint_every == 0 and self.step < tc.steps):
                    if main:
                        self.save_checkpoint()
                    self.dist.barrier()
                if interrupted:
                    log.warning("%s: stopped at step %d; checkpoint saved, re-run to resume", self.cell.name, self.step)
                    raise Preempted(self.step)
        return self.finish(tokens_per_step)

    def finish(self, tokens_per_step: int) -> dict:
        """Write the declared outputs (rank 0), then drop the rolling checkpoint."""
        from safetensors.torch import save_model

        summary = {
            "cell": self.cell.name,
            "steps": self.step,
            "train_wall_s": self.train_wall_s,
            "tokens_per_s": self.step * tokens_per_step / self.train_wall_s,
            "tokens": self.step * tokens_per_step,
            "optimizer": self.optimizer_name,
            "device": torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu",
            "world_size": self.dist.world_size,
            "teacher_input": None if self.teacher is None else self.teacher.input_mode,
            "torch": torch.__version__,
        }
        if not self.dist.is_main:
            self.dist.barrier()
            return summary

        tmp = self.paths.model.with_name("model.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        if self.projection is not None:
            save_model(self.projection, str(tmp / "repa_projection.safetensors"))
        fsync_rename(tmp, self.paths.model)
        atomic_write_text(self.paths.train_log, self.paths.partial_log.read_text())
        summary["model_files"] = folder_checksums(self.paths.model)  # checked by evaluate before use
        atomic_write_checked_json(self.paths.summary, summary)
        shutil.rmtree(self.paths.checkpoint, ignore_errors=True)
        shutil.rmtree(self.paths.previous_checkpoint, ignore_errors=True)
        self.paths.partial_log.unlink(missing_ok=True)
        (self.paths.run_dir / HEARTBEAT).unlink(missing_ok=True)
        self.dist.barrier()
        return summary


def train_cell(cfg: Config, cell: Cell, data_dir, run_dir, features_dir=None, stop_at_step: int | None = None) -> dict:
    import yaml

    run_dir = Path(run_dir)
    dist = Distributed.from_env()
    with _RunLock(run_dir) if dist.is_main else contextlib.nullcontext():
        if dist.is_main:
            atomic_write_text(run_dir / "config.yaml",
                              yaml.safe_dump({"cell": cell.name, **cfg.to_dict()}, sort_keys=False))
        trainer = Trainer(cfg, cell, data_dir, run_dir, features_dir)
        return trainer.run(stop_at_step=stop_at_step)
