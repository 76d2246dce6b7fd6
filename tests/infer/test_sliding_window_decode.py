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
