"""``buildlm convert``: Hugging Face model folders and GGUF files <-> buildlm checkpoint folders.

    buildlm convert --from hf HF_DIR --out CKPT_DIR     # then: buildlm generate --model CKPT_DIR
    buildlm convert --to hf CKPT_DIR --out HF_DIR       # then: transformers' from_pretrained
    buildlm convert --to gguf CKPT_DIR --out m.gguf --dtype q8_0   # then: llama.cpp, Ollama
    buildlm convert --from gguf m.gguf --out CKPT_DIR   # then: buildlm finetune, generate, ...

A buildlm checkpoint folder is what training writes (see `buildlm.checkpoint_format`):
``config.json`` with the ModelConfig under ``"model"``, ``model.safetensors`` under buildlm's
names, and ``tokenizer.json``. Both directions write a temporary folder and rename it, holding
the lock of ``--out`` (`buildlm.lock`); a GGUF file is written under a temporary name and
renamed (`gguf_save`), and replaces an earlier GGUF file only with ``--force``. Files of yours already in ``--out`` are never replaced
or deleted; an earlier buildlm output there is replaced only with ``--force`` (`buildlm.atomic`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from buildlm.atomic import atomic_folder
from buildlm.cli_parser import Parser
from buildlm.hub.hf_config import model_type_of, read_hf_config
from buildlm.hub.load import load_hf
from buildlm.hub.save import save_hf
from buildlm.lock import folder_lock
from buildlm.tokenizer import Tokenizer


def _save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    """buildlm's readable JSON when the ids allow it, else Hugging Face's tokenizer.json.

    (`Tokenizer.save` needs ids laid out as 256 bytes then one per merge; GPT-2's are, a
    Hugging Face tokenizer with extra tokens may not be. `Tokenizer.load` reads both.)
    """
    try:
        tokenizer.save(path)
    except ValueError:
        tokenizer.save_hf(path)


def hf_to_checkpoint(
    src: str | os.PathLike,
    out: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    force: bool = False,
) -> Path:
    """Convert a Hugging Face model folder into a buildlm checkpoint folder ``out``.

    ``force`` replaces an earlier buildlm output in ``out``; files of yours there are kept.
    """
    model_type = model_type_of(read_hf_config(src))
    model, tokenizer = load_hf(src, dtype=dtype)
    source = {"format": "hf", "model_type": model_type, "path": str(Path(src).resolve())}
    return _write_checkpoint(model, tokenizer, source, out, force)


def gguf_to_checkpoint(
    src: str | os.PathLike,
    out: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    force: bool = False,
) -> Path:
    """Convert a GGUF file into a buildlm checkpoint folder ``out`` (float32 unless ``dtype``)."""
    from buildlm.hub.gguf_load import load_gguf

    model, tokenizer = load_gguf(src, dtype=dtype)
    source = {"format": "gguf", "path": str(Path(src).resolve())}
    return _write_checkpoint(model, tokenizer, source, out, force)


def _write_checkpoint(model, tokenizer: Tokenizer | None, source: dict, out, force: bool) -> Path:
    from buildlm.checkpoint_format import CONFIG, TOKENIZER, WEIGHTS, save_weights

    config = {"model": model.config.to_dict(), "source": source}
    with atomic_folder(out, force=force, will_write=(CONFIG, WEIGHTS, TOKENIZER)) as tmp:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_weights(model, tmp / WEIGHTS)
        if tokenizer is not None:
            _save_tokenizer(tokenizer, tmp / TOKENIZER)
    return Path(out)


def checkpoint_to_hf(
    src: str | os.PathLike,
    out: str | os.PathLike,
    model_type: str | None = None,
    force: bool = False,
) -> Path:
    """Export a buildlm checkpoint (or a run folder's newest one) as a Hugging Face folder."""
    from buildlm.checkpoint_format import load_checkpoint

    loaded = load_checkpoint(src)
    return save_hf(loaded.model, loaded.tokenizer, out, model_type=model_type, force=force)


def checkpoint_to_gguf(
    src: str | os.PathLike, out: str | os.PathLike, dtype: str | None = None, force: bool = False
) -> Path:
    """Export a buildlm checkpoint (or a run folder's newest one) as one GGUF file."""
    from buildlm.checkpoint_format import load_checkpoint
    from buildlm.hub.gguf_save import check_out_file, save_gguf

    check_out_file(out, force)  # before loading: a refused --out costs nothing
    loaded = load_checkpoint(src)
    return save_gguf(loaded.model, loaded.tokenizer, out, dtype=dtype or "f32", force=force)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="buildlm convert",
        description="Convert between Hugging Face model folders or GGUF files and buildlm "
        "checkpoints.",
        epilog="examples: buildlm convert --from hf ./gpt2 --out ./gpt2-buildlm | "
        "buildlm convert --to hf runs/shakespeare --out ./shakespeare-hf | "
        "buildlm convert --to gguf runs/shakespeare --out shakespeare.gguf --dtype q8_0",
    )
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--from",
        dest="from_format",
        choices=["hf", "gguf"],
        help="read a Hugging Face model folder or a GGUF file",
    )
    direction.add_argument(
        "--to",
        dest="to_format",
        choices=["hf", "gguf"],
        help="write a Hugging Face model folder or a GGUF file",
    )
    parser.add_argument(
        "path", help="the folder or .gguf file to convert (a run folder works with --to)"
    )
    parser.add_argument("--out", required=True, help="the folder (or, with --to gguf, file) to write")
    parser.add_argument(
        "--dtype",
        default=None,
        help="with --from: convert the weights (fp32, bf16 or fp16); with --to gguf: how the "
        "file stores them (f32, f16, bf16 or q8_0; default f32)",
    )
    parser.add_argument(
        "--model-type",
        default=None,
        help="with --to hf: gpt2, llama, qwen2 or qwen3 (default: the one the config fits)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier buildlm output in --out (files buildlm did not write are kept)",
    )
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if Path(args.out).resolve() == Path(args.path).resolve():
        raise ValueError(f"--out must differ from the input folder {args.path!r}")
    if args.from_format and args.model_type is not None:
        raise ValueError("--model-type applies to --to hf only")
    if args.to_format == "hf" and args.dtype is not None:
        raise ValueError("--dtype applies to --from and --to gguf only (--to hf keeps the dtype)")
    if args.to_format == "gguf" and args.model_type is not None:
        raise ValueError("--model-type applies to --to hf only (GGUF picks the architecture)")
    with folder_lock(args.out, "choose another --out"):
        if args.from_format:
            read = hf_to_checkpoint if args.from_format == "hf" else gguf_to_checkpoint
            path = read(args.path, args.out, dtype=args.dtype, force=args.force)
            print(f"wrote buildlm checkpoint {path}")
        elif args.to_format == "gguf":
            path = checkpoint_to_gguf(args.path, args.out, dtype=args.dtype, force=args.force)
            print(f"wrote GGUF file {path} (run it with llama.cpp: llama-cli -m {path})")
        else:
            path = checkpoint_to_hf(args.path, args.out, model_type=args.model_type, force=args.force)
            print(f"wrote Hugging Face model folder {path}")
