"""The inference engine: cached, batched, streaming generation.

`buildlm.infer.generate` is the readable reference: it re-runs the model over the whole prefix
for every new token. `Engine` produces the same tokens (greedy) far faster, by driving a
`buildlm.infer.batch.DecodeBatch`: the prompts are prefilled into a KV cache once, then each
step picks one token per row (with that request's processors and seed), checks its stop
conditions and feeds it back; a row whose window outgrows the context slides on its own. The
server's scheduler (`buildlm.serve.scheduler`) drives the same batch object, with rows joining
and leaving between steps.

What the engine adds to the batch: its settings (weights arranged for decoding on a CPU,
``torch.compile``, fixed-shape steps replayed as CUDA graphs on a GPU, kept for the next calls),
the public calls (`Engine.generate`, `Engine.stream`, `Engine.beam_search`) and their request
types (`buildlm.infer.requests`). infer never imports train or serve.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from buildlm.infer.batch import DecodeBatch
from buildlm.infer.beam_search import beam_search
from buildlm.infer.kvcache import StaticKVCache
from buildlm.infer.requests import Completion, EngineStats, SamplingParams
from buildlm.infer.row import Row
from buildlm.infer.speculative import Drafter, check_speculable, speculative_decode
from buildlm.infer.static_decode import StaticDecodeStep, model_storage
from buildlm.infer.weight_layout import arrange_for_decoding

# Static decode caches are sized in whole blocks of this many positions, so prompts and budgets
# of nearby lengths share one recorded step (a CUDA graph is tied to its cache's shape).
STATIC_CACHE_BLOCK = 256


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

    ``speculative`` (default: off) decodes with a drafter's guesses checked by the model
    (`buildlm.infer.speculative`): `buildlm.infer.prompt_lookup.PromptLookup` or
    `buildlm.infer.draft_model.DraftModel`. The tokens are those of plain decoding (greedy) or
    distributed exactly as them (sampling); rows are then decoded one at a time at batch 1,
    without fixed-shape steps or ``torch.compile``, and tool calls are refused. Only
    `generate` and `stream` speculate: the server's scheduler drives plain `DecodeBatch` steps.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any = None,
        truncate_prompts: bool = False,
        compile: bool = False,
        arrange_weights: bool | None = None,
        static_decode: bool | None = None,
        speculative: Drafter | None = None,
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
        if speculative is not None:
            check_speculable(model)
            if hasattr(speculative, "check_target"):  # a draft model: same vocabulary, context
                speculative.check_target(model)
        self.speculative = speculative
        if arrange_weights:
            arrange_for_decoding(model)
            if isinstance(getattr(speculative, "model", None), nn.Module):
                arrange_for_decoding(speculative.model)
        self.stats = EngineStats()

    # --- public API ----------------------------------------------------------------------------

    def new_batch(self) -> DecodeBatch:
        """An empty `DecodeBatch` on this engine's model, tokenizer and settings.

        `generate` and `stream` make one per call; the server's scheduler keeps one running.
        """
        return DecodeBatch(self.model, self.tokenizer, self.truncate_prompts, self.compile,
                           decode_hidden=self._decode_hidden)  # fmt: skip

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

        ``tools=("calculator",)`` lets the model call the calculator as it writes
        (`buildlm.infer.tool_use`): each call's result is fed back, and `Completion.inserted`
        lists the positions of those fed tokens (a trainer, such as GRPO, leaves them out of its
        loss: the model did not choose them).
        """
        batch = self.new_batch()
        rows = batch.make_rows(prompts, params, **kwargs)
        for _ in self._run(batch, rows):
            pass
        return [row.completion() for row in rows]

    def stream(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        **kwargs: Any,
    ) -> Iterator[str]:
        """Yield the text of one completion piece by piece as it is decoded."""
        batch = self.new_batch()
        for texts in self._run(batch, batch.make_rows([prompt], params, **kwargs)):
            if texts[0]:  # one row, in the batch until it is done
                yield texts[0]

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
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0)
        row = self.new_batch().make_rows([prompt], params)[0]  # the prompt's ids, checked
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

    # --- the loop ------------------------------------------------------------------------------

    @torch.inference_mode()
    def _run(self, batch: DecodeBatch, rows: list[Row]) -> Iterator[list[str]]:
        """Prefill, then decode until every row is done; yields the rows' new text per step."""
        self.stats = batch.stats
        if all(row.done for row in rows):  # nothing to generate (max_new_tokens=0)
            return
        if self.speculative is not None:
            yield from speculative_decode(self.model, self.speculative, rows, batch.stats)
            return
        static = None
        if self.static_decode:
            longest = max(len(row.prompt) for row in rows)
            budget = max(row.params.max_new_tokens for row in rows)
            static = self._static_step(len(rows), longest + budget)
        batch.prefill(rows, static)
        while True:
            yield batch.advance(batch.pick())
            if batch.done:
                return
            batch.decode()

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
            self.stats.static_steps_built += 1
        return step
