"""``buildlm prepare`` streams: memory does not grow with the corpus, and in-flight work is bounded."""

import gzip
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

from buildlm.data.corpora import load_corpus
from buildlm.data.shards import (
    Source,
    _encode_piece,
    _encoded,
    load_manifest,
    load_split,
    plan_pieces,
)

# Forks the command from a small interpreter and prints the kernel's peak RSS (KB) of the command
# and of every child it waited for (the prepare workers). Launching the command straight from
# pytest would charge it pytest's own peak: Linux counts the parent's RSS at fork time.
_LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def shuffled_shakespeare(path, size: int, seed: int = 0) -> bytes:
    """About ``size`` bytes of runs of consecutive Shakespeare lines taken at random places."""
    lines = load_corpus("shakespeare").encode().splitlines(keepends=True)
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < size:
        start, n = int(rng.integers(0, len(lines) - 64)), int(rng.integers(8, 65))
        part = b"".join(lines[start : start + n])
        parts.append(part)
        total += len(part)
    data = b"".join(parts)
    path.write_bytes(data)
    return data


def prepare_peak_rss(path, out) -> int:
    """Run ``buildlm prepare`` (2 workers, 256 KB blocks); the peak RSS of its largest process."""
    cmd = [sys.executable, "-m", "buildlm", "prepare", "--input", str(path), "--out", str(out)]
    cmd += ["--tokenizer", "gpt2", "--workers", "2", "--block-mb", "0.25", "--quiet"]
    done = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, *cmd], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return int(done.stderr.split()[-1]) * 1024


def test_prepare_memory_does_not_grow_with_the_file(tmp_path):
    tiktoken = pytest.importorskip("tiktoken")
    small = tmp_path / "small.txt"
    shuffled_shakespeare(small, 1 << 20, seed=1)
    big = tmp_path / "big.txt"
    data = shuffled_shakespeare(big, 64 << 20)
    base = prepare_peak_rss(small, tmp_path / "small")
    peak = prepare_peak_rss(big, tmp_path / "big")
    # A process's baseline (interpreter, numpy, the GPT-2 tokenizer: ~70 MB) does not depend on
    # the corpus; a 64x larger file may add a few MB, never a share of the file.
    assert peak - base < len(data) / 8, (base, peak, len(data))

    # the ids are those of tokenizing the whole text in one go (the reference: tiktoken)
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from buildlm.tokenizer.patterns import GPT2

    assets = resources.files("buildlm.tokenizer") / "assets" / "gpt2"
    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / name).write_bytes(gzip.decompress((assets / f"{name}.gz").read_bytes()))
    ranks = data_gym_to_mergeable_bpe_ranks(
        str(tmp_path / "vocab.bpe"), str(tmp_path / "encoder.json")
    )
    enc = tiktoken.Encoding("gpt2", pat_str=GPT2, mergeable_ranks=ranks, special_tokens={})
    whole = enc.encode_to_numpy(data.decode())
    del data
    manifest = load_manifest(tmp_path / "big")
    train, val = load_split(tmp_path / "big", "train"), load_split(tmp_path / "big", "val")
    assert train[-1] == val[-1] == manifest["eot_id"] == 50256
    assert len(train) + len(val) - 2 == len(whole)
    assert np.array_equal(train[:-1], whole[: len(train) - 1])
    assert np.array_equal(val[:-1], whole[len(train) - 1 :])


def test_in_flight_pieces_are_bounded(tmp_path, small_tokenizer):
    path = tmp_path / "text.txt"
    shuffled_shakespeare(path, 100_000)
    pieces = plan_pieces([Source(str(path), path=str(path))], 0.1, 2_000)
    assert len(pieces) > 40
    taken = 0

    def lazily():  # counts the pieces _encoded has drawn (and so submitted) so far
        nonlocal taken
        for piece in pieces:
            taken += 1
            yield piece

    results = []
    for piece, ids, n_bytes in _encoded(lazily(), small_tokenizer, num_workers=2):
        results.append((piece, ids, n_bytes))
        assert taken - len(results) < 2 * 2  # at most 2 * num_workers in flight, this one included
    assert taken == len(pieces)
    assert [r[0] for r in results] == pieces  # in order
    for piece, ids, n_bytes in results:
        expected, expected_bytes = _encode_piece(piece, small_tokenizer)
        assert np.array_equal(ids, expected) and n_bytes == expected_bytes

    # a consumer that stops early leaves no work running behind it
    stream = _encoded(iter(pieces), small_tokenizer, num_workers=2)
    next(stream)
    stream.close()
