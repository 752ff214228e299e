"""The training objective, written once: a step's inputs (the batch gather and the noise draw) and
the micro-batch loss N-ELBO + lambda * REPA with its gradient. `Trainer.train_step` runs these, and
so does the benchmark, so what it times is the trainer's step.

Every source of randomness is a pure function of (seed, step): the batch's sequences,
its diffusion times and its masks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch

from ..config import Arm, Cell, Config, CurriculumConfig
from ..data.dataset import batch_indices
from ..model.diffusion import corrupt, curriculum_t_max, masked_head_nelbo, masked_positions, sample_t
from ..model.repa import alignment_loss, pool_student, tokenwise_alignment_loss
from ..model.student import autocast_context, backbone_hidden, output_embedding


def step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def gather_batch(tokens: np.ndarray, step: int, global_batch: int, data_seed: int, features=None,
                 shard: slice = slice(None)) -> dict:
    """Host-side inputs of `step`: the global batch's clean tokens (a gather from the memory-mapped
    split), and the cached teacher features of this rank's `shard` of it."""
    indices = batch_indices(len(tokens), step, global_batch, data_seed)
    batch = {"x0": torch.from_numpy(np.asarray(tokens[indices], dtype=np.int64))}
    if features is not None:
        batch["targets"] = features[indices[shard]]
    return batch


@dataclass
class NoisyBatch:
    """One rank's share of a step's corrupted batch, and its masked positions per micro-batch."""
    x0: torch.Tensor
    t: torch.Tensor
    x_t: torch.Tensor
    masked: torch.Tensor
    positions: list[torch.Tensor]
    t_max: float


def _no_phase(name: str) -> ContextManager:
    return contextlib.nullcontext()


def chunked_head(hidden, x0, t, masked, positions, embedding, mask_token_id) -> torch.Tensor:
    """What training runs: the masked rows only, through the fused chunked LM head and loss."""
    total, _ = masked_head_nelbo(hidden, x0, t, positions, embedding, mask_token_id)
    return total


@dataclass
class Objective:
    """N-ELBO + weight * REPA (at `layer`, through `projection`) of one cell; layer None: no REPA term."""
    model: torch.nn.Module
    global_batch: int
    micro_batch: int
    seed: int
    total_steps: int
    eps: float
    antithetic: bool
    curriculum: CurriculumConfig
    precision: str
    layer: int | None = None
    projection: torch.nn.Module | None = None
    weight: float = 0.0
    arm: Arm = Arm()
    """How the REPA term aligns (pooled or token-wise), its loss, and lambda's schedule."""

    @property
    def alignment(self) -> str:
        return self.arm.alignment

    @property
    def schedules_weight(self) -> bool:
        return self.layer is not None and self.arm.weight_schedule != "constant"

    def repa_weight(self, step: int) -> float:
        """lambda at optimizer step `step` (0-based), under the arm's schedule; 0 without REPA."""
        return self.weight * self.arm.weight_factor(step, self.total_steps) if self.layer is not None else 0.0

    @classmethod
    def of(cls, cfg: Config, cell: Cell, model: torch.nn.Module, projection: torch.nn.Module | None = None,
           micro_batch: int | None = None, global_batch: int | None = None) -> Objective:
        tc, dc = cfg.train, cfg.diffusion
        return cls(model, global_batch or tc.global_batch, micro_batch or tc.micro_batch, cell.seed, tc.steps,
                   dc.eps, dc.antithetic, dc.curriculum, tc.precision,
                   None if cell.is_baseline else cell.layer, projection,
                   0.0 if cell.is_baseline else cell.weight, Arm() if cell.is_baseline else cfg.arm(cell))

    def draw_noise(self, x0: torch.Tensor, step: int, shard: slice = slice(None)) -> NoisyBatch:
        """Times (antithetic over the whole global batch, under the curriculum's ceiling) and masks of
        `step`, drawn for the whole batch `x0` on its device; this rank keeps `shard`."""
        B, device = self.global_batch, x0.device
        generator = torch.Generator(device=device).manual_seed(step_seed(self.seed, step))
        t_max = curriculum_t_max(step, self.total_steps, self.curriculum)
        t = sample_t(B, self.eps, generator, self.antithetic, t_max, device=device)
        x_t, masked = corrupt(x0, t, self.model.config.mask_token_id, self.eps, generator)
        # every rank drew the whole global batch (antithetic t over all of it); keep this rank's shard
        x0, t, x_t, masked = x0[shard], t[shard], x_t[shard], masked[shard]
        return NoisyBatch(x0, t, x_t, masked, masked_positions(masked, self.micro_batch), t_max)

    def micro_batches(self, noisy: NoisyBatch) -> list[slice]:
        mb = self.micro_batch
        return [slice(start, start + mb) for start in range(0, len(noisy.x0), mb)]

    def backward(self, noisy: NoisyBatch, k: int, targets=None,
                 phase: Callable[[str], ContextManager] = _no_phase, head=chunked_head, weight: float | None = None):
        """Loss of micro-batch `k` (its share of the global batch's mean) and its gradient, accumulated
        into .grad. `targets`: the micro-batch's teacher features (REPA cells; SpanTargets when token-wise);
        `weight`: this step's lambda (the schedule's; None: the cell's own, 0: no REPA term). `phase(name)` wraps
        each phase (forward, head+loss, repa, backward), e.g. in a timer; `head` computes the N-ELBO
        sum from the backbone's output. Returns the detached (N-ELBO, REPA or None) terms."""
        B, mb, model = self.global_batch, self.micro_batch, self.model
        sl = slice(k * mb, k * mb + mb)
        device = noisy.x0.device
        weight = self.weight if weight is None else weight
        layer = self.layer if weight != 0.0 else None
        with phase("forward"), autocast_context(device, self.precision):
            hidden, layer_hidden = backbone_hidden(model, noisy.x_t[sl], layer)
        with phase("head+loss"), autocast_context(device, self.precision):
            nelbo = head(hidden, noisy.x0[sl], noisy.t[sl], noisy.masked[sl], noisy.positions[k],
                         output_embedding(model), model.config.mask_token_id) / B
        loss, repa = nelbo, None
        if layer_hidden is not None:
            with phase("repa"), autocast_context(device, self.precision):
                if self.alignment == "tokenwise":
                    repa = tokenwise_alignment_loss(layer_hidden, self.projection, targets, self.arm.loss) * (mb / B)
                else:
                    repa = alignment_loss(self.projection(pool_student(layer_hidden)), targets, self.arm.loss) * (mb / B)
                loss = loss + weight * repa
        with phase("backward"):
            loss.backward()
        return nelbo.detach(), None if repa is None else repa.detach()
