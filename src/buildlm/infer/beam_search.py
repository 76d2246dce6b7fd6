"""Beam search: keep the ``num_beams`` most probable partial outputs instead of one.

Greedy decoding commits to the single most likely token at every step, so one early choice that
looks good locally can lead to a poor sentence overall. Beam search keeps ``num_beams``
hypotheses ("beams") alive. Every step each beam is extended by every vocabulary entry, each
candidate is scored by the *sum of the log-probabilities* of its generated tokens (the log of
the probability of the whole continuation), and the best candidates survive. It is a
deterministic search for a high-probability output, good for translation or summaries and worse
than sampling for open-ended text (it favours bland, repetitive continuations).

This implementation follows Hugging Face ``transformers``' beam search (``model.generate(
num_beams=k, do_sample=False)``; the vectorised ``GenerationMixin._beam_search`` of
transformers 5.x) token for token, because its details decide which output wins:

- Each step keeps the best ``2 * num_beams`` candidates. At most ``num_beams`` of them can end
  in EOS (each beam contributes one EOS candidate at most), so at least ``num_beams`` unfinished
  candidates always remain to continue the search.
- A candidate that ends in EOS (or reaches the length limit) becomes a *finished hypothesis*,
  but only if it ranks among the first ``num_beams`` candidates of the step. Its final score is
  ``sum_logprobs / n ** length_penalty``, where ``n`` counts the *generated* tokens (EOS
  included, prompt excluded). length_penalty > 0 divides by a larger number for longer outputs,
  so (log-probabilities being negative) it favours longer ones; 0 compares raw sums; < 0 favours
  shorter ones. The best ``num_beams`` finished hypotheses are kept per row.
- Stopping (per row, then for the batch):
  ``early_stopping=True``: stop once ``num_beams`` hypotheses have finished.
  ``early_stopping=False``: stop once the best running beam, scored as if it finished now, can
  no longer beat the worst kept hypothesis (a heuristic: scores may still improve later).
  ``early_stopping="never"``: like False, but with length_penalty > 0 the running beam is scored
  as if it ran to ``max_new_tokens`` (the best it could possibly get), the canonical rule.
  Without ``eos_id`` every hypothesis runs to ``max_new_tokens``.
- The answer for each row is its best finished hypothesis. Rows are returned as one tensor
  as long as the longest answer; shorter answers are padded with ``eos_id``.

Scores are float32 and unfinished or barred candidates are pushed down by adding -1e9, exactly
as transformers does, so that ties and near-ties resolve the same way.

Each step here runs the model over every beam's whole sequence (simple, no cache). A key/value
cache can be passed: it must hold the ``B * num_beams`` rows and offer ``reorder(beam_indices)``,
which makes row i a copy of row ``beam_indices[i]`` (beams that survive may come from any parent
beam); the model is then fed only the newest token of each beam.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from buildlm.infer.processors import LogitsProcessorList

NEG = -1.0e9  # "impossible" score; large but finite so sums and divisions stay well defined


class ReorderableCache(Protocol):
    """What beam search needs from a key/value cache besides what the model uses."""

    def reorder(self, beam_indices: torch.Tensor) -> None:
        """Row i becomes a copy of row ``beam_indices[i]`` (a LongTensor of shape (B*K,))."""
        ...


def _gather_beams(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Select beams along dim 1: t (B, N, ...) and idx (B, M) -> (B, M, ...)."""
    while idx.dim() < t.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(t, idx, dim=1)


def _validate(
    idx: torch.Tensor,
    max_new_tokens: int,
    num_beams: int,
    length_penalty: float,
    early_stopping: bool | str,
    eos_id: int | None,
    vocab_size: int,
) -> None:
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive integer, got {num_beams!r}")
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if (
        isinstance(length_penalty, bool)
        or not isinstance(length_penalty, (int, float))
        or not math.isfinite(length_penalty)
    ):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")
    if not (isinstance(early_stopping, bool) or early_stopping == "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if eos_id is not None and (
        isinstance(eos_id, bool) or not isinstance(eos_id, int) or not 0 <= eos_id < vocab_size
    ):
        raise ValueError(f"eos_id must be None or a token id in [0, {vocab_size}), got {eos_id!r}")
    if idx.dim() != 2 or idx.shape[0] == 0 or idx.shape[1] == 0:
        raise ValueError(f"idx must be a non-empty (batch, time) tensor, got {tuple(idx.shape)}")
    if idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")


