"""Will a training run fit in memory? Asked before the model is allocated.

A typo such as ``--model.d_ff 99999999999`` would otherwise start allocating a model of
hundreds of billions of parameters and end in the operating system killing the process (or the
machine swapping for minutes) instead of one line saying what is wrong. The model is built on
PyTorch's ``meta`` device, which records shapes but allocates nothing, so its parameters are
counted exactly; training in fp32 with AdamW then needs about 16 bytes per parameter (the
weight, its gradient and AdamW's two moments), before any activations.
"""

from __future__ import annotations

import os

import torch

from buildlm.model import GPT, ModelConfig

TRAINING_BYTES_PER_PARAM = 16  # fp32 weight + gradient + AdamW's two moments


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory on ``device`` (the machine's RAM for the CPU); ``None`` where unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not a POSIX system
            return None
    return None


def check_training_fits(config: ModelConfig, device: torch.device) -> int:
    """The model's parameter count; ``ValueError`` if training it cannot fit on ``device``."""
    with torch.device("meta"):
        params = GPT(config).num_params()
    need = params * TRAINING_BYTES_PER_PARAM
    have = device_memory(device)
    if have is not None and need > have:
        raise ValueError(
            f"this model has {params:,} parameters: training it needs about {need / 2**30:,.1f} "
            f"GiB for weights, gradients and AdamW, more than the {have / 2**30:,.1f} GiB of this "
            f"{device.type}; choose smaller --model.* sizes"
        )
    return params
