"""The same weights in buildlm and in transformers give the same logits (fp32).

GPT-2 (learned positions, LayerNorm, GELU, biases, tied head), Llama (RoPE, RMSNorm, SwiGLU,
grouped-query attention, untied head) and Qwen3 (Llama plus per-head q/k RMSNorm), each built
from a small transformers config with random weights. The weights are copied with the name
mapping of `buildlm.hub.hf_weights` (the same one `buildlm.hub.load_hf` uses); tests/hub checks
whole checkpoint folders.
"""

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from buildlm.hub.hf_weights import hf_to_buildlm
from buildlm.model import GPT, ModelConfig


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every parameter off its init (ones/zeros would hide a mis-copied norm or bias)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_gpt2_logits_match_transformers(attn_implementation, attention):
    torch.manual_seed(0)
    hf_cfg = GPT2Config(
        vocab_size=101, n_positions=24, n_embd=48, n_layer=3, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    hf = GPT2LMHeadModel._from_config(hf_cfg, attn_implementation=attn_implementation).eval()
    _perturb(hf)
    cfg = ModelConfig.preset(
        "gpt2-124m", vocab_size=101, context_length=24, d_model=48, n_layers=3, n_heads=4,
        attention=attention,
    )  # fmt: skip
    model = GPT(cfg).eval()
    model.load_state_dict(hf_to_buildlm("gpt2", cfg, hf.state_dict()), strict=True)
    idx = torch.randint(0, 101, (3, 24))
    with torch.no_grad():
        expected = hf(input_ids=idx).logits
        got = model(idx)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_llama_style_logits_match_transformers(family):
    torch.manual_seed(0)
    shape = dict(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
        rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False,
    )  # fmt: skip
    if family == "llama":
        hf_cfg = LlamaConfig(**shape, rope_theta=50000.0)
        hf_model = LlamaForCausalLM
    else:
        hf_cfg = Qwen3Config(**shape, head_dim=16, rope_theta=50000.0)
        hf_model = Qwen3ForCausalLM
    if getattr(hf_cfg, "rope_parameters", None) is not None:
        hf_cfg.rope_parameters["rope_theta"] = 50000.0
    hf = hf_model._from_config(hf_cfg, attn_implementation="eager").eval()
    _perturb(hf)
    cfg = ModelConfig.preset(
        "llama-small", vocab_size=97, d_model=64, d_ff=96, n_layers=2, n_heads=4, n_kv_heads=2,
        context_length=32, norm_eps=1e-6, rope_theta=50000.0, qk_norm=family == "qwen3",
    )  # fmt: skip
    model = GPT(cfg).eval()
    model.load_state_dict(hf_to_buildlm(family, cfg, hf.state_dict()), strict=True)
    idx = torch.randint(0, 97, (2, 32))
    with torch.no_grad():
        expected = hf(input_ids=idx).logits
        got = model(idx)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
