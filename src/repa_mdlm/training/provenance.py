"""What produced a number: the code (git commit, dirty tree), the packages, the machine, the Slurm job,
the config (its hash) and the revisions of every hub input.

`collect()` runs at the end of training (`checkpoint.Checkpointer.finish` stores it under the
`provenance` key of train_summary.json); `sweep_provenance` gathers every cell's record, with a warning when
cells mix commits, dirty trees or package versions, and reporting/provenance.py writes it as the sweep's
tables/provenance.{json,md,html} (`repa-mdlm aggregate`, beside Table 1).

No torch at import (aggregate reads records only); `collect` imports it when it runs.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..io import json_digest, read_json_object
from ..layout import TRAIN_SUMMARY

PACKAGES = ("transformers", "tokenizers", "datasets", "bitsandbytes", "snakemake")
"""Distributions whose version each run records (None when not installed), beside python and torch."""
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")
PACKAGE_DIR = Path(__file__).resolve().parent


# ------------------------------------------------------------------ one run

def _run(args: list[str], cwd: Path | None = None) -> str | None:
    """A command's stripped stdout, or None when it is missing, fails or hangs."""
    try:
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # `git status` must not rewrite the index
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_root(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The git checkout the package is imported from (an editable install), or None (an installed copy)."""
    if "site-packages" in package_dir.parts or "dist-packages" in package_dir.parts:
        return None
    for folder in (package_dir, *package_dir.parents):
        if (folder / ".git").exists():
            return folder
    return None


def git_state(package_dir: Path = PACKAGE_DIR) -> dict[str, Any]:
    """{"commit", "dirty"} of the package's checkout (read only); both None when it is not one.
    dirty: tracked files differ from the commit (untracked files do not count)."""
    root = git_root(package_dir)
    if root is None or shutil.which("git") is None:
        return {"commit": None, "dirty": None}
    commit = _run(["git", "rev-parse", "HEAD"], root)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], root)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """python, torch with its CUDA and cuDNN, and PACKAGES."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": None if cudnn is None else str(cudnn), **{p: package_version(p) for p in PACKAGES}}


def gpu() -> dict[str, str | None]:
    """The first visible GPU's model and the NVIDIA driver; both None on CPU."""
    import torch

    if not torch.cuda.is_available():
        return {"gpu": None, "driver": None}
    driver = None
    if shutil.which("nvidia-smi"):
        out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        driver = out.splitlines()[0].strip() if out else None
    return {"gpu": torch.cuda.get_device_name(0), "driver": driver}


def hub_revisions(config: Mapping[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every section of a config dict with a `revision` field (corpus, tokenizer, each teacher, the
    judge, ...): {dotted path: {"name", "revision"}}; a teacher under its name."""
    found: dict[str, dict[str, Any]] = {}
    name = config.get("name_or_path", config.get("name"))
    if "revision" in config and name is not None:  # a section with a revision field but no input: none used
        found[prefix.rstrip(".") or "config"] = {"name": name, "revision": config["revision"]}
    for key, value in config.items():
        if isinstance(value, Mapping):
            found.update(hub_revisions(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    found.update(hub_revisions(item, f"{prefix}{key}.{item.get('name', i)}."))
    return found


def config_record(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config's hash (sha256 of its canonical JSON) and its hub revisions; None without a config."""
    if config is None:
        return {"config_sha256": None, "hub_revisions": None}
    return {"config_sha256": json_digest(dict(config)), "hub_revisions": hub_revisions(config)}


def config_dict(config) -> dict[str, Any] | None:
    """A Config, a dict or the path of a resolved config.yaml, as a plain dict (None: none, or unreadable)."""
    if config is None or isinstance(config, Mapping):
        return None if config is None else dict(config)
    if isinstance(config, (str, os.PathLike)):
        import yaml

        try:
            loaded = yaml.safe_load(Path(config).read_text())
        except (OSError, yaml.YAMLError):
            return None
        return loaded if isinstance(loaded, dict) else None
    return config.to_dict()


def collect(config=None) -> dict[str, Any]:
    """This process's provenance record. `config`: the Config, its dict, or a run's config.yaml."""
    return {**git_state(), "versions": versions(), **gpu(), "host": socket.gethostname(),
            "platform": platform.platform(),
            "slurm": {v: os.environ[v] for v in SLURM_VARIABLES if os.environ.get(v)},
            **config_record(config_dict(config))}


# ------------------------------------------------------------------ the sweep

def read_cell_records(metrics: Iterable[str | os.PathLike]) -> dict[str, dict | None]:
    """{cell: its provenance record} from the train_summary.json beside each metrics.json (None: a
    summary without one, written before provenance was recorded). Cells without a summary are left out."""
    records: dict[str, dict | None] = {}
    for path in metrics:
        summary = Path(path).with_name(TRAIN_SUMMARY)
        if summary.exists():
            s = read_json_object(summary, "training summary", rule="train")
            records[str(s.get("cell") or summary.parent.name)] = s.get("provenance")
    return records


def _groups(records: Mapping[str, dict], value) -> dict[str, list[str]]:
    """{str(value(record)): [cells]}, in first-seen order."""
    out: dict[str, list[str]] = {}
    for cell, r in records.items():
        out.setdefault(str(value(r)), []).append(cell)
    return out


def sweep_warnings(records: Mapping[str, dict | None]) -> list[str]:
    known = {c: r for c, r in records.items() if r}
    warnings = [f"{len(records) - len(known)} cell(s) have no provenance record (trained before it was "
                f"recorded): {', '.join(c for c in records if not records[c])}"] if len(known) < len(records) else []
    commits = _groups(known, lambda r: r.get("commit"))
    if len(commits) > 1:
        warnings.append("cells come from different commits: " + "; ".join(
            f"{commit[:12]}: {len(cells)} cell(s)" for commit, cells in commits.items()))
    if "None" in commits:
        warnings.append(f"{len(commits['None'])} cell(s) were trained outside a git checkout (commit unknown)")
    dirty = [c for c, r in known.items() if r.get("dirty")]
    if dirty:
        warnings.append(f"{len(dirty)} cell(s) were trained from a tree with uncommitted changes: {', '.join(dirty)}")
    names = sorted({name for r in known.values() for name in (r.get("versions") or {})})
    for name in names:
        found = _groups(known, lambda r: (r.get("versions") or {}).get(name))
        if len(found) > 1:
            warnings.append(f"cells mix {name} versions: " + "; ".join(
                f"{v}: {len(cells)} cell(s)" for v, cells in found.items()))
    return warnings


def sweep_provenance(records: Mapping[str, dict | None]) -> dict[str, Any]:
    """The sweep's provenance: which cells came from which commit, package versions and GPU, the
    warnings, and every cell's record."""
    known = {c: r for c, r in records.items() if r}
    names = sorted({name for r in known.values() for name in (r.get("versions") or {})})
    return {
        "n_cells": len(records),
        "warnings": sweep_warnings(records),
        "commits": _groups(known, lambda r: r.get("commit") + ("+dirty" if r.get("dirty") else "")
                           if r.get("commit") else None),
        "versions": {n: _groups(known, lambda r: (r.get("versions") or {}).get(n)) for n in names},
        "gpus": _groups(known, lambda r: f"{r.get('gpu') or 'CPU'} (driver {r.get('driver') or 'n/a'})"),
        "config_sha256": _groups(known, lambda r: r.get("config_sha256")),
        "cells": dict(records),
    }
