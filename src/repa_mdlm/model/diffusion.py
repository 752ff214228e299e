"""MDLM (Sahoo et al. 2024): log-linear schedule, masking, SUBS parameterisation, N-ELBO.

- Mask probability at time t is (1 - eps) * t; the N-ELBO weight -a'_t / (1 - a_t) is 1/t.
- SUBS: the mask token's logit is -inf, and unmasked positions copy their input, so
  they contribute exactly 0. Only masked positions are sent through the LM head.
- No time conditioning: the network sees x_t alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import CurriculumConfig
from .student import autocast_context


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


# The log-linear schedule: alpha_t = 1 - (1 - eps) t is the probability that a token is still
# clean at time t. Training, evaluation and sampling all read it from here.
def mask_probability(t: torch.Tensor | float, eps: float) -> torch.Tensor | float:
    """1 - alpha_t: the probability that a token is masked at time t."""
    return (1.0 - eps) * t


def alpha(t: torch.Tensor | float, eps: float) -> torch.Tensor | float:
    """alpha_t: the probability that a token is still clean at time t."""
    return 1.0 - mask_probability(t, eps)


def unmask_probability(t: float, s: float, eps: float) -> float:
    """The reverse step t -> s < t: the probability that a masked token is revealed,
    (alpha_s - alpha_t) / (1 - alpha_t); every token is revealed at s = 0."""
    if s <= 0:
        return 1.0
    a_t, a_s = alpha(t, eps), alpha(s, eps)
    return (a_s - a_t) / (1.0 - a_t)


def corrupt(x0: torch.Tensor, t: torch.Tensor, mask_token_id: int, eps: float,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t: each token masked independently with probability (1 - eps) t. Returns (x_t, masked)."""
    u = torch.rand(x0.shape, generator=generator, device=generator.device).to(x0.device)
    masked = u < mask_probability(t, eps).to(x0.device)[:, None]
    return torch.where(masked, torch.full_like(x0, mask_token_id), x0), masked


