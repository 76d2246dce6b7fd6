"""Stage 2 of the learning path: turning text into token ids and back.

- :class:`Tokenizer` (``bpe.py``): byte-level BPE, trained here (``training.py``) or loaded from
  GPT-2, tiktoken or Hugging Face ``tokenizer.json`` files (``formats.py``).
- :class:`CharTokenizer`, :class:`WordTokenizer` (``simple.py``): the small tokenizers a learner
  meets first.
- ``patterns.py``: the pre-tokenization regexes; ``merge.py``: the merge loop; ``formats.py``: files.
"""

from buildlm.tokenizer.bpe import Tokenizer
from buildlm.tokenizer.simple import CharTokenizer, WordTokenizer

__all__ = ["CharTokenizer", "Tokenizer", "WordTokenizer"]
