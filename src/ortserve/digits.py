"""Reading a number that a person or a client wrote as text (a version, a length, a directory name)."""

from __future__ import annotations


def is_decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '¹' and '²', which int() refuses."""
    return text.isascii() and text.isdigit()
