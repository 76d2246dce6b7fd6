"""Which device a command runs on: ``auto`` (CUDA, then Apple MPS, then the CPU) or one by name.

Every layer needs this (training, inference, evaluation), so it sits at the bottom of the
package and imports nothing of buildlm. A device the machine does not have is a user error
(``ValueError``) that names the flag to change, so the CLI prints one line instead of torch's
own message.
"""

from __future__ import annotations

import torch


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
