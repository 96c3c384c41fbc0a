"""Commands that weigh results: ``compare`` (runs, or ensembles, side by side with paired tests on
the same validation images) and ``ablation`` (the fair tables of the Ablation screen)."""

from __future__ import annotations

import argparse
from typing import Any

from db.errors import UserError
from db.vocabulary import METRICS, metric
from leuktui.cli.common import (
    UsageError,
    add_command,
    add_json,
    add_selection,
    console,
    open_workspace,
    positive_int,
    print_json,
    record_id,
    run_id_arg,
    text,
)
from leuktui.cli.evaluation import views_arg
from leuktui.formatting import is_final_fit
from leuktui.results import LAST_K

METRIC_KEYS = [m.key for m in METRICS]


def run_spec(value: str) -> list[int]:
    """``3`` (a run), ``3+4+5`` (the ensemble of those runs: their mean P(ALL)) or ``3,4,5``
    (seed replicates: their accuracies, compared by Welch's test)."""
    from leuktui.results import Replicates

    if "," in value and "+" in value:
        raise argparse.ArgumentTypeError(f"{value!r}: RUN+RUN is an ensemble, RUN,RUN replicates; not both")
    replicate = "," in value
    ids = [run_id_arg(part.strip()) for part in value.split("," if replicate else "+")]
    if len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"{value!r} names a run twice")
    return Replicates(ids) if replicate else ids


def add_commands(commands: Any) -> None:
    compare = add_command(commands, "compare", help="compare runs on the same validation images: metrics with their 95%% "
                                                    "intervals, the config diff, McNemar's test and the accuracy difference")
    compare.add_argument("runs", type=run_spec, nargs="+", metavar="RUN",
                         help="a run id, RUN+RUN+... for an ensemble, or RUN,RUN,... for seed replicates")
    compare.add_argument("--tta", "--eval-mode", dest="tta", type=views_arg, default=None, metavar="VIEWS",
                         help="compare these views of the best checkpoints (default: each run's own; others need `leuktui eval`)")
    compare.add_argument("--last-k", type=positive_int, default=LAST_K, metavar="K",
                         help=f"epochs of the last-k mean printed beside the best epoch (default {LAST_K})")
    add_json(compare)
    compare.set_defaults(handler=cmd_compare)

    ablation = add_command(commands, "ablation", help="ablation tables: cells of seed replicates with mean ± std, 95%% "
                                                      "intervals and a significance verdict per row")
    ablation.add_argument("runs", type=run_id_arg, nargs="*", metavar="RUN", help="the runs (default: every run with epochs)")
    ablation.add_argument("--sweep", type=record_id, help="the runs of this sweep")
    ablation.add_argument("--tag", help="the runs with this tag")
    ablation.add_argument("--rows", default="model", metavar="FIELD", help="the config field of the rows (default: model)")
    ablation.add_argument("--cols", metavar="FIELD", help="a config field, or tta for the views (default: as the app's screen "
                                                          "opens, the first other field the runs differ in, else tta)")
    ablation.add_argument("--metric", default="acc", type=metric_key, metavar="METRIC",
                          help=f"{'|'.join(METRIC_KEYS)}, or val_<metric> as --best-metric spells it (default: acc)")
    add_selection(ablation)
    output = ablation.add_mutually_exclusive_group()
    output.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    add_json(output)
    ablation.set_defaults(handler=cmd_ablation)


# -- compare ---------------------------------------------------------------------------------------


def _run_summary(run, evaluations, epochs, k: int, mode: str | None) -> dict[str, Any]:
    from leuktui.results import best_evaluation, best_value, last_k_mean, view_of

    source = best_evaluation(run, evaluations, mode)
    own = mode is None or mode == view_of(run)
    metrics = {}
    for m in METRICS:
        value = best_value(run, m.key) if own else (getattr(source, m.key) if source is not None else None)
        metrics[m.key] = {"value": value, "ci": source.interval(m.key) if source is not None else None}
    return {
        "id": run.id, "name": run.name, "status": run.status, "best_epoch": run.best_epoch,
        "views": mode or view_of(run), "evaluation": source.id if source is not None else None,
        "metrics": metrics, "last_k": {"k": k, **{m.key: last_k_mean(epochs, m.key, k) for m in METRICS}},
    }


