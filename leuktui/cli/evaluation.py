"""Commands that use a trained checkpoint or score a file: ``eval``, ``export``, ``score``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from db.vocabulary import CHECKPOINTS, eval_mode
from leuktui.cli.common import (
    UsageError,
    add_command,
    add_json,
    metrics_line,
    open_workspace,
    phase_printer,
    print_json,
    run_id_arg,
)
from leuktui.formatting import evaluation_to_dict, visible

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

    mistakes = add_command(commands, "mistakes", help="the validation images a checkpoint gets wrong: false negatives and "
                                                      "false positives, most confident first, with Grad-CAM maps on --cam")
    mistakes.add_argument("run", type=run_id_arg, metavar="RUN")
    mistakes.add_argument("--tta", "--eval-mode", dest="tta", type=views_arg, default=None, metavar="VIEWS",
                          help=f"{VIEWS_HELP} (default: the run's own)")
    mistakes.add_argument("--checkpoint", default="best", choices=CHECKPOINTS, help="best|last (default: best)")
    mistakes.add_argument("--cam", action="store_true", help="draw the Grad-CAM of the predicted class over each image (cached PNGs)")
    mistakes.add_argument("--limit", type=int, default=None, metavar="N",
                          help="the N most confident of each kind only (and their maps)")
    mistakes.add_argument("-o", "--output", metavar="DIR", help="also copy the images (and maps) there, with mistakes.csv")
    add_json(mistakes)
    mistakes.set_defaults(handler=cmd_mistakes)

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
    print(f"wrote {rows} rows to {visible(path)}")
    submission = db.submission_for_path(str(path))
    print(f"recorded as submission {submission.id}; add its leaderboard score with: leuktui submissions score {submission.id} SCORE")
    return 0


def mistake_list(db, workspace, run_id: int, *, tta: str | None, checkpoint: str, on_phase=None):
    """``leuktui.mistakes.Mistakes`` of ``run_id``'s checkpoint in views ``tta``, its evaluation
    recorded first if it is not yet."""
    from leuktui.mistakes import chosen_evaluation, mistakes_of
    from leuktui.results import view_of

    run = db.get_run(run_id)
    evaluation = chosen_evaluation(db, run, tta=tta, checkpoint=checkpoint)
    if evaluation is None:
        from engine.predict import evaluate_run

        evaluation, _ = evaluate_run(db, workspace, run_id, tta=tta or view_of(run), checkpoint=checkpoint, on_phase=on_phase)
    return mistakes_of(db, run, evaluation)


def check_output_folder(folder: Path) -> None:
    """``-o DIR`` must be new or empty, in a folder that exists: refused before any work."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder}: exists and is not an empty folder; nothing written")
    parent = folder.parent if str(folder.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{parent}: no such folder to write {folder.name} in")
    import tempfile

    try:  # the folder is written beside its name, then renamed: a parent that takes nothing new is refused now
        with tempfile.TemporaryDirectory(dir=parent, prefix=f".{folder.name}.tmp-"):
            pass
    except OSError as exc:
        raise UsageError(f"{folder}: cannot be written in {parent} ({exc.strerror or exc}); nothing written") from None


def cmd_mistakes(args: argparse.Namespace) -> int:
    from leuktui.mistakes import FALSE_NEGATIVES, FALSE_POSITIVES, counted

    workspace, db = open_workspace(args)
    if args.output:
        check_output_folder(Path(args.output))
        from engine.datasets import dataset_holding

        dataset = dataset_holding(args.output, [db.get_run(args.run).config.get("data_dir")])
        if dataset is not None:
            raise UsageError(f"{args.output}: inside the dataset folder {dataset}; the mistakes' copies never go among its files")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit: {args.limit} is not a count of images (1 or more)")
    mistakes = mistake_list(db, workspace, args.run, tta=args.tta, checkpoint=args.checkpoint, on_phase=phase_printer())
    evaluation = mistakes.evaluation
    kinds = {kind: mistakes.of(kind)[:args.limit] for kind in (FALSE_NEGATIVES, FALSE_POSITIVES)}
    shown = [m for items in kinds.values() for m in items]
    cams: dict[str, str] = {}
    if args.cam and shown:
        from engine.cam import grad_cams

        # A mistake whose image is gone from the split or the disk gets no map; the others do.
        drawable = [m for m in shown if m.id in mistakes.samples and mistakes.samples[m.id].path.is_file()]
        phase = phase_printer()
        maps = grad_cams(db, workspace, args.run, [mistakes.samples[m.id] for m in drawable], [m.predicted for m in drawable],
                         checkpoint=evaluation.checkpoint, epoch=evaluation.epoch,
                         on_progress=(lambda done, total: phase("drawing Grad-CAM maps", done, total)) if phase else None)
        cams = {m.id: str(path) for m, path in zip(drawable, maps, strict=True)}
    found = {
        "run": args.run, "evaluation": evaluation.id, "checkpoint": evaluation.checkpoint, "epoch": evaluation.epoch,
        "views": evaluation.tta, "n": evaluation.n, "confusion": evaluation.confusion,
        "false_negatives": [{**m.to_dict(), "cam": cams.get(m.id)} for m in kinds[FALSE_NEGATIVES]],
        "false_positives": [{**m.to_dict(), "cam": cams.get(m.id)} for m in kinds[FALSE_POSITIVES]],
    }
    if args.output:
        write_mistakes(Path(args.output), found)
    if args.json:
        print_json(found)
        return 0
    from leuktui.cli.common import console, text
    from leuktui.results import view_label

    out = console()
    (tn, fp), (fn, tp) = found["confusion"] or [[0, 0], [0, 0]]
    out.print(text(f"run {args.run}, {found['checkpoint']} checkpoint (epoch {found['epoch']}), {view_label(found['views'])}, "
                   f"{found['n']} validation images: {counted(fn, FALSE_NEGATIVES)} (ALL called HEM), "
                   f"{counted(fp, FALSE_POSITIVES)} (HEM called ALL)"))
    for title, items, total in (("false negatives", found["false_negatives"], fn), ("false positives", found["false_positives"], fp)):
        if items:
            out.print()
            out.print(text(f"{title}, most confident first{f' ({len(items)} of {total})' if len(items) < total else ''}:"))
        for item in items:
            out.print(text(f"  P(ALL) {item['probability']:.3f}  {item['id']}" + (f"  cam: {item['cam']}" if item["cam"] else "")))
    return 0


def write_mistakes(folder: Path, found: dict) -> None:
    """``mistakes.csv`` and a copy of each image (and its map) in ``folder``, written whole or
    not at all."""
    import csv
    import shutil
    import tempfile

    check_output_folder(folder)
    parent = folder.parent if str(folder.parent) else Path(".")
    try:
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{folder.name}.tmp-"))
    except OSError as exc:
        raise UsageError(f"{folder}: cannot be written in {parent} ({exc.strerror or exc}); nothing written") from None
    try:
        with (staging / "mistakes.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["kind", "rank", "id", "label", "probability", "image", "cam"])
            for kind, items in (("false_negative", found["false_negatives"]), ("false_positive", found["false_positives"])):
                for rank, item in enumerate(items, start=1):
                    image = cam = ""
                    if item["image"]:
                        image = f"{kind}-{rank:03d}{Path(item['image']).suffix}"
                        shutil.copyfile(item["image"], staging / image)
                    if item.get("cam"):
                        cam = f"{kind}-{rank:03d}-cam.png"
                        shutil.copyfile(item["cam"], staging / cam)
                    writer.writerow([kind, rank, item["id"], item["label"], f"{item['probability']:.6f}", image, cam])
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)
    except OSError as exc:  # a disk that filled, a folder that went read-only as the images were copied
        shutil.rmtree(staging, ignore_errors=True)
        raise UsageError(f"{folder}: writing the mistakes failed ({exc.strerror or exc}); nothing written") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def cmd_score(args: argparse.Namespace) -> int:
    from engine.scoring import score_submission
    from leuktui.cli.report import record_key_score, refuse_submission_as_key

    refuse_submission_as_key(getattr(args, "home", None), args.key)
    metrics = score_submission(args.file, args.key)
    if args.json:
        print_json(metrics)
    else:
        (tn, fp), (fn, tp) = metrics["confusion"]
        print(f"{visible(args.file)}: {metrics['n']} rows  {metrics_line(metrics)}")
        print(f"confusion (rows true HEM/ALL, columns predicted HEM/ALL): [[{tn}, {fp}], [{fn}, {tp}]]")
    submission_id = record_key_score(getattr(args, "home", None), args.file, metrics)
    if submission_id is not None and not args.json:
        print(f"recorded accuracy {metrics['acc']:.5f} as the score of submission {submission_id}")
    return 0