def beam_search(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    num_beams: int,
    length_penalty: float = 1.0,
    early_stopping: bool | Literal["never"] = False,
    eos_id: int | None = None,
    *,
    processors: LogitsProcessorList | None = None,
    cache: ReorderableCache | None = None,
) -> torch.Tensor:
    """The best beam-search continuation of each row of ``idx`` (B, T): ids (B, T + n).

    n <= max_new_tokens is the length of the longest answer in the batch; shorter answers end in
    ``eos_id`` and are padded with it. ``processors`` (see `buildlm.infer.processors`, e.g. a
    repetition penalty) rewrite each step's log-probabilities before they are added, as in
    transformers. ``cache`` is an optional key/value cache (see the module docstring); without
    one the model only ever sees the last ``model.config.context_length`` tokens.
    """
    vocab_size = model.config.vocab_size
    _validate(idx, max_new_tokens, num_beams, length_penalty, early_stopping, eos_id, vocab_size)
    device = next(model.parameters()).device
    idx = idx.to(device=device, dtype=torch.long)
    if max_new_tokens == 0:
        return idx.clone()
    b, t = idx.shape
    k = num_beams
    n_cand = 2 * k  # candidates kept per step: enough that k unfinished ones always remain
    max_len = t + max_new_tokens
    context = model.config.context_length
    pad = eos_id if eos_id is not None else 0  # padding only ever shows after an EOS

    # Running beams: the k best unfinished hypotheses of each row.
    running = torch.full((b, k, max_len), pad, dtype=torch.long, device=device)  # (B, K, L)
    running[:, :, :t] = idx[:, None, :]
    # All beams start as the same prompt; only beam 0 may expand at first, or the first step
    # would pick the same token k times.
    running_scores = torch.zeros(b, k, device=device)  # (B, K): summed log-probs
    running_scores[:, 1:] = NEG
    # Finished hypotheses: the k best per row, sorted best first, with length-penalised scores.
    finished = running.clone()  # (B, K, L)
    finished_scores = torch.full((b, k), NEG, device=device)  # (B, K)
    finished_len = torch.zeros(b, k, dtype=torch.long, device=device)  # generated tokens
    is_finished = torch.zeros(b, k, dtype=torch.bool, device=device)  # (B, K): slot is real
    can_improve = torch.ones(b, 1, dtype=torch.bool, device=device)  # (B, 1)
    first_k = torch.arange(n_cand, device=device) < k  # (2K,): the top k candidates of a step
    row_offset = torch.arange(b, device=device)[:, None] * k  # (B, 1): flat row of beam 0

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for step in range(max_new_tokens):
                cur_len = t + step
                flat = running[:, :, :cur_len].reshape(b * k, cur_len)  # (B*K, cur_len)
                if cache is None:
                    logits = model(flat[:, -context:])[:, -1, :]  # (B*K, V)
                else:  # the cache holds everything but the newest token (all of it at step 0)
                    logits = model(flat if step == 0 else flat[:, -1:], cache)[:, -1, :]
                log_probs = F.log_softmax(logits.float(), dim=-1)  # (B*K, V)
                if processors is not None:
                    log_probs = processors(flat, log_probs)
                v = log_probs.shape[-1]

                # Score every (beam, token) extension; keep the best 2K of each row.
                total = log_probs.reshape(b, k, v) + running_scores[:, :, None]  # (B, K, V)
                cand_scores, cand_flat = torch.topk(total.reshape(b, k * v), n_cand)  # (B, 2K)
                cand_beam = cand_flat // v  # (B, 2K): which running beam it extends
                cand_token = cand_flat % v  # (B, 2K): with which token
                cand = _gather_beams(running, cand_beam)  # (B, 2K, L)
                cand[:, :, cur_len] = cand_token
                done = torch.full_like(cand_token, cur_len + 1 >= max_len, dtype=torch.bool)
                if eos_id is not None:
                    done |= cand_token == eos_id  # (B, 2K): candidate hit a stop condition

                # The next running beams: the best K candidates that have not finished.
                keep_scores = cand_scores + done.to(torch.float32) * NEG  # (B, 2K)
                keep = torch.topk(keep_scores, k).indices  # (B, K)
                running = _gather_beams(cand, keep)  # (B, K, L)
                running_scores = _gather_beams(keep_scores, keep)  # (B, K)
                parent = _gather_beams(cand_beam, keep)  # (B, K)

                # New finished hypotheses: only among the top K candidates, and only while the
                # row is still open. Then keep the best K of old and new.
                just_done = done & first_k[None, :]  # (B, 2K)
                final = cand_scores / ((cur_len + 1 - t) ** length_penalty)
                row_full = is_finished.all(dim=-1, keepdim=True) & (early_stopping is True)
                final += row_full.to(torch.float32) * NEG
                final += (~can_improve).to(torch.float32) * NEG
                final += (~just_done) * NEG
                merged_scores = torch.cat([finished_scores, final], dim=1)  # (B, 3K)
                best = torch.topk(merged_scores, k).indices  # (B, K)
                finished = _gather_beams(torch.cat([finished, cand], dim=1), best)
                finished_scores = _gather_beams(merged_scores, best)
                new_len = torch.full_like(cand_token, step + 1)
                finished_len = _gather_beams(torch.cat([finished_len, new_len], dim=1), best)
                is_finished = _gather_beams(torch.cat([is_finished, just_done], dim=1), best)

                if cache is not None:  # each surviving beam continues its parent's cache row
                    cache.reorder((parent + row_offset).reshape(-1))  # (B*K,)

                # Can a running beam still beat the worst kept hypothesis of its row?
                generated = cur_len + 1 - t
                if early_stopping == "never" and length_penalty > 0.0:
                    best_len = max_new_tokens  # the most a running beam could still reach
                else:
                    best_len = generated
                best_running = running_scores[:, :1] / (best_len**length_penalty)  # (B, 1)
                worst_kept = torch.where(
                    is_finished, finished_scores.min(dim=1, keepdim=True).values, NEG
                )  # (B, K); -1e9 while a slot is still empty
                can_improve = can_improve & (best_running > worst_kept).any(-1, keepdim=True)

                all_rows_full = bool(is_finished.all()) and early_stopping is True
                if not bool(can_improve.any()) or all_rows_full or bool(done.all()):
                    break
    finally:
        model.train(was_training)

    out_len = t + int(finished_len[:, 0].max())
    return finished[:, 0, :out_len]  # (B, T + n): each row's best hypothesis
