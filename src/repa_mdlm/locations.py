"""Where models and corpora are found (hub ids, local folders, folders shipped inside an installed
Python package as `package:<module>/<subdir>`, corpus globs) and where the workflow may write
(results_dir, the folders it builds teachers in). Cheap checks only: nothing here touches the
network, so the config checks can use it at parse time."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from .config import ConfigError

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


# ---------------------------------------------------------------- where the workflow may write
SYSTEM_DIRS = ("/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr/bin", "/usr/lib",
               "/usr/sbin", "/usr/share")
"""Folders no sweep belongs in, nor anywhere inside them; the top-level /dev, /usr and /var themselves too."""


def results_dir_problem(results: Path, project: Path) -> str | None:
    """Why a resolved results_dir is not a place a user would mean to fill with a sweep (None if it is).
    project: the folder of this code (not the working directory, which --directory may move)."""
    if (results in (Path(results.anchor), Path("/dev"), Path("/usr"), Path("/var"))
            or any(results.is_relative_to(d) for d in SYSTEM_DIRS)):
        return "a system directory; use a folder of your own, e.g. results or /scratch/$USER/repa-mdlm"
    if results == Path.home():
        return "your home directory itself; use a folder inside it"
    if project == results or project.is_relative_to(results):
        return ("the project folder or a folder that contains it; outputs would mix with the code. Use a "
                "folder of its own, e.g. results")
    return None


def write_location_errors(cfg, base_dir: str | os.PathLike) -> list[str]:
    """Where the workflow may write: results_dir, and each folder it builds a teacher in (which
    `--forcerun` deletes). Paths are resolved from base_dir, where Snakemake runs. cfg: a Config."""
    errors = []
    base = Path(base_dir).resolve()
    results = (base / cfg.results_dir).resolve()
    problem = results_dir_problem(results, Path(__file__).resolve().parents[2])
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
