"""Teacher feature extraction: length-bucketed cache batches, and the forward stopped at the wanted layer."""

import numpy as np
import pytest
import torch

from repa_mdlm.config import TeacherConfig
from repa_mdlm.data.dataset import sequence_texts
from repa_mdlm.teachers import teacher as teachers
from repa_mdlm.teachers.built import build_random_teacher
from repa_mdlm.teachers.teacher import Teacher, compute_feature_cache, pool, transformer_blocks

from .conftest import MINILM

QWEN3_LAYERS = 3


@pytest.fixture(scope="module")
def minilm(tokenizer):
    return Teacher(TeacherConfig(name="minilm", name_or_path=MINILM, max_length=64), tokenizer)


@pytest.fixture(scope="module")
def qwen3_dir(data_dir, tmp_path_factory):
    cfg = TeacherConfig(name="tiny-qwen3", name_or_path=str(tmp_path_factory.mktemp("qwen3") / "model"),
                        init_from_config=dict(model_type="qwen3", hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=QWEN3_LAYERS, num_attention_heads=4,
                                              num_key_value_heads=2, head_dim=8))
    return build_random_teacher(cfg, data_dir / "tokenizer", cfg.name_or_path)


def _qwen3(qwen3_dir, tokenizer, layer: int, pooling: str = "mean") -> Teacher:
    return Teacher(TeacherConfig(name="tiny-qwen3", name_or_path=str(qwen3_dir), layer=layer, pooling=pooling),
                   tokenizer)


@pytest.fixture(scope="module")
def ragged_rows(data_dir, tokenizer):
    """Real sequences whose text ends early (the rest is EOS), so they re-tokenize to very different lengths."""
    from repa_mdlm.data.dataset import open_split

    rows = np.array(open_split(data_dir, "train")[:40], dtype=np.int64)
    for i, row in enumerate(rows):
        row[4 + (i * 7) % 28:] = tokenizer.eos_token_id
    return rows


def _pooled(hidden: torch.Tensor, inputs: dict, pooling: str) -> torch.Tensor:
    """What Teacher.encode returns for these hidden states."""
    return teachers.round_features(pool(hidden.float(), inputs["attention_mask"], pooling))


def _bits(features: torch.Tensor) -> np.ndarray:
    return features.to(torch.bfloat16).view(torch.int16).numpy()


def _assert_same_features(a_bits: np.ndarray, b_bits: np.ndarray) -> None:
    """Equal up to one bf16 step on a tiny fraction; near zero, where a float32 rounding
    difference from batching spans several bf16 steps, up to 1e-5 absolute."""
    def line(bits):  # sign-magnitude bf16 bits onto a line, one step per representable value
        bits = np.asarray(bits).view(np.int16).astype(np.int32)
        return np.where(bits < 0, -(bits & 0x7FFF), bits)

    def value(bits):
        return torch.from_numpy(np.asarray(bits).view(np.int16).copy()).view(torch.bfloat16).float().numpy()

    steps = np.abs(line(a_bits) - line(b_bits))
    near = np.abs(value(a_bits) - value(b_bits)) <= 1e-5
    assert ((steps <= 1) | near).all(), steps.max()
    assert (steps > 0).mean() < 0.01, (steps > 0).mean()


def _counting(modules) -> list[int]:
    counts = [0] * len(modules)
    for i, module in enumerate(modules):
        module.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


# ---------------------------------------------------------------- length-bucketed cache
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_padded_inputs_are_what_one_tokenizer_call_gives(tokenizer, ragged_rows, padding_side):
    """tokenize + collate (the cache's path) build exactly the inputs of the former single padded call."""
    teacher = Teacher(TeacherConfig(name="minilm", name_or_path=MINILM, max_length=64), tokenizer)
    teacher.tokenizer.padding_side = padding_side
    rows = ragged_rows[:9]
    expected = teacher.tokenizer(sequence_texts(tokenizer, rows), padding=True, truncation=True, max_length=64,
                                 return_tensors="pt")
    got = teacher._inputs(rows)
    assert got.keys() == expected.keys() and "token_type_ids" in got
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    mask = got["attention_mask"]
    padded_end = mask[:, 0] if padding_side == "left" else mask[:, -1]
    assert (padded_end == 0).any()  # the rows differ in length, so something was padded, on that side


def test_length_bucketed_cache_matches_one_by_one_encoding(minilm, ragged_rows, tmp_path, monkeypatch):
    monkeypatch.setattr(teachers, "WINDOW_BATCHES", 2)  # windows of 8 rows: 5 windows, each sorted by length
    meta = compute_feature_cache(minilm, ragged_rows, "0" * 64, tmp_path / "f.npy", batch_size=4)
    cached = np.load(tmp_path / "f.npy")
    alone = _bits(torch.cat([minilm.encode(row[None]) for row in ragged_rows]))  # no padding at all
    _assert_same_features(cached, alone)

    lengths = np.array([len(e["input_ids"]) for e in minilm.tokenize(ragged_rows)])
    assert lengths.max() > 3 * lengths.min()
    in_order = lengths.reshape(-1, 4)
    assert meta["padding_efficiency"] > in_order.sum() / (in_order.max(1).sum() * 4) + 0.1
    assert {"teacher", "input", "dim", "sequences", "sha256", "wall_s", "tokens_sha256"} <= meta.keys()
    assert meta["sequences"] == len(ragged_rows) and meta["input"] == "text"


