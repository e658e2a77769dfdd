"""Learned baselines: online and offline models, their features and persistence."""
