"""GGUF export and import of the families in `buildlm.hub.gguf_families`: Llama 3 RoPE scaling,
Gemma 1/2/3, OLMo 2, Qwen2-MoE and windowed Mistral.

buildlm -> GGUF -> buildlm gives the same config and exactly the same f32 logits; a transformers
model of each family (random weights, ``save_pretrained``) loaded with ``load_hf`` and sent through
GGUF still computes transformers' logits; the ``gguf`` reader sees the keys and tensors llama.cpp
reads (norms stored as 1 + w for Gemma, the ``rope_freqs`` divisors as transformers computes them);
and what llama.cpp would compute differently is refused. That llama.cpp itself agrees is
benchmarks/gguf_llamacpp.py's check (`test_gguf.test_llamacpp_agrees`).
"""

import gguf
import numpy as np
import pytest
import torch

from buildlm.hub import load_gguf, load_hf, save_gguf
from buildlm.hub.gguf_families import (
    layer_types_from_period,
    llama3_rope_factors,
    rope_scaling_from_gguf,
    swa_period,
)
from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import Tokenizer

LLAMA_LIKE = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False, norm_eps=1e-6)
GEMMA = dict(LLAMA_LIKE, mlp="geglu", norm_offset=1.0, embed_scale=True, qkv_bias=False)
LLAMA3 = dict(type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_context_length=40)  # fmt: skip
LOCAL_GLOBAL = ["sliding_attention", "full_attention", "sliding_attention"]
STYLES = {
    "llama3": dict(LLAMA_LIKE, n_kv_heads=2, head_dim=16, rope_theta=5e5, rope_scaling=LLAMA3),
    "gemma": dict(GEMMA, n_kv_heads=1),
    "gemma2": dict(GEMMA, norm_placement="sandwich", n_kv_heads=2, query_pre_attn_scalar=12,
                   attn_logit_softcap=2.0, final_logit_softcap=3.0, sliding_window=8,
                   layer_types=LOCAL_GLOBAL),
    "gemma3": dict(GEMMA, norm_placement="sandwich", qk_norm=True, head_dim=16, n_kv_heads=1,
                   query_pre_attn_scalar=16, final_logit_softcap=4.0, sliding_window=8,
                   layer_types=["sliding_attention"] * 2 + ["full_attention"], rope_theta=1e6,
                   rope_local_theta=2e4),
    "olmo2": dict(LLAMA_LIKE, norm_placement="branch_post", qk_norm=True, qk_norm_scope="all",
                  tie_embeddings=False, n_kv_heads=2),
    "olmo2-tied": dict(LLAMA_LIKE, norm_placement="branch_post", qk_norm=True, qk_norm_scope="all"),
    "mistral": dict(LLAMA_LIKE, n_kv_heads=2, sliding_window=64, tie_embeddings=False),
    "qwen2_moe": dict(LLAMA_LIKE, qkv_bias=True, n_experts=4, n_active_experts=2, moe_d_ff=32,
                      router_renormalize=False, n_shared_experts=1, shared_expert_d_ff=40,
                      shared_expert_gate=True, tie_embeddings=False),
}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train("the quick brown fox jumps over the lazy dog. Hello world! " * 20, 300)


def _model(overrides: dict, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    base = dict(vocab_size=301, context_length=64, d_model=48, n_layers=3, n_heads=4)
    model = GPT(ModelConfig(**{**base, **overrides})).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # norms off their start, biases off zeros
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _idx(vocab_size: int, t: int = 24) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, t), generator=torch.Generator().manual_seed(3))


def _meta(path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in reader.fields.items() if f.types}
    return meta, {t.name: t for t in reader.tensors}


@pytest.mark.parametrize("style", STYLES)
def test_round_trip_f32_is_exact(style, tokenizer, tmp_path):
    model = _model(STYLES[style])
    save_gguf(model, tokenizer, tmp_path / "m.gguf")
    back, _ = load_gguf(tmp_path / "m.gguf")
    assert back.config == model.config
    idx = _idx(301, t=30)  # longer than the windows of 8
    with torch.no_grad():
        assert torch.equal(back(idx), model(idx))


