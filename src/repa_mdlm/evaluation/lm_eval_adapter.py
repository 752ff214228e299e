"""A trained cell as an lm-evaluation-harness model: log-likelihoods from the MDLM ELBO.

Registered as ``repa-mdlm`` in lm-eval's model registry when this module is imported. lm-eval 0.4
finds no models outside its own package (``--include_path`` adds *tasks* only, and there is no entry
point for models), so run the harness through this module, which imports it and then hands the
command line to lm-eval unchanged:

    python -m repa_mdlm.evaluation.lm_eval_adapter --model repa-mdlm \\
        --model_args pretrained=results/runs/<cell>/model,tokenizer=results/data/tokenizer,t_draws=32 \\
        --tasks <task> [--include_path <folder of task YAMLs>]

(or, from Python: ``import repa_mdlm.evaluation.lm_eval_adapter`` and then ``lm_eval.simple_evaluate(model="repa-mdlm", ...)``).

What ``loglikelihood`` returns
------------------------------
For a request (context c, continuation y = y_1..y_k) it returns a Monte Carlo estimate of the MDLM
*conditional ELBO*, a lower bound on log p(y | c): the context stays clean, only continuation tokens
are masked and scored (SUBS: the mask token is never predicted, clean tokens add exactly 0). In
continuous time with the log-linear schedule (mask probability t, weight -alpha'_t / (1 - alpha_t) = 1/t)

    log p(y | c) >= ELBO = int_0^1 (1/t) E_{M ~ Bernoulli(t)^k} [ sum_{i in M} log p(y_i | c, y with M masked) ] dt
                         = sum_{l=1}^k (1/l) E_{|M| = l} [ sum_{i in M} log p(y_i | ...) ]
                         = E_{l ~ U{1..k}} [ (k/l) E_{|M| = l} [ sum_{i in M} log p(y_i | ...) ] ],

because int_0^1 (1/t) C(k,l) t^l (1-t)^(k-l) dt = 1/l. The default estimator (``estimator=count``)
draws ``t_draws`` stratified times u_j = (j + U_j) / t_draws, masks l_j = ceil(u_j k) continuation
tokens chosen uniformly, and weights them by k/l_j (1/t with t the masked fraction): it is unbiased
for the ELBO above, exact for k = 1 (then ELBO = log p(y_1 | c, mask)) and exact for any draws when
the model's logits are constant (-k log(V - 1), V the vocabulary without the mask). ``estimator=bernoulli``
is MDLM's estimator exactly as training and `evaluate` use it: t_j stratified on [eps, 1], each
continuation token masked with probability (1 - eps) t_j, weight 1/t_j (eps from the run's config.yaml);
it has the same expectation up to O(eps) and much more variance on short continuations.
Log-probabilities are taken in float64 and summed in float64; every request has its own random
stream (from ``seed`` and its tokens), so the estimate does not depend on batching or order, and all
cells are scored on the same masks.

``is_greedy`` is not the causal "greedy decoding reproduces it" (an MDLM has no left-to-right
decoder): it is True when, with the whole continuation masked and the context clean, every y_i is the
argmax of the model's SUBS distribution at its position (one-step parallel greedy decoding; one extra
forward pass per request). ``greedy=false`` skips that pass and reports False.

Windows
-------
The student is bidirectional and has no padding token, so nothing is padded: every forward pass is
one window of real tokens, at its own length, at most ``max_length`` (default: the ``seq_len`` of the
token arrays beside the tokenizer, i.e. the length the cell was trained on; else the model's
max_position_embeddings). Windows of equal length are batched. A continuation that fits (k <= max_length)
is scored in one window with as much of its context as fits, truncated on the left. Longer targets,
and ``loglikelihood_rolling``'s texts (whose context is one EOS, the document start as packing made
it), are cut into consecutive chunks of ``max_length - rolling_context`` tokens; each chunk is scored
with the tokens just before it as clean context, filling the window, and the chunks' ELBOs add up
(a lower bound on sum_j log p(chunk_j | the prefix that fits in its window)). With the default
``rolling_context=0`` the chunks are disjoint windows of max_length tokens, as the test perplexity
reads packed sequences.

``generate_until`` is not implemented: the project's sampler (``repa-mdlm sample``) draws
unconditional samples, not continuations of a prompt.
"""

