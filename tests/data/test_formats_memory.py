"""Reading records streams too: ``buildlm prepare`` on a 32x larger JSONL.zst or Parquet file
needs no more memory (the documents are never all held, as `test_prepare_memory` shows for text)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from buildlm.data.corpora import load_corpus

# Forks the command from a small interpreter and prints the kernel's peak RSS (KB) of it and of
# the children it waited for (see test_prepare_memory: launching from pytest would charge it
# pytest's own peak).
_LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def shakespeare_records(size: int, seed: int) -> list[str]:
    """About ``size`` bytes of documents: runs of 8-64 consecutive Shakespeare lines."""
    lines = load_corpus("shakespeare").splitlines(keepends=True)
    rng = np.random.default_rng(seed)
    docs, total = [], 0
    while total < size:
        start, n = int(rng.integers(0, len(lines) - 64)), int(rng.integers(8, 65))
        docs.append("".join(lines[start : start + n]))
        total += len(docs[-1])
    return docs


def write(path, docs) -> None:
    if path.name.endswith(".parquet"):
        pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
        # Parquet is read a row group at a time: the same group size (about 1 MB) in both files
        pq.write_table(pa.table({"text": docs}), path, row_group_size=800)
    else:
        zstandard = pytest.importorskip("zstandard")
        data = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
        path.write_bytes(zstandard.ZstdCompressor().compress(data))


def peak_rss(path, out) -> int:
    cmd = [sys.executable, "-m", "buildlm", "prepare", "--input", str(path), "--out", str(out)]
    cmd += ["--tokenizer", "gpt2", "--workers", "2", "--block-mb", "0.25", "--quiet"]
    done = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *cmd], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.split()[-1]) * 1024


@pytest.mark.parametrize("suffix", [".jsonl.zst", ".parquet"])
def test_memory_does_not_grow_with_the_records(tmp_path, suffix):
    small, big = tmp_path / f"small{suffix}", tmp_path / f"big{suffix}"
    write(small, shakespeare_records(1 << 20, seed=1))
    docs = shakespeare_records(32 << 20, seed=2)
    size = sum(len(d) for d in docs)
    write(big, docs)
    del docs
    base = peak_rss(small, tmp_path / "small")
    peak = peak_rss(big, tmp_path / "big")
    # Held whole, the 32 MB of text would add at least its size (Python strings, more);
    # streamed, the larger file adds a few MB at most (measured: 1 MB -> 256 MB of JSONL.zst,
    # 70 -> 75 MiB; the noise between two runs of one file is a few MB).
    assert peak - base < size / 3, (base, peak, size)
