"""Attention: explicit formula == PyTorch SDPA == torch.nn.MultiheadAttention; GQA; masks."""

import pytest
import torch
from torch import nn

from buildlm.model import ModelConfig
from buildlm.model.attention import CausalSelfAttention, causal_attention, causal_mask, repeat_kv


def _config(**kw) -> ModelConfig:
    base = dict(vocab_size=32, context_length=16, d_model=32, n_layers=2, n_heads=4)
    return ModelConfig(**{**base, **kw})


def _randomise(module: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def test_causal_mask_with_offset():
    assert torch.equal(causal_mask(3, 3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).bool())
    # two new queries after three cached keys see everything up to their own position
    assert torch.equal(causal_mask(2, 5), torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool())


@pytest.mark.parametrize("bias", [True, False])
def test_manual_and_sdpa_match_torch_multihead_attention(bias):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(32, 4, bias=bias, batch_first=True)
    _randomise(ref)
    attn = CausalSelfAttention(_config(bias=bias))
    attn.qkv.weight.data.copy_(ref.in_proj_weight)  # rows: q, k, v (same layout)
    attn.proj.weight.data.copy_(ref.out_proj.weight)
    if bias:
        attn.qkv.bias.data.copy_(ref.in_proj_bias)
        attn.proj.bias.data.copy_(ref.out_proj.bias)
    x = torch.randn(3, 10, 32)
    future = torch.triu(torch.ones(10, 10, dtype=torch.bool), diagonal=1)  # True = blocked
    expected, expected_weights = ref(
        x, x, x, attn_mask=future, need_weights=True, average_attn_weights=False
    )
    fast, none = attn(x)
    slow, weights = attn(x, need_weights=True)
    assert none is None
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slow, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)
    assert torch.all(weights.masked_select(future) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 10))


def test_gqa_equals_mha_with_repeated_kv_heads():
    """A GQA layer is an MHA layer whose key/value heads are copies shared by query groups."""
    torch.manual_seed(0)
    gqa = CausalSelfAttention(_config(n_kv_heads=2, bias=False))
    mha = CausalSelfAttention(_config(bias=False))
    d, h = 8, 4
    wq, wk, wv = gqa.qkv.weight.data.split([h * d, 2 * d, 2 * d])
    wk_rep = wk.view(2, 1, d, 32).expand(2, 2, d, 32).reshape(h * d, 32)  # kv head j -> q 2j,2j+1
    wv_rep = wv.view(2, 1, d, 32).expand(2, 2, d, 32).reshape(h * d, 32)
    mha.qkv.weight.data.copy_(torch.cat([wq, wk_rep, wv_rep]))
    mha.proj.weight.data.copy_(gqa.proj.weight)
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(gqa(x)[0], mha(x)[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gqa(x, need_weights=True)[0], mha(x)[0], atol=1e-6, rtol=1e-5)


def test_gqa_with_as_many_kv_heads_is_mha():
    torch.manual_seed(0)
    a = CausalSelfAttention(_config(n_kv_heads=4))
    b = CausalSelfAttention(_config())
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(a(x)[0], b(x)[0], atol=0, rtol=0)


def test_repeat_kv_layout():
    x = torch.arange(2 * 3).view(1, 2, 3, 1).float()
    out = repeat_kv(x, 2)
    assert torch.equal(
        out[0, :, :, 0], torch.tensor([[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]]).float()
    )


def test_causal_attention_direct_formula():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 1, 1, 5, 4).unbind(0)
    out, weights = causal_attention(q, k, v)
    for i in range(5):
        s = torch.tensor([float(q[0, 0, i] @ k[0, 0, j]) / 2.0 for j in range(i + 1)])
        w = torch.softmax(s, dim=0)
        torch.testing.assert_close(weights[0, 0, i, : i + 1], w, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out[0, 0, i], w @ v[0, 0, : i + 1], atol=1e-6, rtol=1e-5)