from __future__ import annotations

import json
import math
import os
import sys
import zlib
from collections import defaultdict
from pathlib import Path

import lm_eval.models  # noqa: F401  (the harness's own models first, so they stay available beside ours)
import numpy as np
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from ..layout import DATA, MANIFEST, RUN_CONFIG, TOKENIZER
from ..model.diffusion import subs_log_probs
from ..model.student import autocast_context

ESTIMATORS = ("count", "bernoulli")
DEFAULT_EPS = 1e-3


# ---------------------------------------------------------------- the estimator
def plan_windows(context: list[int], target: list[int], max_length: int, rolling_context: int = 0):
    """[(window context, window target)]: each window holds at most max_length tokens. A target that
    fits goes whole into one window; a longer one is cut into chunks of max_length - rolling_context
    tokens. Each window's context is the tokens just before its chunk (context, then earlier target
    tokens), as many as fit, truncated on the left."""
    if not 0 <= rolling_context < max_length:
        raise ValueError(f"rolling_context must be in [0, max_length) = [0, {max_length}), got {rolling_context}")
    if not target:
        return []
    chunk = len(target) if len(target) <= max_length else max_length - rolling_context
    windows = []
    for start in range(0, len(target), chunk):
        piece = target[start:start + chunk]
        room = max_length - len(piece)
        prefix = context + target[:start]
        windows.append((prefix[len(prefix) - room:] if room else [], piece))
    return windows


def _request_rng(seed: int, context: list[int], target: list[int]) -> np.random.Generator:
    key = np.asarray(list(context) + [-1] + list(target), dtype=np.int64).tobytes()
    return np.random.default_rng([int(seed), zlib.crc32(key), len(context), len(target)])


def _draw_masks(k: int, t_draws: int, rng: np.random.Generator, estimator: str, eps: float):
    """[(masked positions in the target, weight)] for the t_draws stratified draws of one request."""
    u = (np.arange(t_draws) + rng.random(t_draws)) / t_draws
    draws = []
    for u_j in u:
        if estimator == "count":
            n_masked = min(k, max(1, math.ceil(u_j * k)))
            draws.append((np.sort(rng.choice(k, n_masked, replace=False)), k / n_masked))
        else:
            t = eps + (1.0 - eps) * u_j
            draws.append((np.flatnonzero(rng.random(k) < (1.0 - eps) * t), 1.0 / t))
    return draws


