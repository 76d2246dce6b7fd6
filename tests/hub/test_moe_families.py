"""Mixtral, Qwen2-MoE and Qwen3-MoE folders load with transformers' logits and greedy tokens,
and save_hf writes folders transformers loads with the same logits (fp32, random weights)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from buildlm.hub import load_hf, save_hf
from buildlm.infer import generate
from buildlm.model.moe import MoE

# Odd sizes, GQA ratios, top-1/top-2/top-3, renormalised or not, sparse-step and dense layers.
CASES = {
    "mixtral-top2": ("mixtral", dict(num_local_experts=4, num_experts_per_tok=2)),
    "mixtral-top1-mqa": (
        "mixtral",
        dict(num_local_experts=3, num_experts_per_tok=1, num_key_value_heads=1, intermediate_size=37),
    ),
    "mixtral-window-ok": ("mixtral", dict(num_local_experts=5, sliding_window=64, head_dim=10)),
    "qwen3_moe-norm": (
        "qwen3_moe",
        dict(num_experts=6, num_experts_per_tok=2, moe_intermediate_size=19, norm_topk_prob=True,
             head_dim=12),
    ),  # fmt: skip
    "qwen3_moe-step": (
        "qwen3_moe",
        dict(num_experts=5, num_experts_per_tok=3, moe_intermediate_size=11, norm_topk_prob=False,
             decoder_sparse_step=2, num_hidden_layers=3, num_key_value_heads=4),
    ),  # fmt: skip
    "qwen3_moe-dense-layer": (
        "qwen3_moe",
        dict(num_experts=4, num_experts_per_tok=1, moe_intermediate_size=23, mlp_only_layers=[0],
             tie_word_embeddings=True),
    ),  # fmt: skip
    "qwen2_moe-shared": (
        "qwen2_moe",
        dict(num_experts=6, num_experts_per_tok=2, moe_intermediate_size=13,
             shared_expert_intermediate_size=29, num_hidden_layers=3, mlp_only_layers=[1]),
    ),  # fmt: skip
    "qwen2_moe-norm": (
        "qwen2_moe",
        dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=17, norm_topk_prob=True,
             shared_expert_intermediate_size=21, decoder_sparse_step=2, num_key_value_heads=1),
    ),  # fmt: skip
}


def _build(hub, case: str):
    family, overrides = CASES[case]
    shape = hub.llama_shape(hidden_size=40, intermediate_size=44, num_attention_heads=4)
    shape.update(overrides)
    return hub.make_hf(family, seed=len(case), **shape)


def _logits_equal(model, hf) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, hf.config.vocab_size, (3, 21), generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(input_ids=idx).logits, atol=1e-5, rtol=1e-5)
    return idx


@pytest.mark.parametrize("case", CASES)
def test_moe_logits_greedy_and_round_trip_match_transformers(hub, case, tmp_path):
    hf = _build(hub, case)
    hf.save_pretrained(tmp_path / "hf")
    model, _ = load_hf(tmp_path / "hf")
    n_moe = sum(isinstance(b.mlp, MoE) for b in model.blocks)
    assert 0 < n_moe <= model.config.n_layers
    idx = _logits_equal(model, hf)

    prompt = idx[:1, :7]
    assert generate(model, prompt, 20, temperature=0).tolist() == hub.hf_greedy(hf, prompt, 20).tolist()

    save_hf(model, None, tmp_path / "ours")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "ours", experts_implementation="eager")
    again = again.eval()
    assert type(again) is type(hf)
    _logits_equal(model, again)
    reloaded, _ = load_hf(tmp_path / "ours")
    assert reloaded.config == model.config


def test_qwen_moe_sliding_window_is_refused(hub, tmp_path):
    """Mixtral's window loads (tests/hub/test_windows.py); Qwen-MoE's local layers do not."""
    hf = hub.make_hf("qwen3_moe", **hub.llama_shape(use_sliding_window=True, sliding_window=16))
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="use_sliding_window=true"):
        load_hf(tmp_path)


def test_dense_config_is_not_saved_as_moe_and_back(hub, tmp_path):
    hf = _build(hub, "mixtral-top2")
    hf.save_pretrained(tmp_path / "hf")
    model, _ = load_hf(tmp_path / "hf")
    with pytest.raises(ValueError, match="has no experts"):
        save_hf(model, None, tmp_path / "llama", model_type="llama")
