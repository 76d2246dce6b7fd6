"""Logits processors: small, composable steps that reshape next-token scores before a choice.

A decoding step ends with a score (logit) for every vocabulary entry. Before a token is picked,
a chain of processors may rewrite those scores. Each processor here is a callable

    processor(input_ids (B, T) LongTensor, scores (B, V) float) -> scores (B, V)

``input_ids`` is everything the row holds so far (prompt and generated tokens); ``scores`` are
the next-token scores. Keeping each rule in its own class means a decoder (`generate`, the
engine, beam search) composes exactly the rules a user asked for, in a fixed order, and each rule
is tested on its own against Hugging Face ``transformers``, whose semantics these follow exactly.

Two families, applied in this order (the order ``transformers`` uses):

1. Penalties change the scores of tokens the row has already used, so the model repeats itself
   less. They also apply to greedy decoding.
   - `RepetitionPenalty` (CTRL paper, HF semantics): every token that appears anywhere in
     ``input_ids`` (prompt included) has its score divided by ``penalty`` when positive and
     multiplied by it when negative, so with penalty > 1 it always becomes less likely. Applied
     once per token, however often it appeared.
   - `FrequencyPenalty` and `PresencePenalty` (OpenAI semantics): subtract
     ``frequency_penalty * count`` and ``presence_penalty * (count > 0)``, where ``count`` is how
     often the token occurs among the *generated* tokens (``prompt_length`` leading tokens are
     not counted). Frequency grows with every repeat; presence is a flat, one-off push.
2. Warpers reshape the distribution for sampling only (greedy's argmax is unchanged by them):
   - `Temperature`: divide the scores by T. T < 1 sharpens, T > 1 flattens.
   - `TopK`: keep the k highest scores (ties with the k-th are kept too).
   - `TopP` (nucleus): keep the smallest set of most likely tokens whose probabilities add up to
     at least p; the set grows when the model is unsure and shrinks when it is confident.
   - `MinP`: keep tokens whose probability is at least ``min_p`` times that of the most likely
     token: a cut-off that scales with the model's confidence.

Filtered tokens get ``filter_value`` (-inf: probability exactly 0 after the softmax).
``min_tokens_to_keep`` guarantees that a filter never removes everything (beam search that
samples needs 2 survivors). `build_processors` turns the usual user settings into a
`LogitsProcessorList` and validates them, with errors that name the value and the allowed range.
"""

from __future__ import annotations

import math

import torch

NEG_INF = float("-inf")


class LogitsProcessor:
    """Base class: ``processor(input_ids (B, T), scores (B, V)) -> new scores (B, V)``.

    Processors never modify ``scores`` in place: a caller may still need the original values.
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class LogitsProcessorList(list):
    """A list of processors that is itself a processor: applies each one in turn."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


# ---- validation helpers --------------------------------------------------------------------


def _check_min_tokens_to_keep(min_tokens_to_keep: int) -> int:
    if (
        isinstance(min_tokens_to_keep, bool)
        or not isinstance(min_tokens_to_keep, int)
        or min_tokens_to_keep < 1
    ):
        raise ValueError(
            f"min_tokens_to_keep must be a positive integer, got {min_tokens_to_keep!r}"
        )
    return min_tokens_to_keep


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_temperature(temperature: float, allow_zero: bool) -> None:
    if not _is_number(temperature) or math.isnan(temperature) or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number, got {temperature!r}")
    if 0 < temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"temperature {temperature!r} is below {MIN_TEMPERATURE}: use 0 for greedy decoding"
        )
    if allow_zero and temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature!r}")
    if not allow_zero and temperature <= 0:
        raise ValueError(
            f"temperature must be > 0 for the Temperature processor, got {temperature!r}; "
            "use greedy decoding (temperature=0 in generate) instead of dividing by zero"
        )


def _check_top_k(top_k: int) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer (>= 1) or None, got {top_k!r}")


def _check_top_p(top_p: float) -> None:
    if not _is_number(top_p) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def _check_min_p(min_p: float) -> None:
    if not _is_number(min_p) or not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1] or None, got {min_p!r}")


# Beyond these bounds a penalty no longer changes which tokens win (a score moved by 100 nats is
# out of the running), it only overflows float32 scores to inf and the softmax to nan.
MAX_PENALTY = 100.0
MIN_TEMPERATURE = 1e-5  # below it sampling is greedy anyway, and scores / T overflow to inf


def _check_repetition_penalty(penalty: float) -> None:
    if not _is_number(penalty) or not 1 / MAX_PENALTY <= penalty <= MAX_PENALTY:
        raise ValueError(
            f"repetition_penalty must be a number from {1 / MAX_PENALTY} to {MAX_PENALTY:.0f} "
            f"(1 means no penalty), got {penalty!r}"
        )


