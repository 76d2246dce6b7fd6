"""buildlm.eval: measure a model.

- `metrics`: perplexity and bits per byte from a loss (training reports the same);
- `perplexity`: sliding-window loss, perplexity and bits per byte of a long text;
- `scoring`: the log-likelihood of a continuation given a context, batched;
- `choice_items`: a multiple-choice item (HellaSwag format) and the JSONL file of them;
- `choice`: how a model answers them, by likelihood (acc, acc_norm);
- `bundled`: ``shakespeare-next-line``, a multiple-choice set made from the bundled corpus;
- `report`: several models side by side in one Markdown table;
- `harness`: the model class for EleutherAI's lm-evaluation-harness (needs ``lm_eval``);
- `exact_match`, `classification`: the checks the fine-tuning stages report;
- `answers`: a numeric answer read out of text (``#### 42``, ``\\boxed{3/4}``, "the answer is");
- `verifiers`: programs that check an answer and give a reward (exact, numeric; GRPO, best-of-N);
- `answer_items`: questions with checkable answers (``instruct-tasks`` or a file), as prompts;
- `pass_at_k`: pass@k (Chen et al.'s unbiased estimator) and majority@k (self-consistency);
- `best_of_n`: accuracy against the number of sampled answers (greedy, pass@k, majority@k);
- `cli`: ``buildlm eval perplexity | choice | report | harness | answers``.

The names below are imported on first use, so ``import buildlm.eval.exact_match`` (or any one
module) does not load the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ChoiceItem": "choice_items",
    "ChoiceResult": "choice",
    "load_choice_items": "choice",
    "score_choices": "choice",
    "PerplexityResult": "perplexity",
    "evaluate_perplexity": "perplexity",
    "perplexity_of_ids": "perplexity",
    "sliding_windows": "perplexity",
    "Score": "scoring",
    "Verdict": "verifiers",
    "Verifier": "verifiers",
    "verifier_for": "verifiers",
    "encode_pair": "scoring",
    "score_continuations": "scoring",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'buildlm.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"buildlm.eval.{_EXPORTS[name]}"), name)
