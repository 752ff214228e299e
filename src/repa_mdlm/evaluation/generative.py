"""What a cell generates: generative perplexity under a judge, unigram entropy, the sampler's cost.

Each cell draws `generative.samples` sequences with the project's ancestral sampler (float64
Gumbel, the same seed for every cell), and a causal judge (judge.py) reads their text through its
own tokenizer. Two numbers describe the samples, as in the MDLM literature:

- gen-PPL = exp(total judge NLL / total judge tokens), with a standard error over samples (delta
  method for the ratio estimator); low is fluent to the judge;
- unigram entropy of each sample's token ids (nats), averaged: a sampler that repeats itself
  gets a low gen-PPL *and* a low entropy, so the two are read together.

The same statistics of real test sequences of the same length anchor both: a cell whose entropy
falls below `DEGENERATE_ENTROPY_RATIO` of the data's is flagged as degenerate.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..config import Cell, Config

DEGENERATE_ENTROPY_RATIO = 0.8
"""A cell's mean sample entropy below this fraction of real text's (same length) is flagged."""


def unigram_entropy(ids: np.ndarray) -> np.ndarray:
    """Entropy (nats) of the token-id frequencies of each row of ids [n, L]."""
    out = np.zeros(len(ids))
    for i, row in enumerate(np.asarray(ids)):
        p = np.unique(row, return_counts=True)[1] / len(row)
        out[i] = float(-(p * np.log(p)).sum())
    return out


def ratio_ppl(nll_sums: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """exp(sum NLL / sum tokens) and its standard error over samples (delta method, ratio estimator)."""
    nll_sums, counts = np.asarray(nll_sums, float), np.asarray(counts, float)
    keep = counts > 0
    nll_sums, counts = nll_sums[keep], counts[keep]
    rate = nll_sums.sum() / counts.sum()
    n = len(counts)
    if n < 2:
        return math.exp(rate), float("nan")
    residual = nll_sums - rate * counts
    se_rate = math.sqrt(residual.var(ddof=1) / n) / counts.mean()
    return math.exp(rate), math.exp(rate) * se_rate


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, float)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def describe_samples(ids: np.ndarray, texts: list[str], judge, judge_tokenizer, batch_size: int,
                     max_length: int) -> dict:
    """gen-PPL (with its s.e.) and mean unigram entropy (with its s.e.) of token-id rows and their text."""
    from .judge import score_texts

    nll, counts = score_texts(judge, judge_tokenizer, texts, batch_size, max_length)
    ppl, ppl_se = ratio_ppl(nll, counts)
    entropy, entropy_se = _mean_se(unigram_entropy(ids))
    return {"gen_ppl": ppl, "gen_ppl_se": ppl_se, "entropy": entropy, "entropy_se": entropy_se,
            "judge_tokens": int(counts.sum())}


def draw_samples(model, cfg: Config, seq_len: int) -> tuple[np.ndarray, dict]:
    """The cell's samples [n, seq_len], in batches of generative.batch_size (batch b uses seed + b),
    and the sampler's cost: network calls and seconds per sample."""
    from .sampler import sample_ids

    gen, rows, calls = cfg.generative, [], 0
    start = time.perf_counter()
    for b, first in enumerate(range(0, gen.samples, gen.batch_size)):
        ids, stats = sample_ids(model, min(gen.batch_size, gen.samples - first), seq_len, gen.steps,
                                gen.seed + b, cfg.diffusion.eps)
        rows.append(ids.numpy())
        calls += stats.network_calls * len(ids)
    seconds = time.perf_counter() - start
    return np.concatenate(rows), {"network_calls_per_sample": calls / gen.samples,
                                  "sampler_s_per_sample": seconds / gen.samples}


def generative_eval(cfg: Config, cell: Cell, run_dir: str | os.PathLike, data_dir: str | os.PathLike,
                    judge_dir: str | os.PathLike | None) -> dict:
    """Everything generative.json holds for one cell (see the module docstring)."""
    from ..data.dataset import load_tokenizer, open_split, read_manifest, sequence_texts
    from ..layout import TOKENIZER
    from ..training.checkpoint import load_trained_student
    from .judge import load_judge

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data_dir = Path(data_dir)
    seq_len = cfg.generative.seq_len or int(read_manifest(data_dir)["seq_len"])
    tokenizer = load_tokenizer(data_dir / TOKENIZER)
    model, _ = load_trained_student(run_dir, device)
    ids, cost = draw_samples(model, cfg, seq_len)
    judge, judge_tokenizer, judge_name = load_judge(cfg.generative.judge, judge_dir, device)
    args = (judge, judge_tokenizer, cfg.generative.judge.batch_size, cfg.generative.judge.max_length)
    texts = sequence_texts(tokenizer, ids)
    samples = describe_samples(ids, texts, *args)
    real = np.asarray(open_split(data_dir, "test", verify=True)[:cfg.generative.samples, :seq_len])
    data = describe_samples(real, sequence_texts(tokenizer, real), *args)
    flags = []
    if samples["entropy"] < DEGENERATE_ENTROPY_RATIO * data["entropy"]:
        flags.append(f"degenerate: mean sample entropy {samples['entropy']:.2f} is below "
                     f"{DEGENERATE_ENTROPY_RATIO:.0%} of real text's {data['entropy']:.2f}; a low gen-PPL "
                     "here means repetition, not fluency")
    return {
        "cell": cell.name, "teacher": cell.teacher, "layer": cell.layer, "weight": cell.weight, "seed": cell.seed,
        **samples, **{f"data_{k}": v for k, v in data.items()}, **cost,
        "samples": cfg.generative.samples, "steps": cfg.generative.steps, "seq_len": seq_len,
        "sampler_seed": cfg.generative.seed, "judge": judge_name,
        "judge_trained_on_train_split": cfg.generative.judge.name_or_path is None,
        "flags": flags, "texts": texts,
    }
