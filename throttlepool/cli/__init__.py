"""The ``throttlepool`` command line: ``run``, ``status``, ``export``, ``sim``, ``demo``."""

from __future__ import annotations

from .app import cli, main

__all__ = ["cli", "main"]
