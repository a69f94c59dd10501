"""Evaluation: targets, cassettes, the gap catalogue, the in-process suite runner and its report."""