def test_cache_rows_follow_the_input_rows(minilm, ragged_rows, tmp_path):
    perm = np.random.default_rng(0).permutation(len(ragged_rows))
    compute_feature_cache(minilm, ragged_rows, "0" * 64, tmp_path / "a.npy", batch_size=4)
    compute_feature_cache(minilm, ragged_rows[perm], "0" * 64, tmp_path / "b.npy", batch_size=4)
    original, permuted = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert not np.array_equal(original, permuted)
    _assert_same_features(permuted, original[perm])


def test_student_id_teacher_cache_is_exactly_encode(qwen3_dir, tokenizer, ragged_rows, tmp_path):
    teacher = _qwen3(qwen3_dir, tokenizer, layer=2)
    meta = compute_feature_cache(teacher, ragged_rows, "0" * 64, tmp_path / "f.npy", batch_size=8)
    assert meta["input"] == "student_ids" and meta["padding_efficiency"] == 1.0
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy").view(np.int16), _bits(teacher.encode(ragged_rows)))


# ---------------------------------------------------------------- stop at the wanted layer
def test_the_block_list_is_found_generically(minilm, qwen3_dir, tokenizer):
    assert transformer_blocks(minilm.model, 6) is minilm.model.encoder.layer
    assert transformer_blocks(_qwen3(qwen3_dir, tokenizer, -1).model, QWEN3_LAYERS) is not None
    assert transformer_blocks(minilm.model, 5) is None


@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_qwen3_stopped_forward_gives_hidden_states_of_the_full_one(qwen3_dir, tokenizer, ragged_rows, layer,
                                                                  pooling):
    teacher = _qwen3(qwen3_dir, tokenizer, layer, pooling)
    assert teacher._stop_block is teacher.model.layers[layer - 1]
    inputs = teacher._inputs(ragged_rows[:6])
    full = teacher.model(**inputs, output_hidden_states=True)
    assert torch.equal(teacher._run_to_block(inputs), full.hidden_states[layer])
    expected = _pooled(full.hidden_states[layer], inputs, pooling)
    assert torch.equal(teacher.encode(ragged_rows[:6]), expected)
    assert not torch.equal(expected, _pooled(full.hidden_states[layer + 1], inputs, pooling))


def test_qwen3_last_layer_keeps_the_final_norm(qwen3_dir, tokenizer, ragged_rows):
    """hidden_states[num_hidden_layers] is last_hidden_state (after the final norm), not the last block's output."""
    x0 = ragged_rows[:6]
    for layer in (QWEN3_LAYERS, -1):
        teacher = _qwen3(qwen3_dir, tokenizer, layer)
        assert teacher._stop_block is None
        inputs = teacher._inputs(x0)
        last_block_out = []
        teacher.model.layers[-1].register_forward_hook(lambda m, a, out: last_block_out.append(out))
        full = teacher.model(**inputs, output_hidden_states=True)
        assert torch.equal(full.hidden_states[QWEN3_LAYERS], full.last_hidden_state)
        assert torch.equal(teacher.encode(x0), _pooled(full.last_hidden_state, inputs, "mean"))
        assert not torch.equal(teacher.encode(x0), _pooled(last_block_out[0], inputs, "mean"))


def test_minilm_stopped_forward_gives_hidden_states_of_the_full_one(tokenizer, ragged_rows):
    teacher = Teacher(TeacherConfig(name="minilm", name_or_path=MINILM, max_length=64, layer=3), tokenizer)
    assert teacher._stop_block is teacher.model.encoder.layer[2]
    inputs = teacher._inputs(ragged_rows[:8])
    full = teacher.model(**inputs, output_hidden_states=True)
    assert torch.equal(teacher._run_to_block(inputs), full.hidden_states[3])
    assert torch.equal(teacher.encode(ragged_rows[:8]), _pooled(full.hidden_states[3], inputs, "mean"))


@pytest.mark.parametrize("which", ["qwen3", "minilm"])
def test_stopped_forward_skips_the_blocks_above(qwen3_dir, tokenizer, ragged_rows, which):
    if which == "qwen3":
        teacher, layer = _qwen3(qwen3_dir, tokenizer, layer=1), 1
        blocks, after = teacher.model.layers, [teacher.model.norm]
    else:
        teacher = Teacher(TeacherConfig(name="minilm", name_or_path=MINILM, max_length=64, layer=3), tokenizer)
        layer, blocks, after = 3, teacher.model.encoder.layer, [teacher.model.pooler]
    counts = _counting(list(blocks) + after)
    teacher.encode(ragged_rows[:4])
    assert counts == [1] * layer + [0] * (len(counts) - layer)
    # the stop hook is gone afterwards: the model itself still runs whole
    teacher.model(**teacher._inputs(ragged_rows[:4]))
    assert counts == [2] * layer + [1] * (len(counts) - layer)
