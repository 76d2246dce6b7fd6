"""``buildlm prepare``: tokenize text, JSONL/JSON, CSV/TSV, Parquet (also .gz/.zst), Hugging Face
datasets (``hf:NAME``) or bundled corpora into memmap token shards."""

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
        "--input", nargs="+", required=True, metavar="INPUT",
        help="files (.txt, .jsonl, .json, .csv, .tsv, .parquet, each also .gz or .zst), folders, "
        "glob patterns, hf:NAME (a Hugging Face dataset, or hf:/local/folder) or bundled corpus "
        "names; a text file is one document, a record (line, row, item) of the others is one",
    )
    parser.add_argument(
        "--field", default="text",
        help="the field (JSON key, CSV/Parquet column) holding each document's text (default: text); "
        "a record without it but with a chat 'messages' list is rendered with --chat-template",
    )
    parser.add_argument("--chat-template", default="chatml", choices=("chatml", "llama3"),
                        help="how chat 'messages' records are rendered (default: chatml)")
    parser.add_argument(
        "--on-error", default="raise", choices=("raise", "skip"),
        help="a malformed record or one without the field: stop with its file and line (raise, "
        "the default), or count and skip it (skip)",
    )
    parser.add_argument("--split", default="train", help="hf: datasets: the split to read (default: train)")
    parser.add_argument("--subset", default=None, help="hf: datasets: the subset (configuration) name")
    parser.add_argument("--no-streaming", action="store_true",
                        help="hf: datasets: download the dataset first instead of streaming it")
    parser.add_argument("--max-documents", type=int, default=None,
                        help="stop after this many documents (default: all)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="stop after the document that reaches this many tokens (default: all)")
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
    from buildlm.data.documents import ReadOptions
    from buildlm.data.shards import prepare_shards
    from buildlm.lock import folder_lock

    args = build_parser().parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    block_bytes = args.block_mb * (1 << 20)
    if not 1024 <= block_bytes <= 1 << 40:  # also refuses nan
        raise ValueError(f"--block-mb must be between 0.001 and 1048576 (1 TB), got {args.block_mb}")
    read = ReadOptions(field=args.field, chat_template=args.chat_template, on_error=args.on_error,
                       split=args.split, subset=args.subset, streaming=not args.no_streaming,
                       flag_style="prepare")  # fmt: skip
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
            read=read,
            max_documents=args.max_documents,
            max_tokens=args.max_tokens,
        )
    splits = manifest["splits"]
    print(
        f"wrote {args.out}: train {splits['train']['tokens']:,} tokens, val {splits['val']['tokens']:,} "
        f"tokens ({manifest['dtype']}, vocab {manifest['vocab_size']:,}, "
        f"{splits['train']['documents']:,} document(s))"
    )
