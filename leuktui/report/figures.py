"""The report's figures, drawn with matplotlib's headless Agg renderer.

Each ``*_plot`` function returns a ``Plot``: the matplotlib figure and the numbers it draws, so
tests check the data plotted against the database rather than pixels. A run keeps one style
(colour, line style, marker) in every figure; line styles and markers tell the runs apart when
the report is printed in black and white.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from db.vocabulary import COMPLETED, PRUNED
from leuktui.report.data import RunRecord
from leuktui.results import view_label

# Okabe and Ito's colour-blind-safe palette (black last: it prints like the axes).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DPI = 200           # PNG resolution: the 8.5-inch comparison figures come out 1700 px wide
CLASS_NAMES = ("HEM (0)", "ALL (1)")
RC = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6, "svg.fonttype": "none",
    "svg.hashsalt": "leuktui",
}


@dataclass(frozen=True)
class Style:
    colour: str
    line_style: str
    marker: str


def style_of(index: int) -> Style:
    """The style of the ``index``-th run of a report (all combinations differ for 8 runs, and
    colour and line style together for 8 x 4)."""
    return Style(COLOURS[index % len(COLOURS)], LINE_STYLES[(index // len(COLOURS) + index) % len(LINE_STYLES)], MARKERS[index % len(MARKERS)])


@dataclass
class Plot:
    name: str        # file stem under figures/
    caption: str
    figure: Figure
    data: dict[str, Any] = field(default_factory=dict)

    def save(self, folder: Path) -> tuple[Path, Path]:
        png, svg = folder / f"{self.name}.png", folder / f"{self.name}.svg"
        self.figure.savefig(png, dpi=DPI, metadata={"Software": None})
        # The layout is settled by the first save; solving it again would cost a third of the time.
        self.figure.set_layout_engine("none")
        self.figure.savefig(svg, metadata={"Date": None})
        return png, svg


def _new_figure(width: float, height: float, **kwargs) -> tuple[Figure, Any]:
    """A figure outside pyplot (no GUI backend, nothing to close, nothing shared between threads);
    saving it renders with Agg (PNG) or the SVG backend."""
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(**kwargs)


def _markevery(n: int) -> int:
    return max(1, n // 12)


# -- learning curves --------------------------------------------------------------------------------

CURVES = {
    "accuracy": ("train_acc", "val_acc", "accuracy"),
    "loss": ("train_loss", "val_loss", "loss"),
}


def curve_data(records: Sequence[RunRecord], kind: str) -> dict[int, dict[str, list]]:
    """``{run id: {"epoch": [...], "train": [...], "valid": [...]}}`` from the epoch rows."""
    train_column, valid_column, _ = CURVES[kind]
    return {
        record.id: {
            "epoch": [e.epoch for e in record.epochs],
            "train": [getattr(e, train_column) for e in record.epochs],
            "valid": [getattr(e, valid_column) for e in record.epochs],
        }
        for record in records
    }


def curves_plot(records: Sequence[RunRecord], kind: str) -> Plot:
    """Training and validation ``kind`` (accuracy or loss) per epoch, the runs overlaid."""
    data = curve_data(records, kind)
    label = CURVES[kind][2]
    with matplotlib.rc_context(RC):
        figure, axes = _new_figure(8.5, 3.6, ncols=2, sharey=True)
        labelled = False
        for index, record in enumerate(records):
            style = style_of(index)
            series = data[record.id]
            named = False  # each run once in the legend, from whichever side it has points on
            for axis, split in zip(axes, ("train", "valid"), strict=True):
                points = [(x, y) for x, y in zip(series["epoch"], series[split], strict=True) if y is not None]
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, color=style.colour, linestyle=style.line_style, marker=style.marker, markersize=4,
                          markevery=_markevery(len(xs)), linewidth=1.6, label=None if named else record.label)
                named = labelled = True
        for axis, title in zip(axes, ("training", "validation"), strict=True):
            axis.set_title(f"{title} {label}")
            axis.set_xlabel("epoch")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].set_ylabel(label)
        if kind == "accuracy":
            axes[0].yaxis.set_major_formatter(PercentFormatter(xmax=1))
        if labelled:
            figure.legend(loc="outside lower center", ncols=min(4, max(1, len(records))), frameon=False)
    caption = f"Training (left) and validation (right) {label} per epoch."
    return Plot(label, caption, figure, data)


# -- confusion matrices -----------------------------------------------------------------------------


def confusion_data(record: RunRecord) -> dict[str, Any]:
    """The best epoch's confusion matrix ``[[TN, FP], [FN, TP]]`` and its rows normalized."""
    best = record.best
    counts = np.asarray(best.confusion if best is not None and best.confusion else [[0, 0], [0, 0]], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    return {"epoch": best.epoch if best is not None else None, "counts": counts.astype(int).tolist(), "normalized": normalized.tolist()}


def confusion_plot(record: RunRecord) -> Plot:
    """A heat map of the normalized confusion matrix; rows are the true class."""
    data = confusion_data(record)
    normalized, counts = np.asarray(data["normalized"]), data["counts"]
    with matplotlib.rc_context({**RC, "axes.grid": False, "font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12}):
        figure, axis = _new_figure(6.0, 5.0)
        axis.imshow(normalized, cmap="Blues", vmin=0.0, vmax=1.0)
        for row in range(2):
            for column in range(2):
                value = normalized[row, column]
                axis.text(column, row, f"{100 * value:.1f}%\n({counts[row][column]})", ha="center", va="center",
                          fontsize=14, color="white" if value > 0.55 else "black")
        axis.set_xticks([0, 1], labels=CLASS_NAMES)
        axis.set_yticks([0, 1], labels=CLASS_NAMES)
        axis.set_xlabel("predicted class")
        axis.set_ylabel("true class")
        axis.set_title(f"run {record.label} · epoch {data['epoch']}")
    caption = (f"Normalized confusion matrix of run {record.prose_label} at its best epoch ({data['epoch']}) on the "
               "validation set: each row sums to 100%; counts in brackets.")
    return Plot(f"confusion-run-{record.id}", caption, figure, data)


# -- ROC curves -------------------------------------------------------------------------------------


def roc_points(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, float]:
    """False- and true-positive rates at every distinct threshold (highest first), and the AUC
    by the trapezoid rule; the same curve as scikit-learn's ``roc_curve``."""
    score = np.asarray(scores, dtype=float)
    truth = np.asarray(labels, dtype=int)
    positives, negatives = int(truth.sum()), int(len(truth) - truth.sum())
    if positives == 0 or negatives == 0:
        raise ValueError("a ROC curve needs both classes")
    order = np.argsort(-score, kind="mergesort")
    score, truth = score[order], truth[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    true_positives = np.cumsum(truth)[last_of_threshold]
    false_positives = (last_of_threshold + 1) - true_positives
    tpr = np.r_[0.0, true_positives / positives]
    fpr = np.r_[0.0, false_positives / negatives]
    return fpr, tpr, float(np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr))


def roc_data(records: Sequence[RunRecord]) -> dict[int, dict[str, Any]]:
    out = {}
    for record in records:
        if not record.roc_points:
            continue
        scores, labels = zip(*record.roc_points, strict=True)
        if len(set(labels)) < 2:
            continue
        fpr, tpr, auc = roc_points(scores, labels)
        evaluation = record.roc_evaluation
        out[record.id] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": auc, "evaluation": evaluation.id, "tta": evaluation.tta,
                          "epoch": evaluation.epoch, "n": len(labels)}
    return out


def roc_plot(records: Sequence[RunRecord]) -> Plot | None:
    """ROC curves of the runs with recorded validation predictions, in one figure."""
    data = roc_data(records)
    if not data:
        return None
    with matplotlib.rc_context(RC):
        figure, axis = _new_figure(6.5, 6.0)
        axis.plot([0, 1], [0, 1], color="#888888", linestyle=":", linewidth=1, label="chance")
        for index, record in enumerate(records):
            if record.id not in data:
                continue
            style = style_of(index)
            curve = data[record.id]
            axis.plot(curve["fpr"], curve["tpr"], color=style.colour, linestyle=style.line_style, marker=style.marker,
                      markersize=4, markevery=_markevery(len(curve["fpr"])), linewidth=1.6,
                      label=f"{record.label} (AUC {curve['auc']:.4f})")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.01)
        axis.set_aspect("equal")
        axis.set_xlabel("false-positive rate (1 - specificity)")
        axis.set_ylabel("true-positive rate (sensitivity)")
        axis.set_title("ROC curves on the validation set")
        axis.legend(loc="lower right")
    missing = [record.prose_label for record in records if record.id not in data]
    sources = "; ".join(
        f"{record.prose_label}: {view_label(data[record.id]['tta'])} of epoch {data[record.id]['epoch']}" for record in records if record.id in data
    )
    caption = ("ROC curves from the recorded validation predictions of each run's best checkpoint (ALL is the positive class); "
               f"the evaluations behind them: {sources}.")
    if missing:
        caption += f" No predictions recorded for {', '.join(missing)}: `leuktui eval RUN` or `leuktui report --evaluate` records them."
    return Plot("roc", caption, figure, data)


# -- preprocessing examples -------------------------------------------------------------------------


def examples_plot(originals: Sequence[tuple[str, Any]], settings: Sequence[tuple[str, Sequence[Any]]]) -> Plot:
    """A grid: each row a training image (``(caption, PIL image)``), the first column as stored,
    then one column per preprocessing setting the runs used (``(title, images)``)."""
    rows, columns = len(originals), 1 + len(settings)
    with matplotlib.rc_context({**RC, "axes.grid": False}):
        figure, axes = _new_figure(max(8.5, 1.9 * columns), 2.0 * rows + 0.6, nrows=rows, ncols=columns, squeeze=False)
        titles = ["as stored", *(title for title, _ in settings)]
        for row, (caption, image) in enumerate(originals):
            cells = [image, *(images[row] for _, images in settings)]
            for column, cell in enumerate(cells):
                axis = axes[row][column]
                axis.imshow(np.asarray(cell))
                axis.set_xticks([])
                axis.set_yticks([])
                if row == 0:
                    axis.set_title(titles[column], fontsize=9)
                if column == 0:
                    axis.set_ylabel(caption, fontsize=9)
    data = {"images": [caption for caption, _ in originals], "columns": titles}
    caption = "Training images as stored, then as each preprocessing setting of the runs gives them to the network."
    return Plot("preprocessing", caption, figure, data)


# -- the model's mistakes ----------------------------------------------------------------------------


def mistakes_plot(record: RunRecord, kinds: Sequence[tuple[str, Sequence[tuple[str, Any, Any]]]]) -> Plot:
    """A run's most confident mistakes: a row per kind (``(title, [(caption, image, map or
    None), ...])``), each mistake as two cells, the image as stored and its Grad-CAM map."""
    width = max(len(items) for _, items in kinds)
    with matplotlib.rc_context({**RC, "axes.grid": False}):
        figure, axes = _new_figure(max(6.0, 3.2 * width), 2.0 * len(kinds) + 0.7, nrows=len(kinds), ncols=2 * width, squeeze=False)
        for row, (title, items) in enumerate(kinds):
            for column in range(2 * width):
                axis = axes[row][column]
                axis.set_xticks([])
                axis.set_yticks([])
                index, is_map = divmod(column, 2)
                if index >= len(items):
                    axis.set_axis_off()
                    continue
                caption, image, heat = items[index]
                if is_map and heat is None:
                    axis.text(0.5, 0.5, "no map yet", ha="center", va="center", fontsize=8, color="#5b6475")
                    for spine in axis.spines.values():
                        spine.set_visible(False)
                else:
                    axis.imshow(np.asarray(heat if is_map else image))
                axis.set_title("Grad-CAM" if is_map else caption, fontsize=8)
                if column == 0:
                    axis.set_ylabel(title, fontsize=9)
    data = {title: [caption for caption, _, _ in items] for title, items in kinds}
    caption = (f"Run {record.prose_label}: its most confident mistakes on the validation set, each beside the Grad-CAM map of the "
               "class it predicted (what the last convolutional block looked at: the last whose map is at least 4x4 cells).")
    return Plot(f"mistakes-run-{record.id}", caption, figure, data)


# -- studies ----------------------------------------------------------------------------------------


def study_history_data(summary: dict[str, Any]) -> dict[str, list]:
    """Each ended trial's value by trial number, and the best so far after each completed one."""
    ended = sorted((t for t in summary["trials"] if t["value"] is not None and t["status"] in (COMPLETED, PRUNED)),
                   key=lambda t: t["trial"])
    maximize = summary["direction"] == "maximize"
    best, best_so_far = None, []
    for trial in ended:
        if trial["status"] == COMPLETED and (best is None or (trial["value"] > best if maximize else trial["value"] < best)):
            best = trial["value"]
        best_so_far.append(best)
    return {"trial": [t["trial"] for t in ended], "value": [t["value"] for t in ended],
            "status": [t["status"] for t in ended], "best": best_so_far}


def study_history_plot(summary: dict[str, Any]) -> Plot:
    """Optuna's optimization history: every trial's value, and the best value so far."""
    data = study_history_data(summary)
    with matplotlib.rc_context(RC):
        figure, axis = _new_figure(6.5, 3.4)
        for status, marker, face in ((COMPLETED, "o", COLOURS[0]), (PRUNED, "x", COLOURS[1])):
            points = [(x, y) for x, y, s in zip(data["trial"], data["value"], data["status"], strict=True) if s == status]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.scatter(xs, ys, marker=marker, color=face, label=f"{status} trial", zorder=3)
        steps = [(x, y) for x, y in zip(data["trial"], data["best"], strict=True) if y is not None]
        if steps:
            xs, ys = zip(*steps, strict=True)
            axis.step(xs, ys, where="post", color=COLOURS[2], linewidth=1.6, label="best so far")
        axis.set_xlabel("trial")
        axis.set_ylabel(summary["metric"])
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if summary["metric"] != "val_loss" and metric_kind(summary["metric"]) == "ratio":
            axis.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        axis.legend(frameon=False)
    caption = (f"Study '{summary['name']}': each trial's {summary['metric']} (a pruned trial's at the epoch it stopped) "
               "and the best completed so far.")
    return Plot(f"study-{summary['id']}-history", caption, figure, data)


def metric_kind(name: str) -> str:
    from db.vocabulary import metric

    return metric(name).kind
