"""The language-modelling metrics that training and evaluation both report.

- **Loss** (nats per token): the mean cross-entropy of the next-token predictions.
- **Perplexity**: ``exp(loss)``, "as unsure as a uniform choice among this many tokens".
- **Bits per byte**: the loss converted to bits and spread over the UTF-8 bytes of the text.
  Loss and perplexity depend on the tokenizer (a token of a 50k vocabulary holds more text
  than one of a 1k vocabulary); bits per byte does not, so it compares any two models.

The trainer's validation (`buildlm.train.trainer`) and ``buildlm eval`` use these same functions.
"""

from __future__ import annotations

import math


def perplexity(loss: float) -> float:
    """``exp(loss)``, capped so a diverged run prints ``inf`` rather than overflowing."""
    return math.exp(loss) if loss < 700 else float("inf")


def bits_per_byte(loss_nats: float, n_tokens: int, n_bytes: int) -> float:
    """Cross-entropy per UTF-8 byte in bits: ``loss * tokens / (bytes * ln 2)``."""
    if n_bytes <= 0:
        raise ValueError(f"bits per byte needs a positive byte count, got {n_bytes}")
    return loss_nats * n_tokens / (n_bytes * math.log(2))
