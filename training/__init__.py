"""Researcher tools: synthetic data, training, evaluation and export of self-describing checkpoints."""
