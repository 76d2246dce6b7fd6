"""``buildlm prepare``: tokenize text files or bundled corpora into memmap token shards."""

from __future__ import annotations

import argparse

from buildlm.cli_parser import Parser
from buildlm.data.corpora import list_corpora


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="buildlm prepare",
        description=(
            "Tokenize text into train.bin / val.bin (flat uint16 or uint32 token ids) plus "
            "manifest.json and tokenizer.json, streaming and in parallel over files. "
            f"Bundled corpora: {', '.join(list_corpora())}."
        ),
    )
    parser.add_argument(
        "--input", nargs="+", required=True, metavar="FILE_OR_CORPUS",
        help="text files, folders of *.txt files, or bundled corpus names; each file is one document",
    )
    parser.add_argument(
        "--tokenizer", default="gpt2",
        help="'gpt2' or a tokenizer.json written by `buildlm tokenizer train` (default: gpt2)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--val-fraction", type=float, default=0.1,
        help="share of each document (its end) held out for validation (default 0.1)",
    )
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    parser.add_argument(
        "--block-mb", type=float, default=1.0,
        help="text block each worker tokenizes at a time, in MB (default 1; memory per worker grows with it)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--force", action="store_true",
        help="replace an earlier prepare output in --out (files buildlm did not write are kept)",
    )
    return parser


def main(argv: list[str]) -> None:
    from buildlm.data.shards import prepare_shards
    from buildlm.lock import folder_lock

    args = build_parser().parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    block_bytes = args.block_mb * (1 << 20)
    if not 1024 <= block_bytes <= 1 << 40:  # also refuses nan
        raise ValueError(f"--block-mb must be between 0.001 and 1048576 (1 TB), got {args.block_mb}")
    with folder_lock(args.out, "choose another --out"):
        manifest = prepare_shards(
            args.input,
            args.tokenizer,
            args.out,
            val_fraction=args.val_fraction,
            num_workers=args.workers,
            block_bytes=int(block_bytes),
            progress=not args.quiet,
            force=args.force,
        )
    splits = manifest["splits"]
    print(
        f"wrote {args.out}: train {splits['train']['tokens']:,} tokens, val {splits['val']['tokens']:,} "
        f"tokens ({manifest['dtype']}, vocab {manifest['vocab_size']:,}, "
        f"{len(manifest['sources'])} document(s))"
    )
