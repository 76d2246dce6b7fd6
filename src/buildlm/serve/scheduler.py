"""The scheduler: one engine, many clients, one batch.

One decode step for 32 rows costs far less than 32 steps for one row: a step reads every weight
once whatever the batch size, and at small batches that read is most of what a step costs (on
a GPU nearly all of it). A server that ran its requests one after another would pay it for
every request. Here every request becomes *rows* (one per choice, `buildlm.infer.row.Row`), and
one background thread runs all the rows in flight together in one
`buildlm.infer.batch.DecodeBatch`, the same object `Engine.generate` drives:

1. **Admit.** Waiting requests join the running batch between two decode steps, oldest first,
   while it has room (``max_batch_size`` rows): *continuous batching*, so a request never
   waits for a whole batch to finish. `DecodeBatch.add` prefills only the new prompts, in a
   cache of their own, then splices their keys and values into the running cache,
   right-aligned with the running rows. The slots to the left of a shorter row are padding,
   hidden by a key mask, and every row carries its own positions, so each row computes what
   it would alone (the same trick the engine uses for prompts of different lengths).
2. **Step.** One token for every row (`DecodeBatch.pick`, `DecodeBatch.advance`: each row keeps
   its own sampling settings, seed and stop conditions), and each row's new text goes to its
   request. Then `DecodeBatch.decode` feeds the tokens back:
3. **Drop.** Finished rows, and the rows of requests whose client went away (``Ticket.cancel``
   marks them, `Row.cancel`), leave the batch first, with their cache rows, so nobody computes
   tokens that nobody will read. When every row is gone the thread sleeps until work comes.
4. **Slide.** A row whose window has outgrown the model's context leaves the batch, keeps the
   last three quarters of its tokens (`Row.slide`, the one place the rule lives) and is
   prefilled again *on its own*, then joins the batch like a new request. Only that row moves:
   the others keep their caches, so what a request generates never depends on its neighbours
   (the same request gives the same tokens alone and in a busy batch).
5. **Make room.** The cache's width only grows (one slot per step; new rows are padded to it).
   When it is full, `DecodeBatch.make_room` cuts off the padding every row has on its left and
   copies the rest into a cache with room for the longest remaining budget: no row is
   recomputed.

Torch work runs only on this thread, never on the server's asyncio event loop, which stays free
to accept connections and stream text. The thread hands results to the loop with
``loop.call_soon_threadsafe``; an asyncio handler reads them from its `Ticket`. Other model
work (``POST /v1/attention``'s forward pass) is a *job*: `Scheduler.call` queues it, the thread
runs it between two decode steps and a `concurrent.futures.Future` brings back its result. So
the model is never run by two threads at once (a decode step and a page's heatmap cannot
compete for the same cores, or, on a GPU, for the same memory and stream), and a job costs the
running requests one step's delay, not a slower step for as long as it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from buildlm.infer.batch import DecodeBatch
from buildlm.infer.engine import Engine
from buildlm.infer.requests import SamplingParams
from buildlm.infer.row import Row

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

    def __init__(self, rows: list[Row], prompt_tokens: int, loop: asyncio.AbstractEventLoop):
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
    jobs_run: int = 0  # other model work run on the thread (`Scheduler.call`: /v1/attention)


@dataclass
class _Job:
    """A function to run on the scheduler thread, and where its result goes."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future


