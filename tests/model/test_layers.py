"""Norms, activations, MLPs and position encodings against PyTorch / transformers / formulas."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

from buildlm.model.mlp import GeluMLP, SwiGLUMLP
from buildlm.model.norm import LayerNorm, RMSNorm, layer_norm_reference
from buildlm.model.position import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
)


def _randomise(module: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_matches_torch(bias):
    torch.manual_seed(0)
    ours, ref = LayerNorm(48, eps=1e-5, bias=bias), nn.LayerNorm(48, eps=1e-5, bias=bias)
    _randomise(ref)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 7, 48) * 4 + 2
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        layer_norm_reference(x, ref.weight, ref.bias, 1e-5), ref(x), atol=1e-5, rtol=1e-5
    )


def test_rmsnorm_matches_torch():
    torch.manual_seed(0)
    ours, ref = RMSNorm(48, eps=1e-6), nn.RMSNorm(48, eps=1e-6)
    _randomise(ref)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 7, 48) * 3
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    # bf16 input: statistics in float32, output back in bf16
    out = ours(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref(x), atol=0.05, rtol=0.02)


def test_gelu_mlp_is_gpt2_formula():
    torch.manual_seed(0)
    mlp = GeluMLP(16, 64)
    x = torch.randn(2, 5, 16)
    h = mlp.fc(x)
    gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    torch.testing.assert_close(mlp(x), mlp.proj(gelu), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        F.gelu(h, approximate="tanh"), nn.GELU(approximate="tanh")(h), atol=0, rtol=0
    )


def test_swiglu_matches_transformers_llama_mlp():
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=96, mlp_bias=False, hidden_act="silu")
    ref = LlamaMLP(cfg)
    ours = SwiGLUMLP(32, 96, bias=False)
    ours.gate.weight.data.copy_(ref.gate_proj.weight)
    ours.up.weight.data.copy_(ref.up_proj.weight)
    ours.down.weight.data.copy_(ref.down_proj.weight)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=1e-5)


def test_sinusoidal_matches_formula():
    d, t = 16, 50
    table = SinusoidalPositionalEmbedding(t, d)(t)
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)
    assert torch.equal(SinusoidalPositionalEmbedding(t, d)(5, offset=3), table[3:8])


def test_learned_positions_offset():
    emb = LearnedPositionalEmbedding(10, 4)
    assert torch.equal(emb(3, offset=2), emb.weight[2:5])


def test_rope_matches_transformers_llama():
    head_dim, t, theta = 16, 12, 500000.0
    cfg = LlamaConfig(
        hidden_size=64, num_attention_heads=4, max_position_embeddings=t, rope_theta=theta
    )
    if getattr(cfg, "rope_parameters", None) is not None:
        cfg.rope_parameters["rope_theta"] = theta
    ref_rope = LlamaRotaryEmbedding(cfg)
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, t, head_dim), torch.randn(2, 4, t, head_dim)
    cos, sin = ref_rope(q, torch.arange(t)[None].expand(2, t))
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos, sin)
    ours = RotaryEmbedding(head_dim, t, theta=theta)
    torch.testing.assert_close(ours(q), ref_q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours(k), ref_k, atol=1e-5, rtol=1e-5)
    # offset: the last 4 positions rotated alone equal the tail of the full rotation
    torch.testing.assert_close(
        ours(q[:, :, -4:], offset=t - 4), ref_q[:, :, -4:], atol=1e-5, rtol=1e-5
    )


def test_rope_is_a_rotation_with_relative_positions():
    torch.manual_seed(0)
    rope = RotaryEmbedding(32, 64, theta=10000.0)
    x = torch.randn(1, 1, 64, 32)
    # norm-preserving at every position
    torch.testing.assert_close(rope(x).norm(dim=-1), x.norm(dim=-1), atol=1e-4, rtol=1e-5)
    # the same q and k placed at (m, n) give a score that depends only on m - n
    q, k = torch.randn(32), torch.randn(32)

    def score(m: int, n: int) -> float:
        rq = rope(q.expand(1, 1, 64, 32))[0, 0, m]
        rk = rope(k.expand(1, 1, 64, 32))[0, 0, n]
        return float(rq @ rk)

    for offset in (0, 3, 17):
        base = score(offset, 0)
        for shift in (5, 20, 40):
            assert score(offset + shift, shift) == pytest.approx(base, abs=1e-4)
    assert score(10, 0) != pytest.approx(score(3, 0), abs=1e-3)  # but it does depend on m - n


def test_rope_frequency_scaling_hook():
    slow = RotaryEmbedding(8, 16, scaling=lambda inv_freq: inv_freq / 4)
    plain = RotaryEmbedding(8, 16)
    torch.testing.assert_close(slow.cos[4], plain.cos[1])  # 4x slower rotation


def test_rope_tables_start_short_and_grow_to_the_positions_used():
    """A 128K-context model must not pay for 128K rows of cos/sin before reading a token; the
    rows a longer input needs appear on demand and equal transformers' own rotation there."""
    head_dim, theta, context = 16, 1e6, 131072
    rope = RotaryEmbedding(head_dim, context, theta=theta)
    assert rope.cos.shape == (4096, head_dim)  # not (131072, head_dim): 8 MiB, not 128 MiB
    cfg = LlamaConfig(
        hidden_size=64, num_attention_heads=4, max_position_embeddings=context, rope_theta=theta
    )
    if getattr(cfg, "rope_parameters", None) is not None:
        cfg.rope_parameters["rope_theta"] = theta
    ref_rope = LlamaRotaryEmbedding(cfg)
    torch.manual_seed(0)
    q = torch.randn(1, 4, 3, head_dim)
    for offset in (10, 6000, context - 3):  # inside, just past, and at the end of the context
        pos = torch.arange(offset, offset + 3)[None]
        cos, sin = ref_rope(q, pos)
        ref, _ = apply_rotary_pos_emb(q, q, cos, sin)
        torch.testing.assert_close(rope(q, offset=offset), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rope(q, positions=pos), ref, atol=1e-5, rtol=1e-5)
    assert rope.cos.shape == (context, head_dim)  # grown, never past the context
    with pytest.raises(IndexError):  # past the context there is no row to read
        rope(q, positions=torch.tensor([[context]]))