@torch.no_grad()
def conditional_elbo(model, requests, t_draws: int = 32, seed: int = 0, rows_per_pass: int = 256,
                     estimator: str = "count", eps: float = DEFAULT_EPS, precision: str = "bf16",
                     greedy: bool = True):
    """The conditional ELBO of each (context ids, target ids) request, one window each (the caller
    cuts windows, `plan_windows`). Returns (draws [n, t_draws] float64: the ELBO estimate of each
    draw, whose mean over draws is the estimate; is_greedy [n] bool). rows_per_pass: masked copies
    per forward pass (all of one length)."""
    from ..model.student import backbone_hidden, output_embedding

    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if t_draws < 1:
        raise ValueError(f"t_draws must be >= 1, got {t_draws}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    mask_id = model.config.mask_token_id
    head = output_embedding(model)
    draws = np.zeros((len(requests), t_draws), dtype=np.float64)
    is_greedy = np.zeros(len(requests), dtype=bool)

    # rows: (request, draw or -1 for the greedy pass, masked target positions, weight), grouped by length
    by_length: dict[int, list[tuple[int, int, np.ndarray, float]]] = defaultdict(list)
    for r, (context, target) in enumerate(requests):
        k = len(target)
        if k == 0:
            is_greedy[r] = True
            continue
        length = len(context) + k
        for j, (masked, weight) in enumerate(_draw_masks(k, t_draws, _request_rng(seed, context, target),
                                                         estimator, eps)):
            if len(masked):  # nothing masked: this draw scores exactly 0
                by_length[length].append((r, j, masked, weight))
        if greedy:
            by_length[length].append((r, -1, np.arange(k), 0.0))

    for length, rows in by_length.items():
        for start in range(0, len(rows), rows_per_pass):
            batch = rows[start:start + rows_per_pass]
            x0 = torch.tensor([list(requests[r][0]) + list(requests[r][1]) for r, *_ in batch], dtype=torch.long)
            offsets = [len(requests[r][0]) for r, *_ in batch]
            row_of = np.concatenate([np.full(len(m), b) for b, (_, _, m, _) in enumerate(batch)])
            pos_of = np.concatenate([offsets[b] + m for b, (_, _, m, _) in enumerate(batch)])
            rows_t, pos_t = torch.from_numpy(row_of), torch.from_numpy(pos_of)
            x_t = x0.clone()
            x_t[rows_t, pos_t] = mask_id
            with autocast_context(device, precision):
                hidden, _ = backbone_hidden(model, x_t.to(device))
                logits = hidden[rows_t.to(device), pos_t.to(device)] @ head.t()
            log_probs = subs_log_probs(logits, mask_id, dtype=torch.float64)
            targets = x0[rows_t, pos_t].to(device)
            token_lp = log_probs.gather(1, targets[:, None]).squeeze(1).cpu().numpy()
            hits = (log_probs.argmax(1) == targets).cpu().numpy()
            sums = np.zeros(len(batch), dtype=np.float64)
            np.add.at(sums, row_of, token_lp)
            all_hit = np.ones(len(batch), dtype=bool)
            np.logical_and.at(all_hit, row_of, hits)
            for b, (r, j, _, weight) in enumerate(batch):
                if j < 0:
                    is_greedy[r] = bool(all_hit[b])
                else:
                    draws[r, j] = weight * sums[b]
    model.train(was_training)
    return draws, is_greedy


# ---------------------------------------------------------------- where a cell's files are
def _default_tokenizer(model_dir: Path) -> Path:
    """The tokenizer beside the model, else the results layout's (results/runs/<cell>/model ->
    results/data/tokenizer)."""
    if (model_dir / "tokenizer.json").exists() or (model_dir / "tokenizer_config.json").exists():
        return model_dir
    layout = model_dir.resolve().parents[2] / DATA / TOKENIZER if len(model_dir.resolve().parents) > 2 else None
    if layout is not None and layout.is_dir():
        return layout
    raise FileNotFoundError(f"{model_dir}: no tokenizer beside the model nor at {layout}; pass tokenizer=<folder> "
                            "(results/data/tokenizer for a cell of a sweep)")


def _trained_length(tokenizer_dir: Path) -> int | None:
    manifest = tokenizer_dir.parent / MANIFEST
    if tokenizer_dir.name == TOKENIZER and manifest.exists():
        seq_len = json.loads(manifest.read_text()).get("seq_len")
        return int(seq_len) if seq_len else None
    return None


def _run_eps(model_dir: Path) -> float:
    run_config = model_dir.parent / RUN_CONFIG
    if run_config.exists():
        import yaml

        eps = ((yaml.safe_load(run_config.read_text()) or {}).get("diffusion") or {}).get("eps")
        if eps is not None:
            return float(eps)
    return DEFAULT_EPS


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


# ---------------------------------------------------------------- the harness model
class RepaMDLM(TemplateLM):
    """A trained repa-mdlm cell for lm-eval (see the module docstring for what it estimates).

    model_args: pretrained (the cell's model folder), tokenizer (default: beside the model, else
    results/data/tokenizer), t_draws (32), seed (1234), batch_size (requests per forward pass, each
    as t_draws masked copies plus the greedy one; lm-eval's default 1, `auto` = 8),
    device (cuda if available), max_length (the trained seq_len), estimator (count | bernoulli),
    eps (the run's diffusion.eps), precision (bf16 | fp32; bf16 autocast on CUDA only),
    rolling_context (0), greedy (true).
    """

    backend = "causal"  # context and continuation are encoded together, then split

    def __init__(self, pretrained: str, tokenizer: str | None = None, t_draws: int = 32, seed: int = 1234,
                 batch_size: int | str | None = 64, device: str | None = None, max_length: int | None = None,
                 estimator: str = "count", eps: float | None = None, precision: str = "bf16",
                 rolling_context: int = 0, greedy: bool | str = True, **unused):
        super().__init__()
        from ..data.dataset import load_tokenizer
        from ..model.student import load_student

        model_dir = Path(pretrained)
        tokenizer_dir = Path(tokenizer) if tokenizer else _default_tokenizer(model_dir)
        self.tokenizer = load_tokenizer(tokenizer_dir)
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_student(model_dir).to(self._device).eval()
        config = self.model.config
        if self.tokenizer.mask_token_id != config.mask_token_id or len(self.tokenizer) != config.diffusion_vocab_size:
            raise ValueError(f"{tokenizer_dir}: not this model's tokenizer (mask id {self.tokenizer.mask_token_id}, "
                             f"{len(self.tokenizer)} tokens; the model has mask id {config.mask_token_id}, "
                             f"{config.diffusion_vocab_size} tokens)")
        self.max_length = int(max_length or _trained_length(tokenizer_dir) or config.max_position_embeddings)
        if self.max_length > config.max_position_embeddings:
            raise ValueError(f"max_length {self.max_length} exceeds the model's max_position_embeddings "
                             f"{config.max_position_embeddings}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        self.t_draws, self.seed, self.estimator = int(t_draws), int(seed), estimator
        self.eps = float(eps) if eps is not None else _run_eps(model_dir)
        self.precision, self.greedy = precision, _as_bool(greedy)
        self.rolling_context = int(rolling_context)
        plan_windows([], [0], self.max_length, self.rolling_context)  # checks rolling_context
        # lm-eval passes an int, a digit string or "auto"/"auto:N": requests per forward pass
        self.batch_size = int(batch_size) if str(batch_size or "").isdigit() else (8 if batch_size else 1)
        self._tokenizer_dir = str(tokenizer_dir)

    # ---- what TemplateLM needs
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id  # packing puts EOS before every document

    @property
    def tokenizer_name(self) -> str:
        return self._tokenizer_dir.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer(string, add_special_tokens=False)["input_ids"]  # training added none

    def tok_decode(self, tokens, **kwargs) -> str:
        return self.tokenizer.decode(tokens)

    # ---- scoring
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """ELBO of each (context ids, target ids), summed over its windows; greedy if every window is."""
        windows, owner = [], []
        for i, (context, target) in enumerate(pairs):
            for window in plan_windows(list(context), list(target), self.max_length, self.rolling_context):
                windows.append(window)
                owner.append(i)
        rows_per_pass = max(1, self.batch_size * (self.t_draws + int(self.greedy)))
        draws, greedy = conditional_elbo(self.model, windows, self.t_draws, self.seed, rows_per_pass,
                                         self.estimator, self.eps, self.precision, self.greedy)
        totals = np.zeros(len(pairs), dtype=np.float64)
        all_greedy = np.ones(len(pairs), dtype=bool)
        np.add.at(totals, owner, draws.mean(axis=1))
        np.logical_and.at(all_greedy, owner, greedy)
        return [(float(total), bool(g and self.greedy)) for total, g in zip(totals, all_greedy)]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        results = self._score([(context, continuation) for _, context, continuation in requests])
        for (key, _, _), result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        pairs = [([self.eot_token_id], self.tok_encode(request.args[0])) for request in requests]
        results = [lp for lp, _ in self._score(pairs)]
        for request, lp in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood_rolling", (request.args[0],), lp)
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(
            "repa-mdlm scores log-likelihoods only (loglikelihood / multiple_choice / loglikelihood_rolling "
            "tasks): the project's sampler (`repa-mdlm sample`, repa_mdlm.evaluation.sampler.sample_ids) draws unconditional "
            "samples and does not continue a prompt, so generative tasks are not supported")


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line, with `repa-mdlm` registered."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli_evaluate()


if __name__ == "__main__":  # `python -m`: the importable module registers the model, once
    from repa_mdlm.evaluation.lm_eval_adapter import main as _main

    _main()
else:
    register_model("repa-mdlm")(RepaMDLM)
