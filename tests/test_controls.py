"""Matched random twins (control_of): the config gives a twin its teacher's reading settings, the
workflow builds it from the teacher's architecture and tokenizer with random weights, and the verdict
compares each teacher with its twin, Holm-corrected, in both directions (beats its twin / does not)."""

from __future__ import annotations

import pandas as pd
import pytest

from repa_mdlm.analysis.controls import control_family, parse_twins
from repa_mdlm.analysis.power import TWIN_FAMILY
from repa_mdlm.analysis.verdict import compare_main
from repa_mdlm.config import Config, ConfigError

from .test_compare import runs_table
from .test_paired import BASE5, LARGE, NULL_A, NULL_B


def twin_runs(e5_minus_twin: list[float], minilm_minus_twin: list[float]) -> pd.DataFrame:
    """Both twins 5 PPL better than the baseline; each teacher differs from its twin by the given amounts."""
    twin = [b - 5.0 for b in BASE5]
    return runs_table({("e5", 3, 0.5): [t + d for t, d in zip(twin, e5_minus_twin)],
                       ("e5-twin", 3, 0.5): twin,
                       ("minilm", 3, 0.5): [t + d for t, d in zip(twin, minilm_minus_twin)],
                       ("minilm-twin", 3, 0.5): twin}, baseline=BASE5)


def verdict_of(runs: pd.DataFrame, tmp_path, twins=("e5:e5-twin", "minilm:minilm-twin")) -> tuple[str, dict]:
    runs.to_parquet(tmp_path / "runs.parquet")
    compare_main(str(tmp_path / "runs.parquet"), [], None, [], [], [], str(tmp_path / "t"), "t", twins=list(twins))
    tables = {name: pd.read_csv(tmp_path / "t" / f"{name}.csv") for name in ("paired", "power")}
    return (tmp_path / "t" / "verdict.md").read_text(), tables


def test_a_teacher_that_beats_its_twin_is_claimed_and_one_that_does_not_is_not(tmp_path):
    text, tables = verdict_of(twin_runs(LARGE, NULL_A), tmp_path)
    assert "**1 of 2 teacher configurations beat their twin** after Holm's correction: e5 L3 λ0.50" in text
    headline = text.split("## Headline\n\n", 1)[1].splitlines()
    assert headline[0].startswith("- **Does the teacher's knowledge help? 1 of 2 teacher configurations beat their "
                                  "random twin**")  # the primary question leads
    controls = pd.read_csv(tmp_path / "t" / "controls.csv").set_index("teacher")
    assert (controls["family"] == "twin").all() and controls.loc["e5", "control"] == "e5-twin"
    assert controls.loc["e5", "outcome_adjusted"] == "better than e5-twin"
    assert controls.loc["minilm", "outcome_adjusted"] == "no detectable difference"
    assert "| minilm | minilm-twin | 3 | 0.50 | 5 |" in text and "no detectable difference |" in text
    # the twins are controls, not REPA configurations of the primary family's headline
    assert (tables["power"]["metric"] == TWIN_FAMILY).sum() == 2
    assert "## Power of the twin comparisons" in text


def test_no_teacher_beats_its_twin_says_not_shown(tmp_path):
    text, _ = verdict_of(twin_runs(NULL_A, NULL_B), tmp_path)
    assert "**0 of 2 teacher configurations beat their twin**" in text
    assert "Does the teacher's knowledge help? 0 of 2" in text
    assert "do not show that the teachers' pretrained knowledge lowers the test perplexity" in text


def test_a_teacher_worse_than_its_twin_is_reported_as_worse_never_as_beating_it(tmp_path):
    text, _ = verdict_of(twin_runs([-d for d in LARGE], NULL_A), tmp_path)  # e5 clearly above its twin's PPL
    assert "**0 of 2 teacher configurations beat their twin**" in text
    assert "- Worse than their twin after Holm's correction: e5 L3 λ0.50." in text
    controls = pd.read_csv(tmp_path / "t" / "controls.csv").set_index("teacher")
    assert controls.loc["e5", "outcome_adjusted"] == "worse than e5-twin"
    # the primary section comes before the secondary family (each configuration against the baseline)
    assert text.index("## Does the teacher's knowledge help?") < text.index("## Each REPA configuration against")


def test_twin_family_is_corrected_together():
    runs = twin_runs([-1.0, -2.0, -3.0, -0.5, -0.8], NULL_A)  # e5: p = 0.034 alone, not at Holm's 0.05 / 2
    table = control_family(runs, [("e5", "e5-twin"), ("minilm", "minilm-twin")]).set_index("teacher")
    assert table.loc["e5", "p"] < 0.05 and table.loc["e5", "outcome"] == "better than e5-twin"
    assert table.loc["e5", "p_holm"] > 0.05 and table.loc["e5", "outcome_adjusted"] == "no detectable difference"
    assert table.loc["minilm", "outcome_adjusted"] == "no detectable difference"
    alone = control_family(runs, [("e5", "e5-twin")]).set_index("teacher")
    assert alone.loc["e5", "outcome_adjusted"] == "better than e5-twin"


