"""The lm-eval adapter: the conditional ELBO it estimates, and a harness run on a local task, offline."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from repa_mdlm.config import StudentConfig, TokenizerConfig
from repa_mdlm.model.student import build_student

from .conftest import REPO, TINY_STUDENT

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[lm-eval]')")

from repa_mdlm.evaluation.lm_eval_adapter import conditional_elbo, plan_windows  # noqa: E402

SEQ_LEN = 32
WORDS = ("no principio criou deus os ceus e a terra e a terra era sem forma e vazia e havia trevas sobre a face "
         "do abismo e o espirito de deus se movia sobre a face das aguas e disse deus haja luz e houve luz").split()
COLOURS = ["vermelho", "azul", "verde", "amarelo"]


def _student(vocab=100, mask=99):
    cfg = StudentConfig(**{**TINY_STUDENT, "attn_implementation": "eager"})
    return build_student(cfg, tokenizer_size=vocab, mask_token_id=mask, eos_token_id=0, seed=0).eval()


def _constant_student(vocab=100, mask=99):
    model = _student(vocab, mask)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: uniform over the V - 1 tokens SUBS allows
    return model


def _requests(rng, n=6, vocab=100):
    return [(rng.integers(1, vocab - 1, rng.integers(0, 6)).tolist(), rng.integers(1, vocab - 1, k).tolist())
            for k in rng.integers(1, 9, n)]


@pytest.mark.parametrize("t_draws", [1, 3, 16])
def test_constant_logits_give_exactly_k_log_v_minus_1(t_draws):
    requests = _requests(np.random.default_rng(0))
    draws, _ = conditional_elbo(_constant_student(), requests, t_draws=t_draws, seed=t_draws, rows_per_pass=7)
    expected = np.array([-len(target) * math.log(100 - 1) for _, target in requests])
    # every single draw, not just the mean: the count estimator is exact for a uniform model
    np.testing.assert_allclose(draws, np.repeat(expected[:, None], t_draws, axis=1), rtol=1e-12)


def test_bernoulli_estimator_matches_in_expectation():
    """MDLM's literal estimator (Bernoulli masks, 1/t): E = -k (1 - eps) log(V - 1) for t ~ U[eps, 1]."""
    requests = [([5, 6], list(range(1, 9)))]
    eps = 1e-3
    draws, _ = conditional_elbo(_constant_student(), requests, t_draws=4000, seed=1, rows_per_pass=4096,
                                estimator="bernoulli", eps=eps)
    expected = -8 * (1 - eps) * math.log(99)
    assert abs(draws.mean() - expected) < 4 * draws.std() / math.sqrt(4000) + 1e-9


def test_single_token_elbo_is_the_exact_log_likelihood():
    """k = 1: the ELBO is log p(y | context, one mask), whatever the draws."""
    model = _student()
    context, target = [3, 17, 42, 8], [25]
    draws, _ = conditional_elbo(model, [(context, target)], t_draws=5, seed=0)
    with torch.no_grad():
        logits = model(torch.tensor([context + [99]])).logits[0, -1, :100].double()
        logits[99] = -math.inf
        exact = torch.log_softmax(logits, -1)[25].item()
    np.testing.assert_allclose(draws[0], exact, rtol=1e-5)


def test_two_token_elbo_by_enumeration():
    """k = 2: ELBO = sum_l (1/l) E_{|M|=l} = mean_i log p(y_i | y_i masked) + 1/2 log p(y | both masked); the
    count estimator's mean over many draws matches this enumeration."""
    model = _student()
    c, (a, b) = [3, 17], (25, 61)

    def lp(x, pos, tok):
        with torch.no_grad():
            logits = model(torch.tensor([x])).logits[0, pos, :100].double()
        logits[99] = -math.inf
        return torch.log_softmax(logits, -1)[tok].item()

    one_masked = 0.5 * (2 * lp(c + [99, b], 2, a) + 2 * lp(c + [a, 99], 3, b))
    both = lp(c + [99, 99], 2, a) + lp(c + [99, 99], 3, b)
    exact_elbo = 0.5 * one_masked + 0.5 * both
    draws, _ = conditional_elbo(model, [(c, [a, b])], t_draws=2000, seed=3, rows_per_pass=4096)
    assert abs(draws.mean() - exact_elbo) < 4 * draws.std() / math.sqrt(2000) + 1e-9


