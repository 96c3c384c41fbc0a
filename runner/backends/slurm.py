"""The Slurm backend: each run is one batch job that runs the worker on a node Slurm picks.

``sbatch`` gets a generated script (job name with the run id, output appended to the run's
``train.log``, ``--gres=gpu:1`` only for a run that wants a GPU, the workspace and the database
in its environment); ``squeue`` and ``scontrol show job`` tell how the job stands and, once it
ended, why; ``scancel`` stops it (the worker gets SIGTERM, checkpoints and ends cancelled).
The workspace folder and the Python environment must be on paths every node sees.

Registered as the ``slurm`` backend (entry-point group ``leuktui.backends``).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from db import Workspace
from db.errors import UserError
from db.vocabulary import CANCELLED, FAILED
from runner.backends.base import NODES_VARIABLE, NPROC_VARIABLE, Backend, BackendOption, Handle

COMMAND_TIMEOUT = 60.0
log = logging.getLogger("leuktui.scheduler")
STATE_CACHE_SECONDS = 1.0

# Job states (squeue's long names) in which the job has not started its worker yet.
WAITING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"})
# States of a job still holding its node: running, or ending.
LIVE_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"})
# Ended by a person, a time limit or the machine, not by the worker itself.
CANCEL_STATES = frozenset({"CANCELLED"})


# How a job ended, for a run's error line (Slurm's state names otherwise).
ENDINGS = {
    "CANCELLED": "cancelled in Slurm (scancel, or an administrator)",
    "TIMEOUT": "TIMEOUT, the job reached its time limit",
    "NODE_FAIL": "NODE_FAIL, its node failed",
    "PREEMPTED": "PREEMPTED by another job",
    "OUT_OF_MEMORY": "OUT_OF_MEMORY, the job used more memory than it was given",
    "BOOT_FAIL": "BOOT_FAIL, its node did not boot",
    "DEADLINE": "DEADLINE reached",
    "FAILED": "FAILED",
    "COMPLETED": "COMPLETED",
    "GONE": "no longer known to Slurm",
}


class SlurmError(UserError):
    """Slurm cannot be used, or refused a request; the message carries Slurm's own words."""


def run_slurm(argv: Sequence[str], *, what: str, stdin: str | None = None) -> str:
    """Run a Slurm command and return its output; one line naming the command when it fails."""
    try:
        result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]}: not found on PATH; {what} needs Slurm's commands (is this a Slurm login node?)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{argv[0]}: no answer from Slurm within {COMMAND_TIMEOUT:.0f} s ({what})") from None
    if result.returncode != 0:
        message = " ".join(line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip())
        raise SlurmError(f"{argv[0]} refused to {what}: {message or f'exit status {result.returncode}'}")
    return result.stdout


def check_slurm(partition: str | None) -> None:
    """Say in one line why jobs cannot be submitted here: no ``sbatch``, no controller to reach (no
    configuration found, or it is down), or no such partition: at ``scheduler start``, not when
    the first run fails."""
    if shutil.which("sbatch") is None:
        raise SlurmError("sbatch: not found on PATH; the Slurm backend runs where Slurm's commands do (a login node)")
    try:
        run_slurm(["scontrol", "ping"], what="reach the controller")
    except SlurmError as exc:
        raise SlurmError(f"Slurm's controller cannot be reached from here ({exc}); run where it can, e.g. a login node, or set "
                         "SLURM_CONF") from None
    if partition:
        try:
            run_slurm(["scontrol", "show", "partition", partition], what=f"show partition {partition}")
        except SlurmError as exc:
            raise SlurmError(f"Slurm partition {partition!r} does not exist ({exc})") from None