class Scheduler:
    """Runs every submitted request through ``engine`` on one background thread, batched."""

    def __init__(self, engine: Engine, max_batch_size: int = 32) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.stats = SchedulerStats()
        self._batch: DecodeBatch = engine.new_batch()  # the rows in flight (the thread's alone)
        self._owners: dict[Row, tuple[Ticket, int]] = {}  # each row's request and choice
        self._pending: deque[Ticket] = deque()
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
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
        rows = self._batch.make_rows([list(p) for p in prompts], list(params))
        if prompt_tokens is None:
            prompt_tokens = sum(len(p) for p in prompts)
        ticket = Ticket(rows, prompt_tokens, asyncio.get_running_loop())
        with self._cond:
            self._check_running()
            self._pending.append(ticket)
            self.stats.requests_submitted += 1
            self._cond.notify()
        return ticket

    def call(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` on the scheduler thread, between two decode steps; from any thread.

        For model work other than generation (``/v1/attention``): the model then only ever runs
        on this thread. ``await asyncio.wrap_future(scheduler.call(...))`` on the event loop;
        the future holds the result, or the exception ``fn`` raised.
        """
        job = _Job(fn, args, Future())
        with self._cond:
            self._check_running()
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def _check_running(self) -> None:
        if self._closing or self._thread is None:
            raise RuntimeError("the scheduler is not running")

    @property
    def queued(self) -> int:
        """Requests waiting to join the batch."""
        return len(self._pending)

    @property
    def active_rows(self) -> int:
        """Rows in the running batch."""
        return len(self._owners)

    # --- the scheduler thread ---

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not (self._pending or self._jobs or self._owners or self._closing):
                    self._cond.wait()
                if self._closing:
                    break
                admit = self._take()
                jobs = list(self._jobs)
                self._jobs.clear()
            for job in jobs:
                self._run_job(job)
            try:
                with torch.inference_mode():
                    if admit:
                        self._admit(admit)
                    if self._batch.rows:
                        self._step()
            except Exception as err:  # a bug or out of memory: fail these requests, keep serving
                log.exception("generation failed")
                for ticket in self._tickets() + admit:
                    if not ticket.finished:
                        self.stats.requests_failed += 1
                        ticket._fail(f"generation failed ({type(err).__name__}: {err})")
                self._batch, self._owners = self.engine.new_batch(), {}
        with self._cond:
            waiting, jobs = list(self._pending), list(self._jobs)
            self._pending.clear()
            self._jobs.clear()
        for ticket in waiting + self._tickets():
            ticket._fail("the server is shutting down")
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    def _run_job(self, job: _Job) -> None:
        """Run one `call`; its future gets the result or the error (skipped if cancelled)."""
        if not job.future.set_running_or_notify_cancel():  # its caller stopped waiting
            return
        self.stats.jobs_run += 1
        try:
            job.future.set_result(job.fn(*job.args))
        except Exception as err:  # the caller's error to handle (a bad layer number: a 400)
            job.future.set_exception(err)

    def _tickets(self) -> list[Ticket]:
        """The requests with rows in the batch, each once, in order."""
        return list({id(t): t for t, _ in self._owners.values()}.values())

    def _take(self) -> list[Ticket]:
        """Pop the waiting requests that may join now (holding the lock)."""
        room = self.max_batch_size - len(self._owners)
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

    def _admit(self, tickets: list[Ticket]) -> None:
        """Prefill ``tickets``' rows on their own and splice them into the running batch."""
        for ticket in tickets:
            for choice, row in enumerate(ticket.rows):
                self._owners[row] = (ticket, choice)
        self._batch.add([row for ticket in tickets for row in ticket.rows])
        self.stats.prefills += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(self._batch.rows))

    def _step(self) -> None:
        """Pick one token per row, hand out the text, end cancelled requests, decode."""
        batch = self._batch
        texts = batch.advance(batch.pick())
        self.stats.decode_steps += 1
        updates: dict[int, tuple[Ticket, list[tuple[int, str]]]] = {}
        for row, text in zip(batch.rows, texts, strict=True):
            ticket, choice = self._owners[row]
            updates.setdefault(id(ticket), (ticket, []))[1].append((choice, text))
        for ticket, pairs in updates.values():
            if ticket._step(pairs):
                self.stats.requests_finished += 1
                self.stats.tokens_generated += sum(len(r.generated) for r in ticket.rows)
            elif ticket.cancelled:  # the client left: end its rows now
                for row in ticket.rows:
                    row.cancel()
                self.stats.requests_cancelled += 1
                self.stats.tokens_generated += sum(len(r.generated) for r in ticket.rows)
                ticket._finish()
        slid = batch.decode()  # finished and cancelled rows leave; full ones slide alone
        if slid:
            self.stats.window_slides += len(slid)
            self.stats.prefills += 1  # the rows that slid were prefilled again, together
        self._owners = {row: self._owners[row] for row in batch.rows}
