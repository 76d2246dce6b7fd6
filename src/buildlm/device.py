"""Where and in which number format the tensors live: devices, dtype names, mixed precision, seeds.

Every layer needs these (training, inference, evaluation), so they sit at the bottom of the
package and import nothing of buildlm:

- :func:`choose_device`: ``auto`` (CUDA, then Apple MPS, then the CPU) or a device by name, and
  the reason, the one line each command prints (``device: cpu (auto: no CUDA device, ...)``);
  :func:`resolve_device` the same without the reason;
- :func:`check_dtype` and :func:`check_compile`: what the chosen device computes in, and where
  ``torch.compile`` runs;
- :data:`DTYPES` and :func:`parse_dtype`: the one set of dtype names a user types
  (``--train.precision``, the ``--dtype`` of generate, chat, serve and eval);
- :func:`autocast_context`: mixed precision for a forward pass;
- :func:`seed_everything`: one seed for Python, NumPy and torch.

A device the machine does not have, a dtype it does not compute in, or a dtype name buildlm does
not know, is a user error (``ValueError``) in one line, so the CLI prints it instead of torch's own
message. The Apple MPS paths follow PyTorch's documentation and are untested here (no Mac).
"""

from __future__ import annotations

import contextlib
import platform
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""buildlm's names of the floating-point formats it computes in. Hugging Face spells them the way
torch does (``"bfloat16"``); `buildlm.hub` translates those where it reads their files."""


def mps_available() -> bool:
    """Whether Apple's Metal backend is there (PyTorch builds without it lack the attribute)."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


@dataclass(frozen=True)
class DeviceChoice:
    """The device a command runs on and why: ``reason`` says what ``auto`` found, or which flag
    named the device. Each command prints `line` once, so a log says where the run ran."""

    device: torch.device
    reason: str

    @property
    def line(self) -> str:
        return f"device: {self.device} ({self.reason})"


def _cpu_only_build() -> bool:
    """Whether this PyTorch was built without CUDA (or ROCm, which PyTorch also calls cuda)."""
    return torch.version.cuda is None and getattr(torch.version, "hip", None) is None


def _no_cuda() -> str:
    """Why CUDA is not used: a CPU-only PyTorch build, or a CUDA build that sees no GPU."""
    return "no CUDA device (a CPU-only PyTorch build)" if _cpu_only_build() else "no CUDA device"


def _no_mps() -> str:
    """Why Apple MPS is not used: not a Mac, a PyTorch built without it, or too old a macOS."""
    if sys.platform != "darwin":
        return "no Apple MPS (not a Mac)"
    if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_built():
        return "no Apple MPS (this PyTorch is built without it)"
    return "no Apple MPS (it needs Apple silicon and macOS 12.3+)"


def choose_device(name: str = "auto", flag: str = "--device") -> DeviceChoice:
    """The device ``name`` means, with the reason (see `DeviceChoice`).

    ``"auto"`` picks CUDA, then Apple MPS, then the CPU. A device named but absent (``cuda`` on a
    machine without a GPU, ``cuda:3`` with one GPU, ``mps`` off a Mac) is a ``ValueError`` that
    names ``flag``, the option the user sets it with, and the fix.
    """
    if name == "auto":
        if torch.cuda.is_available():
            name, gpus = torch.cuda.get_device_name(0), torch.cuda.device_count()
            return DeviceChoice(torch.device("cuda"), f"auto: CUDA GPU {name}, cuda:0 of {gpus}")
        if mps_available():
            return DeviceChoice(torch.device("mps"), f"auto: {_no_cuda()}, Apple MPS found")
        return DeviceChoice(torch.device("cpu"), f"auto: {_no_cuda()}, {_no_mps()}")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{flag} {name!r} is not a device; use cpu, cuda, cuda:N, mps or auto"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{flag} {name!r}: buildlm runs on cpu, cuda or mps; use one of them or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        if _cpu_only_build():
            why = f"this PyTorch ({torch.__version__}) is a CPU-only build; install a CUDA one, or use"
        else:
            why = "no CUDA GPU is visible (see nvidia-smi and CUDA_VISIBLE_DEVICES); use"
        raise ValueError(f"{flag} {name!r}: {why} {flag} cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(
            f"{flag} {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
            f"use one of them or {flag} cuda"
        )
    if device.type == "mps" and not mps_available():
        raise ValueError(f"{flag} {name!r}: {_no_mps()}; use {flag} cpu or auto")
    if device.type == "mps" and device.index not in (None, 0):
        raise ValueError(f"{flag} {name!r}: Apple MPS has one device; use {flag} mps")
    return DeviceChoice(device, f"{flag} {name}")


def _macos_major() -> int:
    """The major version of macOS (0 off a Mac): bf16 on MPS needs 14."""
    release = platform.mac_ver()[0]
    return int(release.split(".")[0]) if release else 0


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """The device of `choose_device`, without the reason (for callers that print nothing)."""
    return choose_device(name, flag).device


def check_dtype(dtype: torch.dtype | None, device: torch.device, flag: str = "--dtype") -> torch.dtype | None:
    """``dtype`` when ``device`` computes in it; otherwise a ``ValueError`` naming the fix.

    - CUDA: bf16 needs a GPU that supports it (``torch.cuda.is_bf16_supported()``); fp16 always.
    - Apple MPS (untested here; PyTorch's documented support): fp16 always, bf16 from macOS 14,
      no float64. Operations MPS lacks raise an error unless ``PYTORCH_ENABLE_MPS_FALLBACK=1``
      is set, which runs them on the CPU (slower).
    - CPU: all of them (bf16 and fp16 are emulated on CPUs without the instructions: slower).
    ``None`` (keep the stored dtype) passes unchecked.
    """
    if dtype is None:
        return None
    name = next((k for k, v in DTYPES.items() if v == dtype), str(dtype).removeprefix("torch."))
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{flag} {name}: this GPU does not support bf16; use {flag} fp16 or fp32")
    if device.type == "mps":
        if dtype == torch.float64:
            raise ValueError(f"{flag} {name}: Apple MPS has no float64; use {flag} fp32")
        if dtype == torch.bfloat16 and _macos_major() < 14:
            raise ValueError(f"{flag} {name}: bf16 on Apple MPS needs macOS 14 or newer; use {flag} fp16 or fp32")
    return dtype


def check_compile(device: torch.device, flag: str = "--compile") -> None:
    """``torch.compile`` runs on CUDA and the CPU (and CUDA graphs on CUDA only, which the code
    using them checks itself); on Apple MPS it is a prototype in PyTorch, so it is refused."""
    if device.type == "mps":
        raise ValueError(f"{flag}: torch.compile on Apple MPS is a PyTorch prototype; drop {flag} there")


def parse_dtype(name: str | None) -> torch.dtype | None:
    """``"fp32"``/``"bf16"``/``"fp16"`` -> torch dtype; ``None`` or ``"auto"``: keep the stored one."""
    if name in (None, "auto"):
        return None
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for a forward pass: matmuls in ``precision`` (``"bf16"`` or ``"fp16"``),
    the numerically delicate operations (softmax, norms, losses) still in fp32. ``"fp32"``: none."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
