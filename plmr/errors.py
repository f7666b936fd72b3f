"""The one error type for bad user input, shared by every layer.

The CLI turns an ``InputError`` into a one-line message and exit status 2; anything else is a bug and
keeps its traceback. ``plmr`` has no internal dependencies, so every package can import this.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from a user (file, flag, config): the message says what was wrong and what is allowed."""
