"""The Dagster definitions, one module per stage; `pipelines/definitions.py` loads them all."""
