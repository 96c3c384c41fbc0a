"""How a Slurm job's state reads back, and what a run's error says about each way a job ends."""

from __future__ import annotations

from pathlib import Path

from db import Workspace
from runner.backends.slurm import COMMENT_PREFIX, JobState, job_script, parse_scontrol, wants_gpu

SCONTROL = (
    "JobId=42 JobName=leuktui-run-7 UserId=lab(1000) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
    "Comment=leuktui-scheduler@login-a ExitCode=0:15 RunTime=00:01:02 NodeList=gpu-03 BatchHost=gpu-03"
)


def test_scontrol_fields_and_the_end_they_describe():
    fields = parse_scontrol(SCONTROL)
    assert (fields["JobState"], fields["Reason"], fields["ExitCode"], fields["NodeList"]) == ("TIMEOUT", "TimeLimit", "0:15", "gpu-03")
    assert fields["Comment"] == COMMENT_PREFIX + "login-a"
    state = JobState("42", "TIMEOUT", "TimeLimit", "gpu-03", "0:15")
    assert state.ended and not state.waiting
    assert state.describe() == "Slurm job 42 on gpu-03: TIMEOUT, the job reached its time limit (TimeLimit)"


def test_each_way_a_job_ends_names_itself():
    killed = JobState("5", "FAILED", "NonZeroExitCode", "n1", "0:9")
    assert killed.exit_status() == -9 and killed.describe().endswith("the worker was killed by signal SIGKILL")
    crashed = JobState("6", "FAILED", "NonZeroExitCode", "n1", "1:0")
    assert crashed.exit_status() == 1 and crashed.describe().endswith("the worker exited with status 1")
    node = JobState("7", "NODE_FAIL", "NodeDown", "n2", "0:0")
    assert "its node failed" in node.describe() and node.exit_status() == 1
    cancelled = JobState("8", "CANCELLED", "None", "n1", "0:15")
    assert cancelled.describe() == "Slurm job 8 on n1: cancelled in Slurm (scancel, or an administrator)"
    assert JobState("9", "PENDING", "Resources").waiting and not JobState("9", "RUNNING", "None", "n1").ended
    assert JobState("10", "COMPLETED", "None", "n1", "0:0").exit_status() == 0


def test_only_runs_that_want_a_gpu_ask_for_one(tmp_path):
    assert not wants_gpu("cpu", True) and wants_gpu("cuda:1", False) and wants_gpu("auto", True) and not wants_gpu("auto", False)
    workspace = Workspace(Path(tmp_path) / "shared home")
    script = job_script(3, workspace, "postgresql+psycopg://u:p w@db/x", gpus=1, partition="gpu", host="login-a")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and "#SBATCH --gres=gpu:1" in lines and "#SBATCH --partition=gpu" in lines
    assert f'#SBATCH --output="{workspace.log_path(3)}"' in lines and "#SBATCH --job-name=leuktui-run-3" in lines
    assert "export LEUKTUI_DB='postgresql+psycopg://u:p w@db/x'" in lines, "quoted for the shell"
    assert lines[-1].endswith(f"-m engine.worker 3 --home '{workspace.home}'")
