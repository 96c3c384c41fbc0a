"""Writing a file so that readers see the old version or the new one, never half of either, and
ending a command so that nothing half-written is left."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from db.workspace import file_permissions


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "wb", *, durable: bool = False, **open_args) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    ``durable`` flushes it to the disk first, so a crash right after cannot leave an empty file
    under the name (checkpoints). On any error the temporary file is removed and ``path`` keeps
    its previous content.
    """
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, file_permissions())  # mkstemp makes it 0o600 whatever the workspace's mode
        with os.fdopen(handle, mode, **open_args) as out:
            yield out
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:  # a write's error names no file: name ours
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def ended_by_signals() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP (``kill``, a closed SSH session) end the process as an
    exception does, exit status 128 + the signal's number: the ``except``/``finally`` clauses on
    the way out remove what was half-written (a staging folder, a temporary file). Python's default
    ends the process where it stands and leaves them. A signal the process ignores (``nohup``) or
    handles already is left as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def end(signum, _frame):
        for number in saved:  # a second signal, while the clean-up runs, ends the process at once
            signal.signal(number, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    saved = {number: signal.signal(number, end) for number in (signal.SIGTERM, signal.SIGHUP)
             if signal.getsignal(number) is signal.SIG_DFL}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
