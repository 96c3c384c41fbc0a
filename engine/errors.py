"""Errors a user can cause and fix; the CLI and the app print them as one line."""


class UserError(ValueError):
    """Its message names the file, row, run or field at fault."""
