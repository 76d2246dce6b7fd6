"""An adapter that lets EleutherAI's lm-evaluation-harness evaluate a buildlm model.

lm-evaluation-harness (``pip install 'lm_eval>=0.4'``) defines hundreds of benchmarks as
*tasks*. Every task reduces to three kinds of request, which a model class answers:

- ``loglikelihood(context, continuation)`` -> ``(log p(continuation | context), is_greedy)``:
  multiple choice (HellaSwag, ARC, MMLU ...). buildlm's `buildlm.eval.scoring` does this.
- ``loglikelihood_rolling(text)`` -> ``log p(text)``: perplexity tasks (WikiText). The text is
  scored from an end-of-text token with the sliding window of `buildlm.eval.perplexity`, every
  token scored once.
- ``generate_until(context, {"until": [...], "max_gen_toks": N, ...})`` -> text: generative
  tasks (GSM8K ...). buildlm's `buildlm.infer.Engine` decodes, greedily unless the task asks
  for sampling, and stops at the ``until`` strings.

Importing this module registers the class under the name ``"buildlm"``, so::

    import buildlm.eval.harness  # noqa: F401  (registers "buildlm")
    import lm_eval
    lm_eval.simple_evaluate(model="buildlm", model_args="pretrained=runs/shakespeare",
                            tasks=["hellaswag"])

or on the command line ``buildlm eval harness --model DIR --tasks hellaswag``.
``pretrained`` is any folder `buildlm.infer.load.load_model` opens: a buildlm checkpoint or run
folder, or a Hugging Face model folder.

lm-eval's tasks download their data sets from the Hugging Face Hub. Without network access that
fails deep inside ``datasets`` with a fifty-line traceback; `evaluate` (what ``buildlm eval
harness`` calls) turns it into one line that names the cause and the fix.
"""

from __future__ import annotations

from typing import Any

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as err:  # the optional extra is not installed
    raise ImportError(
        "the lm-evaluation-harness adapter needs the lm_eval package: pip install 'lm_eval>=0.4' "
        "(or pip install 'buildlm[eval]')"
    ) from err

import torch

from buildlm.eval.perplexity import window_nats
from buildlm.eval.scoring import encode_pair, encode_text, score_continuations

# Exceptions (by class name, anywhere in their class hierarchy) that mean "the Hub could not be
# reached": the built-in ConnectionError that ``datasets`` raises, huggingface_hub's offline
# errors, and the connection errors and timeouts of requests and httpx.
_UNREACHABLE = {
    "ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectError",
    "ConnectTimeout", "Timeout", "TimeoutException", "TimeoutError",
}  # fmt: skip


