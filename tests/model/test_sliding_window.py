"""Sliding-window attention: a local layer sees exactly the last ``sliding_window`` positions.

Checked in both attention paths (explicit and SDPA), with keys cached before the queries, and in
left-padded batches (the Engine's key mask), where pad slots must not count toward the window.
"""

import pytest
import torch

from buildlm.infer.kvcache import StaticKVCache
from buildlm.model import GPT, ModelConfig
from buildlm.model.sliding_window import sliding_causal_mask, sliding_padding_mask

LLAMA = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_heads=2)


def _config(**kw) -> ModelConfig:
    base = dict(vocab_size=50, context_length=32, d_model=32, n_layers=2, n_heads=4, **LLAMA)
    return ModelConfig(**{**base, **kw})


def test_layer_types_resolve_once():
    assert _config().layer_types == ["full_attention"] * 2
    assert _config(sliding_window=4).layer_types == ["sliding_attention"] * 2
    mixed = _config(sliding_window=4, layer_types=["sliding_attention", "full_attention"])
    assert [mixed.layer_window(i) for i in range(2)] == [4, None]
    assert ModelConfig.from_dict(mixed.to_dict()) == mixed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(sliding_window=0), "sliding_window must be a positive integer"),
        (dict(sliding_window=4, layer_types=["sliding_attention"]), "names 1 layers"),
        (dict(sliding_window=4, layer_types=["local", "full_attention"]), "unknown"),
        (dict(layer_types=["sliding_attention"] * 2), "no sliding_window"),
        (dict(rope_local_theta=-1.0), "rope_local_theta must be positive"),
        (dict(position="learned", rope_local_theta=1e4), "needs position='rope'"),
    ],
)
def test_bad_window_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_mask_matches_the_hugging_face_definition():
    """transformers: key j is visible to query i when j <= i and j > i - sliding_window."""
    for q_len, k_len, window in [(6, 6, 1), (6, 6, 3), (2, 9, 4), (1, 9, 9), (5, 5, 7)]:
        i = torch.arange(k_len - q_len, k_len)[:, None]
        j = torch.arange(k_len)[None, :]
        expected = (j <= i) & (j > i - window)
        assert torch.equal(sliding_causal_mask(q_len, k_len, window), expected)


def test_padded_mask_counts_only_real_keys():
    key_mask = torch.tensor([[False, False, True, True, True, True]])
    mask = sliding_padding_mask(key_mask, 6, 0, window=2)[0, 0]
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[0, 0] = expected[1, 1] = True  # pad queries see themselves only
    for i in range(2, 6):
        expected[i, max(2, i - 1) : i + 1] = True
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
@pytest.mark.parametrize("kind", ["sliding_attention", "full_attention"])
def test_a_local_layer_forgets_tokens_older_than_its_window(attention, kind):
    window, t = 4, 12
    torch.manual_seed(0)
    cfg = _config(n_layers=1, sliding_window=window, layer_types=[kind], attention=attention)
    model = GPT(cfg).eval()
    idx = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        base = model(idx)[:, t]
        old = idx.clone()
        old[:, : t - window + 1] = (old[:, : t - window + 1] + 1) % 50  # every token before the window
        inside = idx.clone()
        inside[:, t - window + 1] = (inside[:, t - window + 1] + 1) % 50  # the oldest one in it
        changed_old, changed_inside = model(old)[:, t], model(inside)[:, t]
    assert not torch.allclose(changed_inside, base)
    if kind == "sliding_attention":
        torch.testing.assert_close(changed_old, base, atol=0, rtol=0)
    else:
        assert not torch.allclose(changed_old, base)


LAYOUTS = [
    dict(sliding_window=3),
    dict(sliding_window=5, layer_types=["sliding_attention", "full_attention"]),
    dict(sliding_window=4, rope_local_theta=500.0, n_layers=3,
         layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
]  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_explicit_and_sdpa_paths_agree(layout):
    torch.manual_seed(0)
    fast = GPT(_config(**layout)).eval()
    slow = GPT(_config(**layout, attention="manual")).eval()
    slow.load_state_dict(fast.state_dict())
    idx = torch.randint(0, 50, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(fast(idx), slow(idx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_cached_decoding_past_the_window_equals_full_forward(layout, attention):
    torch.manual_seed(0)
    model = GPT(_config(**layout, attention=attention)).eval()
    idx = torch.randint(0, 50, (2, 20))
    cache = StaticKVCache.for_model(model, 2)
    with torch.no_grad():
        full = model(idx)
        pieces = [model(idx[:, :6], cache), model(idx[:, 6:9], cache)]  # prefill, then a chunk
        pieces += [model(idx[:, t : t + 1], cache) for t in range(9, 20)]  # one at a time
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_left_padded_rows_compute_what_they_would_alone(layout, attention):
    torch.manual_seed(0)
    model = GPT(_config(**layout, attention=attention)).eval()
    lengths, width = [14, 9], 14
    rows = [torch.randint(0, 50, (n,)) for n in lengths]
    ids = torch.zeros(2, width, dtype=torch.long)
    key_mask = torch.zeros(2, width, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = row
        key_mask[i, width - len(row) :] = True
    positions = (key_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    cache = StaticKVCache.for_model(model, 2)
    with torch.no_grad():
        padded = model(ids, cache, positions, key_mask)
        step = torch.tensor([[7], [11]])
        key_mask = torch.cat([key_mask, torch.ones(2, 1, dtype=torch.bool)], dim=1)
        next_logits = model(step, cache, positions[:, -1:] + 1, key_mask)
        for i, row in enumerate(rows):
            alone = model(torch.cat([row, step[i]])[None])
            torch.testing.assert_close(padded[i, width - len(row) :], alone[0, :-1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(next_logits[i, 0], alone[0, -1], atol=1e-5, rtol=1e-5)


def test_local_layers_rotate_with_their_own_base():
    """rope_local_theta gives local layers their own RoPE: with a window that hides nothing,
    a model whose every layer is local and rotates with base b equals a global one with base b."""
    torch.manual_seed(0)
    local = GPT(_config(sliding_window=32, rope_theta=1e6, rope_local_theta=300.0)).eval()
    plain = GPT(_config(rope_theta=300.0)).eval()
    plain.load_state_dict(local.state_dict())
    idx = torch.randint(0, 50, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(local(idx), plain(idx), atol=1e-6, rtol=1e-6)


def test_flops_count_only_the_keys_a_local_layer_sees():
    """Per token, a local layer's q k^T and weights @ v cover min(T, window) keys, not T: the
    attention term 12 * d_attn * span (forward + backward) shrinks by (T - window) for it."""
    d_attn = 4 * (32 // 4)
    full = GPT(_config())
    mixed = GPT(_config(sliding_window=8, layer_types=["sliding_attention", "full_attention"]))
    assert full.flops_per_token(32) - mixed.flops_per_token(32) == 12 * d_attn * (32 - 8)
    assert full.flops_per_token(6) == mixed.flops_per_token(6)  # shorter than the window
