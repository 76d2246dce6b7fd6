"""The training run's settings as dataclasses: what to train on, with which tokenizer, how.

``buildlm train`` exposes these (and the model's fields) through jsonargparse, so a YAML file
(one of yours, or a bundled one from ``buildlm/configs/`` by name) and command-line flags (``--train.max_steps 100 --model.preset small``) set
the same fields, and ``--help`` lists them with their defaults. Each default lives here, on its
field. The zero-argument run (a BPE tokenizer and a small GPT trained on the bundled Shakespeare
in about five minutes on a two-core CPU) is the bundled config ``shakespeare-small``, which
changes two of them: 128-token windows in batches of 32.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from buildlm.device import DTYPES
from buildlm.infer.sampling import DEFAULT_TEMPERATURE

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class DataConfig:
    """Where the tokens come from.

    Args:
        inputs: files (.txt, .jsonl, .json, .csv, .tsv, .parquet, each also .gz or .zst),
            folders, glob patterns, hf:NAME (a Hugging Face dataset, or hf:/local/folder) or
            bundled corpus names (shakespeare, the-verdict), tokenized before training (cached
            under <out_dir>/data-cache).
        prepared_dir: a `buildlm prepare` output folder to train on instead (its tokenizer is used).
        val_fraction: share of each document (its end) held out for validation.
        num_workers: tokenizer processes (default: one per CPU core).
        field: the field (JSON key, CSV/Parquet column) holding each record's text.
        chat_template: how a record with a chat "messages" list and no field is rendered:
            chatml or llama3.
        on_error: a malformed record or one without the field: "raise" (stop, naming its file
            and line) or "skip" (count and skip it).
        split: hf: datasets: the split to read.
        subset: hf: datasets: the subset (configuration) name.
        streaming: hf: datasets: stream the rows instead of downloading the dataset first.
        max_documents: read at most this many documents (null: all).
        max_tokens: stop after the document that reaches this many tokens (null: all).
    """

    inputs: list[str] = field(default_factory=lambda: ["shakespeare"])
    prepared_dir: str | None = None
    val_fraction: float = 0.1
    num_workers: int | None = None
    field: str = "text"
    chat_template: str = "chatml"
    on_error: str = "raise"
    split: str = "train"
    subset: str | None = None
    streaming: bool = True
    max_documents: int | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        self.read_options()  # a bad on_error or chat_template fails here, before any work
        for name in ("max_documents", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"data.{name} must be >= 1 or null, got {value}")

    def read_options(self):
        """The `buildlm.data.documents.ReadOptions` of these settings."""
        from buildlm.data.documents import ReadOptions

        return ReadOptions(self.field, self.chat_template, self.on_error, self.split, self.subset, self.streaming)


@dataclass
class TokenizerConfig:
    """Which tokenizer turns the inputs into ids.

    Args:
        name: "bpe" trains a byte-level BPE on the inputs; "gpt2" is GPT-2's; or a tokenizer.json path.
        vocab_size: vocabulary size of a trained BPE (256 bytes + merges + <|endoftext|>).
        pattern: pre-tokenization regex of a trained BPE: gpt2, cl100k, o200k or a custom regex.
    """

    name: str = "bpe"
    vocab_size: int = 4096
    pattern: str = "gpt2"


@dataclass
class TrainConfig:
    """How to train. A step is one optimizer update over batch_size * grad_accum_steps windows.

    Args:
        max_steps: optimizer steps; an upper bound when time_budget_s is set. Raising it on
            --resume trains a finished run further: the learning rate decays on from where it
            was (a finished run stays at min_lr), it never jumps back up.
        time_budget_s: a deadline for the whole run, counted from the command's start (data
            preparation, training, final evaluation, checkpoint and sample), summed over resumed
            sessions. Training stops in time for the final jobs, and after warm-up the learning
            rate decays with the share of the time spent, reaching min_lr at the last step.
            Raising it on --resume trains a finished run further (at min_lr). null: max_steps.
        batch_size: windows per micro-batch.
        grad_accum_steps: micro-batches whose gradients add up to one step.
        context_length: tokens per window, and the context_length of a new model unless
            --model.context_length is given (null: the model preset's).
        lr: peak learning rate, reached after warmup.
        min_lr: floor of the cosine decay.
        warmup_steps: steps of linear warmup from lr/warmup_steps to lr.
        weight_decay: AdamW decay of the >= 2-D weights (biases and norms never decay).
        beta1: AdamW first-moment decay.
        beta2: AdamW second-moment decay.
        grad_clip: maximum global gradient norm (0: no clipping).
        precision: fp32, bf16 (autocast) or fp16 (autocast + gradient scaling), or auto: bf16
            where this machine's bf16 matmuls are clearly faster, else fp32 (`buildlm.precision`).
        compile: run the model through torch.compile.
        device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.
        seed: seeds the initial weights, the batches and dropout.
        eval_interval: steps between validation evaluations.
        eval_batches: validation batches per evaluation (the same ones every time).
        log_interval: steps between metric records and progress-bar updates.
        sample_interval: steps between sample generations (0: only at the end).
        sample_prompt: prompt of the sample generations.
        sample_tokens: tokens per sample.
        sample_temperature: sampling temperature of the samples (buildlm generate's default).
        sample_top_k: top-k of the samples (null: no cut).
        checkpoint_interval: steps between checkpoints (0: only at the end).
        keep_checkpoints: how many recent checkpoints to keep.
        out_dir: folder holding the runs (and the prepared-data cache).
        name: run folder name under out_dir (null: the date and time).
        peak_flops: device peak FLOP/s for MFU (null: the best of a few large matmuls timed at
            start-up, raised if training runs faster, so MFU never shows over 100%).
        num_threads: torch CPU threads (null: PyTorch's default, one per core). On a CPU shared
            with other busy processes, 1 can be several times faster: threads that wait for
            each other at every operation stall whenever one of them is descheduled.
        tensorboard: also log to TensorBoard when the package is installed.
        progress: show a progress bar.
        max_time_s: hard stop (with a checkpoint) after this many seconds (null: none).
        distributed: under torchrun (or --nproc N): "ddp" (each rank a full copy) or "fsdp"
            (parameters, gradients and optimizer state sharded across ranks). batch_size is
            then per rank: a step trains on batch_size * grad_accum_steps * ranks windows.
        activation_checkpointing: recompute each block in backward instead of storing its
            activations (less memory, about a third more compute).
        max_bad_steps: a step with a non-finite loss or gradient is skipped; this many in a row
            stop the run (with a checkpoint of the last good weights).
        moe_aux_loss_coef: mixture-of-experts models: weight of the router's load-balancing
            loss (n_experts * sum_e share_e * mean_prob_e, 1 when balanced) added to the
            training loss (0: off). Dense models ignore it.
        moe_z_loss_coef: weight of the router z-loss (mean logsumexp(router logits)^2), which
            keeps router logits small (0: off).
        lr_schedule: after warm-up, "cosine" (down from the peak all along) or "wsd"
            (warmup-stable-decay: the peak until the last ``lr_decay_fraction`` of the run, then
            a straight line to min_lr; counted in time under a budget, so it ends on time).
        lr_decay_fraction: the share of the run (time under a budget) "wsd" spends decaying.
        optimizer: "adamw", or "muon": Muon (orthogonalised momentum, `buildlm.train.muon`) for
            the matrices inside the blocks, AdamW at ``lr`` for embeddings, head, norms, biases.
        muon_lr: Muon's peak learning rate (the schedule scales it with ``lr``).
        muon_momentum: Muon's (Nesterov) momentum.
    """

    max_steps: int = 5000
    time_budget_s: float | None = 300.0
    batch_size: int = 16
    grad_accum_steps: int = 1
    context_length: int | None = None
    lr: float = 5e-3
    min_lr: float = 5e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    precision: str = "fp32"
    compile: bool = False
    device: str = "auto"
    seed: int = 1337
    eval_interval: int = 100
    eval_batches: int = 10
    log_interval: int = 10
    sample_interval: int = 500
    sample_prompt: str = "\n"
    sample_tokens: int = 120
    sample_temperature: float = DEFAULT_TEMPERATURE
    sample_top_k: int | None = 50
    checkpoint_interval: int = 500
    keep_checkpoints: int = 2
    out_dir: str = "runs"
    name: str | None = None
    peak_flops: float | None = None
    num_threads: int | None = None
    tensorboard: bool = True
    progress: bool = True
    max_time_s: float | None = None
    distributed: str = "ddp"
    activation_checkpointing: bool = False
    max_bad_steps: int = 5
    moe_aux_loss_coef: float = 0.01
    moe_z_loss_coef: float = 0.001
    lr_schedule: str = "cosine"
    lr_decay_fraction: float = 0.3
    optimizer: str = "adamw"
    muon_lr: float = 0.02
    muon_momentum: float = 0.95

    def __post_init__(self) -> None:
        if self.precision not in (*DTYPES, "auto"):
            raise ValueError(
                f"unknown precision {self.precision!r}; choose one of: auto, {', '.join(DTYPES)}"
            )
        if self.device not in DEVICES and not self.device.startswith(("cuda:", "mps:")):
            raise ValueError(f"unknown device {self.device!r}; choose one of: {', '.join(DEVICES)}")
        for name in ("max_steps", "batch_size", "grad_accum_steps", "eval_batches", "log_interval", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.distributed not in ("ddp", "fsdp"):
            raise ValueError(f"unknown train.distributed {self.distributed!r}; choose ddp or fsdp")
        # Each number's own range first, so the message names the value that is wrong.
        for name in ("lr", "min_lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"train.{name} must be a number >= 0, got {value}")
        if self.lr == 0:
            raise ValueError("train.lr must be above 0 (the model would not learn), got 0")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"train.{name} must be in [0, 1), got {value}")
        if self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr={self.min_lr} is above train.lr={self.lr}; lower min_lr")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"train.time_budget_s must be positive or null, got {self.time_budget_s}")
        if self.lr_schedule not in ("cosine", "wsd"):
            raise ValueError(f"unknown train.lr_schedule {self.lr_schedule!r}; choose cosine or wsd")
        if not 0 < self.lr_decay_fraction <= 1:
            raise ValueError(f"train.lr_decay_fraction must be in (0, 1], got {self.lr_decay_fraction}")
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError(f"unknown train.optimizer {self.optimizer!r}; choose adamw or muon")
        if self.optimizer == "muon" and self.distributed == "fsdp":
            raise ValueError(
                "train.optimizer muon needs whole matrices, which FSDP shards; use --train.distributed ddp, "
                "or --train.optimizer adamw with fsdp"
            )
        if not (math.isfinite(self.muon_lr) and self.muon_lr > 0) or not 0 <= self.muon_momentum < 1:
            raise ValueError("train.muon_lr must be > 0 and train.muon_momentum in [0, 1)")
        if self.keep_checkpoints < 1:
            raise ValueError(f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready dict."""
    return dataclasses.asdict(obj)


def from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a dataclass from :func:`to_dict` output, ignoring keys it does not know."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})
