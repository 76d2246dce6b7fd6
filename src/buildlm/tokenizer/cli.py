"""``buildlm tokenizer train|encode|decode``: the tokenizer from the command line.

    buildlm tokenizer train --input shakespeare --vocab-size 4096 --out tok.json
    echo "Hello world" | buildlm tokenizer encode --tokenizer tok.json
    buildlm tokenizer encode --tokenizer gpt2 --input play.txt --out ids.npy
    buildlm tokenizer decode --tokenizer gpt2 --input ids.npy

``--tokenizer`` takes a file written by ``train`` (or ``Tokenizer.save``), a Hugging Face
``tokenizer.json`` (byte-level, or SentencePiece-style: Llama 2, Mistral, Gemma), or the name
``gpt2``.
Errors a user can cause raise ``ValueError``/``FileNotFoundError``; ``buildlm.cli`` prints them
as one line.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from tqdm import tqdm

from buildlm.atomic import atomic_file, atomic_write_text
from buildlm.cli_parser import Parser
from buildlm.tokenizer.bpe import Tokenizer
from buildlm.tokenizer.files import read_text
from buildlm.tokenizer.patterns import pattern_name
from buildlm.tokenizer.sentencepiece_bpe import SentencePieceBPE


def load_tokenizer(spec: str) -> Tokenizer | SentencePieceBPE:
    """A tokenizer file (buildlm JSON or Hugging Face ``tokenizer.json``), or ``gpt2``."""
    if Path(spec).is_file():
        return Tokenizer.load(spec)
    if spec == "gpt2":
        return Tokenizer.pretrained("gpt2")
    raise FileNotFoundError(
        f"--tokenizer {spec!r} is neither a tokenizer file nor 'gpt2'; "
        "create one with `buildlm tokenizer train ... --out tok.json`"
    )


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="buildlm tokenizer",
        description="Train a byte-level BPE tokenizer, encode text to ids, decode ids to text.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="learn BPE merges from text files or bundled corpora")
    train.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="FILE",
        help="text files (UTF-8) or bundled corpus names (shakespeare, the-verdict)",
    )
    train.add_argument(
        "--vocab-size",
        type=int,
        required=True,
        help="final vocabulary size: 256 bytes + merges + special tokens",
    )
    train.add_argument(
        "--pattern", default="gpt2", help="pre-tokenization: gpt2, cl100k, o200k or a regex"
    )
    train.add_argument(
        "--special",
        nargs="*",
        default=["<|endoftext|>"],
        metavar="TOKEN",
        help="special tokens (default <|endoftext|>; give none to have none)",
    )
    train.add_argument("--out", required=True, help="where to write the tokenizer JSON")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    for name, what in [("encode", "text to token ids"), ("decode", "token ids to text")]:
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument(
            "--tokenizer",
            required=True,
            help="buildlm or Hugging Face tokenizer JSON file, or 'gpt2'",
        )
        cmd.add_argument("--input", help="input file (default: standard input)")
        cmd.add_argument("--out", help="output file (default: standard output)")
    encode = sub.choices["encode"]
    encode.add_argument(
        "--allow-special",
        action="store_true",
        help="encode special-token text such as <|endoftext|> as the special id",
    )
    encode.add_argument(
        "--special-as-text", action="store_true", help="encode special-token text as ordinary text"
    )
    return parser


def main(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    if args.out is not None:
        _check_out(args.out)
    {"train": _train, "encode": _encode, "decode": _decode}[args.command](args)


def _check_out(out: str) -> None:
    """Refuse an ``--out`` in a folder that does not exist, before any work is done.

    The user named this file, so a typo in its folder is reported as such rather than created.
    """
    folder = Path(out).parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"the folder {str(folder)!r} does not exist; create it first or choose another "
            f"place for {Path(out).name!r}"
        )


def _train(args: argparse.Namespace) -> None:
    from buildlm.data.corpora import is_corpus_name, load_corpus

    if Path(args.out).is_dir():
        raise IsADirectoryError(
            f"--out {args.out!r} is a directory; give a file name like tok.json"
        )
    for value in args.input:
        if not is_corpus_name(value) and not Path(value).is_file():
            raise FileNotFoundError(
                f"--input {value!r} is neither a file nor a bundled corpus "
                "(shakespeare, the-verdict)"
            )
    if any(is_corpus_name(v) for v in args.input):
        texts: list = [load_corpus(v) if is_corpus_name(v) else read_text(v) for v in args.input]
    else:
        texts = [Path(v) for v in args.input]  # paths: training streams them
    tokenizer = Tokenizer.train(
        texts,
        args.vocab_size,
        pattern=args.pattern,
        special_tokens=tuple(args.special),
        progress=not args.quiet,
        strict=True,  # a vocab size the text cannot reach is refused, not silently cut short
    )
    tokenizer.save(args.out)
    print(
        f"wrote {args.out}: {tokenizer.vocab_size} tokens, {len(tokenizer.merges)} merges",
        file=sys.stderr,
    )
    if tokenizer.vocab_size < args.vocab_size:
        print(
            f"note: stopped at {tokenizer.vocab_size} of the {args.vocab_size} tokens asked: no "
            "pair of tokens is left to merge (each distinct word is one token); give more text "
            "for a larger vocabulary",
            file=sys.stderr,
        )


def _read_input(path: str | None) -> str:
    if path is None:  # bytes, so the result does not depend on the terminal's locale
        try:
            return sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"standard input is not UTF-8 text ({err.reason} at byte {err.start})"
            ) from None
    return read_text(path)


# A cut after "X\n" and before "Y" (X, Y not whitespace) is a chunk boundary for the built-in
# patterns (gpt2, cl100k, o200k): none of their chunks runs across a lone newline between two
# non-space characters, and a special token never contains a newline. So blocks cut there
# encode to exactly the ids of the whole text.
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")
BLOCK_CHARS = 1 << 20


def text_blocks(text: str, block_chars: int = BLOCK_CHARS) -> list[str]:
    """``text`` cut into blocks of about ``block_chars`` at safe boundaries (see ``_SAFE_CUT``)."""
    blocks, start = [], 0
    while len(text) - start > block_chars:
        cut = _SAFE_CUT.search(text, start + block_chars)
        if cut is None:
            break
        blocks.append(text[start : cut.start()])
        start = cut.start()
    blocks.append(text[start:])
    return blocks


def encode_text(
    tokenizer: Tokenizer | SentencePieceBPE, text: str, mode: str, progress: bool = True
) -> list[int]:
    """Encode with a progress bar over blocks when the text is long and the pattern built in."""
    encode = {
        "allow": lambda t: tokenizer.encode(t, allowed_special="all"),
        "text": tokenizer.encode_ordinary,
        "error": tokenizer.encode,
    }[mode]
    if mode == "error":
        for token in tokenizer.special_tokens:  # check once, not per block
            if token in text:
                encode(token)  # raises the ValueError that explains the choice
    splittable = (  # blocks are cut where a byte-level tokenizer's regex surely cuts
        isinstance(tokenizer, Tokenizer)
        and pattern_name(tokenizer.pattern) is not None
        and not any(ch.isspace() for token in tokenizer.special_tokens for ch in token)
    )
    if not splittable or len(text) <= 4 * BLOCK_CHARS:
        return encode(text)
    ids: list[int] = []
    with tqdm(
        total=len(text), unit="char", unit_scale=True, disable=None if progress else True
    ) as bar:
        for block in text_blocks(text):
            ids += encode(block)
            bar.update(len(block))
    return ids


def _encode(args: argparse.Namespace) -> None:
    import numpy as np

    tokenizer = load_tokenizer(args.tokenizer)
    text = _read_input(args.input)
    mode = "allow" if args.allow_special else "text" if args.special_as_text else "error"
    try:
        ids = encode_text(tokenizer, text, mode)
    except ValueError as err:
        if mode != "error":
            raise
        raise ValueError(
            f"{err}. On the command line: --allow-special or --special-as-text"
        ) from None
    if args.out and args.out.endswith(".npy"):
        dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
        with atomic_file(args.out) as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(ids, dtype=dtype))
    elif args.out:
        atomic_write_text(args.out, " ".join(map(str, ids)) + "\n")
    else:
        sys.stdout.write(" ".join(map(str, ids)) + "\n")


def _read_ids(path: str | None) -> list[int]:
    if path is not None and path.endswith(".npy"):
        import numpy as np

        if not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path!r}")
        array = np.load(path, allow_pickle=False)
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise ValueError(
                f"{path}: expected a 1-D integer array of token ids, got {array.dtype} {array.shape}"
            )
        return array.tolist()
    words = _read_input(path).split()
    try:
        return [int(w) for w in words]
    except ValueError:
        bad = next(w for w in words if not w.lstrip("-").isdigit())
        raise ValueError(
            f"{path or 'stdin'}: {bad[:40]!r} is not a token id; "
            "expected whitespace-separated integers"
        ) from None


def _decode(args: argparse.Namespace) -> None:
    tokenizer = load_tokenizer(args.tokenizer)
    text = tokenizer.decode(_read_ids(args.input))
    if args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.flush()
