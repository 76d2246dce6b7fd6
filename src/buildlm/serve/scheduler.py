"""The scheduler: one engine, many clients, one batch.

One decode step for 32 rows costs far less than 32 steps for one row: a step reads every weight
once whatever the batch size, and at small batches that read is most of what a step costs (on
a GPU nearly all of it). A server that ran its requests one after another would pay it for
every request. Here every request becomes *rows* (one per choice), and one background thread
runs all the rows in flight together:

1. **Admit.** Waiting requests join the running batch between two decode steps, oldest first,
   while it has room (``max_batch_size`` rows): *continuous batching*, so a request never
   waits for a whole batch to finish. Only the new prompts are prefilled (`Engine._prefill`,
   into a cache of their own); their keys and values are then copied into the running cache,
   right-aligned with the running rows. The slots to the left of a shorter row are padding,
   hidden by a key mask, and every row carries its own positions, so each row computes what
   it would alone (the same trick the engine uses for prompts of different lengths).
2. **Step.** One token for every row (`Engine._pick`, `Engine._advance`: each row keeps its own
   sampling settings, seed and stop conditions), and each row's new text goes to its request.
3. **Drop.** Finished rows, and the rows of requests whose client went away (``Ticket.cancel``),
   leave the batch: their cache rows are dropped (`StaticKVCache.reorder`), so nobody computes
   tokens that nobody will read. When every row is gone the thread sleeps until a request comes.
4. **Slide.** A row whose window has outgrown the model's context leaves the batch, keeps the
   last three quarters of its tokens (the engine's rule, `Engine._window`) and is prefilled
   again *on its own*, then joins the batch like a new request. Only that row moves: the
   others keep their caches, so what a request generates never depends on its neighbours
   (the same request gives the same tokens alone and in a busy batch).
5. **Make room.** The cache's width only grows (one slot per step; new rows are padded to it).
   When it is full, the padding every row has on its left is cut off and the rest is copied
   into a cache with room for the longest remaining budget: no row is recomputed.

Torch work runs only on this thread, never on the server's asyncio event loop, which stays free
to accept connections and stream text. The thread hands results to the loop with
``loop.call_soon_threadsafe``; an asyncio handler reads them from its `Ticket`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import torch

from buildlm.infer.engine import Engine, SamplingParams
from buildlm.infer.kvcache import StaticKVCache

log = logging.getLogger("buildlm.serve")


# --- what a request receives -------------------------------------------------------------------


@dataclass
class Piece:
    """New text of choice ``index``; ``finish_reason`` is set on its last piece."""

    index: int
    text: str
    finish_reason: str | None = None


@dataclass
class Done:
    """Every choice of the request has finished."""

    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    """The request could not be finished (a bug, or the server is shutting down)."""

    message: str


Event = list[Piece] | Done | Failed


class Ticket:
    """One request's place in the scheduler: its rows, and a queue of what they produced.

    Made by `Scheduler.submit` on the event loop; the scheduler thread fills the queue, the
    request handler reads it with ``async for event in ticket.events()``.
    """

    def __init__(self, rows: list, prompt_tokens: int, loop: asyncio.AbstractEventLoop) -> None:
        self.rows = rows
        self.prompt_tokens = prompt_tokens
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.cancelled = False  # set by the handler when the client goes away
        self.finished = False  # set by the scheduler thread once Done/Failed was sent
        self._reported = [False] * len(rows)

    def cancel(self) -> None:
        """Stop generating for this request (its client disconnected). Safe from any thread."""
        self.cancelled = True

    async def events(self) -> AsyncIterator[Event]:
        """The request's pieces as they come, then one `Done` or `Failed`."""
        while True:
            event = await self.queue.get()
            yield event
            if isinstance(event, (Done, Failed)):
                return

    # --- called on the scheduler thread ---

    def _push(self, event: Event) -> None:
        # RuntimeError: the event loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def _step(self, updates: Sequence[tuple[int, str]]) -> bool:
        """Send this step's text of the rows still running (``(choice, text)`` pairs) and
        report rows that just finished; True once every row has finished."""
        pieces = []
        for i, text in updates:
            row, reason = self.rows[i], None
            if row.done and not self._reported[i]:
                self._reported[i] = True
                reason = row.finish_reason
            if text or reason is not None:
                pieces.append(Piece(i, text, reason))
        if pieces:
            self._push(pieces)
        if all(self._reported) and not self.finished:
            self._finish()
            return True
        return False

    def _finish(self) -> None:
        self.finished = True
        self._push(Done(self.prompt_tokens, sum(len(r.generated) for r in self.rows)))

    def _fail(self, message: str) -> None:
        if not self.finished:
            self.finished = True
            self._push(Failed(message))


