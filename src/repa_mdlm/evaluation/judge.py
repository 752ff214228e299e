"""The judge: a causal LM that scores what each cell generates (generative perplexity).

A configured judge (`generative.judge.name_or_path`: hub id with a revision, local folder, or a
folder a package ships) is loaded as is and reads the samples through its own tokenizer. Without
one, the workflow trains a small causal judge on the train split: the student's architecture with
causal attention and a next-token loss. Such a judge measures fit to the training data, not
general fluency, and every output that uses it says so.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..config import Config, JudgeConfig, StudentConfig
from ..io import atomic_write_json, fsync_rename, read_json_object
from ..layout import JUDGE_INFO, JUDGE_MODEL, TOKENIZER

TRAINED_JUDGE_NOTE = ("judge trained on this sweep's train split: it measures fit to that data, not "
                      "general fluency")


def build_causal_judge(student: StudentConfig, vocab_size: int, eos_token_id: int, seed: int) -> torch.nn.Module:
    """A randomly initialised causal Qwen2 of the student's shape."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=-(-vocab_size // 64) * 64, hidden_size=student.hidden_size,
        intermediate_size=student.intermediate_size, num_hidden_layers=student.num_hidden_layers,
        num_attention_heads=student.num_attention_heads, num_key_value_heads=student.num_key_value_heads,
        max_position_embeddings=student.max_position_embeddings, rope_theta=student.rope_theta,
        rms_norm_eps=student.rms_norm_eps, tie_word_embeddings=student.tie_word_embeddings,
        bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id, use_cache=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(config)


def _learning_rate(judge: JudgeConfig, step: int) -> float:
    warmup = max(1, judge.train_steps // 10)
    return judge.train_lr * min(1.0, (step + 1) / warmup)


def fit_judge(cfg: Config, data_dir: str | os.PathLike, out_dir: str | os.PathLike, seed: int = 0) -> dict:
    """Train the causal judge on the train split; write its model folder (with the student's
    tokenizer) and judge.json (steps, final loss, its own test perplexity) into out_dir."""
    from ..data.dataset import load_tokenizer, open_split

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    tokenizer = load_tokenizer(data_dir / TOKENIZER)
    train = open_split(data_dir, "train", verify=True)
    model = build_causal_judge(cfg.student, len(tokenizer), tokenizer.eos_token_id, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.generative.judge.train_lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    start, losses = time.perf_counter(), []
    model.train()
    for step in range(cfg.generative.judge.train_steps):
        rows = np.sort(rng.integers(len(train), size=cfg.generative.judge.train_batch))
        x = torch.from_numpy(np.asarray(train[rows], dtype=np.int64))
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(cfg.generative.judge, step)
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    test = open_split(data_dir, "test", verify=True)[:256]
    nll, counts = score_token_ids(model, np.asarray(test, dtype=np.int64), batch_size=32)
    info = {"steps": cfg.generative.judge.train_steps, "final_loss": float(np.mean(losses[-10:])),
            "test_ppl": math.exp(nll.sum() / counts.sum()), "test_sequences": len(test),
            "train_wall_s": time.perf_counter() - start, "note": TRAINED_JUDGE_NOTE}
    tmp = out_dir / f"{JUDGE_MODEL}.tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    fsync_rename(tmp, out_dir / JUDGE_MODEL)
    atomic_write_json(out_dir / JUDGE_INFO, info)
    return info


def load_judge(judge: JudgeConfig, trained_dir: str | os.PathLike | None, device: torch.device):
    """(model, tokenizer, description) of the configured judge, or of the one trained in trained_dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..config.locations import resolve_model_path

    if judge.name_or_path:
        path, revision = resolve_model_path(judge.name_or_path), judge.revision
        description = judge.name_or_path + (f"@{revision}" if revision else "")
    else:
        if trained_dir is None:
            raise ValueError("generative.judge.name_or_path is null, so a trained judge folder is needed")
        path, revision = str(Path(trained_dir) / JUDGE_MODEL), None
        info = read_json_object(Path(trained_dir) / JUDGE_INFO, "judge summary", rule="train_judge")
        description = f"trained judge ({info['steps']} steps, its test PPL {info['test_ppl']:.2f}; {TRAINED_JUDGE_NOTE})"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    return model, tokenizer, description


@torch.no_grad()
def score_token_ids(model, ids: np.ndarray, batch_size: int, lengths: np.ndarray | None = None):
    """Summed next-token NLL (nats) and the number of scored tokens of each row of ids [n, L]; a row's
    first token is the context of the rest. lengths: tokens of each row to use (the rest is padding)."""
    device = next(model.parameters()).device
    n, width = ids.shape
    lengths = np.full(n, width) if lengths is None else np.asarray(lengths)
    nll, counts = np.zeros(n), np.zeros(n, dtype=np.int64)
    for start in range(0, n, batch_size):
        x = torch.from_numpy(ids[start:start + batch_size]).to(device)
        keep = torch.arange(width, device=device)[None, :] < torch.from_numpy(lengths[start:start + batch_size]).to(device)[:, None]
        logits = model(input_ids=x, attention_mask=keep.long()).logits.float()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)
        scored = keep[:, 1:]
        nll[start:start + len(x)] = (-(log_probs.double() * scored)).sum(dim=1).cpu().numpy()
        counts[start:start + len(x)] = scored.sum(dim=1).cpu().numpy()
    return nll, counts


def score_texts(model, tokenizer, texts: list[str], batch_size: int, max_length: int):
    """Summed NLL and scored tokens of each text under the judge, read through the judge's own
    tokenizer. Each text starts from the judge's begin (or end) of text token, so its first token
    is scored too."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start
    encoded = [[start, *tokenizer(text, add_special_tokens=False)["input_ids"]][:max_length] for text in texts]
    width = max(len(e) for e in encoded)
    ids = np.full((len(encoded), width), pad, dtype=np.int64)
    for i, e in enumerate(encoded):
        ids[i, :len(e)] = e
    return score_token_ids(model, ids, batch_size, lengths=np.array([len(e) for e in encoded]))


@torch.no_grad()
def sample_causal(model, n_samples: int, length: int, start_token: int, seed: int) -> np.ndarray:
    """Ancestral samples of a causal LM at temperature 1 (the metric's sanity test: a judge's own
    samples score near its own test perplexity)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.full((n_samples, 1), start_token, dtype=torch.long)
    for _ in range(length - 1):
        probs = torch.softmax(model(input_ids=x).logits[:, -1].double(), dim=-1)
        x = torch.cat([x, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return x.numpy()
