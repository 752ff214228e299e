"""argparse subcommands from plain, typed, documented functions: each parameter becomes an option
`--kebab-case`, its annotation the type, its default the default (none: required), and its line in
the docstring's "Args:" section the help text. So a command's arguments are written once, in its
entry function (see cli.py). Dependency-free.

    str | int | float       one value of that type
    bool                    a flag (the default must be False)
    list[X]                 several values: nargs "+" when required, "*" when it has a default
    X | None                may be left out (the function gets None)
    Literal[a, b]           one of these values
    Annotated[X, Option()]  choices with names in the help, or nargs "+" for an optional list
"""

from __future__ import annotations

import argparse
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Callable, Literal


@dataclass(frozen=True)
class Option:
    """What a type cannot say, as `Annotated[int, Option(...)]`: the only values accepted, their
    names in the help text ("0: off | 1: backbone"), and `nargs` for a list that is optional but,
    when given, not empty ("+")."""

    choices: tuple | None = None
    labels: tuple[str, ...] | None = None
    nargs: str | None = None


def docstring_parts(fn: Callable) -> tuple[str, dict[str, str]]:
    """(description, {parameter: help}) from a docstring whose "Args:" section has one
    `name: text` line per parameter (more indented lines continue the text)."""
    lines = (inspect.getdoc(fn) or "").splitlines()
    start = lines.index("Args:") if "Args:" in lines else len(lines)
    helps: dict[str, str] = {}
    indent, name = None, None
    for line in lines[start + 1:]:
        if not line.strip():
            break
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break
        if depth == indent:
            name, _, text = line.strip().partition(":")
            helps[name] = text.strip()
        else:
            helps[name] += " " + line.strip()
    return "\n".join(lines[:start]).strip(), helps


def _unwrap_optional(tp) -> tuple[object, bool]:
    """`X | None` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported union {tp}: only `X | None`")
        return rest[0], True
    return tp, False


def option_kwargs(tp, default, help_: str) -> dict:
    """argparse keyword arguments for one parameter: `str`/`int`/`float` take one value, `bool` is a
    flag, `list[X]` takes several (`+` when required, `*` otherwise), `X | None` may be left out,
    `Literal[...]` or `Annotated[X, Option(choices)]` restrict the values; no default -> required."""
    extra = Option()
    tp, _ = _unwrap_optional(tp)  # before and after Annotated: Python < 3.11 puts Optional outside it
    if typing.get_origin(tp) is Annotated:
        tp, *extras = typing.get_args(tp)
        extra = next((e for e in extras if isinstance(e, Option)), extra)
    tp, _ = _unwrap_optional(tp)
    required = default is inspect.Parameter.empty
    kw: dict = {"required": True} if required else {"default": default}
    if tp is bool:
        if default is not False:
            raise TypeError("a bool option is a flag: its default must be False")
        return {"action": "store_true", "help": help_.replace("%", "%%")}
    if typing.get_origin(tp) is list:
        (tp,) = typing.get_args(tp)
        kw["nargs"] = extra.nargs or ("+" if required else "*")
        if isinstance(default, tuple):
            kw["default"] = list(default)
    if typing.get_origin(tp) is Literal:
        extra = Option(typing.get_args(tp))
        tp = type(extra.choices[0])
    if tp not in (str, int, float):
        raise TypeError(f"unsupported option type {tp}")
    kw["type"] = tp
    if extra.choices is not None:
        kw["choices"] = list(extra.choices)
        if extra.labels:
            help_ += " (" + " | ".join(f"{v}: {label}" for v, label in zip(extra.choices, extra.labels)) + ")"
    if not required and default not in (None, (), []):
        help_ += f" (default: {default})"
    kw["help"] = help_.replace("%", "%%")
    return kw


def add_command(sub, name: str, fn: Callable) -> argparse.ArgumentParser:
    """One subparser from an entry function: each parameter becomes `--kebab-case`."""
    description, helps = docstring_parts(fn)
    parser = sub.add_parser(name, help=description.split("\n\n")[0].replace("\n", " "), description=description,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(fn, include_extras=True)
    for param in inspect.signature(fn).parameters.values():
        kw = option_kwargs(hints[param.name], param.default, helps.get(param.name, ""))
        parser.add_argument("--" + param.name.replace("_", "-"), dest=param.name, **kw)
    parser.set_defaults(fn=fn)
    return parser


COMMANDS: dict[str, Callable] = {}
"""Subcommand name (the function's name in kebab case) -> its entry function, in help order."""


def command(fn: Callable) -> Callable:
    """Register an entry function as a `repa-mdlm` subcommand."""
    COMMANDS[fn.__name__.replace("_", "-")] = fn
    return fn


Threads = int | None  # torch's CPU threads for a step; None: torch's default


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)
