"""REPA: gradient flow, foreign-tokenizer teachers, the feature cache."""

import numpy as np
import pytest
import torch

from repa_mdlm.config import StudentConfig, TeacherConfig
from repa_mdlm.model.diffusion import corrupt, diffusion_nelbo, sample_t
from repa_mdlm.model.repa import Projection, alignment_loss, pool_student
from repa_mdlm.model.student import build_student
from repa_mdlm.teachers.built import build_random_teacher
from repa_mdlm.teachers.teacher import FeatureCache, Teacher, compute_feature_cache

from .conftest import MINILM, TINY_STUDENT


@pytest.fixture(scope="module")
def minilm(tokenizer):
    return Teacher(TeacherConfig(name="minilm", name_or_path=MINILM, max_length=64), tokenizer)


@pytest.fixture(scope="module")
def train_tokens(data_dir):
    from repa_mdlm.data.dataset import open_split

    return open_split(data_dir, "train")


def _repa_loss(student, projection, teacher, x0, layer=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = sample_t(len(x0), 1e-3, gen)
    x_t, masked = corrupt(x0, t, student.config.mask_token_id, 1e-3, gen)
    nelbo_sum, _, hidden = diffusion_nelbo(student, x0, t, masked, x_t, repa_layer=layer)
    target = teacher.encode(x0)
    return nelbo_sum / len(x0), alignment_loss(projection(pool_student(hidden)), target)


def _student(tokenizer):
    return build_student(StudentConfig(**TINY_STUDENT), len(tokenizer), tokenizer.mask_token_id,
                         tokenizer.eos_token_id, seed=0)


def test_foreign_tokenizer_teacher_reads_text_and_gives_nonzero_loss(minilm, tokenizer, train_tokens):
    assert minilm.input_mode == "text"
    x0 = np.asarray(train_tokens[:4])
    inputs = minilm._inputs(x0)
    assert int(inputs["input_ids"].max()) < minilm.model.config.vocab_size
    assert (inputs["attention_mask"].sum(1) > 10).all()  # real re-tokenized text, not a stub
    # the teacher's own tokenizer gets readable Portuguese, without the student's special tokens
    text = minilm.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True)
    assert len(text) > 40 and tokenizer.eos_token not in text
    student = _student(tokenizer)
    projection = Projection(student.config.hidden_size, minilm.dim)
    _, repa = _repa_loss(student, projection, minilm, torch.from_numpy(x0.astype(np.int64)))
    assert repa.item() > 1e-4


def test_repa_gradients_reach_student_and_projection_never_teacher(minilm, tokenizer, train_tokens):
    student = _student(tokenizer)
    projection = Projection(student.config.hidden_size, minilm.dim)
    x0 = torch.from_numpy(np.asarray(train_tokens[:4], dtype=np.int64))
    _, repa = _repa_loss(student, projection, minilm, x0, layer=2)
    repa.backward()
    assert projection.linear.weight.grad is not None and projection.linear.weight.grad.abs().sum() > 0
    assert student.model.embed_tokens.weight.grad.abs().sum() > 0
    assert student.model.layers[1].mlp.down_proj.weight.grad.abs().sum() > 0  # block 2 feeds hidden_states[2]
    assert student.model.layers[2].mlp.down_proj.weight.grad is None  # above the aligned layer: no REPA signal
    assert all(p.grad is None and not p.requires_grad for p in minilm.model.parameters())


def test_cached_and_online_features_agree(minilm, data_dir, train_tokens, tmp_path):
    from repa_mdlm.data.dataset import read_manifest

    sha = read_manifest(data_dir)["splits"]["train"]["sha256"]
    meta = compute_feature_cache(minilm, train_tokens, sha, tmp_path / "train.npy", batch_size=7)
    assert meta["sequences"] == len(train_tokens) and meta["input"] == "text"
    cache = FeatureCache(tmp_path / "train", tokens_sha256=sha)
    idx = np.array([3, 0, 17, 31])
    online = minilm.encode(np.asarray(train_tokens[idx]))
    # identical up to one bf16 rounding step (the cache batches sequences differently)
    torch.testing.assert_close(cache[idx], online, rtol=2**-7, atol=1e-6)
    assert (cache[idx] == online).float().mean() > 0.99
    with pytest.raises(ValueError, match="other token arrays"):
        FeatureCache(tmp_path / "train", tokens_sha256="0" * 64)


def test_teacher_with_the_student_tokenizer_gets_student_ids(data_dir, tokenizer, train_tokens, tmp_path):
    cfg = TeacherConfig(name="tiny-qwen3", name_or_path=str(tmp_path / "qwen3"),
                        init_from_config=dict(model_type="qwen3", hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                              head_dim=8))
    build_random_teacher(cfg, data_dir / "tokenizer", cfg.name_or_path)
    teacher = Teacher(cfg, tokenizer)
    assert teacher.input_mode == "student_ids" and teacher.dim == 32
    x0 = np.asarray(train_tokens[:2])
    torch.testing.assert_close(teacher._inputs(x0)["input_ids"], torch.from_numpy(x0.astype(np.int64)))
    assert teacher.encode(x0).shape == (2, 32)


def test_alignment_losses():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 4.0]])
    assert alignment_loss(a, b, "mse").item() == pytest.approx((1 + 4) / 4)
    assert alignment_loss(a, a * 3, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert alignment_loss(a, -a, "cosine").item() == pytest.approx(2.0)
