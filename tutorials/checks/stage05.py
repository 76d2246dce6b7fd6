"""Checks for stage 5 (the GPT architecture): your pieces against buildlm's modules.

Each check builds buildlm's module, copies its weights into yours with ``load_state_dict`` (so
the parameter names must be buildlm's: they are listed in every message), runs both on the same
input and raises ``AssertionError`` with what was expected, what came out, and a hint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from buildlm.model import GPT, ModelConfig
from buildlm.model.block import Block
from buildlm.model.mlp import GeluMLP
from buildlm.model.norm import LayerNorm as PackageLayerNorm


def _same(what: str, got, expected: torch.Tensor, hint: str, atol: float = 1e-5) -> None:
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(got).__name__}. {hint}")
    if got.shape != expected.shape:
        raise AssertionError(
            f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}. {hint}"
        )
    if not torch.allclose(got, expected, atol=atol):
        gap = (got - expected).abs().max().item()
        raise AssertionError(
            f"{what}: values differ by up to {gap:.3g} (tolerance {atol}).\n"
            f"expected {expected.flatten()[:5]}\ngot      {got.flatten()[:5]}\nHint: {hint}"
        )


def _load(mine: nn.Module, reference: nn.Module, what: str) -> None:
    """``mine.load_state_dict(reference.state_dict())`` with a message naming the keys."""
    wanted, have = set(reference.state_dict()), set(mine.state_dict())
    if wanted != have:
        raise AssertionError(
            f"{what}: the parameter names differ from buildlm's.\nmissing in yours: "
            f"{sorted(wanted - have)}\nnot in buildlm's: {sorted(have - wanted)}\nHint: name the "
            "sub-modules as the docstring says; register masks with persistent=False."
        )
    mine.load_state_dict(reference.state_dict())


def _randomise(module: nn.Module, std: float = 0.3) -> None:
    """Non-trivial weights (norm gains not 1, biases not 0), so every parameter matters."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(std=std).add_(1.0 if p.dim() == 1 else 0.0)


def check_layer_norm(LayerNorm) -> None:
    """LayerNorm(dim, eps) equals buildlm's LayerNorm and torch.nn.LayerNorm."""
    torch.manual_seed(0)
    mine = LayerNorm(16, eps=1e-5)
    reference = PackageLayerNorm(16, eps=1e-5)
    with torch.no_grad():
        reference.weight.normal_()
        reference.bias.normal_()
    _load(mine, reference, "LayerNorm")
    x = torch.randn(3, 4, 16) * 5 + 2
    hint = (
        "mean and variance over the last axis (keepdim=True), the variance dividing by d "
        "(correction=0 / unbiased=False), eps inside the square root, then * weight + bias."
    )
    _same("LayerNorm vs buildlm's LayerNorm", mine(x), reference(x), hint)
    torch_ln = nn.LayerNorm(16, eps=1e-5)
    torch_ln.load_state_dict(reference.state_dict())
    _same("LayerNorm vs torch.nn.LayerNorm", mine(x), torch_ln(x), hint)
    fresh = LayerNorm(16)
    _same("a new LayerNorm's weight (gain)", fresh.weight.data, torch.ones(16), "start at ones")
    _same("a new LayerNorm's bias", fresh.bias.data, torch.zeros(16), "start at zeros")
    assert isinstance(fresh.weight, nn.Parameter), "weight must be an nn.Parameter (it is learned)"
    print("LayerNorm: equal to buildlm's and to torch.nn.LayerNorm")


def check_gelu(gelu) -> None:
    """gelu(x) is GPT-2's tanh approximation, as F.gelu(x, approximate='tanh')."""
    x = torch.linspace(-6, 6, 241)
    got = gelu(x)
    hint = "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))"
    _same("gelu vs F.gelu(approximate='tanh')", got, F.gelu(x, approximate="tanh"), hint, atol=1e-6)
    print("gelu: equal to F.gelu(x, approximate='tanh'), GPT-2's activation")


