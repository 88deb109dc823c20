"""Pipelines: Dagster definitions, the item vector index and the version registry."""
