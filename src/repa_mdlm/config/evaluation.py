"""How each cell is scored: the test ELBO perplexity with its zero-shot sets, and the generative
evaluation with its judge."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .base import TEACHER_NAME, field_errors
from .data import CorpusConfig


@dataclass
class ZeroShotSet:
    """Another corpus every cell is scored on (zero-shot ELBO perplexity): all its documents are test."""

    name: str
    """Short name: the data folder, the file stem and the table's label ([a-z0-9.-])."""
    corpus: CorpusConfig
    """Any source the corpus section accepts; corpus.test_tokens is the budget, the splits are unused."""
    optional: bool = False
    """Skip the set, with a warning, when its local files are missing (e.g. a Debian package that is
    not installed) instead of refusing the config."""

    def available(self, base_dir: str | os.PathLike = ".") -> bool:
        from .locations import resolve_corpus_glob

        return self.corpus.source != "local" or all(resolve_corpus_glob(p, base_dir) for p in self.corpus.paths)

    def check(self, key: str, base_dir: str | os.PathLike = ".") -> list[str]:
        errors = field_errors(self, key)
        if not TEACHER_NAME.match(self.name or ""):
            errors.append(f"{key}.name = {self.name!r}: use lowercase letters, digits, '.' and '-' only")
        if not (self.optional and not self.available(base_dir)):
            errors += self.corpus.check(base_dir, f"{key}.corpus")
        return errors


@dataclass
class EvaluateConfig:
    t_draws: int = 8
    """Stratified diffusion times per test sequence."""
    sequences: int | None = None
    """Test sequences to use; null = all."""
    batch_size: int = 64
    """Sequences per forward pass of the evaluation (memory only)."""
    seed: int = 1234
    """Seed of the evaluation's times and masks: every cell is scored on the same draws."""
    extra_test_sets: list[ZeroShotSet] = field(default_factory=list)
    """Zero-shot test sets: other corpora each cell's ELBO PPL is measured on, by their own jobs
    (changing them never retrains a cell)."""

    def check(self, key: str = "evaluate", base_dir: str | os.PathLike = ".") -> list[str]:
        errors = field_errors(self, key)
        # standard errors are over sequences (test_nelbo_se) and over t draws (test_nelbo_mc_se): one is NaN
        for name, value in (("sequences", self.sequences), ("t_draws", self.t_draws)):
            if isinstance(value, int) and value < 2:
                errors.append(f"{key}.{name} = {value}: a standard error needs at least 2 (Table 1 would show NaN); "
                              f"use 2 or more{' (null: every test sequence)' if name == 'sequences' else ''}")
        names = [s.name for s in self.extra_test_sets]
        for i, test_set in enumerate(self.extra_test_sets):
            errors += test_set.check(f"{key}.extra_test_sets[{i}]", base_dir)
            if names.count(test_set.name) > 1:
                errors.append(f"{key}.extra_test_sets[{i}].name = {test_set.name!r} is used twice; names must be unique")
        return errors

    def zero_shot_sets(self, base_dir: str | os.PathLike = ".") -> list[ZeroShotSet]:
        """The sets to score: an optional set whose files are missing is left out."""
        return [s for s in self.extra_test_sets if not s.optional or s.available(base_dir)]


@dataclass
class JudgeConfig:
    """The causal LM that scores the samples of every cell (generative perplexity)."""

    name_or_path: str | None = None
    """Hub id, local folder or package:<module>/<dir> of a causal LM that reads the corpus language;
    null = train a small causal judge on the train split (it then measures fit to that data, not
    general fluency; the tables say so)."""
    revision: str | None = None
    """Hub revision (commit, tag or branch) of name_or_path; null = the default branch."""
    max_length: int = 1024
    """Judge tokens per sample at most (longer samples are cut)."""
    batch_size: int = 16
    """Samples per judge forward pass (memory only)."""
    train_steps: int = 300
    """Steps of the judge trained when name_or_path is null: the student's architecture, causal."""
    train_lr: float = 3.0e-3
    """Peak learning rate of that judge (AdamW, linear warm-up over a tenth of the steps)."""
    train_batch: int = 16
    """Sequences per step of that judge."""

    def check(self, key: str = "generative.judge") -> list[str]:
        from .locations import model_location_problem

        errors = field_errors(self, key)
        problem = model_location_problem(self.name_or_path) if self.name_or_path else None
        if problem:
            errors.append(f"{key}.name_or_path = {self.name_or_path!r}: {problem}")
        return errors


@dataclass
class GenerativeConfig:
    """What each cell generates, scored by a judge: generative perplexity and unigram entropy."""

    samples: int = 64
    """Samples per cell; 0 = no generative evaluation."""
    steps: int = 256
    """Denoising steps of the ancestral sampler (float64 Gumbel) per sample."""
    seq_len: int | None = None
    """Tokens per sample; null = the data's sequence length."""
    seed: int = 0
    """Seed of the sampler: every cell draws with the same seed."""
    batch_size: int = 16
    """Samples drawn at once (memory only)."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """The causal LM that scores the samples."""

    def check(self, key: str = "generative") -> list[str]:
        errors = field_errors(self, key) + self.judge.check(f"{key}.judge")
        if self.samples == 1:
            errors.append(f"{key}.samples = 1: the standard errors of gen_ppl and entropy are over samples and need "
                          "at least 2; use 2 or more (0: no generative evaluation)")
        return errors


def standard_error_errors(cfg, base_dir: str | os.PathLike = ".") -> list[str]:
    """Test splits too small for a standard error: the test ELBO's is over test sequences, so the main
    test split and each zero-shot set need at least 2 of seq_len tokens (corpus.test_tokens; the
    tokenize job refuses a corpus that holds fewer). cfg: a Config."""
    budgets = [("corpus.test_tokens", cfg.corpus.test_tokens)]
    budgets += [(f"evaluate.extra_test_sets[{i}].corpus.test_tokens", s.corpus.test_tokens)
                for i, s in enumerate(cfg.evaluate.extra_test_sets) if s in cfg.evaluate.zero_shot_sets(base_dir)]
    return [f"{key} = {tokens}: {tokens // cfg.seq_len} test sequence(s) of seq_len = {cfg.seq_len} tokens; the test "
            f"PPL's standard error needs at least 2, so at least {2 * cfg.seq_len} tokens"
            for key, tokens in budgets if isinstance(tokens, int) and tokens // cfg.seq_len < 2]

