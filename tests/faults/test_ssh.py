"""The app over a real SSH login (sshd on a loopback port, a throwaway key, ``ssh -tt`` in tmux):
queue a run, drop the login as a dead network would, and the run trains on; no app process is
left behind, and a new login shows the run."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from e2e.test_terminal import TMUX, Terminal

from db import Database, Workspace
from engine.synth import make_dataset
from runner import daemon

SSHD = "/usr/sbin/sshd"


def _missing(what: str):
    if os.environ.get("CI"):
        pytest.fail(f"{what} (tests/services/sshd.sh brings it up)")
    pytest.skip(f"{what}: the dropped-login test is not tried")


@pytest.fixture
def login(tmp_path):
    """An sshd on 127.0.0.1 that lets this user in with a key made for the test; yields the ssh
    command line (a list) that logs in."""
    if not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen") and shutil.which("tmux")):
        _missing("openssh-server, openssh-client or tmux is not installed")
    if os.geteuid() != 0:
        _missing("sshd needs root to start here")
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (keys / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\nAuthorizedKeysFile {keys / 'authorized_keys'}\n"
        f"PidFile {keys / 'sshd.pid'}\nPermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nClientAliveInterval 1\nClientAliveCountMax 3\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(keys / "sshd_config")], stderr=subprocess.PIPE)
    ssh = ["ssh", "-p", str(port), "-i", str(keys / "client"), "-o", "StrictHostKeyChecking=no",
           "-o", f"UserKnownHostsFile={keys / 'known_hosts'}", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "127.0.0.1"]
    deadline = time.time() + 15
    while subprocess.run([*ssh, "true"], capture_output=True).returncode != 0:
        if time.time() > deadline or server.poll() is not None:
            server.kill()
            pytest.fail(f"sshd did not accept a login: {server.stderr.read().decode(errors='replace') if server.poll() is not None else ''}")
        time.sleep(0.2)
    yield ssh
    server.terminate()
    server.wait(timeout=10)


def app_processes(home) -> list[psutil.Process]:
    """leuktui apps (not workers, not the scheduler) on ``home``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        argv = process.info["cmdline"] or []
        if "leuktui" in argv and str(home) in argv and not {"ls", "queue", "engine.worker", "runner.daemon"} & set(argv):
            found.append(process)
    return found


def test_a_dropped_login_leaves_the_run_training_and_no_app_behind(tmp_path, login):
    make_dataset(tmp_path / "data" / "demo", n_train=64, n_valid=16, n_test=8, size=24, seed=4)  # the form's default folder
    home = tmp_path / "home"
    home.mkdir()
    leuktui = f"cd {shlex.quote(str(tmp_path))} && {shlex.quote(sys.executable)} -m leuktui --home {shlex.quote(str(home))}"
    terminal = Terminal(f"leuktui-ssh-{int(time.time())}", shlex.join([*login[:-1], "-tt", login[-1], leuktui]), cwd=tmp_path)
    try:
        terminal.wait_for("no runs yet", 60)
        terminal.keys("n")
        terminal.wait_for("will queue 1 run", 15)
        terminal.type("over-ssh")
        for tabs, value in ((8, "24"), (1, "8"), (1, "4")):  # image_size, batch_size, epochs (after name, tags, again, ...)
            terminal.keys(*["Tab"] * tabs)
            terminal.keys("C-u")
            terminal.type(value)
        terminal.keys("C-s")
        terminal.wait_for("over-ssh", 15)
        db = Database(Workspace(home).db_url)
        deadline = time.time() + 120
        while not (db.list_runs() and db.list_runs()[0].epochs_done >= 1) and time.time() < deadline:
            time.sleep(0.2)
        run = db.list_runs()[0]
        assert run.status == "running" and run.epochs_done >= 1, "training when the login drops"
        assert app_processes(home), "the app runs on the server side"

        client = psutil.Process(int(subprocess.run([*TMUX, "list-panes", "-t", terminal.session, "-F", "#{pane_pid}"],
                                                   capture_output=True, text=True).stdout.split()[0]))
        assert client.name() == "ssh"
        client.send_signal(signal.SIGKILL)  # the laptop lid closes: no goodbye from the client
        deadline = time.time() + 20
        while app_processes(home) and time.time() < deadline:
            time.sleep(0.2)
        assert app_processes(home) == [], "the app ended with its login"

        deadline = time.time() + 240
        while db.get_run(run.id).status == "running" and time.time() < deadline:
            time.sleep(0.5)
        assert db.get_run(run.id).status == "completed" and db.get_run(run.id).epochs_done == 4
        again = subprocess.run([*login, f"{leuktui} ls"], capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "over-ssh" in again.stdout and "completed" in again.stdout, again.stdout + again.stderr
    finally:
        terminal.close()
        daemon.stop(Workspace(home))
