"""The student: bidirectional attention that survives save/reload, mask token, hidden-state indexing."""

import pytest
import torch

from repa_mdlm.config import StudentConfig
from repa_mdlm.model.student import backbone_hidden, build_student, load_student, output_embedding, student_vocab_size

from .conftest import TINY_STUDENT


def _student(attn="sdpa", **kw):
    cfg = StudentConfig(**{**TINY_STUDENT, "attn_implementation": attn, **kw})
    return build_student(cfg, tokenizer_size=100, mask_token_id=99, eos_token_id=0, seed=0).eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_last_token_changes_position_zero(attn):
    model = _student(attn)
    x = torch.randint(1, 99, (1, 12), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, -1] = (x[0, -1] % 98) + 1
    with torch.no_grad():
        hx, _ = backbone_hidden(model, x)
        hy, _ = backbone_hidden(model, y)
    assert (hx[0, 0] - hy[0, 0]).abs().max() > 1e-4  # bidirectional: position 0 sees the last token


def test_reload_stays_bidirectional(tmp_path):
    from transformers import AutoModel

    model = _student("eager")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = load_student(tmp_path).eval()
    assert reloaded.config.is_causal is False and reloaded.config.mask_token_id == 99
    backbone = AutoModel.from_pretrained(tmp_path).eval()
    x = torch.randint(1, 99, (1, 10))
    y = x.clone()
    y[0, -1] = (x[0, -1] % 98) + 1
    with torch.no_grad():
        assert (backbone(x).last_hidden_state[0, 0] - backbone(y).last_hidden_state[0, 0]).abs().max() > 1e-4
        torch.testing.assert_close(reloaded(x).logits, model(x).logits)


def test_causal_model_is_refused(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a repa-mdlm student"):
        load_student(tmp_path)


def test_hidden_state_index_is_block_output():
    model = _student()
    x = torch.randint(1, 99, (2, 8))
    with torch.no_grad():
        out = model.model(input_ids=x, output_hidden_states=True)
        _, layer2 = backbone_hidden(model, x, layer=2)
        # hidden_states[l] is the output of block l (index 0 is the embeddings)
        h = model.model.embed_tokens(x)
        torch.testing.assert_close(out.hidden_states[0], h)
    torch.testing.assert_close(layer2, out.hidden_states[2])
    assert len(out.hidden_states) == TINY_STUDENT["num_hidden_layers"] + 1


def test_vocab_and_head_rows():
    assert student_vocab_size(StudentConfig(vocab_size=None), 2050) == 2112
    # Qwen2.5: 151 665 tokens + the added mask fit in the 151 936 published rows
    assert student_vocab_size(StudentConfig(vocab_size=151936), 151666) == 151936
    model = _student(vocab_size=128)
    assert model.lm_head.weight.shape[0] == 128
    assert output_embedding(model).shape[0] == 100  # spare rows are never predicted
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied


def test_sdpa_gets_no_materialised_mask(monkeypatch):
    """Packed sequences have no padding: SDPA must get attn_mask=None and is_causal=False, so
    the flash / memory-efficient kernels apply and no [L, L] mask is built per layer."""
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append((kwargs.get("attn_mask"), kwargs.get("is_causal")))
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model = _student("sdpa")
    with torch.no_grad():
        backbone_hidden(model, torch.randint(1, 99, (2, 16)))
    assert len(calls) == TINY_STUDENT["num_hidden_layers"]
    assert all(mask is None and causal is False for mask, causal in calls)
