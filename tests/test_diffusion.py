"""The MDLM objective: hand-computed N-ELBO, SUBS, the uniform predictor, antithetic t."""

import math

import numpy as np
import pytest
import torch

from repa_mdlm.config import CurriculumConfig
from repa_mdlm.model.diffusion import (
    corrupt,
    curriculum_t_max,
    masked_token_nll,
    nelbo_per_sequence,
    sample_t,
    stratified_t,
    subs_log_probs,
)

MASK = 3


def test_nelbo_matches_hand_computation():
    # Vocab of 4, mask id 3. One sequence of 3 tokens; positions 0 and 2 masked, t = 0.5.
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # the two masked positions
    emb = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [5.0, 5.0]])  # the mask row must be ignored
    targets = torch.tensor([0, 2])
    nll = masked_token_nll(hidden, emb, targets, MASK)
    # logits row 0: [2, 0, 0, -inf] -> -log(e^2 / (e^2 + 2)); row 1: [0, 0, 1, -inf] -> -log(e / (e + 2))
    expected = torch.tensor([-math.log(math.e**2 / (math.e**2 + 2)), -math.log(math.e / (math.e + 2))])
    torch.testing.assert_close(nll, expected)
    masked = torch.tensor([[True, False, True]])
    t = torch.tensor([0.5])
    nelbo = nelbo_per_sequence(nll, masked, t)
    # weight 1/t on each masked token, averaged over the 3 positions
    torch.testing.assert_close(nelbo, (expected.sum() / 0.5 / 3).reshape(1))


def test_subs_never_predicts_mask():
    logp = subs_log_probs(torch.zeros(2, 5), mask_token_id=1)
    assert torch.isneginf(logp[:, 1]).all()
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2))
    torch.testing.assert_close(logp[:, 0], torch.full((2,), -math.log(4)))


def test_unmasked_positions_contribute_exactly_zero():
    torch.manual_seed(0)
    x0 = torch.randint(0, 3, (2, 6))
    masked = torch.zeros(2, 6, dtype=torch.bool)
    masked[0, 1] = masked[1, 4] = True
    hidden_all = torch.randn(2, 6, 4)
    emb = torch.randn(4, 4)
    t = torch.tensor([0.3, 0.7])

    def nelbo(h):
        return nelbo_per_sequence(masked_token_nll(h[masked], emb, x0[masked], MASK), masked, t)

    base = nelbo(hidden_all)
    changed = hidden_all.clone()
    changed[~masked] = torch.randn_like(changed[~masked]) * 100  # anything at unmasked positions
    torch.testing.assert_close(nelbo(changed), base, rtol=0, atol=0)
    # and with nothing masked the N-ELBO is exactly 0
    none = torch.zeros_like(masked)
    assert nelbo_per_sequence(masked_token_nll(hidden_all[none], emb, x0[none], MASK), none, t).abs().sum() == 0


def test_uniform_predictor_perplexity_is_vocab_without_mask():
    """Constant logits give ELBO PPL = (V - 1)^(1 - eps): V - 1 (the mask excluded) up to the eps floor."""
    vocab, length, eps = 50, 128, 1e-3
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, vocab - 1, (4096, length), generator=gen)
    x0[x0 >= MASK] += 1  # data never contains the mask token
    t = stratified_t(len(x0), 16, eps, gen)
    per_seq = torch.zeros(len(x0), dtype=torch.float64)
    for k in range(t.shape[1]):
        _, masked = corrupt(x0, t[:, k], MASK, eps, gen)
        nll = masked_token_nll(torch.zeros(int(masked.sum()), 8), torch.zeros(vocab, 8), x0[masked], MASK)
        per_seq += nelbo_per_sequence(nll, masked, t[:, k]).double() / t.shape[1]
    mean, se = per_seq.mean().item(), (per_seq.std() / math.sqrt(len(per_seq))).item()
    expected = (1 - eps) * math.log(vocab - 1)
    assert se < math.log(vocab / (vocab - 1)) / 4  # precise enough to tell V - 1 from V
    assert abs(mean - expected) < 3 * se
    assert math.exp(mean) == pytest.approx(vocab - 1, rel=0.01)


def test_mask_rate_follows_log_linear_schedule():
    gen = torch.Generator().manual_seed(1)
    x0 = torch.zeros(4, 20000, dtype=torch.long)
    t = torch.tensor([0.1, 0.4, 0.8, 1.0])
    _, masked = corrupt(x0, t, MASK, 1e-3, gen)
    np.testing.assert_allclose(masked.float().mean(1).numpy(), ((1 - 1e-3) * t).numpy(), atol=0.01)


def test_antithetic_t_covers_the_interval():
    gen = torch.Generator().manual_seed(2)
    t = sample_t(8, 1e-3, gen, antithetic=True)
    strata = torch.sort(((t - 1e-3) / (1 - 1e-3) * 8).floor()).values
    assert strata.tolist() == list(range(8))  # one draw per eighth of [eps, 1]
    assert ((t >= 1e-3) & (t <= 1)).all()


def test_curriculum_ramps_the_ceiling_of_t():
    c = CurriculumConfig(enabled=True, start=0.01, end=1.0, ramp_fraction=0.5)
    assert curriculum_t_max(0, 100, c) == pytest.approx(0.01)
    assert curriculum_t_max(25, 100, c) == pytest.approx(0.505)
    assert curriculum_t_max(80, 100, c) == 1.0
    assert curriculum_t_max(0, 100, CurriculumConfig(enabled=False)) == 1.0
    gen = torch.Generator().manual_seed(3)
    assert (sample_t(64, 1e-3, gen, t_max=0.2) <= 0.2).all()


