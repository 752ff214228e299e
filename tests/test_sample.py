"""The MDLM ancestral sampler: masks all gone, SUBS restrictions, seeded determinism, the
network-call cache, and sampling a real (tiny) saved cell into markdown and HTML."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from repa_mdlm.evaluation.sampler import generate, sample_ids
from repa_mdlm.reporting.samples import write_report_samples, write_samples

MASK = 7
VOCAB = 10  # diffusion vocabulary: ids 0..9, the mask is 7; rows 10..11 are spare embedding rows


class FakeStudent(torch.nn.Module):
    """Duck-types what the sampler uses: model.model(input_ids=...) -> last_hidden_state,
    model.lm_head.weight and model.config.{mask_token_id, diffusion_vocab_size}. Counts calls."""

    def __init__(self, head: torch.Tensor, embed: torch.Tensor | None = None, d: int = 4):
        super().__init__()
        self.config = SimpleNamespace(mask_token_id=MASK, diffusion_vocab_size=VOCAB)
        self.lm_head = torch.nn.Linear(d, head.shape[0], bias=False)
        self.lm_head.weight.data.copy_(head)
        self.embed = torch.nn.Embedding(head.shape[0], d)
        if embed is not None:
            self.embed.weight.data.copy_(embed)
        self.calls = 0
        self.inputs = []
        outer = self

        class Backbone:
            def __call__(self, input_ids, **kwargs):
                outer.calls += 1
                outer.inputs.append(input_ids.clone())
                # each position sees the mean of the sequence's embeddings: the prediction depends on x_t
                h = outer.embed(input_ids)
                return SimpleNamespace(last_hidden_state=h + h.mean(dim=1, keepdim=True), hidden_states=None)

        self.model = Backbone()


def random_student(seed=0):
    g = torch.Generator().manual_seed(seed)
    return FakeStudent(torch.randn(VOCAB + 2, 4, generator=g), torch.randn(VOCAB + 2, 4, generator=g))


def test_all_masks_removed_and_mask_never_sampled():
    ids, stats = sample_ids(random_student(), n_samples=3, seq_len=16, steps=10, seed=0)
    assert ids.shape == (3, 16)
    assert not (ids == MASK).any()
    assert ids.max() < VOCAB  # spare embedding rows are never candidates
    assert stats.steps == 10 and 1 <= stats.network_calls <= 10


def test_deterministic_with_a_seed():
    a, _ = sample_ids(random_student(), 2, 32, 16, seed=3)
    b, _ = sample_ids(random_student(), 2, 32, 16, seed=3)
    c, _ = sample_ids(random_student(), 2, 32, 16, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cache_cuts_network_calls_without_changing_samples():
    model = random_student()
    cached, st_cached = sample_ids(model, 1, 8, 64, seed=1)
    assert st_cached.network_calls == model.calls
    assert st_cached.network_calls < 64  # 8 tokens over 64 steps: most steps change nothing
    model.calls, model.inputs = 0, []
    fresh, st_fresh = sample_ids(model, 1, 8, 64, seed=1, use_cache=False)
    assert st_fresh.network_calls == model.calls == 64
    # one call per distinct x_t the uncached sampler showed the network: no stale p(x0) was reused
    distinct = {tuple(x.flatten().tolist()) for x in model.inputs}
    assert st_cached.network_calls == len(distinct) > 1
    # the network sees x_t alone, so reusing p(x0) on unchanged steps is exact
    assert torch.equal(cached, fresh)


def test_strongly_preferred_token_is_produced():
    """Constant hidden state; token 3's head row dominates among real tokens, while the mask row
    and a spare row beyond the diffusion vocabulary score even higher and must be ignored."""
    head = torch.zeros(VOCAB + 2, 4)
    head[3] = 10.0
    head[MASK] = 50.0  # SUBS: the mask logit is -inf whatever the network says
    head[VOCAB + 1] = 100.0  # not part of the diffusion vocabulary
    embed = torch.ones(VOCAB + 2, 4)
    ids, _ = sample_ids(FakeStudent(head, embed), 2, 12, 6, seed=0)
    assert (ids == 3).all()


def test_one_step_unmasks_everything():
    ids, stats = sample_ids(random_student(), 2, 20, 1, seed=0)
    assert not (ids == MASK).any() and stats.network_calls == 1


# ------------------------------------------------------------ a real tiny student

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tokenizer):
    from repa_mdlm.config import StudentConfig
    from repa_mdlm.model.student import build_student

    from .conftest import TINY_STUDENT

    runs = tmp_path_factory.mktemp("runs")
    metrics = []
    for cell, ppl, seed in (("baseline_s0", 300.0, 0), ("minilm_L2_w0.50_s0", 250.0, 1)):
        model = build_student(StudentConfig(**TINY_STUDENT), len(tokenizer), tokenizer.mask_token_id,
                              tokenizer.eos_token_id, seed=seed)
        (runs / cell).mkdir()
        model.save_pretrained(runs / cell / "model")
        teacher, layer, weight = ("baseline", None, None) if cell.startswith("baseline") else ("minilm", 2, 0.5)
        m = {"cell": cell, "teacher": teacher, "layer": layer, "weight": weight, "seed": 0, "test_nelbo": math.log(ppl),
             "test_nelbo_se": 0.01, "test_ppl": ppl, "test_ppl_ci95": [ppl - 1, ppl + 1], "test_tokens": 64,
             "t_draws": 2, "train_wall_s": 1.0, "train_tokens_per_s": 1.0, "steps": 1,
             "teacher_features": None if teacher == "baseline" else "cached"}
        (runs / cell / "metrics.json").write_text(json.dumps(m))
        metrics.append(str(runs / cell / "metrics.json"))
    return runs, metrics


def test_generate_with_a_real_student(tiny_run, tokenizer):
    from repa_mdlm.model.student import load_student

    runs, _ = tiny_run
    model = load_student(runs / "baseline_s0" / "model")
    texts, stats = generate(model, tokenizer, n_samples=2, seq_len=24, steps=12, seed=0, return_stats=True)
    assert len(texts) == 2 and all(t.strip() for t in texts)
    assert all(tokenizer.mask_token not in t for t in texts)
    assert texts == generate(model, tokenizer, n_samples=2, seq_len=24, steps=12, seed=0)
    assert stats.network_calls <= 12


def test_write_samples_and_report_samples(tiny_run, data_dir, tmp_path, tokenizer):
    runs, metrics = tiny_run
    out = write_samples(runs / "minilm_L2_w0.50_s0", data_dir, tmp_path / "cell.md", n_samples=2, steps=8)
    md = out.read_text()
    assert md.startswith("# Samples of minilm_L2_w0.50_s0") and "test ELBO PPL 250.00" in md
    assert md.count("**Sample ") == 2 and tokenizer.mask_token not in md
    paths = write_report_samples(metrics, data_dir, tmp_path / "r.md", tmp_path / "r.html", n_samples=1, steps=8)
    md, html = (p.read_text() for p in paths)
    # the best REPA cell (lowest PPL) first, then the baseline
    assert md.index("Best REPA cell (minilm, layer 2") < md.index("Baseline (no REPA): baseline_s0")
    assert "<pre>" in html and "network calls" in html
