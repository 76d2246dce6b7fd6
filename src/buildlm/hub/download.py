"""``buildlm download``: fetch a model folder from the Hugging Face Hub.

Only what buildlm reads is downloaded: ``config.json``, the weights (safetensors when the
repository has them, else ``pytorch_model*.bin``) and the tokenizer files. The folder then loads
with ``buildlm.hub.load_hf(DIR)`` or converts with ``buildlm convert --from hf DIR --out CKPT``.

Gated models (Llama) need a Hugging Face token: ``huggingface-cli login`` or ``HF_TOKEN``.
``huggingface_hub`` is imported only here, so the rest of buildlm works without it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from buildlm.cli_parser import Parser

_METADATA = ["config.json", "generation_config.json", "tokenizer*", "vocab.json", "merges.txt"]
_SAFETENSORS = ["*.safetensors", "*.safetensors.index.json"]
_PYTORCH = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]


def download(repo_id: str, out: str | os.PathLike, revision: str | None = None) -> Path:
    """Download ``repo_id`` (e.g. ``"openai-community/gpt2"``) into the folder ``out``."""
    try:
        from huggingface_hub import list_repo_files, snapshot_download
    except ImportError:
        raise ValueError(
            "downloading needs huggingface_hub: pip install 'buildlm[hub]' (or "
            "huggingface_hub); or fetch the folder yourself and run "
            "`buildlm convert --from hf DIR --out DIR`"
        ) from None
    try:
        files = list_repo_files(repo_id, revision=revision)
        weights = _SAFETENSORS if any(f.endswith(".safetensors") for f in files) else _PYTORCH
    except Exception:  # offline: a cached copy may still be there, whatever its format
        weights = _SAFETENSORS + _PYTORCH
    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            local_dir=str(out),
            allow_patterns=_METADATA + weights,
        )
    except Exception as err:  # offline, unknown repository, gated without a token, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"could not download {repo_id!r} from the Hugging Face Hub ({type(err).__name__}: "
            f"{reason}). Without network access, copy the model folder (config.json, "
            "*.safetensors, tokenizer files) here by other means and point buildlm at it: "
            "`buildlm convert --from hf DIR --out DIR` or buildlm.hub.load_hf(DIR)"
        ) from None
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="buildlm download",
        description="Download a model (config, weights, tokenizer) from the Hugging Face Hub.",
    )
    parser.add_argument("name", help="repository id, e.g. openai-community/gpt2 or Qwen/Qwen3-0.6B")
    parser.add_argument("--out", required=True, help="folder to write the model files into")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    path = download(args.name, args.out, args.revision)
    print(f"downloaded {args.name} to {path}")
    print(f"load it with buildlm.hub.load_hf({str(path)!r}), or make a buildlm checkpoint:")
    print(f"  buildlm convert --from hf {path} --out {path}-buildlm")
