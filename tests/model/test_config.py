"""ModelConfig: validation, presets, serialisation."""

import json
from importlib.resources import files

import pytest
import torch

from buildlm.model import GPT, ModelConfig
from buildlm.model.config import swiglu_hidden_size


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 100, "n_heads": 3}, "not divisible by n_heads"),
        ({"n_heads": 4, "n_kv_heads": 3}, "not divisible by n_kv_heads"),
        ({"norm": "batchnorm"}, "unknown ModelConfig.norm 'batchnorm'"),
        ({"position": "alibi"}, "unknown ModelConfig.position"),
        ({"mlp": "relu"}, "unknown ModelConfig.mlp"),
        ({"norm_placement": "middle"}, "unknown ModelConfig.norm_placement"),
        ({"qk_norm_scope": "row"}, "unknown ModelConfig.qk_norm_scope"),
        ({"norm_offset": 1.0}, "norm_offset=1.0 needs norm=.rmsnorm."),
        ({"attn_logit_softcap": 0}, "attn_logit_softcap must be a positive number"),
        ({"attention": "flash"}, "unknown ModelConfig.attention"),
        ({"vocab_size": 0}, "vocab_size must be a positive integer"),
        ({"n_layers": -1}, "n_layers must be a positive integer"),
        ({"context_length": 2.5}, "context_length must be a positive integer"),
        ({"d_ff": 0}, "d_ff must be a positive integer below 2\\*\\*31 or None"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"norm_eps": 0.0}, "norm_eps must be positive"),
        ({"position": "rope", "d_model": 36, "n_heads": 4}, "even head_dim"),
    ],
)
def test_invalid_configs_name_the_value(overrides, message):
    base = dict(vocab_size=64, context_length=16, d_model=32, n_layers=1, n_heads=4)
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**base, **overrides})


def test_automatic_settings_are_resolved_to_numbers():
    shape = dict(vocab_size=10, context_length=8, d_model=64, n_layers=1, n_heads=4, bias=False)
    cfg = ModelConfig(**shape)
    assert (cfg.n_kv_heads, cfg.head_dim, cfg.d_ff, cfg.qkv_bias) == (4, 16, 256, False)
    assert cfg.to_dict()["n_kv_heads"] == 4  # config.json holds what the network uses
    swiglu = ModelConfig(
        vocab_size=10, context_length=8, d_model=4096, n_layers=1, n_heads=32, mlp="swiglu"
    )
    assert swiglu.d_ff == 11008  # Llama-2 7B's published hidden size
    assert swiglu_hidden_size(512) == 1536
    spelled_out = ModelConfig(**shape, n_kv_heads=4, head_dim=16, d_ff=256, qkv_bias=False)
    assert spelled_out == cfg  # the same network, however it is spelled


# A config.json "model" as buildlm wrote it before the automatic sizes were resolved: None for
# "automatic" and the old name d_head (this is the shipped shakespeare-small model's).
OLD_STYLE = dict(
    vocab_size=4096, context_length=128, d_model=128, n_layers=4, n_heads=4, n_kv_heads=None,
    d_ff=None, d_head=None, dropout=0.0, bias=True, qkv_bias=None, norm="layernorm",
    norm_eps=1e-05, position="learned", rope_theta=10000.0, rope_scaling=None, mlp="gelu",
    norm_placement="pre", tie_embeddings=True, qk_norm=False, attention="sdpa", init_std=0.02,
)  # fmt: skip


def test_old_style_config_dicts_load_to_the_same_config():
    old = ModelConfig.from_dict(OLD_STYLE)
    assert (old.n_kv_heads, old.d_ff, old.head_dim, old.qkv_bias) == (4, 512, 32, True)
    new_style = old.to_dict()
    assert "d_head" not in new_style and new_style["head_dim"] == 32
    assert ModelConfig.from_dict(new_style) == old
    assert ModelConfig(**new_style) == old  # asdict -> ModelConfig(**d) round-trips
    explicit = ModelConfig.from_dict({**OLD_STYLE, "d_head": 16, "n_heads": 8, "n_kv_heads": 2})
    assert (explicit.head_dim, explicit.n_kv_heads) == (16, 2)


def test_the_shipped_model_config_loads_unchanged():
    shipped = files("buildlm") / "pretrained" / "shakespeare-small" / "config.json"
    saved = json.loads(shipped.read_text(encoding="utf-8"))["model"]
    assert saved["d_head"] is None and saved["n_kv_heads"] is None  # written before the change
    assert ModelConfig.from_dict(saved) == ModelConfig.from_dict(OLD_STYLE)
    tiny = ModelConfig.preset("tiny", vocab_size=4096, context_length=128)
    assert ModelConfig.from_dict(saved) == tiny


def test_unknown_preset_lists_names():
    with pytest.raises(ValueError, match="gpt2-124m.*tiny"):
        ModelConfig.preset("gpt5")


def test_preset_overrides_and_roundtrip():
    cfg = ModelConfig.preset("tiny", dropout=0.1, n_layers=2)
    assert cfg.dropout == 0.1 and cfg.n_layers == 2
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig field.*'n_layer'"):
        ModelConfig.from_dict({**cfg.to_dict(), "n_layer": 3})


def test_gpt2_124m_parameter_count():
    with torch.device("meta"):
        model = GPT(ModelConfig.preset("gpt2-124m"))
    assert model.num_params() == 124_439_808  # GPT-2 small, tied head
    assert model.num_params(non_embedding=True) == 124_439_808 - 50257 * 768 - 1024 * 768


@pytest.mark.parametrize("name", ModelConfig.presets())
def test_every_preset_builds(name):
    cfg = ModelConfig.preset(name)
    with torch.device("meta"):
        model = GPT(cfg)
    logits = model(torch.zeros(1, 4, dtype=torch.long, device="meta"))
    assert logits.shape == (1, 4, cfg.vocab_size)


def test_cpu_preset_sizes():
    with torch.device("meta"):
        tiny = GPT(ModelConfig.preset("tiny"))
        small = GPT(ModelConfig.preset("small"))
    assert 0.8e6 < tiny.num_params() < 1.2e6
    assert 9e6 < small.num_params(non_embedding=True) < 12e6
