"""What every fine-tuning run shares: the starting model, the data splits, what trains, the run folder.

Stage 8 of the learning path turns a pretrained model into something useful: a classifier
(`buildlm.finetune.classify`), an instruction follower (`buildlm.finetune.instruct`), a model that
prefers good answers to bad ones (`buildlm.finetune.dpo`). Each is a `buildlm.train.task.Task`
run by the same `Trainer` as pretraining; this file holds the steps around it:

1. **the starting model**: a buildlm checkpoint or run folder, or a Hugging Face folder
   (GPT-2, Llama, Qwen), opened by `buildlm.infer.load_model`, with its tokenizer;
2. **the data**: a file (JSONL, JSON, CSV, TSV, Parquet; also .gz/.zst) or a bundled dataset name
   (`buildlm.data.bundled_tasks`); a file without separate validation/test files is split by a
   seeded shuffle;
3. **what trains**: every weight (full fine-tuning), or only LoRA adapters
   (`buildlm.model.lora`: ~1% of the parameters, the rest frozen);
4. **the run folder**: checkpoints (config.json records the task and the LoRA settings, so the
   folder alone rebuilds the model), ``adapter.safetensors`` for LoRA runs, ``metrics.csv``,
   ``loss.png`` and ``eval.json`` with the final test figures.

A resumed run (``--resume RUN``) goes through the same steps, in the same order, as the run it
continues: the data, the starting model, the LoRA adapters or the DPO reference, the seed. Only
then does `Trainer.load_state` overwrite the weights, optimizer, data position and RNG with the
checkpoint's, so everything built from the starting model (a frozen reference) is as it was.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from buildlm.atomic import atomic_write_text
from buildlm.data.records import Record, read_records, records_from_dicts
from buildlm.model.lora import LoRAConfig, count_parameters, inject_lora, mark_only_lora_trainable
from buildlm.train.config import TrainConfig

ADAPTER = "adapter.safetensors"
EVAL = "eval.json"


@dataclass
class FinetuneData:
    """Where the examples come from.

    Args:
        data: a .jsonl/.json/.csv/.tsv/.parquet file (also .gz or .zst compressed), hf:NAME (the
            train split of a Hugging Face dataset, or hf:/local/folder), or a bundled dataset name (shakespeare-plays, instruct-tasks, instruct-prefs;
            ``instruct-tasks:add,parity`` picks tasks).
        val_data: a separate validation file (default: split off ``data``).
        test_data: a separate test file (default: split off ``data``).
        val_fraction: share of ``data`` held out for validation when no val_data is given.
        test_fraction: share of ``data`` held out for the final test when no test_data is given.
        max_train_examples: use only the first N training examples (null: all).
        fields: the file's names for the fields the task reads, e.g.
            '{"instruction": "question", "output": "answer"}' (null: the task's own names).
    """

    data: str = ""
    val_data: str | None = None
    test_data: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_train_examples: int | None = None
    fields: dict[str, str] | None = None

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave some data to train on")


@dataclass
class FinetuneResult:
    """What a fine-tuning run reports: its folder, last checkpoint and final figures."""

    run_dir: Path
    checkpoint: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def load_splits(spec: FinetuneData, kind: str, seed: int = 0) -> dict[str, list[Record]]:
    """``{"train": [...], "val": [...], "test": [...]}`` records (val/test may be empty).

    A single file is shuffled with ``seed`` (fixed, not the training seed: runs with different
    training seeds are scored on the same test examples) and cut into test, val and train.
    """
    from buildlm.data import bundled_tasks

    if not spec.data:
        raise ValueError("no training data given; pass --data FILE or a bundled dataset name")
    if bundled_tasks.is_bundled(spec.data):
        base, _ = bundled_tasks.parse_name(spec.data)
        if bundled_tasks.BUNDLED[base] != kind:
            raise ValueError(
                f"{spec.data!r} is a {bundled_tasks.BUNDLED[base]} dataset, not a {kind} one; bundled "
                f"{kind} data: {[n for n, k in bundled_tasks.BUNDLED.items() if k == kind]}"
            )
        splits = {k: records_from_dicts(v, f"{spec.data}/{k}") for k, v in bundled_tasks.load_bundled(spec.data).items()}
    else:
        records = read_records(spec.data, spec.fields)
        random.Random(seed).shuffle(records)
        n = len(records)
        n_val = 0 if spec.val_data else int(round(n * spec.val_fraction))
        n_test = 0 if spec.test_data else int(round(n * spec.test_fraction))
        splits = {
            "train": records[n_val + n_test :],
            "val": records[:n_val],
            "test": records[n_val : n_val + n_test],
        }
    if spec.val_data:
        splits["val"] = read_records(spec.val_data, spec.fields)
    if spec.test_data:
        splits["test"] = read_records(spec.test_data, spec.fields)
    if spec.max_train_examples is not None:
        splits["train"] = splits["train"][: spec.max_train_examples]
    if not splits["train"]:
        raise ValueError(f"{spec.data!r} leaves no training examples; the dataset is empty")
    return splits


def load_start_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, Any]:
    """The model to fine-tune and its tokenizer, from a buildlm or Hugging Face folder (fp32)."""
    from buildlm.infer.load import load_model
    from buildlm.model import GPT

    if not str(path):
        raise ValueError("no starting model given; pass --model RUN_OR_CHECKPOINT_OR_HF_FOLDER")
    model, tokenizer = load_model(path, device=device, dtype=torch.float32)
    if not isinstance(model, GPT):
        raise ValueError(f"{str(path)!r} does not hold a GPT language model")
    if tokenizer is None:
        raise ValueError(
            f"{str(path)!r} has no tokenizer (tokenizer.json, or vocab.json + merges.txt); "
            "fine-tuning needs one to turn examples into ids"
        )
    return model, tokenizer


def apply_lora(model: nn.Module, lora: LoRAConfig, also: tuple[str, ...] = ()) -> list[str]:
    """Add LoRA adapters and freeze everything else (except parameters matching ``also``)."""
    names = inject_lora(model, lora.rank, lora.alpha, lora.dropout, lora.targets)
    mark_only_lora_trainable(model, also)
    return names


def prepare_device(train: TrainConfig, log=print) -> torch.device:
    """The device to run on, logged as one line with the reason (`buildlm.train.run.check_device`,
    which checks the precision and compile settings for it too); ``train.num_threads`` applied
    now, before any evaluation runs."""
    from buildlm.train.run import check_device

    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    return check_device(train, log)


def describe_trainable(model: nn.Module) -> str:
    trainable, total = count_parameters(model)
    return f"trainable parameters: {trainable:,} of {total:,} ({trainable / max(total, 1):.2%})"


def resolve_run_dir(out: str | None, train: TrainConfig, kind: str) -> Path:
    """``out``, or ``<train.out_dir>/<train.name or kind-date-time>``; never one with checkpoints."""
    from buildlm import checkpoint_format

    run_dir = Path(out) if out else Path(train.out_dir) / (train.name or f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    if checkpoint_format.list_checkpoints(run_dir):
        raise ValueError(
            f"run folder {str(run_dir)!r} already holds checkpoints; pick another --out or --train.name"
        )
    return run_dir


def run_config(kind: str, model_path: str, data: FinetuneData, task_config: Any, lora: LoRAConfig, **extra: Any) -> dict:
    """The finetune part of config.json: what was trained from what, and how."""
    return {
        "finetune": {"task": kind, "base_model": str(model_path), **asdict(data), **asdict(task_config), **extra},
        "lora": lora.to_dict() if lora.rank else None,
    }


def context_limit(asked: int | None, model: nn.Module) -> int:
    """``asked`` tokens, at most the model's context length (all of it when ``None``)."""
    context = model.config.context_length
    return min(asked or context, context)


@dataclass
class FinetuneRun:
    """What every fine-tuning run starts from, and the steps that open and close it."""

    started: float
    device: torch.device
    run_dir: Path
    splits: dict[str, list[Record]]
    model: nn.Module
    tokenizer: Any
    lock: Any = None  # the run folder's FolderLock (buildlm.lock), released by finish()

    resume_from: Path | None = None  # the checkpoint a resumed run continues from

    @classmethod
    def start(
        cls, kind: str, model_path: str, data: FinetuneData, train: TrainConfig, out: str | None,
        data_kind: str | None = None, resume: str | None = None, log=print,
    ) -> FinetuneRun:  # fmt: skip
        """Threads and device, a fresh run folder (or the folder of the run ``resume`` names), the
        data splits (of bundled data of ``data_kind``, default ``kind``), the starting model.

        A resumed run's folder is locked first, then its newest good checkpoint is picked, damaged
        newer ones moved aside (`buildlm.train.checkpoint_health`), as ``buildlm train`` does."""
        started = time.perf_counter()
        device = prepare_device(train, log)
        if not str(model_path):  # before the run folder is made
            raise ValueError("no starting model given; pass --model RUN_OR_CHECKPOINT_OR_HF_FOLDER")
        from buildlm.lock import FolderLock

        resume_from = None
        if resume is not None:
            from buildlm.checkpoint_format import CONFIG
            from buildlm.train.checkpoint_health import resolve_resumable

            given = Path(resume)
            if not given.exists():  # before a lock file would make the folder
                raise FileNotFoundError(f"run folder {resume!r} to resume not found; pass a fine-tuning run's folder")
            run_dir = given.parent.parent if (given / CONFIG).is_file() else given
            lock = FolderLock(run_dir, "resume it once that run has ended").acquire()
            resume_from = resolve_resumable(given, log)
            run_dir = resume_from.parent.parent
        else:
            run_dir = resolve_run_dir(out, train, kind)
            lock = FolderLock(run_dir, "pick another --out or --train.name").acquire()
            resolve_run_dir(str(run_dir), train, kind)  # again, now that no other run can start it
        splits = load_splits(data, data_kind or kind)
        model, tokenizer = load_start_model(model_path, device)
        return cls(started, device, run_dir, splits, model, tokenizer, lock, resume_from)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.eot_token or 0

    def train(self, model: nn.Module, train: TrainConfig, task: Any, run_config: dict, log=print) -> Any:
        """Run the `Trainer` on ``task``; returns its result (steps, seconds, last checkpoint)."""
        from buildlm.train.trainer import Trainer

        trainer = Trainer(
            model, train, tokenizer=self.tokenizer, run_dir=self.run_dir, run_config=run_config, log=log, task=task
        )
        if self.resume_from is not None:
            trainer.load_state(self.resume_from)
            log(f"resumed from {self.resume_from} at step {trainer.step}")
        log(f"writing to {self.run_dir}")
        return trainer.fit()

    def finish(
        self, checkpoint: Path | None, metrics: dict[str, Any], try_command: str | None = None, log=print
    ) -> FinetuneResult:
        """Write eval.json, say where the checkpoint is (and a command to try it)."""
        write_eval(self.run_dir, metrics)
        if self.lock is not None:
            self.lock.release()
        log(f"checkpoint: {checkpoint}" + (f"  (try: {try_command})" if try_command else ""))
        return FinetuneResult(self.run_dir, checkpoint, metrics, time.perf_counter() - self.started)


def write_eval(run_dir: Path, metrics: dict[str, Any]) -> Path:
    """Write ``eval.json`` atomically."""
    return atomic_write_text(run_dir / EVAL, json.dumps(metrics, indent=2) + "\n")
