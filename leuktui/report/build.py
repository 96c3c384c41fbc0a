"""Building a report folder: ``report.md``, a self-contained ``report.html`` (figures embedded),
``figures/*.png`` and ``*.svg``, and ``tables/*.csv``.

The folder is assembled under a temporary name beside the destination and renamed into place
when complete, so a failure leaves no half-written report (and an older report in the same
folder stays until the new one replaces it).
"""

from __future__ import annotations

import base64
import contextlib
import html
import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db import Database, Workspace
from db.models import Run
from db.vocabulary import metric
from db.workspace import folder_permissions
from engine.studies import StudyError
from leuktui.formatting import visible
from leuktui.report.data import (
    LITERAL,
    ReportData,
    ReportError,
    RunRecord,
    collect,
    final_fits_alone,
    literal,
)
from runner.studies import importances as study_importances
from runner.studies import overview as study_overview

EXAMPLE_IMAGES = 4      # training images in the preprocessing figure, half of each class
GALLERY = 3             # mistakes of each kind per run in the gallery, the most confident first
REPORT_FILES = ("report.md", "report.html")
REPORT_FOLDERS = ("figures", "tables")
SIGNATURE = " by leuktui from the workspace "  # in every report's subtitle
Progress = Callable[[int, int, str], None]


@dataclass
class ReportResult:
    folder: Path
    run_ids: list[int]
    figures: list[str]                      # file stems under figures/
    tables: list[str]                       # file stems under tables/
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: import, query, draw, write, total


# -- the destination folder -------------------------------------------------------------------------


def check_destination(folder: Path) -> None:
    """Refuse, in one line, a folder the report cannot be written to or must not replace."""
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not _holds_a_report(folder):
            raise ReportError(f"{folder}: folder is not empty and holds no report of leuktui's; choose another folder")
        # A new report replaces the whole folder: whatever else is in it would go with the old one.
        foreign = sorted(entry.name for entry in folder.iterdir()
                         if not (entry.name in REPORT_FILES and entry.is_file() or entry.name in REPORT_FOLDERS and entry.is_dir()))
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise ReportError(f"{folder}: holds {foreign[0]!r}{more}, which a report does not write and a new one would replace; "
                              "choose another folder, or move it out")
    parent = folder.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ReportError(f"{parent}: folder is not writable")


def _holds_a_report(folder: Path) -> bool:
    """Whether ``folder``'s report.md or report.html is one leuktui wrote (its subtitle says so near
    the top), not a write-up of the user's that happens to have the name."""
    for name in REPORT_FILES:
        with contextlib.suppress(OSError), (folder / name).open("rb") as file:
            if SIGNATURE.encode() in file.read(64 * 1024):
                return True
    return False


