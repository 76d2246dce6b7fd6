"""Fixtures for the data tests: a small BPE tokenizer trained on The Verdict."""

import pytest

from buildlm.data.corpora import load_corpus
from buildlm.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def verdict() -> str:
    return load_corpus("the-verdict")


@pytest.fixture(scope="session")
def small_tokenizer(verdict) -> Tokenizer:
    return Tokenizer.train(verdict, 300, pattern="gpt2", progress=False)
