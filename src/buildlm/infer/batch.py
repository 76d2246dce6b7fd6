"""One decode loop: the rows generated together, their KV cache, and the steps that move them on.

`DecodeBatch` is the object both `buildlm.infer.engine.Engine` and the server's scheduler
(`buildlm.serve.scheduler`) drive. Decoding reads top to bottom in four calls, each a few lines
(the shape of gpt-fast's ``generate.py``)::

    batch.prefill(rows)                      # every prompt through the model once
    while not batch.done:
        texts = batch.advance(batch.pick())  # one token per row; stop conditions; new text
        batch.decode()                       # feed those tokens: the next logits

1. **Rows.** `make_rows` turns prompts (text or ids) and `SamplingParams` into `Row`s
   (`buildlm.infer.row`): the tokens, the logits processors (penalties, temperature, top-k/p,
   min-p), a seeded generator and the stop conditions of one request, so each row samples as it
   would alone.
2. **Prefill.** The rows' windows are left-padded to one width and run through the model once,
   filling a `StaticKVCache`. A key mask hides the pad slots, and each row's positions start at
   its first real token, so a padded row computes exactly what it would alone.
3. **Pick, advance.** `pick` chooses one token per row from the logits, greedily or by seeded
   sampling; `advance` appends it, checks the stop token ids, the stop strings (on the decoded
   text) and ``max_new_tokens``, and returns each row's new text, never a split character.
4. **Decode.** One token per row goes through the model; attention reads the cached keys.

Rows may come and go between steps (the server's continuous batching). `add` prefills new rows
on their own and splices them into the running cache, right-aligned: the slots left of a shorter
row are padding, hidden by the key mask. `drop_finished` removes finished and cancelled rows,
so nobody computes tokens nobody reads. When the cache is full, `make_room` cuts the padding
every row shares on the left and copies the rest into a roomier cache: no row is recomputed.

**Slide.** A row whose window has outgrown the model's context keeps its last three quarters
(``context_length - context_length // 4`` tokens) and is prefilled again, positions starting
over (`Row.slide`, the one place the rule lives): like `buildlm.infer.generate`'s crop, but
re-done once every quarter context instead of every step. A row slides when *its own* window is full, never because a
neighbour's is, so its tokens never depend on what else is in the batch. `decode` takes a full
row out, decodes the others, and `add`s it back.

**Fixed shapes.** Given a `StaticDecodeStep` (`buildlm.infer.static_decode`: a CUDA graph on a
GPU), `prefill` fills that step's cache and `decode` replays it. Its shapes never change, so
such a batch keeps its rows: finished ones ride along unread, and when the cache is full every
row is prefilled again (the full ones sliding), which is what `Engine.generate` does on a GPU.

The batch knows nothing of threads, HTTP or requests; whoever drives it calls one method at a
time. Stop strings and text need the tokenizer; ids alone need none.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from buildlm.infer.float32_matmuls import float32_matmuls
from buildlm.infer.kvcache import StaticKVCache
from buildlm.infer.processors import check_samplable
from buildlm.infer.requests import EngineStats, SamplingParams
from buildlm.infer.row import Row, make_row
from buildlm.infer.static_decode import StaticDecodeStep

F = TypeVar("F", bound=Callable[..., Any])


def _inference(method: F) -> F:
    """Run ``method`` under ``torch.inference_mode``, entered only when it is not on already:
    entering costs a few microseconds, and a decode step on a GPU takes a few hundred."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        if torch.is_inference_mode_enabled():
            return method(*args, **kwargs)
        with torch.inference_mode():
            return method(*args, **kwargs)

    return run  # type: ignore[return-value]


