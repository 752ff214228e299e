"""Successive halving over the grid's REPA configurations (analysis/halving.py holds the rule; the
workflow trains by rungs when it is enabled). In no job spec: a cell trained to a rung has trained
exactly the first steps of its full run, so halving changes which cells go on, never what a cell computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from .base import ConfigError, field_errors

HalvingMetric = Literal["val_ppl"]


@dataclass
class HalvingConfig:
    enabled: bool = False
    """false: the full grid, every cell to train.steps (the paper). true: every cell trains to the first
    rung, the best 1/eta of the configurations go on to the next, and so on; the rest stop there."""
    eta: int = 3
    """At each rung the best ceil(n / eta) of the n configurations still running go on (at least one;
    a configuration tied with the last kept one goes on too)."""
    rungs: list[float] = field(default_factory=lambda: [0.11, 0.33, 1.0])
    """Fractions of train.steps at which the configurations are judged, increasing, the last 1.0 (the
    end). A rung is judged at the last validation step (train.val_every) at or before its fraction: the
    paper's 0.11 x 5000 is step 500."""
    metric: HalvingMetric = "val_ppl"
    """What judges a configuration at a rung: its seeds' mean validation ELBO PPL at the rung's step. The
    test set is never read before the end."""
    keep_baseline: Literal[True] = True
    """The baseline is never judged and always runs to the end: it is the reference of Table 1 and of
    every paired comparison, so false is refused."""

    def check(self, key: str = "halving") -> list[str]:
        errors = field_errors(self, key) + eta_errors(self.eta, f"{key}.eta")
        return errors + rung_errors(self.rungs, f"{key}.rungs")


def eta_errors(eta: int, key: str) -> list[str]:
    return [] if eta >= 2 else [f"{key} = {eta}: keep 1/eta of the configurations at each rung; eta must be >= 2"]


def rung_errors(rungs: list[float], key: str) -> list[str]:
    rungs = list(rungs)
    if not rungs or any(not 0 < r <= 1 for r in rungs) or rungs != sorted(set(rungs)) or rungs[-1] != 1.0:
        return [f"{key} = {rungs}: fractions of train.steps in (0, 1], increasing, ending at 1.0 "
                "(the end of training), e.g. [0.11, 0.33, 1.0]"]
    return []


def rung_steps(rungs: list[float], steps: int, val_every: int, key: str = "halving.rungs") -> list[int]:
    """The step each rung is judged at: the last validation step at or before its fraction of the steps
    (the last rung: train.steps). Refused, naming the key, when two rungs share a step or a rung comes
    before the first validation."""
    errors = rung_errors(rungs, key)
    if errors:
        raise ConfigError(errors[0])
    at = [(math.floor(r * steps / val_every) * val_every) for r in rungs[:-1]] + [steps]
    if at[0] <= 0 or any(b <= a for a, b in zip(at, at[1:])):
        raise ConfigError(f"{key} = {list(rungs)} fall on steps {at} (the last validation at or before each "
                          f"fraction of train.steps = {steps}, validating every train.val_every = {val_every}): "
                          "each rung needs a validation step of its own; space the rungs further apart")
    return at
