"""Scores of N sampled answers per question: pass@k and majority@k (self-consistency).

Sampling several answers and keeping a good one is the simplest way to spend more compute at
inference time. Two ways to keep one:

- **best of N, scored by a verifier** (pass@k): the question counts as solved when any of k
  samples is correct. That needs the verifier at answer time, so it is an upper bound for a
  system that cannot check, and exactly what a system that *can* check gets (unit tests for
  code; the reward of RL with verifiable rewards).
- **self-consistency** (majority@k, Wang et al. 2022): the answer most of the k samples give
  wins. No verifier is needed; correct reasoning paths tend to agree, wrong ones scatter.

Estimating pass@k from n >= k samples of which c are correct, the obvious "is one of the first
k correct" wastes the other samples. The unbiased estimator of Chen et al. 2021 (the Codex
paper) averages over every k-subset of the n samples:

    pass@k = 1 - C(n - c, k) / C(n, k)

(the chance that a random k-subset holds no correct sample, subtracted from 1). majority@k is
averaged over the n // k disjoint groups of k samples, so majority@1 is the mean accuracy of a
single sample, and it equals pass@1.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

VOTES = ("majority", "none")  # how the N answers are combined besides pass@k: a vote or not


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased chance that at least one of k samples is correct, given c correct of n."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)  # exact integers, one rounding


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer (None: no answer, never a vote); ties go to the earliest given."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def majority_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int) -> float:
    """The fraction of the ``len(answers) // k`` disjoint groups of k samples whose vote is right.

    ``correct[i]`` says whether ``answers[i]`` is right (equal answers are equally right).
    """
    if not 1 <= k <= len(answers):
        raise ValueError(f"majority@k needs 1 <= k <= {len(answers)} samples, got k={k}")
    right = {a for a, ok in zip(answers, correct, strict=True) if ok and a is not None}
    groups = len(answers) // k
    wins = sum(majority_vote(answers[g * k : (g + 1) * k]) in right for g in range(groups))
    return wins / groups


def k_values(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 4, ... and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else [*ks, n]
