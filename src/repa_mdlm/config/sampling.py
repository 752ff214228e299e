"""The text sampler's default settings: one home, read by `evaluation/sampler.py`, by `repa-mdlm sample` and
`report-samples` (workflow/cli.py) and by the workflow's `sample` and `report_samples` rules (report.smk, through
workflow/snakemake_plan.py).
It imports nothing, for the Snakefile's parse."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplerSettings:
    n_samples: int = 4
    """Sequences sampled per cell."""
    steps: int = 256
    """Denoising steps of the MDLM ancestral sampler, from t = 1 to t = 0."""
    seed: int = 0
    """Seed of the sampler's random draws: the same seed gives the same samples."""


SAMPLING = SamplerSettings()
