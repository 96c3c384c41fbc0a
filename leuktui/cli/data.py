"""``leuktui data check|synth``: validate a dataset, or write a synthetic one in the lab's layout."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from db.errors import UserError
from leuktui.cli.common import (
    GLOBAL,
    Parser,
    UsageError,
    add_command,
    add_json,
    console,
    positive_int,
    print_json,
    seed_int,
    text,
)
from leuktui.formatting import percent as percent_text
from leuktui.formatting import visible


def add_commands(commands: Any) -> None:
    data = add_command(commands, "data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", parser_class=Parser, metavar="COMMAND", required=True)
    check = data_commands.add_parser("check", parents=[GLOBAL], help="validate a dataset and report on it")
    check.add_argument("dir", metavar="DIR")
    add_json(check)
    check.set_defaults(handler=cmd_data_check)
    synth = data_commands.add_parser("synth", parents=[GLOBAL], help="write a synthetic dataset in the lab's layout")
    synth.add_argument("dir", metavar="DIR")
    synth.add_argument("--n-train", type=positive_int, default=800)
    synth.add_argument("--n-valid", type=positive_int, default=200)
    synth.add_argument("--n-test", type=positive_int, default=200)
    synth.add_argument("--size", type=positive_int, default=128, help="image side in pixels (real images are 450)")
    synth.add_argument("--seed", type=seed_int, default=0, help="the images' random seed (default: 0)")
    synth.set_defaults(handler=cmd_data_synth)


def cmd_data_check(args: argparse.Namespace) -> int:
    from rich.text import Text

    from engine.datasets import check_dataset

    report = check_dataset(Path(args.dir))
    if args.json:
        print_json(report.to_dict())
        return 0 if report.ok else 1
    out = console()
    out.print(Text.assemble((visible(report.root), "bold"), f" ({report.layout} layout)"))
    for name, stats in report.splits.items():
        balance = f"  ALL {stats['all']}  HEM {stats['hem']} ({percent_text(stats['hem_fraction'])} HEM)" if "all" in stats else ""
        sizes = ", ".join(f"{size} ({n})" for size, n in stats.get("image_sizes", {}).items())
        out.print(text(f"  {name:<20} {stats['rows']:>6} rows{balance}  sizes: {sizes or '-'}"))
    for warning in report.warnings:
        out.print(Text.assemble(("warning:", "yellow"), f" {visible(warning)}"))
    for error in report.errors:
        out.print(Text.assemble(("error:", "red"), f" {visible(error)}"))
    out.print(Text.assemble(("ok", "green"), ": ready to train") if report.ok
              else Text.assemble((f"{len(report.errors)} problem(s)", "red"), " would break training"))
    return 0 if report.ok else 1


def cmd_data_synth(args: argparse.Namespace) -> int:
    from engine.synth import make_dataset

    try:
        root = make_dataset(args.dir, n_train=args.n_train, n_valid=args.n_valid, n_test=args.n_test, size=args.size, seed=args.seed)
    except UserError:
        raise
    except (FileExistsError, ValueError) as exc:  # the folder given, or a number out of range: the command line's
        raise UsageError(str(exc)) from None
    print(f"wrote {args.n_train} train, {args.n_valid} valid, {args.n_test} test images ({args.size}px) to {visible(root)}")
    return 0