class DecodeBatch:
    """Rows decoded together over one KV cache (see the module docstring for the loop).

    ``decode_hidden`` is what a growing-cache decode step runs (default: the model's
    ``hidden_states``; `Engine(compile=True)` passes its compiled one, so every batch it makes
    shares the compiled code). ``compile`` says that step is compiled, so no float32 products
    are forced on it (`buildlm.infer.float32_matmuls`). ``truncate_prompts`` keeps the end of a
    prompt longer than the context instead of refusing it.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any = None,
        truncate_prompts: bool = False,
        compile: bool = False,
        decode_hidden: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.truncate_prompts = truncate_prompts
        self.compile = compile
        self.device = next(model.parameters()).device
        self.context_length = model.config.context_length
        self._decode_hidden = decode_hidden or model.hidden_states
        self.stats = EngineStats()
        self.rows: list[Row] = []
        self.cache: StaticKVCache | None = None
        self.static: StaticDecodeStep | None = None
        self.logits: torch.Tensor | None = None  # (B, V) float32: each row's next-token scores
        self.key_mask: torch.Tensor | None = None  # (B, cached) False on pad slots; None: no pads
        self.positions: torch.Tensor | None = None  # (B, 1) position of each row's last token
        self._pending: torch.Tensor | None = None  # (B,) tokens `advance` recorded, not yet fed

    @property
    def done(self) -> bool:
        """Whether every row has finished (True for an empty batch)."""
        return all(row.done for row in self.rows)

    # --- rows ----------------------------------------------------------------------------------

    def make_rows(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]] | str | Sequence[int],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        **kwargs: Any,
    ) -> list[Row]:
        """One `Row` per prompt (a text, or a list of ids). ``params`` is one `SamplingParams`
        for all, or one per prompt; keyword arguments build one. Raises ValueError for a prompt
        that cannot be decoded (empty, ids out of range, longer than the context).

        Reads only the batch's settings, never its rows: safe to call from any thread.
        """
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
        return [
            make_row(p, sp, self.model.config, self.tokenizer, self.truncate_prompts, self.device)
            for p, sp in zip(prompts, per_row, strict=True)
        ]

    # --- the loop ------------------------------------------------------------------------------

    @_inference
    def prefill(self, rows: list[Row], static: StaticDecodeStep | None = None) -> None:
        """Make ``rows`` the batch and run their windows (slid if full) through the model.

        The cache is ``static``'s (then `decode` replays that step) or a new one with room for
        the rows' remaining tokens. Afterwards `logits` holds each row's next-token scores.
        """
        t0 = time.perf_counter()
        for row in rows:
            row.slide(self.context_length)
        seqs = [row.window for row in rows]
        width = max(map(len, seqs))
        if static is not None:
            cache = static.cache
        else:
            cache = StaticKVCache.for_model(self.model, len(rows), self._room(width, rows))
        cache.reset()
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        key_mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, s in enumerate(seqs):  # right-aligned: the pads on the left
            ids[i, width - len(s) :] = torch.tensor(s)
            key_mask[i, width - len(s) :] = True
        ids, key_mask = ids.to(self.device), key_mask.to(self.device)
        # Each row counts positions from its first real token; pads sit at position 0 (masked).
        positions = (key_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, width)
        with self._matmuls(rows=ids.numel()):
            if all(len(s) == width for s in seqs):  # no padding: the plain causal path is faster
                hidden = self.model.hidden_states(ids, cache)
                key_mask = None
            else:
                hidden = self.model.hidden_states(ids, cache, positions, key_mask)
            logits = self._logits(hidden[:, -1])  # only the last position's logits are needed
        if static is not None:
            static.start(key_mask, positions[:, -1:])
        self.rows, self.cache, self.static = list(rows), cache, static
        self.logits, self.key_mask, self.positions = logits, key_mask, positions[:, -1:]
        self._pending = None
        self._sync()
        self.stats.prefill_s += time.perf_counter() - t0
        self.stats.prefill_tokens += sum(map(len, seqs))

    @_inference
    def pick(self) -> torch.Tensor:
        """One next token per row (B,) from `logits`, with that row's processors and seed."""
        if all(r.params.temperature == 0 and not r.processors for r in self.rows):
            return self.logits.argmax(dim=-1)  # plain greedy: one kernel, no host copies
        picks = []
        for i, row in enumerate(self.rows):
            if row.done or (row.tools is not None and row.tools.feeding):
                picks.append(0)  # nothing to sample: finished, or being fed a tool's result
                continue
            history = torch.tensor([row.sequence], dtype=torch.long, device=self.device)
            scores = row.processors(history, self.logits[i : i + 1])  # (1, V)
            if row.params.temperature == 0:
                picks.append(int(scores.argmax(dim=-1)))
            else:
                check_samplable(scores)
                probs = torch.softmax(scores, dim=-1)
                picks.append(int(torch.multinomial(probs, 1, generator=row.generator)))
        return torch.tensor(picks, dtype=torch.long, device=self.device)

    def advance(self, tokens: torch.Tensor) -> list[str]:
        """Give each row its token (B,): each row's new text ("" if none), in `rows` order.

        A row being fed a tool's result (`buildlm.infer.tool_use`) gets the result's next id
        instead of its picked one. The tokens are what the next `decode` feeds the model.
        """
        picked = tokens.tolist()
        chosen = [row.next_token(tok) for row, tok in zip(self.rows, picked, strict=True)]
        if any(fed for _, fed in chosen):
            ids = [tok for tok, _ in chosen]
            tokens = torch.tensor(ids, dtype=tokens.dtype, device=tokens.device)
        self._pending = tokens
        return [row.push(tok, fed) for row, (tok, fed) in zip(self.rows, chosen, strict=True)]

    @_inference
    def decode(self) -> list[Row]:
        """Feed every unfinished row the token `advance` gave it: the next `logits`.

        Finished rows leave first; a row whose window outgrew the context leaves, and comes
        back prefilled alone with its slid window after the others' step. Returns the rows that
        slid. A fixed-shape batch keeps its rows, and prefills them all again when it is full.
        """
        if self.static is not None:
            if self.cache.offset < self.cache.max_len:
                self._step()
                return []
            sliding = [row for row in self.rows if row.outgrew(self.context_length)]
            self.prefill(self.rows, self.static)  # out of room: the full rows slide
            return sliding
        self.drop_finished()
        sliding = [row for row in self.rows if row.outgrew(self.context_length)]
        if sliding:
            self._keep([i for i, row in enumerate(self.rows) if row not in sliding])
        if self.rows:
            if self.cache.offset == self.cache.max_len:
                self.make_room()
            self._step()
        if sliding:
            self.add(sliding)  # prefilled again: `prefill` slides their windows
        return sliding

    def _step(self) -> None:
        """One token per row through the model, ``_pending`` (B,) -> `logits` (B, V)."""
        t0 = time.perf_counter()
        tokens, self._pending = self._pending, None
        if self.static is not None:
            self.logits = self.static(tokens)
        else:
            self.positions = self.positions + 1  # each row's new token sits one position on
            positions = None  # no row is padded: positions follow from the cache offset
            if self.key_mask is not None:
                ones = self.key_mask.new_ones(len(self.rows), 1)
                self.key_mask = torch.cat([self.key_mask, ones], dim=1)  # (B, cached + 1)
                positions = self.positions
            with self._matmuls(rows=len(tokens)):
                hidden = self._decode_hidden(tokens[:, None], self.cache, positions, self.key_mask)
                self.logits = self._logits(hidden[:, -1])
        self._sync()
        self.stats.decode_s += time.perf_counter() - t0
        self.stats.decode_steps += 1
        self.stats.decode_tokens += sum(not r.done for r in self.rows)

    # --- rows that come and go -----------------------------------------------------------------

    @_inference
    def add(self, rows: list[Row]) -> None:
        """Prefill ``rows`` (new ones, or ones that slid) on their own and splice them in.

        Call it between steps, when every row has its `logits` (not between `advance` and
        `decode`). The running rows fill slots ``[w - w_old, w)`` and the new ones ``[w - w_new,
        w)`` of one cache of width ``w = max(w_old, w_new)``; the slots left of a row are
        padding, False in the key mask (B, w), and every row keeps its own positions.
        """
        if not self.rows:
            self.prefill(rows)
            return
        self._check_growing()
        if self._pending is not None:
            raise RuntimeError("add rows before pick/advance or after decode, not in between")
        new = DecodeBatch(self.model, self.tokenizer, self.truncate_prompts, self.compile)
        new.stats = self.stats  # one account of the prefill time
        new.prefill(rows)
        width = max(self.cache.offset, new.cache.offset)
        everyone = self.rows + new.rows
        mask = torch.cat([self._mask_to(width), new._mask_to(width)])  # (B, width)
        self.key_mask = None if bool(mask.all()) else mask
        self.cache = StaticKVCache.concat([self.cache, new.cache], self._room(width, everyone))
        self.rows = everyone
        self.logits = torch.cat([self.logits, new.logits])
        self.positions = torch.cat([self.positions, new.positions])

    @_inference
    def drop_finished(self) -> None:
        """Remove the rows that are done (finished or cancelled), and their cache rows."""
        self._keep([i for i, row in enumerate(self.rows) if not row.done])

    @_inference
    def make_room(self) -> None:
        """Cut the padding all rows share on the left, and copy the rest into a roomier cache.

        Every row's keys sit right-aligned and carry their own positions, so dropping slots
        that are padding in every row changes nothing a row computes. Each row's cached window
        is shorter than the context (full rows slide first), so at least one slot is freed.
        """
        self._check_growing()
        pad = 0
        if self.key_mask is not None:
            pad = int((~self.key_mask).sum(dim=1).min())
            self.key_mask = self.key_mask[:, pad:]
            if bool(self.key_mask.all()):  # no padding left: every row starts at slot 0
                self.key_mask = None
        width = self.cache.offset - pad
        self.cache = self.cache.resized(self._room(width, self.rows), drop=pad)

    def _keep(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` (indices, in order) of the batch."""
        if len(keep) == len(self.rows):
            return
        self._check_growing()
        if not keep:
            self.rows, self.cache, self.logits = [], None, None
            self.key_mask = self.positions = self._pending = None
            return
        index = torch.tensor(keep, device=self.device)
        self.rows = [self.rows[i] for i in keep]
        self.cache.reorder(index)
        self.logits = self.logits.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, index)
        if self._pending is not None:
            self._pending = self._pending.index_select(0, index)

    def _check_growing(self) -> None:
        if self.static is not None:
            raise RuntimeError("a fixed-shape batch keeps its rows and its cache")

    # --- helpers -------------------------------------------------------------------------------

    def _room(self, width: int, rows: list[Row]) -> int:
        """Cache positions for ``width`` cached ones plus the rows' remaining tokens."""
        return min(width + max((r.remaining for r in rows), default=0), self.context_length)

    def _mask_to(self, width: int) -> torch.Tensor:
        """The key mask right-aligned in ``width`` slots (B, width): False left of each row."""
        mask = torch.zeros(len(self.rows), width, dtype=torch.bool, device=self.device)
        cached = self.cache.offset
        mask[:, width - cached :] = True if self.key_mask is None else self.key_mask
        return mask

    def _matmuls(self, rows: int) -> contextlib.AbstractContextManager:
        """How a pass over ``rows`` token rows multiplies (`buildlm.infer.float32_matmuls`)."""
        if self.compile:  # the compiler picks its own kernels
            return contextlib.nullcontext()
        return float32_matmuls(self.model, rows)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Last-position hidden states (B, d_model) -> float32 logits (B, V)."""
        return self.model.head(hidden).float()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
