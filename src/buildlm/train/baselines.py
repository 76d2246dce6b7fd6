"""Count-based baselines: the losses a transformer has to beat to have learned anything.

- *uniform*: every id equally likely, ``ln(vocab_size)``;
- *unigram*: each token's frequency in the training split (ignores all context);
- *bigram*: the frequency of each token after the previous one. Pairs never seen in training
  would get probability zero (infinite loss), so the bigram estimate is mixed with the unigram
  one, Witten-Bell style: after a token ``a`` seen ``c(a)`` times followed by ``u(a)`` distinct
  tokens, trust the bigram counts with weight ``c(a) / (c(a) + u(a))``. A token followed by
  many different tokens is less predictable, so it leans more on the unigram.

All losses are mean cross-entropies in nats per token on the validation split, so they sit on
the same axis as the model's val loss.
"""

from __future__ import annotations

import math

import numpy as np


def uniform_loss(vocab_size: int) -> float:
    return math.log(vocab_size)


def _unigram_probs(train: np.ndarray, vocab_size: int) -> np.ndarray:
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    return (counts + 1.0) / (counts.sum() + vocab_size)  # add-one: unseen tokens stay finite


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy of ``val`` under add-one-smoothed unigram frequencies of ``train``."""
    train = np.asarray(train, dtype=np.int64)
    val = np.asarray(val, dtype=np.int64)
    p = _unigram_probs(train, vocab_size)
    return float(-np.log(p[val]).mean())


def bigram_loss(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy of ``val[1:]`` given ``val[:-1]`` under the interpolated bigram model.

    Pairs are counted sparsely (as sorted ``prev * V + next`` codes), so a 50k vocabulary costs
    memory proportional to the distinct pairs, not ``V**2``.
    """
    train = np.asarray(train, dtype=np.int64)
    val = np.asarray(val, dtype=np.int64)
    if len(val) < 2:
        raise ValueError("the bigram baseline needs at least two validation tokens")
    p_uni = _unigram_probs(train, vocab_size)
    codes, pair_counts = np.unique(train[:-1] * vocab_size + train[1:], return_counts=True)
    prev_counts = np.bincount(train[:-1], minlength=vocab_size).astype(np.float64)  # c(a)
    distinct_next = np.bincount(codes // vocab_size, minlength=vocab_size).astype(np.float64)  # u(a)

    a, b = val[:-1], val[1:]
    query = a * vocab_size + b
    idx = np.clip(np.searchsorted(codes, query), 0, len(codes) - 1)
    c_ab = np.where(codes[idx] == query, pair_counts[idx], 0).astype(np.float64)
    c_a = prev_counts[a]
    denom = c_a + distinct_next[a]
    weight = np.divide(c_a, denom, out=np.zeros_like(c_a), where=denom > 0)  # trust in the bigram
    p_bigram = np.divide(c_ab, c_a, out=np.zeros_like(c_a), where=c_a > 0)
    p = weight * p_bigram + (1.0 - weight) * p_uni[b]
    return float(-np.log(p).mean())


def baselines(train: np.ndarray, val: np.ndarray, vocab_size: int, max_tokens: int = 50_000_000) -> dict[str, float]:
    """Uniform, unigram and bigram val losses (counts use at most ``max_tokens`` train tokens)."""
    train = np.asarray(train[:max_tokens], dtype=np.int64)
    val = np.asarray(val[:max_tokens], dtype=np.int64)
    return {
        "uniform": uniform_loss(vocab_size),
        "unigram": unigram_loss(train, val, vocab_size),
        "bigram": bigram_loss(train, val, vocab_size),
    }
