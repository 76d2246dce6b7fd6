"""buildlm.infer."""
