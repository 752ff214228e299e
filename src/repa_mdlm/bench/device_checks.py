"""Device sanity checks at the paper's shapes: the checks `gpu_check sanity` runs on a lent GPU
(and `--smoke` on a CPU), and tests/test_gpu.py runs as tests. Each returns (ok, detail).

- SDPA runs a fused kernel in forward and backward (asserted from the profiler), never the math one;
- attention is bidirectional: position 0 sees the last token;
- the chunked LM head under bf16 autocast with fp32 weights matches an fp64 reference;
- train.optimizer adamw8bit is bitsandbytes' AdamW8bit with 8-bit states.
"""

from __future__ import annotations

import torch

from ..config import Config, StudentConfig

FUSED_SDPA = ("aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
              "aten::_scaled_dot_product_cudnn_attention")  # prefixes: *_for_cpu and *_backward included
MATH_SDPA = "aten::_scaled_dot_product_attention_math"


def attention_student(dev: torch.device, layers: int = 2):
    """The paper's attention shape (d 896, 14 query heads, 2 KV heads: head_dim 64, GQA), few layers."""
    from ..model.student import build_student

    cfg = StudentConfig(vocab_size=1024, num_hidden_layers=layers, max_position_embeddings=512)
    return build_student(cfg, tokenizer_size=1000, mask_token_id=999, eos_token_id=0, seed=0).to(dev)


def sdpa_kernels(model, dev: torch.device, batch: int = 8, length: int = 256) -> set[str]:
    """The SDPA ops that really ran in a forward and backward under the training precision (after
    a warm-up, so kernel selection and lazy initialisation stay out of the profile)."""
    from torch.profiler import ProfilerActivity, profile

    from ..model.student import autocast_context, backbone_hidden

    x = torch.randint(1, 999, (batch, length), generator=torch.Generator().manual_seed(0)).to(dev)

    def forward_backward():
        with autocast_context(dev, "bf16"):
            hidden, _ = backbone_hidden(model, x)
        hidden.float().square().mean().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    forward_backward()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        forward_backward()
    return {e.name for e in prof.events() if "scaled_dot_product" in e.name}


def check_sdpa_kernel(dev):
    """A fused kernel in forward and in backward, and never the math fallback."""
    ran = sdpa_kernels(attention_student(dev), dev)
    fused = sorted(k for k in ran if k.startswith(FUSED_SDPA))
    ok = (any(not k.endswith("_backward") for k in fused) and any(k.endswith("_backward") for k in fused)
          and not any(k.startswith(MATH_SDPA) for k in ran))
    return ok, f"ran {sorted(ran)}"


def check_bidirectional(dev):
    from ..model.student import autocast_context, backbone_hidden

    model = attention_student(dev).eval()
    x = torch.randint(1, 999, (2, 256), generator=torch.Generator().manual_seed(1)).to(dev)
    y = x.clone()
    y[:, -1] = x[:, -1] % 998 + 1
    with torch.no_grad(), autocast_context(dev, "bf16"):
        hx, hy = backbone_hidden(model, x)[0], backbone_hidden(model, y)[0]
    change = (hx[:, 0] - hy[:, 0]).abs().max().item()
    finite = bool(torch.isfinite(hx).all())
    return change > 1e-3 and finite, f"position 0 moved by {change:.3g} when only the last token changed; finite {finite}"


