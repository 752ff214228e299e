"""One cell's training: N-ELBO + lambda * REPA (objective.py), with a rolling checkpoint and
automatic resume (checkpoint.py). train_summary.json: ``step_seconds``, the optimisation steps alone (=
``train_wall_s``, carried over resumes); for the process that finished, from step ``timings_from_step``:
``step_seconds_median``, ``startup_seconds`` (to the first step), ``validation_seconds``, ``checkpoint_seconds``.

Every source of randomness is a pure function of (seed, step): the batch's sequences,
its diffusion times and its masks. A resumed run therefore replays exactly what an
uninterrupted run would have done, given the restored weights and optimizer state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import signal
import socket
import statistics
import time
from pathlib import Path

import torch

from ..config import Cell, Config, ConfigError, cell_data_seed, compile_mode
from ..config.specs import vouched_cell_spec
from ..data.dataset import Prefetcher, load_tokenizer, open_split, read_manifest
from ..io import atomic_write_json, atomic_write_text
from ..model.diffusion import mean_nelbo_per_sequence
from ..model.repa import Projection
from ..model.student import build_student
from .checkpoint import Checkpointer, CheckpointError, RunPaths, TrainingState, training_identity
from .distributed import Distributed
from .objective import Objective, gather_batch
from .optim import compile_backbone, learning_rate, make_optimizer, optimizer_class
from .tracking import Tracker, cell_config, make_tracker, memory_scalars, scalar_tags

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint written, run again to resume
COMPILE_CACHE = ".torch-compile-cache"  # beside the run folders, shared by all cells
_clock = time.perf_counter  # every duration the trainer records (tests swap in a fake clock)


class NonFiniteLoss(FloatingPointError):
    pass


class Preempted(SystemExit):
    def __init__(self, step: int):
        super().__init__(EXIT_PREEMPTED)
        self.step = step


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


class RunFolderBusy(CheckpointError):
    """Another live process trains this cell: one line to the user (the CLI prints it), no traceback."""


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
            raise RunFolderBusy(f"{self.path.parent}: another process is training this cell; refusing to run "
                                "twice (`repa-mdlm status` shows it; wait for it, or stop it with kill -TERM, which "
                                "checkpoints)") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def append_log_row(paths: RunPaths, row: dict, steps: int) -> None:
    """One row of the growing log, and the heartbeat `repa-mdlm status` reads."""
    with open(paths.partial_log, "a") as f:
        f.write(json.dumps(row) + "\n")
    atomic_write_json(paths.heartbeat, {"step": row["step"], "steps": steps, "time": time.time(),
                                        "host": socket.gethostname(), "pid": os.getpid()})


def _repa_sources(cfg: Config, cell: Cell, tokenizer, device: torch.device, train_sha256: str,
                  features_dir) -> tuple[object | None, object | None, int]:
    """Where a REPA cell's targets come from: (online Teacher, FeatureCache, teacher dim); one of the two is None."""
    if cfg.teacher_features == "cached":
        from ..teachers.tokenwise import open_feature_cache

        if features_dir is None:
            raise ConfigError("teacher_features = cached needs the teacher's feature folder")
        features = open_feature_cache(Path(features_dir) / "train", cfg.arm(cell).alignment,
                                      tokens_sha256=train_sha256, teacher=cfg.teacher(cell.teacher),
                                      seq_len=cfg.seq_len)
        return None, features, features.dim
    from ..teachers.teacher import Teacher

    teacher = Teacher(cfg.teacher(cell.teacher), tokenizer, device)
    return teacher, None, teacher.dim


def _projection(cfg: Config, cell: Cell, teacher_dim: int) -> Projection:
    """The cell's projector (its arm's kind and width), initialised from the cell's seed + 1."""
    arm = cfg.arm(cell)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cell.seed + 1)
        return Projection(cfg.student.hidden_size, teacher_dim, cfg.repa.projection_bias, arm.projector,
                          arm.projector_hidden_size)


def _step_targets(batch: dict, teacher, alignment: str, x0: torch.Tensor, weight: float, device):
    """A step's REPA targets on the device: none where the schedule has switched REPA off (no teacher
    forward either) or for the baseline; the cached ones of the batch; or the online teacher's, pooled
    [B, d] or SpanTargets (from the span maps and inputs the read-ahead made, when it made them)."""
    if weight == 0.0 or ("targets" not in batch and teacher is None):
        return None
    if "targets" in batch:
        return batch["targets"].to(device, non_blocking=True)
    if alignment != "tokenwise":
        return teacher.encode(x0).to(device)
    from ..teachers.tokenwise import encode_span_inputs, encode_spans

    if "span_encodings" not in batch:
        return encode_spans(teacher, x0).to(device)
    encodings, maps = batch["span_encodings"]
    return encode_span_inputs(teacher, teacher.collate(encodings), maps).to(device)


@contextlib.contextmanager
def _timed(seconds: dict[str, float], key: str):
    """Add the block's seconds to seconds[key] (a trainer's self.seconds)."""
    began = _clock()
    yield
    seconds[key] += _clock() - began


