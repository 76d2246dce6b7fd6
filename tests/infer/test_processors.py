"""Logits processors equal transformers' on random scores; the pipeline equals HF generate.

Each processor is compared with the matching ``transformers`` LogitsProcessor on random scores
(several seeds, batch of 3, histories full of repeated ids, some exact ties), bit for bit. The
frequency and presence penalties have no HF class and are checked against a plain loop. End to
end, ``generate`` with these settings produces exactly the tokens of HF ``generate`` on the same
weights, greedy and seeded sampling alike.
"""

import pytest
import torch
from transformers import GenerationConfig
from transformers.generation import logits_process as hf_lp

from buildlm.infer import generate
from buildlm.infer.processors import (
    FrequencyPenalty,
    LogitsProcessorList,
    MinP,
    PresencePenalty,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    build_processors,
    choose_next,
    token_counts,
)

V = 50


def _case(seed: int, ties: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Histories (3, 12) drawn from 10 ids (so full of repeats) and scores (3, V)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 10, (3, 12), generator=gen)
    scores = torch.randn(3, V, generator=gen) * 3
    if ties:  # coarse values: many exact ties, including at the top-k / top-p boundaries
        scores = scores.round()
    return ids, scores


PAIRS = {
    "temperature-0.7": (lambda: Temperature(0.7), lambda: hf_lp.TemperatureLogitsWarper(0.7)),
    "temperature-1.8": (lambda: Temperature(1.8), lambda: hf_lp.TemperatureLogitsWarper(1.8)),
    "top_k-1": (lambda: TopK(1), lambda: hf_lp.TopKLogitsWarper(1)),
    "top_k-7": (lambda: TopK(7), lambda: hf_lp.TopKLogitsWarper(7)),
    "top_k-3-keep-5": (
        lambda: TopK(3, min_tokens_to_keep=5),
        lambda: hf_lp.TopKLogitsWarper(3, min_tokens_to_keep=5),
    ),
    "top_k-above-vocab": (lambda: TopK(V + 10), lambda: hf_lp.TopKLogitsWarper(V + 10)),
    "top_p-0.9": (lambda: TopP(0.9), lambda: hf_lp.TopPLogitsWarper(0.9)),
    "top_p-0.3": (lambda: TopP(0.3), lambda: hf_lp.TopPLogitsWarper(0.3)),
    "top_p-0.05-keep-3": (
        lambda: TopP(0.05, min_tokens_to_keep=3),
        lambda: hf_lp.TopPLogitsWarper(0.05, min_tokens_to_keep=3),
    ),
    "top_p-filter-value": (
        lambda: TopP(0.5, filter_value=-100.0),
        lambda: hf_lp.TopPLogitsWarper(0.5, filter_value=-100.0),
    ),
    "min_p-0.1": (lambda: MinP(0.1), lambda: hf_lp.MinPLogitsWarper(0.1)),
    "min_p-0.6-keep-4": (
        lambda: MinP(0.6, min_tokens_to_keep=4),
        lambda: hf_lp.MinPLogitsWarper(0.6, min_tokens_to_keep=4),
    ),
    "min_p-0": (lambda: MinP(0.0), lambda: hf_lp.MinPLogitsWarper(0.0)),
    "min_p-1": (lambda: MinP(1.0), lambda: hf_lp.MinPLogitsWarper(1.0)),
    "repetition-1.3": (
        lambda: RepetitionPenalty(1.3),
        lambda: hf_lp.RepetitionPenaltyLogitsProcessor(1.3),
    ),
    "repetition-0.6": (
        lambda: RepetitionPenalty(0.6),
        lambda: hf_lp.RepetitionPenaltyLogitsProcessor(0.6),
    ),
}


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", list(PAIRS))
def test_processor_equals_transformers(name, seed, ties):
    ours, theirs = (make() for make in PAIRS[name])
    ids, scores = _case(seed, ties)
    expected = theirs(ids, scores.clone())
    got = ours(ids, scores)
    assert torch.equal(got, expected)
    assert got.shape == (3, V)


@pytest.mark.parametrize(("top_p", "kept"), [(0.25, 1), (0.5, 2), (0.75, 3), (0.6, 3)])
def test_top_p_boundary_is_inclusive_like_transformers(top_p, kept):
    """Four equal scores: probabilities exactly 1/4, so the running mass hits p exactly. The
    smallest set with mass >= p is kept, no more: a mass equal to 1 - p is dropped."""
    ids = torch.zeros(2, 1, dtype=torch.long)
    scores = torch.zeros(2, 4)
    got = TopP(top_p)(ids, scores)
    assert torch.isfinite(got).sum(-1).tolist() == [kept, kept]
    assert torch.equal(got, hf_lp.TopPLogitsWarper(top_p)(ids, scores.clone()))


def test_processors_do_not_modify_their_input():
    ids, scores = _case(0)
    before = scores.clone()
    build_processors(0.7, 5, 0.9, 0.1, 1.3, 0.5, 0.5)(ids, scores)
    assert torch.equal(scores, before)


