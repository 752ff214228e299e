"""Generative perplexity and entropy: the metric's own sanity, and one cell end to end.

- a causal judge trained on the train split learns (its test PPL far below the vocabulary's);
- the judge's own samples score near its own test perplexity (the metric reads fluency to the judge);
- a degenerate sampler (one token repeated) gets a low gen-PPL and zero entropy, and the report flags it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from repa_mdlm.config import Cell
from repa_mdlm.data.dataset import load_tokenizer, open_split, sequence_texts
from repa_mdlm.evaluation.generative import describe_samples, generative_eval, ratio_ppl, unigram_entropy
from repa_mdlm.evaluation.judge import fit_judge, load_judge, sample_causal, score_token_ids
from repa_mdlm.training.trainer import train_cell

from .conftest import tiny_config

GENERATIVE = {"samples": 16, "steps": 16, "batch_size": 8, "seed": 3,
              "judge": {"train_steps": 60, "train_batch": 16, "batch_size": 16}}


@pytest.fixture(scope="module")
def judge(data_dir, tmp_path_factory):
    cfg = tiny_config(generative=GENERATIVE)
    out = tmp_path_factory.mktemp("judge")
    info = fit_judge(cfg, data_dir, out)
    model, tokenizer, name = load_judge(cfg.generative.judge, out, torch.device("cpu"))
    return cfg, out, info, model, tokenizer, name


def test_entropy_and_ratio_estimator_by_hand():
    assert unigram_entropy(np.array([[5, 5, 5, 5], [1, 2, 3, 4], [1, 1, 2, 2]])) == pytest.approx(
        [0.0, math.log(4), math.log(2)])
    ppl, se = ratio_ppl(np.array([2.0, 4.0, 6.0]), np.array([1, 2, 3]))
    assert ppl == pytest.approx(math.e ** 2) and se == pytest.approx(0.0, abs=1e-12)  # every sample at 2 nats
    ppl, se = ratio_ppl(np.array([1.0, 3.0]), np.array([1, 1]))
    assert ppl == pytest.approx(math.e ** 2) and se == pytest.approx(math.e ** 2 * 1.0)  # sd sqrt(2)/sqrt(2)


def test_a_trained_judge_learns_the_train_split(judge, tokenizer):
    _, _, info, _, _, name = judge
    assert info["test_ppl"] < len(tokenizer) / 2, info  # well below a uniform guess over the vocabulary
    assert "measures fit to that data, not general fluency" in name


def test_the_judges_own_samples_score_near_its_own_test_perplexity(judge):
    """A judge's samples follow its own distribution, so their PPL under it is its entropy rate, which
    its test PPL approaches while it generalises (60 steps here: trained to memorise the small train
    split, its samples would copy train text and score far lower)."""
    _, _, info, model, tokenizer, _ = judge
    samples = sample_causal(model, 96, 32, tokenizer.eos_token_id, seed=0)
    nll, counts = score_token_ids(model, samples, batch_size=32)
    own = math.exp(nll.sum() / counts.sum())
    assert 0.75 < own / info["test_ppl"] < 1.33, (own, info["test_ppl"])


def test_a_degenerate_sampler_gets_low_gen_ppl_zero_entropy_and_a_flag(judge, data_dir, tmp_path, monkeypatch):
    cfg, judge_dir, _, model, judge_tokenizer, _ = judge
    tokenizer = load_tokenizer(data_dir / "tokenizer")
    real = np.asarray(open_split(data_dir, "test")[:16])
    common = np.bincount(real.ravel()).argmax()
    repeated = np.full((16, 32), common)
    args = (model, judge_tokenizer, 16, 64)
    degenerate = describe_samples(repeated, sequence_texts(tokenizer, repeated), *args)
    data = describe_samples(real, sequence_texts(tokenizer, real), *args)
    assert degenerate["entropy"] == 0.0 and data["entropy"] > 2.0
    assert degenerate["gen_ppl"] < data["gen_ppl"], (degenerate, data)

    baseline = Cell("baseline", None, 0.0, 0)
    run = tmp_path / "run"
    train_cell(cfg, baseline, data_dir, run, None)
    report = generative_eval(cfg, baseline, run, data_dir, judge_dir)
    assert report["samples"] == 16 and len(report["texts"]) == 16 and report["judge_trained_on_train_split"]
    assert report["network_calls_per_sample"] <= 16 and report["sampler_s_per_sample"] > 0
    assert math.isfinite(report["gen_ppl"]) and report["gen_ppl_se"] > 0
    monkeypatch.setattr("repa_mdlm.evaluation.generative.draw_samples",
                        lambda model, cfg, seq_len: (repeated, {"network_calls_per_sample": 1.0,
                                                                "sampler_s_per_sample": 0.1}))
    flagged = generative_eval(cfg, baseline, run, data_dir, judge_dir)
    assert flagged["entropy"] == 0.0 and flagged["flags"] and flagged["flags"][0].startswith("degenerate")