def cmd_compare(args: argparse.Namespace) -> int:
    from leuktui.results import compare_pairs, config_diff

    specs: list[list[int]] = args.runs
    if len(specs) < 2:
        raise UsageError("compare: give two runs or more (RUN RUN ...; RUN+RUN for an ensemble)")
    from leuktui.results import Replicates

    # A run or an ensemble (RUN+RUN) against itself: every pair would be even. (Replicates that
    # share a run are refused by their own test: Welch's compares independent groups.)
    named = [None if isinstance(spec, Replicates) else frozenset(spec) for spec in specs]
    repeated = next((specs[index] for index, key in enumerate(named) if key is not None and key in named[:index]), None)
    if repeated is not None:
        raise UsageError(f"compare: {'+'.join(map(str, repeated))} is named twice")
    _, db = open_workspace(args, write=False)
    run_ids = sorted({run_id for spec in specs for run_id in spec})
    runs = {run.id: run for run in db.runs_by_id(run_ids)}
    missing = [run_id for run_id in run_ids if run_id not in runs]
    if missing:
        raise UserError(f"run {missing[0]}: no such run")
    evaluations = db.evaluations_of(run_ids)
    epochs = db.epochs_of(run_ids)
    summaries = [_run_summary(runs[run_id], evaluations, epochs[run_id], args.last_k, args.tta) for run_id in run_ids]
    differs = config_diff({run_id: runs[run_id].config for run_id in run_ids})
    pairs = compare_pairs(db, specs, args.tta)
    if args.json:
        print_json({"runs": summaries, "differs": {key: values for key, values in differs}, "pairs": pairs})
        return 0
    from rich.table import Table

    out = console()
    table = Table(box=None, header_style="bold", title="validation metrics at the best epoch, with 95% bootstrap intervals")
    for column in ("run", "name", "views", "best epoch", *(m.title for m in METRICS if m.key != "loss"), f"last-{args.last_k} acc"):
        table.add_column(column)
    from leuktui.results import interval_text

    for summary in summaries:
        cells = []
        for m in METRICS:
            if m.key == "loss":
                continue
            entry = summary["metrics"][m.key]
            cells.append(f"{m.format(entry['value'])} {interval_text(m.key, entry['ci'])}".strip())
        table.add_row(str(summary["id"]), text(summary["name"]), summary["views"], str(summary["best_epoch"] or "-"), *cells,
                      metric("acc").format(summary["last_k"]["acc"]))
    out.print(table)
    if differs:
        out.print(text("config differs in: " + "; ".join(f"{key} " + " / ".join(map(str, values)) for key, values in differs)))
    else:
        out.print("identical configs")
    for pair in pairs:
        verdict = "significant" if pair["significant"] else "no significant difference"
        adjusted = f" ({pair['adjustment'].replace('holm', 'Holm-adjusted')})" if pair["adjustment"] else ""
        out.print()
        if pair["test"] == "welch":
            low, high = pair["diff_ci"] or (None, None)
            interval = f"95% CI [{_points(low)}, {_points(high)}]" if low is not None else "no interval (no spread)"
            out.print(text(f"{pair['a_source']} vs {pair['b_source']}: {pair['n'][0]} and {pair['n'][1]} seeds"))
            out.print(text(f"  mean accuracy {metric('acc').format(pair['acc_a'])} ± {100 * pair['std_a']:.2f} vs "
                           f"{metric('acc').format(pair['acc_b'])} ± {100 * pair['std_b']:.2f}: difference {_points(pair['diff'])} "
                           f"points, {interval}"))
            p = "-" if pair["p"] is None else f"{pair['p']:.4g}"
            out.print(text(f"  Welch's t-test p = {p}: {verdict} at 0.05{adjusted}"))
            continue
        (both, only_a), (only_b, neither) = pair["table"]
        left_out = f" ({pair['left_out']} images only one side predicted left out)" if pair["left_out"] else ""
        out.print(text(f"{pair['a_source']} vs {pair['b_source']}: {pair['n']} validation images{left_out}"))
        out.print(text(f"  both right {both}, only {_name(pair['a'])} right {only_a}, only {_name(pair['b'])} right {only_b}, "
                       f"both wrong {neither}"))
        out.print(text(f"  accuracy {metric('acc').format(pair['acc_a'])} vs {metric('acc').format(pair['acc_b'])}: difference "
                       f"{_points(pair['diff'])} points, 95% CI [{_points(pair['diff_ci'][0])}, {_points(pair['diff_ci'][1])}] "
                       "(paired bootstrap)"))
        out.print(text(f"  exact McNemar p = {pair['mcnemar_p']:.4g}: {verdict} at 0.05{adjusted}"))
    return 0


