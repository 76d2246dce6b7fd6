"""Reading and writing safetensors files tensor by tensor, straight into their final memory.

A safetensors file is simple enough to read by hand::

    8 bytes        N, the header length (unsigned 64-bit, little-endian)
    N bytes        JSON: {"name": {"dtype": "BF16", "shape": [2048, 64], "data_offsets": [b, e]},
                          ..., "__metadata__": {"format": "pt"}}
    the rest       raw little-endian tensor bytes; tensor "name" is bytes [b, e) of this part

No pickle, no code: reading a file cannot run anything.

A tensor reaches memory in one of two ways, so loading needs one copy of the weights:

- `SafetensorsReader.mapped`: a tensor that is used exactly as stored is a view into a
  memory map of the file (copy-on-write, like ``safetensors.safe_open`` and transformers). No
  bytes are read until the model touches them, and they are the page cache's, not a copy.
- `SafetensorsReader.read_into`: a tensor that changes layout (GPT-2's weights are transposed,
  Llama's q/k/v are stacked into one matrix) is read with ``readinto`` straight into the tensor
  that will hold it (q, k and v into their rows of the fused matrix). Copying from a memory map
  instead would leave every mapped page that was read resident beside the converted copy, and
  peak memory would double.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

# safetensors dtype names <-> torch dtypes (the ones torch has).
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_MAX_HEADER = 100 * 2**20  # the safetensors library refuses headers above 100 MB too
_CHUNK = 256 * 2**20  # read at most this many bytes per system call


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of a contiguous tensor (its raw memory, whatever the dtype)."""
    return t.reshape(-1).view(torch.uint8)


class SafetensorsReader:
    """The tensors of one ``.safetensors`` file: names, shapes and dtypes up front, data on demand.

    Opening reads and checks only the header, so a truncated or damaged file is reported before
    anything is loaded, with the file and the tensor named.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        if sys.byteorder != "little":  # pragma: no cover - every platform torch supports
            raise ValueError("reading safetensors needs a little-endian machine")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"weights file {str(self.path)!r} not found")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            if n is None or n > min(_MAX_HEADER, size - 8):
                raise self._damaged(f"header length {n} does not fit in the {size}-byte file")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise self._damaged(f"header is not valid JSON ({err})") from None
        if not isinstance(header, dict):
            raise self._damaged("header is not a JSON object")
        self._map: torch.UntypedStorage | None = None  # the file's memory map, made on demand
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        data_size = size - self._data_start
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            try:
                dtype = DTYPES[info["dtype"]]
                shape = tuple(int(d) for d in info["shape"])
                begin, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise self._damaged(f"bad header entry for tensor {name!r}: {info!r}") from None
            numel = 1
            for d in shape:
                numel *= d
            if end - begin != numel * dtype.itemsize or begin < 0:
                raise self._damaged(
                    f"tensor {name!r} has {end - begin} bytes for shape {list(shape)} "
                    f"of {info['dtype']}"
                )
            if end > data_size:
                raise self._damaged(
                    f"tensor {name!r} ends at byte {end} of the data but the file holds only "
                    f"{data_size}: the file is truncated (an interrupted download or copy?)"
                )
            self._entries[name] = (dtype, shape, begin, end)

    def _damaged(self, problem: str) -> ValueError:
        return ValueError(
            f"{str(self.path)!r} is not a valid safetensors file: {problem}; download or "
            "convert it again"
        )

    def names(self) -> list[str]:
        """The tensor names, in header order."""
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> torch.dtype:
        return self._entries[name][0]

    def mapped(self, name: str) -> torch.Tensor | None:
        """Tensor ``name`` as a view into a copy-on-write memory map of the file, or ``None``.

        Nothing is read now: pages come in when the tensor is used. Writing to the tensor copies
        the touched pages (the file never changes). ``None`` when the tensor does not start at a
        multiple of its element size in the file (then use `read_into`).
        """
        dtype, shape, begin, end = self._entries[name]
        start = self._data_start + begin
        if start % dtype.itemsize:
            return None
        if self._map is None:
            size = self.path.stat().st_size
            self._map = torch.UntypedStorage.from_file(str(self.path), shared=False, nbytes=size)
        raw = torch.empty(0, dtype=torch.uint8).set_(self._map)[start : self._data_start + end]
        return raw.view(dtype).view(shape)

    def read_into(self, name: str, out: torch.Tensor) -> None:
        """Copy tensor ``name`` into ``out`` (contiguous, CPU, same number of elements).

        Bytes go straight from the file into ``out``'s memory when the dtypes agree; otherwise
        through one scratch tensor of the file's dtype, converted on the way.
        """
        dtype, shape, begin, end = self._entries[name]
        if out.dtype != dtype:
            scratch = torch.empty(shape, dtype=dtype)
            self.read_into(name, scratch)
            out.copy_(scratch.view(out.shape))
            return
        if (
            not out.is_contiguous()
            or out.device.type != "cpu"
            or out.numel() * out.itemsize != (end - begin)
        ):
            raise ValueError(f"cannot read {name!r} {list(shape)} into a {tuple(out.shape)} view")
        buffer = memoryview(_as_bytes(out).numpy())
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self._data_start + begin)
            done = 0
            while done < len(buffer):
                got = f.readinto(buffer[done : done + _CHUNK])
                if not got:
                    raise self._damaged(f"tensor {name!r} is cut short: the file is truncated")
                done += got

    def get(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as a new CPU tensor."""
        dtype, shape, _, _ = self._entries[name]
        out = torch.empty(shape, dtype=dtype)
        self.read_into(name, out)
        return out


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` as one safetensors file, one tensor at a time.

    The tensors may be views (slices of a fused matrix, transposes): each is made contiguous and
    copied to the CPU only while it is written, so writing needs no second copy of the model.
    Larger dtypes come first so every tensor starts at a multiple of its element size, as the
    safetensors library lays files out. ``path`` is written in place: callers write into a
    temporary folder and rename it (see `buildlm.hub.save`).
    """
    names = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in names:
        t = tensors[name]
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"tensor {name!r} has dtype {t.dtype}, which safetensors cannot store")
        nbytes = t.numel() * t.dtype.itemsize
        header[name] = {
            "dtype": DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            t = tensors[name].detach().to("cpu").contiguous()
            f.write(memoryview(_as_bytes(t).numpy()))
