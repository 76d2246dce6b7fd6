"""beam_search() returns exactly what transformers' generate(num_beams=k) returns.

The reference is HF ``generate(num_beams=4, do_sample=False, ...)`` on a GPT-2 with the same
weights, over a grid of length penalties, early-stopping rules and EOS settings. The EOS token is
one that HF's own beam search emits early, so hypotheses really finish at different lengths and
the finished-hypothesis bookkeeping and stopping rules decide the answer.
"""

from collections import Counter

import pytest
import torch

from buildlm.infer import generate
from buildlm.infer.beam_search import beam_search
from buildlm.infer.processors import build_processors
from buildlm.model import GPT, ModelConfig

NEW = 16
PROMPTS = torch.randint(0, 67, (4, 6), generator=torch.Generator().manual_seed(1))


def _hf_beams(hf, prompts, eos=None, **kwargs) -> torch.Tensor:
    kwargs = dict(max_new_tokens=NEW, num_beams=4, do_sample=False) | kwargs
    if eos is not None:  # pad with eos, as buildlm does
        kwargs |= dict(eos_token_id=eos, pad_token_id=eos)
    else:
        kwargs |= dict(pad_token_id=0)
    return hf.generate(prompts, attention_mask=torch.ones_like(prompts), **kwargs)


def _most_common(ids: torch.Tensor, exclude: int | None = None) -> int:
    counts = Counter(t for t in ids.flatten().tolist() if t != exclude)
    return counts.most_common(1)[0][0]


@pytest.fixture(scope="module")
def early_eos(gpt2_pair) -> int:
    """The token HF's beam search emits most often in its first generated positions."""
    hf, _ = gpt2_pair
    t = PROMPTS.shape[1]
    return _most_common(_hf_beams(hf, PROMPTS)[:, t : t + 4])


@pytest.fixture(scope="module")
def late_eos(gpt2_pair, early_eos) -> int:
    """A token HF's beam search emits mostly late: some rows fill their k finished hypotheses
    long before others, which exercises the per-row bookkeeping of early_stopping=True."""
    hf, _ = gpt2_pair
    return _most_common(_hf_beams(hf, PROMPTS)[:, -NEW // 2 :], exclude=early_eos)


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("eos_kind", ["no-eos", "early-eos", "late-eos"])
def test_equals_transformers_beam_search(
    gpt2_pair, early_eos, late_eos, eos_kind, length_penalty, early_stopping
):
    hf, model = gpt2_pair
    eos = {"no-eos": None, "early-eos": early_eos, "late-eos": late_eos}[eos_kind]
    expected = _hf_beams(
        hf, PROMPTS, eos, length_penalty=length_penalty, early_stopping=early_stopping
    )
    got = beam_search(model, PROMPTS, NEW, 4, length_penalty, early_stopping, eos)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)


def test_the_grid_exercises_finished_hypotheses_and_stopping_rules(gpt2_pair, early_eos):
    """Guard for the test above: with this EOS, answers finish early and the settings matter."""
    hf, _ = gpt2_pair
    outs = {
        (lp, es): _hf_beams(hf, PROMPTS, early_eos, length_penalty=lp, early_stopping=es)
        for lp in (1.0, 2.0)
        for es in (False, True, "never")
    }
    assert any(o.shape[1] < PROMPTS.shape[1] + NEW for o in outs.values())
    assert any((o[:, PROMPTS.shape[1] :] == early_eos).any() for o in outs.values())
    assert not torch.equal(outs[2.0, True], outs[2.0, False])
    assert not torch.equal(outs[2.0, "never"], outs[2.0, False])
    no_eos = _hf_beams(hf, PROMPTS)
    greedy = hf.generate(PROMPTS, attention_mask=torch.ones_like(PROMPTS), max_new_tokens=NEW,
                         do_sample=False, pad_token_id=0)  # fmt: skip
    assert not torch.equal(no_eos, greedy)  # beam search finds something greedy does not


@pytest.mark.parametrize("row", range(4))
def test_single_prompt_equals_transformers_and_its_batch_row(gpt2_pair, early_eos, row):
    hf, model = gpt2_pair
    prompt = PROMPTS[row : row + 1]  # (1, T)
    expected = _hf_beams(hf, prompt, early_eos, num_beams=3, length_penalty=2.0)
    got = beam_search(model, prompt, NEW, 3, length_penalty=2.0, eos_id=early_eos)
    assert torch.equal(got, expected)
    batch = beam_search(model, PROMPTS, NEW, 3, length_penalty=2.0, eos_id=early_eos)
    assert torch.equal(batch[row, : got.shape[1]], got[0])
    assert torch.all(batch[row, got.shape[1] :] == early_eos)  # padded with eos


def test_repetition_penalty_processor_equals_transformers(gpt2_pair):
    hf, model = gpt2_pair
    expected = _hf_beams(hf, PROMPTS, repetition_penalty=1.5)
    procs = build_processors(temperature=0, repetition_penalty=1.5)
    got = beam_search(model, PROMPTS, NEW, 4, processors=procs)
    assert torch.equal(got, expected)
    assert not torch.equal(got, beam_search(model, PROMPTS, NEW, 4))


def test_one_beam_is_greedy(gpt2_pair, early_eos):
    _, model = gpt2_pair
    greedy = generate(model, PROMPTS, NEW, temperature=0)
    assert torch.equal(beam_search(model, PROMPTS, NEW, num_beams=1), greedy)
    # With an EOS, one beam that stops at its first finished hypothesis is greedy with EOS.
    greedy_eos = generate(model, PROMPTS, NEW, temperature=0, eos_id=early_eos)
    got = beam_search(model, PROMPTS, NEW, 1, early_stopping=True, eos_id=early_eos)
    assert torch.equal(got, greedy_eos)


def test_one_beam_crops_to_the_context_like_generate():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, context_length=8, d_model=32, n_layers=2, n_heads=4)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8 if p.dim() > 1 else 1)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    got = beam_search(model, prompt, 12, num_beams=1)  # 3 + 12 > context_length 8
    assert torch.equal(got, generate(model, prompt, 12, temperature=0))
    assert got.shape == (2, 15)
    assert model.training  # mode restored