@dataclass(frozen=True)
class JobState:
    """One job as Slurm sees it."""

    job_id: str
    state: str            # PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, TIMEOUT, NODE_FAIL ...
    reason: str = ""      # why it waits or why it ended ("None" when Slurm has nothing to say)
    node: str = ""
    exit_code: str = ""   # "status:signal", from scontrol
    comment: str = ""     # ours: the host of the scheduler that submitted it

    @property
    def waiting(self) -> bool:
        return self.state in WAITING_STATES

    @property
    def ended(self) -> bool:
        return self.state not in WAITING_STATES and self.state not in LIVE_STATES

    def exit_status(self) -> int:
        """The worker's exit status as the local backend gives it: -signal if it was killed."""
        status, _, signum = self.exit_code.partition(":")
        if signum.isdigit() and int(signum):
            return -int(signum)
        if status.isdigit() and (int(status) or self.state == "COMPLETED"):
            return int(status)
        return -signal.SIGTERM if self.state in CANCEL_STATES | {"TIMEOUT", "PREEMPTED", "DEADLINE"} else 1

    def describe(self) -> str:
        """Why the job ended, in Slurm's words, with what the exit code says about the worker."""
        where = f" on {self.node}" if self.node else ""
        text = f"Slurm job {self.job_id}{where}: {ENDINGS.get(self.state, self.state)}"
        if self.reason and self.reason not in ("None", "(null)"):
            text += f" ({self.reason})"
        status = self.exit_status()
        if status == -signal.SIGKILL or (status < 0 and self.state not in CANCEL_STATES | {"TIMEOUT"}):
            try:
                text += f"; the worker was killed by signal {signal.Signals(-status).name}"
            except ValueError:
                text += f"; the worker was killed by signal {-status}"
        elif status > 0:
            text += f"; the worker exited with status {status}"
        return text


def parse_scontrol(text: str) -> dict[str, str]:
    """``scontrol show job -o`` output: space-separated Key=Value pairs on one line."""
    fields: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def job_detail(job_id: str) -> JobState | None:
    """One job from ``scontrol show job`` (it keeps ended jobs for MinJobAge), or None if gone."""
    try:
        text = run_slurm(["scontrol", "show", "job", "--oneliner", job_id], what=f"show job {job_id}")
    except SlurmError as exc:
        if "Invalid job id" in str(exc):
            return None
        raise
    fields = parse_scontrol(text)
    if not fields.get("JobState"):
        return None
    node = fields.get("NodeList", "")
    comment = fields.get("Comment", "")
    return JobState(job_id, fields["JobState"], fields.get("Reason", ""), "" if node == "(null)" else node,
                    fields.get("ExitCode", ""), "" if comment == "(null)" else comment)


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """The jobs' states from one ``squeue`` call; ended jobs are read in full from ``scontrol``."""
    wanted = sorted({job_id for job_id in job_ids if job_id}, key=lambda j: (len(j), j))
    if not wanted:
        return {}
    out: dict[str, JobState] = {}
    try:
        text = run_slurm(["squeue", "--noheader", "--states=all", "--jobs=" + ",".join(wanted), "--format=%i|%T|%r|%N"],
                         what="list jobs")
    except SlurmError as exc:
        if "Invalid job id" not in str(exc):
            raise
        text = ""  # every one of them has left Slurm's memory
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 4 and fields[0] in wanted:
            out[fields[0]] = JobState(fields[0], fields[1], fields[2], fields[3])
    for job_id in wanted:
        state = out.get(job_id)
        if state is None or state.ended:
            detail = job_detail(job_id)
            if detail is not None:
                out[job_id] = detail
            elif state is None:
                out[job_id] = JobState(job_id, "GONE", "Slurm no longer knows the job")
    return out


def states_of_runs(runs) -> dict[int, JobState]:
    """Slurm's word on the runs (of those given) that are Slurm jobs, from one ``squeue`` call.

    When Slurm cannot be asked, each gets the state UNKNOWN with the reason why."""
    jobs = {run.id: run.job_id for run in runs if run.backend == "slurm" and run.job_id}
    if not jobs:
        return {}
    try:
        by_job = job_states(jobs.values())
    except SlurmError as exc:
        return {run_id: JobState(job_id, "UNKNOWN", str(exc)) for run_id, job_id in jobs.items()}
    return {run_id: by_job[job_id] for run_id, job_id in jobs.items() if job_id in by_job}


def job_cell(state: JobState) -> str:
    """A job in a few words for a table: id, state, and the node or why it waits."""
    return f"{state.job_id} {state.state} {state.node or state.reason}".strip()


def wants_gpu(device: str, partition_has_gpus: bool) -> bool:
    if device == "cpu":
        return False
    return device.startswith("cuda") or partition_has_gpus


