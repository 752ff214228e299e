"""Config validation: schema + semantic checks, each error naming its key."""

import ast
import dataclasses
import importlib
import inspect
import pkgutil

import pytest

from repa_mdlm import config as config_module
from repa_mdlm.config import Cell, Config, ConfigError
from repa_mdlm.config.loading import load_config
from repa_mdlm.config.specs import cell_spec

from .conftest import REPO


def test_paper_config_is_the_papers_grid():
    cfg = load_config(REPO / "config.yaml")
    assert len(cfg.cells()) == 121
    assert [t.name for t in cfg.repa.teachers] == ["qwen3-0.6b", "qwen3-1.7b", "qwen2.5-0.5b", "qwen2.5-1.5b",
                                                   "bertimbau", "robertacrawlpt"]
    assert cfg.train.steps * cfg.train.global_batch * cfg.seq_len == cfg.corpus.train_tokens == 655_360_000
    s = cfg.student
    assert (s.num_hidden_layers, s.hidden_size, s.num_attention_heads, s.num_key_value_heads, s.vocab_size) == (
        24, 896, 14, 2, 151936)


def test_demo_config_is_valid():
    cfg = load_config(REPO / "config" / "demo.yaml")
    assert len(cfg.cells()) >= 1 + 2 * 2 * 2


def test_unknown_teacher_name():
    cfg = load_config(REPO / "config.yaml")
    with pytest.raises(ConfigError, match="no teacher named 'gpt-9'"):
        cfg.teacher("gpt-9")


def test_cell_ids_round_trip_and_specs_are_per_cell():
    cfg = load_config(REPO / "config.yaml")
    for cell in cfg.cells():
        assert Cell.parse(cell.name) == cell
    assert cfg.cells()[0].name == "baseline_s0"
    assert "qwen3-1.7b_L17_w1.00_s0" in {c.name for c in cfg.cells()}
    spec = cell_spec(cfg, Cell.parse("bertimbau_L11_w0.50_s0"))
    assert [t["name"] for t in spec["repa"]["teachers"]] == ["bertimbau"]
    assert Config.from_dict(spec).cells()[1] == Cell.parse("bertimbau_L11_w0.50_s0")
    assert "repa" in spec and cell_spec(cfg, Cell.parse("baseline_s0"))["repa"]["teachers"] == []
    with pytest.raises(ConfigError, match="not a cell name"):
        Cell.parse("qwen3_L17")


def test_every_choice_has_one_home_and_the_schema_agrees():
    """The schema's enums are the Literal choices of the typed config, key for key."""
    import yaml

    from repa_mdlm.config import COMPILE_MODES, choice_fields
    from repa_mdlm.config.loading import schema_path

    schema = yaml.safe_load(schema_path().read_text())

    def resolve(node):  # a local $ref such as "#/properties/corpus"
        while "$ref" in node:
            target = schema
            for part in node["$ref"].split("/")[1:]:
                target = target[part]
            node = target
        return node

    def node_of(key):
        node = schema
        for part in key.replace("[*]", ".[*]").split("."):
            node = resolve(node["items"] if part == "[*]" else node["properties"][part])
        return node

    choices = dict(choice_fields(Config))
    assert {"corpus.source", "repa.teachers[*].pooling", "train.precision", "teacher_features"} <= set(choices)
    for key, options in choices.items():
        assert node_of(key)["enum"] == list(options), key
    assert node_of("train.compile")["anyOf"][1]["enum"] == list(COMPILE_MODES)


def _config_modules():
    """The package repa_mdlm.config and every module in it."""
    names = [info.name for info in pkgutil.iter_modules(config_module.__path__, f"{config_module.__name__}.")]
    return [config_module] + [importlib.import_module(name) for name in sorted(names)]


def test_every_field_of_every_config_section_has_a_docstring():
    """litgpt style: a string literal right under each field, saying what it is (unit, the paper's value)."""
    undocumented, documented, fields, sections = [], 0, 0, set()
    for module in _config_modules():
        here = {cls.__name__ for cls in vars(module).values()
                if inspect.isclass(cls) and dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__}
        sections |= here
        fields += sum(len(dataclasses.fields(getattr(module, name))) for name in here)
        for node in ast.parse(inspect.getsource(module)).body:
            if not (isinstance(node, ast.ClassDef) and node.name in here):
                continue
            for stmt, after in zip(node.body, node.body[1:] + [None]):
                if isinstance(stmt, ast.AnnAssign):
                    if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(
                            after.value.value, str) and after.value.value.strip():
                        documented += 1
                    else:
                        undocumented.append(f"{module.__name__}.{node.name}.{stmt.target.id}")
    assert {"Config", "CorpusConfig", "TeacherConfig", "JobResources", "Cell"} <= sections
    assert not undocumented, undocumented
    assert documented == fields
    exported = {name for name in dir(config_module) if dataclasses.is_dataclass(getattr(config_module, name))}
    assert sections == exported  # every section is importable from repa_mdlm.config
