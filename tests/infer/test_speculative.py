"""Speculative decoding: greedy tokens equal plain decoding's, sampled ones are distributed as the
target's (the accept/reject rule, checked by counting), rejected drafts leave no trace."""

import pytest
import torch

from buildlm.infer.draft_model import DraftModel
from buildlm.infer.engine import Engine
from buildlm.infer.kvcache import StaticKVCache
from buildlm.infer.prompt_lookup import PromptLookup, lookup
from buildlm.infer.requests import SamplingParams
from buildlm.infer.speculative import accept_drafts
from buildlm.model import GPT, ModelConfig

GREEDY = dict(temperature=0, stop_token_ids=())


def _gpt(seed: int, vocab: int = 97, context: int = 48, layers: int = 2, d_model: int = 64,
         noise: float = 0.3, **overrides) -> GPT:  # fmt: skip
    """A small seeded GPT, its weights pushed from their init so its choices are clear-cut."""
    torch.manual_seed(seed)
    cfg = ModelConfig.preset(
        "tiny", vocab_size=vocab, context_length=context, d_model=d_model, n_heads=4,
        n_layers=layers, **overrides,
    )  # fmt: skip
    model = GPT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model


@pytest.fixture(scope="module")
def target():
    return _gpt(0)


@pytest.fixture(scope="module")
def draft():
    return _gpt(1, layers=1, d_model=32)  # smaller, other weights: many rejections


PROMPTS = [
    [1, 2, 3, 4, 5, 1, 2, 3],  # repetitive: prompt lookup finds matches
    [7, 40, 13, 88, 2, 61, 19, 5, 33, 70, 11, 9, 24, 50, 3, 66, 8, 45, 30, 12, 90, 1, 6, 17,
     28, 39, 4, 55, 72, 14, 20, 36, 81, 42, 10, 59],  # 36 of 48: the window slides soon
    [9],
]  # fmt: skip


@pytest.mark.parametrize("mode", ["prompt-lookup", "draft", "self"])
@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_tokens_equal_plain_decoding(target, draft, mode, batch):
    drafter = {
        "prompt-lookup": PromptLookup(num_tokens=4),
        "draft": DraftModel(draft, num_tokens=3),
        "self": DraftModel(target, num_tokens=5),  # the target drafting for itself: all accepted
    }[mode]
    prompts = PROMPTS[:batch] if batch > 1 else PROMPTS[1:2]
    plain = Engine(target).generate(prompts, max_new_tokens=60, **GREEDY)
    engine = Engine(target, speculative=drafter)
    fast = engine.generate(prompts, max_new_tokens=60, **GREEDY)
    assert [c.token_ids for c in fast] == [c.token_ids for c in plain]
    assert all(len(c.token_ids) == 60 for c in fast)  # past the 48-token context: slides
    stats = engine.stats
    assert stats.draft_tokens > 0 and stats.decode_steps < 60 * len(prompts)
    if mode == "self":
        assert stats.acceptance_rate == 1.0
    if mode == "draft":
        assert 0 < stats.acceptance_rate < 1  # some drafts rejected, and rolled back


def test_greedy_with_a_penalty_equals_plain_decoding(target, draft):
    params = SamplingParams(max_new_tokens=40, temperature=0, repetition_penalty=1.5,
                            frequency_penalty=0.5, stop_token_ids=())  # fmt: skip
    plain = Engine(target).generate(PROMPTS, params)
    for drafter in (PromptLookup(num_tokens=4), DraftModel(draft, num_tokens=3)):
        fast = Engine(target, speculative=drafter).generate(PROMPTS, params)
        assert [c.token_ids for c in fast] == [c.token_ids for c in plain]


def test_a_stop_token_inside_an_accepted_block_ends_the_row_there(target):
    plain = Engine(target).generate([PROMPTS[0]], max_new_tokens=30, **GREEDY)[0].token_ids
    stop = plain[12]
    first = plain.index(stop)
    engine = Engine(target, speculative=DraftModel(target, num_tokens=6))  # whole blocks kept
    out = engine.generate([PROMPTS[0]], max_new_tokens=30, temperature=0, stop_token_ids=[stop])
    assert out[0].token_ids == plain[:first] and out[0].finish_reason == "stop"
    streamed = "".join(engine.stream(PROMPTS[0], max_new_tokens=5, **GREEDY))
    assert streamed == ""  # no tokenizer: ids only, and the stream ends cleanly


def test_sampling_with_a_seed_is_repeatable(target, draft):
    params = SamplingParams(max_new_tokens=20, temperature=0.9, top_k=20, seed=5, stop_token_ids=())
    engine = Engine(target, speculative=DraftModel(draft, num_tokens=3))
    first = engine.generate(PROMPTS, params)
    again = engine.generate(PROMPTS, params)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]


# --- the distribution: sampled output is the target's, whatever the drafter ------------------

CHI2_CRITICAL = {8: 26.12, 24: 51.18}  # chi-square quantile 0.999 for 8 and 24 degrees of freedom


def _chi_square(counts: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson's statistic; cells expected to hold fewer than 5 samples are pooled into one."""
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum().reshape(1)])
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = exp > 0
    return float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())


