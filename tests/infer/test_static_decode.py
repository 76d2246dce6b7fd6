"""Fixed-shape decode steps (the CUDA-graph form) compute what the growing cache computes."""

import pytest
import torch

from buildlm.infer.batch import DecodeBatch
from buildlm.infer.engine import STATIC_CACHE_BLOCK, Engine
from buildlm.infer.kvcache import SlotWriter, StaticKVCache
from buildlm.infer.static_decode import StaticDecodeStep
from buildlm.model.attention import padding_attention_mask

FAMILIES = ["gpt2", "llama"]  # see conftest.MODEL_FAMILIES
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


def test_mask_lets_a_real_query_see_only_real_keys_at_or_before_it():
    key_mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    mask = padding_attention_mask(key_mask, q_len=4, offset=0)[:, 0]  # (B, Tq, Tk)
    pad_row = torch.tensor(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool
    )  # pad queries see only themselves; real ones the real keys up to them
    assert torch.equal(mask[0], pad_row)
    assert torch.equal(mask[1], torch.ones(4, 4, dtype=torch.bool).tril())


def test_mask_over_a_whole_cache_follows_the_key_mask_alone():
    """A fixed-shape step: offset = Tk - 1, so only the key mask decides (no forced last slot)."""
    key_mask = torch.tensor([[False, True, True, False, False, False]])  # slots 1, 2 written
    mask = padding_attention_mask(key_mask, q_len=1, offset=5)
    assert torch.equal(mask[0, 0, 0], key_mask[0])


def test_slot_writer_writes_one_slot_and_returns_the_whole_layer():
    cache = StaticKVCache(n_layers=2, batch_size=2, n_kv_heads=3, head_dim=4, max_len=8)
    prefill = torch.randn(2, 3, 5, 4)
    for layer in range(2):
        cache.update(layer, prefill + layer, -prefill)
    writer = SlotWriter(cache)
    assert writer.offset == 7
    writer.slot.fill_(cache.offset)
    k, v = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    keys, values = writer.update(1, k, v)
    assert keys.shape == (2, 3, 8, 4) and keys.data_ptr() == cache.k[1].data_ptr()
    assert torch.equal(keys[:, :, :5], prefill + 1) and torch.equal(values[:, :, :5], -prefill)
    assert torch.equal(keys[:, :, 5:6], k) and torch.equal(values[:, :, 5:6], v)
    assert not keys[:, :, 6:].any()
    assert torch.equal(cache.k[0][:, :, :5], prefill) and not cache.k[0][:, :, 5:].any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", FAMILIES)
def test_static_step_logits_equal_each_prompt_alone(family, device, make_model):
    """Left-padded prompts, prefilled, then 10 fixed-shape steps: the logits of each row equal
    a plain forward pass over that row's own tokens (a CUDA graph replays them on a GPU)."""
    model = make_model(family, device=device)
    batch = DecodeBatch(model)
    rows = batch.make_rows([[5, 9, 2], [7, 1, 4, 4, 8, 3, 6]], max_new_tokens=10, temperature=0,
                           stop_token_ids=())  # fmt: skip
    step = StaticDecodeStep(model, StaticKVCache.for_model(model, 2, max_len=24))
    assert (step.graph is not None) == (device == "cuda")
    batch.prefill(rows, step)
    for _ in range(10):
        batch.advance(batch.pick())
        batch.decode()
        assert batch.cache is step.cache  # the recorded step's own cache, not a new one
        with torch.inference_mode():
            for i, row in enumerate(rows):
                alone = model(torch.tensor([row.sequence], device=device))[0, -1].float()
                torch.testing.assert_close(batch.logits[i], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", FAMILIES)
def test_engine_tokens_equal_with_and_without_static_steps(family, device, make_model):
    model = make_model(family, device=device)
    plain, static = Engine(model, static_decode=False), Engine(model, static_decode=True)
    built = {plain: [], static: []}
    for prompts in ([[1, 2, 3], [5, 6, 7, 8, 9, 10, 11]], [[4, 8, 15], [16, 23, 42]], [[3]]):
        want = plain.generate(prompts, max_new_tokens=12, temperature=0, stop_token_ids=())
        got = static.generate(prompts, max_new_tokens=12, temperature=0, stop_token_ids=())
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        for engine in built:
            built[engine].append(engine.stats.static_steps_built)
    # Each engine took its own path; a step is kept per batch size (2, then 1) and reused.
    assert built == {plain: [0, 0, 0], static: [1, 0, 1]}


@pytest.mark.parametrize("device", DEVICES)
def test_static_steps_slide_the_window_like_the_plain_engine(device, make_model):
    model = make_model("gpt2", context_length=16, device=device)
    args = dict(max_new_tokens=40, temperature=0, stop_token_ids=())
    want = Engine(model, static_decode=False).generate([[3, 1, 4], [1, 5]], **args)
    static = Engine(model, static_decode=True)
    got = static.generate([[3, 1, 4], [1, 5]], **args)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert all(len(c.token_ids) == 40 for c in got)
    assert static.stats.static_steps_built == 1  # slides prefill the same step's cache again


def test_seeded_sampling_with_penalties_is_unchanged_by_static_steps(make_model):
    model = make_model("llama")
    args = dict(max_new_tokens=15, temperature=0.9, top_p=0.9, frequency_penalty=0.5, seed=3,
                stop_token_ids=())  # fmt: skip
    want = Engine(model, static_decode=False).generate([[2, 7], [9, 9, 9, 1]], **args)
    static = Engine(model, static_decode=True)
    got = static.generate([[2, 7], [9, 9, 9, 1]], **args)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert static.stats.static_steps_built == 1


def test_recorded_steps_are_reused_and_dropped_when_the_weights_move(make_model):
    model = make_model("gpt2", context_length=1024)
    engine = Engine(model, static_decode=True)
    args = dict(temperature=0, stop_token_ids=())

    def built(prompt: list[int], max_new_tokens: int) -> int:
        engine.generate([prompt], max_new_tokens=max_new_tokens, **args)
        return engine.stats.static_steps_built

    assert built([1, 2], 10) == 1
    assert built([1, 2, 3, 4], 30) == 0  # the same block of STATIC_CACHE_BLOCK: the same step
    assert built([1, 2], STATIC_CACHE_BLOCK) == 1  # one block more
    assert built([1, 2], 2 * STATIC_CACHE_BLOCK) == 1  # and another: only two are kept
    assert built([1, 2], 10) == 1  # so the first one was dropped
    assert built([1, 2], 10) == 0
    model.to(torch.float64)  # new tensors: a step recorded on the old ones must not be used
    got = engine.generate([[1, 2]], max_new_tokens=10, **args)
    assert engine.stats.static_steps_built == 1
    want = Engine(model, static_decode=False).generate([[1, 2]], max_new_tokens=10, **args)
    assert got[0].token_ids == want[0].token_ids


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_graph_tokens_equal_eager_on_a_gpu(family, make_model):
    model = make_model(family, device="cuda")
    plain, compiled = Engine(model, static_decode=False), Engine(model, compile=True)
    built = 0
    for prompts in ([[1, 2, 3], [5, 6, 7, 8, 9, 10, 11]], [[4, 8, 15], [16, 23, 42]]):
        want = plain.generate(prompts, max_new_tokens=12, temperature=0, stop_token_ids=())
        got = compiled.generate(prompts, max_new_tokens=12, temperature=0, stop_token_ids=())
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        built += compiled.stats.static_steps_built
    assert built == 1  # on a GPU the fixed-shape step (a CUDA graph) is the default
