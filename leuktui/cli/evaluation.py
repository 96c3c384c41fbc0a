"""Commands that use a trained checkpoint or score a file: ``eval``, ``export``, ``score``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from db.vocabulary import CHECKPOINTS, eval_mode
from leuktui.cli.common import (
    add_command,
    add_json,
    metrics_line,
    open_workspace,
    phase_printer,
    print_json,
    run_id_arg,
)
from leuktui.formatting import evaluation_to_dict

VIEWS_HELP = "test-time views: single|five|ten (none is single)"


def views_arg(text: str) -> str:
    """The eval mode's key for ``--tta`` (``--eval-mode`` is the same flag)."""
    try:
        return eval_mode(text).key
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_views(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tta", "--eval-mode", dest="tta", type=views_arg, default="single", metavar="VIEWS",
                        help=f"{VIEWS_HELP} (default: single)")
    parser.add_argument("--checkpoint", default="best", choices=CHECKPOINTS, help="best|last (default: best)")


def add_commands(commands: Any) -> None:
    evaluate = add_command(commands, "eval", help="re-evaluate a run's checkpoint on the validation set")
    evaluate.add_argument("run", type=run_id_arg, metavar="RUN")
    add_views(evaluate)
    evaluate.add_argument("--split", default="valid", choices=("train", "valid"), help="train|valid (default: valid)")
    add_json(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    export = add_command(commands, "export", help="write the Kaggle submission CSV (ID,label); several runs make an ensemble")
    export.add_argument("run", type=run_id_arg, nargs="+", metavar="RUN", help="a run, or several: their ALL probabilities are averaged")
    export.add_argument("-o", "--output", help="output CSV (default: WORKSPACE/exports/run-RUN-VIEWS.csv, ensemble-RUN-RUN-VIEWS.csv, "
                                               "numbered past existing files)")
    export.add_argument("--test-csv", help="CSV with a Path column (default: the one matching the model depth)")
    add_views(export)
    export.add_argument("--proba", action="store_true", help="add a prob_all column with P(ALL)")
    export.add_argument("--force", action="store_true",
                        help="replace an existing -o file (a recorded submission there is kept aside, renamed)")
    export.set_defaults(handler=cmd_export)

    score = add_command(commands, "score", help="score a submission against an answer key")
    score.add_argument("file", metavar="FILE", help="submission CSV (ID,label)")
    score.add_argument("--key", required=True, help="answer key CSV (ID,label or Path,label)")
    add_json(score)
    score.set_defaults(handler=cmd_score)


def cmd_eval(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args)
    from engine.predict import evaluate_run

    evaluation, metrics = evaluate_run(db, workspace, args.run, tta=args.tta, checkpoint=args.checkpoint, split=args.split,
                                       on_phase=phase_printer())
    if args.json:
        print_json(evaluation_to_dict(evaluation))
    else:
        print(f"run {args.run} {evaluation.checkpoint} (epoch {evaluation.epoch}) on {evaluation.split}, {evaluation.tta}: {metrics_line(metrics)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args)
    from engine.ensemble import export_runs

    run_ids = list(dict.fromkeys(args.run))
    output = Path(args.output) if args.output else workspace.export_path(run_ids, args.tta)
    if not args.output:
        output.parent.mkdir(parents=True, exist_ok=True)
    path, rows = export_runs(db, workspace, run_ids, output, test_csv=args.test_csv, tta=args.tta,
                             checkpoint=args.checkpoint, proba=args.proba, force=args.force, on_phase=phase_printer())
    print(f"wrote {rows} rows to {path}")
    submission = db.submission_for_path(str(path))
    print(f"recorded as submission {submission.id}; add its leaderboard score with: leuktui submissions score {submission.id} SCORE")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from engine.scoring import score_submission
    from leuktui.cli.report import record_key_score, refuse_submission_as_key

    refuse_submission_as_key(getattr(args, "home", None), args.key)
    metrics = score_submission(args.file, args.key)
    if args.json:
        print_json(metrics)
    else:
        (tn, fp), (fn, tp) = metrics["confusion"]
        print(f"{args.file}: {metrics['n']} rows  {metrics_line(metrics)}")
        print(f"confusion (rows true HEM/ALL, columns predicted HEM/ALL): [[{tn}, {fp}], [{fn}, {tp}]]")
    submission_id = record_key_score(getattr(args, "home", None), args.file, metrics)
    if submission_id is not None and not args.json:
        print(f"recorded accuracy {metrics['acc']:.5f} as the score of submission {submission_id}")
    return 0

