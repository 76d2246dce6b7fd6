"""Engine: the KV cache changes nothing, padding changes nothing, stops and streaming are exact."""

import pytest
import torch

from buildlm.infer import generate
from buildlm.infer.beam_search import beam_search
from buildlm.infer.detokenize import IncrementalDetokenizer
from buildlm.infer.engine import Engine
from buildlm.infer.kvcache import StaticKVCache
from buildlm.infer.requests import SamplingParams
from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import Tokenizer

FAMILIES = ["gpt2", "llama", "gemma2"]  # see conftest.MODEL_FAMILIES




@pytest.mark.parametrize("family", FAMILIES)
def test_static_cache_logits_equal_full_forward_step_by_step(family, make_model):
    model = make_model(family)
    idx = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    cache = StaticKVCache.for_model(model, batch_size=2, max_len=20)
    with torch.no_grad():
        full = model(idx)
        pieces = [model(idx[:, :7], cache)]  # prefill
        pieces += [model(idx[:, t : t + 1], cache) for t in range(7, 20)]  # one token a step
    assert cache.offset == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padding_changes_no_logit(family, make_model):
    model = make_model(family)
    short = torch.tensor([[5, 9, 2, 7]])
    padded = torch.tensor([[0, 0, 0, 5, 9, 2, 7]])
    key_mask = torch.tensor([[False] * 3 + [True] * 4])
    positions = torch.tensor([[0, 0, 0, 0, 1, 2, 3]])
    with torch.no_grad():
        alone = model(short)
        batched = model(padded, positions=positions, key_mask=key_mask)
    torch.testing.assert_close(batched[:, 3:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_of_different_lengths_equals_each_prompt_alone(family, make_model):
    model = make_model(family)
    prompts = [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11], [4], [30, 31, 32, 33]]
    engine = Engine(model)
    batched = engine.generate(prompts, max_new_tokens=24, temperature=0, stop_token_ids=())
    for prompt, out in zip(prompts, batched, strict=True):
        alone = engine.generate([prompt], max_new_tokens=24, temperature=0, stop_token_ids=())[0]
        reference = generate(model, torch.tensor([prompt]), 24, temperature=0)[0, len(prompt) :]
        assert out.token_ids == alone.token_ids == reference.tolist()
        assert out.finish_reason == "length" and out.prompt_ids == prompt


@pytest.mark.parametrize("static_decode", [None, True])
def test_compiled_decode_step_gives_the_eager_tokens(make_model, static_decode, monkeypatch):
    """``Engine(compile=True)``: the decode step through torch.compile, padded and unpadded;
    on the CPU by default the growing-cache step (dynamic shapes), or the fixed-shape one."""
    model = make_model("llama")
    eager = Engine(model)
    runs: list[int] = []  # per function handed to torch.compile: how often its compiled code ran
    real_compile = torch.compile

    def counting_compile(fn, **options):
        compiled, index = real_compile(fn, **options), len(runs)
        runs.append(0)

        def run(*args, **kwargs):
            runs[index] += 1
            return compiled(*args, **kwargs)

        return run

    monkeypatch.setattr(torch, "compile", counting_compile)
    compiled = Engine(model, compile=True, static_decode=static_decode)
    steps = built = 0
    for prompts in ([[1, 2, 3], [5, 6, 7, 8, 9, 10, 11]], [[4, 8, 15], [16, 23, 42]]):
        want = eager.generate(prompts, max_new_tokens=12, temperature=0, stop_token_ids=())
        got = compiled.generate(prompts, max_new_tokens=12, temperature=0, stop_token_ids=())
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        steps += compiled.stats.decode_steps
        built += compiled.stats.static_steps_built
    assert steps == 22 and sum(runs) == steps  # every decode step ran compiled code
    assert built == (1 if static_decode else 0)  # the fixed-shape step, or the growing one


def test_generation_past_the_context_slides_the_window(make_model):
    model = make_model("gpt2", context_length=16)
    out = Engine(model).generate([[3, 1, 4]], max_new_tokens=40, temperature=0, stop_token_ids=())
    reference = generate(model, torch.tensor([[3, 1, 4]]), 40, temperature=0)[0, 3:].tolist()
    assert len(out[0].token_ids) == 40
    # Until the context is full, both see the same tokens; afterwards their windows differ.
    assert out[0].token_ids[:13] == reference[:13]


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(make_model):
    model = make_model("llama")
    params = SamplingParams(max_new_tokens=16, temperature=1.2, top_k=20, seed=7, stop_token_ids=())
    other = SamplingParams(max_new_tokens=5, temperature=1.0, seed=99, stop_token_ids=())
    engine = Engine(model)
    alone = engine.generate([[1, 2, 3]], params)[0].token_ids
    again = engine.generate([[1, 2, 3]], params)[0].token_ids
    in_batch = engine.generate([[8, 8, 8, 8, 8], [1, 2, 3]], [other, params])[1].token_ids
    unseeded = SamplingParams(max_new_tokens=16, temperature=1.2, top_k=20, seed=8)
    different = engine.generate([[1, 2, 3]], unseeded)[0].token_ids
    assert alone == again == in_batch
    assert different != alone


def test_top_k_1_equals_greedy(make_model):
    model = make_model("gpt2")
    engine = Engine(model)
    greedy = engine.generate([[2, 4, 6]], max_new_tokens=12, temperature=0, stop_token_ids=())
    top1 = engine.generate(
        [[2, 4, 6]], max_new_tokens=12, temperature=1.5, top_k=1, seed=3, stop_token_ids=()
    )
    assert top1[0].token_ids == greedy[0].token_ids


@pytest.fixture(scope="module")
def text_model():
    """A small model trained for a few steps on The Verdict, with its BPE tokenizer."""
    from buildlm.data.corpora import load_corpus

    text = load_corpus("the-verdict")
    tok = Tokenizer.train(text, 320, progress=False)
    ids = torch.tensor(tok.encode(text))
    torch.manual_seed(0)
    model = GPT(ModelConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=64))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        starts = torch.randint(0, len(ids) - 65, (16,), generator=gen)
        batch = torch.stack([ids[s : s + 65] for s in starts])
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