def _name(side: Any) -> str:
    return f"run {side}" if isinstance(side, int) else "ensemble " + "+".join(map(str, side))


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


# -- ablation --------------------------------------------------------------------------------------


def metric_key(text: str) -> str:
    """``--metric``: a metric's key, or ``val_<key>`` as ``--best-metric`` and a study's ``--metric`` spell it."""
    try:
        return metric(text).key
    except KeyError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a metric (known: {', '.join(METRIC_KEYS)})") from None


def chosen_runs(db, args: argparse.Namespace) -> list:
    """The runs an ablation is about: named, in a sweep, tagged, or every run with epochs."""
    from db import NotFound

    if args.runs:
        found = {run.id: run for run in db.runs_by_id(args.runs)}
        for run_id in args.runs:
            if run_id not in found:
                raise UserError(f"run {run_id}: no such run")
            if is_final_fit(found[run_id]):  # not left out in silence: it was named
                raise UserError(f"run {run_id}: a final fit (trained on train + valid), so no validation score to tabulate; "
                                "leave it out")
        runs = list(found.values())
    else:
        runs = db.list_runs()
    if args.sweep is not None:
        try:
            db.get_sweep(args.sweep)
        except NotFound as exc:
            raise UserError(str(exc)) from None
        runs = [run for run in runs if run.sweep_id == args.sweep]
    if args.tag is not None:
        runs = [run for run in runs if args.tag in (run.tags or [])]
    return sorted((run for run in runs if run.best_epoch is not None), key=lambda run: run.id)


def check_factor(name: str, flag: str, *, views: bool) -> str:
    from engine.config import RunConfig

    fields = RunConfig.field_names()
    name = name.replace("-", "_")
    if views and name == "tta":
        return "tta"
    if name not in fields:
        raise UsageError(f"{flag}: {RunConfig.not_a_field(name, [*fields, 'tta'] if views else fields)}")
    return name


def cmd_ablation(args: argparse.Namespace) -> int:
    from leuktui.ablation import build, default_columns

    rows = check_factor(args.rows, "--rows", views=False)
    cols = None if args.cols is None else check_factor(args.cols, "--cols", views=True)
    if rows == cols:
        raise UsageError(f"--rows and --cols are both {rows}")
    _, db = open_workspace(args, write=False)
    runs = chosen_runs(db, args)
    if not runs:  # what the workspace holds, not the command line: exit 1, in the report's words
        what = " and ".join(part for part in (f"tag {args.tag!r}" if args.tag is not None else "",
                                              f"sweep {args.sweep}" if args.sweep is not None else "") if part)
        if what:
            raise UserError(f"no runs with recorded epochs have {what}" + (" among those named" if args.runs else ""))
        if args.runs:
            raise UserError(f"none of runs {', '.join(map(str, args.runs))} has recorded epochs yet")
        raise UserError("no run has recorded epochs yet; train one first (leuktui run)")
    cols = cols or default_columns(runs, rows)
    ids = [run.id for run in runs]
    epochs = db.epochs_of(ids) if args.select == "last" else None
    tables = build(runs, db.evaluations_of(ids), rows, cols, args.metric, selection=args.select, k=args.last_k,
                   epochs=epochs, load_predictions=db.predictions_of)
    if args.json:
        print_json({"tables": [table.to_dict() for table in tables]})
        return 0
    if args.markdown:
        print("\n".join(f"### {table.title}\n\n{table.to_markdown()}" for table in tables), end="")
        return 0
    from rich.table import Table
    from rich.text import Text

    out = console()
    for table in tables:
        shown = Table(box=None, header_style="bold", title=table.title)
        for header in (table.row_factor, *map(table.column_label, table.columns), "verdict"):
            shown.add_column(header)
        for row in table.rows:
            best = table.best_column(row)
            shown.add_row(text(str(row)), *(Text(table.cell_text(row, c), style="bold" if c == best else "") for c in table.columns),
                          text(table.verdict_text(row)))
        out.print(shown)
        for warning in (*table.warnings, *table.row_warnings.values()):
            out.print(text(f"warning: {warning}"))
        for note in dict.fromkeys(table.notes):
            out.print(text(f"note: {note}"))
        out.print(text(table.legend))
        out.print()
    return 0
