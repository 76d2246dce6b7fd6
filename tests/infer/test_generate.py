"""generate(): greedy is an argmax loop, sampling is seeded, filters behave, bad input raises."""

import pytest
import torch

from buildlm.infer import generate
from buildlm.infer.sampling import sample_next, top_k_filter, top_p_filter
from buildlm.model import GPT, ModelConfig


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, context_length=8, d_model=32, n_layers=2, n_heads=4)
    m = GPT(cfg)
    with torch.no_grad():  # larger weights so the distribution is far from uniform
        for p in m.parameters():
            p.mul_(8 if p.dim() > 1 else 1)
    return m.train()


def _argmax_loop(model: GPT, idx: torch.Tensor, n: int) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            nxt = model(idx[:, -model.config.context_length :])[:, -1].argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], dim=1)
    model.train()
    return idx


def test_greedy_is_argmax_loop_and_crops_context(model):
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = generate(model, prompt, 12, temperature=0)  # 3 + 12 > context_length 8
    assert out.shape == (2, 15)
    assert torch.equal(out[:, :3], prompt)
    assert torch.equal(out, _argmax_loop(model, prompt, 12))
    assert model.training  # mode restored


def test_seeded_sampling_is_reproducible(model):
    prompt = torch.tensor([[1, 2, 3]] * 4)
    a = generate(model, prompt, 10, temperature=1.5, seed=7)
    torch.manual_seed(123)  # global RNG state does not matter
    b = generate(model, prompt, 10, temperature=1.5, seed=7)
    c = generate(model, prompt, 10, temperature=1.5, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({tuple(row.tolist()) for row in a}) > 1  # rows sample independently


def test_top_k_1_and_tiny_top_p_are_greedy(model):
    prompt = torch.tensor([[3, 1], [7, 7]])
    greedy = generate(model, prompt, 10, temperature=0)
    assert torch.equal(generate(model, prompt, 10, temperature=2.0, top_k=1, seed=0), greedy)
    assert torch.equal(generate(model, prompt, 10, temperature=2.0, top_p=1e-6, seed=0), greedy)


def test_stops_when_every_row_hit_eos(model):
    prompt = torch.tensor([[1, 2], [3, 4]])
    greedy = generate(model, prompt, 6, temperature=0)
    eos = int(greedy[0, 2])  # row 0's first generated token
    out = generate(model, prompt, 6, temperature=0, eos_id=eos)
    row1 = greedy[1, 2:].tolist()
    if eos in row1:  # both rows end once row 1 emits eos too
        assert out.shape[1] == 2 + row1.index(eos) + 1
    else:
        assert out.shape[1] == 8
    assert torch.all(out[0, 2:] == eos)  # finished row padded with eos
    assert torch.equal(out[1], greedy[1, : out.shape[1]])


def test_top_k_filter_keeps_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = top_k_filter(logits, 2)
    assert torch.isfinite(kept).tolist() == [[False, True, False, True, False]]
    assert torch.equal(top_k_filter(logits, 10), logits)


def test_top_p_filter_keeps_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.05, 0.25, 0.2]])
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.7)).tolist() == [[True, False, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.96)).tolist() == [[True, True, True, True]]


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.1, 0.6, 0.3])
    logits = probs.log().expand(20000, 3)
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample_next(logits, generator=gen), minlength=3) / 20000
    torch.testing.assert_close(counts, probs, atol=0.015, rtol=0)
    gen = torch.Generator().manual_seed(0)
    hot = torch.bincount(sample_next(logits, temperature=0.5, generator=gen), minlength=3) / 20000
    sharpened = probs**2 / (probs**2).sum()  # temperature 0.5 squares the probabilities
    torch.testing.assert_close(hot, sharpened, atol=0.015, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(temperature=-0.1), "temperature must be >= 0"),
        (dict(top_p=0.0), "top_p must be in"),
        (dict(top_p=1.5), "top_p must be in"),
        (dict(top_k=0), "top_k must be a positive integer"),
        (dict(max_new_tokens=-1), "max_new_tokens must be a non-negative integer"),
    ],
)
def test_bad_arguments_raise(model, kwargs, message):
    args = dict(max_new_tokens=3) | kwargs
    with pytest.raises(ValueError, match=message):
        generate(model, torch.tensor([[1, 2]]), **args)


def test_bad_prompts_raise(model):
    with pytest.raises(ValueError, match="non-empty"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="batch, time"):
        generate(model, torch.tensor([1, 2]), 3)
    with pytest.raises(ValueError, match="integer token ids"):
        generate(model, torch.tensor([[1.0, 2.0]]), 3)
