"""Activation (gradient) checkpointing: trade compute for memory.

Backward needs the activations of the forward pass (the inputs of every matmul, softmax and
GELU). Normally all of them are kept, and for a long context they dwarf the weights. With
checkpointing each block keeps only its *input*; during backward the block's forward is run
again to rebuild what it needs. Memory for activations drops from "every tensor of every
block" to "one tensor per block" (plus one block's worth at a time), for about one extra
forward pass (~33% more compute).

The block's ``forward`` is swapped on the instance, so parameter names, state dicts and
checkpoints are unchanged, and DDP, FSDP and ``torch.compile`` see an ordinary module.
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torch.utils.checkpoint import checkpoint


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute each of ``model.blocks`` in backward instead of storing its activations.

    Returns how many blocks were wrapped. Idempotent.
    """
    wrapped = 0
    for block in model.blocks:
        if getattr(block, "_checkpointed", False):
            continue
        block.forward = partial(checkpoint, block.forward, use_reentrant=False)
        block._checkpointed = True
        wrapped += 1
    return wrapped
