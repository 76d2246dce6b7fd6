"""Preparing a large corpus: `buildlm prepare` vs tiktoken's batch encoding, throughput and memory.

A text file of the requested size (default 1 GB) is generated from the bundled Shakespeare
corpus: runs of 8-64 consecutive lines taken at random places (seeded), so the file is natural
text and not one block repeated verbatim. Then, each in its own subprocess so that its memory is
its own:

- buildlm: ``buildlm prepare --input FILE --tokenizer gpt2 --workers W --quiet`` (default
  val fraction 0.1 and 1 MB blocks), worker processes, uint16 ``train.bin`` / ``val.bin``;
- reference: tiktoken's GPT-2 encoding (built from the same bundled ``encoder.json`` and
  ``vocab.bpe``), reading the file in blocks of the same size cut at the same kind of place (a
  newline between two printable non-space ASCII characters), ``encode_ordinary_batch`` on
  ``2 * W`` blocks at a time with ``num_threads=W``, ids written as uint16. Reading in batches
  keeps its memory bounded too; handing it the whole file at once would hold 1 GB of text.

Each is timed from start to exit (interpreter start and tokenizer load included) and its memory
measured two ways: the peak RSS of its largest process, exact, from the kernel (``wait4``
reports the maximum over the process and the children it waited for), and the peak of the
summed RSS of its whole process tree (parent + workers), sampled every 50 ms, which counts
pages shared after ``fork`` once per process, so it is an upper bound. The token ids of the two
are checked to be identical (buildlm's two splits, less their ``<|endoftext|>``, against the
reference's stream).

A "machine" line gives the limits measured in the same run: numpy memcpy bandwidth, the rate of
reading the generated file back from the page cache, and Python dict lookups/s (the inner loop of
buildlm's cached encoding). The machine may be shared: trust the ratio more than the MB/s.

    python benchmarks/prepare.py                  # 1 GB file, workers = CPU count
    python benchmarks/prepare.py --size-mb 256    # another size
    python benchmarks/prepare.py --tiny           # 4 MB, 256 KB blocks (CI, seconds)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np

_SAFE_CUT = re.compile(rb"\n[\x21-\x7e]")


# --- the corpus --------------------------------------------------------------------------


def generate_corpus(path: Path, size_bytes: int, seed: int = 0) -> int:
    """Write about ``size_bytes`` of shuffled Shakespeare (whole lines) to ``path``; return its size."""
    from buildlm.data.corpora import load_corpus

    lines = load_corpus("shakespeare").encode("utf-8").splitlines(keepends=True)
    rng = np.random.default_rng(seed)
    written = 0
    with open(path, "wb") as f:
        while written < size_bytes:
            starts = rng.integers(0, len(lines) - 64, size=4096)
            lengths = rng.integers(8, 65, size=4096)
            buf = b"".join(
                b"".join(lines[s : s + n])
                for s, n in zip(starts.tolist(), lengths.tolist(), strict=True)
            )
            if written + len(buf) > size_bytes:  # stop at the last whole line within the size
                buf = buf[: buf.rfind(b"\n", 0, size_bytes - written) + 1]
                if not buf:
                    break
            f.write(buf)
            written += len(buf)
    return written


# --- the machine -------------------------------------------------------------------------


def machine_limits(corpus: Path) -> str:
    src = np.ones(64 * 2**20, dtype=np.uint8)
    dst = np.empty_like(src)
    copy = min(_timed(lambda: np.copyto(dst, src)) for _ in range(5))
    buf = bytearray(8 << 20)
    t0 = time.perf_counter()
    total = 0
    with open(corpus, "rb", buffering=0) as f:
        while (n := f.readinto(buf)) and total < (512 << 20):
            total += n
    read = total / (time.perf_counter() - t0)
    table = {i: i for i in range(100_000)}
    keys = list(range(100_000)) * 20
    lookups = len(keys) / _timed(lambda: list(map(table.__getitem__, keys)))
    load = os.getloadavg()[0]
    return (
        f"machine: {os.cpu_count()} CPUs (load average {load:.2f} at start); memcpy "
        f"{2 * src.nbytes / copy / 1e9:.1f} GB/s; file read from page cache {read / 1e9:.2f} GB/s; "
        f"{lookups / 1e6:.1f} M dict lookups/s"
    )


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- measuring a command: wall time, peak RSS of its largest process and of its whole tree ---


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:  # the process ended meanwhile, or no /proc
            pass
    return pids


def _rss_pss(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in bytes; PSS divides each shared page among its sharers."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):  # ended meanwhile
        pass
    return rss, pss


# A small launcher between us and the command: Linux charges a child the peak RSS of the process
# it was forked from, so the command is forked from this 9 MB interpreter, not from the benchmark.
_LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; return wall seconds, peak RSS of its largest process and of its process tree."""
    maxrss_file = log.with_suffix(".maxrss")
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER, str(maxrss_file), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        tree_peak, done = [0, 0], threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                pids = _tree(proc.pid)[1:]  # the command and its workers, not the launcher
                sizes = [_rss_pss(p) for p in pids]
                tree_peak[0] = max(tree_peak[0], sum(r for r, _ in sizes))
                tree_peak[1] = max(tree_peak[1], sum(p for _, p in sizes))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}"
        )
    # wait4's usage: ru_maxrss is the maximum over the process and the children it waited for (its
    # workers), the CPU time their sum
    maxrss, cpu = maxrss_file.read_text().split()  # both cover the process and its workers
    return {
        "seconds": seconds,
        "cpu": float(cpu),
        "max_process": int(maxrss) * 1024,
        "tree_rss": tree_peak[0],
        "tree_pss": tree_peak[1],
    }