@pytest.mark.parametrize("chunk_rows", [1, 3, 64])
def test_chunked_head_equals_the_plain_head_in_value_and_gradient(chunk_rows):
    from repa_mdlm.model.diffusion import chunked_weighted_nll

    gen = torch.Generator().manual_seed(4)
    hidden = torch.randn(10, 6, generator=gen, requires_grad=True)
    emb = torch.randn(7, 6, generator=gen, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 4, 5, 6, 0, 1, 2, 4])  # never the mask (3)
    weights = torch.rand(10, generator=gen) + 0.5

    ref_nll = masked_token_nll(hidden, emb, targets, MASK)
    (ref_nll * weights).sum().backward()
    ref_gh, ref_ge = hidden.grad.clone(), emb.grad.clone()
    hidden.grad = emb.grad = None

    total, nll = chunked_weighted_nll(hidden, emb, targets, weights, MASK, chunk_rows)
    total.backward()
    torch.testing.assert_close(nll, ref_nll.detach())
    torch.testing.assert_close(total, (ref_nll * weights).sum().detach())
    torch.testing.assert_close(hidden.grad, ref_gh)
    torch.testing.assert_close(emb.grad, ref_ge)
    assert emb.grad[MASK].abs().sum() == 0  # the mask row gets no gradient: it is never predicted


def _wide_kernels(rows, vocab, run) -> list[str]:
    """The kernels (profiler leaves, so the insides of composite ops count) that read or write a whole
    [rows, vocab] tensor while `run` runs; views, GEMMs and per-row or per-column indexing left out."""
    from torch.profiler import ProfilerActivity, profile

    not_a_pass = ("aten::as_strided", "aten::resolve_conj", "aten::view", "aten::t", "aten::transpose",
                  "aten::mm", "aten::select", "aten::slice", "aten::gather", "aten::index", "aten::index_put_",
                  "aten::fill_", "aten::_index_put_impl_", "aten::empty_strided", "aten::empty_like")
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run()
    return [e.name for e in prof.events()
            if not e.cpu_children and e.name not in not_a_pass
            and any(list(shape) == [rows, vocab] for shape in e.input_shapes if isinstance(shape, list))]


def test_chunked_head_passes_over_the_wide_logits_four_times_under_bf16_autocast():
    """The head is memory-bound on a GPU: every pass over [rows, 151 666] costs. After the GEMM: one
    fused log-softmax into fp32 (on a CPU a cast to fp32 comes first; CUDA fuses it), exp_ in place,
    one bf16 cast for both gradient GEMMs. No logsumexp (amax, a new tensor, exp, sum), no separate
    scaling by the row weights."""
    from repa_mdlm.model.diffusion import chunked_weighted_nll

    rows, vocab, d = 64, 512, 16
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, d, generator=gen, requires_grad=True)
    emb = torch.randn(vocab, d, generator=gen, requires_grad=True)
    targets = torch.randint(0, vocab - 1, (rows,), generator=gen)

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            chunked_weighted_nll(hidden, emb, targets, torch.rand(rows, generator=gen), vocab - 1, chunk_rows=rows)

    assert _wide_kernels(rows, vocab, run) == ["aten::copy_", "aten::_log_softmax", "aten::exp_", "aten::copy_"]


def test_chunked_head_under_bf16_autocast_with_fp32_weights_matches_fp64():
    """As training runs it: fp32 master weights, autocast bf16 GEMMs, fp32 softmax."""
    from repa_mdlm.model.diffusion import chunked_weighted_nll

    rows, vocab, d = 300, 1000, 64
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(rows, d, generator=gen).requires_grad_()
    emb = (torch.randn(vocab, d, generator=gen) * 0.1).requires_grad_()
    targets = torch.randint(0, vocab - 1, (rows,), generator=gen)
    weights = torch.rand(rows, generator=gen) + 0.5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, nll = chunked_weighted_nll(hidden, emb, targets, weights, vocab - 1, chunk_rows=128)
    total.backward()
    h64, e64 = hidden.detach().double().requires_grad_(), emb.detach().double().requires_grad_()
    ref_nll = masked_token_nll(h64, e64, targets, vocab - 1)
    (ref_nll * weights.double()).sum().backward()

    def rel(a, b):
        return float((a.detach().double() - b).norm() / b.norm())

    assert rel(nll, ref_nll.detach()) < 1e-2 and rel(total, (ref_nll * weights.double()).sum().detach()) < 1e-2
    assert rel(hidden.grad, h64.grad) < 2e-2 and rel(emb.grad, e64.grad) < 2e-2
    assert emb.grad[vocab - 1].abs().sum() == 0


def test_masked_positions_of_the_whole_batch_split_by_micro_batch():
    from repa_mdlm.model.diffusion import masked_positions

    masked = torch.rand(12, 9, generator=torch.Generator().manual_seed(1)) < 0.4
    masked[4:8] = False  # a micro-batch with no masked token at all
    positions = masked_positions(masked, micro_batch=4)
    assert len(positions) == 3
    for k, got in enumerate(positions):
        assert torch.equal(got, masked[4 * k:4 * k + 4].flatten().nonzero().squeeze(1))
