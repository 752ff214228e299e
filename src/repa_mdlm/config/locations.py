"""Where models and corpora are found (hub ids, local folders, folders shipped inside an installed
Python package as `package:<module>/<subdir>`, corpus globs) and where the workflow may write
(results_dir, the folders it builds teachers in). Cheap checks only: nothing here touches the
network, so the config checks can use it at parse time."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from .. import layout
from .base import ConfigError

PACKAGE_PREFIX = "package:"


def resolve_corpus_glob(pattern: str, base_dir: str | os.PathLike = ".") -> list[str]:
    p = pattern if os.path.isabs(pattern) else os.path.join(base_dir, pattern)
    return sorted(glob.glob(p))


def resolve_model_path(name_or_path: str) -> str:
    """Hub id or local dir as given; ``package:<module>/<subdir>`` becomes that package's folder."""
    if name_or_path.startswith(PACKAGE_PREFIX):
        import importlib.util

        module, _, sub = name_or_path[len(PACKAGE_PREFIX):].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"{name_or_path!r}: Python package {module!r} is not installed (pip install it)")
        return str(Path(list(spec.submodule_search_locations)[0]) / sub)
    return name_or_path


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def model_location_problem(name_or_path: str) -> str | None:
    """Cheap checks before any job: a package that is not installed, a local dir that is not
    there. Hub ids are only checked when a job loads them (they may need the network)."""
    if name_or_path.startswith(PACKAGE_PREFIX):
        try:
            path = resolve_model_path(name_or_path)
        except ConfigError as e:
            return str(e).split(": ", 1)[-1]
        return None if Path(path).is_dir() else f"the package has no folder {path}"
    looks_local = name_or_path.startswith(("/", "./", "../", "~")) or not HUB_ID.match(name_or_path)
    if looks_local and not Path(name_or_path).expanduser().is_dir():
        return ("no such local directory, and not a hub id of the form org/name; download the model "
                "(`hf download <id> --local-dir DIR`) and point name_or_path at DIR")
    return None


