"""The workspace folder: the database file, one folder per run, caches and exports."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from db.errors import UserError

DEFAULT_HOME = "leuktui-home"
DB_FILE = "leuktui.db"


class WorkspaceError(UserError, OSError):
    """The workspace folder cannot be used; the message names it."""


@dataclass(frozen=True)
class Workspace:
    """Where everything of one workspace lives.

    The home is ``--home DIR``, else ``$LEUKTUI_HOME``, else ``./leuktui-home``. ``$LEUKTUI_DB``
    may name another SQLAlchemy URL (for example a team's PostgreSQL) for the database.
    """

    home: Path

    @classmethod
    def resolve(cls, home: str | Path | None = None) -> Workspace:
        chosen = home or os.environ.get("LEUKTUI_HOME") or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def db_url(self) -> str:
        return os.environ.get("LEUKTUI_DB") or f"sqlite:///{self.home / DB_FILE}"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    def run_dir(self, run_id: int) -> Path:
        return self.runs_dir / str(run_id)

    def checkpoint_path(self, run_id: int, which: str) -> Path:
        return self.run_dir(run_id) / "checkpoints" / f"{which}.pt"

    def log_path(self, run_id: int) -> Path:
        return self.run_dir(run_id) / "train.log"

    def ensure(self) -> Workspace:
        """Create the folder, or say in one line why it cannot be used."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise WorkspaceError(f"{self.home}: workspace folder is not writable ({exc.strerror or exc})") from None
        return self
