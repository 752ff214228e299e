"""Several GPUs for one cell (torchrun), and one GPU per job on a multi-GPU workstation.

Data parallelism without DDP's wrapper: every rank draws the same global batch, t and masks
(pure functions of seed and step) and works on its own shard; gradients, which each rank
scales by 1/global_batch, are summed across ranks. The result is the single-process
result up to float summation order, whatever the number of ranks. Only rank 0 writes.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def shard(self, global_batch: int) -> slice:
        size = global_batch // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    def sum_tensor(self, values: torch.Tensor) -> torch.Tensor:
        """Sum over ranks without a host sync (the caller reads the result when it needs it)."""
        if self.enabled:
            values = values.clone()
            dist.all_reduce(values)
        return values

    def sum(self, value: torch.Tensor | float) -> float:
        if not self.enabled:
            return float(value)
        t = torch.as_tensor(value, dtype=torch.float64, device=self.device()).clone()
        dist.all_reduce(t)
        return float(t)

    def any(self, flag: bool) -> bool:
        return self.sum(1.0 if flag else 0.0) > 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def visible_gpu_count() -> int:
    """GPUs on this machine, counted without initialising CUDA (which would freeze
    CUDA_VISIBLE_DEVICES for this process)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


FAKE_GPUS_ENV = "REPA_MDLM_FAKE_GPUS"
"""Set to 1 (a test cluster whose GPUs are fake devices) to let a job that asks for GPUs run on the CPU."""


def require_gpus(requested: int | None, key: str) -> None:
    """Refuse a job that asks for GPUs (config `key`, e.g. resources.train.gpus) where fewer CUDA devices
    are visible: it would otherwise run on the CPU, or on fewer ranks, without a word. Called before
    anything is built; after _pin_one_gpu, since counting may initialise CUDA (which freezes
    CUDA_VISIBLE_DEVICES). None or 0: no GPU asked for, nothing to check."""
    if not requested:
        return
    visible = torch.cuda.device_count()
    if visible >= requested:
        return
    if os.environ.get(FAKE_GPUS_ENV) == "1":  # a test cluster's fake GPU devices (scripts/local-slurm.sh)
        log.warning("%s = %d but %d CUDA device(s) are visible; going on on the CPU, as %s=1 asks",
                    key, requested, visible, FAKE_GPUS_ENV)
        return
    from ..config import ConfigError

    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = "no CUDA device is visible" if not visible else f"only {visible} CUDA device(s) are visible"
    raise ConfigError(
        f"{key} = {requested}, but {seen} (CUDA_VISIBLE_DEVICES={'unset' if mask is None else repr(mask)}; "
        f"torch {torch.__version__}, CUDA {torch.version.cuda or 'not compiled in'}). Set {key}: 0 to run on "
        f"the CPU, or run where {requested} GPU(s) are visible (a GPU node or partition, a GPU profile).")


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """torchrun with `nproc` ranks, each running `repa-mdlm <argv>`. --nproc itself is left out: Python's
    argparse matches options even after the script's name, so torchrun took it for an abbreviation of its
    own --nproc-per-node and refused to start; the ranks know their number from WORLD_SIZE."""
    import sys

    rest, args = [], iter(argv)
    for arg in args:
        if arg == "--nproc":
            next(args, None)  # and its value
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "repa_mdlm", *rest]


def relaunch_with_torchrun(nproc: int | None, argv: list[str]) -> None:
    """`repa-mdlm train --nproc N` on a job with N GPUs: become torchrun with N ranks."""
    if not nproc or nproc <= 1 or "WORLD_SIZE" in os.environ:
        return
    import sys

    os.execv(sys.executable, torchrun_command(nproc, argv))


def claim_gpu(n_gpus: int, lock_dir: str | os.PathLike = "/tmp/repa-mdlm-gpus"):
    """Pin this job to one free GPU of a workstation (profiles/local-gpu).

    Snakemake's `--resources gpu=N` bounds how many GPU jobs run at once but not which
    device each gets; a lock file per device does that. Returns the held lock (keep it
    alive for the job's lifetime) or None when Slurm/the user already chose devices.
    """
    # set, even empty (all GPUs hidden on purpose), it is someone's choice: never override it
    if n_gpus <= 0 or "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    for index in range(n_gpus):
        handle = open(Path(lock_dir) / f"gpu{index}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
        return handle
    raise RuntimeError(f"all {n_gpus} GPUs are held by other repa-mdlm jobs ({lock_dir}); "
                       "Snakemake's --resources gpu=N must not exceed REPA_MDLM_GPUS")