def _publish(staging: Path, folder: Path) -> None:
    """Move the finished ``staging`` folder to ``folder``, replacing an older report there."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
        os.replace(folder, old / folder.name)
    try:
        os.replace(staging, folder)
    except OSError:
        if old is not None:
            os.replace(old / folder.name, folder)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# -- preprocessing examples ---------------------------------------------------------------------------


def _setting_title(preprocess: Any) -> str:
    steps = [name for name, on in (("crop to cell", preprocess.crop_to_cell), ("hist. eq.", preprocess.hist_eq)) if on]
    steps.append(f"{preprocess.size} px")
    if preprocess.center_crop:
        steps.append(f"centre crop {preprocess.output_size} px")
    return " → ".join(steps)


def example_samples(records: Sequence[RunRecord]) -> tuple[Path | None, list, list[str]]:
    """A few training images (half ALL, half HEM) of the first run whose dataset is readable here:
    ``(its data folder, the samples, [])``, or ``(None, [], why not for each folder)``."""
    from engine.datasets import DatasetError, load_split

    problems = []
    for data_dir in dict.fromkeys(Path(record.config.get("data_dir", "")) for record in records):
        try:
            split = load_split(data_dir, "train")
        except (DatasetError, OSError) as exc:
            problems.append(str(exc))
            continue
        by_class: dict[int, list] = {1: [], 0: []}
        for sample in split.samples:
            if sample.label in by_class and len(by_class[sample.label]) < EXAMPLE_IMAGES // 2:
                by_class[sample.label].append(sample)
        samples = by_class[1] + by_class[0]
        if samples:
            return data_dir, samples, []
        problems.append(f"{split.source} lists no images")
    return None, [], problems


def example_cam_run(workspace: Workspace, records: Sequence[RunRecord], data_dir: Path) -> int | None:
    """The run whose Grad-CAM of the example cells the figure shows: the first on their dataset
    with a best checkpoint here."""
    for record in records:
        if Path(record.config.get("data_dir", "")) == data_dir and workspace.checkpoint_path(record.id, "best").is_file():
            return record.id
    return None


def example_images(records: Sequence[RunRecord], workspace: Workspace | None = None) -> tuple[list, list, str | None]:
    """The example training images (``example_samples``), and what each preprocessing setting of
    the runs on that dataset makes of them, and, where ``workspace`` has them cached, the
    Grad-CAM maps of each cell's own class by one of the runs; or a note saying why there are
    none. The steps are the pipeline's own (``engine.preprocess``)."""
    from PIL import Image

    from engine.config import ConfigError, RunConfig
    from engine.preprocess import Preprocess

    data_dir, samples, problems = example_samples(records)
    if data_dir is None:
        return [], [], f"no example images: the training data is not readable here ({'; '.join(map(literal, problems))})"

    settings: dict[Preprocess, list[int]] = {}
    known = RunConfig.field_names()
    for record in records:
        if Path(record.config.get("data_dir", "")) != data_dir:
            continue
        try:
            config = RunConfig.from_dict({k: v for k, v in record.config.items() if k in known})
        except ConfigError:
            continue  # a config an older version accepted; its run still has its tables and figures
        settings.setdefault(Preprocess.from_config(config), []).append(record.id)
    originals = []
    outputs: dict[Preprocess, list] = {preprocess: [] for preprocess in settings}
    try:
        for sample in samples:
            with Image.open(sample.path) as image:
                image = image.convert("RGB")
                originals.append((f"{'ALL' if sample.label == 1 else 'HEM'} · {sample.path.name}", image))
                for preprocess in settings:
                    outputs[preprocess].append(preprocess(image))
    except OSError as exc:
        return [], [], f"no example images: {exc}"
    columns = [
        (f"{_setting_title(p)}\n(run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))})", outputs[p])
        for p, ids in settings.items()
    ]
    cam_run = example_cam_run(workspace, records, data_dir) if workspace is not None else None
    if cam_run is not None:
        folder = workspace.cam_folder(cam_run, "best")
        maps = [folder / workspace.cam_name(sample.ident, sample.label) for sample in samples]
        if all(path.is_file() for path in maps):
            try:
                heat = []
                for path in maps:
                    with Image.open(path) as opened:
                        heat.append(opened.convert("RGB"))
                columns.append((f"Grad-CAM of its class\n(run {cam_run})", heat))
            except OSError:
                pass  # a damaged map: the figure goes without that column
    return originals, columns, None


# -- the model's mistakes -----------------------------------------------------------------------------


def gallery_mistakes(db, run: Run):
    """The mistakes of the report's gallery: ``(Mistakes, the top GALLERY of each kind)``, or
    ``(None, why)``."""
    from engine.datasets import DatasetError
    from leuktui.mistakes import FALSE_NEGATIVES, FALSE_POSITIVES, chosen_evaluation, mistakes_of

    evaluation = chosen_evaluation(db, run)
    if evaluation is None:
        return None, "no recorded evaluation of its best checkpoint (`leuktui eval RUN` records one)"
    try:
        found = mistakes_of(db, run, evaluation)
    except (DatasetError, OSError) as exc:
        return None, f"its validation images are not readable here ({exc})"
    return found, [(kind, found.of(kind)[:GALLERY]) for kind in (FALSE_NEGATIVES, FALSE_POSITIVES)]


