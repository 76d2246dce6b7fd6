"""Sliding-window perplexity against the Hugging Face recipe, computed with transformers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from buildlm.eval.perplexity import evaluate_perplexity, perplexity_of_ids, sliding_windows
from buildlm.infer.load import load_model


def hf_sliding_window_nll(
    hf_model, ids: torch.Tensor, context: int, stride: int
) -> tuple[float, int]:
    """The recipe of the transformers docs ("Perplexity of fixed-length models"), written out.

    The docs weight each window's mean loss by an approximate token count; here the count is
    the exact number of targets the shifted loss averages over, so the sum is the true total.
    """
    seq_len = ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + context, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = hf_model(input_ids, labels=target_ids).loss
        n_valid = int((target_ids[:, 1:] != -100).sum())  # labels are shifted inside the model
        nll_sum += float(loss) * n_valid
        n_tokens += n_valid
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return nll_sum, n_tokens


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, 100, (1, 203), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("context,stride", [(64, 16), (48, 31), (32, 1), (64, 63), (40, 40)])
def test_matches_transformers_sliding_window(hf_ids_model, ids, context, stride):
    model, _ = load_model(hf_ids_model.path, dtype=torch.float32)
    nll, n = hf_sliding_window_nll(hf_ids_model.hf, ids, context, stride)
    ours = perplexity_of_ids(model, ids[0], context, stride, batch_size=3)
    assert ours.tokens == n
    assert ours.loss == pytest.approx(nll / n, rel=1e-5)
    assert ours.ppl == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert math.isnan(ours.bpb)  # no byte count without a tokenizer


def test_stride_equal_to_context_is_disjoint_chunks(hf_ids_model, ids):
    model, _ = load_model(hf_ids_model.path, dtype=torch.float32)
    context = 50
    nll, n = 0.0, 0
    for start in range(0, ids.size(1), context):
        chunk = ids[:, start : start + context]
        if chunk.size(1) < 2:
            continue
        with torch.no_grad():
            loss = hf_ids_model.hf(chunk, labels=chunk).loss
        nll += float(loss) * (chunk.size(1) - 1)
        n += chunk.size(1) - 1
    ours = perplexity_of_ids(model, ids[0], context, context, batch_size=2)
    assert ours.tokens == n
    assert ours.loss == pytest.approx(nll / n, rel=1e-5)


def test_batch_size_does_not_change_the_result(hf_ids_model, ids):
    model, _ = load_model(hf_ids_model.path, dtype=torch.float32)
    one = perplexity_of_ids(model, ids[0], 64, 24, batch_size=1)
    many = perplexity_of_ids(model, ids[0], 64, 24, batch_size=16)
    assert many.tokens == one.tokens
    assert many.loss == pytest.approx(one.loss, rel=1e-6)


@given(n=st.integers(2, 300), context=st.integers(2, 64), data=st.data())
def test_windows_score_every_token_once(n, context, data):
    stride = data.draw(st.integers(1, context - 1)) if context > 2 else 1
    windows = sliding_windows(n, context, stride)
    scored = [t for w in windows for t in range(w.first_target, w.end)]
    assert scored == list(range(1, n))  # every token after the first, once, in order
    assert all(w.end - w.begin <= context and w.first_target > w.begin for w in windows)


def test_text_bits_per_byte_counts_the_scored_bytes(hf_text_model):
    from buildlm.data.corpora import load_corpus

    model, tokenizer = load_model(hf_text_model.path, dtype=torch.float32)
    text = load_corpus("the-verdict")[:2000]
    result = evaluate_perplexity(model, tokenizer, text, context=64, stride=32, batch_size=4)
    ids = tokenizer.encode(text)
    first = len(tokenizer.token_bytes(ids[0]))
    assert result.tokens == len(ids) - 1
    assert result.bytes == len(text.encode("utf-8")) - first
    assert result.bpb == pytest.approx(result.nats / math.log(2) / result.bytes, rel=1e-9)
    # transformers, same windows, on the same ids
    nll, n = hf_sliding_window_nll(hf_text_model.hf, torch.tensor([ids]), 64, 32)
    assert result.loss == pytest.approx(nll / n, rel=1e-5)
    short = evaluate_perplexity(model, tokenizer, text, 64, 32, max_tokens=100)
    assert short.tokens == 99


def test_bad_arguments_are_clear(hf_ids_model, ids):
    model, _ = load_model(hf_ids_model.path)
    with pytest.raises(ValueError, match="stride must lie in"):
        perplexity_of_ids(model, ids[0], 32, 33)
    with pytest.raises(ValueError, match="exceeds the model's context_length=64"):
        perplexity_of_ids(model, ids[0], 65, 8)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity_of_ids(model, ids[0, :1], 32, 8)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 100\)"):
        perplexity_of_ids(model, [1, 2, 100], 32, 8)