COMMENT_PREFIX = "leuktui-scheduler@"


def _directive_value(value) -> str:
    """A path in an ``#SBATCH`` line: sbatch splits those on spaces unless double-quoted."""
    text = str(value)
    return f'"{text}"' if any(c.isspace() for c in text) else text


# torchrun's c10d rendezvous listens on the first node at a port of the job's own (job ids differ).
RENDEZVOUS_PORT_BASE, RENDEZVOUS_PORTS = 29500, 20000


def job_script(run_id: int, workspace: Workspace, db_url: str, *, gpus: int, partition: str | None, host: str,
               nproc: int = 1, nodes: int = 1) -> str:
    """The batch script of one run: Slurm directives, the environment, then the worker; for a
    run of several processes, one torchrun per node under ``srun`` (``nproc`` processes each, a
    GPU each), meeting at a c10d rendezvous on the job's first node."""
    home = str(workspace.home)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=leuktui-run-{run_id}",
        f"#SBATCH --output={_directive_value(workspace.log_path(run_id))}",
        "#SBATCH --open-mode=append",
        f"#SBATCH --chdir={_directive_value(home)}",
        # Which host's scheduler supervises the job: the one that adopts it after a restart.
        f"#SBATCH --comment={COMMENT_PREFIX}{host}",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    distributed = nproc * nodes > 1
    if distributed:
        lines += [f"#SBATCH --nodes={nodes}", "#SBATCH --ntasks-per-node=1", f"#SBATCH --cpus-per-task={nproc}"]
    if gpus:
        lines.append(f"#SBATCH --gres=gpu:{gpus * nproc if distributed else gpus}")
    worker = f"-m engine.worker {run_id} --home {shlex.quote(home)}"
    if distributed:
        launch = [
            'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f"port=$(( {RENDEZVOUS_PORT_BASE} + SLURM_JOB_ID % {RENDEZVOUS_PORTS} ))",
            f"exec srun --ntasks-per-node=1 --kill-on-bad-exit=1 {shlex.quote(sys.executable)} -m torch.distributed.run "
            f"--nnodes={nodes} --nproc-per-node={nproc} --rdzv-backend=c10d --rdzv-endpoint=\"$first:$port\" "
            f"--rdzv-id=\"leuktui-$SLURM_JOB_ID\" --max-restarts=0 --monitor-interval=1 "
            f"--log-dir={shlex.quote(str(workspace.torchrun_dir(run_id)))} {worker}",
        ]
    else:
        launch = [f"exec {shlex.quote(sys.executable)} {worker}"]
    lines += [
        f"export LEUKTUI_HOME={shlex.quote(home)}",
        f"export LEUKTUI_DB={shlex.quote(db_url)}",
        # The CPUs Slurm gave the job, not every core of the node.
        'export LEUKTUI_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        'export OMP_NUM_THREADS="$LEUKTUI_THREADS"',
        f"export LEUKTUI_DEVICE={'cuda' if gpus else 'cpu'}",
        *launch,
        "",
    ]
    return "\n".join(lines)


