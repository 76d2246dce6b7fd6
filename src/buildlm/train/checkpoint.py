"""Checkpoints of a training run: the trainer's state, and which checkpoints a run keeps.

The folder format itself (file names, weights, listing and resolving checkpoints, loading a
model for inference) is `buildlm.checkpoint_format`. This module adds what only training needs:

- ``trainer_state.pt``: optimizer moments, step, data position, random number generator states.
  Exact resumption needs *all* of it: the AdamW moments (or the next updates differ), the data
  position (or the batches differ) and the RNG states (or dropout masks differ). RNG states are
  stored as plain tensors and lists so that ``torch.load(weights_only=True)`` (which refuses
  arbitrary pickled objects, so a downloaded checkpoint cannot run code) reads them.
- `save_checkpoint`: writing is atomic: the files go into a temporary folder beside the final
  one, which is renamed into place only when complete. A crash mid-save leaves the previous
  checkpoints untouched, and a folder named ``step-*`` is always whole. The last ``keep``
  checkpoints are kept (an older one that holds files buildlm did not write is kept too). A
  damaged checkpoint in the way of a save is moved aside, never deleted
  (`buildlm.train.checkpoint_health`, which also finds the newest good checkpoint to resume
  from). A full disk is reported as the ``OSError`` it is, not as the serializing library's own
  error.
"""

from __future__ import annotations

import io
import os
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from buildlm.atomic import (
    OUTPUTS,
    adopt_files,
    atomic_folder,
    foreign_entries,
    json_text,
    remove_folder,
    remove_stale_temporaries,
)
from buildlm.checkpoint_format import (
    CONFIG,
    FILES,
    TOKENIZER,
    TRAINER_STATE,
    WEIGHTS,
    checkpoint_folder,
    list_checkpoints,
    save_weights,
)
from buildlm.train.checkpoint_health import checkpoint_problem, set_aside

# --- trainer state --------------------------------------------------------------------------


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
        problem = checkpoint_problem(final, resumable=trainer_state is not None)
        if problem is not None:
            set_aside(final, problem)  # kept for inspection, never deleted
        elif not (final / OUTPUTS).is_file() and not foreign_entries(final) - FILES:
            adopt_files(final, foreign_entries(final))  # saved before buildlm listed its files
    with atomic_folder(final, force=True, will_write=FILES) as tmp:
        (tmp / CONFIG).write_text(json_text({**config, "step": step}), encoding="utf-8")  # the folder is atomic
        save_weights(model if weights is None else weights, tmp / WEIGHTS)
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER)
        if trainer_state is not None:
            save_trainer_state(trainer_state, tmp / TRAINER_STATE)
    for old in list_checkpoints(run_dir)[:-keep]:
        if not foreign_entries(old) - FILES:  # a folder holding files of yours is kept
            remove_folder(old)
    return final
