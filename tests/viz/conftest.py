"""Shared fixtures for the picture tests: a small random GPT that reads GPT-2's tokens.

Tests run on one thread: their tensors are tiny, so a second OpenMP thread only adds
synchronisation, and on a loaded machine a descheduled thread stalls every op.
"""

import struct
from pathlib import Path

import matplotlib.image
import pytest
import torch

from buildlm.model import GPT, ModelConfig
from buildlm.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.pretrained("gpt2")


@pytest.fixture(scope="session")
def model() -> GPT:
    """2 layers, 4 heads, GPT-2's vocabulary; weights drawn wide (std 0.3) so attention is far
    from uniform and a wrong layer or head would show."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset(
        "tiny", vocab_size=50257, context_length=64, d_model=32, n_layers=2, n_heads=4,
        init_std=0.3,
    )  # fmt: skip
    return GPT(cfg).eval()


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header (the 8-byte signature, then the IHDR chunk), checked
    against what matplotlib reads back from the whole file."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    pixels = matplotlib.image.imread(path)  # decodes every row: a truncated file fails here
    assert pixels.shape[:2] == (height, width)
    return width, height


@pytest.fixture
def png_size():
    return _png_size
