"""The same weights in buildlm and in transformers give the same logits (fp32).

GPT-2 (learned positions, LayerNorm, GELU, biases, tied head), Llama (RoPE, RMSNorm, SwiGLU,
grouped-query attention, untied head) and Qwen3 (Llama plus per-head q/k RMSNorm), each built
from a small transformers config with random weights. The weight copy is written out here; the
conversion proper lives in buildlm.hub.
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

from buildlm.model import GPT, ModelConfig


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every parameter off its init (ones/zeros would hide a mis-copied norm or bias)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def _gpt2_into_buildlm(hf: GPT2LMHeadModel, model: GPT) -> None:
    sd = hf.state_dict()
    out = {
        "tok_emb.weight": sd["transformer.wte.weight"],
        "pos_emb.weight": sd["transformer.wpe.weight"],
    }
    for i in range(model.config.n_layers):
        p = f"transformer.h.{i}."
        q = f"blocks.{i}."
        for ours, theirs in (("norm1", "ln_1"), ("norm2", "ln_2")):
            out[q + ours + ".weight"] = sd[p + theirs + ".weight"]
            out[q + ours + ".bias"] = sd[p + theirs + ".bias"]
        for ours, theirs in (
            ("attn.qkv", "attn.c_attn"),
            ("attn.proj", "attn.c_proj"),
            ("mlp.fc", "mlp.c_fc"),
            ("mlp.proj", "mlp.c_proj"),
        ):
            out[q + ours + ".weight"] = sd[p + theirs + ".weight"].t()  # Conv1D stores (in, out)
            out[q + ours + ".bias"] = sd[p + theirs + ".bias"]
    out["norm.weight"] = sd["transformer.ln_f.weight"]
    out["norm.bias"] = sd["transformer.ln_f.bias"]
    model.load_state_dict(out, strict=True)


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
    _gpt2_into_buildlm(hf, model)
    idx = torch.randint(0, 101, (3, 24))
    with torch.no_grad():
        expected = hf(input_ids=idx).logits
        got = model(idx)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _llama_into_buildlm(hf: torch.nn.Module, model: GPT) -> None:
    sd = hf.state_dict()
    out = {
        "tok_emb.weight": sd["model.embed_tokens.weight"],
        "norm.weight": sd["model.norm.weight"],
        "lm_head.weight": sd["lm_head.weight"],
    }
    for i in range(model.config.n_layers):
        p, q = f"model.layers.{i}.", f"blocks.{i}."
        out[q + "attn.qkv.weight"] = torch.cat(
            [sd[p + f"self_attn.{n}_proj.weight"] for n in ("q", "k", "v")]
        )
        out[q + "attn.proj.weight"] = sd[p + "self_attn.o_proj.weight"]
        if model.config.qk_norm:
            out[q + "attn.q_norm.weight"] = sd[p + "self_attn.q_norm.weight"]
            out[q + "attn.k_norm.weight"] = sd[p + "self_attn.k_norm.weight"]
        out[q + "norm1.weight"] = sd[p + "input_layernorm.weight"]
        out[q + "norm2.weight"] = sd[p + "post_attention_layernorm.weight"]
        for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            out[q + f"mlp.{ours}.weight"] = sd[p + f"mlp.{theirs}.weight"]
    model.load_state_dict(out, strict=True)


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
    _llama_into_buildlm(hf, model)
    idx = torch.randint(0, 97, (2, 32))
    with torch.no_grad():
        expected = hf(input_ids=idx).logits
        got = model(idx)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
