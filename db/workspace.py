"""The workspace folder: the database file, one folder per run, caches and exports."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from db.errors import UserError

# The commands that read a workspace or a database this process cannot write, writing nothing.
READERS = "ls, show, queue ls, scheduler status, compare, ablation, submissions and report -o DIR"

CAM_FOLDER = "cam"  # a run folder's Grad-CAM maps
# How a map is drawn (engine.cam.target_layer): a new rule, new maps, never an older rule's from the cache.
CAM_RULE = "stage>=4x4"

DEFAULT_HOME = "leuktui-home"
DB_FILE = "leuktui.db"
RUN_OWNER_FILE = "owner"  # in runs/<id>/: which run record the folder belongs to


def can_write_file(path: Path) -> bool:
    """Whether this process can write ``path`` (there, or to be made) and the folder it is in."""
    return os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


class WorkspaceError(UserError, OSError):
    """The workspace folder cannot be used; the message names it."""


# Who may read what a workspace holds: $LEUKTUI_SHARE picks one.
FILE_MODES = {
    "private": 0o077,  # the default: only the user (checkpoints, logs and the database are theirs)
    "group": 0o007,    # the user's group too (a lab sharing one workspace); others nothing
}


def apply_file_mode() -> str:
    """Set this process's umask for every file and folder we create; returns the mode's name."""
    name = os.environ.get("LEUKTUI_SHARE") or "private"
    if name not in FILE_MODES:
        raise WorkspaceError(f"LEUKTUI_SHARE={name!r}: expected one of {', '.join(FILE_MODES)}")
    os.umask(FILE_MODES[name])
    return name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_permissions() -> int:
    """The mode a new file gets under this process's umask (0o600 private, 0o660 group)."""
    return 0o666 & ~_umask()


