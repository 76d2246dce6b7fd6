"""buildlm.tokenizer."""
