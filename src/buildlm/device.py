"""Where and in which number format the tensors live: devices, dtype names, mixed precision, seeds.

Every layer needs these (training, inference, evaluation), so they sit at the bottom of the
package and import nothing of buildlm:

- :func:`resolve_device`: ``auto`` (CUDA, then Apple MPS, then the CPU) or a device by name;
- :data:`DTYPES` and :func:`parse_dtype`: the one set of dtype names a user types
  (``--train.precision``, the ``--dtype`` of generate, chat, serve and eval);
- :func:`autocast_context`: mixed precision for a forward pass;
- :func:`seed_everything`: one seed for Python, NumPy and torch.

A device the machine does not have, or a dtype name buildlm does not know, is a user error
(``ValueError``) in one line, so the CLI prints it instead of torch's own message.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""buildlm's names of the floating-point formats it computes in. Hugging Face spells them the way
torch does (``"bfloat16"``); `buildlm.hub` translates those where it reads their files."""


def mps_available() -> bool:
    """Whether Apple's Metal backend is there (PyTorch builds without it lack the attribute)."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; an absent device requested by name is an
    error naming ``flag``, the option the user sets it with."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{flag} {name!r} is not a device; use cpu, cuda, cuda:N, mps or auto"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{flag} {name!r} was requested but this PyTorch ({torch.__version__}) sees no CUDA "
            f"GPU; use {flag} cpu (or auto)"
        )
    if device.type == "mps" and not mps_available():
        raise ValueError(f"{flag} {name!r}: Apple MPS is not available here; use {flag} cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{flag} {name!r}: buildlm runs on cpu, cuda or mps; use one of them or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{flag} {name!r}: only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


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
