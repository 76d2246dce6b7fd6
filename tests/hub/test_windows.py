"""Sliding windows from and to Hugging Face: Mistral, and windowed Qwen2/Qwen3.

transformers models built from their config classes with random weights, saved offline; load_hf
must give the same logits (fp32, atol 1e-5) and the same greedy tokens, with windows shorter
than the prompt, and save_hf must write a folder transformers computes the same logits from.
"""

import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from buildlm.hub import load_hf, save_hf
from buildlm.hub.hf_config import config_from_hf
from buildlm.infer import Engine, generate

NO_SPECIAL = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)
SHAPE = dict(
    vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
)  # fmt: skip
QWEN_WINDOW = dict(use_sliding_window=True, sliding_window=5)
# name: (config class, model class, overrides). Windows of 1, 5 and 7 < the 24-token prompt.
CASES = {
    "mistral-gqa2-w5": (MistralConfig, MistralForCausalLM, dict(sliding_window=5)),
    "mistral-gqa4-odd": (MistralConfig, MistralForCausalLM, dict(
        vocab_size=89, hidden_size=48, intermediate_size=72, num_hidden_layers=3,
        num_attention_heads=8, num_key_value_heads=2, head_dim=8, sliding_window=7,
        tie_word_embeddings=True)),
    "mistral-mha-w1": (MistralConfig, MistralForCausalLM, dict(
        num_key_value_heads=4, sliding_window=1)),
    "mistral-no-window": (MistralConfig, MistralForCausalLM, dict(sliding_window=None)),
    "mistral-wide-window": (MistralConfig, MistralForCausalLM, dict(sliding_window=4096)),
    "qwen2-mixed": (Qwen2Config, Qwen2ForCausalLM, dict(
        **QWEN_WINDOW, num_hidden_layers=3, max_window_layers=1)),
    "qwen3-layer-types": (Qwen3Config, Qwen3ForCausalLM, dict(
        **QWEN_WINDOW, head_dim=16,
        layer_types=["sliding_attention", "full_attention"])),
}  # fmt: skip


def _hf(case: str, attn: str = "eager") -> torch.nn.Module:
    config_cls, model_cls, overrides = CASES[case]
    cfg = config_cls(**NO_SPECIAL, **{**SHAPE, **overrides})
    torch.manual_seed(len(case))
    model = model_cls._from_config(cfg, attn_implementation=attn).eval()
    gen = torch.Generator().manual_seed(len(case))
    with torch.no_grad():  # norms off ones
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _ids(vocab: int, shape=(2, 24)) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(1))


def _hf_greedy(model: torch.nn.Module, idx: torch.Tensor, n: int) -> torch.Tensor:
    """transformers' greedy decoding of ``n`` tokens. With a window of 1 its sliding cache
    (transformers 5.x) decodes other tokens than its own full forward passes do; there the
    reference recomputes every step (``use_cache=False``)."""
    with torch.no_grad():
        return model.generate(
            idx, attention_mask=torch.ones_like(idx), do_sample=False, max_new_tokens=n,
            min_new_tokens=n, pad_token_id=0, use_cache=model.config.sliding_window != 1,
        )  # fmt: skip


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("case", CASES)
def test_logits_and_greedy_tokens_match_transformers(case, attn, tmp_path):
    hf = _hf(case, attn)
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    window = hf.config.sliding_window
    assert model.config.sliding_window == window
    if hf.config.model_type != "mistral" and window is not None:
        assert model.config.layer_types == hf.config.layer_types
    idx = _ids(hf.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(input_ids=idx).logits, atol=1e-5, rtol=1e-5)
    prompt = idx[:1, :12]
    theirs = _hf_greedy(hf, prompt, 30).tolist()
    assert generate(model, prompt, 30, temperature=0).tolist() == theirs
    engine = Engine(model)
    out = engine.generate([prompt[0].tolist()], max_new_tokens=30, temperature=0)[0]
    assert prompt[0].tolist() + out.token_ids == theirs[0]


@pytest.mark.parametrize("case", CASES)
def test_save_hf_round_trip(case, tmp_path):
    hf = _hf(case)
    hf.save_pretrained(tmp_path / "in")
    model, _ = load_hf(tmp_path / "in")
    save_hf(model, None, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    windowless = case == "mistral-no-window"  # computes what a Llama does, and says so
    assert written["model_type"] == ("llama" if windowless else hf.config.model_type)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "out", attn_implementation="eager")
    assert getattr(again.config, "sliding_window", None) == hf.config.sliding_window
    idx = _ids(hf.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(input_ids=idx).logits, model(idx), atol=1e-5, rtol=1e-5)
    reloaded, _ = load_hf(tmp_path / "out")
    assert reloaded.config == model.config


def test_explicit_null_window_is_no_window():
    """MistralConfig's default window is 4096; a file that says null means no window at all."""
    cfg = config_from_hf({"model_type": "mistral", **SHAPE, "sliding_window": None})
    assert cfg.sliding_window is None and set(cfg.layer_types) == {"full_attention"}
    assert config_from_hf({"model_type": "mistral", **SHAPE}).sliding_window == 4096
