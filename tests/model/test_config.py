"""ModelConfig: validation, presets, serialisation."""

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
        ({"norm_placement": "sandwich"}, "unknown ModelConfig.norm_placement"),
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


def test_defaults_resolve():
    cfg = ModelConfig(vocab_size=10, context_length=8, d_model=64, n_layers=1, n_heads=4)
    assert cfg.kv_heads == 4 and cfg.head_dim == 16 and cfg.ff_dim == 256
    swiglu = ModelConfig(
        vocab_size=10, context_length=8, d_model=4096, n_layers=1, n_heads=32, mlp="swiglu"
    )
    assert swiglu.ff_dim == 11008  # Llama-2 7B's published hidden size
    assert swiglu_hidden_size(512) == 1536


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
