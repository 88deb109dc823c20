"""Tests of the towers package: model, training data and loop, evaluation."""
