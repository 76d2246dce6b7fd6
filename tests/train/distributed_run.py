"""One rank of a small data-parallel run, launched by torchrun from test_distributed.py.

    torchrun --standalone --nproc-per-node 2 distributed_run.py OUT STRATEGY [--compile] [--ac] [--moe]

Trains the model of ``tiny_setup`` through the Trainer as one rank of a DDP or FSDP run and
writes, on rank 0, ``OUT/result.pt``: the losses, the logits of the trained (sharded) model on a
fixed input, and (DDP) how many gradient all-reduces ran. The checkpoint goes to ``OUT/run``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from distributed_setup import PROBE, tiny_setup  # noqa: E402

from buildlm.train.distributed import init_distributed  # noqa: E402
from buildlm.train.trainer import Trainer  # noqa: E402


def main() -> None:
    out, strategy = Path(sys.argv[1]), sys.argv[2]
    dist = init_distributed(strategy, "cpu")
    assert dist is not None and dist.world_size == 2
    model, config, data = tiny_setup(
        batch_size=4, compile="--compile" in sys.argv, activation_checkpointing="--ac" in sys.argv,
        moe="--moe" in sys.argv,
    )
    trainer = Trainer(model, config, data, run_dir=out / "run", dist=dist, log=lambda *a: None)
    all_reduces = [0]
    if strategy == "ddp":
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def counting_hook(state, bucket):
            all_reduces[0] += 1
            return allreduce_hook(state, bucket)

        trainer.wrapped_model.register_comm_hook(None, counting_hook)
    result = trainer.fit()
    with torch.no_grad():
        logits = trainer.wrapped_model(PROBE)  # every rank: FSDP's forward is collective
    if dist.is_main:
        torch.save(
            {"losses": result.losses, "val_loss": result.val_loss, "logits": logits,
             "all_reduces": all_reduces[0]},
            out / "result.pt",
        )  # fmt: skip
    dist.close()


if __name__ == "__main__":
    main()
