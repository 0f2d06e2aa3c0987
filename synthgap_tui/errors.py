"""Every error SynthGap reports to a user, in one place.

A ``UserError`` is a mistake the user can fix: the CLI prints it without a
traceback, the app shows it as a notice. Nothing here imports anything heavy.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; printed without a traceback."""


class UsageError(UserError):
    """The command was called wrongly (exit code 2, as argparse's own usage errors)."""


class SpecError(UserError):
    """A spec problem; ``str()`` is the message to show, one problem per line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class StoreError(UserError):
    """A problem with the run index that the user can act on."""


class StoreCorrupt(StoreError):
    """The index cannot be read; ``synthgap db rebuild`` recreates it."""


class RunNotFound(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def problem(e: Exception) -> str:
    """The one line a user sees for an error: a file operation's says what, where and
    (a full disk) the space left."""
    if isinstance(e, OSError):
        from runners.protocol import os_error_message

        return os_error_message(e)
    return str(e)