class SlurmBackend(Backend):
    """Runs as Slurm batch jobs: ``sbatch`` to start, ``squeue``/``scontrol`` to poll, ``scancel`` to stop."""

    name = "slurm"
    summary = "one Slurm batch job per run (sbatch), on the nodes Slurm picks"
    assigns_devices = False  # Slurm queues the jobs and places them
    options = (
        BackendOption("partition", "Slurm partition for the jobs (default: the cluster's default)", metavar="P",
                      pattern=r"[\w.,-]+"),
        BackendOption("sbatch_args", "an extra sbatch option, e.g. --sbatch-arg=--time=4:00:00 (repeatable; replaces the saved ones)",
                      kind="texts", metavar="ARG", flag="--sbatch-arg", pattern=r"-.*"),
    )

    def __init__(self, workspace: Workspace, settings: Mapping[str, Any] | None = None, host: str | None = None):
        super().__init__(workspace, settings, host)
        self.partition = self.settings.get("partition") or None
        self.sbatch_args = list(self.settings.get("sbatch_args") or ())
        self._states: dict[str, JobState] = {}
        self._states_at = 0.0
        self._partition_gpus: bool | None = None

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        check_slurm(settings.get("partition"))

    @classmethod
    def describe_settings(cls, settings: Mapping[str, Any]) -> str:
        sbatch = settings.get("sbatch_args") or []
        return f"partition {settings.get('partition') or 'default'}" + (f", sbatch {' '.join(sbatch)}" if sbatch else "")

    def describe(self, runs: Iterable[Any]) -> dict[int, str]:
        return {run_id: job_cell(state) for run_id, state in states_of_runs(runs).items()}

    def partition_has_gpus(self) -> bool:
        if self._partition_gpus is None:
            argv = ["sinfo", "--noheader", "--format=%G"] + (["--partition", self.partition] if self.partition else [])
            gres = run_slurm(argv, what="list the partition's nodes")
            self._partition_gpus = any(part.startswith("gpu") for line in gres.splitlines() for part in line.split(","))
        return self._partition_gpus

    def submit(self, run_id: int, device: str, env: Mapping[str, str] | None = None) -> str:
        """Write the run's job script beside its log and submit it; return the job id."""
        env = env or {}
        gpus = 1 if wants_gpu(device, device == "auto" and self.partition_has_gpus()) else 0
        script = job_script(run_id, self.workspace, self.workspace.db_url, gpus=gpus, partition=self.partition,
                            host=self.host, nproc=int(env.get(NPROC_VARIABLE, "1") or 1), nodes=int(env.get(NODES_VARIABLE, "1") or 1))
        run_dir = self.workspace.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "job.sh"
        # It names the database, password included: readable by its owner only.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(script)
        output = run_slurm(["sbatch", "--parsable", *self.sbatch_args, str(path)], what=f"submit run {run_id}")
        job_id = output.strip().splitlines()[-1].split(";")[0] if output.strip() else ""
        if not job_id:
            raise SlurmError(f"sbatch accepted run {run_id} but printed no job id")
        return job_id

    # -- the Backend protocol -------------------------------------------------------------------

    def start(self, run_id: int, device: str, env: dict[str, str]) -> Handle:
        job_id = self.submit(run_id, device, env)
        return Handle(run_id, 0, "slurm", time.time(), job_id=job_id, backend=self.name, waiting=True)

    def refresh(self, job_ids: Iterable[str]) -> None:
        self._states = job_states(job_ids)
        self._states_at = time.monotonic()

    def state(self, handle: Handle) -> JobState | None:
        if handle.job_id not in self._states or time.monotonic() - self._states_at > STATE_CACHE_SECONDS:
            self.refresh({handle.job_id, *self._states})
        return self._states.get(handle.job_id)

    def poll(self, handle: Handle) -> int | None:
        try:
            state = self.state(handle)
        except SlurmError as exc:  # Slurm busy or restarting: the job is as it was; ask again next pass
            log.warning("%s", exc)
            return None
        if state is None:
            return None
        handle.waiting = state.waiting
        handle.detail = f"{state.state} {state.node or state.reason}".strip()
        if not state.ended:
            return None
        self._states.pop(handle.job_id, None)
        handle.end_reason = state.describe()
        if state.state in CANCEL_STATES:
            handle.end_status = CANCELLED
        elif state.state == "COMPLETED" and state.exit_status() == 0:
            handle.end_status = None  # the worker ended the run itself
        else:
            handle.end_status = FAILED
        return state.exit_status()

    def supervisor(self, job_id: str) -> str | None:
        """The host whose scheduler submitted the job; None once Slurm has forgotten the job."""
        detail = job_detail(job_id)
        if detail is None:
            return None
        return detail.comment.removeprefix(COMMENT_PREFIX) if detail.comment.startswith(COMMENT_PREFIX) else ""

    def cancel(self, handle: Handle, *, force: bool = False) -> None:
        argv = ["scancel", *(["--signal=KILL", "--full"] if force else []), handle.job_id]
        try:
            run_slurm(argv, what=f"cancel job {handle.job_id}")
        except SlurmError as exc:  # ended meanwhile, or Slurm busy: the next poll tells which
            log.warning("%s", exc)
