"""buildlm.tokenizer: turning text into token ids and back (stage 2 of the learning path).

:class:`Tokenizer` is a byte-level BPE, trained here or loaded from GPT-2, tiktoken or Hugging
Face files; :class:`SentencePieceBPE` is the SentencePiece-style BPE of Llama 2, Mistral and Gemma
(``Tokenizer.load`` returns one for such a tokenizer.json); :class:`CharTokenizer` and
:class:`WordTokenizer` are the small tokenizers a learner meets first. One concept per file:

- ``simple.py``: character and word tokenizers
- ``bpe.py``: the ``Tokenizer`` class, its plain encode (one chunk, a text, special tokens) first
- ``patterns.py``: the pre-tokenization regexes that cut text into chunks
- ``merge.py``: the merge loop on one chunk (lowest rank first), its batched numpy form, and
  merges recovered from ranks
- ``fast_encode.py``: encoding's speed machinery (chunk cache, garbage-collector pause, lock,
  process pool), the same ids as the plain loop
- ``training.py``: learning merges from text (``train_chunks.py``: counting chunks;
  ``train_merges.py``: the merge loop)
- ``files.py``: reading the files a user names (gzip, UTF-8, JSON)
- ``openai_files.py``: GPT-2's ``encoder.json`` + ``vocab.bpe`` and tiktoken rank files
- ``specials.py``: which special tokens a text may contain (allowed / disallowed), shared by both
- ``hf_json.py``: Hugging Face ``tokenizer.json`` (byte-level), read and written
- ``sentencepiece_bpe.py``: the ``SentencePieceBPE`` class: byte-fallback BPE from a tokenizer.json
- ``hf_pipeline.py``: its text steps: normalizers, pre-tokenizers and the decoder (``"▁"`` <-> space)
- ``added_tokens.py``: its added tokens, matched whole before the model sees the text
- ``pair_merge.py``: its merge loop, by pair rank (plain, and a heap for long words)
- ``buildlm_json.py``: buildlm's own readable tokenizer file
- ``chat_templates.py``: a conversation -> the exact prompt text of a chat model (Llama 3,
  ChatML, Gemma), kept with the tokenizer as Hugging Face keeps its templates
- ``cli.py``: the ``buildlm tokenizer`` command
"""

from buildlm.tokenizer.bpe import Tokenizer
from buildlm.tokenizer.sentencepiece_bpe import SentencePieceBPE
from buildlm.tokenizer.simple import CharTokenizer, WordTokenizer

__all__ = ["CharTokenizer", "SentencePieceBPE", "Tokenizer", "WordTokenizer"]
