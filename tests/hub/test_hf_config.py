"""config.json <-> ModelConfig: what maps, and what is refused rather than silently ignored."""

import json

import pytest

from buildlm.hub import load_hf
from buildlm.hub.hf_config import config_from_hf, config_to_hf, hf_model_type
from buildlm.model import ModelConfig

LLAMA = dict(
    model_type="llama", vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
)  # fmt: skip


def test_family_switches():
    gpt2 = config_from_hf({"model_type": "gpt2", "n_embd": 48, "n_head": 4, "n_layer": 2})
    assert (gpt2.position, gpt2.norm, gpt2.mlp, gpt2.bias) == ("learned", "layernorm", "gelu", True)
    assert gpt2.tie_embeddings and gpt2.vocab_size == 50257  # transformers' defaults
    llama = config_from_hf(LLAMA)
    assert (llama.position, llama.norm, llama.mlp, llama.bias) == (
        "rope",
        "rmsnorm",
        "swiglu",
        False,
    )
    assert llama.n_kv_heads == 2 and llama.d_ff == 96 and llama.norm_eps == 1e-6
    qwen2 = config_from_hf({**LLAMA, "model_type": "qwen2"})
    assert qwen2.qkv_bias and not qwen2.bias
    qwen3 = config_from_hf({**LLAMA, "model_type": "qwen3", "head_dim": 32})
    assert qwen3.qk_norm and qwen3.head_dim == 32
    same = config_from_hf({**LLAMA, "model_type": "qwen3", "head_dim": 16})
    assert same == config_from_hf({**LLAMA, "model_type": "qwen3", "head_dim": None})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "gptj"}, "unsupported model_type 'gptj'.*gpt2, llama, qwen2, qwen3"),
        ({"model_type": None}, "unsupported model_type None"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope scaling type 'yarn'"),
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}},
         "rope scaling type 'dynamic'"),
        ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 1e4}},
         r"llama3 rope scaling lacks \['low_freq_factor'"),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mscale": 2.0}},
         r"rope setting\(s\) \['mscale'\]"),
        ({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}},
         "partial_rotary_factor=0.5"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"attention_bias": True}, "attention_bias=True with mlp_bias=False"),
        ({"model_type": "qwen3", "layer_types": ["full_attention", "sliding_attention"]},
         "name local layers, but no sliding window is switched on"),
        ({"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8,
          "layer_types": ["full_attention", "chunked_attention"]}, "unknown ModelConfig.layer_types"),
        ({"model_type": "qwen3", "attention_bias": True}, "attention_bias=true"),
    ],
)  # fmt: skip
def test_unsupported_settings_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        config_from_hf({**LLAMA, **change})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"activation_function": "relu"}, "activation_function='relu'"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
        ({"add_cross_attention": True}, "add_cross_attention=True"),
    ],
)
def test_unsupported_gpt2_settings(change, message):
    with pytest.raises(ValueError, match=message):
        config_from_hf({"model_type": "gpt2", "n_embd": 48, "n_head": 4, **change})


def test_load_hf_reports_config_problems(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder .* not found"):
        load_hf(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="config.json' not found"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json' is not valid JSON"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, "model_type": "t5"}))
    with pytest.raises(ValueError, match="unsupported model_type 't5'"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": {"d_model": 64}}))
    with pytest.raises(ValueError, match="a buildlm checkpoint's, not a Hugging Face one"):
        load_hf(tmp_path)


@pytest.mark.parametrize(
    "cfg",
    [
        dict(position="learned", norm="layernorm", mlp="gelu", bias=True),
        dict(n_kv_heads=2, tie_embeddings=False, rope_scaling={
            "type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_context_length": 16}),
        dict(qkv_bias=True),
        dict(qk_norm=True, head_dim=24),
        dict(bias=True),
    ],
)  # fmt: skip
def test_config_round_trip(cfg):
    llama_like = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    base = dict(vocab_size=77, context_length=32, d_model=48, n_layers=2, n_heads=4, d_ff=80)
    config = ModelConfig(**{**base, **llama_like, **cfg})
    back = config_from_hf(config_to_hf(config))
    assert back == config


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (dict(norm_placement="post"), "norm_placement='post'"),
        (dict(position="sinusoidal"), "position='sinusoidal'"),
        (dict(position="rope", norm="layernorm", mlp="swiglu"), "norm='layernorm'"),
        (dict(n_kv_heads=2), "n_kv_heads=2"),
        (dict(head_dim=8), "head_dim=8"),
    ],
)
def test_configs_without_a_transformers_family(cfg, message):
    config = ModelConfig(vocab_size=77, context_length=32, d_model=48, n_layers=1, n_heads=4, **cfg)
    with pytest.raises(ValueError, match=f"no Hugging Face architecture.*{message}"):
        hf_model_type(config)


def test_explicit_model_type_is_checked():
    config = ModelConfig(vocab_size=77, context_length=32, d_model=48, n_layers=1, n_heads=4)
    assert hf_model_type(config) == "gpt2"
    with pytest.raises(ValueError, match="not a llama network: position='learned'"):
        hf_model_type(config, "llama")
    with pytest.raises(ValueError, match="unsupported model_type 'bert'"):
        hf_model_type(config, "bert")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rope_scaling": {"type": "llama3"}}, "needs position='rope'"),
        ({"position": "rope", "rope_scaling": {"type": "yarn"}}, "supported types: llama3"),
        ({"position": "rope", "rope_scaling": {"type": "llama3", "factor": 8.0}},
         "missing \\['high_freq_factor'"),
        ({"position": "rope", "rope_scaling": {
            "type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
            "original_context_length": 16}}, "high_freq_factor must be larger"),
        ({"position": "rope", "rope_scaling": {
            "type": "llama3", "factor": -1, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_context_length": 16}}, "factor'\\] must be a positive number"),
        ({"qkv_bias": "yes"}, "qkv_bias must be true, false or None"),
        ({"head_dim": 0}, r"head_dim must be a positive integer below 2\*\*31 or None"),
    ],
)  # fmt: skip
def test_new_model_config_fields_are_validated(overrides, message):
    base = dict(vocab_size=64, context_length=16, d_model=32, n_layers=1, n_heads=4)
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**base, **overrides})


def test_head_dim_lifts_the_divisibility_rule():
    shape = dict(vocab_size=64, context_length=16, d_model=36, n_layers=1, n_heads=4)
    cfg = ModelConfig(**shape, head_dim=8)
    assert cfg.head_dim == 8
