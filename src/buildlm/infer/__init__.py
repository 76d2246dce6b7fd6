"""buildlm.infer: turning a trained model into text (stage 9 of the learning path).

- ``generate.py``: `generate`, the readable decode loop (the reference the Engine is tested on);
- ``processors.py``: penalties, temperature, top-k, top-p, min-p, and picking the next token;
- ``sampling.py``: from logits to a chosen token, written out plainly (temperature, top-k, top-p);
- ``kvcache.py``: the static key/value cache the Engine decodes with;
- ``requests.py``: `SamplingParams`, `Completion`, `EngineStats`: what a request asks and gets;
- ``row.py``: `Row`, one sequence being decoded: its settings, stop conditions, slide rule;
- ``tool_use.py``: `ToolUse`, a row's tool calls: run when the model writes one, the result fed
  back as if it were prompt text;
- ``batch.py``: `DecodeBatch`, the one decode loop: prefill, pick, advance, decode, rows
  joining and leaving (what the Engine and the server's scheduler both drive);
- ``engine.py``: `Engine`: batched, streaming generation with a KV cache over a `DecodeBatch`;
- ``speculative.py``: speculative decoding: drafts checked in one pass, the exact accept/reject
  rule, caches rolled back past rejected drafts;
- ``prompt_lookup.py``: `PromptLookup`, drafts copied from what followed the last match in the text;
- ``draft_model.py``: `DraftModel`, drafts from a smaller model with the same tokenizer;
- ``static_decode.py``: the fixed-shape decode step replayed as a CUDA graph on a GPU;
- ``weight_layout.py``: CPU weights re-laid out for matrix-vector products;
- ``float32_matmuls.py``: half-precision products over many rows in float32 on CPUs without
  16-bit instructions;
- ``beam_search.py``: beam search, equal to ``transformers``';
- ``detokenize.py``: ids to text as they stream, never splitting a character;
- ``conversation.py``: fitting a conversation into the context (oldest turns dropped);
- ``chat_format.py``: which chat format a tokenizer speaks;
- ``load.py``: a run, checkpoint or Hugging Face folder -> model and tokenizer;
- ``cli.py``, ``cli_args.py``, ``chat.py``: ``buildlm generate`` and ``buildlm chat``.
"""

from buildlm.infer.engine import Engine
from buildlm.infer.generate import generate
from buildlm.infer.requests import Completion, SamplingParams

__all__ = ["Completion", "Engine", "SamplingParams", "generate"]
