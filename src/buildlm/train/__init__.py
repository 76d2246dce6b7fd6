"""buildlm.train."""