def folder_permissions() -> int:
    """The mode a new folder gets under this process's umask (0o700 private, 0o770 group)."""
    return 0o777 & ~_umask()


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

    def export_path(self, run_ids: list[int], tta: str, *, name: str | None = None) -> Path:
        """Where a submission is written without ``-o``: ``run-3-single.csv``, ``ensemble-3-7-five.csv``
        (``tta`` is the eval mode's key), or ``name-five.csv`` (``final-3``: run 3's final fit),
        numbered ``-2``, ``-3`` ... past the files already there, so an export never replaces an
        earlier one; the CLI and the app's dialog name it alike."""
        name = name or (f"run-{run_ids[0]}" if len(run_ids) == 1 else "ensemble-" + "-".join(map(str, run_ids)))
        path = self.exports_dir / f"{name}-{tta}.csv"
        number = 2
        while path.exists():
            path = self.exports_dir / f"{name}-{tta}-{number}.csv"
            number += 1
        return path

    def run_dir(self, run_id: int) -> Path:
        return self.runs_dir / str(run_id)

    def run_dir_owner(self, run_id: int) -> str | None:
        """What ``runs/<id>/owner`` says (None: no owner file), read as a regular file only."""
        from db.files import read_regular_text

        try:
            return read_regular_text(self.run_dir(run_id) / RUN_OWNER_FILE).strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):  # a FIFO, a folder, a link to a device, not text: not an owner
            return ""

    def claim_run_dir(self, run_id: int, owner: str, *, fresh: bool) -> Path | None:
        """Make ``runs/<id>`` the folder of the run record ``owner`` names (``Run.owner``).

        A folder left by another record with the same id (the database was replaced or emptied),
        or any folder already there for a ``fresh`` run (no epochs yet, no owner of its own), is
        moved aside to ``runs/<id>.orphan-<time>``, never trained on, resumed from or written
        into; returns where it went. A run with epochs adopts a folder without an owner file
        (one made before owners were recorded)."""
        folder = self.run_dir(run_id)
        current = self.run_dir_owner(run_id) if folder.is_dir() and not folder.is_symlink() else ""
        if current == owner:
            return None
        aside = None
        if folder.exists() or folder.is_symlink():
            if current is None and not fresh:
                current = owner  # a folder from before owners were recorded, of this run
            else:
                aside = folder.with_name(f"{run_id}.orphan-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
                folder.rename(aside)
        folder.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW and O_EXCL: nothing planted in the folder's place is written through.
        mark = folder / RUN_OWNER_FILE
        if current != owner or not mark.exists():
            with contextlib.suppress(FileNotFoundError):
                mark.unlink()
            descriptor = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file_permissions())
            with os.fdopen(descriptor, "w") as out:
                out.write(owner + "\n")
        return aside

    def owns_run_dir(self, run_id: int, owner: str) -> bool:
        """Whether ``runs/<id>`` is this record's to delete: its owner file names it, or it has
        none (a folder from before owners were recorded)."""
        return self.run_dir_owner(run_id) in (owner, None)

    def checkpoint_path(self, run_id: int, which: str) -> Path:
        return self.run_dir(run_id) / "checkpoints" / f"{which}.pt"

    def cam_folder(self, run_id: int, checkpoint: str) -> Path:
        """Where the Grad-CAM maps of a checkpoint go: named by the checkpoint file's identity (its
        inode, size and mtime; a new best checkpoint is a new file, ``os.replace`` of a temporary
        one), so a new checkpoint gets new maps and an unchanged one reuses its files."""
        status = self.checkpoint_path(run_id, checkpoint).stat()
        identity = f"{status.st_ino}:{status.st_size}:{status.st_mtime_ns}:{CAM_RULE}"
        stamp = hashlib.sha256(identity.encode()).hexdigest()[:12]
        return self.run_dir(run_id) / CAM_FOLDER / f"{checkpoint}-{stamp}"

    @staticmethod
    def cam_name(ident: str, label: int) -> str:
        """The file of one image's map of class ``label`` in its checkpoint's ``cam_folder``."""
        return f"{hashlib.sha256(ident.encode()).hexdigest()[:16]}-{label}.png"

    def log_path(self, run_id: int) -> Path:
        return self.run_dir(run_id) / "train.log"

    def torchrun_dir(self, run_id: int) -> Path:
        """torchrun's folder for a run of several processes (``--log-dir``: a folder a launch, in
        it one an attempt and one a rank), kept with the run rather than left in the system's
        temporary folder."""
        return self.run_dir(run_id) / "torchrun"

    def share_torchrun_dir(self, run_id: int) -> None:
        """Give torchrun's folders this workspace's folder mode: it makes them with ``mkdtemp``,
        owner-only whatever the umask, and a lab sharing the workspace (``LEUKTUI_SHARE=group``)
        could not delete the run's folder."""
        mode = folder_permissions()
        for folder, _subfolders, _files in os.walk(self.torchrun_dir(run_id)):
            with contextlib.suppress(OSError):
                os.chmod(folder, mode)

    @property
    def marks_path(self) -> Path:
        """The runs marked in the app (a JSON list of ids): ``leuktui report`` reports on them."""
        return self.home / "marked.json"

    def marked_runs(self) -> list[int]:
        """The ids marked in the app, or none when nothing is marked or the file is unreadable."""
        import json

        from db.files import read_regular_text

        try:
            ids = json.loads(read_regular_text(self.marks_path))
        except (OSError, ValueError):  # missing, unreadable, a FIFO or a folder in its place, not JSON
            return []
        return [i for i in ids if isinstance(i, int)] if isinstance(ids, list) else []

    def heartbeat_path(self, run_id: int) -> Path:
        """Touched by the run's worker while its training moves; its age is the worker's silence."""
        return self.run_dir(run_id) / "heartbeat"

    def writable(self) -> bool:
        """Whether this process can write the folder and the database file in it (not on a
        read-only file system, nor in a workspace shared to read only)."""
        return can_write_file(self.home / DB_FILE)

    def ensure(self) -> Workspace:
        """Create the folder, or say in one line why it cannot be used."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            reads = f"; {READERS} read it as it is" if self.home.is_dir() else ""
            raise WorkspaceError(f"{self.home}: workspace folder is not writable ({exc.strerror or exc}){reads}") from None
        for folder in (self.runs_dir, self.cache_dir, self.exports_dir):  # a file in a folder's place fails every run later
            if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
                raise WorkspaceError(f"{folder}: not a folder, where the workspace keeps its {folder.name}; move it away")
        return self
