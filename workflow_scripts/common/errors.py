"""Errors raised for bad user input; the CLIs print them without a traceback."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input (file, line or config key); the message names where the problem is."""