@pytest.mark.parametrize("seed", range(3))
def test_build_processors_equals_transformers_pipeline(gpt2_pair, seed):
    """Same processors, same order as transformers' own generate() builds them."""
    hf, _ = gpt2_pair
    gen_cfg = GenerationConfig(
        do_sample=True, temperature=0.8, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.2
    )
    ids = torch.randint(0, 10, (3, 12), generator=torch.Generator().manual_seed(seed))
    theirs = hf._get_logits_processor(
        generation_config=gen_cfg,
        input_ids_seq_length=ids.shape[1],
        encoder_input_ids=ids,
        prefix_allowed_tokens_fn=None,
        logits_processor=hf_lp.LogitsProcessorList(),
        device="cpu",
        model_kwargs={},
    )
    ours = build_processors(0.8, 20, 0.9, 0.05, 1.2)
    assert [type(p).__name__ for p in ours] == [
        "RepetitionPenalty", "Temperature", "TopK", "TopP", "MinP"
    ]  # fmt: skip
    scores = torch.randn(3, 67, generator=torch.Generator().manual_seed(100 + seed)) * 3
    assert torch.equal(ours(ids, scores), theirs(ids, scores.clone()))


def test_no_op_settings_add_no_processor_and_greedy_keeps_only_penalties():
    assert len(build_processors()) == 0
    assert len(build_processors(1.0, None, 1.0, None, 1.0, 0.0, 0.0)) == 0
    greedy = build_processors(0, 5, 0.9, 0.1, 1.3, 0.5, 0.2)
    assert [type(p) for p in greedy] == [RepetitionPenalty, FrequencyPenalty, PresencePenalty]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("freq", "pres", "prompt_length"),
    [(0.7, 0.0, 0), (0.0, 1.5, 4), (0.4, -0.3, 5), (-0.5, 2.0, 12)],
)
def test_frequency_and_presence_penalties_follow_openai_formula(seed, freq, pres, prompt_length):
    ids, scores = _case(seed)
    expected = scores.clone()
    for b in range(ids.shape[0]):
        generated = ids[b, prompt_length:].tolist()
        for token in set(generated):
            count = generated.count(token)
            expected[b, token] -= freq * count + pres * (count > 0)
    procs = LogitsProcessorList(
        [FrequencyPenalty(freq, prompt_length), PresencePenalty(pres, prompt_length)]
    )
    torch.testing.assert_close(procs(ids, scores), expected, rtol=0, atol=1e-5)
    via_builder = build_processors(
        frequency_penalty=freq, presence_penalty=pres, prompt_length=prompt_length
    )
    torch.testing.assert_close(via_builder(ids, scores), expected, rtol=0, atol=1e-5)


def test_token_counts_ignore_ids_outside_the_vocabulary():
    ids = torch.tensor([[1, 1, -1, 4, 9, 2], [3, 3, 3, 12, 0, 0]])
    counts = token_counts(ids, vocab_size=5)
    assert counts.tolist() == [[0, 2, 1, 0, 1], [2, 0, 0, 3, 0]]
    assert token_counts(ids, 5, start=3).tolist() == [[0, 0, 1, 0, 1], [2, 0, 0, 0, 0]]


def test_top_k_1_sampling_is_greedy():
    ids, scores = _case(3)
    warped = build_processors(temperature=1.7, top_k=1)(ids, scores)
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        assert torch.equal(choose_next(warped, greedy=False, generator=gen), scores.argmax(-1))


def test_seeded_sampling_with_every_processor_is_reproducible(gpt2_pair):
    _, model = gpt2_pair
    prompt = torch.tensor([[5, 9, 2]] * 3)
    kw = dict(
        temperature=1.2, top_k=40, top_p=0.95, min_p=0.02, repetition_penalty=1.3,
        frequency_penalty=0.4, presence_penalty=0.2,
    )  # fmt: skip
    a = generate(model, prompt, 15, seed=11, **kw)
    torch.manual_seed(0)  # the global RNG plays no part
    b = generate(model, prompt, 15, seed=11, **kw)
    c = generate(model, prompt, 15, seed=12, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _hf_generate(hf, prompts: torch.Tensor, **kwargs) -> torch.Tensor:
    """HF generate without its default top_k=50 (buildlm adds no top-k unless asked)."""
    kwargs = {"top_k": 0} | kwargs
    return hf.generate(prompts, attention_mask=torch.ones_like(prompts), pad_token_id=0, **kwargs)


PROMPTS = torch.tensor([[5, 9, 2, 2, 40], [11, 3, 3, 60, 7], [1, 2, 3, 4, 5]])


@pytest.mark.parametrize("penalty", [1.5, 0.8])
def test_greedy_with_repetition_penalty_equals_transformers(gpt2_pair, penalty):
    hf, model = gpt2_pair
    expected = _hf_generate(
        hf, PROMPTS, do_sample=False, max_new_tokens=20, repetition_penalty=penalty
    )
    got = generate(model, PROMPTS, 20, temperature=0, repetition_penalty=penalty)
    assert torch.equal(got, expected)
    plain = generate(model, PROMPTS, 20, temperature=0)
    assert not torch.equal(got, plain)  # the penalty really changed the output


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=0.9, top_k=30, top_p=0.95),
        dict(temperature=1.3, min_p=0.05, repetition_penalty=1.3),
        dict(temperature=0.7, top_p=0.8, min_p=0.1),
    ],
    ids=["temp-topk-topp", "temp-minp-repetition", "temp-topp-minp"],
)
def test_seeded_sampling_equals_transformers(gpt2_pair, kwargs):
    """Same processors and the same draw: torch.multinomial on the same RNG stream (seeded
    explicitly for buildlm, through the global seed for transformers) gives the same tokens."""
    hf, model = gpt2_pair
    torch.manual_seed(5)
    expected = _hf_generate(hf, PROMPTS, do_sample=True, max_new_tokens=20, **kwargs)
    got = generate(model, PROMPTS, 20, seed=5, **kwargs)
    assert torch.equal(got, expected)


