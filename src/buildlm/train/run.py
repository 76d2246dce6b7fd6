"""A whole pretraining run, from raw text to a checkpoint: what ``buildlm train`` does.

1. tokenizer: train a byte-level BPE on the inputs (``tokenizer.name="bpe"``), or load GPT-2's
   or a saved one;
2. data: tokenize the inputs into memmap shards (``buildlm.data.shards``). The result is cached
   under ``<out_dir>/data-cache/<key>`` (the key hashes the inputs and tokenizer settings), so a
   second run on the same text starts training at once;
3. model: ``ModelConfig.preset(preset, **overrides)`` with ``vocab_size`` taken from the tokenizer;
4. baselines (uniform, unigram, bigram val losses) printed for scale, then ``Trainer.fit``;
5. samples from the final model.

``resume=`` continues a run from its newest checkpoint (or a given one), with the settings it
was started with, unless explicitly overridden.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildlm.train.config import DataConfig, TokenizerConfig, TrainConfig, to_dict

if TYPE_CHECKING:  # torch is imported when a run starts, so `buildlm train --help` is quick
    import torch


def model_args_class() -> type:
    """A dataclass ``ModelArgs``: ``preset`` plus every ModelConfig field as an optional override.

    Built from ModelConfig itself, so a new model field is a new ``--model.*`` flag at once.
    ``None`` means "the preset's value"; ``vocab_size=None`` means "the tokenizer's".
    """
    from buildlm.model import ModelConfig

    hints = typing.get_type_hints(ModelConfig)
    fields: list[tuple[str, Any, Any]] = [("preset", str, dataclasses.field(default="tiny"))]
    for f in dataclasses.fields(ModelConfig):
        fields.append((f.name, typing.Optional[hints[f.name]], dataclasses.field(default=None)))  # noqa: UP045
    cls = dataclasses.make_dataclass("ModelArgs", fields)
    cls.__doc__ = "A model preset and any ModelConfig field to override (None: the preset's value)."
    cls.__module__ = __name__
    return cls


def build_model_config(model_args: Any, vocab_size: int | None = None, context_length: int | None = None):
    """ModelConfig from ``ModelArgs``.

    Unless given explicitly, ``vocab_size`` is the tokenizer's and ``context_length`` the training
    window (``train.context_length``): a model is never built with positions it will not train.
    """
    from buildlm.model import ModelConfig

    overrides = {k: v for k, v in dataclasses.asdict(model_args).items() if k != "preset" and v is not None}
    if vocab_size is not None and "vocab_size" not in overrides:
        overrides["vocab_size"] = vocab_size
    if context_length is not None and "context_length" not in overrides:
        overrides["context_length"] = context_length
    return ModelConfig.preset(model_args.preset, **overrides)


def _input_fingerprint(inputs: list[str]) -> list[Any]:
    from buildlm.data.inputs import expand_inputs, fingerprint

    return fingerprint(expand_inputs(inputs))


# DataConfig's reading settings: part of the cache key when not at their defaults
_READ_FIELDS = ("field", "chat_template", "on_error", "split", "subset", "streaming", "max_documents", "max_tokens")


def data_cache_key(data: DataConfig, tok: TokenizerConfig) -> str:
    """Hash of everything the prepared shards depend on."""
    key: dict[str, Any] = {"inputs": _input_fingerprint(list(data.inputs)), "tokenizer": to_dict(tok),
                           "val": data.val_fraction, "v": 2}  # fmt: skip
    default = DataConfig()
    read = {k: getattr(data, k) for k in _READ_FIELDS if getattr(data, k) != getattr(default, k)}
    if read:  # only when set: the keys of plain-text runs stay as they were
        key["read"] = read
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_tokenizer(tok: TokenizerConfig, inputs: list[str], log=print, data: DataConfig | None = None):
    """Train a BPE on ``inputs`` (``name="bpe"``), or load ``"gpt2"`` / a tokenizer.json path.

    ``data`` says how records become documents (``--data.field`` ...) and how many to read.
    """
    from buildlm.data.inputs import expand_inputs, training_texts
    from buildlm.data.shards import load_tokenizer
    from buildlm.tokenizer import Tokenizer

    if tok.name != "bpe":
        return load_tokenizer(tok.name)
    data = data or DataConfig(inputs=list(inputs))
    # a str is text to Tokenizer.train, a Path a file it streams; records are read lazily
    items = expand_inputs(inputs)
    texts: Any = training_texts(items, data.read_options(), data.max_documents)
    if all(item.kind in ("text", "corpus") for item in items):
        texts = list(texts)  # a list: the progress bar knows the total
    t0 = time.perf_counter()
    tokenizer = Tokenizer.train(texts, tok.vocab_size, pattern=tok.pattern, progress=True)
    log(f"trained a BPE tokenizer: vocab {tokenizer.vocab_size} in {time.perf_counter() - t0:.1f}s")
    if tokenizer.vocab_size < tok.vocab_size:
        log(
            f"note: the tokenizer stopped at {tokenizer.vocab_size} tokens of the "
            f"{tok.vocab_size} asked: every word of the training text is already one token; "
            "give more text or a smaller --tokenizer.vocab_size"
        )
    return tokenizer


def prepare_data(data: DataConfig, tok: TokenizerConfig, out_dir: str | os.PathLike, log=print) -> Path:
    """The prepared-data folder for these settings: given, cached, or built now."""
    from buildlm.data.shards import MANIFEST, prepare_shards

    if data.prepared_dir is not None:
        return Path(data.prepared_dir)
    folder = Path(out_dir) / "data-cache" / data_cache_key(data, tok)
    if (folder / MANIFEST).is_file():
        log(f"using prepared data in {folder}")
        return folder
    from buildlm.lock import FolderLock

    with FolderLock(folder, log=log).acquire_waiting(log):  # another run may be preparing it
        if (folder / MANIFEST).is_file():
            log(f"using prepared data in {folder}")
            return folder
        _adopt_old_cache(folder)
        tokenizer = make_tokenizer(tok, list(data.inputs), log, data)
        t0 = time.perf_counter()
        prepare_shards(data.inputs, tokenizer, folder, val_fraction=data.val_fraction,
                       num_workers=data.num_workers, force=True, read=data.read_options(),
                       max_documents=data.max_documents, max_tokens=data.max_tokens, log=log)  # fmt: skip
        log(f"tokenized {', '.join(map(str, data.inputs))} into {folder} in {time.perf_counter() - t0:.1f}s")
    return folder


def _adopt_old_cache(folder: Path) -> None:
    """A cache folder left half-written by an older buildlm (no list of its files) is buildlm's
    own by its place and names: record them so the new shards may replace them."""
    from buildlm.atomic import OUTPUTS, adopt_files, foreign_entries
    from buildlm.data.shards import MANIFEST, TOKENIZER_FILE

    ours = {"train.bin", "val.bin", TOKENIZER_FILE, MANIFEST}
    found = foreign_entries(folder)
    if found and not (folder / OUTPUTS).is_file() and found <= ours:
        adopt_files(folder, found)


def run_training(
    model_args: Any,
    train: TrainConfig,
    data: DataConfig,
    tok: TokenizerConfig,
    resume: str | None = None,
    log=print,
    started: float | None = None,
):
    """Run ``buildlm train``; returns the ``TrainResult``.

    ``started`` (a ``time.perf_counter()`` value, default: now) is when the run began: a time
    budget counts from there.

    Under ``torchrun`` this is one rank of a DDP/FSDP run (``train.distributed``): rank 0
    prepares the data while the others wait, and only rank 0 prints.
    """
    from buildlm.train.distributed import init_distributed, silent

    started = time.perf_counter() if started is None else started
    dist = init_distributed(train.distributed, train.device)
    if dist is not None and not dist.is_main:
        log = silent
    try:
        with contextlib.ExitStack() as held:  # the run folder's lock (buildlm.lock)
            return _run(model_args, train, data, tok, resume, log, dist, held, started)
    finally:
        if dist is not None:
            dist.close()


def _lock_run(held: contextlib.ExitStack, run_dir: Path, dist: Any, log, hint: str) -> None:
    """Hold ``run_dir``'s lock (`buildlm.lock`) until the run ends; rank 0 holds it for all."""
    from buildlm.lock import FolderLock

    if dist is None or dist.is_main:
        held.enter_context(FolderLock(run_dir, hint, log=log).acquire())


