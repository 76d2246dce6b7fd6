"""SentencePiece-style encoding speed: buildlm's `SentencePieceBPE` vs Hugging Face tokenizers.

Both read the same ``tokenizer.json``: a BPE of 8192 tokens that ``tokenizers``' trainer learns
on the Shakespeare corpus (5 MB), laid out as SentencePiece models are (special tokens, 256
``<0xNN>`` byte tokens, then the pieces) and wrapped in Gemma's steps (``Replace(" ", "▁")``)
and in Llama 2 / Mistral's (``Prepend("▁")`` + ``Replace``, decoder ``Strip``). Neither family
has a pre-tokenizer, so a text between two special tokens is a single "word" to BPE.

Two workloads, on one thread (``RAYON_NUM_THREADS=1``):

- ``whole``: the 5 MB corpus as one string. Hugging Face merges it as one 5-million-symbol
  word; buildlm cuts it where no merge can cross (before a ``"▁"``) and caches the pieces.
- ``lines``: the corpus line by line (187 k texts): ``encode_batch`` for Hugging Face, a loop
  of ``encode`` for buildlm (its per-call overhead included).

"cold" is the first pass of a freshly loaded buildlm tokenizer, "warm" the second; Hugging Face
keeps its own word cache between calls, and is timed on its first pass. Loading either
tokenizer is not timed. The ids are checked to
be identical. Ratio = Hugging Face's time / buildlm's (> 1: buildlm is faster). The machine
may be shared: trust the ratios (same run) more than the seconds.

    python benchmarks/spm_encode.py           # the whole corpus
    python benchmarks/spm_encode.py --tiny    # 300 KB, vocab 2048 (a quick check)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: one thread, like buildlm

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402
from tokenizers import Tokenizer as HFTokenizer  # noqa: E402

from buildlm.data.corpora import load_corpus  # noqa: E402
from buildlm.tokenizer import Tokenizer  # noqa: E402

STYLES = {
    "gemma": (["<pad>", "<eos>", "<bos>", "<unk>"], normalizers.Replace(" ", "▁"), False),
    "llama": (
        ["<unk>", "<s>", "</s>"],
        normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
        True,
    ),
}


def build(style: str, text: str, vocab_size: int, path: Path) -> Path:
    """A SentencePiece-style tokenizer.json of ``style`` learned on ``text`` by tokenizers."""
    specials, normalizer, strip = STYLES[style]
    learner = HFTokenizer(models.BPE(unk_token="<unk>"))
    learner.normalizer = STYLES["llama"][1]
    learner.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, limit_alphabet=100, show_progress=False)
    learner.train_from_iterator(text.splitlines(), trainer=trainer)
    model = json.loads(learner.to_str())["model"]
    vocab = {t: i for i, t in enumerate(specials)}
    vocab.update({f"<0x{b:02X}>": len(specials) + b for b in range(256)})
    for piece, _ in sorted(model["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>",
                                 byte_fallback=True, fuse_unk=True))  # fmt: skip
    tok.normalizer = normalizer
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if strip else []))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.save(str(path))
    return path


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="300 KB of text, vocab 2048")
    args = parser.parse_args()
    text = load_corpus("shakespeare")
    vocab_size = 8192
    if args.tiny:
        text, vocab_size = text[:300_000], 2048
    lines = text.splitlines(keepends=True)
    mb = len(text.encode("utf-8")) / 1e6
    print(
        f"text: {mb:.1f} MB, {len(lines)} lines; vocab {vocab_size}; python {sys.version.split()[0]}"
    )
    print(f"{'workload':<14}{'HF tokenizers':>15}{'buildlm cold':>15}{'buildlm warm':>15}"
          f"{'HF/cold':>9}{'HF/warm':>9}  ids")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for style in STYLES:
            path = build(style, text, vocab_size, Path(tmp) / f"{style}.json")
            workloads = {
                "whole": (
                    lambda hf: hf.encode(text, add_special_tokens=False).ids,
                    lambda ours: ours.encode(text),
                ),
                "lines": (
                    lambda hf: [e.ids for e in hf.encode_batch(lines, add_special_tokens=False)],
                    lambda ours: [ours.encode(line) for line in lines],
                ),
            }
            for name, (theirs, mine) in workloads.items():
                hf = HFTokenizer.from_file(str(path))
                expected, t_hf = timed(lambda: theirs(hf))  # noqa: B023
                ours = Tokenizer.load(path)
                cold_ids, cold = timed(lambda: mine(ours))  # noqa: B023
                warm_ids, warm = timed(lambda: mine(ours))  # noqa: B023
                same = "identical" if cold_ids == warm_ids == expected else "DIFFER"
                print(f"{style + ' ' + name:<14}{t_hf:>14.2f}s{cold:>14.2f}s{warm:>14.2f}s"
                      f"{t_hf / cold:>9.2f}{t_hf / warm:>9.2f}  {same}")  # fmt: skip


if __name__ == "__main__":
    main()
