"""What a backend is: a place runs go (local processes, Slurm jobs, a third party's queue).

A backend is a class: its name, a line on what it is, its options (flags of ``leuktui scheduler
start`` and keys of the workspace's ``scheduler.json``), ``check`` (can it be used from here),
``start``/``poll``/``cancel``/``reap`` (one run's job), ``supervisor`` (who submitted a batch job,
for a restarted scheduler) and ``describe`` (the job cell of ``queue ls`` and the Queue screen).
It is registered under the entry-point group ``leuktui.backends``; ours are too.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from db import Workspace
from db.errors import UserError


@dataclass
class Handle:
    """One run's job as the scheduler supervises it."""

    run_id: int
    pid: int
    device: str
    started: float
    process: subprocess.Popen | None = None  # None for a worker adopted after a restart
    pid_started_at: float | None = None
    term_sent: float | None = None
    kill_sent: bool = False
    job_id: str | None = None    # the batch system's id for it
    backend: str = "local"
    waiting: bool = False        # queued in the batch system: no worker, no heartbeat yet
    detail: str = ""             # the batch system's word on it (state, node)
    end_status: str | None = None  # set by a backend that knows how the run should end, and why
    end_reason: str | None = None
    slots: int = 1               # the scheduler's capacity it takes (a DDP run: one per process, on a CPU at most all)


NPROC_VARIABLE = "LEUKTUI_NPROC"  # in a worker's environment: the processes of its run per node (DDP when above 1)
NODES_VARIABLE = "LEUKTUI_NODES"  # the nodes of its run (a batch system's)


def worker_argv(workspace: Workspace, run_id: int, env: Mapping[str, str]) -> list[str]:
    """The command that trains run ``run_id`` here: the worker, or torchrun starting
    ``$LEUKTUI_NPROC`` of them (one node, its rendezvous on this host, no restarts: a rank that
    dies fails the run, which resumes from its checkpoint; its folders in the run's)."""
    import sys

    worker = ["-m", "engine.worker", str(run_id), "--home", str(workspace.home)]
    nproc = int(env.get(NPROC_VARIABLE, "1") or 1)
    if nproc <= 1:
        return [sys.executable, *worker]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
            "--monitor-interval=1", f"--log-dir={workspace.torchrun_dir(run_id)}", *worker]


KINDS = {"text": str, "texts": list, "integer": int, "number": float}


@dataclass(frozen=True)
class BackendOption:
    """One option of a backend: a key of its settings (and of ``scheduler.json``) and its flag."""

    key: str
    help: str
    kind: str = "text"      # text, texts (a repeatable flag of strings), integer, number
    metavar: str = "VALUE"
    flag: str = ""          # default: --KEY with dashes
    pattern: str = ""       # a regular expression each text value must match whole

    @property
    def flag_name(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")

    def validate(self, value: Any, where: str) -> Any:
        """The value if it is of this option's kind (None: not set); UserError naming it if not."""
        if value is None:
            return None
        wanted = KINDS[self.kind]
        if wanted is list:
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise UserError(f"{where}: {self.key!r} must be a list of strings, not {value!r}")
            for item in value:
                self._check_text(item, where)
            return list(value)
        if wanted is str and isinstance(value, str):
            self._check_text(value, where)
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise UserError(f"{where}: {self.key!r} must be {'a' if self.kind != 'integer' else 'an'} {self.kind}, not {value!r}")
        if wanted is float and not math.isfinite(value):
            raise UserError(f"{where}: {self.key!r} must be a finite number, not {value!r}")
        return value


    def _check_text(self, value: str, where: str) -> None:
        # A value ends up in a batch script or a command line: no newline may add a line to it.
        if not value.isprintable():
            raise UserError(f"{where}: {self.key!r} holds a control character or a newline: {value!r}")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise UserError(f"{where}: {self.key!r} is not of the form {self.pattern}: {value!r}")


class Backend:
    """A place runs go. Subclass it, set the class attributes, implement the job methods, and
    register the class under the ``leuktui.backends`` entry-point group.

    ``assigns_devices``: the scheduler places runs on this host's GPUs (or its CPU) and gives
    ``start`` the worker's environment (``CUDA_VISIBLE_DEVICES`` ...); a batch system that places
    jobs itself sets it False and gets every queued run at once, with the device the run asks for.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    options: ClassVar[tuple[BackendOption, ...]] = ()
    assigns_devices: ClassVar[bool] = True

    def __init__(self, workspace: Workspace, settings: Mapping[str, Any] | None = None, host: str | None = None):
        import socket

        self.workspace = workspace
        self.settings = dict(settings or {})
        self.host = host or socket.gethostname()

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        """Raise ``UserError`` saying in one line why runs cannot go to this backend from here."""

    @classmethod
    def describe_settings(cls, settings: Mapping[str, Any]) -> str:
        """The backend's settings for ``scheduler status``: ``partition gpu, sbatch --time=1:00:00``."""
        shown = []
        for option in cls.options:
            value = settings.get(option.key)
            if value not in (None, [], ""):
                shown.append(f"{option.key} {' '.join(value) if isinstance(value, list) else value}")
        return ", ".join(shown)

    def start(self, run_id: int, device: str, env: dict[str, str]) -> Handle:
        """Start run ``run_id``'s worker (``python -m engine.worker RUN --home HOME``; ``worker_argv``
        makes the command). ``env`` carries ``$LEUKTUI_NPROC`` (and for a batch system
        ``$LEUKTUI_NODES``) when the run has several processes: torchrun starts them."""
        raise NotImplementedError

    def poll(self, handle: Handle) -> int | None:
        """The exit status once the worker has ended (-signal if killed), else None."""
        raise NotImplementedError

    def cancel(self, handle: Handle, *, force: bool = False) -> None:
        """Ask the worker to stop after its current step (SIGTERM); ``force`` kills it."""
        raise NotImplementedError

    def reap(self, handle: Handle) -> None:
        """Wait briefly for a killed worker to be gone, so no zombie is left behind."""

    def supervisor(self, job_id: str) -> str | None:
        """For a batch job: the host whose scheduler submitted it, "" if the backend cannot tell
        (the run's recorded host is taken), or None if the job is gone for certain (its run is
        then interrupted when a scheduler starts)."""
        return ""

    def describe(self, runs: Iterable[Any]) -> dict[int, str]:
        """A few words per run of this backend for the job cell of ``queue ls`` and the Queue screen."""
        return {}
