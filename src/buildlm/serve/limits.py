"""The limits a server puts on every request, so no single client can take the machine down.

An HTTP API is open to whatever a client sends: a 10 MB body, a prompt longer than the model can
read, ``max_tokens=10**9``, ``n=1000``. Each of those is cheap to ask for and expensive to serve,
so the server checks them *before* any work is done and answers a clear 4xx error instead.
The numbers are set by ``buildlm serve`` flags; the defaults suit a small model on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for.

    ``max_prompt_tokens=None`` means the model's context length (a prompt must always fit the
    context: the engine refuses longer ones). ``default_max_tokens`` is used when a request
    names no ``max_tokens``; it is capped by ``max_tokens``. ``max_batch_size`` bounds how many
    rows (prompts x ``n``) run together in one batch, and so how many one request may ask for.
    ``max_connections``, ``max_queued`` and ``body_timeout_s`` bound what the server holds for
    all clients together (`buildlm.serve.admission`).
    """

    max_prompt_tokens: int | None = None
    max_tokens: int = 512
    default_max_tokens: int = 256
    max_body_bytes: int = 1_000_000
    max_n: int = 8
    max_batch_size: int = 32
    max_temperature: float = 2.0
    max_attention_tokens: int = 256
    max_connections: int = 128  # requests read or answered at once; more get 429
    max_queued: int = 256  # requests waiting for a place in the batch; more get 429
    body_timeout_s: float = 10.0  # a request body must arrive within this; else 408

    def __post_init__(self) -> None:
        if not (isinstance(self.body_timeout_s, (int, float)) and self.body_timeout_s > 0):
            raise ValueError(f"body_timeout_s must be positive, got {self.body_timeout_s!r}")
        for name in ("max_tokens", "default_max_tokens", "max_body_bytes", "max_n",
                     "max_batch_size", "max_attention_tokens", "max_connections",
                     "max_queued"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be positive, got {self.max_prompt_tokens}")
        if self.max_n > self.max_batch_size:
            raise ValueError(
                f"max_n={self.max_n} exceeds max_batch_size={self.max_batch_size}; one request's "
                "n choices must fit one batch"
            )
        if not self.max_temperature >= 0:
            raise ValueError(f"max_temperature must be >= 0, got {self.max_temperature}")

    def prompt_limit(self, context_length: int) -> int:
        """The most tokens a prompt may have: the flag, and never more than the context."""
        if self.max_prompt_tokens is None:
            return context_length
        return min(self.max_prompt_tokens, context_length)
