"""Checks for stage 4 (self-attention): your modules against buildlm's and PyTorch's attention.

Each ``check_*`` builds your class with small sizes, runs it next to a reference and raises
``AssertionError`` saying what was expected, what came out, and a hint. The references:

- the formula itself, softmax(Q K^T / sqrt(d)) V, written out here;
- ``torch.nn.functional.scaled_dot_product_attention`` (PyTorch's attention);
- ``buildlm.model.attention``: ``causal_attention`` and the ``CausalSelfAttention`` module,
  whose weights your ``MultiHeadAttention`` loads with ``load_state_dict``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from buildlm.model import ModelConfig
from buildlm.model.attention import CausalSelfAttention, causal_attention


def _same(what: str, got: torch.Tensor, expected: torch.Tensor, hint: str, atol: float = 1e-5):
    """Raise a helpful AssertionError unless ``got`` has ``expected``'s shape and values."""
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(got).__name__}. {hint}")
    if got.shape != expected.shape:
        raise AssertionError(
            f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}. {hint}"
        )
    if not torch.allclose(got, expected, atol=atol):
        gap = (got - expected).abs().max().item()
        raise AssertionError(
            f"{what}: values differ by up to {gap:.3g}.\nexpected[0, :3]:\n{expected[0, :3]}\n"
            f"got[0, :3]:\n{got[0, :3]}\nHint: {hint}"
        )


def _project(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return module.query(x), module.key(x), module.value(x)


def check_self_attention(SelfAttention) -> None:
    """SelfAttention(d_in, d_out): every token attends to every token, no mask."""
    torch.manual_seed(0)
    module = SelfAttention(6, 4)
    for name in ("query", "key", "value"):
        layer = getattr(module, name, None)
        assert isinstance(layer, torch.nn.Linear), (
            f"expected an nn.Linear attribute {name!r} (d_in -> d_out), found {layer!r}"
        )
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        got = module(x)
        q, k, v = _project(module, x)
        by_formula = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(4), dim=-1) @ v
        by_torch = F.scaled_dot_product_attention(q, k, v)
    hint = "scores = q @ k.transpose(-2, -1) / sqrt(d_out); softmax over the last axis (the keys)."
    _same("SelfAttention vs the formula", got, by_formula, hint)
    _same("SelfAttention vs F.scaled_dot_product_attention", got, by_torch, hint)
    print("SelfAttention: equal to the formula and to F.scaled_dot_product_attention")


def check_causal_attention(CausalAttention) -> None:
    """CausalAttention(d_in, d_out, context_length, dropout): mask buffer, attention dropout."""
    torch.manual_seed(0)
    module = CausalAttention(6, 4, context_length=8, dropout=0.0).eval()
    buffers = dict(module.named_buffers())
    assert "mask" in buffers, (
        f"expected a buffer named 'mask' (self.register_buffer('mask', ...)), found buffers "
        f"{sorted(buffers)}. A buffer moves with .to(device) but is not trained."
    )
    assert buffers["mask"].shape == (8, 8), (
        f"the mask should be (context_length, context_length) = (8, 8), got "
        f"{tuple(buffers['mask'].shape)}; forward crops it to the input's T"
    )
    assert not any(p is buffers["mask"] for p in module.parameters()), "the mask must not train"
    x = torch.randn(2, 5, 6)  # T = 5 < context_length: the mask must be cropped
    with torch.no_grad():
        got = module(x)
        q, k, v = _project(module, x)
        by_buildlm, _ = causal_attention(q[:, None], k[:, None], v[:, None])  # one head
        by_torch = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    hint = (
        "fill the scores above the diagonal (key after query) with -inf before the softmax, "
        "using self.mask[:T, :T]."
    )
    _same("CausalAttention vs buildlm's causal_attention", got, by_buildlm[:, 0], hint)
    _same("CausalAttention vs F.scaled_dot_product_attention(is_causal=True)", got, by_torch, hint)

    later = x.clone()
    later[:, 3:] += 1.0  # change the future of positions 0..2
    with torch.no_grad():
        moved = (module(later) - got).abs().amax(dim=(0, 2))  # (T,)
    assert (moved[:3] == 0).all(), (
        f"changing positions 3.. changed the outputs at positions 0..2 by {moved[:3].tolist()}: "
        "a token sees the future. Hint: the mask must hide keys j > i."
    )

    noisy = CausalAttention(6, 4, context_length=8, dropout=0.5)
    noisy.load_state_dict(module.state_dict())
    noisy.train()
    torch.manual_seed(1)
    with torch.no_grad():
        a, b = noisy(x), noisy(x)
        noisy.eval()
        c = noisy(x)
    assert not torch.allclose(a, b), (
        "with dropout=0.5 in training mode two runs gave the same output. Hint: apply "
        "self.dropout (nn.Dropout) to the attention weights before multiplying by v."
    )
    _same("CausalAttention(dropout=0.5).eval() (dropout is off in eval mode)", c, got, "use nn.Dropout")
    print("CausalAttention: mask buffer, equal to buildlm and to SDPA, causal, dropout only when training")


