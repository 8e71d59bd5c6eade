"""``throttlepool report``: one self-contained HTML file (inline SVG charts, no script, no
network) about one run of a checkpoint database."""

from __future__ import annotations

import os

from .data import RunData, load
from .page import render

__all__ = ["RunData", "load", "render", "report_html"]


def report_html(db: str | os.PathLike[str], run: str) -> str:
    """The report of run ``run`` (name or id) in checkpoint ``db``, as HTML text."""
    return render(load(db, run))