def _rank0_first(dist: Any, work):
    """``work()`` on rank 0, then on the others (which then find its results on disk)."""
    if dist is None:
        return work()
    if dist.is_main:
        out = work()
        dist.barrier()
        return out
    dist.barrier()
    return work()


def check_device(train: TrainConfig, log=print, dist: Any = None) -> torch.device:
    """The device ``--train.device`` names (or, under torchrun, the one this rank took), logged
    as one line (which, and why), with the settings that depend on it checked now:
    ``--train.precision`` (bf16 where the device has none) and ``--train.compile`` (not on
    Apple MPS). Fine-tuning runs through it too."""
    from buildlm.device import DTYPES, DeviceChoice, check_compile, check_dtype, choose_device

    if dist is None:
        choice = choose_device(train.device, "--train.device")
    else:
        each = "GPU LOCAL_RANK (NCCL)" if dist.device.type == "cuda" else "the CPU (gloo)"
        choice = DeviceChoice(dist.device, f"torchrun: rank {dist.rank} of {dist.world_size}, each on {each}")
    if train.precision in DTYPES:
        check_dtype(DTYPES[train.precision], choice.device, "--train.precision")
    if train.compile:
        check_compile(choice.device, "--train.compile")
    log(choice.line)
    return choice.device


def _run(model_args: Any, train: TrainConfig, data: DataConfig, tok: TokenizerConfig,
         resume: str | None, log, dist: Any, held: contextlib.ExitStack,
         started: float | None = None):  # fmt: skip
    import torch

    from buildlm import checkpoint_format
    from buildlm.data.shards import load_manifest, load_split
    from buildlm.device import seed_everything
    from buildlm.model import GPT
    from buildlm.tokenizer import Tokenizer
    from buildlm.train import checkpoint as ckpt
    from buildlm.train.baselines import baselines
    from buildlm.train.budget import finished_message
    from buildlm.train.fits import check_training_fits
    from buildlm.train.report import against_baselines, generate_hint, suggest_prompt
    from buildlm.train.trainer import Trainer, TrainResult
    from buildlm.train.windows import TrainData

    # Cheap checks first, so a typo fails before minutes of tokenizing.
    device = check_device(train, log, dist)
    build_model_config(model_args, context_length=train.context_length)
    resume_from = None
    if resume is not None:
        given = Path(resume)
        if not given.is_dir():
            checkpoint_format.resolve_checkpoint(given)  # raises: not found
        run_dir = given.parent.parent if (given / checkpoint_format.CONFIG).is_file() else given
        _lock_run(held, run_dir, dist, log, "resume it once that run has ended")
        from buildlm.train.checkpoint_health import resolve_resumable

        resume_from = _rank0_first(dist, lambda: resolve_resumable(resume, log))
        run_dir = resume_from.parent.parent
        # A finished run with nothing new to do says so before any data is loaded.
        state = ckpt.load_trainer_state(resume_from)
        done = finished_message(str(resume), state, train.max_steps, train.time_budget_s)
        if done is not None:
            log(done)
            return TrainResult(step=int(state["step"]), val_loss=state.get("last_val_loss"))
        saved = checkpoint_format.read_config(resume_from)
        data_dir = Path(saved.get("data_dir") or "")
        if not (data_dir / "manifest.json").is_file():
            data_dir = _rank0_first(dist, lambda: prepare_data(data, tok, train.out_dir, log))
    else:
        name = train.name or time.strftime("%Y%m%d-%H%M%S")
        if dist is not None:  # the clocks of the ranks may straddle a second
            name = dist.broadcast(name)
        run_dir = Path(train.out_dir) / name
        _lock_run(held, run_dir, dist, log, "pick another --train.name")
        if checkpoint_format.list_checkpoints(run_dir):
            raise ValueError(
                f"run folder {str(run_dir)!r} already holds checkpoints; continue it with "
                f"--resume {run_dir}, or pick another --train.name"
            )
        data_dir = _rank0_first(dist, lambda: prepare_data(data, tok, train.out_dir, log))

    manifest = load_manifest(data_dir)
    tokenizer = Tokenizer.load(Path(data_dir) / manifest["tokenizer"])
    train_tokens = load_split(data_dir, "train")
    val_tokens = load_split(data_dir, "val") if manifest["splits"]["val"]["tokens"] else None
    model_config = build_model_config(model_args, tokenizer.vocab_size, train.context_length)
    check_training_fits(model_config, device)  # before allocating anything

    seed_everything(train.seed)
    model = GPT(model_config)  # the same initial weights on every rank
    if dist is not None:  # but different dropout masks
        torch.manual_seed(train.seed + 1000 * dist.rank)
    scale = {}
    if val_tokens is not None and len(val_tokens) > 1:
        scale = baselines(train_tokens, val_tokens, model_config.vocab_size)
    context = train.context_length or model_config.context_length
    log(
        f"model: {model.num_params() / 1e6:.2f}M parameters ({model.num_params(non_embedding=True) / 1e6:.2f}M "
        f"non-embedding), d_model {model_config.d_model}, {model_config.n_layers} layers, "
        f"context {context}, vocab {model_config.vocab_size}; device {device}, {train.precision}"
    )
    if dist is not None:
        log(f"distributed: {train.distributed.upper()} over {dist.world_size} processes, batch_size per process")
    val_count = 0 if val_tokens is None else len(val_tokens)
    log(f"data: {len(train_tokens):,} train tokens, {val_count:,} val tokens ({data_dir})")
    per_step = train.batch_size * train.grad_accum_steps * context * (1 if dist is None else dist.world_size)
    epochs = train.max_steps * per_step / len(train_tokens)
    if train.time_budget_s is not None and resume_from is None:
        log(
            f"training: steps of {per_step:,} tokens until the {train.time_budget_s:g}s time budget (counted "
            f"from the start of the run) is spent, at most {train.max_steps}"
        )
    else:
        log(f"training: {train.max_steps} steps x {per_step:,} tokens = {epochs:.1f} epochs")
    if scale:
        log("baselines (val loss, nats/token): " + ", ".join(f"{k} {v:.3f}" for k, v in scale.items()))
    run_config = {
        "data": to_dict(data),
        "tokenizer": to_dict(tok),
        "data_dir": str(Path(data_dir).resolve()),
        "baselines": scale,
    }
    trainer = Trainer(
        model,
        train,
        TrainData(train_tokens, val_tokens, manifest["splits"]["val"]["bytes"] or None),
        tokenizer=tokenizer,
        run_dir=run_dir,
        run_config=run_config,
        baselines={k: v for k, v in scale.items() if k != "uniform"},
        log=log,
        dist=dist,
        started=started,
    )
    if resume_from is not None:
        trainer.load_state(resume_from)
        log(f"resumed from {resume_from} at step {trainer.step}")
    log(f"writing to {run_dir}")
    result = trainer.fit()
    result.samples.append(trainer.sample())  # every rank: FSDP's forward passes are collective
    log(f"--- sample ---\n{result.samples[0]}\n---")
    if result.checkpoint is not None:
        prompt = suggest_prompt(tokenizer.decode(val_tokens[:2000].tolist())) if val_tokens is not None else ""
        log(f"checkpoint: {result.checkpoint}  (try: {generate_hint(str(run_dir), prompt)})")
    ran = f"after {result.step} steps, {time.perf_counter() - started:.0f}s" if started else f"after {result.step} steps"
    if result.val_loss is not None:
        log(f"final {against_baselines(result.val_loss, scale)} ({ran})")
    return result