def _check_additive_penalty(name: str, penalty: float) -> None:
    if not _is_number(penalty) or not -MAX_PENALTY <= penalty <= MAX_PENALTY:
        raise ValueError(
            f"{name} must be a number from -{MAX_PENALTY:.0f} to {MAX_PENALTY:.0f} (0 means no "
            f"penalty; OpenAI's API allows -2 to 2), got {penalty!r}"
        )


def _check_prompt_length(prompt_length: int) -> None:
    if isinstance(prompt_length, bool) or not isinstance(prompt_length, int) or prompt_length < 0:
        raise ValueError(f"prompt_length must be a non-negative integer, got {prompt_length!r}")


# ---- penalties -----------------------------------------------------------------------------


def token_counts(input_ids: torch.Tensor, vocab_size: int, start: int = 0) -> torch.Tensor:
    """How often each vocabulary entry occurs in ``input_ids[:, start:]``: (B, T) -> (B, V).

    Ids outside [0, vocab_size) (padding such as -1, or an embedding table larger than the LM
    head) are not counted: they are sent to an extra bin that is dropped afterwards.
    """
    ids = input_ids[:, start:]
    outside = (ids < 0) | (ids >= vocab_size)
    ids = ids.masked_fill(outside, vocab_size)  # (B, T'): one spare bin for ignored ids
    counts = torch.zeros(ids.shape[0], vocab_size + 1, dtype=torch.long, device=ids.device)
    counts.scatter_add_(1, ids, torch.ones_like(ids))
    return counts[:, :vocab_size]  # (B, V)


class RepetitionPenalty(LogitsProcessor):
    """Make tokens already in ``input_ids`` less likely (HF ``RepetitionPenaltyLogitsProcessor``).

    A seen token's score s becomes s / penalty if s >= 0 and s * penalty if s < 0: with
    penalty > 1 both move the score down (1 = no change, values in (0, 1) reward repetition).
    The prompt counts as "seen", and a token is penalised once however often it occurred.
    """

    def __init__(self, penalty: float) -> None:
        _check_repetition_penalty(penalty)
        self.penalty = float(penalty)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen = token_counts(input_ids, scores.shape[-1]) > 0  # (B, V)
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(seen, penalised, scores)


class FrequencyPenalty(LogitsProcessor):
    """OpenAI's frequency penalty: score -= penalty * (times the token was generated so far).

    Only tokens after the first ``prompt_length`` positions count (the prompt is not the model's
    own repetition). Negative values encourage repetition.
    """

    def __init__(self, penalty: float, prompt_length: int = 0) -> None:
        _check_additive_penalty("frequency_penalty", penalty)
        _check_prompt_length(prompt_length)
        self.penalty = float(penalty)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        counts = token_counts(input_ids, scores.shape[-1], self.prompt_length)  # (B, V)
        return scores - self.penalty * counts.to(scores.dtype)


class PresencePenalty(LogitsProcessor):
    """OpenAI's presence penalty: score -= penalty once the token has been generated at all.

    Counts the same tokens as `FrequencyPenalty` (after ``prompt_length``), but the push is flat:
    it nudges the model towards new topics rather than punishing each repeat.
    """

    def __init__(self, penalty: float, prompt_length: int = 0) -> None:
        _check_additive_penalty("presence_penalty", penalty)
        _check_prompt_length(prompt_length)
        self.penalty = float(penalty)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        present = token_counts(input_ids, scores.shape[-1], self.prompt_length) > 0  # (B, V)
        return scores - self.penalty * present.to(scores.dtype)


# ---- warpers -------------------------------------------------------------------------------


class Temperature(LogitsProcessor):
    """Divide the scores by ``temperature`` (> 0) (HF ``TemperatureLogitsWarper``).

    softmax(s / T): T < 1 widens the gaps between scores (sharper, safer), T > 1 shrinks them
    (flatter, more surprising). T -> 0 tends to greedy, which callers implement as an argmax.
    """

    def __init__(self, temperature: float) -> None:
        _check_temperature(temperature, allow_zero=False)
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature


class TopK(LogitsProcessor):
    """Keep the ``top_k`` highest scores of each row (HF ``TopKLogitsWarper``).

    Anything strictly below the k-th largest score is filtered, so tokens tied with the k-th
    all survive. ``k`` is raised to ``min_tokens_to_keep`` and capped at the vocabulary size.
    """

    def __init__(
        self, top_k: int, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1
    ) -> None:
        _check_top_k(top_k)
        self.top_k = max(top_k, _check_min_tokens_to_keep(min_tokens_to_keep))
        self.filter_value = filter_value

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]  # (B, 1): the k-th largest score
        return scores.masked_fill(scores < kth, self.filter_value)