class Trainer:
    def __init__(self, cfg: Config, cell: Cell, data_dir: str | os.PathLike, run_dir: str | os.PathLike,
                 features_dir: str | os.PathLike | None = None):
        self.constructed = _clock()
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
            self.teacher, self.features, teacher_dim = _repa_sources(
                cfg, cell, self.tokenizer, self.device, self.manifest["splits"]["train"]["sha256"], features_dir)
            self.projection = _projection(cfg, cell, teacher_dim).to(self.device)
            params += list(self.projection.parameters())
        self.optimizer, self.optimizer_name = make_optimizer(cfg, params)
        self.params = params
        self.data_seed = cell_data_seed(cfg, cell)
        self.objective = Objective.of(cfg, cell, self.model, self.projection)
        identity = training_identity(vouched_cell_spec(cfg, cell), self.manifest, self.features and self.features.meta)
        self.checkpointer = Checkpointer(self.paths, cell.name, self.model, self.projection, self.optimizer,
                                         self.optimizer_name, self.device, identity=identity)
        self.step, self.train_wall_s, self.bad_batches = 0, 0.0, 0
        self.step_times: list[float] = []  # this process's steps, in seconds
        self.seconds = {"startup_seconds": 0.0, "validation_seconds": 0.0, "checkpoint_seconds": 0.0}
        self.tracker: Tracker = Tracker()  # run() opens the configured one (rank 0)

    # ---------------------------------------------------------------- one optimizer step
    def load_batch(self, step: int) -> dict:
        """Host-side inputs of `step` (runs on the prefetch thread): the global batch's clean
        tokens, this rank's cached teacher features, and (token-wise, online) this rank's span maps and
        teacher inputs, which depend on the clean tokens alone."""
        B = self.cfg.train.global_batch
        batch = gather_batch(self.train_tokens, step, B, self.data_seed, self.features, self.dist.shard(B))
        if self.teacher is not None and self.objective.alignment == "tokenwise" and self.objective.repa_weight(step):
            from ..teachers.tokenwise import span_encodings

            batch["span_encodings"] = span_encodings(self.teacher, batch["x0"][self.dist.shard(B)].numpy())
        return batch

    def train_step(self, step: int, batch: dict | None = None) -> dict:
        batch = batch or self.load_batch(step)
        x0 = batch["x0"].to(self.device, non_blocking=True)
        noisy = self.objective.draw_noise(x0, step, self.dist.shard(self.cfg.train.global_batch))
        weight = self.objective.repa_weight(step)
        targets = _step_targets(batch, self.teacher, self.objective.alignment, noisy.x0, weight, self.device)
        lr = learning_rate(self.cfg, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        nelbo_total = torch.zeros((), device=self.device)
        repa_total = torch.zeros((), device=self.device)
        for k, sl in enumerate(self.objective.micro_batches(noisy)):
            nelbo, repa = self.objective.backward(noisy, k, None if targets is None else targets[sl], weight=weight)
            nelbo_total += nelbo
            if repa is not None:
                repa_total += repa
        known = {"lr": lr, "t_max": noisy.t_max, **({"repa_weight": weight} if self.objective.schedules_weight else {})}
        return self._optimizer_step(step, known, nelbo_total, repa_total)

    def _optimizer_step(self, step: int, known: dict, nelbo_total: torch.Tensor, repa_total: torch.Tensor) -> dict:
        """Sum the ranks' gradients, clip, read the metrics, and step unless they are not finite."""
        cfg = self.cfg
        self.dist.sum_gradients(self.params)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.train.grad_clip or float("inf"))
        # one transfer reads every metric, and gates the optimizer step on them being finite
        sums = self.dist.sum_tensor(torch.stack([nelbo_total, repa_total]).double())
        nelbo_value, repa_value, grad_norm = torch.cat([sums, grad_norm.double().reshape(1)]).tolist()
        weight = known.get("repa_weight", self.cell.weight)
        if self.cell.is_baseline or weight == 0.0:
            repa_value = None
        loss_value = nelbo_value + (weight * repa_value if repa_value is not None else 0.0)
        metrics = {"loss": loss_value, "nelbo": nelbo_value, "repa": repa_value, "lr": known["lr"],
                   "grad_norm": grad_norm, "t_max": known["t_max"]}
        if "repa_weight" in known:  # a scheduled lambda: the weight of this step, in the training log
            metrics["repa_weight"] = weight
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
        with _timed(self.seconds, "validation_seconds"):
            per_seq = mean_nelbo_per_sequence(self.model, self.val_tokens, t_draws=2, eps=self.cfg.diffusion.eps,
                                              seed=self.cfg.evaluate.seed, batch_size=tc.micro_batch,
                                              precision=tc.precision)
        val_nelbo = float(per_seq.mean())
        return {"val_nelbo": val_nelbo, "val_ppl": math.exp(val_nelbo)}

    # ---------------------------------------------------------------- checkpoints and the loop
    def try_resume(self) -> bool:
        """Resume from the newest valid checkpoint; a corrupt one falls back to the previous."""
        state = self.checkpointer.resume(truncate_log=self.dist.is_main)
        if state is None:
            return False
        self.step, self.train_wall_s, self.bad_batches = state.step, state.train_wall_s, state.bad_batches
        return True

    def run(self, stop_at_step: int | None = None) -> dict:
        """Train to train.steps (resuming from a checkpoint), with the tracker open on rank 0 throughout."""
        resumed = self.try_resume()
        self.tracker = make_tracker(self.cfg.tracking) if self.dist.is_main else Tracker()
        self.tracker.start(self.paths.run_dir, self.cell.name, cell_config(self.cfg, self.cell), self.step)
        try:
            summary = self._loop(resumed, stop_at_step)
        except BaseException:  # preempted or failed: close the tracker's run, keep what it logged
            self.tracker.finish()
            raise
        self.tracker.finish({k: float(v) for k, v in summary.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)})
        return summary

    def record(self, row: dict) -> None:
        """One row of the JSONL log (the record), and the same numbers to the tracker. Rank 0 only."""
        append_log_row(self.paths, row, self.cfg.train.steps)
        self.tracker.log(row["step"], {**scalar_tags(row), **memory_scalars(self.device)})

    def _loop(self, resumed: bool, stop_at_step: int | None) -> dict:
        from tqdm import tqdm

        cfg, tc = self.cfg, self.cfg.train
        main = self.dist.is_main
        if not resumed and main:
            self.paths.partial_log.unlink(missing_ok=True)
            self.record({"step": 0, **self.validate()})
        tokens_per_step = tc.global_batch * cfg.seq_len
        prefetch = Prefetcher(self.load_batch, tc.prefetch_batches, pin_memory=self.device.type == "cuda",
                              stop=tc.steps)
        with _StopFlag() as stop, prefetch, tqdm(total=tc.steps, initial=self.step, desc=self.cell.name,
                                                 unit="step", mininterval=5, disable=not main) as bar:
            self.seconds["startup_seconds"] = _clock() - self.constructed - self.seconds["validation_seconds"]
            while self.step < tc.steps:
                began = _clock()
                # no device synchronize: train_step's metrics read already waits for the step's
                # backward; the optimizer's kernels finish before the next step's first host sync
                metrics = self.train_step(self.step, prefetch.get(self.step))
                elapsed = _clock() - began
                self.train_wall_s += elapsed
                self.step_times.append(elapsed)
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
                    self.record(row)
                interrupted = self.dist.any(stop.signum is not None) or self.step == stop_at_step
                if interrupted or (self.step % tc.checkpoint_every == 0 and self.step < tc.steps):
                    with _timed(self.seconds, "checkpoint_seconds"):
                        if main:
                            self.checkpointer.save(TrainingState(self.step, self.train_wall_s, self.bad_batches))
                        self.dist.barrier()
                if interrupted:
                    log.warning("%s: stopped at step %d; checkpoint saved, re-run to resume", self.cell.name, self.step)
                    raise Preempted(self.step)
        return finish(self, tokens_per_step)


