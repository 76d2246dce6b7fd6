"""buildlm.data: text in, batches out (stage 3 of the learning path).

- ``corpora.py``: the bundled corpora (Shakespeare, The Verdict, ...), usable offline;
- ``dataset.py``: a token stream -> (input, target) windows (`SlidingWindowDataset`, random
  windows);
- ``stream.py``: what every resumable batch stream shares: batch ``k`` depends only on ``(seed, k)``;
- ``batching.py``: batches of whole examples, shuffled per epoch and length-bucketed;
- ``shards.py``: inputs -> token shards on disk, streamed and in parallel (``buildlm prepare``);
- ``cuts.py``: where a document may be cut into blocks that tokenize to the same ids;
- ``work.py``: the blocks of text ``prepare`` hands its workers, from files or from readers;
- ``inputs.py``: what an input may name (files, folders, globs, ``hf:NAME``, corpora) and its reader;
- ``documents.py``: a document, the reading options (``--data.field`` ...), bad-record handling;
- ``read_json.py``: documents from JSONL and JSON, streamed;
- ``read_table.py``: documents from CSV, TSV and Parquet, streamed;
- ``read_hf.py``: documents from Hugging Face datasets (``hf:NAME``, or a local folder);
- ``compressed.py``: ``.gz`` and ``.zst`` files read as if they were not;
- ``records.py``: fine-tuning examples from JSONL, JSON, CSV, TSV or Parquet (also compressed),
  remembering where each came from;
- ``classify.py``: (text, label) examples, the label set, padded batches;
- ``instruct.py``: instruction examples, their prompt templates, the loss mask on response tokens;
- ``bundled_tasks.py``: the fine-tuning datasets made from the bundled Shakespeare;
- ``bundled_arith.py``: bundled multi-digit arithmetic, answered with the calculator tool
  (``instruct-tools``) or without it (``instruct-arith``);
- ``cli.py``: ``buildlm prepare``.
"""