# --- the scheduler -----------------------------------------------------------------------------


@dataclass
class SchedulerStats:
    """Counters for ``GET /health`` (and for tests: a cancelled request must show up here)."""

    requests_submitted: int = 0
    requests_finished: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    tokens_generated: int = 0
    prefills: int = 0
    decode_steps: int = 0
    largest_batch: int = 0
    window_slides: int = 0  # rows that outgrew the context and were prefilled again alone


@dataclass
class _Batch:
    """The rows in flight, their owners, and the cache state that goes with them."""

    rows: list = field(default_factory=list)
    slots: list[tuple[Ticket, int]] = field(default_factory=list)  # each row's request, choice
    cache: StaticKVCache | None = None
    logits: torch.Tensor | None = None  # (B, V) next-token logits of each row
    key_mask: torch.Tensor | None = None  # (B, cached) False on pad slots; None: no padding
    positions: torch.Tensor | None = None  # (B, 1) position of each row's last token

    def tickets(self) -> list[Ticket]:
        """The requests with rows in the batch, each once, in order."""
        return list({id(t): t for t, _ in self.slots}.values())


class Scheduler:
    """Runs every submitted request through ``engine`` on one background thread, batched."""

    def __init__(self, engine: Engine, max_batch_size: int = 32) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.stats = SchedulerStats()
        self._pending: deque[Ticket] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._active_rows = 0
        self._thread: threading.Thread | None = None

    # --- the event-loop side ---

    def start(self) -> None:
        if self._thread is None:
            self._closing = False
            self._thread = threading.Thread(
                target=self._serve, name="buildlm-scheduler", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Fail what is waiting, finish the current step, stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(
        self,
        prompts: Sequence[Sequence[int]],
        params: Sequence[SamplingParams],
        prompt_tokens: int | None = None,
    ) -> Ticket:
        """Queue one request, one row per (prompt ids, params) pair; call from the event loop.

        ``prompt_tokens`` is what the request's usage reports (default: all prompts' lengths).
        Raises ValueError for a prompt the engine refuses (empty, ids out of range, too long).
        """
        if not 1 <= len(prompts) <= self.max_batch_size:
            raise ValueError(
                f"a request may have 1 to {self.max_batch_size} rows in all, got {len(prompts)}"
            )
        rows = self.engine._rows([list(p) for p in prompts], list(params), {})
        if prompt_tokens is None:
            prompt_tokens = sum(len(p) for p in prompts)
        ticket = Ticket(rows, prompt_tokens, asyncio.get_running_loop())
        with self._cond:
            if self._closing or self._thread is None:
                raise RuntimeError("the scheduler is not running")
            self._pending.append(ticket)
            self.stats.requests_submitted += 1
            self._cond.notify()
        return ticket

    @property
    def queued(self) -> int:
        """Requests waiting to join the batch."""
        return len(self._pending)

    @property
    def active_rows(self) -> int:
        """Rows in the running batch."""
        return self._active_rows

    # --- the scheduler thread ---

    def _serve(self) -> None:
        batch = _Batch()
        while True:
            with self._cond:
                while not self._pending and not batch.rows and not self._closing:
                    self._cond.wait()
                if self._closing:
                    break
                admit = self._take(batch)
            try:
                if admit:
                    self._admit(batch, admit)
                if batch.rows:
                    self._step(batch)
            except Exception as err:  # a bug or out of memory: fail these requests, keep serving
                log.exception("generation failed")
                for ticket in batch.tickets() + admit:
                    if not ticket.finished:
                        self.stats.requests_failed += 1
                        ticket._fail(f"generation failed ({type(err).__name__}: {err})")
                batch = _Batch()
            self._active_rows = len(batch.rows)
        with self._cond:
            waiting = list(self._pending)
            self._pending.clear()
        for ticket in waiting + batch.tickets():
            ticket._fail("the server is shutting down")

    def _take(self, batch: _Batch) -> list[Ticket]:
        """Pop the waiting requests that may join now (holding the lock)."""
        room = self.max_batch_size - len(batch.rows)
        taken: list[Ticket] = []
        while self._pending:
            ticket = self._pending[0]
            if ticket.cancelled:  # its client left while it waited
                self._pending.popleft()
                self.stats.requests_cancelled += 1
                ticket._finish()
                continue
            if len(ticket.rows) > room:
                break
            room -= len(ticket.rows)
            taken.append(self._pending.popleft())
        return taken

    @torch.inference_mode()
    def _admit(self, batch: _Batch, tickets: list[Ticket]) -> None:
        """Prefill ``tickets``' rows on their own, then splice them into the running batch."""
        rows = [r for t in tickets for r in t.rows]
        slots = [(t, i) for t in tickets for i in range(len(t.rows))]
        self._insert(batch, rows, slots)

    def _insert(self, batch: _Batch, rows: list, slots: list[tuple[Ticket, int]]) -> None:
        """Prefill ``rows`` (new ones, or rows that slid) in a cache of their own, then splice
        them into the running batch."""
        width = max(len(self.engine._window(r)) for r in rows)  # windows fit the context
        cache = StaticKVCache.for_model(self.engine.model, len(rows), max_len=width)
        logits, key_mask, positions = self.engine._prefill(rows, cache)
        self.stats.prefills += 1
        if not batch.rows:
            batch.cache = self._with_room(cache, rows)
            batch.rows, batch.slots = rows, slots
            batch.logits, batch.key_mask, batch.positions = logits, key_mask, positions
        else:
            self._splice(batch, rows, slots, cache, logits, key_mask, positions)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch.rows))

    def _with_room(self, cache: StaticKVCache, rows: list) -> StaticKVCache:
        """``cache``'s contents in a cache with room for the rows' remaining tokens."""
        budget = max(r.params.max_new_tokens - len(r.generated) for r in rows)
        roomy = StaticKVCache.for_model(self.engine.model, len(rows), max_len=cache.offset + budget)
        for dst, src in zip(roomy.k + roomy.v, cache.k + cache.v, strict=True):  # (B, heads, slots, d)
            dst[:, :, : cache.offset] = src[:, :, : cache.offset]
        roomy.offset = cache.offset
        return roomy

    def _splice(self, batch: _Batch, rows: list, slots: list, cache: StaticKVCache,
                logits: torch.Tensor, key_mask: torch.Tensor | None,
                positions: torch.Tensor) -> None:  # fmt: skip
        """Append freshly prefilled rows to the running batch, both right-aligned in one cache.

        The running rows fill slots ``[w - w_old, w)`` and the new ones ``[w - w_new, w)`` of a
        cache of width ``w = max(w_old, w_new)``; the slots left of a row are padding, False in
        the key mask (B, w).
        """
        old, w_old, w_new = batch.cache, batch.cache.offset, cache.offset
        width = max(w_old, w_new)
        everyone = batch.rows + rows
        budget = max(r.params.max_new_tokens - len(r.generated) for r in everyone)
        merged = StaticKVCache.for_model(self.engine.model, len(everyone), max_len=width + budget)
        n_old = len(batch.rows)
        for dst, src_old, src_new in zip(merged.k + merged.v, old.k + old.v, cache.k + cache.v,
                                         strict=True):  # fmt: skip  # each (B, heads, slots, d)
            dst[:n_old, :, width - w_old : width] = src_old[:, :, :w_old]
            dst[n_old:, :, width - w_new : width] = src_new[:, :, :w_new]
        merged.offset = width
        mask = torch.zeros(len(everyone), width, dtype=torch.bool, device=logits.device)
        mask[:n_old, width - w_old :] = True if batch.key_mask is None else batch.key_mask
        mask[n_old:, width - w_new :] = True if key_mask is None else key_mask
        batch.cache, batch.key_mask = merged, mask
        batch.rows, batch.slots = everyone, batch.slots + slots
        batch.logits = torch.cat([batch.logits, logits])
        batch.positions = torch.cat([batch.positions, positions])

    @torch.inference_mode()
    def _step(self, batch: _Batch) -> None:
        """Pick one token per row, hand out the text, drop finished rows, run the decode step."""
        engine, rows = self.engine, batch.rows
        nxt = engine._pick(rows, batch.logits)  # (B,)
        deltas = engine._advance(rows, nxt.tolist(), 0)
        self.stats.decode_steps += 1
        updates: dict[int, tuple[Ticket, list[tuple[int, str]]]] = {}
        for (ticket, choice), text in zip(batch.slots, deltas, strict=True):
            updates.setdefault(id(ticket), (ticket, []))[1].append((choice, text))
        for ticket, pairs in updates.values():
            if ticket._step(pairs):
                self.stats.requests_finished += 1
                self.stats.tokens_generated += sum(len(r.generated) for r in ticket.rows)
            elif ticket.cancelled:  # the client left: end its rows now
                for row in ticket.rows:
                    row.done, row.finish_reason = True, "cancelled"
                self.stats.requests_cancelled += 1
                self.stats.tokens_generated += sum(len(r.generated) for r in ticket.rows)
                ticket._finish()
        self._drop_finished(batch, nxt)

    def _drop_finished(self, batch: _Batch, nxt: torch.Tensor) -> None:
        """Remove done rows, slide full ones, then compute every row's next logits."""
        keep = [i for i, r in enumerate(batch.rows) if not r.done]
        nxt = self._keep(batch, keep, nxt)
        # A row whose window (its new token included) outgrew the context slides alone.
        ctx = self.engine.context_length
        full = [i for i, r in enumerate(batch.rows) if len(r.sequence) - r.start > ctx]
        sliding = [(batch.rows[i], batch.slots[i]) for i in full]
        if full:
            nxt = self._keep(batch, [i for i in range(len(batch.rows)) if i not in full], nxt)
        if batch.rows:
            self._decode(batch, nxt)
        if sliding:
            self.stats.window_slides += len(sliding)
            self._insert(batch, [r for r, _ in sliding], [slot for _, slot in sliding])

    def _keep(self, batch: _Batch, keep: list[int], nxt: torch.Tensor) -> torch.Tensor:
        """Keep only rows ``keep`` of the batch (and of ``nxt``, which is returned)."""
        if not keep:
            batch.rows, batch.slots, batch.cache, batch.logits = [], [], None, None
            batch.key_mask = batch.positions = None
            return nxt[:0]
        if len(keep) == len(batch.rows):
            return nxt
        index = torch.tensor(keep, device=nxt.device)
        batch.rows = [batch.rows[i] for i in keep]
        batch.slots = [batch.slots[i] for i in keep]
        batch.cache.reorder(index)
        batch.positions = batch.positions.index_select(0, index)
        if batch.key_mask is not None:
            batch.key_mask = batch.key_mask.index_select(0, index)
        return nxt.index_select(0, index)

    def _decode(self, batch: _Batch, nxt: torch.Tensor) -> None:
        """Feed each row its new token ``nxt`` (B,): the batch's next logits."""
        engine, rows = self.engine, batch.rows
        if batch.cache.offset == batch.cache.max_len:  # out of room
            self._make_room(batch)
        batch.positions = batch.positions + 1  # each row's next token sits one position on
        if batch.key_mask is None:  # no row is padded: positions follow from the cache offset
            batch.logits = engine._decode_logits(nxt, batch.cache)
        else:
            ones = batch.key_mask.new_ones(len(rows), 1)
            batch.key_mask = torch.cat([batch.key_mask, ones], dim=1)
            batch.logits = engine._decode_logits(
                nxt, batch.cache, batch.positions, batch.key_mask
            )

    def _make_room(self, batch: _Batch) -> None:
        """Cut the padding all rows share on the left, and copy the rest into a roomier cache.

        Every row's keys sit right-aligned and carry their own positions, so dropping slots
        that are padding in every row changes nothing a row computes. Each row's cached window
        is shorter than the context (full rows slid first), so at least one slot is freed.
        """
        old, width = batch.cache, batch.cache.offset
        pad = 0
        if batch.key_mask is not None:
            pad = int((~batch.key_mask).sum(dim=1).min())
            batch.key_mask = batch.key_mask[:, pad:]
            if bool(batch.key_mask.all()):  # no padding left: every row starts at slot 0
                batch.key_mask = None
        budget = max(r.params.max_new_tokens - len(r.generated) for r in batch.rows)
        cache = StaticKVCache.for_model(
            self.engine.model, len(batch.rows), max_len=width - pad + budget
        )
        for dst, src in zip(cache.k + cache.v, old.k + old.v, strict=True):  # (B, heads, slots, d)
            dst[:, :, : width - pad] = src[:, :, pad:width]
        cache.offset = width - pad
        batch.cache = cache
