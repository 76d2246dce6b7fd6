"""The sliding-window dataset, its DataLoader and the resumable random-window batches."""

import numpy as np
import pytest
import torch

from buildlm.data.dataset import RandomWindowBatches, SlidingWindowDataset, create_dataloader


def book_windows(ids, max_length, stride):
    """The book's GPTDatasetV1 construction, written out directly."""
    inputs, targets = [], []
    for i in range(0, len(ids) - max_length, stride):
        inputs.append(ids[i : i + max_length])
        targets.append(ids[i + 1 : i + max_length + 1])
    return inputs, targets


@pytest.mark.parametrize(("n", "context", "stride"), [(50, 8, 3), (50, 8, 8), (9, 8, 1), (40, 4, 1), (33, 5, 7)])
def test_windows_match_direct_construction(n, context, stride):
    ids = list(range(1000, 1000 + n))
    ds = SlidingWindowDataset(ids, context, stride)
    inputs, targets = book_windows(ids, context, stride)
    assert len(ds) == len(inputs)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == torch.long and x.shape == (context,)
        assert x.tolist() == inputs[i]
        assert y.tolist() == targets[i]


def test_targets_are_inputs_shifted_by_one():
    ids = np.random.default_rng(0).integers(0, 500, size=300)
    ds = SlidingWindowDataset(ids, 16, 5)
    for i in range(len(ds)):
        x, y = ds[i]
        assert torch.equal(x[1:], y[:-1])
        assert y[-1].item() == ids[i * 5 + 16]


def test_dataloader_shapes_and_count(small_tokenizer, verdict):
    loader = create_dataloader(
        verdict, small_tokenizer, batch_size=4, context_length=32, stride=32, shuffle=False, drop_last=True
    )
    n_tokens = len(small_tokenizer.encode(verdict, allowed_special={"<|endoftext|>"}))
    n_windows = len(range(0, n_tokens - 32, 32))
    batches = list(loader)
    assert len(batches) == n_windows // 4
    for x, y in batches:
        assert x.shape == (4, 32) and y.shape == (4, 32)
        assert x.dtype == torch.long
    ids = small_tokenizer.encode(verdict)
    x0, y0 = batches[0]
    assert x0[1].tolist() == ids[32:64] and y0[1].tolist() == ids[33:65]


def test_dataloader_seeded_shuffle_repeats():
    ids = list(range(500))
    a = [x.tolist() for x, _ in create_dataloader(ids, batch_size=3, context_length=10, stride=7, seed=5)]
    b = [x.tolist() for x, _ in create_dataloader(ids, batch_size=3, context_length=10, stride=7, seed=5)]
    assert a == b


def test_too_short_corpus_is_a_clear_error():
    with pytest.raises(ValueError, match="too short.*context_length=64"):
        SlidingWindowDataset(list(range(40)), context_length=64, stride=1)
    with pytest.raises(ValueError, match="context_length"):
        RandomWindowBatches(np.arange(10), batch_size=2, context_length=10)
    with pytest.raises(ValueError, match="batch_size"):
        create_dataloader(list(range(40)), batch_size=8, context_length=16, stride=16)


def test_random_windows_are_slices_of_the_stream(tmp_path):
    ids = np.arange(10_000, dtype=np.uint16)
    path = tmp_path / "tokens.bin"
    ids.tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r")
    batches = RandomWindowBatches(mm, batch_size=6, context_length=20, seed=3)
    for _ in range(5):
        x, y = next(batches)
        assert x.shape == (6, 20) and x.dtype == torch.long
        # the stream is 0, 1, 2, ...: each row is consecutive and y is x shifted by one
        assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(6, 19, dtype=torch.long))
        assert torch.equal(y, x + 1)
        assert int(y.max()) < len(ids)


def test_random_windows_resume_exactly():
    ids = np.random.default_rng(1).integers(0, 1000, size=5000)
    a = RandomWindowBatches(ids, 4, 16, seed=7)
    first = [next(a) for _ in range(6)]
    state = {"seed": 7, "step": 3}
    b = RandomWindowBatches(ids, 4, 16, seed=7)
    b.load_state_dict(state)
    for k in range(3, 6):
        xb, yb = next(b)
        assert torch.equal(xb, first[k][0]) and torch.equal(yb, first[k][1])
    assert a.state_dict() == {"seed": 7, "step": 6}
    other = RandomWindowBatches(ids, 4, 16, seed=8)
    assert not torch.equal(other.batch_at(0)[0], a.batch_at(0)[0])
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)


def test_every_start_position_is_reachable():
    ids = np.arange(12)
    batches = RandomWindowBatches(ids, batch_size=64, context_length=4, seed=0)
    starts = {int(x[i, 0]) for x, _ in (batches.batch_at(k) for k in range(5)) for i in range(64)}
    assert starts == set(range(12 - 4))  # windows of 5 ids: starts 0 .. 7
