"""Stage 6 of the learning path: pretraining.

- ``config.py``: ``TrainConfig``, ``DataConfig``, ``TokenizerConfig`` (the ``--train.*`` ... flags);
- ``optim.py``: AdamW parameter groups and the warmup + cosine learning-rate schedule;
- ``muon.py``: Muon (Newton-Schulz orthogonalised momentum) for the hidden matrices, AdamW beside it;
- ``task.py``: what a task gives the `Trainer` (batches, a loss, an evaluation);
- ``windows.py``: pretraining's batches, random windows of the token arrays (``TrainData``);
- ``trainer.py``: the training loop (:class:`Trainer`): one optimizer step, and ``fit`` around it;
- ``linear_cross_entropy.py``: the LM head and its loss a few rows at a time (no fp32 logits);
- ``host_memory.py``: glibc keeps freed buffers, so CPU steps stop faulting their memory in anew;
- ``router_loss.py``: a mixture-of-experts router's balance and z-losses, and its per-expert log;
- ``schedule.py``: each step's learning rate, the jobs between steps, when a budgeted run stops;
- ``budget.py``: the time budget as a deadline, and the learning-rate plan that follows it;
- ``progress.py``: what ``fit`` shows and records: the progress bar, metrics.csv, the loss plot;
- ``trainer_state.py``: optimizer moments, loss scale, data position and RNG, saved and restored;
- ``checkpoint.py``: the trainer's state file, RNG capture, which checkpoints a run keeps (the
  folder format and loading for inference: `buildlm.checkpoint_format`);
- ``checkpoint_health.py``: damaged checkpoints found, set aside, resuming from the newest good one;
- ``fits.py``: whether training a model fits in memory, asked before it is allocated;
- ``metrics.py``: loss, perplexity, bits per byte, MFU, CSV/TensorBoard logging, loss plots;
- ``baselines.py``: the uniform, unigram and bigram losses a model must beat;
- ``report.py``: the run's last line against each baseline, and a prompt from its own text;
- ``activation_checkpointing.py``: recompute activations in backward to save memory;
- ``distributed.py``: data-parallel training (DDP or FSDP) launched by ``torchrun``;
- ``bundled_configs.py``: the YAML settings files shipped in the package, found by name;
- ``run.py``: a whole run from raw text (what ``buildlm train`` does);
- ``cli.py``: ``buildlm train``.

Fine-tuning (stage 8) runs on the same `Trainer` through a `task.Task` and lives in
`buildlm.finetune`.
"""

from buildlm.checkpoint_format import load_checkpoint
from buildlm.train.checkpoint import save_checkpoint
from buildlm.train.config import DataConfig, TokenizerConfig, TrainConfig
from buildlm.train.trainer import Trainer, TrainResult
from buildlm.train.windows import TrainData

__all__ = [
    "DataConfig",
    "TokenizerConfig",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "Trainer",
    "load_checkpoint",
    "save_checkpoint",
]
