"""Test ELBO perplexity: exp(mean N-ELBO per token), never with the REPA term.

Each sequence gets `t_draws` stratified diffusion times and fresh masks from a fixed
seed, so every cell is scored on the same noise (paired comparisons). The standard
error is over per-sequence estimates, so it covers data and Monte Carlo noise; the
Monte Carlo part alone is reported too, to set beside the spread between seeds.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..config import Cell, Config
from ..layout import TIMING_KEYS
from ..model.diffusion import nelbo_draws


def monte_carlo_se(draws: np.ndarray) -> float:
    """Standard error of the mean N-ELBO due to the diffusion times and masks alone (the test
    set held fixed), for one stratified draw per stratum: the collapsed-strata estimate.
    Adjacent strata are paired after removing each stratum's mean over the test set, so the
    N-ELBO's trend in t is not counted as noise. It is an estimate from this one evaluation, not a
    bound: right on average, but a single value is below the true Monte Carlo error more often than
    not (76-78 % of 1 000 repeated evaluations, issue 19), so read it as a typical size."""
    n, k = draws.shape
    if k < 2 or n < 2:
        return float("nan")
    pairs = k // 2
    residual = draws - draws.mean(axis=0)
    diff = residual[:, 0:2 * pairs:2] - residual[:, 1:2 * pairs:2]
    var_per_sequence = (diff ** 2).sum(axis=1) / (2 * pairs * k)
    return float(math.sqrt(var_per_sequence.sum()) / n)


def summarize(draws: np.ndarray, seq_len: int) -> dict:
    """Test N-ELBO and PPL from [n sequences, t draws] estimates, with two standard errors:

    - test_nelbo_se: over the per-sequence means; covers which sequences are in the test set
      and the Monte Carlo noise of t and the masks;
    - test_nelbo_mc_se: the Monte Carlo part alone (`monte_carlo_se`), to set beside the
      spread between seeds.
    """
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim == 1:
        draws = draws[:, None]
    n = len(draws)
    per_sequence = draws.mean(axis=1)
    mean = float(per_sequence.mean())
    se = float(per_sequence.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {
        "test_nelbo": mean,
        "test_nelbo_se": se,
        "test_nelbo_mc_se": monte_carlo_se(draws),
        "test_ppl": math.exp(mean),
        "test_ppl_ci95": [math.exp(mean - 1.96 * se), math.exp(mean + 1.96 * se)],
        "test_sequences": int(n),
        "test_tokens": int(n * seq_len),
    }


def elbo_summary(cfg: Config, model, data_dir: str | os.PathLike) -> dict:
    """summarize() of the model's N-ELBO draws on a data folder's test.bin (evaluate.* settings)."""
    from ..data.dataset import open_split

    test = open_split(data_dir, "test", verify=True)
    if cfg.evaluate.sequences:
        test = test[: cfg.evaluate.sequences]
    draws = nelbo_draws(model, test, cfg.evaluate.t_draws, cfg.diffusion.eps, cfg.evaluate.seed,
                        cfg.evaluate.batch_size, cfg.train.precision)
    return summarize(draws, test.shape[1])


def _cell_fields(cell: Cell) -> dict:
    return {"cell": cell.name, "teacher": cell.teacher, "layer": cell.layer, "weight": cell.weight, "seed": cell.seed}


def zero_shot_run(cfg: Config, cell: Cell, run_dir: str | os.PathLike, set_dir: str | os.PathLike,
                  set_name: str) -> dict:
    """A trained cell's ELBO perplexity on a zero-shot set (its test.bin), with the same Monte Carlo
    settings (evaluate.*) as its own test set."""
    from ..training.checkpoint import load_trained_student

    model, _ = load_trained_student(run_dir, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return {**_cell_fields(cell), "test_set": set_name, **elbo_summary(cfg, model, set_dir),
            "t_draws": cfg.evaluate.t_draws, "eval_seed": cfg.evaluate.seed}


def evaluate_run(cfg: Config, cell: Cell, run_dir: str | os.PathLike, data_dir: str | os.PathLike) -> dict:
    """The test ELBO perplexity of a trained cell and its training figures: metrics.json. The step
    times (layout.TIMING_KEYS) are copied when train_summary.json has them (trained since they were)."""
    from ..training.checkpoint import load_trained_student

    cfg.require_cell(cell)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, summary = load_trained_student(run_dir, device)
    return {
        **_cell_fields(cell),
        **elbo_summary(cfg, model, data_dir),
        "t_draws": cfg.evaluate.t_draws,
        "eval_seed": cfg.evaluate.seed,
        "train_wall_s": summary["train_wall_s"],
        "train_tokens_per_s": summary["tokens_per_s"],
        "steps": summary["steps"],
        **{key: summary[key] for key in TIMING_KEYS if key in summary},
        "teacher_features": None if cell.is_baseline else cfg.teacher_features,
        "device": str(device),
    }