def test_more_t_draws_reduce_the_spread():
    model = _student()
    request = [([3, 17, 42], [5, 9, 11, 23, 31, 47, 2, 64, 70, 12])]

    for estimator in ("count", "bernoulli"):
        few = np.std([conditional_elbo(model, request, t_draws=2, seed=s, estimator=estimator)[0].mean()
                      for s in range(24)])
        many = np.std([conditional_elbo(model, request, t_draws=32, seed=s, estimator=estimator,
                                        rows_per_pass=512)[0].mean() for s in range(24)])
        assert many < 0.5 * few, (estimator, few, many)


def test_estimate_does_not_depend_on_batching_or_order():
    model = _student()
    requests = _requests(np.random.default_rng(1), n=8)
    a, ga = conditional_elbo(model, requests, t_draws=4, seed=5, rows_per_pass=3)
    b, gb = conditional_elbo(model, requests[::-1], t_draws=4, seed=5, rows_per_pass=1000)
    np.testing.assert_allclose(a, b[::-1], rtol=1e-6)
    np.testing.assert_array_equal(ga, gb[::-1])


def test_context_beyond_the_window_does_not_leak():
    """Only the window is run (no padding): tokens the window cut off change nothing."""
    windows = plan_windows(list(range(1, 40)), [50, 51, 52], max_length=8)
    assert windows == [(list(range(35, 40)), [50, 51, 52])]
    assert plan_windows([7] * 3 + list(range(35, 40)), [50, 51, 52], 8) == windows
    # and the model sees exactly the window: a longer sequence (bidirectional attention) would change it
    model = _student()
    (short,), _ = conditional_elbo(model, windows, t_draws=4, seed=0)
    (longer,), _ = conditional_elbo(model, [([7] * 3 + list(range(35, 40)), [50, 51, 52])], t_draws=4, seed=0)
    assert not np.allclose(short, longer)


def test_plan_windows_cuts_long_targets():
    target = list(range(100, 120))
    disjoint = plan_windows([1], target, max_length=8)
    assert [t for _, t in disjoint] == [target[0:8], target[8:16], target[16:20]]
    assert disjoint[0][0] == [] and disjoint[2][0] == target[12:16]  # the last, short chunk gets context
    overlapping = plan_windows([1], target, max_length=8, rolling_context=3)
    assert all(len(c) + len(t) <= 8 for c, t in overlapping)
    assert sum((t for _, t in overlapping), []) == target
    assert overlapping[1] == (target[2:5], target[5:10])
    assert plan_windows([1, 2], [], 8) == []


