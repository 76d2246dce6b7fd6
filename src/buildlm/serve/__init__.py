"""buildlm.serve."""
