"""Model tests run on one thread: their tensors are tiny, so a second OpenMP thread only adds
synchronisation, and on a loaded machine a descheduled thread stalls every op (40x slower)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
