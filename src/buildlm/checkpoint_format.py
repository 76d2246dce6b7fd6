"""The checkpoint folder format: what a model folder holds, and how to read it back.

A checkpoint is a folder::

    config.json          model config (rebuilds the network) + train/data/tokenizer settings
    model.safetensors    the weights: a flat, safe format (no pickle, no code runs on load)
    tokenizer.json       the tokenizer, so the folder alone turns text into ids and back
    trainer_state.pt     optimizer moments, step, data position, random number generator states

A run folder keeps its checkpoints under ``checkpoints/step-XXXXXXX``. This module knows the
names, writes and reads the weights, lists and resolves checkpoints, and rebuilds a model for
inference (`load_checkpoint`). It knows nothing about training: the trainer's own state, the
random number generators and the rotation of old checkpoints live in `buildlm.train.checkpoint`,
so loading a model to generate text never imports the training package.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
TRAINER_STATE = "trainer_state.pt"
CHECKPOINTS = "checkpoints"
FILES = frozenset({CONFIG, WEIGHTS, TOKENIZER, TRAINER_STATE})
_STEP_DIR = re.compile(r"^step-(\d+)$")


# --- weights --------------------------------------------------------------------------------


def save_weights(model: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write the model's state dict (or a state dict) to ``path`` as safetensors.

    safetensors stores each tensor once and refuses two names for one memory block, which is
    what tied weights are (the output head *is* the token embedding). We store the first name
    and record the others as aliases in the file's metadata.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    state = model.state_dict() if isinstance(model, nn.Module) else model
    for name, t in state.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().to("cpu").contiguous()
    try:
        save_file(tensors, str(path), metadata={"format": "pt", "aliases": json.dumps(aliases)})
    except OSError:
        raise
    except Exception as err:  # safetensors' own error type hides the OSError (a full disk)
        raise _os_error(err, path) from err


def _os_error(err: Exception, path: str | os.PathLike) -> Exception:
    """The ``OSError`` inside a library's write error (``... (os error 28)``), else ``err``."""
    found = re.search(r"os error (\d+)", str(err))
    if found is None:
        return err
    code = int(found.group(1))
    return OSError(code, os.strerror(code), str(path))


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load :func:`save_weights` output into ``model`` (names and shapes must match exactly)."""
    model.load_state_dict(read_weights(model, path), strict=True)


def read_weights(model: nn.Module, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """:func:`save_weights` output as a state dict, checked against ``model``'s names and shapes."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types for bad files
        raise ValueError(
            f"{str(path)!r} is truncated or not a safetensors file ({err}); the checkpoint is "
            "damaged: use an earlier checkpoint or train again"
        ) from None
    for alias, name in json.loads(metadata.get("aliases", "{}")).items():
        tensors[alias] = tensors[name]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{str(path)!r} does not fit this model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}; was it saved from a different config.json?"
        )
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise ValueError(
                f"{str(path)!r}: {name} has shape {tuple(t.shape)}, the model expects "
                f"{tuple(expected[name].shape)}"
            )
    return tensors


# --- checkpoint folders ---------------------------------------------------------------------


def checkpoint_folder(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of ``step`` lives in a run folder."""
    return Path(run_dir) / CHECKPOINTS / f"step-{step:07d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoint folders of a run, oldest first."""
    parent = Path(run_dir) / CHECKPOINTS
    if not parent.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in parent.iterdir()
        if (m := _STEP_DIR.match(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder from itself or from a run folder (its newest checkpoint)."""
    path = Path(path)
    if (path / CONFIG).is_file():
        return path
    if path.is_dir():
        found = list_checkpoints(path)
        if found:
            return found[-1]
        raise FileNotFoundError(
            f"{str(path)!r} holds no checkpoint (no {CONFIG}, no {CHECKPOINTS}/step-*); pass a "
            "run folder written by `buildlm train` or one of its checkpoint folders"
        )
    raise FileNotFoundError(f"checkpoint or run folder {str(path)!r} not found")


def read_config(ckpt: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of a checkpoint folder."""
    path = Path(ckpt) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found; not a checkpoint folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is damaged ({err}); use an earlier checkpoint") from None
    if not isinstance(config, dict) or "model" not in config:
        raise ValueError(f"{str(path)!r} has no 'model' section; not a buildlm checkpoint")
    return config


@dataclass
class LoadedCheckpoint:
    """A model ready for inference, its tokenizer and its config.json."""

    model: nn.Module
    tokenizer: Any
    config: dict[str, Any]
    path: Path


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """Rebuild the model of a checkpoint (or a run's newest one) in eval mode, with its tokenizer.

    A LoRA fine-tune (``"lora"`` in config.json) comes back with its adapters merged into the
    weights: a plain `GPT`, as fast as the base model.
    """
    from buildlm.model import GPT, ModelConfig

    ckpt = resolve_checkpoint(path)
    config = read_config(ckpt)
    if (config.get("finetune") or {}).get("task") == "classify":
        raise ValueError(
            f"{str(ckpt)!r} holds a text classifier, not a language model; use "
            f"`buildlm classify --model {path} TEXT` (or buildlm.train.classify.load_classifier)"
        )
    model_config = ModelConfig.from_dict(config["model"])
    model = GPT(model_config)
    lora = config.get("lora") or {}
    if lora.get("rank"):  # a LoRA fine-tune: the adapters are saved beside the base weights
        from buildlm.model.lora import inject_lora

        inject_lora(model, lora["rank"], lora["alpha"], 0.0, lora["targets"])
    load_weights(model, ckpt / WEIGHTS)
    if lora.get("rank"):  # fold them in: inference runs a plain GPT at full speed
        from buildlm.model.lora import remove_lora

        remove_lora(model)
    model.to(device).eval()
    tokenizer = None
    if (ckpt / TOKENIZER).is_file():
        from buildlm.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(ckpt / TOKENIZER)
    return LoadedCheckpoint(model, tokenizer, config, ckpt)
