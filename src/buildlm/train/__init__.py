"""Stage 6 of the learning path: pretraining.

- ``config.py``: ``TrainConfig``, ``DataConfig``, ``TokenizerConfig`` (the ``--train.*`` ... flags);
- ``optim.py``: AdamW parameter groups and the warmup + cosine learning-rate schedule;
- ``trainer.py``: the training loop (:class:`Trainer`);
- ``budget.py``: the time budget as a deadline, and the learning-rate plan that follows it;
- ``checkpoint.py``: atomic checkpoint folders, exact resumption, loading for inference;
- ``checkpoint_health.py``: damaged checkpoints found, set aside, resuming from the newest good one;
- ``fits.py``: whether training a model fits in memory, asked before it is allocated;
- ``metrics.py``: loss, perplexity, bits per byte, MFU, CSV/TensorBoard logging, loss plots;
- ``baselines.py``: the uniform, unigram and bigram losses a model must beat;
- ``report.py``: the run's last line against each baseline, and a prompt from its own text;
- ``run.py``: a whole run from raw text (what ``buildlm train`` does).

Stage 8, fine-tuning, on the same `Trainer` through a `task.Task` (batches, loss, evaluation):

- ``finetune.py``: the starting model, data splits, LoRA or full training, the run folder;
- ``classify.py``: a GPT with an n-classes head (``buildlm finetune classify``, ``buildlm classify``);
- ``instruct.py``: instruction tuning with the loss on response tokens (``finetune instruct``);
- ``dpo.py``: preference tuning against a frozen reference (``finetune dpo``);
- ``finetune_cli.py``, ``classify_cli.py``: the commands.
"""

from buildlm.train.checkpoint import load_checkpoint, save_checkpoint
from buildlm.train.config import DataConfig, TokenizerConfig, TrainConfig
from buildlm.train.trainer import TrainData, Trainer, TrainResult

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
