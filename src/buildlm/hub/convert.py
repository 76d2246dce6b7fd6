"""``buildlm convert``: Hugging Face model folder <-> buildlm checkpoint folder.

    buildlm convert --from hf HF_DIR --out CKPT_DIR     # then: buildlm generate --model CKPT_DIR
    buildlm convert --to hf CKPT_DIR --out HF_DIR       # then: transformers' from_pretrained

A buildlm checkpoint folder is what training writes (see `buildlm.checkpoint_format`):
``config.json`` with the ModelConfig under ``"model"``, ``model.safetensors`` under buildlm's
names, and ``tokenizer.json``. Both directions write a temporary folder and rename it, holding
the lock of ``--out`` (`buildlm.lock`). Files of yours already in ``--out`` are never replaced
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
    from buildlm.checkpoint_format import CONFIG, TOKENIZER, WEIGHTS, save_weights

    model_type = model_type_of(read_hf_config(src))
    model, tokenizer = load_hf(src, dtype=dtype)
    config = {
        "model": model.config.to_dict(),
        "source": {"format": "hf", "model_type": model_type, "path": str(Path(src).resolve())},
    }
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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="buildlm convert",
        description="Convert between Hugging Face model folders and buildlm checkpoints.",
        epilog="examples: buildlm convert --from hf ./gpt2 --out ./gpt2-buildlm | "
        "buildlm convert --to hf runs/shakespeare --out ./shakespeare-hf",
    )
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--from", dest="from_format", choices=["hf"], help="read a Hugging Face model folder"
    )
    direction.add_argument(
        "--to", dest="to_format", choices=["hf"], help="write a Hugging Face model folder"
    )
    parser.add_argument("path", help="the folder to convert (a run folder works with --to hf)")
    parser.add_argument("--out", required=True, help="the folder to write")
    parser.add_argument(
        "--dtype", default=None, help="with --from hf: convert the weights (fp32, bf16 or fp16)"
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
    if args.to_format and args.dtype is not None:
        raise ValueError("--dtype applies to --from hf only (an export keeps the dtype)")
    with folder_lock(args.out, "choose another --out"):
        if args.from_format:
            path = hf_to_checkpoint(args.path, args.out, dtype=args.dtype, force=args.force)
            print(f"wrote buildlm checkpoint {path}")
        else:
            path = checkpoint_to_hf(args.path, args.out, model_type=args.model_type, force=args.force)
            print(f"wrote Hugging Face model folder {path}")
