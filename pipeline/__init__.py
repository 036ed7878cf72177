"""Cats-vs-dogs competition pipeline: download, k-fold train, ensemble, submit."""

__version__ = "0.1.0"