def check_feed_forward(FeedForward) -> None:
    """FeedForward(d_model, d_ff) loads buildlm's GeluMLP weights and gives its outputs."""
    mine = FeedForward(12, 48)
    reference = GeluMLP(12, 48)
    _randomise(reference)
    _load(mine, reference, "FeedForward")
    x = torch.randn(2, 5, 12)
    with torch.no_grad():
        _same("FeedForward vs buildlm's GeluMLP (same weights)", mine(x), reference(x),
              "fc (d_model -> d_ff), GELU with approximate='tanh', proj (d_ff -> d_model).")  # fmt: skip
    print("FeedForward: same weights as buildlm's GeluMLP, same outputs")


def check_transformer_block(TransformerBlock) -> None:
    """TransformerBlock(config) loads buildlm's Block weights and gives its outputs."""
    config = ModelConfig(vocab_size=10, context_length=16, d_model=12, n_heads=3, n_layers=1)
    mine = TransformerBlock(config).eval()
    reference = Block(config).eval()
    _randomise(reference)
    _load(mine, reference, "TransformerBlock")
    x = torch.randn(2, 7, 12)
    with torch.no_grad():
        expected, _ = reference(x)
        _same("TransformerBlock vs buildlm's Block (same weights)", mine(x), expected,
              "pre-LN: x = x + attn(norm1(x)); then x = x + mlp(norm2(x)). Each branch reads "
              "the normalised stream and adds to the un-normalised one.")  # fmt: skip
    print("TransformerBlock: same weights as buildlm's Block, same outputs")


def check_gpt_init(GPTModel) -> None:
    """GPT-2's initialisation: N(0, 0.02²), residual projections 0.02 / sqrt(2 * n_layers)."""
    config = ModelConfig(vocab_size=100, context_length=32, d_model=128, n_heads=4, n_layers=8)
    torch.manual_seed(0)
    model = GPTModel(config)
    params = dict(model.named_parameters())
    residual_std = config.init_std / math.sqrt(2 * config.n_layers)  # 0.005 here
    expected = {
        "tok_emb.weight": config.init_std,
        "pos_emb.weight": config.init_std,
        "blocks.3.attn.qkv.weight": config.init_std,
        "blocks.3.mlp.fc.weight": config.init_std,
        "blocks.3.attn.proj.weight": residual_std,
        "blocks.3.mlp.proj.weight": residual_std,
    }
    for name, std in expected.items():
        assert name in params, f"no parameter {name!r}; yours are {sorted(params)[:8]}..."
        got = params[name].std().item()
        assert abs(got - std) < 0.1 * std, (
            f"{name}: standard deviation {got:.4f}, expected {std:.4f}. Hint: every Linear and "
            "embedding weight starts as N(0, 0.02²), except the two projections that write into "
            "the residual stream (attn.proj and mlp.proj), which use 0.02 / sqrt(2 * n_layers)."
        )
    for name in ("blocks.0.attn.qkv.bias", "blocks.0.mlp.proj.bias"):
        assert params[name].abs().max() == 0, f"{name} should start at zero"
    assert (params["blocks.0.norm1.weight"] == 1).all(), "norm gains should start at one"
    print(f"GPTModel init: weights N(0, 0.02²), residual projections N(0, {residual_std:.4f}²) "
          f"= 0.02 / sqrt(2 x {config.n_layers}), biases 0, norm gains 1")


def check_gpt_model(GPTModel, reference: GPT, ids: torch.Tensor) -> GPT:
    """GPTModel(config) loads ``reference``'s weights and gives the same logits for ``ids``."""
    mine = GPTModel(reference.config).eval()
    _load(mine, reference, "GPTModel")
    with torch.no_grad():
        got = mine(ids)
        expected = reference(ids)
    _same("GPTModel logits vs buildlm's GPT (same weights)", got, expected,
          "token embedding + position embedding (rows 0..T-1) -> blocks -> final norm -> "
          "logits = x @ tok_emb.weight.T (the tied head).", atol=1e-4)  # fmt: skip
    n_mine = sum(p.numel() for p in mine.parameters())
    assert n_mine == reference.num_params(), (
        f"your model has {n_mine:,} parameters, buildlm's {reference.num_params():,}. Hint: the "
        "head is tied: it reuses tok_emb.weight and adds no parameter."
    )
    print(f"GPTModel: {n_mine:,} parameters, loads buildlm's weights, same logits "
          f"(largest gap {(got - expected).abs().max().item():.1e})")
    return mine
