"""The project's errors: one root, and a branch for what a user can cause and fix.

A ``UserError`` is printed as one line naming the file, row, run, field or service at fault (exit
status 1 from the CLI, a notification in the app). Anything else that escapes is a bug and
raises with its traceback.
"""


class LeuktuiError(Exception):
    """Every error the project raises on purpose."""


class UserError(LeuktuiError, ValueError):
    """Its message names the file, row, run or field at fault."""
