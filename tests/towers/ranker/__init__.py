"""Tests of the re-ranker package: features, model, LightGBM predict adapter and training."""
