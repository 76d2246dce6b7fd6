"""Open a model folder for inference, whichever kind it is.

Two kinds of folder hold a model: a buildlm checkpoint (``config.json`` with the ModelConfig
under ``"model"``, as ``buildlm train`` and ``buildlm convert --from hf`` write) and a Hugging
Face model folder (``config.json`` with a ``model_type``, as ``save_pretrained`` and
``buildlm download`` write). A run folder stands for its newest checkpoint. A GGUF file (the
format llama.cpp runs; `buildlm.hub.gguf_load`) holds a model too. The inference commands
(``generate``, ``chat``) accept all of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


def load_model(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    quantize: str | None = None,
) -> tuple[nn.Module, Any]:
    """``(model, tokenizer or None)`` from a checkpoint, run or Hugging Face folder or a GGUF file,
    in eval mode.

    ``dtype`` converts the floating-point weights; ``quantize="int8"`` then replaces the linear
    layers by weight-only int8 ones (`buildlm.model.quantize`).
    """
    folder = Path(path)
    if folder.is_file() and folder.suffix == ".gguf":
        from buildlm.hub import load_gguf

        model, tokenizer = load_gguf(folder, dtype=dtype)
        return _quantized(model.to(device), quantize).eval(), tokenizer
    config_file = folder / "config.json"
    hf_config = None
    if config_file.is_file():
        try:
            hf_config = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{str(config_file)!r} is damaged ({err})") from None
    if isinstance(hf_config, dict) and "model_type" in hf_config and "model" not in hf_config:
        from buildlm.hub import load_hf

        model, tokenizer = load_hf(folder, dtype=dtype, device=device)
    else:
        from buildlm.checkpoint_format import load_checkpoint

        loaded = load_checkpoint(folder, device=device)
        model, tokenizer = loaded.model, loaded.tokenizer
        if dtype is not None:
            model.to(dtype)
    return _quantized(model, quantize).eval(), tokenizer


def _quantized(model: nn.Module, quantize: str | None) -> nn.Module:
    if quantize is None:
        return model
    if quantize != "int8":
        raise ValueError(f"unknown quantization {quantize!r}; the one supported is 'int8'")
    from buildlm.model.quantize import quantize_int8

    return quantize_int8(model)