def model_config_json(name_or_path: str) -> dict | None:
    """The config.json of a local or packaged model folder, when it is there and readable (None for a hub
    id, a folder the workflow has not built yet, or a file that is not a JSON object)."""
    import json

    try:
        path = Path(resolve_model_path(name_or_path)).expanduser() / "config.json"
        config = json.loads(path.read_text()) if path.is_file() else None
    except (ConfigError, OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


# ---------------------------------------------------------------- where the workflow may write
SYSTEM_DIRS = ("/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/snap", "/sys",
               "/usr/bin", "/usr/include", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec", "/usr/sbin",
               "/usr/share", "/usr/local/bin", "/usr/local/etc", "/usr/local/include", "/usr/local/lib",
               "/usr/local/libexec", "/usr/local/sbin", "/usr/local/share", "/var/backups", "/var/cache", "/var/lib",
               "/var/log", "/var/mail", "/var/spool")
"""Folders no sweep belongs in, nor anywhere inside them."""
SYSTEM_ROOTS = ("/dev", "/home", "/media", "/mnt", "/opt", "/srv", "/tmp", "/usr", "/usr/local", "/var", "/var/tmp")
"""Folders that hold other people's folders: a sweep may go inside one (/opt/lab/results), not in it itself."""
PROJECT_FOLDERS = ("config", "docs", "envs", "profiles", "scripts", "slurm", "src", "tests", "workflow")
"""The project's own source folders (tests/test_refused_early.py checks that git tracks no other); its
hidden folders (.git, .venv, .snakemake, ...) are refused too. Anything else inside it (results/) is free."""
SWEEP_MARKER = ".repa-mdlm-sweep"
"""The file that marks a folder as a sweep's results_dir: the workflow writes it when its first run starts
(mark_sweep, Snakemake's onstart), so that a folder of other files is never taken for one."""
SWEEP_FOLDERS = (layout.DATA, layout.TEACHERS, layout.RUNS, layout.TABLES, layout.FIGURES, layout.SAMPLES,
                 layout.LOGS, layout.JUDGE)
"""The top-level folders a sweep writes; another sweep's are never a results_dir."""


def results_dir_problem(results: Path, project: Path) -> str | None:
    """Why a resolved results_dir is not a place a user would mean to fill with a sweep (None if it is).
    project: the folder of this code (not the working directory, which --directory may move)."""
    if (results in (Path(results.anchor), *map(Path, SYSTEM_ROOTS))
            or any(results.is_relative_to(d) for d in SYSTEM_DIRS)):
        return "a system directory; use a folder of your own, e.g. results or /scratch/$USER/repa-mdlm"
    if results == Path.home():
        return "your home directory itself; use a folder inside it"
    if project == results or project.is_relative_to(results):
        return ("the project folder or a folder that contains it; outputs would mix with the code. Use a "
                "folder of its own, e.g. results")
    inside = results.relative_to(project).parts[0] if results.is_relative_to(project) else None
    if inside and (inside.startswith(".") or inside in PROJECT_FOLDERS):
        return (f"inside the project's own {inside}/ folder; outputs would mix with the code or its tools. Use a "
                "folder of its own, e.g. results")
    return _sweep_folder_problem(results)


def is_sweep(folder: Path) -> bool:
    """A sweep's results_dir: marked (SWEEP_MARKER), or a sweep of before the marker (its token arrays'
    manifest, or the record of a writer that was killed)."""
    return any((folder / name).is_file() for name in (SWEEP_MARKER, f"{layout.DATA}/{layout.MANIFEST}", layout.WRITER_FILE))


def _sweep_like(folder: Path) -> bool:
    """A sweep, or one of an older version that stopped early (it holds a sweep's folders)."""
    return is_sweep(folder) or any((folder / name).is_dir() for name in SWEEP_FOLDERS)


def _holds_sweeps(entry: Path) -> bool:
    """A sweep, or a folder of sweeps (results/ of the demo and the study, results/noise-trials/)."""
    if not entry.is_dir() or entry.is_symlink():
        return False
    if _sweep_like(entry):
        return True
    children = [c for c in entry.iterdir() if not c.name.startswith(".")]
    return bool(children) and all(c.is_dir() and _sweep_like(c) for c in children)


def _sweep_folder_problem(results: Path) -> str | None:
    """A results_dir inside another sweep's own folders, or an existing folder that is not a sweep's and
    holds other files, whose data/tokenizer/ (say) would be taken as this sweep's."""
    for above in results.parents:
        if is_sweep(above) and results.relative_to(above).parts[0] in SWEEP_FOLDERS:
            return (f"inside the {results.relative_to(above).parts[0]}/ folder of the sweep in {above}, which "
                    "writes and deletes there; use a folder of its own")
    if not results.exists():
        return None
    if not results.is_dir():
        return "not a folder"
    if is_sweep(results):
        return None
    data = results / layout.DATA
    if data.is_dir() and any(data.iterdir()):
        return (f"holds a data/ folder that no sweep made (no data/{layout.MANIFEST}, no {SWEEP_MARKER}): its tokenizer "
                f"would be taken as the student's. Use an empty or new folder; if it is a sweep of an older version "
                f"that stopped early, remove its data/ folder (or `touch {results / SWEEP_MARKER}` if it is sound)")
    foreign = sorted(e.name for e in results.iterdir()
                     if not e.name.startswith(".") and e.name not in SWEEP_FOLDERS and not _holds_sweeps(e))
    if foreign:
        return (f"a folder of other files ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}), not a "
                f"sweep's (no {SWEEP_MARKER}); outputs would mix with them. Use an empty or new folder")
    return None


def mark_sweep(results_dir: str | os.PathLike) -> None:
    """Mark results_dir as a sweep's (SWEEP_MARKER) when its first run starts (Snakemake's onstart)."""
    marker = Path(results_dir) / SWEEP_MARKER
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("This folder holds a repa-mdlm sweep's results (written by the workflow).\n")


def write_location_errors(cfg, base_dir: str | os.PathLike) -> list[str]:
    """Where the workflow may write: results_dir, and each folder it builds a teacher in (which
    `--forcerun` deletes). Paths are resolved from base_dir, where Snakemake runs. cfg: a Config."""
    errors = []
    base = Path(base_dir).resolve()
    results = (base / cfg.results_dir).resolve()
    problem = results_dir_problem(results, Path(__file__).resolve().parents[3])
    if problem:
        errors.append(f"results_dir = {cfg.results_dir!r} ({results}): {problem}")
    for i, t in enumerate(cfg.repa.teachers):
        if not t.built_by_workflow:
            continue
        own = results / "teachers" / t.name
        folder = (base / Path(t.name_or_path).expanduser()).resolve()
        if not folder.is_relative_to(own) or folder == own or folder.is_relative_to(own / "features"):
            errors.append(
                f"repa.teachers[{i}].name_or_path = {t.name_or_path!r} ({folder}): the workflow builds this "
                "teacher (init_from_config, convert_from or control_of) and deletes its folder when it rebuilds "
                f"it, so the folder must lie inside results_dir/teachers/{t.name}/ (not its features/); use "
                f"\"{{results_dir}}/teachers/{t.name}/model\"")
    return errors
