"""`DecodeBatch`, the one decode loop: rows that join, leave and slide mid-run decode exactly as
they would alone, and the cache surgery under it keeps every row's keys where they belong."""

import pytest
import torch

from buildlm.infer.batch import DecodeBatch
from buildlm.infer.engine import Engine
from buildlm.infer.kvcache import StaticKVCache
from buildlm.infer.requests import SamplingParams


def filled_cache(batch_size: int, max_len: int, offset: int, base: float) -> StaticKVCache:
    """A 2-layer cache whose slot ``s`` of row ``b`` holds ``base + 10 b + s`` (keys; values
    negated), ``offset`` slots written."""
    cache = StaticKVCache(n_layers=2, batch_size=batch_size, n_kv_heads=1, head_dim=2,
                          max_len=max_len)  # fmt: skip
    slots = torch.arange(offset, dtype=torch.float32)
    rows = torch.arange(batch_size, dtype=torch.float32)[:, None] * 10
    k = (base + rows + slots)[:, None, :, None].expand(batch_size, 1, offset, 2)
    for layer in range(2):
        cache.update(layer, k, -k)
    return cache


def test_resized_drops_the_leading_slots_into_a_roomier_cache():
    cache = filled_cache(batch_size=2, max_len=6, offset=6, base=0.0)
    roomy = cache.resized(max_len=9, drop=2)
    assert (roomy.offset, roomy.max_len, roomy.batch_size) == (4, 9, 2)
    for new, old in zip(roomy.k + roomy.v, cache.k + cache.v, strict=True):
        assert torch.equal(new[:, :, :4], old[:, :, 2:6])
        assert not new[:, :, 4:].any()  # room for what comes next


def test_concat_right_aligns_every_cache_to_the_widest():
    wide = filled_cache(batch_size=1, max_len=8, offset=5, base=100.0)
    narrow = filled_cache(batch_size=2, max_len=3, offset=3, base=200.0)
    both = StaticKVCache.concat([wide, narrow], max_len=7)
    assert (both.offset, both.max_len, both.batch_size) == (5, 7, 3)
    for new, a, b in zip(both.k + both.v, wide.k + wide.v, narrow.k + narrow.v, strict=True):
        assert torch.equal(new[:1, :, :5], a[:, :, :5])
        assert torch.equal(new[1:, :, 2:5], b[:, :, :3])  # slots 0, 1: padding for these rows
        assert not new[1:, :, :2].any() and not new[:, :, 5:].any()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_rows_that_join_leave_and_slide_mid_run_decode_as_alone(family, make_model):
    """A context of 16: rows slide every few steps, and the cache fills and is made room in.
    Rows joining at step 5 are spliced in padded; one is cancelled; each row's tokens equal
    `Engine.generate` of that row alone."""
    model = make_model(family, context_length=16)
    greedy = dict(temperature=0, stop_token_ids=())
    first = [([3, 1, 4], SamplingParams(max_new_tokens=30, **greedy))]
    later = [
        ([5, 9, 2, 6, 5, 3, 5], SamplingParams(max_new_tokens=20, **greedy)),
        (
            [8],
            SamplingParams(max_new_tokens=25, temperature=0.9, top_k=20, seed=4, stop_token_ids=()),
        ),
        ([2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9], SamplingParams(max_new_tokens=40, **greedy)),
    ]
    batch = DecodeBatch(model)
    rows = batch.make_rows([p for p, _ in first], [sp for _, sp in first])
    joining = batch.make_rows([p for p, _ in later], [sp for _, sp in later])
    cancelled = joining[2]
    batch.prefill(rows)
    slid, widest, step = [], 0, 0
    while not all(row.done for row in rows + joining):
        if step == 5:
            batch.add(joining)
        if step == 12:
            cancelled.cancel()
        batch.advance(batch.pick())
        slid += batch.decode()
        widest = max(widest, len(batch.rows))
        assert all(not row.done for row in batch.rows)  # finished and cancelled rows left
        step += 1
    assert widest == 4 and len(slid) >= 4
    assert cancelled.finish_reason == "cancelled" and len(cancelled.generated) == 7
    engine = Engine(model, static_decode=False)
    for row, (prompt, params) in zip(rows + joining[:2], first + later[:2], strict=True):
        assert row.generated == engine.generate([prompt], params)[0].token_ids


@pytest.mark.parametrize("static_decode", [False, True])
def test_a_row_with_no_budget_generates_nothing_beside_others(static_decode, make_model):
    engine = Engine(make_model("gpt2"), static_decode=static_decode)
    params = [SamplingParams(max_new_tokens=n, temperature=0, stop_token_ids=()) for n in (0, 3)]
    out = engine.generate([[1, 2], [3, 4]], params)
    assert [len(c.token_ids) for c in out] == [0, 3]
    assert out[1].token_ids == engine.generate([[3, 4]], params[1])[0].token_ids