def finish(self: Trainer, tokens_per_step: int) -> dict:
    """A trainer's last act: write the declared outputs (rank 0), then drop the rolling checkpoint."""
    summary = {"cell": self.cell.name, "steps": self.step, "train_wall_s": self.train_wall_s,
               "tokens_per_s": self.step * tokens_per_step / self.train_wall_s,
               "tokens": self.step * tokens_per_step, "optimizer": self.optimizer_name,
               "step_seconds": self.train_wall_s,  # train_wall_s has always summed the steps alone
               "step_seconds_median": statistics.median(self.step_times) if self.step_times else None,
               **self.seconds, "timings_from_step": self.step - len(self.step_times),
               "device": torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu",
               "world_size": self.dist.world_size,
               "teacher_input": None if self.teacher is None else self.teacher.input_mode,
               "torch": torch.__version__}
    if self.dist.is_main:
        self.checkpointer.finish(summary)
    self.dist.barrier()
    return summary


def train_cell(cfg: Config, cell: Cell, data_dir, run_dir, features_dir=None, stop_at_step: int | None = None) -> dict:
    import yaml

    run_dir = Path(run_dir)
    cfg.require_cell(cell)
    dist = Distributed.from_env()
    with _RunLock(run_dir) if dist.is_main else contextlib.nullcontext():
        resolved = yaml.safe_dump({"cell": cell.name, **cfg.to_dict()}, sort_keys=False)
        if dist.is_main:
            atomic_write_text(RunPaths(run_dir).resolved_config, resolved)
        summary = Trainer(cfg, cell, data_dir, run_dir, features_dir).run(stop_at_step=stop_at_step)
        if dist.is_main and not RunPaths(run_dir).resolved_config.exists():  # removed by a failed duplicate job
            atomic_write_text(RunPaths(run_dir).resolved_config, resolved)
        return summary