# --- the reference, run in a subprocess: tiktoken over the same file's blocks ----------------


def _tiktoken_gpt2():
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from buildlm.tokenizer.patterns import GPT2

    assets = resources.files("buildlm.tokenizer") / "assets" / "gpt2"
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("encoder.json", "vocab.bpe"):
            (Path(tmp) / name).write_bytes(gzip.decompress((assets / f"{name}.gz").read_bytes()))
        ranks = data_gym_to_mergeable_bpe_ranks(
            str(Path(tmp) / "vocab.bpe"), str(Path(tmp) / "encoder.json")
        )
    return tiktoken.Encoding(
        "gpt2", pat_str=GPT2, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )


def _last_safe_cut(buf: bytes) -> int:
    """Just after the last newline with a printable non-space ASCII character on both sides, or -1.

    Such a cut never changes the ids (a newline after whitespace would: GPT-2's regex reads a
    text ending in "\\n\\n" as one chunk, but "\\n\\nX" as "\\n", "\\n", "X").
    """
    end = len(buf) - 1
    while (i := buf.rfind(b"\n", 1, end)) >= 0:
        if 0x21 <= buf[i + 1] <= 0x7E and 0x21 <= buf[i - 1] <= 0x7E:
            return i + 1
        end = i
    return -1


def _blocks(path: str, block_bytes: int):
    """The file as text blocks of about ``block_bytes``, each cut where ids cannot change."""
    with open(path, "rb") as f:
        rest = b""
        while chunk := f.read(block_bytes):
            buf = rest + chunk
            cut = _last_safe_cut(buf)
            if cut <= 0:
                rest = buf
                continue
            yield buf[:cut].decode("utf-8")
            rest = buf[cut:]
        if rest:
            yield rest.decode("utf-8")


def run_tiktoken(path: str, out: str, workers: int, block_bytes: int) -> None:
    enc = _tiktoken_gpt2()
    batch: list[str] = []
    with open(out, "wb") as f:

        def flush() -> None:
            for ids in enc.encode_ordinary_batch(batch, num_threads=workers):
                np.asarray(ids, dtype=np.uint16).tofile(f)
            batch.clear()

        for text in _blocks(path, block_bytes):
            batch.append(text)
            if len(batch) == 2 * workers:
                flush()
        flush()


# --- comparing the ids ---------------------------------------------------------------------


