"""The command line is generated from the entry functions (cli.py, arguments.py): every
`repa-mdlm <step>` line of the workflow's rules parses against it, and every option is documented."""

import ast
import inspect
import re
import shlex
from typing import Annotated, Literal

import pytest

from repa_mdlm.config.sampling import SAMPLING
from repa_mdlm.workflow import cli
from repa_mdlm.workflow.arguments import Option, docstring_parts

from .conftest import REPO

SHELL_BLOCK = re.compile(r"^(\s*)shell:\s*\n((?:\1\s+(?:\"[^\"\n]*\"|'[^'\n]*')\s*\n)+)", re.M)
PLACEHOLDER = re.compile(r"\{[^{}]+\}")
# a command shared by rules (train.smk's TRAIN_COMMAND), and a shell that extends it
COMMAND_CONSTANT = re.compile(r"^([A-Z_]+_COMMAND) = \(\n((?:\s+\"[^\"\n]*\"\n)+)\)", re.M)
SHELL_WITH_CONSTANT = re.compile(r"^\s*shell:\s*\n\s+(?:\" \"\.join\(\[)?([A-Z_]+_COMMAND)(?:, | \+ )(\"[^\"\n]*\")", re.M)


def rule_command_lines() -> list[tuple[str, str]]:
    """(file, command line) of every `shell:` that runs repa-mdlm, its Snakemake placeholders
    rendered as "1" (a valid value for every option they fill) and its redirections cut off."""
    lines, files = [], sorted((REPO / "workflow" / "rules").glob("*.smk"))
    constants = {m.group(1): ast.literal_eval("(" + m.group(2) + ")")
                 for smk in files for m in COMMAND_CONSTANT.finditer(smk.read_text())}
    for smk in files:
        for match in SHELL_BLOCK.finditer(smk.read_text()):
            text = ast.literal_eval("(" + match.group(2) + ")")
            if "repa-mdlm" in text:
                lines.append((smk.name, PLACEHOLDER.sub("1", text)))
        for match in SHELL_WITH_CONSTANT.finditer(smk.read_text()):
            text = constants[match.group(1)] + " " + ast.literal_eval(match.group(2))
            lines.append((smk.name, PLACEHOLDER.sub("1", text)))
    return lines


def argv_of(line: str) -> list[str]:
    words = shlex.split(line)
    words = words[:next((i for i, w in enumerate(words) if w.startswith(">")), len(words))]
    return words[words.index("repa-mdlm") + 1:]


def test_every_rule_command_line_parses():
    parser = cli.build_parser()
    lines = rule_command_lines()
    steps = {argv_of(line)[0] for _, line in lines}
    # the rules run every subcommand but those for people: a rule the regex missed fails here
    assert steps == set(cli.COMMANDS) - {"check-config", "status", "export", "simulate-halving", "plan-cost"}
    for name, line in lines:
        argv = argv_of(line)
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: `repa-mdlm {' '.join(argv)}` does not parse")
        assert args.fn is cli.COMMANDS[argv[0]]


@pytest.mark.parametrize("argv", [
    ["status", "--configfile", "config/demo.yaml", "--results-dir", "results"],  # workflow/rules/common.smk
    ["status", "--state", "failed", "preempted", "--targets"],
    ["export", "--run-dir", "results/runs/baseline_s0", "--out-dir", "exported", "--data", "results/data"],
    ["train", "--spec", "{}", "--cell", "baseline_s0", "--data", "d", "--run-dir", "r", "--features=",
     "--prefetch-batches", "2", "--compile", "0", "--activation-checkpointing", "0", "--threads", "2", "--nproc", "1"],
])
def test_other_command_lines_parse(argv):
    cli.build_parser().parse_args(argv)


