"""MDLM (Sahoo et al. 2024): log-linear schedule, masking, SUBS parameterisation, N-ELBO.

- Mask probability at time t is (1 - eps) * t; the N-ELBO weight -a'_t / (1 - a_t) is 1/t.
- SUBS: the mask token's logit is -inf, and unmasked positions copy their input, so
  they contribute exactly 0. Only masked positions are sent through the LM head.
- No time conditioning: the network sees x_t alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import CurriculumConfig


def sample_t(batch: int, eps: float, generator: torch.Generator, antithetic: bool = True,
             t_max: float = 1.0, device=None) -> torch.Tensor:
    """Diffusion times in [eps, t_max]; antithetic draws cover the interval evenly across the batch."""
    u = torch.rand(batch, generator=generator, device=generator.device)
    if antithetic:
        u = (u / batch + torch.arange(batch, device=u.device) / batch) % 1.0
    return (eps + (t_max - eps) * u).to(device)


def stratified_t(n_sequences: int, draws: int, eps: float, generator: torch.Generator) -> torch.Tensor:
    """[n, draws] times, one per stratum of [eps, 1]: a low-variance ELBO estimate per sequence."""
    u = torch.rand(n_sequences, draws, generator=generator, device=generator.device)
    strata = (torch.arange(draws, device=u.device) + u) / draws
    return eps + (1.0 - eps) * strata


def curriculum_t_max(step: int, total_steps: int, curriculum: CurriculumConfig) -> float:
    """Ceiling on t for the paper's linear masking curriculum (1.0 when disabled)."""
    if not curriculum.enabled:
        return 1.0
    ramp = max(1, round(curriculum.ramp_fraction * total_steps))
    frac = min(1.0, step / ramp)
    return curriculum.start + (curriculum.end - curriculum.start) * frac


def mask_probability(t: torch.Tensor, eps: float) -> torch.Tensor:
    return (1.0 - eps) * t


def corrupt(x0: torch.Tensor, t: torch.Tensor, mask_token_id: int, eps: float,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t: each token masked independently with probability (1 - eps) t. Returns (x_t, masked)."""
    u = torch.rand(x0.shape, generator=generator, device=generator.device).to(x0.device)
    masked = u < mask_probability(t, eps).to(x0.device)[:, None]
    return torch.where(masked, torch.full_like(x0, mask_token_id), x0), masked


def subs_log_probs(logits: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """SUBS on masked positions: the mask token can never be the prediction (logit -inf)."""
    mask_column = torch.tensor([mask_token_id], device=logits.device)
    return torch.log_softmax(logits.float().index_fill(-1, mask_column, -math.inf), dim=-1)


def masked_token_nll(hidden_masked: torch.Tensor, output_embedding: torch.Tensor, targets: torch.Tensor,
                     mask_token_id: int) -> torch.Tensor:
    """-log p(x0) at masked positions only: the 151k-vocab head sees just these rows."""
    log_probs = subs_log_probs(hidden_masked @ output_embedding.t(), mask_token_id)
    return F.nll_loss(log_probs, targets, reduction="none")


def nelbo_per_sequence(nll_masked: torch.Tensor, masked: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Sum over positions of 1/t * nll at masked positions, divided by length: N-ELBO per token, [B]."""
    batch, length = masked.shape
    seq_of_row = masked.nonzero(as_tuple=True)[0]
    weighted = nll_masked / t[seq_of_row]
    per_seq = torch.zeros(batch, dtype=weighted.dtype, device=weighted.device)
    per_seq.index_add_(0, seq_of_row, weighted)
    return per_seq / length


def diffusion_nelbo(model, x0: torch.Tensor, t: torch.Tensor, masked: torch.Tensor, x_t: torch.Tensor,
                    repa_layer: int | None = None):
    """Forward the student on x_t; return (N-ELBO per sequence [B], hidden_states[repa_layer] or None)."""
    from .model import backbone_hidden, output_embedding

    hidden, layer_hidden = backbone_hidden(model, x_t, repa_layer)
    hidden_masked = hidden[masked]  # gather first: [n_masked, d]
    nll = masked_token_nll(hidden_masked, output_embedding(model), x0[masked], model.config.mask_token_id)
    return nelbo_per_sequence(nll, masked, t), layer_hidden
