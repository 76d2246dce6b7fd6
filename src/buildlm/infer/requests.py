"""What a caller hands the engine and what it gets back: `SamplingParams`, `Completion`, `EngineStats`.

These are plain records, shared by `buildlm.infer.engine.Engine`, the decode batch it drives
(`buildlm.infer.batch`) and the server (`buildlm.serve`), so they live apart from the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from buildlm.infer.processors import LogitsProcessorList, build_processors
from buildlm.tools.calls import check_tools


@dataclass
class SamplingParams:
    """How one request is decoded. ``temperature=0`` is greedy.

    ``stop_token_ids=None`` means the tokenizer's end-of-text token; ``()`` means none.
    ``seed`` makes this request's sampling repeatable whatever else is in the batch.
    ``tools`` names the tools the model may call while it generates (``("calculator",)``;
    default none): a call it writes is run and its result fed back (`buildlm.infer.tool_use`).
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
    tools: Sequence[str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, got {self.max_new_tokens!r}")
        if self.seed is not None and not (
            isinstance(self.seed, int) and -(2**63) <= self.seed < 2**64
        ):  # the range torch.Generator.manual_seed takes
            raise ValueError(f"seed must be an integer from -2**63 to 2**64-1, got {self.seed!r}")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.tools = check_tools(self.tools)
        self.processors()  # validates temperature, top_k, top_p, min_p and the penalties

    def processors(self, prompt_length: int = 0) -> LogitsProcessorList:
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
    """One finished request: the new ids and text, and why it ended (``"stop"`` or ``"length"``).

    ``stop_token_id`` is the stop token that ended it (it is not in ``token_ids``), or None
    (a stop string, the length limit). Reinforcement learning trains on it too: sampling it was
    the model's choice to stop (`buildlm.finetune.grpo_rollout`).
    ``inserted`` lists the positions in ``token_ids`` that a tool's result put there (fed to
    the model, not sampled: `buildlm.infer.tool_use`); empty without tools.
    """

    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str
    stop_token_id: int | None = None
    inserted: list[int] = field(default_factory=list)


@dataclass
class EngineStats:
    """Where the time went in the last call (for ``--stats``).

    ``static_steps_built`` counts the fixed-shape decode steps (`buildlm.infer.static_decode`)
    the call had to build; 0 when it reused one an earlier call built, or decoded without them.
    With speculative decoding (`buildlm.infer.speculative`) a decode step verifies several
    drafted tokens at once, and ``draft_tokens`` / ``accepted_tokens`` say how many were right.
    """

    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_tokens: int = 0
    decode_steps: int = 0
    decode_s: float = 0.0
    static_steps_built: int = 0
    draft_tokens: int = 0  # tokens a drafter proposed (speculative decoding; 0 without)
    accepted_tokens: int = 0  # of those, how many the target model accepted

    @property
    def acceptance_rate(self) -> float:
        """The share of drafted tokens the target accepted (0 when nothing was drafted)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s else 0.0