def test_greedy_with_frequency_and_presence_penalties_equals_a_direct_loop(gpt2_pair):
    _, model = gpt2_pair
    freq, pres = 0.6, 0.4
    idx = PROMPTS.clone()
    with torch.no_grad():
        for _ in range(15):
            logits = model(idx)[:, -1, :].clone()
            for b in range(idx.shape[0]):
                generated = idx[b, PROMPTS.shape[1] :].tolist()
                for token in set(generated):
                    logits[b, token] -= freq * generated.count(token) + pres
            idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    got = generate(model, PROMPTS, 15, temperature=0, frequency_penalty=freq, presence_penalty=pres)
    assert torch.equal(got, idx)
    assert not torch.equal(got, generate(model, PROMPTS, 15, temperature=0))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Temperature(0.0), r"temperature must be > 0 .*got 0\.0"),
        (lambda: Temperature(-1.0), r"temperature must be > 0 .*got -1\.0"),
        (lambda: TopK(0), r"top_k must be a positive integer \(>= 1\).*got 0"),
        (lambda: TopK(2.5), r"top_k must be a positive integer.*got 2\.5"),
        (lambda: TopP(0.0), r"top_p must be in \(0, 1\].*got 0\.0"),
        (lambda: TopP(1.5), r"top_p must be in \(0, 1\].*got 1\.5"),
        (lambda: MinP(-0.1), r"min_p must be in \[0, 1\].*got -0\.1"),
        (lambda: MinP(1.1), r"min_p must be in \[0, 1\].*got 1\.1"),
        (lambda: RepetitionPenalty(0.0), r"repetition_penalty must be a number from 0.01 to 100.*got 0"),
        (lambda: RepetitionPenalty(-2.0), r"repetition_penalty must be .*from 0.01.*got -2\.0"),
        (lambda: TopP(0.5, min_tokens_to_keep=0), r"min_tokens_to_keep must be a positive"),
        (lambda: FrequencyPenalty(float("nan")), r"frequency_penalty must be a number from -100 to 100"),
        (lambda: PresencePenalty(0.5, prompt_length=-1), r"prompt_length must be"),
    ],
)
def test_bad_processor_values_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(temperature=-0.5), r"temperature must be >= 0 \(0 means greedy\), got -0\.5"),
        (dict(top_k=0), r"top_k must be a positive integer"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(min_p=2.0), r"min_p must be in \[0, 1\] or None, got 2\.0"),
        (dict(repetition_penalty=0.0), r"repetition_penalty must be a number from 0.01"),
        # past these a score overflows float32 and the softmax gives nan (found by the CLI fuzz)
        (dict(frequency_penalty=3.4e38), r"frequency_penalty must be a number from -100 to 100"),
        (dict(repetition_penalty=1e300), r"repetition_penalty must be a number from 0.01"),
        (dict(temperature=1e-30), r"below 1e-05: use 0 for greedy"),
        (dict(presence_penalty=float("inf")), r"presence_penalty must be a number from -100"),
    ],
)
def test_bad_settings_raise_in_builder_and_generate(gpt2_pair, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_processors(**kwargs)
    with pytest.raises(ValueError, match=message):
        generate(gpt2_pair[1], PROMPTS, 3, **kwargs)


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf")], ids=["nan", "+inf"]
)
def test_scores_of_a_diverged_model_are_a_clear_error_not_a_multinomial_failure(bad):
    """Found by the CLI fuzz: training at lr=3e5 left nan weights, and the final sample died in
    torch.multinomial. -inf alone is a filtered token and fine; nan, +inf or all -inf are not."""
    from buildlm.infer.processors import check_samplable, choose_next

    scores = torch.zeros(2, 5)
    scores[1, 2] = bad
    with pytest.raises(FloatingPointError, match="diverged"):
        choose_next(scores, greedy=False)
    check_samplable(torch.tensor([[0.0, float("-inf"), 1.0]]))  # filtered tokens are fine
    with pytest.raises(FloatingPointError):
        check_samplable(torch.full((1, 3), float("-inf")))
