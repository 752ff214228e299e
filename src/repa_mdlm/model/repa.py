"""REPA for text: a learned projection of the student's hidden states onto the teacher's
representation of the clean sequence. Pooled (the paper's): L = ||W pool(h_l) - pool(f_T(x0))||^2,
one vector per sequence. Token-wise: the same loss per span of characters that both tokenizers
cut alike (teachers/spans.py), the student's and the teacher's states each averaged within the span."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class Projection(nn.Module):
    """The projector, trained with the student and discarded after training. linear: W in
    R^{d_teacher x d_student} (the paper's; `bias` is repa.projection_bias); mlp: REPA's Linear -> SiLU
    -> Linear -> SiLU -> Linear, whose layers always have a bias, as REPA's do."""

    def __init__(self, student_dim: int, teacher_dim: int, bias: bool = False, kind: str = "linear",
                 hidden_size: int = 2048):
        super().__init__()
        if kind == "linear":  # its parameters keep the name they had before the mlp (checkpoints load)
            self.linear = nn.Linear(student_dim, teacher_dim, bias=bias)
        elif kind == "mlp":
            self.mlp = nn.Sequential(nn.Linear(student_dim, hidden_size), nn.SiLU(),
                                     nn.Linear(hidden_size, hidden_size), nn.SiLU(),
                                     nn.Linear(hidden_size, teacher_dim))
        else:
            raise ValueError(f"repa.projector = {kind!r}: choose linear or mlp")

    def forward(self, student: torch.Tensor) -> torch.Tensor:
        return self.linear(student) if hasattr(self, "linear") else self.mlp(student)


def pool_student(hidden: torch.Tensor) -> torch.Tensor:
    """Mean over positions of hidden_states[l]: one vector per sequence (no padding in packed data)."""
    return hidden.mean(dim=1)


def span_mean(hidden: torch.Tensor, position_span: torch.Tensor, n_spans: int) -> torch.Tensor:
    """[n_spans, d]: the mean of hidden [B, L, d] over the positions of each span; position_span [B, L]
    numbers each position's span (0..n_spans-1) or is -1 where a position is in none."""
    flat, ids = hidden.reshape(-1, hidden.shape[-1]), position_span.reshape(-1)
    kept = ids >= 0
    sums = torch.zeros(n_spans, flat.shape[1], device=flat.device, dtype=flat.dtype).index_add_(0, ids[kept], flat[kept])
    counts = torch.bincount(ids[kept], minlength=n_spans).clamp(min=1).to(flat.dtype)
    return sums / counts[:, None]


@dataclass
class SpanTargets:
    """A batch's token-wise targets: the teacher's features of every aligned span, numbered in sequence
    order, and each student position's span (-1: left out of the loss)."""
    features: torch.Tensor
    """[spans, d_teacher]"""
    position_span: torch.Tensor
    """[sequences, seq_len], int64"""

    @property
    def sequence_first_span(self) -> torch.Tensor:
        """[sequences + 1]: where each sequence's spans start (spans are numbered sequence by sequence, so
        a sequence's spans end after its highest id; one without spans starts and ends where the last did)."""
        ends = (self.position_span.max(dim=1).values + 1).clamp(min=0).cummax(0).values
        return torch.cat([ends.new_zeros(1), ends])

    def __getitem__(self, rows: slice) -> "SpanTargets":
        """The targets of a contiguous range of sequences (a micro-batch or a rank's shard)."""
        start, stop, _ = rows.indices(self.position_span.shape[0])
        first = self.sequence_first_span
        lo, hi = int(first[start]), int(first[stop])
        spans = self.position_span[start:stop]
        return SpanTargets(self.features[lo:hi], torch.where(spans >= 0, spans - lo, spans))

    def to(self, device, non_blocking: bool = False) -> "SpanTargets":
        return SpanTargets(self.features.to(device, non_blocking=non_blocking),
                           self.position_span.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "SpanTargets":
        """Page-locked copies, for the read-ahead's asynchronous host-to-device copy (data.dataset.Prefetcher)."""
        return SpanTargets(self.features.pin_memory(), self.position_span.pin_memory())

    def __len__(self) -> int:
        return self.position_span.shape[0]


def per_vector_loss(predicted: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """[n]: mse, the mean squared error over feature dims (the paper's eq. 2 divided by d_teacher);
    cosine, 1 - cosine similarity."""
    predicted, target = predicted.float(), target.float()
    if kind == "mse":
        return (predicted - target).pow(2).mean(dim=-1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(predicted, target, dim=-1)
    raise ValueError(f"repa.loss = {kind!r}: choose mse or cosine")


def alignment_loss(predicted: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Pooled: the per-sequence loss averaged over the batch (mse over feature dims and batch at once)."""
    if kind == "mse":
        return F.mse_loss(predicted.float(), target.float())
    return per_vector_loss(predicted, target, kind).mean()


def tokenwise_alignment_loss(layer_hidden: torch.Tensor, projection: nn.Module, targets: SpanTargets,
                             kind: str = "mse") -> torch.Tensor:
    """Token-wise: the student's layer states averaged within each span and projected, against the
    teacher's span features; the mean over a sequence's aligned spans, then over the sequences (a
    sequence without an aligned span adds 0, so every sequence weighs as in the pooled loss)."""
    n_spans = targets.features.shape[0]
    if n_spans == 0:  # still through the projector: every rank's gradients must cover the same tensors
        return projection(layer_hidden.new_zeros(0, layer_hidden.shape[-1])).sum() * 0.0 + layer_hidden.sum() * 0.0
    # averaged in float32: bf16 sums over a span lose precision (a GPU's atomic adds stay unordered either way)
    predicted = projection(span_mean(layer_hidden.float(), targets.position_span, n_spans))
    losses = per_vector_loss(predicted, targets.features, kind)
    first = targets.sequence_first_span
    sequence_of_span = torch.repeat_interleave(torch.arange(len(targets), device=losses.device),
                                               (first[1:] - first[:-1]).to(losses.device))
    per_sequence = torch.zeros(len(targets), device=losses.device).index_add_(0, sequence_of_span, losses)
    spans_per_sequence = (first[1:] - first[:-1]).clamp(min=1).to(losses.device, losses.dtype)
    return (per_sequence / spans_per_sequence).mean()