# ---------------------------------------------------------------- a harness run on a local task
@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """A sweep's layout in miniature: results/data/{tokenizer,manifest.json}, results/runs/<cell>/model."""
    from repa_mdlm.data.dataset import train_bpe_tokenizer

    results = tmp_path_factory.mktemp("results")
    tok_dir = results / "data" / "tokenizer"
    docs = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    docs += [f"a cor do ceu e {c} e a cor da terra e {c}" for c in COLOURS]
    tokenizer = train_bpe_tokenizer(iter(docs), TokenizerConfig(name_or_path=None, train_vocab_size=300), limit=1000)
    tokenizer.save_pretrained(tok_dir)
    (results / "data" / "manifest.json").write_text(json.dumps({"seq_len": SEQ_LEN}))
    cfg = StudentConfig(**TINY_STUDENT)
    model = build_student(cfg, len(tokenizer), tokenizer.mask_token_id, tokenizer.eos_token_id, seed=0)
    model_dir = results / "runs" / "tiny_cell" / "model"
    model.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """An 8-item multiple-choice task in a YAML beside its JSONL data."""
    folder = tmp_path_factory.mktemp("task")
    rng = np.random.default_rng(0)
    with open(folder / "items.jsonl", "w") as f:
        for i in range(8):
            start = int(rng.integers(0, len(WORDS) - 12))
            f.write(json.dumps({"question": " ".join(WORDS[start:start + 10]) + " e a cor e",
                                "choices": COLOURS, "answer": int(rng.integers(0, 4))}) + "\n")
    (folder / "tiny_mc.yaml").write_text(f"""\
task: repa_mdlm_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / 'items.jsonl'}
  cache_dir: {folder / 'hf-cache'}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")
    return folder


@pytest.fixture
def offline(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")


def test_simple_evaluate_on_a_local_task(cell, task_dir, offline):
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="repa-mdlm", model_args=f"pretrained={cell},t_draws=4,seed=3", tasks=["repa_mdlm_tiny_mc"],
        task_manager=TaskManager(include_path=str(task_dir)), batch_size=2, device="cpu")
    metrics = results["results"]["repa_mdlm_tiny_mc"]
    assert 0.0 <= metrics["acc,none"] <= 1.0 and 0.0 <= metrics["acc_norm,none"] <= 1.0
    assert results["config"]["model"] == "repa-mdlm"


def test_adapter_scores_like_the_estimator(cell):
    """loglikelihood = conditional_elbo on the tokens the harness gives; the tokenizer and seq_len
    come from the results layout."""
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    lm = get_model("repa-mdlm").create_from_arg_string(f"pretrained={cell},t_draws=3,device=cpu")
    assert lm.max_length == SEQ_LEN
    requests = [Instance("loglikelihood", {}, ("a cor do ceu e", " azul"), 0),
                Instance("loglikelihood", {}, ("", "a terra"), 1),
                Instance("loglikelihood", {}, (" ".join(WORDS), " e havia luz"), 2)]
    out = lm.loglikelihood(requests)
    # text beyond the window (seq_len 32) changes nothing
    far = [Instance("loglikelihood", {}, (prefix + " ".join(WORDS), " e havia luz"), 0) for prefix in ("", "trevas ")]
    assert lm.loglikelihood(far)[0] == lm.loglikelihood(far)[1] == out[2]
    assert all(lp < 0 and isinstance(g, bool) for lp, g in out)
    ctx, cont = lm._encode_pair("a cor do ceu e", " azul")
    draws, _ = conditional_elbo(lm.model, [(ctx, cont)], t_draws=3, seed=lm.seed)
    assert out[0][0] == pytest.approx(draws.mean(), rel=1e-6)
    rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (" ".join(WORDS * 2),), 0)])
    assert len(lm.tok_encode(" ".join(WORDS * 2))) > SEQ_LEN and rolling[0] < 0  # cut into windows
    with pytest.raises(NotImplementedError, match="repa-mdlm sample"):
        lm.generate_until([Instance("generate_until", {}, ("a cor", {"until": ["\n"]}), 0)])


@pytest.mark.slow
def test_command_line_route(cell, task_dir, tmp_path):
    """The README's command: `python -m repa_mdlm.evaluation.lm_eval_adapter --model repa-mdlm ... --include_path`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "repa_mdlm.evaluation.lm_eval_adapter", "--model", "repa-mdlm",
         "--model_args", f"pretrained={cell},tokenizer={cell.parents[2] / 'data' / 'tokenizer'},t_draws=2",
         "--tasks", "repa_mdlm_tiny_mc", "--include_path", str(task_dir), "--device", "cpu", "--limit", "4",
         "--output_path", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "repa_mdlm_tiny_mc" in proc.stdout and "acc" in proc.stdout
    assert list((tmp_path / "out").rglob("results_*.json"))
