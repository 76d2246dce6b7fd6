"""The pretraining loop: batches in, a better model and a checkpoint out.

One optimizer step (:meth:`Trainer.train_step`) does:

1. set the learning rate the schedule gives this step (`schedule.Schedule`: warm-up, then a
   cosine down to ``min_lr``);
2. for each of ``grad_accum_steps`` micro-batches: forward under autocast (bf16/fp16 run the
   matmuls in 16-bit, the loss stays fp32), divide the loss by the number of micro-batches and
   backpropagate. Gradients *add up* in ``.grad``, so N micro-batches of b windows give the
   gradient of one batch of N*b windows, with the memory of b;
3. clip the global gradient norm (one bad batch cannot throw the weights far), then step AdamW.
   With fp16 a ``GradScaler`` multiplies the loss before backward so small gradients do not
   underflow to zero, and divides them back before clipping and stepping.

Around it, :meth:`Trainer.fit` runs steps until ``max_steps`` or the time budget's deadline
(`schedule.py`), with periodic evaluation on fixed validation windows (loss, perplexity, bits per
byte), sample generations, a progress bar and metrics.csv (`progress.py`), and atomic
checkpoints from which :meth:`Trainer.load_state` resumes *exactly* (`trainer_state.py`): same
batches, same RNG, same optimizer moments, so the losses equal those of an uninterrupted run.

Fine-tuning (stage 8) reuses this loop unchanged: a :class:`buildlm.train.task.Task` replaces
the token windows (`windows.py`) by its own batches (classification, instruction or preference
examples) and the next-token loss by its own, and reports its own evaluation metrics.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from buildlm import checkpoint_format
from buildlm.device import autocast_context, resolve_device
from buildlm.precision import resolve_precision
from buildlm.train.activation_checkpointing import enable_activation_checkpointing
from buildlm.train.budget import DecayPlan
from buildlm.train.config import TrainConfig, to_dict
from buildlm.train.distributed import Distributed, silent
from buildlm.train.host_memory import keep_freed_memory
from buildlm.train.linear_cross_entropy import linear_cross_entropy
from buildlm.train.metrics import PeakFlops, bits_per_byte, perplexity
from buildlm.train.optim import lr_at, make_optimizer, set_lr
from buildlm.train.progress import Progress, describe_eval
from buildlm.train.router_loss import RouterLoss
from buildlm.train.schedule import Schedule
from buildlm.train.task import Task
from buildlm.train.trainer_state import capture_state, restore_state, write_checkpoint
from buildlm.train.windows import TrainData, window_batches


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
        self.config = config  # read, never written: the settings stay as the caller passed them
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self.device = resolve_device(config.device, "--train.device") if dist is None else dist.device
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        if self.device.type == "cpu":
            keep_freed_memory()  # each step reuses the last one's buffers (see host_memory.py)
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
        agree = None if dist is None else dist.broadcast  # every rank takes rank 0's choice
        self.precision = resolve_precision(config.precision, self.device, self.log, agree)  # "auto" measured
        self.data = data
        self.task = task
        if task is not None:
            self.train_batches = task.train_batches
            self.val_batches = task.val_batches
        elif data is None:
            raise ValueError("a Trainer needs data (token arrays) or a fine-tuning task")
        else:  # pretraining: random windows of the token arrays
            rank, world = (0, 1) if dist is None else (dist.rank, dist.world_size)
            self.train_batches, self.val_batches = window_batches(
                data, config.batch_size, self.context_length, model.config.vocab_size, config.seed, self.device,
                rank, world,
            )  # fmt: skip
        self.optimizer = make_optimizer(
            self.model, config.lr, config.weight_decay, (config.beta1, config.beta2), device_type=self.device.type,
            optimizer=config.optimizer, muon_lr=config.muon_lr, muon_momentum=config.muon_momentum,
        )  # fmt: skip
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.autocast = autocast_context(self.device, self.precision)
        self.step = 0
        self.tokens_seen = 0
        self.elapsed = 0.0
        self.last_val_loss: float | None = None
        self.lr = config.lr
        self.grad_norm = float("nan")
        self.progress: Progress | None = None  # the bar and metrics.csv, while a fit runs
        self.peak: PeakFlops | None = None  # measured when fit starts, unless config.peak_flops
        # Each step's learning rate and, under a time budget, when to stop (see schedule.py).
        self.schedule = Schedule(
            config, evaluates=self.val_batches is not None, writes=self.run_dir is not None,
            samples=tokenizer is not None and task is None, started=started, log=self.log,
        )  # fmt: skip
        self._step_tokens = 0
        self.bad_steps = 0  # non-finite steps in a row
        self.router_loss = RouterLoss(self.model, config.moe_aux_loss_coef, config.moe_z_loss_coef)

    # --- one step -----------------------------------------------------------------------------

    def _fused_head_weight(self) -> torch.Tensor | None:
        """The LM head's matrix where the loss may fuse head and cross-entropy, else None.

        Only on the CPU under bf16/fp16 autocast (where the fp32 copy of the logits is the
        waste the fused loss removes; fp32 keeps the plain path, and a GPU would spend its time
        launching the small per-chunk kernels), and only on the bare model of one process: a DDP
        wrapper, FSDP's hooks (it shards the module in place) or ``torch.compile`` must see the
        whole forward call.
        """
        if self.device.type != "cpu" or self.precision not in ("bf16", "fp16"):
            return None
        if self.forward_model is not self.model or self.dist is not None:  # FSDP2 shards in place
            return None
        plain_head_weight = getattr(self.model, "plain_head_weight", None)
        return plain_head_weight() if plain_head_weight is not None else None

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight = self._fused_head_weight()
        if weight is not None:  # the same loss without full-size fp32 logits
            with self.autocast:
                return linear_cross_entropy(self.model.hidden_states(x), weight, y)
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
        self.router_loss.start_step()
        for i in range(n):
            batch = next(self.train_batches)  # pretraining: x (B, T), y (B, T)
            with self._gradient_sync(i == n - 1):
                loss = self._batch_loss(batch)  # the router losses join the gradient, not the log
                self.scaler.scale((loss + self.router_loss(n)) / n).backward()
            total += loss.detach()
            self._step_tokens += self._batch_tokens(batch)
        if self.dist is not None:
            total = self.dist.mean(total)
            self.router_loss.reduce(self.dist.mean)  # each rank routed its own tokens
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
        finite = math.isfinite(loss) and (self.precision == "fp16" or math.isfinite(self.grad_norm))
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
        self.lr = self.schedule.lr_for_step(self.step) if lr is None else lr
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

    # --- the loop -----------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train to ``max_steps`` or to the time budget's deadline, evaluating, sampling and
        saving on the way; the last step is followed by an evaluation and a checkpoint."""
        cfg, schedule = self.config, self.schedule
        result = TrainResult(step=self.step)
        schedule.sync(self.step, self.lr)
        clock = schedule.start(self.model, self.device)  # None without a time budget
        if self.peak is None:
            self.peak = PeakFlops(self.device, cfg.peak_flops)
            self.log(self.peak.describe())
        end = cfg.max_steps
        if self.step >= cfg.max_steps or (clock is not None and schedule.finished):
            self.log(f"already at step {self.step}, the end of this run's plan: nothing to train")
            end = self.step
        self.progress = progress = Progress(
            cfg, self.step, clock, self.peak, self.model.flops_per_token(self.context_length), self.run_dir,
            log=self.log, devices=1 if self.dist is None else self.dist.world_size, is_main=self.is_main,
        )  # fmt: skip
        start = time.perf_counter()
        try:
            while self.step < end:
                # Under a time budget: is this the last step there is time for, and its rate?
                final, lr = schedule.before_step(self.step)
                if self.dist is not None and clock is not None:  # rank 0's clock decides for all
                    final, lr = self.dist.broadcast((final, lr))
                t_step = time.perf_counter()
                try:
                    loss = self.train_step(lr)
                except NonFiniteLossError:
                    if self.run_dir is not None:  # the last good weights, loadable
                        result.checkpoint = self.save()
                        progress.write(f"saved the last good weights in {result.checkpoint}")
                    raise
                result.losses.append(loss)
                last = schedule.after_step(self.step, time.perf_counter() - t_step, final) or self.step >= end
                timed_out = cfg.max_time_s is not None and time.perf_counter() - start >= cfg.max_time_s
                if self.dist is not None and (clock is not None or cfg.max_time_s is not None):
                    # Clocks differ between ranks: rank 0 decides, so all stop at the same step.
                    last, timed_out = self.dist.broadcast((last, timed_out))
                schedule.finished = last
                progress.step_done(
                    self.step, loss, self.lr, self._step_tokens, self.tokens_seen, last, self._step_row
                )  # fmt: skip
                due = schedule.jobs_after(self.step)  # at their intervals; and at the end, eval and save
                if "eval" in due or (self.val_batches is not None and (last or timed_out)):
                    ev = schedule.timed("eval", self.evaluate)
                    self._record({"step": self.step, **{k: v for k, v in ev.items() if isinstance(v, (int, float))}})
                    progress.write(f"step {self.step}: {describe_eval(ev, self.task)}")
                    if self.router_loss.sums:  # a collapsing router: a few shares take all
                        progress.write(f"step {self.step}: {self.router_loss.describe()}")
                if "sample" in due and not last:
                    text = schedule.timed("sample", self.sample)
                    progress.write(f"--- sample at step {self.step} ---\n{text}\n---")
                if "save" in due or (self.run_dir is not None and (last or timed_out)):
                    self.elapsed += time.perf_counter() - start
                    start = time.perf_counter()
                    result.checkpoint = schedule.timed("save", self.save)
                if timed_out:
                    progress.write(f"stopping at step {self.step}: train.max_time_s={cfg.max_time_s} reached")
                    break
                if last:
                    break
        finally:
            self.elapsed += time.perf_counter() - start
            progress.close(self.baselines)
            self.progress = None
            schedule.stop()
        result.step = self.step
        result.val_loss = self.last_val_loss
        result.seconds = self.elapsed
        return result

    def _step_row(self) -> dict[str, float]:
        """The step's own metrics.csv columns: the router's, and a task's (``step_metrics``)."""
        task_row = getattr(self.task, "step_metrics", dict)
        return {**self.router_loss.row(), **task_row()}

    def _record(self, record: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.record(record)

    # --- state --------------------------------------------------------------------------------

    def checkpoint_config(self) -> dict[str, Any]:
        return {**self.run_config, "model": self.model.config.to_dict(), "train": to_dict(self.config)}

    def state_dict(self) -> dict[str, Any]:
        """What ``trainer_state.pt`` holds: everything beyond the weights needed to continue exactly
        (`trainer_state.py`). Under a distributed run this is collective: every rank must call it."""
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed": self.elapsed,
            **capture_state(self.model, self.optimizer, self.scaler, self.train_batches, self.dist),
            "last_val_loss": self.last_val_loss,
            "bad_steps": self.bad_steps,
            "lr": self.lr,
            **self.schedule.state_dict(),  # the learning-rate plan and the time budget used
        }

    def save(self) -> Path:
        """Write a checkpoint (rank 0 writes; under DDP/FSDP every rank must call this)."""
        if self.run_dir is None:
            raise ValueError("this Trainer has no run_dir to save checkpoints into")
        return write_checkpoint(
            self.run_dir, self.step, self.model, self.checkpoint_config(), self.tokenizer, self.state_dict(),
            keep=self.config.keep_checkpoints, dist=self.dist,
        )  # fmt: skip

    def load_state(self, path: str | os.PathLike) -> Path:
        """Load weights and trainer state from a checkpoint (or a run's newest) to continue exactly."""
        folder, state = restore_state(
            path, self.model, self.optimizer, self.scaler, self.train_batches, self.dist
        )
        cfg = self.config
        self.step = int(state["step"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
        self.last_val_loss = state.get("last_val_loss")
        self.bad_steps = int(state.get("bad_steps", 0))
        if state.get("plan") is None:  # older checkpoints: the step-count cosine config.json names
            saved = checkpoint_format.read_config(folder).get("train", {})
            state["plan"] = DecayPlan(int(saved.get("max_steps", cfg.max_steps)), None, cfg.warmup_steps).to_dict()
        self.schedule.load_state_dict(state)
        last = max(self.step - 1, 0)
        old_lr = lr_at(last, cfg.lr, cfg.min_lr, cfg.warmup_steps, self.schedule.plan.max_steps)
        self.lr = float(state.get("lr", old_lr))
        return folder
