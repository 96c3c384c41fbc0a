"""``leuktui scheduler start|stop|status``: the background process that works the queue. The
``--backend`` choices and each backend's own flags come from the backends registered under
``leuktui.backends``."""

from __future__ import annotations

import argparse
from typing import Any

from leuktui.cli.common import (
    UsageError,
    add_command,
    add_json,
    positive_int,
    print_json,
    refuse_unwritable_database,
    seconds_arg,
    workspace_of,
)


def add_commands(commands: Any, *, backends: bool = True) -> None:
    """``backends``: look up the installed backends for ``--backend`` and their flags (an entry
    point scan, 15 ms): done only when the command line is the scheduler's."""
    from runner.backends import BUILT_IN, all_options, available

    scheduler = add_command(commands, "scheduler", help="the background process that works the queue")
    scheduler.add_argument("action", choices=["start", "stop", "status"])
    scheduler.add_argument("--max-parallel", type=positive_int, help="concurrent runs without GPUs (default 1)")
    scheduler.add_argument("--per-gpu", type=positive_int, help="concurrent runs per GPU (default 1)")
    scheduler.add_argument("--idle-timeout", type=seconds_arg, metavar="SECONDS", help="exit after this long idle (default 300)")
    names = available() if backends else list(BUILT_IN)
    scheduler.add_argument("--backend", choices=names, help=f"where runs go: {', '.join(names)} (default local)")
    for option in all_options().values() if backends else ():
        kind = {"integer": int, "number": float}.get(option.kind)
        scheduler.add_argument(option.flag_name, dest=f"backend_{option.key}", metavar=option.metavar, help=option.help,
                               action="append" if option.kind == "texts" else "store", **({"type": kind} if kind else {}))
    scheduler.add_argument("--foreground", action="store_true", help="run in this terminal (start only)")
    add_json(scheduler)
    scheduler.set_defaults(handler=cmd_scheduler)


def cmd_scheduler(args: argparse.Namespace) -> int:
    from runner import daemon
    from runner.backends import all_options, backend_class
    from runner.gpus import detect_gpus
    from runner.options import Options

    if args.json and args.action != "status":
        raise UsageError(f"--json: `leuktui scheduler {args.action}` has no JSON output (status has)")
    # `scheduler start` sets a workspace up (a cluster's first command), so it may make one.
    if args.action != "status":
        refuse_unwritable_database()
    # status and stop read the pid and lock files only: a damaged database moved away leaves them to act on.
    workspace = workspace_of(args, create=args.action == "start", write=args.action != "status", database=False)
    if args.action == "status":
        pid = daemon.running_pid(workspace)
        options = Options.load(workspace)
        if args.json:
            every_key = {option.key: None for option in backend_class(options.backend).options}
            print_json({"running": bool(pid), "pid": pid, "options": {**every_key, **options.to_dict()}, "gpus": detect_gpus()})
        else:
            state = f"running, pid {pid}" if pid else "not running"
            settings = backend_class(options.backend).describe_settings(options.settings)
            where = options.backend + (f" ({settings})" if settings else "")
            print(f"scheduler {state}; backend {where}; max_parallel {options.max_parallel}, "
                  f"per_gpu {options.per_gpu}, idle timeout {options.idle_timeout:.0f} s")
        return 0
    if args.action == "stop":
        pid = daemon.stop(workspace)
        print(f"scheduler {pid} stopped; running workers carry on" if pid else "scheduler was not running")
        return 0
    options = Options.load(workspace)
    for name in ("max_parallel", "per_gpu", "idle_timeout", "backend"):
        if getattr(args, name) is not None:
            setattr(options, name, getattr(args, name))
    backend = backend_class(options.backend)
    for key, option in all_options().items():
        value = getattr(args, f"backend_{key}", None)
        if value is None:
            continue
        if option not in backend.options:
            raise UsageError(f"{option.flag_name}: not an option of the {options.backend} backend")
        options.settings[key] = value
    # Settings the new backend does not know are dropped, not carried into its scheduler.json.
    options.settings = {key: value for key, value in options.settings.items() if any(o.key == key for o in backend.options)}
    backend.check(options.settings)
    options.save(workspace)
    if args.foreground:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        return daemon.serve(workspace, options)
    pid = daemon.running_pid(workspace)
    if pid:
        print(f"scheduler already running (pid {pid}); new options apply from its next start")
        return 0
    print(f"scheduler started (pid {daemon.start_detached(workspace)}); log: {workspace.home / daemon.LOG_FILE}")
    return 0