def check_chunked_head(dev, vocab: int, rows: int = 8192, d: int = 896, chunk_rows: int | None = None,
                       reference_rows: int = 1024):
    """As training runs it: fp32 master weights, bf16 autocast GEMMs, an fp32 softmax, in chunks;
    against float64 on the first `reference_rows` rows (all of [8192, 151 666] in fp64 is 10 GB)."""
    from ..model.diffusion import HEAD_CHUNK_ROWS, chunked_weighted_nll, masked_token_nll
    from ..model.student import autocast_context

    chunk_rows = chunk_rows or HEAD_CHUNK_ROWS
    gen = torch.Generator().manual_seed(2)
    mask_id = vocab // 3  # mid-vocabulary, so an off-by-one in the SUBS column would show
    hidden = torch.randn(rows, d, generator=gen).to(dev).requires_grad_()
    emb = (torch.randn(vocab, d, generator=gen) * 0.02).to(dev).requires_grad_()
    targets = torch.randint(0, vocab - 1, (rows,), generator=gen)
    targets = (targets + (targets >= mask_id).long()).to(dev)  # every id but the mask
    weights = (torch.rand(rows, generator=gen) + 0.5).to(dev)
    with autocast_context(dev, "bf16"):
        total, nll = chunked_weighted_nll(hidden, emb, targets, weights, mask_id, chunk_rows)
    total.backward()
    finite = bool(torch.isfinite(nll).all() and torch.isfinite(hidden.grad).all() and torch.isfinite(emb.grad).all())
    fp32_grads = hidden.grad.dtype == emb.grad.dtype == torch.float32
    mask_row_zero = bool(emb.grad[mask_id].abs().sum() == 0)

    ref = slice(0, min(rows, reference_rows))
    h64, e64 = hidden.detach()[ref].double().requires_grad_(), emb.detach().double().requires_grad_()
    ref_nll = masked_token_nll(h64, e64, targets[ref], mask_id)
    (ref_nll * weights[ref].double()).sum().backward()
    h, e = hidden.detach()[ref].clone().requires_grad_(), emb.detach().clone().requires_grad_()
    with autocast_context(dev, "bf16"):  # the chunked head's gradients for the reference rows alone
        sub_total, _ = chunked_weighted_nll(h, e, targets[ref], weights[ref], mask_id, chunk_rows)
    sub_total.backward()

    def rel(a, b):
        return float((a.detach().double() - b).norm() / b.norm())

    errors = {"nll": rel(nll[ref], ref_nll.detach()), "grad_hidden": rel(h.grad, h64.grad),
              "grad_embedding": rel(e.grad, e64.grad)}
    ok = (finite and fp32_grads and mask_row_zero and errors["nll"] < 1e-2
          and max(errors["grad_hidden"], errors["grad_embedding"]) < 2e-2)
    return ok, (f"{rows} rows in chunks of {chunk_rows} x vocab {vocab:,}: relative error vs fp64 "
                + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
                + f"; finite {finite}; fp32 gradients {fp32_grads}; mask row gradient zero {mask_row_zero}")


def check_optimizer(dev):
    """train.optimizer adamw8bit: bitsandbytes' AdamW8bit, uint8 states for a large tensor (32-bit
    below its min_8bit_size), and a step that moves the parameter."""
    from ..training.optim import make_optimizer

    cfg = Config()
    cfg.train.optimizer = "adamw8bit"
    gen = torch.Generator().manual_seed(3)
    big = torch.nn.Parameter(torch.randn(4096, 64, generator=gen).to(dev))
    small = torch.nn.Parameter(torch.randn(16, generator=gen).to(dev))
    optimizer, name = make_optimizer(cfg, [big, small])
    before = big.detach().clone()
    (big.square().sum() + small.square().sum()).backward()
    optimizer.step()
    state = {k: v.dtype for k, v in optimizer.state[big].items() if torch.is_tensor(v)}
    small_state = {k: v.dtype for k, v in optimizer.state[small].items() if torch.is_tensor(v)}
    moved = bool(torch.isfinite(big).all() and (big.detach() != before).any())
    ok = (type(optimizer).__name__ == "AdamW8bit" and state.get("state1") == state.get("state2") == torch.uint8
          and small_state.get("state1") == torch.float32 and moved)
    return ok, (f"{name} ({type(optimizer).__module__}.{type(optimizer).__name__}); large tensor's states "
                f"{state.get('state1')}/{state.get('state2')}, small tensor's {small_state.get('state1')}; "
                f"parameter moved {moved}")
