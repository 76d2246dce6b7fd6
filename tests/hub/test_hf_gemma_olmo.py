"""Gemma (1, 2, 3) and OLMo 2: transformers models with random weights load with equal logits and
equal greedy tokens, and buildlm's exports load back in transformers (fp32, several shapes).

Each block detail is checked by a model that needs it: OLMo 2's norms after each sublayer and
its q/k norm over the whole projection; Gemma's (1 + w) RMSNorm, embedding scale and GeGLU;
Gemma 2's sandwich norms, query scale and both soft caps (with caps small enough to bite);
Gemma 3's per-head (1 + w) q/k norms and its local layers' own RoPE base, with windows longer and
shorter than the prompt.
"""

import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
)

from buildlm.hub import load_hf, save_hf
from buildlm.model import GPT

FAMILIES = {
    "olmo2": (Olmo2Config, Olmo2ForCausalLM),
    "gemma": (GemmaConfig, GemmaForCausalLM),
    "gemma2": (Gemma2Config, Gemma2ForCausalLM),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM),
}
BASE = dict(
    vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
    bos_token_id=None, eos_token_id=None, pad_token_id=None,
)  # fmt: skip
GEMMA2 = dict(sliding_window=64, query_pre_attn_scalar=24, head_dim=16)  # window = context
# Gemma 3: local layers 0, 1, 3, 4 (pattern 3), RoPE bases 1e4 local and 1e6 global.
ROPE3 = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
}
GEMMA3 = dict(
    query_pre_attn_scalar=24, head_dim=16, num_hidden_layers=5, rope_parameters=ROPE3,
    sliding_window_pattern=3,
)  # fmt: skip

# (family, overrides): GQA ratios 1, 2 and 4, odd sizes, tied and untied heads.
CASES = {
    "olmo2-gqa2": ("olmo2", dict()),
    "olmo2-gqa1-tied": ("olmo2", dict(num_key_value_heads=4, tie_word_embeddings=True)),
    "olmo2-gqa4-odd": ("olmo2", dict(num_attention_heads=8, num_key_value_heads=2, vocab_size=89,
                                     intermediate_size=77, num_hidden_layers=3)),
    "gemma-gqa2": ("gemma", dict(head_dim=16)),
    "gemma-wide-heads-untied": ("gemma", dict(head_dim=24, num_key_value_heads=1,
                                              tie_word_embeddings=False, vocab_size=103)),
    "gemma2-capped": ("gemma2", dict(**GEMMA2, attn_logit_softcapping=2.0,
                                     final_logit_softcapping=3.0)),
    "gemma2-uncapped-odd": ("gemma2", dict(**GEMMA2 | {"head_dim": 10}, num_attention_heads=6, hidden_size=72,
                                           num_key_value_heads=3, attn_logit_softcapping=None,
                                           final_logit_softcapping=None, intermediate_size=70)),
    "gemma2-window-8": ("gemma2", dict(**GEMMA2 | {"sliding_window": 8}, num_hidden_layers=3)),
    "gemma3-window-64": ("gemma3", dict(**GEMMA3, sliding_window=64)),
    # transformers' Gemma 3 ignores attn_logit_softcapping, and so does buildlm's loader
    "gemma3-window-7-capped": ("gemma3", dict(**GEMMA3, sliding_window=7, num_key_value_heads=1,
                                              attn_logit_softcapping=3.0, final_logit_softcapping=4.0,
                                              tie_word_embeddings=False)),
}  # fmt: skip


def make_hf(hub, case: str) -> torch.nn.Module:
    family, overrides = CASES[case]
    config_cls, model_cls = FAMILIES[family]
    cfg = config_cls(**{**BASE, **overrides})
    torch.manual_seed(len(case))
    model = model_cls._from_config(cfg, attn_implementation="eager").eval()
    hub.perturb(model, seed=len(case), scale=0.2)  # norms and (1 + w) gains well off their start
    return model


@pytest.mark.parametrize("case", CASES)
def test_logits_and_greedy_tokens_match_transformers(hub, case, tmp_path):
    hf = make_hf(hub, case)
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    hub.assert_matches_transformers(model, hf, t=40)


EXPORTED = ["olmo2-gqa4-odd", "gemma-wide-heads-untied", "gemma2-capped", "gemma2-window-8",
            "gemma3-window-7-capped"]  # fmt: skip


@pytest.mark.parametrize("case", EXPORTED)
def test_export_loads_in_transformers_with_equal_logits(hub, case, tmp_path):
    hf = make_hf(hub, case)
    hf.save_pretrained(tmp_path / "src")
    model, _ = load_hf(tmp_path / "src")
    save_hf(model, None, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == hf.config.model_type
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "out", attn_implementation="eager")
    assert type(back).__name__ == config["architectures"][0]
    idx = torch.randint(
        0, hf.config.vocab_size, (2, 33), generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():
        torch.testing.assert_close(
            back.eval()(input_ids=idx).logits, model(idx), atol=1e-5, rtol=1e-5
        )
    again, _ = load_hf(tmp_path / "out")
    assert again.config == model.config
    for name, t in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], t), name


def test_each_detail_changes_the_logits(hub, tmp_path):
    """Switching a detail off gives other logits: the equality above is not a coincidence."""
    hf = make_hf(hub, "gemma2-capped")
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    cfg = model.config.to_dict()
    idx = torch.arange(30)[None] % hf.config.vocab_size
    with torch.no_grad():
        expected = model(idx)
        for change in (
            dict(embed_scale=False),
            dict(query_pre_attn_scalar=None),
            dict(mlp="swiglu"),
            dict(attn_logit_softcap=None),
            dict(final_logit_softcap=None),
        ):
            other = GPT(model.config.__class__(**{**cfg, **change})).eval()
            other.load_state_dict(model.state_dict())
            assert (other(idx) - expected).abs().max() > 1e-3, change
    assert model(idx).abs().max() < 3.0  # the final cap bounds every logit


def test_gemma3_local_layers_rotate_with_their_own_base(hub, tmp_path):
    """The local RoPE base is read and used: one base for every layer gives other logits."""
    hf = make_hf(hub, "gemma3-window-64")
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    cfg = model.config
    assert (cfg.rope_theta, cfg.rope_local_theta) == (1_000_000.0, 10_000.0)
    local, full = "sliding_attention", "full_attention"
    assert cfg.layer_types == [local, local, full, local, local]
    one_base = GPT(cfg.__class__(**{**cfg.to_dict(), "rope_local_theta": None})).eval()
    one_base.load_state_dict(model.state_dict())
    idx = torch.arange(30)[None] % hf.config.vocab_size
    with torch.no_grad():
        assert (one_base(idx) - model(idx)).abs().max() > 1e-3
