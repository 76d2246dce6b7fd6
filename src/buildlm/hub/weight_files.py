"""Finding a Hugging Face checkpoint's tensors, whichever way the folder stores them.

A model folder on the Hub holds its weights in one of four layouts, tried in this order:

- ``model.safetensors``: one file (small models).
- ``model.safetensors.index.json`` + ``model-00001-of-00004.safetensors`` ...: shards. Big models
  are split so no single file is huge; the index's ``weight_map`` says which shard holds each
  tensor.
- ``pytorch_model.bin``: the older format, a pickled state dict.
- ``pytorch_model.bin.index.json`` + ``pytorch_model-0000X-of-0000Y.bin``: sharded pickles.

Pickle can run arbitrary code, so ``.bin`` files are read only with
``torch.load(weights_only=True)`` (which refuses everything but tensors and plain containers)
and ``mmap=True`` (tensors stay in the file's pages until copied, not read all at once).

`open_weights` returns one `TensorFile` per tensor name, so the loader reads a tensor without
caring which file, or which format, it lives in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath
from typing import Protocol

import torch

from buildlm.hub.safetensors_io import SafetensorsReader

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
PYTORCH_BIN_INDEX = "pytorch_model.bin.index.json"


class TensorFile(Protocol):
    """What the loader needs from a weights file (`SafetensorsReader` and `TorchBinFile`)."""

    path: Path

    def names(self) -> list[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def dtype(self, name: str) -> torch.dtype: ...

    def mapped(self, name: str) -> torch.Tensor | None: ...

    def read_into(self, name: str, out: torch.Tensor) -> None: ...


class TorchBinFile:
    """A ``pytorch_model.bin`` state dict, memory-mapped and loaded with ``weights_only=True``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"weights file {str(self.path)!r} not found")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # truncated zip, refused pickle, ...
            raise ValueError(
                f"{str(self.path)!r} could not be read as a PyTorch state dict "
                f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); it is damaged or not a "
                "weights file"
            ) from None
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise ValueError(f"{str(self.path)!r} does not hold a state dict of tensors")
        self._state: dict[str, torch.Tensor] = state

    def names(self) -> list[str]:
        return list(self._state)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._state[name].shape)

    def dtype(self, name: str) -> torch.dtype:
        return self._state[name].dtype

    def mapped(self, name: str) -> torch.Tensor | None:
        t = self._state[name]
        return t if t.is_contiguous() else None

    def read_into(self, name: str, out: torch.Tensor) -> None:
        out.copy_(self._state[name].view(out.shape))


def _open(path: Path) -> TensorFile:
    return SafetensorsReader(path) if path.suffix == ".safetensors" else TorchBinFile(path)


def _shard_path(index: Path, shard: object) -> Path:
    """Where ``shard`` (a file name from the index) lies: inside the model folder, always.

    An index is data from the internet; an entry like ``../../.ssh/id_rsa`` or ``/etc/passwd``
    must not make the loader open files outside the folder. (The check is on the name, not the
    resolved path: the Hugging Face cache links shards to blobs elsewhere, which is fine.)
    """
    name = PurePath(shard) if isinstance(shard, str) else None
    if name is None or not shard or name.is_absolute() or ".." in name.parts or name.anchor:
        raise ValueError(
            f"{str(index)!r} names the shard {shard!r}, which is not a file inside the model "
            "folder; the index is corrupt or malicious, so download the model again"
        )
    return index.parent / name


def _open_index(index: Path) -> dict[str, TensorFile]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ValueError(
            f"{str(index)!r} is not a valid shard index (expected JSON with a 'weight_map' "
            "object from tensor names to file names)"
        ) from None
    files: dict[str, TensorFile] = {}
    for shard in sorted(set(weight_map.values()), key=str):
        path = _shard_path(index, shard)
        if not path.is_file():
            raise FileNotFoundError(
                f"shard {shard!r} listed in {str(index)!r} is missing; download the whole folder"
            )
        files[shard] = _open(path)
    held = {shard: set(f.names()) for shard, f in files.items()}
    located: dict[str, TensorFile] = {}
    for name, shard in weight_map.items():
        if name not in held[shard]:
            raise ValueError(f"{str(index)!r} places {name!r} in {shard!r}, which lacks it")
        located[name] = files[shard]
    for shard, names in held.items():  # a tensor the index does not list would be dropped
        extra = sorted(names - set(weight_map))
        if extra:
            raise ValueError(f"{shard!r} holds {extra[:5]}, which {str(index)!r} does not list")
    return located


def open_weights(folder: str | os.PathLike) -> dict[str, TensorFile]:
    """Tensor name -> the file holding it, for every tensor of a Hugging Face model folder."""
    folder = Path(folder)
    if (folder / SAFETENSORS).is_file():
        f = _open(folder / SAFETENSORS)
        return {name: f for name in f.names()}
    if (folder / SAFETENSORS_INDEX).is_file():
        return _open_index(folder / SAFETENSORS_INDEX)
    if (folder / PYTORCH_BIN).is_file():
        f = _open(folder / PYTORCH_BIN)
        return {name: f for name in f.names()}
    if (folder / PYTORCH_BIN_INDEX).is_file():
        return _open_index(folder / PYTORCH_BIN_INDEX)
    raise FileNotFoundError(
        f"no weights in {str(folder)!r}: expected {SAFETENSORS}, {SAFETENSORS_INDEX}, "
        f"{PYTORCH_BIN} or {PYTORCH_BIN_INDEX}"
    )
