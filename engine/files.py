"""Writing a file so that readers see the old version or the new one, never half of either, and
ending a command so that nothing half-written is left."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
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

    ending: list[int] = []

    def end(signum, _frame):
        ending.append(signum)
        for number in saved:  # a second signal, while the clean-up runs, ends the process at once
            signal.signal(number, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    def swallowed(unraisable) -> None:
        # The signal landed where Python ignores exceptions (a weakref callback, a __del__): the
        # SystemExit went nowhere and the command would run on. Delivered again, it lands next at
        # a point that can raise.
        if isinstance(unraisable.exc_value, SystemExit) and ending:
            for number in saved:
                signal.signal(number, end)
            # Sent from a thread a moment later: sent from here, it would land inside this hook again.
            threading.Timer(0.01, os.kill, (os.getpid(), ending[-1])).start()
            return
        hook(unraisable)

    saved = {number: signal.signal(number, end) for number in (signal.SIGTERM, signal.SIGHUP)
             if signal.getsignal(number) is signal.SIG_DFL}
    hook, sys.unraisablehook = sys.unraisablehook, swallowed
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for number, handler in saved.items():
            signal.signal(number, handler)