def _make_hf(hub, case: str) -> torch.nn.Module:
    """A transformers model of ``case`` with random weights (those of a Gemma norm too)."""
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GemmaConfig,
        GemmaForCausalLM,
        Olmo2Config,
        Olmo2ForCausalLM,
    )  # fmt: skip

    rope = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 40}  # fmt: skip
    if case == "llama3":
        return hub.make_hf("llama", **hub.llama_shape(vocab_size=301, rope_parameters=rope))
    if case == "qwen2_moe":
        return hub.make_hf("qwen2_moe", **hub.llama_shape(
            vocab_size=301, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
            shared_expert_intermediate_size=40, norm_topk_prob=False,
        ))  # fmt: skip
    gemma3_rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 2e4},
                   "full_attention": {"rope_type": "default", "rope_theta": 1e6}}  # fmt: skip
    config_cls, model_cls, extra = {
        "gemma": (GemmaConfig, GemmaForCausalLM, dict(head_dim=16)),
        "gemma2": (Gemma2Config, Gemma2ForCausalLM, dict(
            head_dim=16, query_pre_attn_scalar=16, sliding_window=8, attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0, num_hidden_layers=3)),
        "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM, dict(
            head_dim=16, query_pre_attn_scalar=16, sliding_window=7, num_hidden_layers=5,
            sliding_window_pattern=3, rope_parameters=gemma3_rope)),
        "olmo2": (Olmo2Config, Olmo2ForCausalLM, dict()),
    }[case]  # fmt: skip
    shape = dict(hub.llama_shape(vocab_size=301, tie_word_embeddings=case != "olmo2"), **extra)
    shape.pop("rope_theta")
    torch.manual_seed(0)
    cfg = config_cls(**shape, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = model_cls._from_config(cfg, attn_implementation="eager").eval()
    hub.perturb(model)
    return model


@pytest.mark.parametrize("case", ["llama3", "qwen2_moe", "gemma", "gemma2", "gemma3", "olmo2"])
def test_transformers_models_keep_their_logits_through_gguf(hub, case, tokenizer, tmp_path):
    hf = _make_hf(hub, case)
    hf.save_pretrained(tmp_path / "hf")
    model, _ = load_hf(tmp_path / "hf")
    save_gguf(model, tokenizer, tmp_path / "m.gguf")
    back, _ = load_gguf(tmp_path / "m.gguf")
    assert back.config == model.config
    idx = _idx(301)  # 24 positions: longer than the windows
    with torch.no_grad():
        torch.testing.assert_close(back(idx), hf(input_ids=idx).logits, atol=1e-5, rtol=1e-5)


def test_gemma_keys_and_norms_as_llama_cpp_reads_them(tokenizer, tmp_path):
    model = _model(STYLES["gemma2"])
    save_gguf(model, tokenizer, tmp_path / "m.gguf")
    meta, tensors = _meta(tmp_path / "m.gguf")
    assert meta["general.architecture"] == "gemma2"
    expected = {
        "gemma2.attention.sliding_window": 8, "gemma2.attention.sliding_window_pattern": 2,
        "gemma2.attn_logit_softcapping": 2.0, "gemma2.final_logit_softcapping": 3.0,
        "gemma2.rope.freq_base_swa": 10000.0, "gemma2.attention.key_length": 12,
    }  # fmt: skip
    assert {k: meta[k] for k in expected} == expected
    assert "output.weight" not in tensors  # llama.cpp's Gemma reads its head from token_embd
    for ours, theirs in (("blocks.1.norm1", "blk.1.attn_norm"), ("blocks.1.norm_attn_out",
                         "blk.1.post_attention_norm"), ("blocks.1.norm2", "blk.1.ffn_norm"),
                         ("blocks.1.norm_mlp_out", "blk.1.post_ffw_norm"), ("norm", "output_norm")):  # fmt: skip
        stored = torch.from_numpy(np.array(tensors[f"{theirs}.weight"].data))
        w = model.state_dict()[f"{ours}.weight"]
        assert torch.equal(stored, 1 + w)  # what Gemma's (1 + w) RMSNorm multiplies by
    model = _model(STYLES["gemma3"])
    save_gguf(model, tokenizer, tmp_path / "g3.gguf")
    meta, tensors = _meta(tmp_path / "g3.gguf")
    assert meta["gemma3.rope.freq_base_swa"] == 2e4 and meta["gemma3.rope.freq_base"] == 1e6
    assert meta["gemma3.attention.sliding_window_pattern"] == 3
    assert "gemma3.attn_logit_softcapping" not in meta
    assert {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"} <= set(tensors)


def test_period_of_local_and_global_layers():
    assert swa_period(LOCAL_GLOBAL) == 2
    assert swa_period(["full_attention"] * 4) == 1
    assert swa_period(["sliding_attention"] * 4) == 0
    gemma3 = layer_types_from_period(6, 12)
    assert [i for i, t in enumerate(gemma3) if t == "full_attention"] == [5, 11]
    assert swa_period(gemma3) == 6
    assert swa_period(["full_attention", "sliding_attention", "sliding_attention"]) is None


def test_llama3_rope_freqs_are_transformers_divisors(tokenizer, tmp_path):
    """The stored divisors are transformers' own: its unscaled inverse frequencies over its Llama 3
    ones. A file without buildlm's keys (llama.cpp's converter writes none) is matched against
    Llama 3.1's and 3.2's settings."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    model = _model(STYLES["llama3"])
    save_gguf(model, tokenizer, tmp_path / "m.gguf")
    meta, tensors = _meta(tmp_path / "m.gguf")
    stored = torch.from_numpy(np.array(tensors["rope_freqs.weight"].data))
    rope = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 40}  # fmt: skip
    cfg = LlamaConfig(hidden_size=48, num_attention_heads=4, head_dim=16, rope_parameters=rope)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    plain = 1.0 / 5e5 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16)
    torch.testing.assert_close(stored, plain / scaled, rtol=1e-6, atol=0)
    assert len({round(float(x), 4) for x in stored}) == 3  # kept, blended and slowed bands
    assert meta["buildlm.rope_scaling.original_max_position_embeddings"] == 40
    llama31 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}  # fmt: skip
    factors = llama3_rope_factors(5e5, 128, llama31)
    assert rope_scaling_from_gguf({}, factors, 5e5, 128) == {"rope_type": "llama3", **llama31}
    with pytest.raises(ValueError, match="not Llama 3 RoPE scaling with settings buildlm knows"):
        rope_scaling_from_gguf({}, factors * 1.5, 5e5, 128)


def test_own_head_families_write_a_head(tokenizer, tmp_path):
    """llama.cpp's olmo2 and qwen2moe need output.weight: a tied model writes its embedding,
    and reads back tied (`test_round_trip_f32_is_exact`'s olmo2-tied)."""
    save_gguf(_model(STYLES["olmo2-tied"]), tokenizer, tmp_path / "m.gguf")
    _, tensors = _meta(tmp_path / "m.gguf")
    assert np.array_equal(tensors["output.weight"].data, tensors["token_embd.weight"].data)
    save_gguf(_model(STYLES["qwen2_moe"]), tokenizer, tmp_path / "q.gguf")
    meta, tensors = _meta(tmp_path / "q.gguf")
    assert meta["general.architecture"] == "qwen2moe"
    assert meta["qwen2moe.expert_shared_feed_forward_length"] == 40
    assert [int(n) for n in tensors["blk.0.ffn_gate_inp_shexp.weight"].shape] == [48]
    assert [int(n) for n in tensors["blk.0.ffn_up_shexp.weight"].shape] == [48, 40]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(STYLES["gemma"], tie_embeddings=False), "gemma architecture reuses the token embedding"),
        (dict(STYLES["gemma2"], attn_logit_softcap=None), "always caps attention and final logits"),
        (dict(STYLES["gemma2"], query_pre_attn_scalar=24), r"scales queries by 1/sqrt\(12\)"),
        (dict(STYLES["gemma2"], layer_types=["full_attention"] + LOCAL_GLOBAL[:2]),
         "repeats local/global layers with a period"),
        (dict(STYLES["mistral"], sliding_window=8), r"no sliding window, and this one \(8\) is shorter"),
        (dict(STYLES["qwen2_moe"], router_renormalize=True), "does not renormalise"),
        (dict(STYLES["olmo2"], head_dim=16), "needs head_dim x n_heads == d_model"),
        (dict(LLAMA_LIKE, qkv_bias=True, sliding_window=8, layer_types=["sliding_attention"] * 3),
         "qwen2 architecture has no sliding windows"),
    ],
)  # fmt: skip
def test_what_llama_cpp_computes_otherwise_is_refused(overrides, message, tokenizer, tmp_path):
    with pytest.raises(ValueError, match=message):
        save_gguf(_model(overrides), tokenizer, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()
