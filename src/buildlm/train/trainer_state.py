"""The heavy part of ``trainer_state.pt``: optimizer moments, loss scale, data position, RNG.

To *continue* a run, the weights are not enough. A `Trainer` also keeps

- the AdamW moments, keyed by parameter name (whole, even when FSDP shards them across ranks),
  or the next updates differ;
- the fp16 ``GradScaler``'s scale, or the first steps after resuming overflow or underflow;
- the batch stream's position, or the batches differ;
- the RNG states of every rank, or the dropout masks differ.

:func:`capture_state` gathers them, :func:`write_checkpoint` writes them beside the weights,
:func:`restore_state` puts a checkpoint's back; with them
a resumed run reaches, bitwise, the losses of a run never interrupted, with one process, DDP
or FSDP. The trainer's own counters and its `schedule.Schedule` are saved beside them
(`Trainer.state_dict`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from buildlm import checkpoint_format
from buildlm.train import checkpoint as ckpt
from buildlm.train.distributed import (
    Distributed,
    load_optimizer_state_by_name,
    optimizer_state_by_name,
)
from buildlm.train.task import BatchStream


def capture_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batches: BatchStream,
    dist: Distributed | None = None,
) -> dict[str, Any]:
    """The optimizer, loss scale, data position and RNG states, ready for ``torch.save``.

    Under a distributed run this is collective: every rank must call it.
    """
    if dist is not None and dist.sharded:
        optimizer_state = dist.full_optimizer_state(model, optimizer)
    else:
        optimizer_state = optimizer_state_by_name(model, optimizer)
    rng = ckpt.capture_rng()
    return {
        "optimizer": optimizer_state,
        "scaler": scaler.state_dict(),
        "data": batches.state_dict(),
        "rng": rng,
        "rng_by_rank": [rng] if dist is None else dist.gather(rng),
    }


def restore_state(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batches: BatchStream,
    dist: Distributed | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Load a checkpoint's (or a run's newest) weights, optimizer, loss scale, data position and
    this rank's RNG states; returns the checkpoint folder and its whole ``trainer_state.pt``."""
    folder = checkpoint_format.resolve_checkpoint(path)
    state = ckpt.load_trainer_state(folder)
    sharded = dist is not None and dist.sharded
    weights = checkpoint_format.read_weights(model, folder / checkpoint_format.WEIGHTS)
    if sharded:
        dist.load_full_model_state(model, weights)
    else:
        model.load_state_dict(weights, strict=True)
    try:
        saved = state["optimizer"]
        if all(isinstance(k, int) for k in saved["state"]):  # by number (older checkpoints)
            optimizer.load_state_dict(saved)
        elif sharded:
            dist.load_full_optimizer_state(model, optimizer, saved)
        else:
            load_optimizer_state_by_name(model, optimizer, saved)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        batches.load_state_dict(state["data"])
    except (KeyError, RuntimeError) as err:
        raise ValueError(
            f"{str(folder / checkpoint_format.TRAINER_STATE)!r} does not match this run ({err}); resume with "
            "the model and train settings the checkpoint was written with"
        ) from None
    rank, world = (0, 1) if dist is None else (dist.rank, dist.world_size)
    by_rank = state.get("rng_by_rank") or []
    ckpt.restore_rng(by_rank[rank] if len(by_rank) == world else state["rng"])
    return folder, state


def write_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    config: dict[str, Any],
    tokenizer: Any,
    state: dict[str, Any],
    keep: int,
    dist: Distributed | None = None,
) -> Path:
    """Write checkpoint ``step`` of ``run_dir`` (`checkpoint.save_checkpoint`) and return its folder.

    Under DDP/FSDP every rank calls this: FSDP gathers the whole weights first, rank 0 writes,
    and no rank goes on before the checkpoint is complete.
    """
    sharded = dist is not None and dist.sharded
    weights = dist.full_model_state(model) if sharded else None  # else the model's own
    if dist is None or dist.is_main:
        ckpt.save_checkpoint(
            run_dir, step, model, config, tokenizer=tokenizer, trainer_state=state, keep=keep, weights=weights
        )
    if dist is not None:
        dist.barrier()  # nobody reads a checkpoint before it is complete
    return checkpoint_format.checkpoint_folder(run_dir, step)
