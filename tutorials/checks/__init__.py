"""Checks for the course's exercises: the learner's piece against buildlm's own."""
