"""Errors a user can cause and fix; the CLI and the app print them as one line."""

from db.errors import LeuktuiError, UserError

__all__ = ["LeuktuiError", "UserError"]
