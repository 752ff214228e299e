"""Optimisation and what each job asks the scheduler for: the train and resources sections."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .base import LrSchedule, Optimizer, Precision, compile_mode, field_errors


@dataclass
class TrainConfig:
    steps: int = 5000
    """Optimizer steps of one cell (paper: 5000)."""
    global_batch: int = 512
    """Sequences per optimizer step, over all GPUs and micro-batches (paper: 512, from its token count)."""
    micro_batch: int = 64
    """Sequences per forward pass on one GPU; global_batch must divide by it (memory only)."""
    lr: float = 3e-4
    """Peak learning rate of AdamW (the paper gives none; config.yaml: 3e-4)."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW's (beta1, beta2)."""
    warmup_steps: int = 250
    """Steps of linear learning-rate warm-up from 0 to lr."""
    lr_schedule: LrSchedule = "constant"
    """After warm-up: constant, or cosine decay to 0 at the last step."""
    grad_clip: float = 1.0
    """Maximum global gradient norm; 0 turns clipping off."""
    optimizer: Optimizer = "adamw8bit"
    """adamw8bit (bitsandbytes, CUDA only; falls back to adamw elsewhere) or adamw (paper: AdamW 8-bit)."""
    precision: Precision = "bf16"
    """bf16 autocast on CUDA (never fp16: it turns the -inf mask logit into NaN). CPU runs fp32 (paper: BF16)."""
    tf32: bool = True
    """Allow TF32 matmuls on CUDA (paper: TF32 acceleration)."""
    log_every: int = 10
    """Steps between two lines of the training log (loss, learning rate, throughput)."""
    val_every: int = 250
    """Steps between validation perplexities (the training curves of Figure 2)."""
    val_sequences: int = 256
    """Validation sequences read at each validation."""
    checkpoint_every: int = 250
    """Steps between checkpoints, from which a killed cell resumes."""
    data_seed: int | None = None
    """Seed of the data order; null = the cell's seed, so seeds differ in data order as well as in
    initialisation and masks, while all cells of one seed read the same batches (paired by seed)."""
    max_bad_batches: int = 0
    """Batches with a non-finite loss that may be skipped (logged) before the cell stops."""
    prefetch_batches: int = 2
    """Batches read ahead on a background thread (memory-mapped gather, pinned memory on CUDA),
    so the GPU never waits for data; 0 reads each batch when it is needed."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward: less memory, about a third more compute.
    Turn it on only when train.micro_batch does not fit otherwise (see `repa-mdlm benchmark --sweep`)."""
    compile: bool | str = False
    """torch.compile the student: false; "backbone" (or true) compiles the whole transformer as one
    graph; "blocks" compiles each block on its own (regional: one graph serves every block, so a cold
    compile is several times shorter). Graphs are cached in runs/.torch-compile-cache (or
    $TORCHINDUCTOR_CACHE_DIR), shared by all cells. `scripts/gpu-check.sh` times all three."""

    def check(self, key: str = "train") -> list[str]:
        errors = field_errors(self, key)
        if self.global_batch % self.micro_batch:
            errors.append(f"{key}.global_batch = {self.global_batch} is not divisible by "
                          f"{key}.micro_batch = {self.micro_batch}")
        if self.val_every <= 0 or self.checkpoint_every <= 0:
            errors.append(f"{key}.val_every and {key}.checkpoint_every must be > 0")
        if compile_mode(self.compile) is None:
            errors.append(f"{key}.compile = {self.compile!r}: choose false, true (= backbone), backbone or blocks")
        return errors



@dataclass
class JobResources:
    """What one job asks the scheduler for (Slurm via snakemake-executor-plugin-slurm,
    or a local `--resources gpu=N` budget). Runtime is multiplied by the attempt number."""

    gpus: int = 1
    """GPUs per job; 0 = a CPU job. For train, >1 runs torchrun DDP across them."""
    gpu_model: str | None = None
    """e.g. h100 (becomes --gpus=h100:N); null = any."""
    cpus_per_gpu: int = 8
    """CPU cores per GPU (data loading, prefetch)."""
    threads: int = 1
    """CPU threads for CPU jobs (gpus: 0)."""
    mem_mb: int = 64_000
    """Host memory per job, in MB."""
    runtime_min: int = 480
    """Wall-clock limit of the first attempt, in minutes."""

    def check(self, key: str) -> list[str]:
        return field_errors(self, key)


@dataclass
class ResourcesConfig:
    train: JobResources = field(default_factory=JobResources)
    """Each training cell."""
    teacher_features: JobResources = field(default_factory=lambda: JobResources(runtime_min=240))
    """Each teacher's feature cache (one pass over the splits)."""
    evaluate: JobResources = field(default_factory=lambda: JobResources(mem_mb=32_000, runtime_min=60))
    """Each cell's test evaluation."""

    def check(self, key: str = "resources") -> list[str]:
        errors = field_errors(self, key)
        for f in dataclasses.fields(self):
            errors += getattr(self, f.name).check(f"{key}.{f.name}")
        return errors

