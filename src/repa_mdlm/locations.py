"""Where models and corpora are found: hub ids, local folders, folders shipped inside an installed
Python package (`package:<module>/<subdir>`), and corpus globs. Cheap checks only: nothing here
touches the network, so the config checks can use it at parse time."""

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
