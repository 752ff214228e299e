"""The student: a bidirectional Qwen2 built from config, with an explicit mask token."""

from __future__ import annotations

import contextlib
import os

import torch

from ..config import ConfigError, StudentConfig


def student_vocab_size(student: StudentConfig, tokenizer_size: int) -> int:
    if student.vocab_size is None:
        return -(-tokenizer_size // 64) * 64
    if student.vocab_size < tokenizer_size:
        raise ConfigError(
            f"student.vocab_size = {student.vocab_size} is smaller than the tokenizer ({tokenizer_size} "
            "tokens with the mask token); raise it or set it to null")
    return student.vocab_size


def build_student(student: StudentConfig, tokenizer_size: int, mask_token_id: int, eos_token_id: int,
                  seed: int) -> torch.nn.Module:
    """Random-init Qwen2 with bidirectional attention.

    `config.is_causal=False` is what makes every attention backend bidirectional in
    transformers 5; `self_attn.is_causal=False` alone leaves eager attention causal.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=student_vocab_size(student, tokenizer_size),
        hidden_size=student.hidden_size,
        intermediate_size=student.intermediate_size,
        num_hidden_layers=student.num_hidden_layers,
        num_attention_heads=student.num_attention_heads,
        num_key_value_heads=student.num_key_value_heads,
        max_position_embeddings=student.max_position_embeddings,
        rope_theta=student.rope_theta,
        rms_norm_eps=student.rms_norm_eps,
        tie_word_embeddings=student.tie_word_embeddings,
        initializer_range=student.initializer_range,
        attn_implementation=student.attn_implementation,
        is_causal=False,
        use_cache=False,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )
    # Saved in config.json so the model carries its own diffusion vocabulary.
    config.mask_token_id = mask_token_id
    config.diffusion_vocab_size = tokenizer_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model


def load_student(path: str | os.PathLike, dtype: torch.dtype | None = None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    if getattr(model.config, "is_causal", True) or getattr(model.config, "mask_token_id", None) is None:
        raise ValueError(f"{path}: not a repa-mdlm student (causal attention or no mask_token_id in config.json)")
    return model


def backbone_hidden(model, input_ids: torch.Tensor, layer: int | None = None):
    """Final hidden states [B, L, d] and, if asked, hidden_states[layer] (output of block `layer`)."""
    out = model.model(input_ids=input_ids, output_hidden_states=layer is not None, use_cache=False)
    return out.last_hidden_state, (out.hidden_states[layer] if layer is not None else None)


def output_embedding(model) -> torch.Tensor:
    """LM-head rows of the real vocabulary; spare embedding rows are never predicted."""
    return model.lm_head.weight[: model.config.diffusion_vocab_size]


def count_parameters(model, exclude_embeddings: bool = False) -> int:
    n = sum(p.numel() for p in model.parameters())
    if exclude_embeddings:
        n -= model.model.embed_tokens.weight.numel()
    return n


def autocast_context(device: torch.device, precision: str):
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
