"""The ``results.json`` document and its tables, without torch (read by ``sslkit-report``)."""

from __future__ import annotations


def fraction_label(fraction: float) -> str:
    """``0.01 -> "1%"``, ``0.1 -> "10%"``, ``0.125 -> "12.5%"``: the suffix of low-shot keys."""
    return f"{100 * fraction:g}%"
