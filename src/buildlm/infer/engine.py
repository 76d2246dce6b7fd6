"""The inference engine: cached, batched, streaming generation.

`buildlm.infer.generate` is the readable reference: it re-runs the model over the whole prefix
for every new token. `Engine` produces the same tokens (greedy) far faster:

1. **Prefill.** The prompts are left-padded to one length and run through the model once,
   filling a preallocated `StaticKVCache` with every layer's keys and values. A padding mask
   hides the pad slots from attention, and each row's positions start at its first real token,
   so a padded row computes exactly what it would alone.
2. **Decode.** Each step feeds one new token per row; attention reads the cached keys/values.
   The logits go through the request's processors (penalties, temperature, top-k/p, min-p,
   `buildlm.infer.processors`) and a token is picked, greedily or by seeded sampling.
3. **Stop.** A row ends at a stop token id, at a stop string (matched on the decoded text) or
   after ``max_new_tokens``. Text streams out as it is decoded, never splitting a character.
4. **Slide.** A sequence that outgrows the context keeps its last ``context_length -
   context_length // 4`` tokens and is prefilled again (positions start over), like `generate`'s
   crop but re-done only once every quarter context instead of every step. The rule is per row
   (`Engine._window`): each row slides when *its own* window is full, never because a longer
   neighbour's is, so a row's tokens never depend on what else is in the batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from buildlm.infer.beam_search import beam_search
from buildlm.infer.detokenize import IncrementalDetokenizer
from buildlm.infer.float32_matmuls import float32_matmuls
from buildlm.infer.kvcache import StaticKVCache
from buildlm.infer.processors import build_processors, check_samplable
from buildlm.infer.static_decode import StaticDecodeStep, model_storage
from buildlm.infer.weight_layout import arrange_for_decoding

# Static decode caches are sized in whole blocks of this many positions, so prompts and budgets
# of nearby lengths share one recorded step (a CUDA graph is tied to its cache's shape).
STATIC_CACHE_BLOCK = 256


@dataclass
class SamplingParams:
    """How one request is decoded. ``temperature=0`` is greedy.

    ``stop_token_ids=None`` means the tokenizer's end-of-text token; ``()`` means none.
    ``seed`` makes this request's sampling repeatable whatever else is in the batch.
    """

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, got {self.max_new_tokens!r}")
        if self.seed is not None and not (
            isinstance(self.seed, int) and -(2**63) <= self.seed < 2**64
        ):  # the range torch.Generator.manual_seed takes
            raise ValueError(f"seed must be an integer from -2**63 to 2**64-1, got {self.seed!r}")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.processors()  # validates temperature, top_k, top_p, min_p and the penalties

    def processors(self, prompt_length: int = 0):
        """The logits processors of these settings (penalties count only generated tokens)."""
        return build_processors(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            prompt_length=prompt_length,
        )


@dataclass
class Completion:
    """One finished request: the new ids and text, and why it ended (``"stop"`` or ``"length"``)."""

    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str


@dataclass
class EngineStats:
    """Where the time went in the last call (for ``--stats``)."""

    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_tokens: int = 0
    decode_steps: int = 0
    decode_s: float = 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s else 0.0


@dataclass
class _Row:
    """The running state of one request."""

    prompt: list[int]
    params: SamplingParams
    detok: IncrementalDetokenizer | None
    stop_ids: frozenset[int]
    processors: Any
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    done: bool = False
    finish_reason: str = "length"
    start: int = 0  # where the window the cache holds begins in `sequence` (moved by a slide)

    @property
    def sequence(self) -> list[int]:
        return self.prompt + self.generated


class Engine:
    """Cached, batched generation for a `buildlm.model.GPT` (and its tokenizer, for text).

    ``truncate_prompts=True`` keeps the last tokens of a prompt longer than the context instead
    of raising.

    ``static_decode`` (default: on a GPU) runs the one-token decode steps with fixed shapes
    (`buildlm.infer.static_decode`), replayed as a CUDA graph on a GPU: the cache is sized in
    blocks of `STATIC_CACHE_BLOCK` positions and attention reads all of it under a mask.
    ``compile=True`` also runs that step through ``torch.compile`` (with ``static_decode=False``,
    the CPU's default, the growing-cache step, with dynamic shapes: without graphs to record,
    fixed shapes only make attention read empty slots). Recorded steps are kept for the next
    calls of the same batch size and cache size.

    ``arrange_weights`` (default: on the CPU) re-lays the model's weights out in memory for
    batch-1 decoding with `buildlm.infer.weight_layout.arrange_for_decoding`: every matrix in the
    layout the CPU streams fastest, all of them on huge pages. The values, shapes and parameter
    objects stay the same, so the model still trains, saves and loads as before.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any = None,
        truncate_prompts: bool = False,
        compile: bool = False,
        arrange_weights: bool | None = None,
        static_decode: bool | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.truncate_prompts = truncate_prompts
        self.device = next(model.parameters()).device
        self.context_length = model.config.context_length
        self.compile = compile
        if static_decode is None:
            static_decode = self.device.type == "cuda"
        self.static_decode = static_decode
        self._static_steps: dict[tuple[int, int], StaticDecodeStep] = {}
        # The growing-cache decode step (static_decode=False, and the server's scheduler, whose
        # batches change size), compiled with dynamic shapes when asked.
        self._decode_hidden = (
            torch.compile(model.hidden_states, dynamic=True) if compile else model.hidden_states
        )
        if arrange_weights is None:
            arrange_weights = self.device.type == "cpu"
        if arrange_weights:
            arrange_for_decoding(model)
        self.stats = EngineStats()

    # --- public API ----------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]] | str,
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        **kwargs: Any,
    ) -> list[Completion]:
        """Complete every prompt (texts, or lists of ids); one `Completion` per prompt, in order.

        ``params`` is one `SamplingParams` for all, or one per prompt; keyword arguments build
        one (``engine.generate(["Hi"], max_new_tokens=20, temperature=0)``).

        A text prompt is a raw document, as ``buildlm generate`` reads it: special-token text
        in it (``<|endoftext|>``) becomes the special token. Conversations are never passed as
        text: `buildlm.infer.chat_format.ChatFormat.encode` gives their ids, specials only from
        the template.
        """
        rows = self._rows(prompts, params, kwargs)
        for _ in self._run(rows):
            pass
        return [self._completion(r) for r in rows]

    def stream(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        **kwargs: Any,
    ) -> Iterator[str]:
        """Yield the text of one completion piece by piece as it is decoded."""
        rows = self._rows([prompt], params, kwargs)
        for deltas in self._run(rows):
            if deltas[0]:
                yield deltas[0]

    def stream_batch(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        **kwargs: Any,
    ) -> Iterator[list[str]]:
        """Yield, after every decode step, the new text of each prompt (``""`` when none)."""
        yield from self._run(self._rows(prompts, params, kwargs))

    def beam_search(
        self,
        prompt: str | Sequence[int],
        num_beams: int = 4,
        max_new_tokens: int = 64,
        length_penalty: float = 1.0,
        early_stopping: bool | str = False,
        stop_token_id: int | None = None,
    ) -> Completion:
        """The best of ``num_beams`` beams (`buildlm.infer.beam_search`), with a KV cache.

        The cache holds one row per beam and is reordered as beams are kept and dropped.
        ``stop_token_id`` (default: the tokenizer's end-of-text token) ends a hypothesis.
        """
        row = self._row(prompt, SamplingParams(max_new_tokens=max_new_tokens, temperature=0))
        if stop_token_id is None:
            stop_token_id = getattr(self.tokenizer, "eot_token", None)
        cache = StaticKVCache.for_model(
            self.model, num_beams, max_len=len(row.prompt) + max_new_tokens
        )
        with torch.inference_mode():
            out = beam_search(
                self.model, torch.tensor([row.prompt]), max_new_tokens, num_beams,
                length_penalty, early_stopping, stop_token_id, cache=cache,
            )[0, len(row.prompt) :].tolist()  # fmt: skip
        finish = "length"
        if stop_token_id is not None and stop_token_id in out:
            out, finish = out[: out.index(stop_token_id)], "stop"
        text = self.tokenizer.decode(out) if self.tokenizer is not None else ""
        return Completion(row.prompt, out, text, finish)

    # --- set-up --------------------------------------------------------------------------------

    def _rows(self, prompts, params, kwargs) -> list[_Row]:
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not prompts:
            raise ValueError("no prompts given")
        if params is None:
            params = SamplingParams(**kwargs)
        elif kwargs:
            raise ValueError("pass either params or keyword arguments, not both")
        per_row = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(per_row) != len(prompts):
            raise ValueError(f"{len(per_row)} SamplingParams for {len(prompts)} prompts")
        return [self._row(p, sp) for p, sp in zip(prompts, per_row, strict=True)]

    def _row(self, prompt: str | Sequence[int], params: SamplingParams) -> _Row:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("text prompts need a tokenizer; pass Engine(model, tokenizer) or token ids")
            ids = self.tokenizer.encode(prompt, allowed_special="all")
        else:
            ids = [int(i) for i in prompt]
        if not ids:
            raise ValueError("the prompt is empty; give at least one token")
        vocab = self.model.config.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise ValueError(f"prompt token ids must lie in [0, {vocab}), got {min(ids)}..{max(ids)}")
        if len(ids) > self.context_length:
            if not self.truncate_prompts:
                raise ValueError(
                    f"the prompt has {len(ids)} tokens, more than the model's context_length="
                    f"{self.context_length}; shorten it, or keep its end (Engine(truncate_prompts=True), "
                    "buildlm generate --truncate-prompt)"
                )
            ids = ids[-self.context_length :]
        stop_ids = params.stop_token_ids
        if stop_ids is None:
            eot = getattr(self.tokenizer, "eot_token", None)
            stop_ids = () if eot is None else (eot,)
        detok = None
        if self.tokenizer is not None:
            detok = IncrementalDetokenizer(self.tokenizer.token_bytes, params.stop)
        elif params.stop:
            raise ValueError("stop strings need a tokenizer to decode text; use stop_token_ids")
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        processors = params.processors(prompt_length=len(ids))
        return _Row(ids, params, detok, frozenset(stop_ids), processors, generator)

    # --- the loop ------------------------------------------------------------------------------

    @torch.inference_mode()
    def _run(self, rows: list[_Row]) -> Iterator[list[str]]:
        """Prefill, then decode until every row is done; yields each row's new text per step."""
        self.stats = EngineStats()
        budget = max(r.params.max_new_tokens for r in rows)
        if budget == 0:
            return
        longest = max(len(r.prompt) for r in rows)
        if self.static_decode:
            static = self._static_step(len(rows), longest + budget)
            cache = static.cache
        else:
            static = None
            cache = StaticKVCache.for_model(self.model, len(rows), max_len=longest + budget)
        logits, key_mask, positions = self._prefill(rows, cache, static)
        for step in range(budget):
            nxt = self._pick(rows, logits)  # (B,)
            deltas = self._advance(rows, nxt.tolist(), step)
            yield deltas
            if all(r.done for r in rows):
                return
            if cache.offset == cache.max_len:  # out of room: the full rows slide their window
                logits, key_mask, positions = self._prefill(rows, cache, static)
                continue
            t0 = time.perf_counter()
            if static is not None:
                logits = static(nxt)
            elif key_mask is None:  # no row is padded: positions follow from the cache offset
                logits = self._decode_logits(nxt, cache)
            else:
                key_mask = torch.cat([key_mask, key_mask.new_ones(len(rows), 1)], dim=1)
                positions = positions + 1
                logits = self._decode_logits(nxt, cache, positions, key_mask)
            self._sync()
            self.stats.decode_s += time.perf_counter() - t0
            self.stats.decode_steps += 1
            self.stats.decode_tokens += sum(not r.done for r in rows)

    def _prefill(
        self,
        rows: list[_Row],
        cache: StaticKVCache,
        static: StaticDecodeStep | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Left-pad the rows' windows, run them into an empty cache (and hand it to ``static``).

        Returns the logits of the last position (B, V), the key mask (None when no row is
        padded) and each row's last position (B, 1).
        """
        t0 = time.perf_counter()
        seqs = [self._window(r) for r in rows]
        width = max(map(len, seqs))
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        key_mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s)
            key_mask[i, width - len(s) :] = True
        ids, key_mask = ids.to(self.device), key_mask.to(self.device)
        # Each row counts positions from its first real token; pads sit at position 0 (masked).
        positions = (key_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, width)
        cache.reset()
        with self._matmuls(rows=ids.numel()):
            if all(len(s) == width for s in seqs):  # no padding: the plain causal path is faster
                hidden = self.model.hidden_states(ids, cache)
                key_mask = None
            else:
                hidden = self.model.hidden_states(ids, cache, positions, key_mask)
            logits = self._logits(hidden[:, -1])  # only the last position's logits are needed
        if static is not None:
            static.start(key_mask, positions[:, -1:])
        self._sync()
        self.stats.prefill_s += time.perf_counter() - t0
        self.stats.prefill_tokens += sum(map(len, seqs))
        return logits, key_mask, positions[:, -1:]

    def _window(self, row: _Row) -> list[int]:
        """The tokens of ``row`` its cache rows hold, after sliding the window if it is full.

        A row whose window (its pending token included) has outgrown the context keeps its last
        ``context_length - context_length // 4`` tokens; a row that is not full keeps its whole
        window, whatever its neighbours do. A finished row keeps only its last token: nobody
        reads its logits, and its old window must not hold the batch's cache wide.
        """
        if row.done:
            row.start = len(row.sequence) - 1
        elif len(row.sequence) - row.start > self.context_length:
            row.start = len(row.sequence) - (self.context_length - self.context_length // 4)
        return row.sequence[row.start :]

    def _static_step(self, batch_size: int, length: int) -> StaticDecodeStep:
        """The recorded decode step for this batch size and a cache of at least ``length``."""
        blocks = -(-length // STATIC_CACHE_BLOCK)
        max_len = min(blocks * STATIC_CACHE_BLOCK, self.context_length)
        key = (batch_size, max_len)
        # Steps recorded on tensors the model no longer holds (after .to(), loading) are dropped.
        now = model_storage(self.model)
        self._static_steps = {k: s for k, s in self._static_steps.items() if s.weights == now}
        step = self._static_steps.get(key)
        if step is None:
            if len(self._static_steps) >= 2:  # each holds a KV cache: keep the two newest
                self._static_steps.pop(next(iter(self._static_steps)))
            cache = StaticKVCache.for_model(self.model, batch_size, max_len=max_len)
            step = StaticDecodeStep(self.model, cache, compile=self.compile)
            self._static_steps[key] = step
        return step

    def _decode_logits(
        self,
        tokens: torch.Tensor,
        cache: StaticKVCache,
        positions: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One growing-cache decode step: tokens (B,) -> float32 logits (B, V).

        ``positions`` (B, 1) and ``key_mask`` (B, offset + 1) as for a padded batch (see
        `buildlm.model.GPT.forward`); both None when no row is padded.
        """
        with self._matmuls(rows=len(tokens)):
            hidden = self._decode_hidden(tokens[:, None], cache, positions, key_mask)
            return self._logits(hidden[:, -1])

    def _matmuls(self, rows: int) -> contextlib.AbstractContextManager:
        """How a pass over ``rows`` token rows multiplies (`buildlm.infer.float32_matmuls`)."""
        if self.compile:  # the compiler picks its own kernels
            return contextlib.nullcontext()
        return float32_matmuls(self.model, rows)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Last-position hidden states (B, d_model) -> float32 logits (B, V)."""
        return self.model.head(hidden).float()

    def _pick(self, rows: list[_Row], logits: torch.Tensor) -> torch.Tensor:
        """One next token per row from its logits (B, V), with that row's processors and seed."""
        if all(r.params.temperature == 0 and not r.processors for r in rows):
            return logits.argmax(dim=-1)  # plain greedy: one kernel for the batch, no host copies
        picks = []
        for i, row in enumerate(rows):
            if row.done:
                picks.append(0)
                continue
            history = torch.tensor([row.sequence], dtype=torch.long, device=logits.device)
            scores = row.processors(history, logits[i : i + 1])  # (1, V)
            if row.params.temperature == 0:
                picks.append(int(scores.argmax(dim=-1)))
            else:
                check_samplable(scores)
                probs = torch.softmax(scores, dim=-1)
                picks.append(int(torch.multinomial(probs, 1, generator=row.generator)))
        return torch.tensor(picks, dtype=torch.long, device=self.device)

    def _advance(self, rows: list[_Row], tokens: list[int], step: int) -> list[str]:
        """Record each row's new token, check its stop conditions, return its new text."""
        deltas = []
        for row, tok in zip(rows, tokens, strict=True):
            if row.done:
                deltas.append("")
                continue
            if tok in row.stop_ids:
                row.done, row.finish_reason = True, "stop"
                deltas.append(row.detok.flush() if row.detok else "")
                continue
            row.generated.append(tok)
            delta = row.detok.push(tok) if row.detok else ""
            if row.detok is not None and row.detok.stopped:
                row.done, row.finish_reason = True, "stop"
            elif len(row.generated) >= row.params.max_new_tokens:
                row.done = True
                delta += row.detok.flush() if row.detok else ""
            deltas.append(delta)
        return deltas

    def _completion(self, row: _Row) -> Completion:
        text = row.detok.text if row.detok is not None else ""
        return Completion(row.prompt, list(row.generated), text, row.finish_reason)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