def same_ids(data_dir: Path, ref_file: Path) -> tuple[bool, int]:
    """buildlm's train + val ids without their trailing <|endoftext|> == the reference stream?"""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    ref = np.memmap(ref_file, dtype=np.uint16, mode="r")
    pos, same = 0, True
    for split in ("train", "val"):
        if manifest["splits"][split]["tokens"] == 0:
            continue
        ids = np.memmap(data_dir / f"{split}.bin", dtype=np.uint16, mode="r")
        same &= int(ids[-1]) == manifest["eot_id"]
        n = len(ids) - 1
        for lo in range(0, n, 1 << 26):  # compare 64M ids at a time
            hi = min(lo + (1 << 26), n)
            same &= bool(np.array_equal(ids[lo:hi], ref[pos + lo : pos + hi]))
        pos += n
    return same and pos == len(ref), pos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="a 4 MB file, 256 KB blocks (seconds; CI)"
    )
    parser.add_argument(
        "--size-mb",
        type=float,
        default=1000.0,
        help="size of the generated file, MB (default 1000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes / threads (default: CPUs)",
    )
    parser.add_argument(
        "--block-mb",
        type=float,
        default=1.0,
        help="text block per task, MB (default 1, as prepare)",
    )
    parser.add_argument(
        "--tmp",
        default=None,
        help="folder for the generated file and outputs (default: system temp)",
    )
    parser.add_argument("--_tiktoken", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._tiktoken:
        path, out, workers, block_bytes = args._tiktoken
        run_tiktoken(path, out, int(workers), int(block_bytes))
        return
    if args.tiny:
        args.size_mb, args.block_mb = 4.0, 0.25
    block_bytes = int(args.block_mb * 2**20)

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.txt"
        t0 = time.perf_counter()
        size = generate_corpus(corpus, int(args.size_mb * 1e6))
        mb = size / 1e6
        print(
            f"corpus: {mb:,.1f} MB of shuffled Shakespeare lines, generated in {time.perf_counter() - t0:.1f} s"
        )
        print(machine_limits(corpus))
        print(f"{args.workers} workers, {args.block_mb:g} MB blocks, GPT-2 vocabulary")

        ref_out = tmp / "tiktoken.bin"
        ref_cmd = [
            sys.executable,
            __file__,
            "--_tiktoken",
            str(corpus),
            str(ref_out),
            str(args.workers),
            str(block_bytes),
        ]
        ref = measure(ref_cmd, tmp / "tiktoken.log")
        ours_cmd = [
            sys.executable,
            "-m",
            "buildlm",
            "prepare",
            "--input",
            str(corpus),
            "--out",
            str(tmp / "data"),
            "--tokenizer",
            "gpt2",
            "--workers",
            str(args.workers),
            "--block-mb",
            f"{args.block_mb:g}",
            "--quiet",
        ]
        ours = measure(ours_cmd, tmp / "buildlm.log")
        same, n_tokens = same_ids(tmp / "data", ref_out)

    rows = []
    for name, r in (("tiktoken encode_ordinary_batch", ref), ("buildlm prepare", ours)):
        rows.append(
            [
                name,
                f"{r['seconds']:.1f}",
                f"{mb / r['seconds']:.2f}",
                f"{r['cpu']:.1f}",
                f"{mb / r['cpu']:.2f}",
                *(
                    f"{r[k] / 2**20:.0f} ({r[k] / size:.1%})"
                    for k in ("max_process", "tree_rss", "tree_pss")
                ),
            ]
        )
    header = [
        "run",
        "wall s",
        "MB/s",
        "CPU s",
        "MB per CPU s",
        "peak RSS largest process",
        "peak tree RSS",
        "peak tree PSS",
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(
        "memory in MiB (share of the file size); tree = the process and its workers, sampled every 50 ms"
    )
    print(
        f"ratio (tiktoken time / buildlm time, > 1: buildlm faster): {ref['seconds'] / ours['seconds']:.2f}; "
        f"{n_tokens:,} tokens, ids {'identical' if same else 'DIFFER'}"
    )
    if not same:
        raise SystemExit("the token ids differ")


if __name__ == "__main__":
    main()