class TopP(LogitsProcessor):
    """Nucleus filtering (HF ``TopPLogitsWarper``).

    Sort the probabilities in *ascending* order and accumulate them; every token whose running
    total (itself and all less likely tokens) is <= 1 - top_p lies in the discarded tail. What is
    left is the smallest set of the most likely tokens with mass >= top_p. The ``min_tokens_to_keep``
    most likely tokens always survive.
    """

    def __init__(
        self, top_p: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1
    ) -> None:
        _check_top_p(top_p)
        self.top_p = float(top_p)
        self.filter_value = filter_value
        self.min_tokens_to_keep = _check_min_tokens_to_keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sorted_scores, order = torch.sort(scores, descending=False)  # (B, V), least likely first
        tail_mass = sorted_scores.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
        drop_sorted = tail_mass <= (1 - self.top_p)
        drop_sorted[..., -self.min_tokens_to_keep :] = False  # the most likely tokens stay
        drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
        return scores.masked_fill(drop, self.filter_value)


class MinP(LogitsProcessor):
    """Keep tokens with probability >= ``min_p`` * (probability of the top token) (HF
    ``MinPLogitsWarper``).

    A confident model (top token at 0.9) cuts everything below 0.9 * min_p; an unsure one keeps
    a wide set. The ``min_tokens_to_keep`` most likely tokens always survive.
    """

    def __init__(
        self, min_p: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1
    ) -> None:
        _check_min_p(min_p)
        self.min_p = float(min_p)
        self.filter_value = filter_value
        self.min_tokens_to_keep = _check_min_tokens_to_keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores, dim=-1)  # (B, V)
        threshold = self.min_p * probs.amax(dim=-1, keepdim=True)  # (B, 1)
        drop = probs < threshold
        k = min(self.min_tokens_to_keep, probs.shape[-1])
        drop.scatter_(-1, torch.topk(probs, k, dim=-1).indices, False)
        return scores.masked_fill(drop, self.filter_value)


# ---- putting it together -------------------------------------------------------------------


def validate_processor_settings(
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
) -> None:
    """Raise ValueError (naming the value and the allowed range) for meaningless settings."""
    _check_temperature(temperature, allow_zero=True)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)
    if min_p is not None:
        _check_min_p(min_p)
    if repetition_penalty is not None:
        _check_repetition_penalty(repetition_penalty)
    _check_additive_penalty("frequency_penalty", frequency_penalty)
    _check_additive_penalty("presence_penalty", presence_penalty)


def build_processors(
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    *,
    prompt_length: int = 0,
    min_tokens_to_keep: int = 1,
) -> LogitsProcessorList:
    """The processors for these settings, in Hugging Face's order; no-op settings are left out.

    Order: repetition penalty, frequency penalty, presence penalty, then (only when sampling,
    i.e. ``temperature > 0``) temperature, top-k, top-p, min-p. Like ``transformers``, a setting
    that changes nothing adds no processor (temperature 1, top_p 1, repetition_penalty 1, zero
    additive penalties). ``temperature=0`` means greedy: the warpers are left out because they
    never change which token has the highest score, while the penalties still apply.
    ``prompt_length`` is how many leading ids of ``input_ids`` the frequency and presence
    penalties ignore.
    """
    validate_processor_settings(
        temperature, top_k, top_p, min_p, repetition_penalty, frequency_penalty, presence_penalty
    )
    _check_prompt_length(prompt_length)
    keep = _check_min_tokens_to_keep(min_tokens_to_keep)
    processors = LogitsProcessorList()
    if repetition_penalty is not None and repetition_penalty != 1.0:
        processors.append(RepetitionPenalty(repetition_penalty))
    if frequency_penalty != 0.0:
        processors.append(FrequencyPenalty(frequency_penalty, prompt_length))
    if presence_penalty != 0.0:
        processors.append(PresencePenalty(presence_penalty, prompt_length))
    if temperature == 0:  # greedy
        return processors
    if temperature != 1.0:
        processors.append(Temperature(temperature))
    if top_k is not None:
        processors.append(TopK(top_k, min_tokens_to_keep=keep))
    if top_p is not None and top_p < 1.0:
        processors.append(TopP(top_p, min_tokens_to_keep=keep))
    if min_p is not None:
        processors.append(MinP(min_p, min_tokens_to_keep=keep))
    return processors


def check_samplable(scores: torch.Tensor) -> None:
    """Scores a softmax can turn into probabilities: no nan, no +inf, not every token at -inf.

    -inf is a filtered token (probability 0). Anything else non-finite comes from a model whose
    weights diverged (a learning rate far too high) or overflowed, and ``torch.multinomial``
    would fail with a message about probability tensors; this says what happened instead.
    """
    if bool(
        torch.isnan(scores).any()
        or torch.isposinf(scores).any()
        or torch.isneginf(scores).all(dim=-1).any()
    ):
        raise FloatingPointError(
            "the model's next-token scores are not finite numbers (nan or inf), so nothing can be "
            "sampled: its weights have diverged or overflowed (in training: lower --train.lr)"
        )


def choose_next(
    scores: torch.Tensor, greedy: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pick one token per row from processed scores (B, V): argmax, or a draw from the softmax.

    Returns ids of shape (B,). ``generator`` makes the draw reproducible.
    """
    if greedy:
        return scores.argmax(dim=-1)
    check_samplable(scores)
    probs = torch.softmax(scores.float(), dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
