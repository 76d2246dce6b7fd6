"""Mixture of experts: the grouped fast path equals the readable loop, and the accounting adds up."""

import dataclasses
import math

import pytest
import torch

from buildlm.model import GPT, ModelConfig
from buildlm.model.moe import MoE, router_stats


def _config(**overrides) -> ModelConfig:
    base = dict(
        vocab_size=61, context_length=32, d_model=24, n_layers=3, n_heads=4, n_kv_heads=2,
        bias=False, norm="rmsnorm", position="rope", mlp="swiglu", tie_embeddings=False,
        n_experts=5, n_active_experts=2, moe_d_ff=20,
    )  # fmt: skip
    return ModelConfig(**{**base, **overrides})


def _both_paths(layer: MoE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list, list]:
    outs, grads = [], []
    for reference in (False, True):
        layer.zero_grad()
        layer.use_reference = reference
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        outs.append(y.detach())
        grads.append([xi.grad] + [p.grad.clone() for p in layer.parameters()])
    return outs[0], outs[1], grads[0], grads[1]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(n_active_experts=1, router_renormalize=False),
        dict(router_score="sigmoid", n_active_experts=3),
        dict(mlp="gelu", moe_d_ff=13),
        dict(n_shared_experts=1, shared_expert_d_ff=17, shared_expert_gate=True),
        dict(n_experts=9, n_active_experts=4, n_shared_experts=2),
    ],
)
def test_grouped_experts_equal_the_reference_loop(overrides):
    torch.manual_seed(0)
    layer = GPT(_config(**overrides)).blocks[0].mlp
    assert isinstance(layer, MoE)
    x = torch.randn(3, 7, 24)
    fast, ref, g_fast, g_ref = _both_paths(layer, x)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-6)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_router_ties_and_experts_without_tokens():
    """All-equal scores (a zero router) tie every expert: both paths break ties the same way, and
    the experts that lose every tie get no token, no output and a zero gradient."""
    torch.manual_seed(0)
    layer = GPT(_config(n_experts=6, n_active_experts=2)).blocks[0].mlp
    torch.nn.init.zeros_(layer.router.weight)
    x = torch.randn(2, 5, 24)
    fast, ref, g_fast, g_ref = _both_paths(layer, x)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-6)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    share = layer.last_stats.share
    chosen = share > 0  # every token broke the tie the same way: 2 experts, 4 never used
    assert sorted(share.tolist()) == [0, 0, 0, 0, 0.5, 0.5]
    grad_up = dict(layer.named_parameters())["experts.w_up"].grad
    assert grad_up[~chosen].abs().sum() == 0 and grad_up[chosen].abs().sum() > 0
    # Uniform routing probabilities: the balance loss is exactly 1, the z-loss log(E)^2.
    assert layer.last_stats.balance_loss.item() == pytest.approx(1.0)
    assert layer.last_stats.z_loss.item() == pytest.approx(math.log(6) ** 2)


def test_one_token_reaches_few_experts():
    """A single token (decoding at batch 1) runs through its k experts only."""
    torch.manual_seed(1)
    layer = GPT(_config(n_experts=8, n_active_experts=2)).blocks[0].mlp
    x = torch.randn(1, 1, 24)
    fast, ref, _, _ = _both_paths(layer, x)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-6)
    assert (layer.last_stats.share > 0).sum() == 2


def test_layer_pattern():
    cfg = _config(n_layers=8, moe_first_dense=1, moe_every=2, moe_dense_layers=[5, 5])
    assert [cfg.is_moe_layer(i) for i in range(8)] == [
        False, True, False, True, False, False, False, True,
    ]  # fmt: skip
    assert cfg.moe_dense_layers == [5]
    model = GPT(cfg)
    assert [isinstance(b.mlp, MoE) for b in model.blocks] == [cfg.is_moe_layer(i) for i in range(8)]
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    dense = ModelConfig.preset("tiny")
    assert not any(dense.is_moe_layer(i) for i in range(dense.n_layers))


def test_active_parameters_and_flops():
    """E=5, k=2 costs what E=2, k=2 (every expert active) costs; the total counts all five."""
    torch.manual_seed(0)
    sparse, all_active = GPT(_config()), GPT(_config(n_experts=2))
    per_expert = 3 * 24 * 20
    moe_layers = 3
    assert sparse.num_params() - all_active.num_params() == moe_layers * 3 * per_expert + 3 * 3 * 24
    assert sparse.num_params(active=True) == all_active.num_params() + 3 * 3 * 24  # bigger router
    assert sparse.flops_per_token(16) == all_active.flops_per_token(16) + 6 * 3 * 3 * 24
    dense = GPT(ModelConfig.preset("tiny"))
    assert dense.num_params(active=True) == dense.num_params()


def test_router_stats_average_over_layers():
    torch.manual_seed(0)
    model = GPT(_config(n_layers=4, moe_every=2))
    assert router_stats(model) is None  # no forward yet
    model(torch.randint(0, 61, (2, 9)))
    stats = router_stats(model)
    assert stats.share.shape == (5,) and stats.share.sum().item() == pytest.approx(1.0)
    assert stats.balance_loss.requires_grad and stats.z_loss.item() > 0


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(n_active_experts=6), "more than n_experts"),
        (dict(router_score="relu"), "router_score"),
        (dict(moe_every=0), "moe_every"),
        (dict(n_experts=-1), "n_experts"),
        (dict(moe_d_ff=0), "moe_d_ff"),
    ],
)
def test_bad_moe_config_is_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        _config(**bad)


def test_resolved_widths():
    cfg = _config(moe_d_ff=None, n_shared_experts=2)
    assert cfg.moe_d_ff == cfg.d_ff and cfg.shared_expert_d_ff == 2 * cfg.d_ff
    assert dataclasses.replace(cfg) == cfg
