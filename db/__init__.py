"""The experiment database: schema, engine set-up, migrations and the typed query API.

Imports neither torch nor textual.
"""

from db import states
from db.api import Database, NotFound
from db.session import DatabaseError
from db.workspace import Workspace, WorkspaceError

__all__ = ["Database", "DatabaseError", "NotFound", "Workspace", "WorkspaceError", "states"]
