"""buildlm: build a large language model from scratch, block by block, then really use it.

The package mirrors the learning path: ``tokenizer`` (stage 2), ``data`` (stage 3),
``model`` (stages 4-5), ``train`` (stages 6 and 8), ``hub`` (stage 7), ``infer`` (stage 9).
"""

__version__ = "0.1.0"
