"""Data-parallel training on PyTorch's own engine: DDP or FSDP, launched by ``torchrun``.

Why and how, for a learner:

- **DDP** (``DistributedDataParallel``): every process (a *rank*) holds the whole model and
  optimizer, reads its own slice of each batch, and after ``backward`` the gradients are
  averaged across ranks (an all-reduce that overlaps with the backward pass). Every rank then
  takes the same optimizer step, so the copies stay identical. N ranks = N times the batch.
- **FSDP** (``torch.distributed.fsdp.fully_shard``): the same data parallelism, but each rank
  stores only 1/N of every parameter, gradient and optimizer moment. A block's full weights are
  gathered just before it runs and freed right after; gradients are reduce-scattered so each
  rank keeps only its shard. Memory per rank drops roughly N-fold, for more communication.
- **Gradient accumulation** adds micro-batch gradients before a step. Averaging across ranks
  after every micro-batch would be wasted traffic, so the sync is switched off for all but the
  last one (``DDP.no_sync`` / FSDP's ``set_requires_gradient_sync``).
- ``torchrun`` starts the processes and tells each one its ``RANK``, ``LOCAL_RANK`` and
  ``WORLD_SIZE`` (and where rank 0 listens) through environment variables. Backend: NCCL
  between GPUs, gloo on CPUs.

The model code knows none of this: :class:`Distributed` wraps a plain `GPT` and the trainer asks
it to average, broadcast and gather. Checkpoints stay ordinary single-device files: FSDP's
shards are gathered into a full state dict (on CPU, on rank 0) before rank 0 writes it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from buildlm.device import choose_device

STRATEGIES = ("ddp", "fsdp")


def silent(*args: Any, **kwargs: Any) -> None:
    """What ranks other than 0 use to log: nothing."""


def launched_by_torchrun() -> bool:
    """True inside a process started by ``torchrun`` with more than one process in all."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Distributed:
    """This process's place in a data-parallel run, and the few collectives the trainer needs."""

    rank: int
    local_rank: int
    world_size: int
    strategy: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes checkpoints."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """FSDP: every forward pass is collective, so every rank must run the same ones."""
        return self.strategy == "fsdp"

    # --- wrapping the model -------------------------------------------------------------------

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to call for training steps.

        DDP returns a wrapper around ``model`` (which keeps the same parameters, so ``model``
        itself still saves and samples). FSDP shards ``model`` in place: each block is one unit
        (gathered on its own, just in time), the rest (embeddings, final norm, head) the root.
        """
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model

    def reshard(self, model: nn.Module) -> None:
        """FSDP: free the gathered weights a forward pass without backward left behind.

        The root unit keeps its full weights after forward (backward would need them next);
        after evaluation or sampling no backward comes, so they must be dropped by hand, or
        memory stays high and the optimizer's sharded parameters are no longer the module's.
        """
        if self.strategy != "fsdp":
            return
        from torch.distributed.fsdp import FSDPModule

        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    @contextlib.contextmanager
    def gradient_sync(self, wrapped: nn.Module, enabled: bool) -> Iterator[None]:
        """Inside, backward passes average gradients across ranks only if ``enabled``.

        Used for gradient accumulation: all micro-batches but the last keep their gradients
        local; the last one's backward averages the summed gradients in one go.
        """
        if self.strategy == "fsdp":
            wrapped.set_requires_gradient_sync(enabled)
            yield
        elif enabled:
            yield
        else:
            with wrapped.no_sync():
                yield

    # --- collectives --------------------------------------------------------------------------

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The average of ``value`` over ranks (a new tensor)."""
        out = value.detach().clone()
        if self.device.type == "cuda":
            dist.all_reduce(out, op=dist.ReduceOp.AVG)
        else:  # gloo has no AVG
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
            out /= self.world_size
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj``, on every rank (for decisions all ranks must agree on)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    # --- full (unsharded) state for checkpoints -----------------------------------------------

    def full_model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """FSDP: the whole model's weights gathered on rank 0's CPU (``{}`` elsewhere). Collective."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=options)

    def load_full_model_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Put a full state dict (every rank passes the same one) into a sharded model."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def full_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """FSDP: the optimizer state keyed by parameter name, whole, on rank 0. Collective."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(model, optimizer, options=options)

    def load_full_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def init_distributed(strategy: str = "ddp", device: str = "auto", timeout_s: float = 3600.0) -> Distributed | None:
    """Join the process group ``torchrun`` set up; ``None`` in a plain single-process run.

    Each rank takes GPU ``LOCAL_RANK`` on a CUDA machine (NCCL), or the CPU (gloo). The long
    timeout lets rank 0 tokenize a corpus while the others wait at a barrier.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown train.distributed {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if not launched_by_torchrun():
        return None
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(
            f"--train.device {device!r} under torchrun: use auto, cuda or cpu (each rank takes "
            "GPU LOCAL_RANK by itself)"
        )
    if device == "cuda":
        choose_device(device, "--train.device")  # absent: the one-line error, not the CPU
    if use_cuda:
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=torch_device if use_cuda else None,
        )
    return Distributed(rank, local_rank, world_size, strategy, torch_device)


# --- optimizer state by parameter name --------------------------------------------------------


def _index_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The parameter names in the order ``optimizer.state_dict()`` numbers them."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """``optimizer.state_dict()`` with parameter names instead of numbers.

    The same layout FSDP's full optimizer state uses, so a checkpoint resumes under one
    process, DDP or FSDP alike, whatever wrote it.
    """
    names = _index_names(model, optimizer)
    state = optimizer.state_dict()
    return {
        "state": {names[i]: s for i, s in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }


def load_optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """The inverse of :func:`optimizer_state_by_name`."""
    index = {name: i for i, name in enumerate(_index_names(model, optimizer))}
    unknown = [n for n in state["state"] if n not in index]
    if unknown:
        raise KeyError(f"the saved optimizer state has parameters this model lacks: {unknown[:3]}")
    optimizer.load_state_dict(
        {
            "state": {index[n]: s for n, s in state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]],
        }
    )
