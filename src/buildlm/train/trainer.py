"""The pretraining loop: batches in, a better model and a checkpoint out.

One optimizer step does:

1. set the learning rate from the schedule (``optim.lr_at``);
2. for each of ``grad_accum_steps`` micro-batches: forward under autocast (bf16/fp16 run the
   matmuls in 16-bit, the loss stays fp32), divide the loss by the number of micro-batches and
   backpropagate. Gradients *add up* in ``.grad``, so N micro-batches of b windows give the
   gradient of one batch of N*b windows, with the memory of b;
3. clip the global gradient norm (one bad batch cannot throw the weights far), then step AdamW.
   With fp16 a ``GradScaler`` multiplies the loss before backward so small gradients do not
   underflow to zero, and divides them back before clipping and stepping.

Around it: periodic evaluation on fixed validation windows (loss, perplexity, bits per byte),
sample generations, metrics to CSV/TensorBoard, a progress bar with tokens/s and MFU, and
atomic checkpoints from which :meth:`Trainer.load_state` resumes *exactly*: same batches, same
RNG, same optimizer moments, so the losses equal those of an uninterrupted run.

Fine-tuning (stage 8) reuses this loop unchanged: a :class:`buildlm.train.task.Task` replaces
the token windows by its own batches (classification, instruction or preference examples) and
the next-token loss by its own, and reports its own evaluation metrics.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from buildlm import checkpoint_format
from buildlm.data.dataset import RandomWindowBatches
from buildlm.device import resolve_device
from buildlm.train import checkpoint as ckpt
from buildlm.train.activation_checkpointing import enable_activation_checkpointing
from buildlm.train.budget import DecayPlan, TimeBudget, cosine_decay
from buildlm.train.config import TrainConfig, to_dict
from buildlm.train.distributed import (
    Distributed,
    load_optimizer_state_by_name,
    optimizer_state_by_name,
    silent,
)
from buildlm.train.metrics import (
    MetricsLogger,
    PeakFlops,
    bits_per_byte,
    perplexity,
    plot_losses,
)
from buildlm.train.optim import lr_at, make_optimizer, set_lr
from buildlm.train.task import Task


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass (``fp32``: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainData:
    """The token arrays to train on; ``val_bytes`` (UTF-8 bytes of the val text) enables bits per byte."""

    train: np.ndarray
    val: np.ndarray | None = None
    val_bytes: int | None = None


@dataclass
class TrainResult:
    """What a finished ``fit`` reports."""

    step: int
    losses: list[float] = field(default_factory=list)  # per optimizer step, this session
    val_loss: float | None = None
    checkpoint: Path | None = None
    samples: list[str] = field(default_factory=list)
    seconds: float = 0.0


class NonFiniteLossError(FloatingPointError):
    """Too many steps in a row with an inf/NaN loss or gradient: training cannot go on."""


class Trainer:
    """Trains ``model`` on ``data`` as ``config`` says, writing into ``run_dir`` (optional).

    ``run_config`` is the JSON-ready dict stored in each checkpoint's config.json (the CLI puts
    the model, data and tokenizer settings there); ``model.config.to_dict()`` is added under
    ``"model"`` and the train config under ``"train"``.

    ``task`` (fine-tuning) replaces ``data``: its batch streams, loss and evaluation are used
    instead of random token windows, next-token cross-entropy and validation perplexity.

    ``dist`` (from :func:`buildlm.train.distributed.init_distributed`, under ``torchrun``) makes
    this one rank of a DDP or FSDP run: ``batch_size`` is then per rank, each rank reads its own
    part of every global batch, and only rank 0 logs and writes.

    ``started`` (a ``time.perf_counter()`` value) is when the run began, if before ``fit``: a
    time budget counts from there (`buildlm train` passes the moment it started preparing data).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        data: TrainData | None = None,
        tokenizer: Any = None,
        run_dir: str | os.PathLike | None = None,
        run_config: dict[str, Any] | None = None,
        baselines: dict[str, float] | None = None,
        log=print,
        task: Task | None = None,
        dist: Distributed | None = None,
        started: float | None = None,
    ) -> None:
        self.config = config
        self.started = started
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self.device = resolve_device(config.device, "--train.device") if dist is None else dist.device
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        if config.precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("precision 'bf16' is not supported by this GPU; use fp16 or fp32")
        self.model = model.to(self.device)  # the plain module: saved, sampled from
        if config.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        # What training steps call: the model, its DDP wrapper, or itself sharded by FSDP.
        self.wrapped_model = self.model if dist is None else dist.wrap(self.model)
        self.forward_model = torch.compile(self.wrapped_model) if config.compile else self.wrapped_model
        self.context_length = config.context_length or model.config.context_length
        if self.context_length > model.config.context_length:
            raise ValueError(
                f"train.context_length={self.context_length} exceeds the model's context_length="
                f"{model.config.context_length}; lower --train.context_length or raise --model.context_length"
            )
        self.tokenizer = tokenizer
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run_config = dict(run_config or {})
        self.baselines = dict(baselines or {})
        self.log = log if self.is_main else silent
        self.data = data
        self.task = task
        if task is not None:
            self.train_batches = task.train_batches
            self.val_batches = task.val_batches
        elif data is None:
            raise ValueError("a Trainer needs data (token arrays) or a fine-tuning task")
        else:
            self._init_windows(data)
        self.optimizer = make_optimizer(
            self.model,
            lr=config.lr,
            weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2),
            device_type=self.device.type,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.autocast = autocast_context(self.device, config.precision)
        self.step = 0
        self.tokens_seen = 0
        self.elapsed = 0.0
        self.last_val_loss: float | None = None
        self.lr = config.lr
        self.grad_norm = float("nan")
        self.metrics: MetricsLogger | None = None
        self.peak: PeakFlops | None = None  # measured when fit starts, unless config.peak_flops
        self.plan: DecayPlan | None = None  # the learning rate's cosine (see budget.py)
        self.budget: TimeBudget | None = None  # while a budgeted fit runs
        self.budget_spent = 0.0  # seconds of time_budget_s used by earlier sessions
        self.finished = False  # the run reached the end of its plan (max_steps or the deadline)
        self._step_tokens = 0
        self.bad_steps = 0  # non-finite steps in a row

    def _init_windows(self, data: TrainData) -> None:
        """Pretraining: random windows of the train and val token arrays."""
        config = self.config
        for split, tokens in (("train", data.train), ("val", data.val)):
            if tokens is not None and 0 < len(tokens) <= self.context_length:
                raise ValueError(
                    f"the {split} split holds {len(tokens)} tokens, fewer than one window of "
                    f"context_length={self.context_length} + 1; use more text, a larger "
                    "--data.val_fraction, or a smaller --train.context_length"
                )
        self._check_vocab(data.train, "train")
        # Under DDP/FSDP each rank takes its own batch_size windows of every global batch.
        rank, world = (0, 1) if self.dist is None else (self.dist.rank, self.dist.world_size)
        self.train_batches = RandomWindowBatches(
            data.train, config.batch_size, self.context_length, seed=config.seed, device=self.device,
            rank=rank, world_size=world,
        )  # fmt: skip
        self.val_batches = None
        if data.val is not None and len(data.val) > 0:
            self._check_vocab(data.val, "val")
            self.val_batches = RandomWindowBatches(
                data.val, config.batch_size, self.context_length, seed=config.seed + 1,
                device=self.device, rank=rank, world_size=world,
            )  # fmt: skip

    def _check_vocab(self, tokens: np.ndarray, split: str) -> None:
        if len(tokens) == 0:
            return
        top = int(np.max(tokens[: 1 << 24]))
        if top >= self.model.config.vocab_size:
            raise ValueError(
                f"the {split} tokens use id {top} but the model's vocab_size is "
                f"{self.model.config.vocab_size}; set --model.vocab_size to the tokenizer's vocab_size"
            )

    # --- one step -----------------------------------------------------------------------------

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.autocast:
            logits = self.forward_model(x)  # (B, T, vocab)
        # The loss in fp32 even under autocast: log-softmax over a big vocabulary needs the range.
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))

    def _batch_loss(self, batch: Any) -> torch.Tensor:
        """The loss of one micro-batch: next-token cross-entropy, or the task's own loss."""
        if self.task is None:
            return self._loss(*batch)
        with self.autocast:
            return self.task.loss(self.forward_model, batch).float()

    def _batch_tokens(self, batch: Any) -> int:
        """Tokens the model reads for one micro-batch (for tokens/s)."""
        if self.task is None:
            return self.config.batch_size * self.context_length
        return int(self.task.batch_tokens(batch))

    def accumulate_gradients(self) -> float:
        """Forward and backward over ``grad_accum_steps`` micro-batches; returns their mean loss.

        Each micro-batch loss is divided by the number of micro-batches, so the summed gradients
        are those of the mean loss over all of them: the gradient of one big batch. Under
        DDP/FSDP only the last backward averages gradients across ranks, and the loss returned
        is the mean over ranks too.
        """
        n = self.config.grad_accum_steps
        total = torch.zeros((), device=self.device)
        self._step_tokens = 0
        for i in range(n):
            batch = next(self.train_batches)  # pretraining: x (B, T), y (B, T)
            with self._gradient_sync(i == n - 1):
                loss = self._batch_loss(batch)
                self.scaler.scale(loss / n).backward()
            total += loss.detach()
            self._step_tokens += self._batch_tokens(batch)
        if self.dist is not None:
            total = self.dist.mean(total)
            self._step_tokens *= self.dist.world_size
        return float(total) / n

    def _gradient_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        if self.dist is None:
            return contextlib.nullcontext()
        return self.dist.gradient_sync(self.wrapped_model, enabled)

    def optimizer_step(self, loss: float = 0.0) -> bool:
        """Clip the gradient norm, update the weights, clear the gradients.

        A non-finite loss or gradient norm skips the update (the weights and AdamW moments stay
        as they were) and returns False. With fp16 the ``GradScaler`` already skips steps whose
        gradients overflowed while it searches for its scale; those are not counted as bad.
        """
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        # max_norm=inf measures the norm without clipping (grad_clip 0 means no clipping).
        limit = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), limit)
        if hasattr(norm, "full_tensor"):  # FSDP: a distributed tensor holding the global norm
            norm = norm.full_tensor()
        self.grad_norm = float(norm)
        finite = math.isfinite(loss) and (self.config.precision == "fp16" or math.isfinite(self.grad_norm))
        if finite:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return finite

    def train_step(self, lr: float | None = None) -> float:
        """One optimizer update: schedule, accumulate, clip, step. Returns the mean loss.

        ``lr`` overrides the schedule's rate (a budgeted ``fit`` passes the rate it got from the
        clock, the same on every rank).

        A step whose loss or gradients are not finite (inf or NaN) is skipped and logged; after
        ``max_bad_steps`` of them in a row the run stops with :class:`NonFiniteLossError`.
        The step counter and the data stream still advance past a skipped step, so a run that
        recovers goes on with the batches and schedule it would have had.
        """
        cfg = self.config
        self.lr = self.lr_for_step() if lr is None else lr
        set_lr(self.optimizer, self.lr)
        self.model.train()
        loss = self.accumulate_gradients()
        stepped = self.optimizer_step(loss)
        self.step += 1
        self.tokens_seen += self._step_tokens
        if stepped:
            self.bad_steps = 0
            return loss
        self.bad_steps += 1
        self.log(
            f"step {self.step}: loss {loss}, gradient norm {self.grad_norm}: not finite, update "
            f"skipped ({self.bad_steps} in a row; the run stops at {cfg.max_bad_steps})"
        )
        self._record({"step": self.step, "skipped_step": 1.0})
        if self.bad_steps >= cfg.max_bad_steps:
            raise NonFiniteLossError(
                f"{self.bad_steps} steps in a row had a non-finite loss or gradient (last: loss "
                f"{loss}, gradient norm {self.grad_norm}) at step {self.step}; lower --train.lr, "
                "use --train.precision fp32 or bf16, or check the data"
            )
        return loss

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over the same ``eval_batches`` validation batches every time, plus ppl and bpb."""
        if self.task is not None:
            self.model.eval()
            out = dict(self.task.evaluate(self.model))
            self.model.train()
            self.last_val_loss = out.get("val_loss", self.last_val_loss)
            return out
        if self.val_batches is None:
            return {}
        self.model.eval()
        # Under DDP/FSDP each rank scores its share of every validation batch; the mean over
        # ranks is the loss one process would get on the whole batches.
        losses = torch.stack([self._loss(*self.val_batches.batch_at(k)) for k in range(self.config.eval_batches)])
        self.model.train()
        if self.dist is not None:
            self.dist.reshard(self.model)
        if self.dist is not None:
            losses = self.dist.mean(losses)
        loss = float(losses.mean())
        out = {"val_loss": loss, "val_ppl": perplexity(loss)}
        if self.data.val_bytes:
            out["val_bpb"] = bits_per_byte(loss, len(self.data.val), self.data.val_bytes)
        self.last_val_loss = loss
        return out

    def sample(self, prompt: str | None = None, max_new_tokens: int | None = None) -> str:
        """A generation from the model (needs a tokenizer), seeded so it does not touch the run's RNG.

        Under FSDP every rank generates (each forward pass gathers weights from all ranks);
        under DDP only rank 0 does. Other ranks return "".
        """
        from buildlm.infer import generate

        cfg = self.config
        if self.tokenizer is None or self.task is not None:
            return ""
        if not self.is_main and not self.dist.sharded:
            return ""
        prompt = cfg.sample_prompt if prompt is None else prompt
        ids = self.tokenizer.encode(prompt, allowed_special="all") or [self.tokenizer.eot_token or 0]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = generate(
            self.model,
            idx,
            max_new_tokens=cfg.sample_tokens if max_new_tokens is None else max_new_tokens,
            temperature=cfg.sample_temperature,
            top_k=cfg.sample_top_k,
            seed=cfg.seed + self.step,
        )
        self.model.train()
        if self.dist is not None:
            self.dist.reshard(self.model)
        return self.tokenizer.decode(out[0].tolist())

    # --- state --------------------------------------------------------------------------------

    def checkpoint_config(self) -> dict[str, Any]:
        return {**self.run_config, "model": self.model.config.to_dict(), "train": to_dict(self.config)}

    def state_dict(self) -> dict[str, Any]:
        """What ``trainer_state.pt`` holds: everything beyond the weights needed to continue exactly.

        The optimizer state is keyed by parameter name (whole, even under FSDP) and the RNG
        states of every rank are kept, so a run resumes exactly with one process, DDP or FSDP.
        Under a distributed run this is collective: every rank must call it.
        """
        if self.dist is not None and self.dist.sharded:
            optimizer = self.dist.full_optimizer_state(self.model, self.optimizer)
        else:
            optimizer = optimizer_state_by_name(self.model, self.optimizer)
        rng = ckpt.capture_rng()
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed": self.elapsed,
            "optimizer": optimizer,
            "scaler": self.scaler.state_dict(),
            "data": self.train_batches.state_dict(),
            "rng": rng,
            "rng_by_rank": [rng] if self.dist is None else self.dist.gather(rng),
            "last_val_loss": self.last_val_loss,
            "bad_steps": self.bad_steps,
            "lr": self.lr,
            "plan": None if self.plan is None else self.plan.to_dict(),
            "budget_spent": self.budget.used() if self.budget is not None else self.budget_spent,
            "finished": self.finished,
        }

    def save(self) -> Path:
        """Write a checkpoint (rank 0 writes; under DDP/FSDP every rank must call this)."""
        if self.run_dir is None:
            raise ValueError("this Trainer has no run_dir to save checkpoints into")
        state = self.state_dict()
        sharded = self.dist is not None and self.dist.sharded
        weights = self.dist.full_model_state(self.model) if sharded else None  # else model's own
        folder = checkpoint_format.checkpoint_folder(self.run_dir, self.step)
        if self.is_main:
            ckpt.save_checkpoint(
                self.run_dir,
                self.step,
                self.model,
                self.checkpoint_config(),
                tokenizer=self.tokenizer,
                trainer_state=state,
                keep=self.config.keep_checkpoints,
                weights=weights,
            )
        if self.dist is not None:
            self.dist.barrier()  # nobody reads a checkpoint before it is complete
        return folder

    def load_state(self, path: str | os.PathLike) -> Path:
        """Load weights and trainer state from a checkpoint (or a run's newest) to continue exactly."""
        folder = checkpoint_format.resolve_checkpoint(path)
        state = ckpt.load_trainer_state(folder)
        sharded = self.dist is not None and self.dist.sharded
        weights = checkpoint_format.read_weights(self.model, folder / checkpoint_format.WEIGHTS)
        if sharded:
            self.dist.load_full_model_state(self.model, weights)
        else:
            self.model.load_state_dict(weights, strict=True)
        try:
            saved = state["optimizer"]
            if all(isinstance(k, int) for k in saved["state"]):  # by number (older checkpoints)
                self.optimizer.load_state_dict(saved)
            elif sharded:
                self.dist.load_full_optimizer_state(self.model, self.optimizer, saved)
            else:
                load_optimizer_state_by_name(self.model, self.optimizer, saved)
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.train_batches.load_state_dict(state["data"])
        except (KeyError, RuntimeError) as err:
            raise ValueError(
                f"{str(folder / checkpoint_format.TRAINER_STATE)!r} does not match this run ({err}); resume with "
                "the model and train settings the checkpoint was written with"
            ) from None
        self.step = int(state["step"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
        self.last_val_loss = state.get("last_val_loss")
        self.bad_steps = int(state.get("bad_steps", 0))
        self.budget_spent = float(state.get("budget_spent", 0.0))
        self.finished = bool(state.get("finished", False))
        if state.get("plan") is not None:
            self.plan = DecayPlan(**state["plan"])
        else:  # written before plans were kept: the step-count cosine its config.json names
            saved = checkpoint_format.read_config(folder).get("train", {})
            self.plan = DecayPlan(int(saved.get("max_steps", self.config.max_steps)), None, self.config.warmup_steps)
        cfg = self.config
        last = max(self.step - 1, 0)
        self.lr = float(state.get("lr", lr_at(last, cfg.lr, cfg.min_lr, cfg.warmup_steps, self.plan.max_steps)))
        rank, world = (0, 1) if self.dist is None else (self.dist.rank, self.dist.world_size)
        by_rank = state.get("rng_by_rank") or []
        ckpt.restore_rng(by_rank[rank] if len(by_rank) == world else state["rng"])
        return folder

    # --- the learning-rate plan -----------------------------------------------------------------

    def sync_plan(self) -> None:
        """Make the learning-rate plan end where the settings now say the run ends.

        A new run starts the cosine at the peak when warm-up ends. A resumed run keeps its plan,
        unless it was given a new end (``max_steps`` or ``time_budget_s`` changed, typically
        raised to train a finished run further): then a new cosine starts at the current step
        from the rate the run had, down to ``min_lr`` at the new end. The rate never jumps up.
        """
        cfg = self.config
        if self.plan is not None and self.plan.same_end(cfg.max_steps, cfg.time_budget_s):
            self.plan.max_steps = cfg.max_steps  # a budgeted run's upper bound may change freely
            return
        if self.plan is None or (self.plan.from_lr is None and self.step <= cfg.warmup_steps):
            self.plan = DecayPlan(cfg.max_steps, cfg.time_budget_s, from_step=cfg.warmup_steps)
            return
        self.plan = DecayPlan(cfg.max_steps, cfg.time_budget_s, from_step=self.step, from_lr=self.lr)
        self.finished = False
        end = f"step {cfg.max_steps}" if cfg.time_budget_s is None else f"the end of the {cfg.time_budget_s:g}s budget"
        self.log(f"learning rate: from {self.lr:.6g} at step {self.step} down to {cfg.min_lr:g} at {end}")

    def lr_for_step(self, final: bool = False) -> float:
        """The learning rate of the step about to run: warm-up, then the plan's cosine.

        Counted in steps, or, while a budgeted ``fit`` runs, in the share of its training time
        spent (``final``: this is the budget's last step, so the floor).
        """
        cfg = self.config
        if self.plan is None:
            self.sync_plan()
        plan = self.plan
        if plan.from_lr is None and self.step < cfg.warmup_steps:
            return cfg.lr * (self.step + 1) / cfg.warmup_steps
        top = cfg.lr if plan.from_lr is None else plan.from_lr
        if self.budget is None or plan.time_budget_s is None:
            if plan.from_lr is None:
                return lr_at(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, plan.max_steps)
            return cosine_decay((self.step - plan.from_step) / max(1, plan.max_steps - plan.from_step), top, cfg.min_lr)
        if final:
            plan.progress = 1.0
            return cfg.min_lr
        if plan.from_time is None:  # warm-up just ended: the cosine starts now
            plan.from_step, plan.from_time = self.step, self.budget.used()
        plan.progress = max(plan.progress, self.budget.progress(plan.from_time))  # never back
        return cosine_decay(plan.progress, top, cfg.min_lr)

    # --- the loop -----------------------------------------------------------------------------

    def _start_budget(self) -> TimeBudget | None:
        """The deadline of a budgeted fit, with first guesses of the end-of-run jobs' times."""
        cfg = self.config
        if cfg.time_budget_s is None:
            return None
        budget = TimeBudget(cfg.time_budget_s, started=self.started, spent=self.budget_spent)
        self.started = None  # a second fit() on this Trainer counts from its own start
        self.budget = budget
        if self.run_dir is not None:
            import buildlm.viz.losses  # noqa: F401  (plotting's first import, ~1 s, is not left to the end)
        if self.tokenizer is not None and self.task is None:
            # A sample runs the model once per token on the text so far: at most this long.
            import buildlm.infer  # noqa: F401  (its first import, before the deadline's end)

            budget.estimates["sample"] = cfg.sample_tokens * self._forward_seconds(cfg.sample_tokens + 16)
        return budget

    @torch.no_grad()
    def _forward_seconds(self, length: int) -> float:
        """Seconds of one forward pass over one window of ``length`` tokens (after a warm-up)."""
        x = torch.zeros((1, min(length, self.model.config.context_length)), dtype=torch.long, device=self.device)
        self.model.eval()
        self.model(x)[0, -1, 0].item()
        t0 = time.perf_counter()
        self.model(x)[0, -1, 0].item()  # .item() waits for the device
        seconds = time.perf_counter() - t0
        self.model.train()
        return seconds

    def _guess_end_jobs(self, budget: TimeBudget) -> None:
        """Times of the final evaluation, checkpoint, sample and plot, until each has run once.

        From the step time, an evaluation batch is a forward pass (about a third of a
        micro-batch's step); a sample's from one forward pass timed when the fit starts.
        """
        cfg = self.config
        micro = budget.step_time / cfg.grad_accum_steps
        has_eval = self.val_batches is not None or self.task is not None
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        budget.estimates.update(
            eval=cfg.eval_batches * micro / 3 if has_eval else 0.0,
            save=0.2 + 3 * weights / 100e6 if self.run_dir is not None else 0.0,  # weights + moments
            finish=0.5 if self.run_dir is not None else 0.0,  # the loss plot
        )

    def _due_cost(self, budget: TimeBudget, step: int) -> float:
        """Seconds of evaluation, sampling and saving that follow step ``step`` (before the next)."""
        cfg = self.config
        cost = budget.cost("eval") if self.val_batches is not None and step % cfg.eval_interval == 0 else 0.0
        if cfg.sample_interval and step % cfg.sample_interval == 0:
            cost += budget.cost("sample")
        if self.run_dir is not None and cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0:
            cost += budget.cost("save")
        return cost

    def _timed(self, budget: TimeBudget | None, job: str, work):
        t0 = time.perf_counter()
        out = work()
        if budget is not None:
            budget.note(job, time.perf_counter() - t0)
        return out

    def fit(self) -> TrainResult:
        """Train to ``max_steps`` or to the time budget's deadline, evaluating, sampling and
        saving on the way; the last step is followed by an evaluation and a checkpoint."""
        from tqdm import tqdm

        cfg = self.config
        result = TrainResult(step=self.step)
        if self.run_dir is not None and self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.metrics = MetricsLogger(self.run_dir, tensorboard=cfg.tensorboard, resume=self.step > 0)
            self.metrics.drop_after(self.step)
        self.sync_plan()
        budget = self._start_budget()
        if self.peak is None:
            self.peak = PeakFlops(self.device, cfg.peak_flops)
            self.log(self.peak.describe())
        flops_per_token = self.model.flops_per_token(self.context_length)
        if self.step >= cfg.max_steps or (budget is not None and self.finished):
            self.log(f"already at step {self.step}, the end of this run's plan: nothing to train")
            cfg_end = self.step
        else:
            cfg_end = cfg.max_steps
        if budget is not None:
            bar = tqdm(
                total=round(budget.seconds), initial=min(round(budget.used()), round(budget.seconds)),
                disable=not (cfg.progress and self.is_main), desc="train", unit="s of budget",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total}s of the time budget{postfix}",
            )  # fmt: skip
            if budget.used() < budget.training_end:
                self.log(
                    f"time budget: {budget.seconds:g}s from the start of the run, {budget.used():.0f}s used; "
                    "training stops in time for the final evaluation, checkpoint and sample"
                )
            else:
                self.log(
                    f"time budget: {budget.used():.0f}s of the {budget.seconds:g}s went to starting up and "
                    "preparing the data: training one step only (raise --train.time_budget_s)"
                )
        else:
            bar = tqdm(
                total=cfg.max_steps, initial=self.step, disable=not (cfg.progress and self.is_main),
                desc="train", unit="step",
            )  # fmt: skip
        write = bar.write if self.is_main else silent
        start = time.perf_counter()
        window_t, window_tokens = time.perf_counter(), 0
        first_step = self.step
        try:
            while self.step < cfg_end:
                final, lr = False, None
                if budget is not None:
                    if self.step > first_step:
                        self._guess_end_jobs(budget)
                    # Will there be time for another step after this one (and what follows it)?
                    final = not budget.room_for(budget.step_time + self._due_cost(budget, self.step + 1))
                    lr = self.lr_for_step(final)
                    if self.dist is not None:  # the clock is rank 0's: every rank uses its rate
                        final, lr = self.dist.broadcast((final, lr))
                t_step = time.perf_counter()
                try:
                    loss = self.train_step(lr)
                except NonFiniteLossError:
                    if self.run_dir is not None:  # the last good weights, loadable
                        result.checkpoint = self.save()
                        write(f"saved the last good weights in {result.checkpoint}")
                    raise
                result.losses.append(loss)
                last = self.step >= cfg_end
                if budget is not None:
                    budget.note_step(time.perf_counter() - t_step)
                    last = last or final or not budget.room_for(self._due_cost(budget, self.step))
                timed_out = cfg.max_time_s is not None and time.perf_counter() - start >= cfg.max_time_s
                if self.dist is not None and (budget is not None or cfg.max_time_s is not None):
                    # Clocks differ between ranks: rank 0 decides, so all stop at the same step.
                    last, timed_out = self.dist.broadcast((last, timed_out))
                self.finished = last
                window_tokens += self._step_tokens
                if budget is None:
                    bar.update(1)
                else:
                    bar.update(max(0, min(round(budget.used()), bar.total) - bar.n))
                if self.step % cfg.log_interval == 0 or last:
                    now = time.perf_counter()
                    tok_s = window_tokens / max(now - window_t, 1e-9)
                    window_t, window_tokens = now, 0
                    devices = 1 if self.dist is None else self.dist.world_size
                    was_raised = self.peak.raised
                    util = self.peak.mfu(flops_per_token * tok_s / devices)
                    if self.peak.raised and not was_raised:
                        write(
                            f"training ran faster than the measured peak: {self.peak.describe()[:-1]}, "
                            "raised: the start-up measurement ran on a busy machine)"
                        )
                    bar.set_postfix(  # a dict keeps this order (keywords would be sorted)
                        {"step": self.step, "loss": f"{loss:.3f}", "lr": f"{self.lr:.2e}", "tok_s": f"{tok_s:,.0f}",
                         "mfu": f"{util:.1%}"}
                    )  # fmt: skip
                    self._record(
                        {"step": self.step, "train_loss": loss, "lr": self.lr, "tokens_per_s": tok_s, "mfu": util,
                         "tokens": self.tokens_seen}
                    )  # fmt: skip
                if self.val_batches is not None and (self.step % cfg.eval_interval == 0 or last or timed_out):
                    ev = self._timed(budget, "eval", self.evaluate)
                    self._record({"step": self.step, **{k: v for k, v in ev.items() if isinstance(v, (int, float))}})
                    write(f"step {self.step}: {self.describe_eval(ev)}")
                if cfg.sample_interval and self.step % cfg.sample_interval == 0 and not last:
                    text = self._timed(budget, "sample", self.sample)
                    write(f"--- sample at step {self.step} ---\n{text}\n---")
                if self.run_dir is not None and (
                    (cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0) or last or timed_out
                ):
                    self.elapsed += time.perf_counter() - start
                    start = time.perf_counter()
                    result.checkpoint = self._timed(budget, "save", self.save)
                if timed_out:
                    write(f"stopping at step {self.step}: train.max_time_s={cfg.max_time_s} reached")
                    break
                if last:
                    break
        finally:
            bar.close()
            self.elapsed += time.perf_counter() - start
            if self.metrics is not None:
                if self.run_dir is not None and self.metrics.rows:
                    plot_losses(self.metrics, self.run_dir / "loss.png", self.baselines)
                self.metrics.close()
            if budget is not None:
                self.budget_spent = budget.used()
            self.budget = None
        result.step = self.step
        result.val_loss = self.last_val_loss
        result.seconds = self.elapsed
        return result

    def describe_eval(self, ev: dict[str, float]) -> str:
        """One line for an evaluation's figures."""
        if self.task is not None:
            return self.task.describe(ev)
        bpb = f", {ev['val_bpb']:.3f} bits/byte" if "val_bpb" in ev else ""
        return f"val loss {ev['val_loss']:.4f} (ppl {ev['val_ppl']:.1f}{bpb})"

    def _record(self, record: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.log(record)