def test_options_keep_their_types_and_defaults():
    parse = cli.build_parser().parse_args
    a = parse(["train", "--spec", "{}", "--cell", "c", "--data", "d", "--run-dir", "r", "--features="])
    assert (a.features, a.nproc, a.compile, a.activation_checkpointing, a.stop_at_step) == ("", None, None, None, None)
    for bad in (["--compile", "3"], ["--activation-checkpointing", "2"], ["--nproc", "x"]):
        with pytest.raises(SystemExit):
            parse(["train", "--spec", "{}", "--cell", "c", "--data", "d", "--run-dir", "r", *bad])
    with pytest.raises(SystemExit):  # required options stay required
        parse(["evaluate", "--spec", "{}"])
    s = parse(["status"])
    assert (list(s.configfile), s.results_dir, s.state, s.targets) == (["config.yaml"], None, None, False)
    with pytest.raises(SystemExit):  # --state, when given, names at least one state
        parse(["status", "--state"])
    agg = parse(["aggregate", "--metrics", "m.json", "--out-dir", "t"])
    assert agg.features == []
    fig = parse(["figures", "--runs", "r", "--logs", "l", "--out-dir", "f"])
    assert fig.teachers is None and parse(["figures", "--runs", "r", "--logs", "l", "--out-dir", "f",
                                           "--teachers"]).teachers == []
    for step, extra in (("sample", ["--run-dir", "r", "--out", "o"]),
                        ("report-samples", ["--metrics", "m", "--out-md", "o", "--out-html", "h"])):
        a = parse([step, "--data", "d", *extra])
        assert (a.n_samples, a.steps, a.seed) == (SAMPLING.n_samples, SAMPLING.steps, SAMPLING.seed) == (4, 256, 0)


def test_every_option_of_every_subcommand_has_help():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "train" in a.choices).choices
    for name, fn in cli.COMMANDS.items():
        description, helps = docstring_parts(fn)
        assert description, f"{name}: no description"
        assert set(helps) == set(inspect.signature(fn).parameters), f"{name}: the docstring's Args: != the signature"
        for action in subparsers[name]._actions:
            if action.dest != "help":
                assert action.help and action.help.strip(), f"repa-mdlm {name} {action.option_strings}: no help"


def test_the_generator_maps_annotations_to_argparse():
    def step(path: str, n: int, items: list[str], rate: float = 0.5, maybe: str | None = None, flag: bool = False,
             some: list[int] = (), pick: Literal["a", "b"] = "a",
             code: Annotated[int | None, Option((0, 1, 2), ("off", "on", "max"))] = None) -> None:
        """Do a step.

        Args:
            path: a path
            n: a count
            items: the items,
                on two lines
            rate: a rate in %
            maybe: optional text
            flag: a flag
            some: numbers
            pick: one of two
            code: a coded choice
        """

    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    from repa_mdlm.workflow.arguments import add_command

    p = add_command(sub, "step", step)
    a = parser.parse_args(["step", "--path", "p", "--n", "3", "--items", "x", "y"])
    assert vars(a) | {"fn": None} == {"command": "step", "fn": None, "path": "p", "n": 3, "items": ["x", "y"],
                                      "rate": 0.5, "maybe": None, "flag": False, "some": [], "pick": "a", "code": None}
    a = parser.parse_args(["step", "--path", "p", "--n", "3", "--items", "x", "--rate", "2", "--flag",
                           "--some", "1", "2", "--pick", "b", "--code", "2", "--maybe", "m"])
    assert (a.rate, a.flag, a.some, a.pick, a.code, a.maybe) == (2.0, True, [1, 2], "b", 2, "m")
    helps = {act.dest: act.help for act in p._actions}
    assert helps["items"] == "the items, on two lines"
    assert helps["code"] == "a coded choice (0: off | 1: on | 2: max)"
    assert helps["rate"] == "a rate in %% (default: 0.5)"  # argparse prints "%"
    for bad in (["--code", "3"], ["--pick", "c"], ["--n", "1.5"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["step", "--path", "p", "--n", "3", "--items", "x", *bad])