class _ListCache:
    """A minimal key/value cache with reorder(), to check beam_search's cache path."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.offset = 0
        self.reorders = 0

    def update(self, layer, k, v):
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], dim=2)
            v = torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        if layer == self.n_layers - 1:
            self.offset = k.shape[2]
        return k, v

    def reorder(self, beam_indices):
        self.k = [t[beam_indices] for t in self.k]
        self.v = [t[beam_indices] for t in self.v]
        self.reorders += 1


def test_a_reorderable_cache_gives_the_same_beams(gpt2_pair, early_eos):
    hf, model = gpt2_pair
    cache = _ListCache(model.config.n_layers)
    got = beam_search(model, PROMPTS, NEW, 4, 2.0, False, early_eos, cache=cache)
    assert torch.equal(got, beam_search(model, PROMPTS, NEW, 4, 2.0, False, early_eos))
    assert torch.equal(got, _hf_beams(hf, PROMPTS, early_eos, length_penalty=2.0))
    assert cache.reorders > 0
    assert cache.k[0].shape[0] == PROMPTS.shape[0] * 4  # one cache row per beam


def test_zero_new_tokens_returns_the_prompt(gpt2_pair):
    _, model = gpt2_pair
    assert torch.equal(beam_search(model, PROMPTS, 0, 4), PROMPTS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_beams=0), r"num_beams must be a positive integer, got 0"),
        (dict(max_new_tokens=-2), r"max_new_tokens must be a non-negative integer, got -2"),
        (dict(early_stopping="sometimes"), r"early_stopping must be True, False or 'never'"),
        (dict(early_stopping=1), r"early_stopping must be True, False or 'never', got 1"),
        (dict(length_penalty=float("nan")), r"length_penalty must be a finite number"),
        (dict(eos_id=67), r"eos_id must be None or a token id in \[0, 67\), got 67"),
    ],
)
def test_bad_arguments_raise(gpt2_pair, kwargs, message):
    args = dict(max_new_tokens=3, num_beams=2) | kwargs
    with pytest.raises(ValueError, match=message):
        beam_search(gpt2_pair[1], PROMPTS, **args)


def test_bad_prompts_raise(gpt2_pair):
    _, model = gpt2_pair
    with pytest.raises(ValueError, match="non-empty"):
        beam_search(model, torch.zeros(1, 0, dtype=torch.long), 3, 2)
    with pytest.raises(ValueError, match="batch, time"):
        beam_search(model, torch.tensor([1, 2]), 3, 2)
    with pytest.raises(ValueError, match="integer token ids"):
        beam_search(model, torch.tensor([[1.0, 2.0]]), 3, 2)