def test_a_twin_without_its_teachers_cells_is_not_taken_for_a_pretrained_teacher(tmp_path):
    runs = twin_runs(LARGE, NULL_A)
    runs = runs[runs["teacher"] != "e5"]  # e5's cells are missing: its twin stays a twin
    text, _ = verdict_of(runs, tmp_path)
    assert "| e5-twin | pretrained" not in text and "e5-twin L3" not in text.split("## Does the teacher")[1]


def test_parse_twins():
    assert parse_twins(["e5:e5-twin", ""]) == {"e5": "e5-twin"}
    with pytest.raises(ValueError, match="<teacher>:<twin>"):
        parse_twins(["e5-twin"])


def _config(teachers: list[dict], results_dir) -> Config:
    return Config.from_dict({"results_dir": str(results_dir), "student": {"num_hidden_layers": 4},
                             "repa": {"layers": [3], "weights": [0.5], "teachers": teachers}})


TWIN = {"name": "e5-twin", "name_or_path": "{results_dir}/teachers/e5-twin/model", "control_of": "e5"}


def test_a_twin_reads_as_its_teacher_does(tmp_path):
    cfg = _config([{"name": "e5", "name_or_path": "intfloat/e5", "text_prefix": "passage: ", "max_length": 256,
                    "layer": 6, "pooling": "cls"}, TWIN], tmp_path)
    twin = cfg.teacher("e5-twin")
    assert (twin.text_prefix, twin.max_length, twin.layer, twin.pooling) == ("passage: ", 256, 6, "cls")
    assert twin.built_by_workflow and not cfg.teacher("e5").built_by_workflow


@pytest.mark.parametrize("twin, message", [
    ({"control_of": "nobody"}, "control_of = 'nobody': name a pretrained teacher"),
    ({"control_of": "e5-twin"}, "control_of = 'e5-twin': name a pretrained teacher"),
    ({"text_prefix": "query: "}, "text_prefix = 'query: ': a twin reads as its teacher does"),
    ({"pooling": "mean"}, "pooling = 'mean': a twin reads as its teacher does"),  # the default, but set
    ({"init_from_config": {"model_type": "bert"}}, "set one of init_from_config"),
])
def test_bad_twins_are_refused_with_the_key(twin, message, tmp_path):
    teachers = [{"name": "e5", "name_or_path": "intfloat/e5", "text_prefix": "passage: ", "pooling": "cls"},
                {**TWIN, **twin}]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        _config(teachers, tmp_path)


def test_a_teacher_has_one_twin(tmp_path):
    second = {**TWIN, "name": "e5-twin2", "name_or_path": "{results_dir}/teachers/e5-twin2/model"}
    with pytest.raises(ConfigError, match=r"repa.teachers\[2\].control_of = 'e5': 'e5-twin' is already its twin"):
        _config([{"name": "e5", "name_or_path": "intfloat/e5"}, TWIN, second], tmp_path)


def test_a_teachers_speed_settings_do_not_rebuild_its_twin(tmp_path):
    from repa_mdlm.config.specs import build_teacher_spec

    specs = [build_teacher_spec(_config([{"name": "e5", "name_or_path": "intfloat/e5", "batch_size": b}, TWIN],
                                         tmp_path), "e5-twin") for b in (32, 64)]
    assert specs[0] == specs[1]
    assert specs[0]["repa"]["teachers"][1] == {"name": "e5", "name_or_path": "intfloat/e5", "trust_remote_code": False}