def mistake_gallery(db, workspace: Workspace, record: RunRecord):
    """``(kinds for figures.mistakes_plot, None, whether maps are missing)`` or ``(None, why, False)``."""
    from PIL import Image

    found, picked = gallery_mistakes(db, record.run)
    if found is None:
        return None, picked, False
    if not found.all:
        return None, "no mistakes on the validation set", False
    maps = found.cam_paths(workspace)
    kinds, missing = [], False
    for kind, items in picked:
        if not items:
            continue
        row = []
        for mistake in items:
            if mistake.image is None:
                continue
            try:
                with Image.open(mistake.image) as opened:
                    image = opened.convert("RGB")
                heat = None
                if mistake.id in maps and maps[mistake.id].is_file():
                    with Image.open(maps[mistake.id]) as opened:
                        heat = opened.convert("RGB")
            except OSError:
                continue  # a damaged file: the gallery shows the others
            missing = missing or heat is None
            row.append((f"P(ALL) {mistake.probability:.3f}", image, heat))
        if row:
            kinds.append((kind, row))
    if not kinds:
        return None, "its mistakes' images are not readable here", False
    return kinds, None, missing


# -- Markdown and HTML --------------------------------------------------------------------------------

STYLE = """
:root { --ink: #1d2330; --muted: #5b6475; --rule: #d9dee7; --accent: #0072B2; --best: #e3f1e6; }
* { box-sizing: border-box; }
body { font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); max-width: 1240px; margin: 0 auto; padding: 2rem 1.5rem 4rem; }
h1 { font-size: 1.9rem; margin-bottom: .2rem; }
h2 { font-size: 1.35rem; margin-top: 2.6rem; padding-bottom: .3rem; border-bottom: 2px solid var(--rule); }
h3 { font-size: 1.05rem; margin-top: 1.8rem; }
.meta, figcaption, .caption, .note { color: var(--muted); font-size: .9rem; }
nav ol { columns: 2; padding-left: 1.2rem; }
a { color: var(--accent); }
table { border-collapse: collapse; margin: .8rem 0 .4rem; font-variant-numeric: tabular-nums; font-size: .88rem; }
th, td { padding: .35rem .5rem; border-bottom: 1px solid var(--rule); text-align: right; white-space: nowrap; }
th { background: #f3f5f9; font-weight: 600; white-space: normal; vertical-align: bottom; }
th:first-child, td:first-child, td.text { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.best { background: var(--best); font-weight: 700; }
.scroll { overflow-x: auto; }
figure { margin: 1.4rem 0; page-break-inside: avoid; break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); border-radius: 4px; background: white; }
figure.small img { max-width: 520px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1rem; }
.grid figure { margin: .4rem 0; }
img.missing { outline: 3px solid #D55E00; }
code, pre { font: .85rem/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #f5f7fa; padding: .7rem .9rem; border-radius: 4px; overflow-x: auto; white-space: pre-wrap; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { color: var(--muted); }
@media print { body { max-width: none; padding: 0; } nav { display: none; } h2 { page-break-after: avoid; } }
"""

# Marks figures that did not load, so a reader (and the browser test) sees which ones.
SCRIPT = """
document.documentElement.dataset.errors = "";
window.addEventListener("error", function (event) {
  document.documentElement.dataset.errors += (event.message || "error") + "; ";
});
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (image) { return image.complete && image.naturalWidth > 0; });
  images.forEach(function (image) { if (loaded.indexOf(image) < 0) { image.classList.add("missing"); } });
  document.body.dataset.figures = String(images.length);
  document.body.dataset.figuresLoaded = String(loaded.length);
});
"""


_AS_IS = str.maketrans({mark: char for char, mark in LITERAL.items()})
_ESCAPED = str.maketrans({mark: "\\" + char for char, mark in LITERAL.items()})
_MARKS = frozenset(LITERAL.values())


def _shown(text: object) -> str:
    """``visible`` (control characters as escapes, lines kept), ``literal``'s marks kept for the writer."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char in _MARKS else visible(char, newlines=True) for char in text)


def _h(text: object) -> str:
    """``text`` for the HTML page: control characters as their escapes (``visible``), then escaped;
    a user's text (``literal``) as it is."""
    return html.escape(_shown(text)).translate(_AS_IS)


