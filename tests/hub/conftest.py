"""Helpers for the hub tests: tiny transformers models with random weights, saved offline.

Nothing is downloaded. Each model comes from a transformers config class, its weights are moved
off their initial values (a norm left at ones or a bias at zeros would hide a mis-copied
tensor), and ``save_pretrained`` writes it exactly as a Hub folder looks. The helpers are handed
to the tests as fixtures (``hub``), since test modules cannot import one another here.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import transformers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

FAMILIES = {
    "gpt2": (GPT2Config, GPT2LMHeadModel),
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "mixtral": (MixtralConfig, MixtralForCausalLM),
    "qwen2_moe": (Qwen2MoeConfig, Qwen2MoeForCausalLM),
    "qwen3_moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM),
}
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")
# bos/eos unset: transformers' generate must not stop early (buildlm's generate never does).
NO_SPECIAL = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Add noise to every parameter so that no weight keeps its initial value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * scale)


def llama_shape(**overrides) -> dict:
    """A small Llama-family shape (d=64, 2 layers, 4 heads, 2 key/value heads)."""
    shape = dict(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=50000.0,
    )  # fmt: skip
    shape.update(overrides)
    return shape


def gpt2_shape(**overrides) -> dict:
    shape = dict(
        vocab_size=101, n_positions=64, n_embd=48, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    shape.update(overrides)
    return shape


def make_hf(family: str, seed: int = 0, **shape) -> torch.nn.Module:
    """A transformers model of ``family`` with perturbed random weights, in eval mode."""
    config_cls, model_cls = FAMILIES[family]
    rope_theta = shape.pop("rope_theta", None)
    cfg = config_cls(**NO_SPECIAL, **shape)
    if rope_theta is not None:  # transformers 5 keeps rope_theta inside rope_parameters
        if getattr(cfg, "rope_parameters", None) is not None:
            cfg.rope_parameters["rope_theta"] = rope_theta
        else:
            cfg.rope_theta = rope_theta
    torch.manual_seed(seed)
    # MoE families: transformers' per-expert loop (its grouped kernel needs 16-byte-aligned sizes)
    experts = {"experts_implementation": "eager"} if family in MOE_FAMILIES else {}
    model = model_cls._from_config(cfg, attn_implementation="eager", **experts).eval()
    perturb(model, seed)
    return model


def hf_greedy(model: torch.nn.Module, idx: torch.Tensor, n: int) -> torch.Tensor:
    """transformers' greedy decoding of exactly ``n`` new tokens."""
    with torch.no_grad():
        return model.generate(
            idx,
            attention_mask=torch.ones_like(idx),
            do_sample=False,
            max_new_tokens=n,
            min_new_tokens=n,
            pad_token_id=0,
        )


def assert_matches_transformers(model: torch.nn.Module, hf: torch.nn.Module, t: int = 24) -> None:
    """Equal logits (fp32, atol 1e-5) on a random batch of 2 x ``t`` tokens, and equal greedy
    tokens (32 new) from its first 8 tokens, for a buildlm model and its transformers source."""
    from buildlm.infer import generate

    idx = torch.randint(0, hf.config.vocab_size, (2, t), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(input_ids=idx).logits
        got = model(idx)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    prompt = idx[:1, :8]
    ours = generate(model, prompt, 32, temperature=0)
    assert ours.shape == (1, 40)
    assert ours.tolist() == hf_greedy(hf, prompt, 32).tolist()


@pytest.fixture
def hub() -> SimpleNamespace:
    """The helpers above: ``hub.make_hf("llama", **hub.llama_shape())`` and so on."""
    return SimpleNamespace(
        make_hf=make_hf,
        perturb=perturb,
        llama_shape=llama_shape,
        gpt2_shape=gpt2_shape,
        hf_greedy=hf_greedy,
        assert_matches_transformers=assert_matches_transformers,
    )
