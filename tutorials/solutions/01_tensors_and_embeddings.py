"""Worked answers for stage 1. Load one into its cell with `%load -s NAME solutions/01_tensors_and_embeddings.py`."""

# %% exercise: one_hot_embedding
import torch
import torch.nn.functional as F
from torch import nn


class OneHotEmbedding(nn.Module):
    """An embedding table used through a one-hot matrix product instead of indexing."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_embeddings, embedding_dim))  # (V, d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(ids, num_classes=self.weight.shape[0]).to(self.weight.dtype)  # (..., V)
        return one_hot @ self.weight  # (..., V) @ (V, d) -> (..., d)


# %% exercise: token_and_position_embedding
import torch
from torch import nn


class TokenAndPositionEmbedding(nn.Module):
    """Token vectors plus learned position vectors: what GPT-2's first block receives."""

    def __init__(self, vocab_size: int, context_length: int, d_model: int) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context_length, d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)  # (T,)
        return self.tok_emb(ids) + self.pos_emb(positions)  # (B, T, d) + (T, d)


# %% exercise: sinusoidal
import torch


def sinusoidal(n_positions: int, d: int) -> torch.Tensor:
    """The fixed sine/cosine position table, shape (n_positions, d)."""
    p = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (P, 1)
    two_i = torch.arange(0, d, 2, dtype=torch.float32)  # the even columns 2i
    angles = p / 10000 ** (two_i / d)  # (P, d/2)
    table = torch.zeros(n_positions, d)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table
