"""Experiment tracking: where each cell's curves and final metrics go besides its JSONL log.

Tracking changes what is logged, never what is computed: the section is in no job spec
(specs.py), and the workflow passes it to the train and evaluate jobs on their command line
(workflow/snakemake_plan.py's tracking_setting), so changing it never re-runs a cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import TrackingBackend, WandbMode, field_errors


@dataclass
class TrackingConfig:
    backend: TrackingBackend = "none"
    """none: the JSONL log alone; tensorboard: event files in each run folder (<run>/tensorboard/);
    wandb: a Weights & Biases run per cell (offline by default, `wandb sync` later). A missing or
    failing tracker package warns once and training goes on."""
    project: str = "repa-mdlm"
    """W&B project of the runs."""
    entity: str | None = None
    """W&B entity (user or team); null = the account's default."""
    group: str | None = None
    """W&B group of the runs (e.g. the sweep's name); null = no group."""
    tags: list[str] = field(default_factory=list)
    """W&B tags of every run."""
    mode: WandbMode = "offline"
    """W&B mode: offline (compute nodes without network: `wandb sync` the run folders later), online
    or disabled."""

    def check(self, key: str = "tracking") -> list[str]:
        errors = field_errors(self, key)
        if not self.project.strip():
            errors.append(f"{key}.project is empty: name a W&B project")
        errors += [f"{key}.tags[{i}] = {tag!r}: use a non-empty tag without commas" for i, tag in enumerate(self.tags)
                   if not isinstance(tag, str) or not tag.strip() or "," in tag]
        return errors

