"""Checkpoints: everything needed to use a model, and everything needed to resume its training.

A checkpoint is a folder::

    config.json          model config (rebuilds the network) + train/data/tokenizer settings
    model.safetensors    the weights: a flat, safe format (no pickle, no code runs on load)
    tokenizer.json       the tokenizer, so the folder alone turns text into ids and back
    trainer_state.pt     optimizer moments, step, data position, random number generator states

Exact resumption needs *all* of the last file: the AdamW moments (or the next updates differ),
the data position (or the batches differ) and the RNG states (or dropout masks differ). RNG
states are stored as plain tensors and lists so that ``torch.load(weights_only=True)`` (which
refuses arbitrary pickled objects, so a downloaded checkpoint cannot run code) reads them.

Writing is atomic: the files go into a temporary folder beside the final one, which is renamed
into place only when complete. A crash mid-save leaves the previous checkpoints untouched, and
a folder named ``step-*`` is always whole. The last ``keep`` checkpoints are kept (an older one
that holds files buildlm did not write is kept too). A damaged checkpoint in the way of a save
is moved aside, never deleted (`buildlm.train.checkpoint_health`, which also finds the newest
good checkpoint to resume from). A full disk is reported as the ``OSError`` it is, not as the
serializing library's own error.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from buildlm.atomic import (
    OUTPUTS,
    adopt_files,
    atomic_folder,
    atomic_write_json,
    foreign_entries,
    remove_folder,
    remove_stale_temporaries,
)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
TRAINER_STATE = "trainer_state.pt"
CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_FILES = frozenset({CONFIG, WEIGHTS, TOKENIZER, TRAINER_STATE})
DAMAGED = ".damaged"


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


class _RecordingWriter(io.RawIOBase):
    """A file wrapper that remembers the ``OSError`` of a failed write.

    ``torch.save`` reports a failed write (a full disk) as a ``RuntimeError`` about stream
    positions; the recorded ``OSError`` says what really happened.
    """

    def __init__(self, f: io.BufferedIOBase) -> None:
        self.f = f
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # noqa: ANN001 - any bytes-like object
        try:
            return self.f.write(b)
        except OSError as err:
            self.error = err
            raise


def save_trainer_state(state: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to ``path``, a failed write raised as the ``OSError`` it is."""
    with open(path, "wb") as f:
        writer = _RecordingWriter(f)
        try:
            torch.save(state, writer)
        except RuntimeError:
            if writer.error is not None:
                raise OSError(writer.error.errno, writer.error.strerror, str(path)) from None
            raise


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


# --- random number generators ---------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, as weights_only-loadable values."""
    version, mt, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the states :func:`capture_rng` recorded."""
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in mt.tolist()), gauss))
    keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- checkpoint folders ---------------------------------------------------------------------


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model: nn.Module,
    config: dict[str, Any],
    tokenizer: Any = None,
    trainer_state: dict[str, Any] | None = None,
    keep: int = 2,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``run_dir/checkpoints/step-XXXXXXX`` atomically and keep the newest ``keep``.

    ``config`` is the JSON-ready dict for config.json; it must hold ``"model"`` (the
    ModelConfig as a dict). ``weights`` (a full state dict gathered from FSDP shards) replaces
    ``model.state_dict()``. Returns the checkpoint folder.
    """
    if "model" not in config:
        raise ValueError("config.json needs the model config under 'model'")
    final = checkpoint_folder(run_dir, step)
    remove_stale_temporaries(final.parent)  # left by a run killed while saving
    if final.is_dir():  # an earlier save of this step (a resumed run passes it again)
        from buildlm.train.checkpoint_health import checkpoint_problem, set_aside

        problem = checkpoint_problem(final, resumable=trainer_state is not None)
        if problem is not None:
            set_aside(final, problem)  # kept for inspection, never deleted
        elif not (final / OUTPUTS).is_file() and not foreign_entries(final) - _FILES:
            adopt_files(final, foreign_entries(final))  # saved before buildlm listed its files
    with atomic_folder(final, force=True, will_write=_FILES) as tmp:
        atomic_write_json(tmp / CONFIG, {**config, "step": step})
        save_weights(model if weights is None else weights, tmp / WEIGHTS)
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER)
        if trainer_state is not None:
            save_trainer_state(trainer_state, tmp / TRAINER_STATE)
    for old in list_checkpoints(run_dir)[:-keep]:
        if not foreign_entries(old) - _FILES:  # a folder holding files of yours is kept
            remove_folder(old)
    return final


def checkpoint_folder(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of ``step`` lives in a run folder."""
    return Path(run_dir) / CHECKPOINTS / f"step-{step:07d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoint folders of a run, oldest first."""
    parent = Path(run_dir) / CHECKPOINTS
    if not parent.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in parent.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
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


def load_trainer_state(ckpt: str | os.PathLike) -> dict[str, Any]:
    """``trainer_state.pt``, read with ``weights_only=True``."""
    path = Path(ckpt) / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} not found: this checkpoint holds only weights and cannot be resumed"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise ValueError(
                f"{str(path)!r} holds Python objects other than tensors and plain values, so it "
                "was not loaded (buildlm never unpickles code: weights_only=True); use a "
                "checkpoint that buildlm wrote, or an earlier one"
            ) from None
        raise ValueError(
            f"{str(path)!r} is truncated or damaged (UnpicklingError); resume from an earlier "
            "checkpoint"
        ) from None
    except Exception as err:  # truncated zip, bad pickle, ...
        raise ValueError(
            f"{str(path)!r} is truncated or damaged ({type(err).__name__}); resume from an earlier "
            "checkpoint"
        ) from None


@dataclass
class LoadedCheckpoint:
    """A model ready for inference, its tokenizer and its config.json."""

    model: nn.Module
    tokenizer: Any
    config: dict[str, Any]
    path: Path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedCheckpoint:
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
