"""REPA for text: a learned projection of the student's pooled hidden state onto the
teacher's pooled representation of the clean sequence, L = ||W pool(h_l) - pool(f_T(x0))||^2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Projection(nn.Module):
    """W in R^{d_teacher x d_student}; trained with the student, discarded after training."""

    def __init__(self, student_dim: int, teacher_dim: int, bias: bool = False):
        super().__init__()
        self.linear = nn.Linear(student_dim, teacher_dim, bias=bias)

    def forward(self, pooled_student: torch.Tensor) -> torch.Tensor:
        return self.linear(pooled_student)


def pool_student(hidden: torch.Tensor) -> torch.Tensor:
    """Mean over positions of hidden_states[l]: one vector per sequence (no padding in packed data)."""
    return hidden.mean(dim=1)


def alignment_loss(predicted: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """mse: mean squared error over feature dims and batch (the paper's eq. 2 divided by d_teacher);
    cosine: 1 - cosine similarity, averaged over the batch."""
    predicted, target = predicted.float(), target.float()
    if kind == "mse":
        return F.mse_loss(predicted, target)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(predicted, target, dim=-1)).mean()
    raise ValueError(f"repa.loss = {kind!r}: choose mse or cosine")
