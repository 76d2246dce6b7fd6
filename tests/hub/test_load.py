"""load_hf: a transformers checkpoint of each family gives the same logits and the same greedy
tokens in buildlm (fp32, random weights, several shapes)."""

import json

import pytest
import torch

from buildlm.hub import load_hf
from buildlm.model import GPT

LLAMA3_SCALING = dict(
    rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
    original_max_position_embeddings=16,
)  # fmt: skip

# (family, shape overrides): GQA ratios 1, 2 and 4; tied and untied heads; odd vocabularies.
CASES = {
    "gpt2-tied": ("gpt2", dict()),
    "gpt2-untied-odd": ("gpt2", dict(vocab_size=131, n_embd=32, n_head=2, n_inner=80,
                                     tie_word_embeddings=False)),
    "llama-gqa1": ("llama", dict(num_key_value_heads=4)),
    "llama-gqa2-tied": ("llama", dict(tie_word_embeddings=True, vocab_size=113)),
    "llama-gqa4": ("llama", dict(num_attention_heads=8, num_key_value_heads=2, vocab_size=89)),
    "llama-bias": ("llama", dict(attention_bias=True, mlp_bias=True)),
    "llama3-scaled": ("llama", dict(rope_scaling=LLAMA3_SCALING)),
    "qwen2-gqa2": ("qwen2", dict()),
    "qwen2-gqa4-tied": ("qwen2", dict(num_attention_heads=8, num_key_value_heads=2,
                                      tie_word_embeddings=True)),
    "qwen3-gqa1-tied": ("qwen3", dict(num_key_value_heads=4, head_dim=16,
                                      tie_word_embeddings=True)),
    "qwen3-wide-heads": ("qwen3", dict(head_dim=32, vocab_size=103)),  # 4 x 32 != d_model 64
}  # fmt: skip


def _build(hub, case):
    family, overrides = CASES[case]
    shape = hub.gpt2_shape(**overrides) if family == "gpt2" else hub.llama_shape(**overrides)
    return hub.make_hf(family, seed=len(case), **shape)


@pytest.mark.parametrize("case", CASES)
def test_logits_and_greedy_tokens_match_transformers(hub, case, tmp_path):
    hf = _build(hub, case)
    hf.save_pretrained(tmp_path)
    model, tokenizer = load_hf(tmp_path)
    assert tokenizer is None  # the folder holds no tokenizer files
    assert not model.training
    vocab = hf.config.vocab_size
    assert model.config.vocab_size == vocab
    hub.assert_matches_transformers(model, hf)


def test_llama3_rope_scaling_is_applied(hub, tmp_path):
    """The scaled model matches transformers, and the same weights without scaling do not."""
    hf = _build(hub, "llama3-scaled")
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    assert model.config.rope_scaling == {
        "type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_context_length": 16,
    }  # fmt: skip
    plain = GPT(model.config.__class__(**{**model.config.to_dict(), "rope_scaling": None}))
    plain.load_state_dict(model.state_dict())
    idx = torch.arange(48)[None] % hf.config.vocab_size
    with torch.no_grad():
        expected = hf(input_ids=idx).logits
        torch.testing.assert_close(model(idx), expected, atol=1e-5, rtol=1e-5)
        assert (plain.eval()(idx) - expected).abs().max() > 1e-3


def test_legacy_rope_keys_load(hub, tmp_path):
    """transformers 4.x wrote rope_theta and rope_scaling at the top level of config.json."""
    hf = _build(hub, "llama3-scaled")
    hf.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    params = config.pop("rope_parameters")
    config["rope_theta"] = params.pop("rope_theta")
    config["rope_scaling"] = {**params, "type": params.pop("rope_type")}  # the oldest spelling
    path.write_text(json.dumps(config))
    model, _ = load_hf(tmp_path)
    assert model.config.rope_theta == 50000.0
    assert model.config.rope_scaling["factor"] == 8.0
    idx = torch.arange(40)[None] % hf.config.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(input_ids=idx).logits, atol=1e-5, rtol=1e-5)


def test_weights_are_not_copied_twice(hub, tmp_path):
    """Tensors used as stored are views into the file; fused q/k/v are fresh tensors."""
    hf = _build(hub, "llama-gqa2-tied")
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    emb = model.tok_emb.weight
    down = model.blocks[0].mlp.down.weight
    assert emb.untyped_storage().data_ptr() == down.untyped_storage().data_ptr()  # one file map
    qkv = model.blocks[0].attn.qkv.weight
    assert qkv.untyped_storage().nbytes() == qkv.numel() * qkv.element_size()
    assert all(p.requires_grad for p in model.parameters())
    assert model.rope.cos.device.type == "cpu"  # recomputed, not left on the meta device


def test_a_folder_loads_without_symbolic_shape_machinery(hub, tmp_path):
    """The model is built on the meta device; computing RoPE tables there would run PyTorch's
    symbolic-shape code (it imports sympy, ~1 s on the first load). The tables come afterwards,
    on the real device, only as long as the positions used."""
    import subprocess
    import sys

    hf = _build(hub, "qwen3-gqa1-tied")
    hf.save_pretrained(tmp_path)
    code = (
        "import sys\n"
        "from buildlm.hub import load_hf\n"
        f"model, _ = load_hf({str(tmp_path)!r})\n"
        "print('sympy' in sys.modules, tuple(model.rope.cos.shape))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == f"False ({min(4096, hf.config.max_position_embeddings)}, 16)"
