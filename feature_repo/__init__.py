"""Data and features: the contract's tables, their loaders, and the Feast repository built on them.

The Feast definitions (`entities.py`, `*_features.py`, `feature_services.py`) sit at this folder's top
level and are loaded by `feast apply`; the Python modules that prepare data are listed in `.feastignore`.
"""