def hub_unreachable(err: BaseException) -> BaseException | None:
    """The exception in ``err``'s chain (itself, its cause, its context) that says the Hugging
    Face Hub could not be reached, or ``None`` when the error is something else."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(cls.__name__ in _UNREACHABLE for cls in type(current).__mro__):
            return current
        current = current.__cause__ or current.__context__
    return None


def evaluate(**kwargs: Any) -> dict[str, Any]:
    """``lm_eval.simple_evaluate(**kwargs)``; a Hub that cannot be reached is a one-line
    ``ValueError`` with the fix, not a traceback from inside ``datasets``."""
    import lm_eval

    try:
        return lm_eval.simple_evaluate(**kwargs)
    except Exception as err:
        unreachable = hub_unreachable(err)
        if unreachable is None:
            raise
        text = str(unreachable).strip() or str(err).strip()
        reason = text.splitlines()[0] if text else type(unreachable).__name__
        tasks = ", ".join(str(t) for t in kwargs.get("tasks") or []) or "the tasks"
        raise ValueError(
            f"could not load the data of {tasks} ({type(unreachable).__name__}: {reason}): "
            "lm-eval needs network access to the Hugging Face Hub, or a local dataset "
            "cache; set HF_DATASETS_OFFLINE=1 with a cached copy (or give local task files "
            "with --include-path)"
        ) from None


@register_model("buildlm")
class BuildlmLM(LM):
    """A buildlm model as an lm-evaluation-harness ``LM``.

    Args:
        pretrained: the model folder.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``None``/``"auto"`` picks one.
        dtype: ``"auto"`` (the checkpoint's), ``"fp32"``, ``"bf16"``, ``"fp16"``.
        batch_size: sequences per forward pass (``"auto"`` is taken as 8).
        max_gen_toks: default budget for ``generate_until`` when a task gives none.
    """

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 8,
        max_gen_toks: int | str = 256,
        **_ignored: Any,  # e.g. max_batch_size, which lm-eval passes to every model
    ) -> None:
        super().__init__()
        from buildlm.device import parse_dtype, resolve_device
        from buildlm.infer.load import load_model

        resolved = resolve_device(device if device not in (None, "auto") else "auto")
        self.model, self.tokenizer = load_model(pretrained, resolved, parse_dtype(str(dtype)))
        if self.tokenizer is None:
            raise ValueError(f"{pretrained} has no tokenizer; lm-eval tasks are text")
        self._device = torch.device(resolved)
        self.batch_size = 8 if str(batch_size).startswith("auto") else int(batch_size)
        self.max_gen_toks = int(max_gen_toks)
        self.context_length = int(self.model.config.context_length)

    @property
    def device(self) -> torch.device:
        return self._device

    # --- loglikelihood ----------------------------------------------------------------------

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), is_greedy)`` for each ``(context, continuation)``."""
        pairs = [encode_pair(self.tokenizer, *req.args[:2]) for req in requests]
        scores = score_continuations(self.model, pairs, self.batch_size)
        return [(s.logprob, s.is_greedy) for s in scores]

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        """``log p(text)`` of each whole text: every token scored, from an end-of-text token.

        Windows of the full context advance by ``context - 1`` tokens, so each window scores
        the tokens after the one it shares with the previous window (lm-eval's own rolling
        windows keep the same single token of overlap).
        """
        eot = self.tokenizer.eot_token
        results = []
        for req in requests:
            ids = encode_text(self.tokenizer, req.args[0])
            if eot is not None:
                ids = [eot] + ids  # so the first real token is predicted too
            if len(ids) < 2:
                results.append(0.0)  # nothing to predict
                continue
            context = self.context_length
            nats, _ = window_nats(self.model, ids, context, context - 1, self.batch_size)
            results.append(-nats)
        return results

    # --- generation -------------------------------------------------------------------------

    def generate_until(self, requests: list[Any]) -> list[str]:
        """Continue each context until one of its ``until`` strings (not included) or the budget."""
        from buildlm.infer.engine import Engine
        from buildlm.infer.requests import SamplingParams

        engine = Engine(self.model, self.tokenizer, truncate_prompts=True)
        results = []
        for req in requests:
            context, gen_kwargs = req.args[0], dict(req.args[1] if len(req.args) > 1 else {})
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            do_sample = bool(gen_kwargs.pop("do_sample", False))
            temperature = float(gen_kwargs.pop("temperature", 0.0)) if do_sample else 0.0
            params = SamplingParams(
                max_new_tokens=int(gen_kwargs.pop("max_gen_toks", self.max_gen_toks)),
                temperature=temperature,
                top_p=gen_kwargs.pop("top_p", None) if do_sample else None,
                top_k=gen_kwargs.pop("top_k", None) if do_sample else None,
                stop=tuple(until),
                seed=0 if do_sample else None,
            )
            prompt = encode_text(self.tokenizer, context)
            if not prompt:
                prompt = [self.tokenizer.eot_token or 0]
            text = engine.generate([prompt], params)[0].text
            for stop in until:  # the engine stops at them already; cut again to be sure
                if stop:
                    text = text.split(stop)[0]
            results.append(text)
        return results