def _two_token_distribution(model: GPT, prompt: list[int], params: SamplingParams) -> torch.Tensor:
    """The exact probability of each pair of first two tokens (V * V,), with the processors."""
    vocab = model.config.vocab_size
    procs = params.processors(prompt_length=len(prompt))

    def probs(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            scores = model(torch.tensor([ids]))[0, -1:].float()
        return torch.softmax(procs(torch.tensor([ids]), scores), dim=-1)[0].double()

    first = probs(prompt)
    return torch.stack([first[a] * probs(prompt + [a]) for a in range(vocab)]).reshape(-1)


@pytest.mark.parametrize(
    ("mode", "settings"),
    [
        ("draft", dict(temperature=1.0)),
        ("draft", dict(temperature=0.7, top_k=3)),  # the processors shape both p and q
        ("prompt-lookup", dict(temperature=1.0, top_p=0.9)),
        ("draft", dict(temperature=0.9, presence_penalty=1.0)),  # p depends on the history
    ],
)
def test_sampled_tokens_are_distributed_as_the_targets(mode, settings):
    vocab, n = 5, 2000
    target = _gpt(10, vocab=vocab, context=16, layers=1, d_model=16, noise=0.6)
    draft = _gpt(11, vocab=vocab, context=16, layers=1, d_model=16, noise=0.6)
    prompt = [1, 2, 3, 1, 2]
    drafter = DraftModel(draft, num_tokens=2) if mode == "draft" else PromptLookup(num_tokens=2)
    params = [
        SamplingParams(max_new_tokens=2, stop_token_ids=(), seed=s, **settings) for s in range(n)
    ]
    engine = Engine(target, speculative=drafter)
    outs = engine.generate([prompt] * n, params)
    assert engine.stats.draft_tokens > 0 and 0 < engine.stats.acceptance_rate < 1
    pairs = torch.tensor([c.token_ids[0] * vocab + c.token_ids[1] for c in outs])
    counts = torch.bincount(pairs, minlength=vocab * vocab).double()
    exact = _two_token_distribution(target, prompt, SamplingParams(**settings))
    assert bool((counts[exact == 0] == 0).all())  # nothing the processors ruled out
    dof = 24 if "top_k" not in settings else 8
    assert _chi_square(counts, n * exact) < CHI2_CRITICAL[dof]
    # The check has power: the draft's own distribution would fail it by far.
    if mode == "draft":
        wrong = _two_token_distribution(draft, prompt, SamplingParams(**settings))
        assert _chi_square(n * wrong, n * exact) > 5 * CHI2_CRITICAL[dof]


def test_the_rule_emits_the_target_distribution_for_any_draft_distribution():
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([[0.1, 0.4, 0.2, 0.3, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2]])
    q = torch.tensor([[0.5, 0.1, 0.1, 0.1, 0.2]])
    n = 4000
    firsts = []
    for _ in range(n):
        x = int(torch.multinomial(q[0], 1, generator=gen))
        firsts.append(accept_drafts(p, [x], q, gen)[0])
    counts = torch.bincount(torch.tensor(firsts), minlength=5).double()
    assert counts[4] == 0  # p(4) = 0: never emitted, though the draft proposes it
    assert _chi_square(counts, n * p[0].double()) < 18.47  # 4 dof, quantile 0.999
    assert _chi_square(counts, n * q[0].double()) > 100  # the draft's distribution is rejected
    # A point-mass draft (prompt lookup): accepted with probability p(x), else drawn without x.
    lookups = [accept_drafts(p, [1], None, gen)[0] for _ in range(n)]
    counts = torch.bincount(torch.tensor(lookups), minlength=5).double()
    assert _chi_square(counts, n * p[0].double()) < 18.47


# --- the parts ---------------------------------------------------------------------------------


def test_lookup_copies_what_followed_the_latest_match():
    assert lookup([1, 2, 3, 4, 1, 2], 3) == [3, 4, 1]
    assert lookup([5, 1, 2, 9, 7, 1, 2, 8, 1, 2], 2) == [8, 1]  # the latest of two matches
    assert lookup([5, 6, 7, 8], 3) == []  # no earlier occurrence of the last token
    assert lookup([4, 4], 3) == [4]  # a match just before the tail
    assert lookup([1, 2, 3, 9, 2, 3], 2, max_ngram=3, min_ngram=2) == [9, 2]


def test_truncated_cache_continues_as_if_the_rejected_tokens_never_came(target):
    ids = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79]])
    cache = StaticKVCache.for_model(target, 1, max_len=16)
    with torch.no_grad():
        target(ids[:, :5], cache)
        target(torch.tensor([[1, 2, 3]]), cache)  # drafts, rejected
        cache.truncate(5)
        after = target(ids[:, 5:], cache)
        full = target(ids)
    torch.testing.assert_close(after, full[:, 5:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot truncate"):
        cache.truncate(9)


def test_bad_combinations_are_refused_with_a_clear_error(target):
    windowed = _gpt(2, sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    with pytest.raises(ValueError, match="sliding-window layers"):
        Engine(windowed, speculative=PromptLookup())
    with pytest.raises(ValueError, match="vocabulary"):
        Engine(target, speculative=DraftModel(_gpt(3, vocab=50)))
    with pytest.raises(ValueError, match="context"):
        Engine(target, speculative=DraftModel(_gpt(3, context=16)))
    with pytest.raises(ValueError, match="num_tokens"):
        PromptLookup(num_tokens=0)
    from buildlm.tokenizer import Tokenizer

    tok = Tokenizer.train("a calculator: 1+2=3 " * 50, 300, progress=False)
    with pytest.raises(ValueError, match="tool calls and speculative"):
        Engine(_gpt(4, vocab=tok.vocab_size), tok, speculative=PromptLookup()).generate(
            ["a"], max_new_tokens=3, tools=("calculator",)
        )
