"""buildlm.data: text in, batches out (stage 3 of the learning path).

- ``corpora.py``: the bundled corpora (Shakespeare, The Verdict, ...), usable offline;
- ``dataset.py``: a token stream -> (input, target) windows (`SlidingWindowDataset`, random
  windows);
- ``stream.py``: what every resumable batch stream shares: batch ``k`` depends only on ``(seed, k)``;
- ``batching.py``: batches of whole examples, shuffled per epoch and length-bucketed;
- ``shards.py``: text files -> token shards on disk, streamed and in parallel (``buildlm prepare``);
- ``records.py``: fine-tuning examples from JSONL, JSON, CSV or TSV, remembering where each came from;
- ``classify.py``: (text, label) examples, the label set, padded batches;
- ``instruct.py``: instruction examples, their prompt templates, the loss mask on response tokens;
- ``bundled_tasks.py``: the fine-tuning datasets made from the bundled Shakespeare;
- ``bundled_arith.py``: bundled multi-digit arithmetic, answered with the calculator tool
  (``instruct-tools``) or without it (``instruct-arith``);
- ``cli.py``: ``buildlm prepare``.
"""
