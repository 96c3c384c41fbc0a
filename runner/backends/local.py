"""The local backend: each run's worker is a subprocess of the scheduler on this host."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from runner.backends.base import Backend, Handle, worker_argv
from runner.processes import clean_env, is_alive, process_start_time, torchrun_ranks


class LocalBackend(Backend):
    """Workers as local subprocesses: an argument list (never a shell), output to the run's log."""

    name = "local"
    summary = "subprocesses on this host, one per run, on the GPUs (or CPU) the scheduler assigns"

    def start(self, run_id: int, device: str, env: dict[str, str]) -> Handle:
        log_path = self.workspace.log_path(run_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = worker_argv(self.workspace, run_id, env)
        with log_path.open("ab") as output:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env={**clean_env(), **env}, cwd=log_path.parent, start_new_session=True, close_fds=True,
            )
        return Handle(run_id, process.pid, device, time.time(), process, pid_started_at=process_start_time(process.pid))

    def poll(self, handle: Handle) -> int | None:
        if handle.process is not None:
            return handle.process.poll()
        return None if is_alive(handle.pid, handle.pid_started_at) else -signal.SIGKILL

    def cancel(self, handle: Handle, *, force: bool = False) -> None:
        if handle.process is None and not is_alive(handle.pid, handle.pid_started_at):
            return  # an adopted worker that is gone: its pid may be someone else's by now
        signum = signal.SIGKILL if force else signal.SIGTERM
        # A run of several processes is asked to stop through its ranks: they stop together after a
        # step and exit 0, and torchrun with them (signalled itself, it prints a traceback into the
        # run's log). torchrun starts each rank in a session of its own, so a kill takes each
        # rank's group (its data-loading processes) as well as torchrun's.
        ranks = torchrun_ranks(handle.pid)
        targets = [(send, rank) for rank in ranks for send in ((os.killpg, os.kill) if force else (os.kill,))]
        if force or not ranks:
            # Started here in a session of its own: its group is it and what it started.
            targets.append((os.killpg if handle.process is not None else os.kill, handle.pid))
        for send, pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(pid, signum)

    def reap(self, handle: Handle) -> None:
        if handle.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                handle.process.wait(timeout=5)
