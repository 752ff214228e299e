"""Text from a trained cell: the MDLM ancestral sampler (Sahoo et al. 2024, Sec. 3.3).

Start from an all-mask sequence and walk t from 1 to 0 in ``steps`` equal steps. With the
log-linear schedule the mask probability is (1 - eps) t, so alpha_t = 1 - (1 - eps) t. At each
step t -> s, for every still-masked position:

- draw x0 from the model's SUBS distribution (mask logit -inf, only the first
  ``config.diffusion_vocab_size`` rows of the LM head);
- unmask it to that x0 with probability (alpha_s - alpha_t) / (1 - alpha_t) (= (t - s) / t here);
  unmasked positions never change (SUBS: carry-over unmasking).

The last step has s = 0, alpha_s = 1, so every position is unmasked at the end. The network
sees x_t alone (no time conditioning), so when a step changes no token its p(x0) is reused
instead of calling the network again (the standard MDLM cache); ``SampleStats`` counts the
network calls. Every draw comes from one seeded generator: same seed, same text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.sampling import SAMPLING
from ..data.dataset import readable_texts
from ..io import DataError, read_json_object
from ..layout import MANIFEST, METRICS, MODEL, TOKENIZER
from ..model.diffusion import subs_log_probs, unmask_probability


@dataclass
class SampleStats:
    steps: int
    network_calls: int
    seq_len: int
    n_samples: int
    seed: int


def x0_log_probs(model, hidden: torch.Tensor) -> torch.Tensor:
    """log p(x0 | x_t) for the given rows of final hidden states [k, d] -> [k, V_diffusion], float64
    (SUBS: the mask token is never a candidate)."""
    from ..model.student import output_embedding

    logits = (hidden.float() @ output_embedding(model).float().t()).double()
    return subs_log_probs(logits, model.config.mask_token_id, dtype=torch.float64)


def _categorical(log_probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row by the Gumbel-max trick in float64 (float32 Gumbel noise is known to
    narrow the samples of masked diffusion models)."""
    u = torch.rand(log_probs.shape, generator=generator, dtype=torch.float64, device=log_probs.device)
    gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
    return (log_probs + gumbel).argmax(dim=-1)


@torch.no_grad()
def sample_ids(model, n_samples: int, seq_len: int, steps: int, seed: int, eps: float = 1e-3,
               use_cache: bool = True) -> tuple[torch.Tensor, SampleStats]:
    """[n_samples, seq_len] token ids by ancestral sampling; no mask token is left.

    Which masked positions unmask at a step and what they become are independent draws, so
    x0 is drawn only where a position unmasks; the network output (the final hidden states,
    hence p(x0)) is kept until a step changes a token."""
    from ..model.student import backbone_hidden

    if steps < 1 or seq_len < 1 or n_samples < 1:
        raise ValueError(f"need steps, seq_len and n_samples >= 1 (got {steps}, {seq_len}, {n_samples})")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    mask_id = int(model.config.mask_token_id)
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.full((n_samples, seq_len), mask_id, dtype=torch.long, device=device)
    hidden, calls = None, 0
    for i in range(steps):
        t, s = 1.0 - i / steps, 1.0 - (i + 1) / steps
        if hidden is None or not use_cache:
            hidden, _ = backbone_hidden(model, x)
            calls += 1
        p_unmask = unmask_probability(t, s, eps)
        unmask = (x == mask_id) & (torch.rand(x.shape, generator=generator, device=device) < p_unmask)
        if unmask.any():
            x = x.clone()
            x[unmask] = _categorical(x0_log_probs(model, hidden[unmask]), generator)
            hidden = None  # the input changed: the next step needs a fresh p(x0)
    model.train(was_training)
    if (x == mask_id).any():
        raise AssertionError("sampler left a mask token")
    return x.cpu(), SampleStats(steps=steps, network_calls=calls, seq_len=seq_len, n_samples=n_samples, seed=seed)


def generate(model, tokenizer, n_samples: int = SAMPLING.n_samples, seq_len: int = 128, steps: int = SAMPLING.steps,
             seed: int = SAMPLING.seed, eps: float = 1e-3, return_stats: bool = False):
    """``n_samples`` texts of ``seq_len`` tokens; with ``return_stats`` also the SampleStats."""
    ids, stats = sample_ids(model, n_samples, seq_len, steps, seed, eps)
    texts = readable_texts(tokenizer, ids.numpy())
    return (texts, stats) if return_stats else texts


# ------------------------------------------------------------------------- outputs

def _seq_len(data_dir: Path) -> int:
    manifest = json.loads((data_dir / MANIFEST).read_text())
    return int(manifest["seq_len"])


def _run_metrics(run_dir: Path) -> dict:
    try:
        return read_json_object(run_dir / METRICS, "metrics", rule="evaluate")
    except DataError:  # samples are shown without the PPL; aggregate names the file
        return {}


def sample_run(run_dir, data_dir, n_samples: int = SAMPLING.n_samples, steps: int = SAMPLING.steps,
               seed: int = SAMPLING.seed, seq_len: int | None = None, eps: float = 1e-3) -> dict:
    """Load a trained cell and its tokenizer and sample it: {"cell", "metrics", "texts", "stats"}."""
    from ..data.dataset import load_tokenizer
    from ..model.student import load_student

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_student(run_dir / MODEL).to(device)
    tokenizer = load_tokenizer(data_dir / TOKENIZER)
    seq_len = seq_len or _seq_len(data_dir)
    texts, stats = generate(model, tokenizer, n_samples, seq_len, steps, seed, eps, return_stats=True)
    return {"cell": run_dir.name, "metrics": _run_metrics(run_dir), "texts": texts, "stats": stats}