def _md(text: object) -> str:
    """``text`` for the Markdown file: control characters as their escapes (a name or a path may
    hold one; `cat report.md` would send it to the terminal), and every ``<`` and ``>`` escaped, so
    a run's name such as ``<script>`` is shown as text, never taken for HTML (inside a `code` span
    the backslash shows: telling spans apart by their backticks is what a name could fool)."""
    return _shown(text).replace("<", "\\<").replace(">", "\\>").translate(_ESCAPED)


def _md_table(table) -> str:
    if table.markdown is not None:
        return _md(table.markdown)
    columns = list(table.text.columns)
    lines = ["| " + " | ".join(_md(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for position, row in enumerate(table.text.itertuples(index=False)):
        cells = [f"**{_md(literal(value))}**" if (position, column) in table.bold else _md(literal(value))
                 for column, value in zip(columns, row, strict=True)]  # a cell is data: shown as it is
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    return text + (f"\n{_md(table.caption)}\n" if table.caption else "")


def _html_table(table) -> str:
    columns = list(table.text.columns)
    numeric = {c for c in columns if table.frame[c].dtype.kind in "if"} if len(table.frame) else set()
    head = "".join(f"<th>{_h(str(c))}</th>" for c in columns)
    body = []
    for position, row in enumerate(table.text.itertuples(index=False)):
        cells = []
        for column, value in zip(columns, row, strict=True):
            classes = [name for name, on in (("best", (position, column) in table.bold), ("text", column not in numeric)) if on]
            attribute = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attribute}>{_h(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f'<p class="caption">{_inline(table.caption)}</p>' if table.caption else ""
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>{caption}'


def _inline(text: str) -> str:
    """Escape ``text`` for HTML, keeping our `code` spans (a user's backtick is ``literal``'s mark until here)."""
    parts = html.escape(_shown(text)).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts)).translate(_AS_IS)


class Document:
    """The report's Markdown and HTML, written side by side from the same sections."""

    def __init__(self, figures_folder: Path):
        self.md: list[str] = []
        self.html: list[str] = []
        self.toc: list[tuple[str, str]] = []
        self.figures_folder = figures_folder
        self.figure_count = 0
        self.table_count = 0

    def heading(self, text: str, level: int = 2) -> None:
        anchor = "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
        self.md.append(f"{'#' * level} {_md(text)}\n")
        self.html.append(f'<h{level} id="{anchor}">{_h(text)}</h{level}>')
        if level == 2:
            self.toc.append((anchor, text))

    def paragraph(self, text: str, css: str = "") -> None:
        self.md.append(_md(text) + "\n")
        attribute = f' class="{css}"' if css else ""
        self.html.append(f"<p{attribute}>{_inline(text)}</p>")

    def table(self, table) -> None:
        self.table_count += 1
        self.md.append(f"**Table {self.table_count}. {_md(table.title)}**\n\n" + _md_table(table))
        self.html.append(f"<h3>Table {self.table_count}. {_h(table.title)}</h3>" + _html_table(table))

    def figure(self, name: str, caption: str, *, small: bool = False, open_grid: bool = False) -> None:
        self.figure_count += 1
        label = f"Figure {self.figure_count}. {caption}"
        self.md.append(f"![{_md(caption)}](figures/{name}.png)\n\n*{_md(label)}*\n")
        png = base64.b64encode((self.figures_folder / f"{name}.png").read_bytes()).decode("ascii")
        css = ' class="small"' if small else ""
        self.html.append(
            f'<figure{css}><img src="data:image/png;base64,{png}" alt="{_h(caption)}">'
            f"<figcaption>{_inline(label)}</figcaption></figure>"
        )

    def raw(self, md: str, html_text: str) -> None:
        self.md.append(md)
        self.html.append(html_text)

    def markdown(self) -> str:
        return "\n".join(self.md)

    def page(self, title: str, subtitle: str) -> str:
        toc = "".join(f'<li><a href="#{anchor}">{_h(text)}</a></li>' for anchor, text in self.toc)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_h(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
            f'<h1>{_h(title)}</h1><p class="meta">{_inline(subtitle)}</p>'
            f"<nav><ol>{toc}</ol></nav>" + "\n".join(self.html) + "</body></html>\n"
        )


# -- the whole report ---------------------------------------------------------------------------------


def _studies_of(db, runs: Sequence[Run]) -> list:
    """The studies some of ``runs`` are trials of."""
    ids = sorted({run.sweep_id for run in runs if run.sweep_id is not None and run.trial is not None})
    return [sweep for sweep in (db.get_sweep(i) for i in ids) if sweep.is_study]


def build_report(
    db: Database,
    workspace: Workspace,
    runs: Sequence[Run],
    folder: Path | str,
    *,
    progress: Progress | None = None,
    title: str = "Lab 3 — Leukemia classification: results",
    selection: str = "best",
    last_k: int = 5,
) -> ReportResult:
    """Write the report on ``runs`` to ``folder``; see the module's docstring. ``selection``:
    the ablation tables' number per run, at the best epoch or the mean of the last ``last_k``."""
    started = time.perf_counter()
    folder = Path(folder).expanduser().absolute()
    if not runs:
        raise ReportError("no runs to report on")
    from engine.datasets import dataset_holding

    dataset = dataset_holding(folder, [(run.config or {}).get("data_dir") for run in runs])
    if dataset is not None:
        raise ReportError(f"{folder}: inside the dataset folder {dataset}; a report never goes among the dataset's files")
    check_destination(folder)
    timings = {"import": 0.0, "query": 0.0, "draw": 0.0, "write": 0.0}

    def timed(key: str, work: Callable[[], Any]) -> Any:
        begin = time.perf_counter()
        try:
            return work()
        finally:
            timings[key] += time.perf_counter() - begin

    def tell(done: int, total: int, what: str) -> None:
        if progress is not None:
            progress(done, total, what)

    tell(0, 1, "reading the runs")
    data: ReportData = timed("query", lambda: collect(db, runs))
    if not data.records:
        raise final_fits_alone([record.run for record in data.final_fits])
    empty = [record for record in data.records if not record.epochs]
    if empty:
        raise ReportError(f"run {empty[0].id}: no epochs recorded yet (status {empty[0].run.status}); nothing to report")

    tell(0, 1, "loading matplotlib and pandas")
    figures_module = timed("import", lambda: importlib.import_module("leuktui.report.figures"))
    tables_module = timed("import", lambda: importlib.import_module("leuktui.report.tables"))

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
        # The workspace's mode, as for every folder leuktui makes: 0o700 private, 0o770 with LEUKTUI_SHARE=group.
        os.chmod(staging, folder_permissions())
    except OSError as exc:
        raise ReportError(f"{folder.parent}: cannot write the report there ({exc.strerror or exc})") from None
    try:
        result = _write(db, workspace, data, staging, figures_module, tables_module, timed, tell, title, (selection, last_k))
        timed("write", lambda: _publish(staging, folder))
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ReportError(f"{folder}: writing the report failed ({exc.strerror or exc}); nothing was written") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.folder = folder
    timings["total"] = time.perf_counter() - started
    result.timings = timings
    return result


def _write(db, workspace, data: ReportData, out: Path, figures, tables, timed, tell, title: str,
           selection: tuple[str, int] = ("best", 5)) -> ReportResult:
    figures_folder, tables_folder = out / "figures", out / "tables"
    figures_folder.mkdir()
    tables_folder.mkdir()
    records = data.records
    steps = 5 + len(records) + 2 + (1 if _studies_of(db, data.runs) else 0)
    step = 0

    def advance(what: str) -> None:
        nonlocal step
        step += 1
        tell(step, steps, what)

    written_figures: list[str] = []
    written_tables: list[str] = []
    notes: list[str] = []

    def draw(plot) -> str:
        timed("draw", lambda: plot.save(figures_folder))
        written_figures.append(plot.name)
        return plot.name

    def save_table(table) -> None:
        frame = table.frame.map(lambda value: visible(value, newlines=True) if isinstance(value, str) else value)
        timed("write", lambda: frame.to_csv(tables_folder / f"{table.name}.csv", index=False))
        written_tables.append(table.name)

    doc = Document(figures_folder)
    names = ", ".join(record.prose_label for record in records)
    fits = (f" and {len(data.final_fits)} final fit{'s' if len(data.final_fits) != 1 else ''} "
            f"({', '.join(str(record.id) for record in data.final_fits)})") if data.final_fits else ""
    subtitle = (f"{len(records)} run{'s' if len(records) != 1 else ''} ({names}){fits} · written "
                f"{time.strftime('%Y-%m-%d %H:%M')}{SIGNATURE}`{workspace.home}`")

    # Results and submissions.
    advance("results table")
    doc.heading("Results")
    results = timed("draw", lambda: tables.results_table(data))
    save_table(results)
    doc.table(results)
    submissions = timed("draw", lambda: tables.submission_tables(data))
    doc.heading("Submissions")
    if submissions:
        for table in submissions:
            save_table(table)
            doc.table(table)
    else:
        doc.paragraph("No submission of these runs is recorded yet: `leuktui export RUN` writes one, and "
                      "`leuktui submissions score ID VALUE` records its leaderboard score.", "note")
    if data.final_fits:
        doc.heading("Final fits")
        fits_table = timed("draw", lambda: tables.final_fits_table(data))
        save_table(fits_table)
        doc.table(fits_table)

    # Comparison figures.
    advance("learning curves")
    doc.heading("Comparison figures")
    for kind in ("accuracy", "loss"):
        plot = timed("draw", lambda kind=kind: figures.curves_plot(records, kind))
        doc.figure(draw(plot), plot.caption)

    # Confusion matrices and ROC curves.
    doc.heading("Confusion matrices")
    doc.raw("", '<div class="grid">')
    for record in records:
        advance(f"confusion matrix of run {record.id}")
        plot = timed("draw", lambda record=record: figures.confusion_plot(record))
        doc.figure(draw(plot), plot.caption)
    doc.raw("", "</div>")
    advance("ROC curves")
    doc.heading("ROC curves")
    roc = timed("draw", lambda: figures.roc_plot(records))
    if roc is not None:
        doc.figure(draw(roc), roc.caption, small=True)
    else:
        note = ("No validation predictions are recorded for these runs; `leuktui report --evaluate` (the report dialog's "
                "first box) or `leuktui eval RUN` records them (the ROC AUC of every epoch is in the results table).")
        notes.append(note)
        doc.paragraph(note, "note")

    # The model's mistakes.
    advance("mistakes")
    doc.heading("Mistakes")
    doc.paragraph("Each run's most confident false negatives (ALL called HEM) and false positives (HEM called ALL) "
                  "on the validation set, from its best checkpoint's recorded predictions.")
    undrawn = []
    doc.raw("", '<div class="grid">')
    for record in records:
        gallery, why_not, maps_missing = timed("query", lambda record=record: mistake_gallery(db, workspace, record))
        if gallery is None:
            doc.paragraph(f"Run {record.prose_label}: {why_not}", "note")
            continue
        if maps_missing:
            undrawn.append(record.id)
        plot = timed("draw", lambda record=record, gallery=gallery: figures.mistakes_plot(record, gallery))
        doc.figure(draw(plot), plot.caption)
    doc.raw("", "</div>")
    if undrawn:
        note = (f"Grad-CAM maps of run{'s' if len(undrawn) > 1 else ''} {', '.join(map(str, undrawn))} are not drawn yet: "
                "`leuktui report --cam` (the report dialog's second box) draws them (in the worker's environment) before "
                "it writes the report.")
        notes.append(note)
        doc.paragraph(note, "note")

    # Ablation tables.
    advance("ablation tables")
    doc.heading("Ablation tables")
    ablations = timed("draw", lambda: tables.ablation_tables(data, db.predictions_of, selection=selection[0], k=selection[1]))
    for table in ablations:
        save_table(table)
        doc.table(table)
    factors = tables.ablation_factors(data)
    if not ablations and factors:  # a study's trials: each its own learning rate, no two alike elsewhere
        doc.paragraph(f"These runs differ in {', '.join(factors)}, but no two of them agree on every other field, so no "
                      "table compares like with like; the results table compares them.", "note")
    elif not ablations:
        doc.paragraph("These runs differ in no factor but the model (and have no five- or ten-crop evaluations); "
                      "the results table compares them. Report on a sweep (`--sweep S`) for ablation tables.", "note")

    # Studies the runs are trials of.
    studies = timed("query", lambda: _studies_of(db, data.runs))
    if studies:
        advance("studies")
        doc.heading("Studies")
        for sweep in studies:
            summary = timed("query", lambda sweep=sweep: study_overview(db, sweep))
            best = summary["best"]
            counts = ", ".join(f"{n} {status}" for status, n in sorted(summary["counts"].items()))
            line = (f"Study '{summary['name']}' ({summary['state']}): {len(summary['trials'])} of {summary['trials_wanted']} trials "
                    f"({counts}). ")
            if best:
                params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
                line += (f"Best: trial {best['trial']} (run {best['run_id']}), {summary['metric']} "
                         f"{metric(summary['metric']).format(best['value'])} at epoch {best['best_epoch']}, with {params}.")
            else:
                line += "No trial has completed yet."
            doc.paragraph(line)
            try:
                ranked = timed("query", lambda sweep=sweep: study_importances(workspace, sweep))
            except StudyError as exc:
                ranked = None
                notes.append(str(exc))
                doc.paragraph(f"No parameter importances: {exc}", "note")
            if ranked:
                doc.paragraph("Parameter importance (Optuna's fANOVA over the completed trials): "
                              + ", ".join(f"{name} {value:.2f}" for name, value in ranked.items()) + ".")
            table = timed("draw", lambda summary=summary: tables.study_table(summary))
            save_table(table)
            doc.table(table)
            plot = timed("draw", lambda summary=summary: figures.study_history_plot(summary))
            doc.figure(draw(plot), plot.caption, small=True)

    # Preprocessing examples.
    advance("preprocessing examples")
    doc.heading("Preprocessing examples")
    originals, columns, why_not = timed("import", lambda: example_images(records, workspace))
    if why_not is None:
        plot = timed("draw", lambda: figures.examples_plot(originals, columns))
        doc.figure(draw(plot), plot.caption)
    else:
        notes.append(why_not.translate(_AS_IS))  # the command line prints it as text
        doc.paragraph(why_not, "note")

    # Appendix.
    advance("appendix")
    doc.heading("Appendix: the runs")
    for record in [*records, *data.final_fits]:
        run = record.run
        doc.heading(f"Run {record.prose_label}", level=3)
        facts = [
            ("status", f"{run.status}, {run.epochs_done}/{run.config.get('epochs')} epochs, best epoch {run.best_epoch}"),
            ("environment", tables.environment_line(record)),
            ("duration", tables.duration(record)),
        ]
        command = tables.reproduce_command(record)
        config = tables.config_table(record)
        doc.raw(
            "\n".join(f"- {key}: {_md(value)}" for key, value in facts) + f"\n\nReproduce:\n\n```\n{visible(command)}\n```\n\n"
            + "<details><summary>config</summary>\n\n" + _md_table(config) + "\n</details>\n",
            "<dl>" + "".join(f"<dt>{key}</dt><dd>{_h(value)}</dd>" for key, value in facts) + "</dl>"
            + f"<p>Reproduce:</p><pre>{_h(command)}</pre>"
            + f"<details><summary>config</summary>{_html_table(config)}</details>",
        )

    def write_documents() -> None:
        (out / "report.md").write_text(f"# {_md(title)}\n\n{_md(subtitle)}\n\n" + doc.markdown(), encoding="utf-8")
        (out / "report.html").write_text(doc.page(title, subtitle), encoding="utf-8")

    timed("write", write_documents)
    return ReportResult(out, sorted(record.id for record in [*records, *data.final_fits]), written_figures, written_tables, notes)