def test_stream_yields_the_final_text_in_pieces(text_model):
    model, tok = text_model
    engine = Engine(model, tok)
    params = SamplingParams(max_new_tokens=40, temperature=0.9, seed=5, stop_token_ids=())
    pieces = list(engine.stream("I had always thought", params))
    final = engine.generate(["I had always thought"], params)[0]
    assert len(pieces) > 5 and "".join(pieces) == final.text
    assert final.text == tok.decode(final.token_ids)


def test_stop_strings_cut_the_text(text_model):
    model, tok = text_model
    engine = Engine(model, tok)
    free = engine.generate(["The"], max_new_tokens=60, temperature=0, stop_token_ids=())[0]
    words = free.text.split()
    stop = words[len(words) // 2]  # a word greedy decoding is known to produce
    cut = engine.generate(["The"], max_new_tokens=60, temperature=0, stop=[stop])[0]
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)]
    streamed = "".join(engine.stream("The", max_new_tokens=60, temperature=0, stop=[stop]))
    assert streamed == cut.text


def test_stop_token_ends_a_row_only(text_model):
    model, tok = text_model
    engine = Engine(model, tok)
    free = engine.generate(["The", "She"], max_new_tokens=30, temperature=0, stop_token_ids=())
    stop_id = free[0].token_ids[4]
    out = engine.generate(["The", "She"], max_new_tokens=30, temperature=0, stop_token_ids=[stop_id])
    first = free[0].token_ids.index(stop_id)
    assert out[0].token_ids == free[0].token_ids[:first] and out[0].finish_reason == "stop"
    if stop_id not in free[1].token_ids:
        assert out[1].token_ids == free[1].token_ids and out[1].finish_reason == "length"


def test_detokenizer_never_splits_a_character():
    tok = Tokenizer.pretrained("gpt2")
    text = "naïve 🎉 façade — 東京 ok"
    ids = tok.encode(text)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some tokens hold partial characters
    detok = IncrementalDetokenizer(tok.token_bytes)
    pieces = [detok.push(i) for i in ids] + [detok.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text


def test_detokenizer_holds_back_a_possible_stop_string():
    tok = Tokenizer.pretrained("gpt2")
    ids = tok.encode("alpha beta END gamma")
    detok = IncrementalDetokenizer(tok.token_bytes, stop=["END"])
    pieces = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == "alpha beta " and detok.stopped


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(temperature=-0.5), "temperature"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_k=0), "top_k"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
    ],
)
def test_bad_settings_raise(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        SamplingParams(**kwargs)


def test_bad_prompts_raise_or_truncate(make_model):
    model = make_model("gpt2", context_length=16)
    with pytest.raises(ValueError, match="empty"):
        Engine(model).generate([[]], max_new_tokens=3)
    with pytest.raises(ValueError, match="context_length=16"):
        Engine(model).generate([list(range(20))], max_new_tokens=3)
    with pytest.raises(ValueError, match="token ids"):
        Engine(model).generate([[1, 500]], max_new_tokens=3)
    with pytest.raises(ValueError, match="tokenizer"):
        Engine(model).generate(["text without a tokenizer"], max_new_tokens=3)
    out = Engine(model, truncate_prompts=True).generate(
        [list(range(20))], max_new_tokens=3, temperature=0, stop_token_ids=()
    )
    expected = generate(model, torch.tensor([list(range(4, 20))]), 1, temperature=0)[0, 16:]
    assert out[0].prompt_ids == list(range(4, 20)) and len(out[0].token_ids) == 3
    assert out[0].token_ids[0] == int(expected[0])  # then the full window slides


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_beam_search_equals_the_uncached_search(family, make_model):
    model = make_model(family)
    prompt = [7, 3, 9, 1]
    free = beam_search(model, torch.tensor([prompt]), 16, num_beams=4)[0, 4:].tolist()
    eos = free[5]  # a token the search does produce, so hypotheses finish early
    for eos_id, expected in ((None, free), (eos, None)):
        if expected is None:
            expected = beam_search(model, torch.tensor([prompt]), 16, 4, eos_id=eos_id)[0, 4:]
            expected = expected.tolist()
            expected = expected[: expected.index(eos_id)] if eos_id in expected else expected
        out = Engine(model).beam_search(prompt, 4, 16, stop_token_id=eos_id)
        assert out.token_ids == expected
        assert out.finish_reason == ("stop" if len(expected) < 16 else "length")


def test_engine_greedy_and_beams_equal_transformers_generate(gpt2_pair):
    hf, model = gpt2_pair
    prompts = [[5, 17, 3, 40, 2], [11, 9]]
    engine = Engine(model)
    ours = engine.generate(prompts, max_new_tokens=24, temperature=0, stop_token_ids=())
    for prompt, out in zip(prompts, ours, strict=True):
        ids = torch.tensor([prompt])
        theirs = hf.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=24,
            min_new_tokens=24, pad_token_id=0,
        )[0, len(prompt) :]  # fmt: skip
        assert out.token_ids == theirs.tolist()
        beams = hf.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=4,
            max_new_tokens=12, min_new_tokens=12, pad_token_id=0,
        )[0, len(prompt) :]  # fmt: skip
        assert engine.beam_search(prompt, 4, 12).token_ids == beams.tolist()