def subs_log_probs(logits: torch.Tensor, mask_token_id: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """SUBS on masked positions: the mask token can never be the prediction (logit -inf).
    The sampler asks for float64."""
    mask_column = torch.tensor([mask_token_id], device=logits.device)
    return torch.log_softmax(logits.to(dtype).index_fill(-1, mask_column, -math.inf), dim=-1)


# ---------------------------------------------------------------- the reference loss
# Unchunked and plain: what the chunked production head below (masked_head_nelbo) is checked
# against in tests/test_diffusion.py, tests/test_gpu.py and the GPU check. Training never calls it.
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


# ---------------------------------------------------------------- the production head
HEAD_CHUNK_ROWS = 4096
"""Masked rows per LM-head chunk: the [rows, vocab] logits (151 936 wide for Qwen) exist one
chunk at a time, in forward and backward alike."""


class _ChunkedWeightedNLL(torch.autograd.Function):
    """sum_r w_r * -log p(target_r), with p the SUBS distribution of the LM head, in chunks.

    The gradient is computed chunk by chunk during the forward pass (the row weights are
    known then), so full logits never materialise and backward costs no recomputation.
    The head is memory-bound on a GPU, so the wide [rows, vocab] tensor is touched as few times
    as possible: the GEMM writes it (bf16 under autocast), one fused log-softmax reads it and
    writes fp32 log-probabilities, `exp_` turns them into probabilities in place, and one cast
    feeds both gradient GEMMs; the row weights scale the thin [rows, d] operands instead.
    Returns (weighted sum, per-row nll); only the sum is differentiable.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, row_weights, mask_token_id, chunk_rows):
        rows = hidden.shape[0]
        nll = torch.empty(rows, dtype=torch.float32, device=hidden.device)
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        device_type = hidden.device.type
        gemm_dtype = (torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type)
                      else torch.promote_types(hidden.dtype, weight.dtype))
        weight_gemm = weight.to(gemm_dtype)  # cast once per call, not once per GEMM (it is a view: autocast never caches it)
        for start in range(0, rows, chunk_rows):
            end = min(start + chunk_rows, rows)
            target, w = targets[start:end], row_weights[start:end, None]
            logits = hidden[start:end].to(gemm_dtype) @ weight_gemm.t()
            logits[:, mask_token_id] = -math.inf  # SUBS: the mask is never predicted
            log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)  # fp32 maths, one fused pass
            del logits
            nll[start:end] = -log_probs.gather(1, target[:, None]).squeeze(1)
            if want_h or want_w:
                probs = log_probs.exp_()  # softmax, in place
                probs[torch.arange(end - start, device=probs.device), target] -= 1.0  # d nll / d logits
                probs = probs.to(gemm_dtype)
                if want_h:
                    grad_h[start:end] = ((probs @ weight_gemm) * w).to(hidden.dtype)
                if want_w:
                    grad_w += probs.t() @ (hidden[start:end] * w).to(gemm_dtype)
            del log_probs
        ctx.save_for_backward(grad_h if want_h else None, grad_w if want_w else None)
        ctx.mark_non_differentiable(nll)
        return (nll * row_weights).sum(), nll

    @staticmethod
    def backward(ctx, grad_sum, grad_nll):
        grad_h, grad_w = ctx.saved_tensors
        return (None if grad_h is None else grad_h * grad_sum.to(grad_h.dtype),
                None if grad_w is None else grad_w * grad_sum, None, None, None, None)


def chunked_weighted_nll(hidden_masked: torch.Tensor, output_embedding: torch.Tensor, targets: torch.Tensor,
                         row_weights: torch.Tensor, mask_token_id: int, chunk_rows: int = HEAD_CHUNK_ROWS):
    """(sum_r w_r nll_r [differentiable], nll_r [detached]) without the full logits in memory."""
    return _ChunkedWeightedNLL.apply(hidden_masked, output_embedding, targets, row_weights.float(),
                                     mask_token_id, chunk_rows)


def masked_positions(masked: torch.Tensor, micro_batch: int) -> list[torch.Tensor]:
    """Flat indices (into each micro-batch's [mb * L] positions) of the masked tokens, one tensor
    per micro-batch of `micro_batch` sequences, in row-major order (what `hidden[masked]` picks).

    Computed for the whole batch at once: two host syncs per optimizer step instead of three per
    micro-batch (`nonzero` and two boolean gathers)."""
    positions_per_micro = micro_batch * masked.shape[1]
    counts = masked.reshape(-1, positions_per_micro).sum(1)
    flat = masked.flatten().nonzero().squeeze(1)
    bounds = [0, *counts.cumsum(0).tolist()]
    return [flat[a:b] - k * positions_per_micro for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def masked_head_nelbo(hidden: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, positions: torch.Tensor,
                      output_embedding: torch.Tensor, mask_token_id: int, chunk_rows: int = HEAD_CHUNK_ROWS):
    """The N-ELBO from the backbone's output [B, L, d]: only the masked positions (flat indices,
    masked_positions) go through the chunked LM head. Returns (sum over the batch of N-ELBO per
    token [differentiable scalar], N-ELBO per token of each sequence [B, detached])."""
    batch, length = x0.shape
    seq_of_row = positions // length
    row_weights = 1.0 / (t[seq_of_row] * length)  # 1/t per masked token, averaged over positions
    total, nll = chunked_weighted_nll(hidden.flatten(0, 1).index_select(0, positions), output_embedding,
                                      x0.flatten().index_select(0, positions), row_weights, mask_token_id, chunk_rows)
    per_seq = torch.zeros(batch, dtype=torch.float32, device=nll.device)
    per_seq.index_add_(0, seq_of_row, nll * row_weights)
    return total, per_seq


def diffusion_nelbo(model, x0: torch.Tensor, t: torch.Tensor, masked: torch.Tensor, x_t: torch.Tensor,
                    repa_layer: int | None = None, chunk_rows: int = HEAD_CHUNK_ROWS,
                    positions: torch.Tensor | None = None):
    """Forward the student on x_t. `positions`: the masked positions' flat indices, if already known
    (masked_positions); otherwise they are found here.

    Returns (sum over the batch of N-ELBO per token [differentiable scalar],
    N-ELBO per token of each sequence [B, detached], hidden_states[repa_layer] or None).
    """
    from .student import backbone_hidden, output_embedding

    if positions is None:
        positions = masked.flatten().nonzero().squeeze(1)
    hidden, layer_hidden = backbone_hidden(model, x_t, repa_layer)
    total, per_seq = masked_head_nelbo(hidden, x0, t, positions, output_embedding(model), model.config.mask_token_id,
                                       chunk_rows)
    return total, per_seq, layer_hidden


@torch.no_grad()
def nelbo_draws(model, tokens: np.ndarray, t_draws: int, eps: float, seed: int, batch_size: int,
                precision: str = "bf16") -> np.ndarray:
    """N-ELBO per token of each sequence at each of its stratified t draws. [n, t_draws] float64."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    times = stratified_t(len(tokens), t_draws, eps, generator)
    mask_id = model.config.mask_token_id
    out = np.zeros((len(tokens), t_draws), dtype=np.float64)
    for start in range(0, len(tokens), batch_size):
        x0 = torch.from_numpy(np.asarray(tokens[start:start + batch_size], dtype=np.int64)).to(device)
        for k in range(t_draws):
            t = times[start:start + len(x0), k]
            x_t, masked = corrupt(x0, t, mask_id, eps, generator)
            with autocast_context(device, precision):
                _, nelbo, _ = diffusion_nelbo(model, x0, t, masked, x_t)
            out[start:start + len(x0), k] = nelbo.double().cpu().numpy()
    model.train(was_training)
    return out


def mean_nelbo_per_sequence(model, tokens: np.ndarray, t_draws: int, eps: float, seed: int, batch_size: int,
                       precision: str = "bf16") -> np.ndarray:
    """N-ELBO per token of each sequence, averaged over its stratified t draws. [n] float64."""
    return nelbo_draws(model, tokens, t_draws, eps, seed, batch_size, precision).mean(axis=1)