def test_the_twin_has_its_teachers_architecture_and_tokenizer_and_random_weights(tmp_path):
    """Built from a locally saved BERT, as the workflow's build_teacher job does for a twin."""
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    from repa_mdlm.teachers.built import build_twin_teacher

    source_dir = tmp_path / "teacher"
    torch.manual_seed(123)
    BertModel(BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(source_dir)
    _write_word_tokenizer(source_dir)
    cfg = _config([{"name": "t", "name_or_path": str(source_dir)},
                   {"name": "t-twin", "name_or_path": "{results_dir}/teachers/t-twin/model", "control_of": "t"}],
                  tmp_path / "results")
    build_twin_teacher(cfg.teacher("t-twin"), cfg.teacher("t"), tmp_path / "twin")
    teacher, twin = AutoModel.from_pretrained(source_dir), AutoModel.from_pretrained(tmp_path / "twin")
    assert twin.config.to_dict() | {"_name_or_path": ""} == teacher.config.to_dict() | {"_name_or_path": ""}
    assert AutoTokenizer.from_pretrained(tmp_path / "twin").get_vocab() == \
        AutoTokenizer.from_pretrained(source_dir).get_vocab()
    a, b = teacher.state_dict(), twin.state_dict()
    assert a.keys() == b.keys()
    weights = [k for k in a if k.endswith("weight") and a[k].dim() == 2]
    assert weights and all(not torch.equal(a[k], b[k]) for k in weights)


def _write_word_tokenizer(folder) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{f"w{i}": 4 + i for i in range(100)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]").save_pretrained(folder)


def test_a_tokenwise_arm_has_its_own_twin_family_and_is_compared_with_pooled_and_the_baseline(tmp_path):
    """Adding token-wise cells leaves the pooled twin family as it was (its own Holm), gives the token-wise
    twins a family of their own, and compares each token-wise configuration with the pooled one and the
    baseline in one Holm family."""
    twin = [b - 5.0 for b in BASE5]
    pooled = {("e5", 3, 0.5): [t + d for t, d in zip(twin, NULL_A)], ("e5-twin", 3, 0.5): twin,
              ("minilm", 3, 0.5): [t + d for t, d in zip(twin, NULL_B)], ("minilm-twin", 3, 0.5): twin}
    tokenwise = {("e5+tok-mlp64", 3, 0.5): [t + d for t, d in zip(twin, LARGE)], ("e5-twin+tok-mlp64", 3, 0.5): twin}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alone, _ = verdict_of(runs_table(pooled, baseline=BASE5), tmp_path / "a")
    both, tables = verdict_of(runs_table({**pooled, **tokenwise}, baseline=BASE5), tmp_path / "b",
                              twins=("e5:e5-twin", "minilm:minilm-twin", "e5+tok-mlp64:e5-twin+tok-mlp64"))
    a = pd.read_csv(tmp_path / "a" / "t" / "controls.csv")
    b = pd.read_csv(tmp_path / "b" / "t" / "controls.csv")
    twins = b[b["family"] == "twin"].set_index("teacher")
    assert twins.loc["e5", "arm"] == "pooled" and twins.loc["e5+tok-mlp64", "arm"] == "tok-mlp64"
    assert twins.loc[["e5", "minilm"], "p_holm"].tolist() == a.set_index("teacher").loc[["e5", "minilm"], "p_holm"].tolist()
    assert twins.loc["e5+tok-mlp64", "p_holm"] == twins.loc["e5+tok-mlp64", "p"]  # a family of one
    assert twins.loc["e5+tok-mlp64", "outcome_adjusted"] == "better than e5-twin+tok-mlp64"
    arms = b[b["family"] == "arm"]
    assert sorted(zip(arms["teacher"], arms["control"])) == [
        ("e5+tok-mlp64", "baseline"), ("e5+tok-mlp64", "e5"), ("e5-twin+tok-mlp64", "baseline"),
        ("e5-twin+tok-mlp64", "e5-twin")]
    assert (arms.set_index(["teacher", "control"]).loc[("e5-twin+tok-mlp64", "e5-twin"), "diff_mean"]) == 0
    assert "## Other arms: against the paper's pooled alignment and against the baseline" in both
    assert "## Other arms" not in alone
    assert {"test_ppl_vs_twin", "test_ppl_vs_twin:tok-mlp64", "test_ppl_arm"} <= set(tables["power"]["metric"])
    assert "## Power of the twin comparisons (tok-mlp64)" in both and "## Power of the other arms' comparisons" in both
    assert "## Power of the twin comparisons (tok-mlp64)" not in alone


def test_unmatched_controls_are_compared_within_each_arm(tmp_path):
    """A token-wise teacher is compared with the token-wise run of the unmatched control, never with the
    pooled one; the pooled family stays what it was without the token-wise cells."""
    rand = [b - 5.0 for b in BASE5]
    pooled = {("e5", 3, 0.5): [r + d for r, d in zip(rand, NULL_A)], ("rand", 3, 0.5): rand}
    tokenwise = {("e5+tok", 3, 0.5): [r + d for r, d in zip(rand, LARGE)]}
    for name, cells in (("a", pooled), ("b", {**pooled, **tokenwise}),
                        ("c", {**pooled, **tokenwise, ("rand+tok", 3, 0.5): rand})):
        (tmp_path / name).mkdir()
        runs_table(cells, baseline=BASE5).to_parquet(tmp_path / name / "runs.parquet")
        compare_main(str(tmp_path / name / "runs.parquet"), [], None, [], [], ["rand"], str(tmp_path / name / "t"), "t")
    tables = {n: pd.read_csv(tmp_path / n / "t" / "controls.csv") for n in "abc"}
    unmatched = {n: t[t["family"] == "unmatched"] for n, t in tables.items()}
    assert list(zip(unmatched["b"]["teacher"], unmatched["b"]["control"])) == [("e5", "rand")]
    assert unmatched["b"]["p_holm"].tolist() == unmatched["a"]["p_holm"].tolist()
    assert sorted(zip(unmatched["c"]["teacher"], unmatched["c"]["control"])) == [("e5", "rand"), ("e5+tok", "rand+tok")]
    assert set(unmatched["c"]["arm"]) == {"pooled", "tok"}
