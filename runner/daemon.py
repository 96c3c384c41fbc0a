"""The scheduler as a daemon: one per workspace (a file lock), detached in its own session with its
own log, so it and its workers outlive the terminal, the SSH session and the app. It exits after
an idle period and is started again on demand (``start_detached``); ``python -m runner.daemon``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from db import Database, Workspace
from db.dialect import sqlite_path
from db.errors import UserError
from db.files import read_regular_text
from db.workspace import apply_file_mode, file_permissions
from engine.files import atomic_write
from runner.options import Options
from runner.processes import clean_env, holds_open
from runner.scheduler import Scheduler

LOCK_FILE = "scheduler.lock"
LOG_FILE = "scheduler.log"
MODULE = "runner.daemon"

log = logging.getLogger("leuktui.scheduler")


def lock_path(workspace: Workspace) -> Path:
    """One scheduler per workspace; with a shared database server, one per host of it."""
    if sqlite_path(workspace.db_url) is not None:
        return workspace.home / LOCK_FILE
    return workspace.home / f"scheduler.{socket.gethostname()}.lock"


def pid_path(workspace: Workspace) -> Path:
    """Beside its lock: with a shared database server, one per host."""
    return lock_path(workspace).with_suffix(".pid")


def running_pid(workspace: Workspace) -> int | None:
    """The live scheduler's pid (-1 if it has not written it yet), or None. The lock, not the pid
    file, is the truth."""
    if not _lock_held(workspace):
        return None
    try:
        text = read_regular_text(pid_path(workspace)).strip()
    except (OSError, UnicodeDecodeError):  # not written yet, or not a pid file at all
        return -1
    return int(text) if text.isdigit() else -1


def _lock_held(workspace: Workspace) -> bool:
    """Whether a process holds the workspace's scheduler lock. Where the workspace cannot be written
    (read here, written elsewhere: a read-only mount), the lock is asked through a descriptor open
    for reading, never created (a shared lock conflicts with the scheduler's exclusive one)."""
    if not workspace.writable():
        import fcntl

        try:
            descriptor = os.open(lock_path(workspace), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # no lock file: no scheduler ever ran here
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(descriptor)
        return False
    from filelock import FileLock, Timeout  # here, not at the top: off the app's start-up path

    probe = FileLock(lock_path(workspace), mode=file_permissions())
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


def start_detached(workspace: Workspace, options: Options | None = None, *, wait: float = 10.0) -> int:
    """Start the scheduler in its own session unless one is running; return its pid (once it has
    written it: a scheduler that holds the lock but has not written its pid yet is waited for)."""
    process = None
    if running_pid(workspace) is None:
        workspace.ensure()
        if options is not None:
            options.save(workspace)
        else:
            Options.load(workspace)  # a damaged scheduler.json is refused here, in one line, not in the daemon's log
        argv = [sys.executable, "-m", MODULE, "--home", str(workspace.home)]
        with (workspace.home / LOG_FILE).open("ab") as output:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                       env=clean_env(), cwd=workspace.home,
                                       start_new_session=True, close_fds=True)
    deadline = time.time() + wait
    while time.time() < deadline:
        pid = running_pid(workspace)
        # Until the one started here writes its pid, the file may still hold the pid of a scheduler
        # that died (killed, it left the file); only its own pid, or another's once it lost the race, counts.
        if pid and pid > 0 and (process is None or pid == process.pid or process.poll() is not None):
            return pid
        if pid is None and process is not None and process.poll() is not None:  # it failed, or lost a race
            pid = running_pid(workspace)
            if pid is None:
                raise UserError(f"the scheduler exited at once; see {workspace.home / LOG_FILE}")
        time.sleep(0.05)
    raise UserError(f"the scheduler did not start within {wait:.0f} s; see {workspace.home / LOG_FILE}")


def stop(workspace: Workspace, *, wait: float = 10.0) -> int | None:
    """Ask the running scheduler to exit; workers keep running. Returns the pid it had.

    The pid file is only a hint: the process is signalled only once it is proven to be this
    workspace's scheduler: a process of ours that holds the workspace's lock file open."""
    pid = running_pid(workspace)
    if not pid or pid < 0:
        return None
    if not holds_open(pid, lock_path(workspace)):
        raise UserError(f"{pid_path(workspace)}: pid {pid} is not this workspace's scheduler; nothing was signalled")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + wait
    while time.time() < deadline and running_pid(workspace):
        time.sleep(0.05)
    if running_pid(workspace):
        halted = _process_state(pid) == "T"
        raise UserError(f"scheduler {pid} was asked to exit but is still running after {wait:.0f} s"
                        + (f" (its process is stopped: `kill -CONT {pid}` lets it exit)" if halted else "; its log may say why"))
    return pid


def _process_state(pid: int) -> str | None:
    """The one-letter state ``ps`` shows (R, S, T for stopped, ...), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def serve(workspace: Workspace, options: Options) -> int:
    """Run the scheduler in this process while holding the workspace lock."""
    from filelock import FileLock, Timeout

    workspace.ensure()
    lock = FileLock(lock_path(workspace), mode=file_permissions())
    try:
        # A status probe holds the lock for a moment; only a lock held for a second is a scheduler.
        lock.acquire(timeout=1.0, poll_interval=0.05)
    except Timeout:
        log.info("another scheduler holds %s; exiting", lock_path(workspace))
        return 0
    try:
        with atomic_write(pid_path(workspace), "w") as out:
            out.write(str(os.getpid()))
        scheduler = Scheduler(workspace, Database(workspace.db_url), options)

        def request_stop(signum, _frame) -> None:
            scheduler.stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        log.info("scheduler %d on %s (%s): backend %s, gpus %s, max_parallel %d, per_gpu %d, idle %.0f s",
                 os.getpid(), workspace.home, scheduler.host, scheduler.backend.name, scheduler.gpus or "none",
                 options.max_parallel, options.per_gpu, options.idle_timeout)
        scheduler.serve()
    finally:
        pid_path(workspace).unlink(missing_ok=True)
        lock.release()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="leuktui's queue scheduler")
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    apply_file_mode()
    workspace = Workspace.resolve(args.home)
    try:
        options = Options.load(workspace)
    except UserError as exc:
        log.error("%s", exc)
        return 1
    return serve(workspace, options)


if __name__ == "__main__":
    sys.exit(main())