def check_multi_head_attention(MultiHeadAttention) -> None:
    """MultiHeadAttention(d_model, n_heads, context_length, dropout) loads buildlm's weights."""
    torch.manual_seed(0)
    mine = MultiHeadAttention(12, 3, context_length=16, dropout=0.0).eval()
    config = ModelConfig(vocab_size=10, context_length=16, d_model=12, n_heads=3, n_layers=1)
    reference = CausalSelfAttention(config).eval()
    with torch.no_grad():  # weights large enough that the heads differ clearly
        for p in reference.parameters():
            p.normal_(std=0.5)
    wanted = sorted(reference.state_dict())
    have = sorted(mine.state_dict())
    assert have == wanted, (
        f"your state_dict holds {have}, buildlm's holds {wanted}. Hint: one nn.Linear 'qkv' "
        "(d_model -> 3 * d_model, queries then keys then values) and one 'proj'; register the "
        "mask with persistent=False (it is computed from the config, never saved)."
    )
    mine.load_state_dict(reference.state_dict())
    x = torch.randn(2, 7, 12)
    with torch.no_grad():
        got = mine(x)
        expected, _ = reference(x)
        q, k, v = reference.qkv(x).split(12, dim=-1)  # (B, T, 12) each
        q, k, v = (t.view(2, 7, 3, 4).transpose(1, 2) for t in (q, k, v))  # (B, H, T, 4)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, 4)
        by_torch = reference.proj(z.transpose(1, 2).reshape(2, 7, 12))
    hint = (
        "split the last axis into (n_heads, head_dim) with view, then transpose to "
        "(B, H, T, head_dim); after attention transpose back and reshape to (B, T, d_model) "
        "before proj. Scale by sqrt(head_dim), not sqrt(d_model)."
    )
    _same("MultiHeadAttention vs buildlm's CausalSelfAttention (same weights)", got, expected, hint)
    _same("MultiHeadAttention vs F.scaled_dot_product_attention per head", got, by_torch, hint)
    print("MultiHeadAttention: same weights as buildlm's CausalSelfAttention, same outputs, "
          "and equal to PyTorch's attention")


def check_changed_positions(changed_positions, module, T: int, d: int) -> None:
    """changed_positions(module, x, t) is [t, ..., T-1] for a causal module, all for a mixing one."""
    torch.manual_seed(0)
    x = torch.randn(2, T, d)
    for t in range(T):
        got = changed_positions(module, x, t)
        assert list(got) == list(range(t, T)), (
            f"changing position {t} should change the outputs at {list(range(t, T))}, you "
            f"report {got}. Hint: compare the outputs position by position (max over batch "
            "and features) and list the positions whose difference is not zero."
        )

    def mixes_everything(x: torch.Tensor) -> torch.Tensor:  # every output sees every input
        return x.mean(dim=1, keepdim=True).expand_as(x)

    got = changed_positions(mixes_everything, x, T - 1)
    assert list(got) == list(range(T)), (
        f"for a module whose every output is the mean of all inputs, changing the last position "
        f"changes all {T} outputs; you report {got}. Measure, do not assume causality."
    )
    print(f"changed_positions: causal at every one of the {T} positions, and it tells a "
          "non-causal module apart")
