"""Decoding a sliding-window model: the Engine's cached, batched, padded steps give the tokens
of recomputing every step from scratch, long after the window has moved past the prompt."""

import pytest
import torch

from buildlm.infer import generate
from buildlm.infer.batch import DecodeBatch
from buildlm.infer.beam_search import beam_search
from buildlm.infer.engine import Engine
from buildlm.infer.kvcache import StaticKVCache
from buildlm.infer.requests import SamplingParams
from buildlm.model import GPT, ModelConfig

GREEDY = dict(temperature=0, stop_token_ids=())


def _model(context_length: int = 48) -> GPT:
    """Local, global, local layers (window 5), Gemma-style: local layers with their own RoPE base."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=97, context_length=context_length, d_model=64, n_layers=3, n_heads=4,
        n_kv_heads=2, position="rope", norm="rmsnorm", mlp="swiglu", bias=False,
        sliding_window=5, rope_local_theta=100.0,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    )  # fmt: skip
    model = GPT(cfg).eval()
    with torch.no_grad():  # far from uniform, so greedy choices are not near-ties
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


@pytest.mark.parametrize("static_decode", [False, True])
def test_batched_engine_equals_recomputing_every_step(static_decode):
    model = _model()
    prompts = [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [4], [30, 31, 32, 33, 34, 35]]
    engine = Engine(model, static_decode=static_decode)
    outs = engine.generate(prompts, max_new_tokens=30, **GREEDY)
    for prompt, out in zip(prompts, outs, strict=True):
        reference = generate(model, torch.tensor([prompt]), 30, temperature=0)[0, len(prompt) :]
        assert out.token_ids == reference.tolist()


def test_rows_that_join_and_slide_decode_as_alone():
    """A context of 16 with a window of 5: rows slide, join padded, and the cache is made room in."""
    model = _model(context_length=16)
    first = [([3, 1, 4], SamplingParams(max_new_tokens=30, **GREEDY))]
    later = [
        ([5, 9, 2, 6, 5, 3, 5], SamplingParams(max_new_tokens=20, **GREEDY)),
        ([2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9], SamplingParams(max_new_tokens=25, **GREEDY)),
    ]
    batch = DecodeBatch(model)
    rows = batch.make_rows([p for p, _ in first], [sp for _, sp in first])
    joining = batch.make_rows([p for p, _ in later], [sp for _, sp in later])
    batch.prefill(rows)
    step = 0
    while not all(row.done for row in rows + joining):
        if step == 5:
            batch.add(joining)
        batch.advance(batch.pick())
        batch.decode()
        step += 1
    engine = Engine(model, static_decode=False)
    for row, (prompt, params) in zip(rows + joining, first + later, strict=True):
        assert row.generated == engine.generate([prompt], params)[0].token_ids


def test_cached_beam_search_equals_the_uncached_search():
    model = _model()
    prompt = torch.tensor([[3, 14, 15, 9, 2, 6, 5, 3]])
    uncached = beam_search(model, prompt, 20, 3)
    cache = StaticKVCache.for_model(model, 3, max_len=28)
    assert torch.equal(beam_search(model, prompt, 20, 3, cache=cache), uncached)


def test_local_layers_cache_only_their_window():
    """Decoding 200 tokens past a window of 5: the cache's local layers hold 5 positions each
    (the global one all 256), and the tokens are those of recomputing every step."""
    model = _model(context_length=256)
    cfg = model.config
    prompt = [3, 14, 15, 9, 2, 6, 5, 3, 5, 8]
    batch = DecodeBatch(model)
    (row,) = batch.make_rows([prompt], max_new_tokens=200, **GREEDY)
    batch.prefill([row])
    cache = batch.cache  # room for the prompt and every new token
    while not batch.done:
        batch.advance(batch.pick())
        batch.decode()
        assert batch.cache in (cache, None)  # never reallocated
    per_position = 2 * cfg.n_kv_heads * cfg.head_dim * 4  # keys and values, float32
    local = cfg.layer_types.count("sliding_attention")
    assert cache.max_len == 210 and cache.offset == 209  # the last token is never fed back
    assert cache.nbytes == per_position * (local * 5 + (cfg.n_layers - local) * 210)
    full = StaticKVCache(cfg.n_layers, 1, cfg.n_kv_heads, cfg.head_dim, 210)  # no windows
    assert full.nbytes == per_position * cfg.n_layers * 210
    reference = generate(model, torch.tensor([prompt]), 200, temperature=0)[0, len(prompt) :]
    assert row.generated == reference.tolist()


def test_ring_keeps_the_newest_positions_in_their_slots():
    cache = StaticKVCache(1, 1, 1, 1, max_len=32, windows=[4])
    chunk = torch.arange(6.0).view(1, 1, 6, 1)  # positions 0..5, the key is its position
    keys, _ = cache.update(0, chunk, chunk)
    assert keys.shape[2] == 4 + 6  # the ring as it was (empty), then the chunk
    assert cache.k[0].flatten().tolist() == [4.0, 5.0, 2.0, 3.0]  # position a in slot a % 4
    assert cache.key_slots(4, 1).tolist() == [4, 5, 6, 3]  # after writing position 6
    assert cache.key_slots(4, 3).tolist() == [4, 5, 2, 3, 6, 7, 8]
    assert StaticKVCache(1, 1, 1, 1, max_len=8, windows=[4]).key_slots(4, 2).tolist() == [
        -4, -3, -2, -1, 0, 1,
    ]  # fmt: skip


def test_fixed_shape_steps_slide_as_the_growing_ones():
    """Past a context of 16 both decoders slide the row's window; their tokens agree."""
    model = _model(context_length=16)
    prompts = [[3, 1, 4], [2, 7, 1, 8, 2, 8, 1, 8, 2]]
    growing = Engine(model, static_decode=False).generate(prompts, max_new_tokens=40, **GREEDY)
    fixed = Engine(model, static_decode=True).generate(prompts, max_new_tokens=40, **GREEDY)
    assert [c.token_ids for c in fixed] == [c.token_ids for c in growing]
