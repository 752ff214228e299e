"""The diffusion model: the student's architecture and the MDLM noise schedule with its curriculum."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import AttnImplementation, field_errors


@dataclass
class StudentConfig:
    """Qwen2 architecture with bidirectional attention, built from config and trained from scratch
    (defaults, and the paper's student: Qwen2.5-0.5B)."""

    vocab_size: int | None = 151_936
    """Embedding rows; null = len(tokenizer) rounded up to a multiple of 64 (paper: 151,936)."""
    hidden_size: int = 896
    """Width d_model of the residual stream (paper: 896)."""
    intermediate_size: int = 4864
    """Width of each block's MLP (paper: 4864)."""
    num_hidden_layers: int = 24
    """Transformer blocks; repa.layers index them 1..num_hidden_layers (paper: 24)."""
    num_attention_heads: int = 14
    """Query heads per block; hidden_size must divide by it (paper: 14)."""
    num_key_value_heads: int = 2
    """Key/value heads (grouped-query attention); num_attention_heads must divide by it (paper: 2)."""
    max_position_embeddings: int = 32_768
    """Longest sequence the rotary positions are set up for, in tokens; seq_len must not exceed it."""
    rope_theta: float = 1_000_000.0
    """Base of the rotary position embedding's frequencies (paper: Qwen2.5-0.5B's 1e6)."""
    rms_norm_eps: float = 1e-6
    """Epsilon of the RMSNorm layers (paper: Qwen2.5-0.5B's 1e-6)."""
    tie_word_embeddings: bool = True
    """The output head shares the input embedding's weights (paper: true, as Qwen2.5-0.5B)."""
    initializer_range: float = 0.02
    """Standard deviation of the random initial weights (Qwen2's default 0.02, the paper's)."""
    attn_implementation: AttnImplementation = "sdpa"
    """Hugging Face attention kernel: sdpa, eager or flash_attention_2 (speed only)."""

    def check(self, key: str = "student") -> list[str]:
        errors = field_errors(self, key)
        if self.num_attention_heads % self.num_key_value_heads or self.hidden_size % self.num_attention_heads:
            errors.append(f"{key}: hidden_size must divide by num_attention_heads, which must divide by "
                          "num_key_value_heads")
        return errors


@dataclass
class CurriculumConfig:
    """The paper's "masking probability annealed linearly from 0.01 to 1.0 during training".

    Read as a ceiling on the diffusion time: t ~ U[eps, t_max(step)], with t_max rising
    linearly from ``start`` to ``end`` over the first ``ramp_fraction`` of the steps.
    The N-ELBO weight stays 1/t, so each step is still an unbiased N-ELBO term for its t.
    """

    enabled: bool = False
    """Whether t_max ramps up; off draws t ~ U[eps, 1] from the first step (paper: on)."""
    start: float = 0.01
    """t_max at step 0 (paper: 0.01)."""
    end: float = 1.0
    """t_max at the end of the ramp and after it (paper: 1.0)."""
    ramp_fraction: float = 1.0
    """Fraction of train.steps over which t_max rises from start to end (paper: 1.0, the whole run)."""

    def check(self, key: str = "diffusion.curriculum") -> list[str]:
        errors = field_errors(self, key)
        if self.enabled and not 0 < self.start <= self.end <= 1:
            errors.append(f"{key}: need 0 < start <= end <= 1")
        return errors


@dataclass
class DiffusionConfig:
    eps: float = 1e-3
    """Log-linear schedule: mask probability (1 - eps) * t; t is drawn from [eps, 1] (MDLM's 1e-3)."""
    antithetic: bool = True
    """Diffusion times spread evenly over the global batch (antithetic draws, lower variance), as MDLM."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    """The masking-probability annealing (see CurriculumConfig)."""

    def check(self, key: str = "diffusion") -> list[str]:
        return field_errors(self, key) + self.curriculum.check(f"{key}.curriculum")

