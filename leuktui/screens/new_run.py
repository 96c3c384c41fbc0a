"""New run / new sweep: a form for every config field, validated inline by the config object."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Header, Input, Label, Select, Static

from db.models import Run
from engine.config import ConfigError, RunConfig
from leuktui.actions import bindings
from leuktui.cells import plain
from leuktui.widgets.keybar import KeyBar
from leuktui.widgets.preview import PreprocessPreview
from runner.control import expand, parse_grid, queue_runs, with_seeds

DEMO_DATA = Path("data/demo")
# On a machine without GPUs the form starts from a run that trains in about a minute.
CPU_DEFAULTS = {"image_size": 64, "epochs": 6, "scheduler": "cosine", "batch_size": 32}


def form_defaults(base: Run | None, has_gpu: bool) -> RunConfig:
    if base is not None:
        try:
            return RunConfig.from_dict(base.config)
        except ConfigError:
            pass
    values: dict[str, Any] = {} if has_gpu else dict(CPU_DEFAULTS)
    if DEMO_DATA.is_dir():
        values["data_dir"] = str(DEMO_DATA.resolve())
    return RunConfig.from_dict(values)


PREVIEW_WIDTH = 110  # the preprocessing preview shows in a terminal this wide or wider


class NewRunScreen(Screen):
    AUTO_FOCUS = "#meta-name"
    BINDINGS = bindings("form")

    def __init__(self, *, sweep: bool = False, base: Run | None = None, has_gpu: bool | None = None) -> None:
        super().__init__()
        self.sweep = sweep
        if has_gpu is None:
            from runner.gpus import detect_gpus

            has_gpu = bool(detect_gpus())
        self.defaults = form_defaults(base, has_gpu)
        # Said in the title: a form's defaults that differ from `leuktui run --help`'s are a choice, not a mistake.
        self.cpu_defaults = base is None and not has_gpu
        self.valid: RunConfig | None = self.defaults
        self.problem = ""  # what the form's summary says is wrong

    def compose(self) -> ComposeResult:
        yield Header()
        title = "New sweep: a grid of factors, or a search (an Optuna study)" if self.sweep else "New run"
        if self.cpu_defaults:
            title += (f" · no GPU here: CPU-sized defaults ({CPU_DEFAULTS['image_size']} px, {CPU_DEFAULTS['epochs']} epochs, "
                      f"{CPU_DEFAULTS['scheduler']})")
        yield Static(title, id="form-title")
        with Horizontal(id="form-body"):
            with VerticalScroll(id="form"):
                if self.sweep:
                    with Horizontal(classes="form-row"):
                        yield Label("mode", classes="form-label")
                        yield Select([("grid: every combination of the factors", "grid"),
                                      ("search: an Optuna study over a space, bad trials pruned", "search")],
                                     value="grid", allow_blank=False, id="meta-mode", compact=True)
                with Horizontal(classes="form-row"):
                    yield Label("name", classes="form-label")
                    yield Input(placeholder="made from the config if empty", id="meta-name", compact=True)
                with Horizontal(classes="form-row"):
                    yield Label("tags", classes="form-label")
                    yield Input(placeholder="comma-separated", id="meta-tags", compact=True)
                if self.sweep:
                    with Horizontal(classes="form-row", id="row-factors"):
                        yield Label("factors", classes="form-label")
                        yield Input(placeholder="e.g. model=resnet18,resnet50,resnet152; hist_eq=false,true", id="meta-factors",
                                    compact=True)
                    yield from self.search_rows()
                with Horizontal(classes="form-row", id="row-again"):
                    yield Label("again", classes="form-label")
                    yield Checkbox("queue a config a run already completed, again (--force)", id="meta-again", compact=True)
                for f in dataclasses.fields(RunConfig):
                    value = getattr(self.defaults, f.name)
                    with Horizontal(classes="form-row"):
                        yield Label(f.name, classes="form-label")
                        if isinstance(value, bool):
                            yield Checkbox(f.metadata.get("help", ""), value=value, id=f"field-{f.name}", compact=True)
                        elif "choices" in f.metadata:
                            yield Select([(c, c) for c in f.metadata["choices"]], value=value, allow_blank=False, id=f"field-{f.name}", compact=True)
                        else:
                            yield Input(value="" if value is None else str(value), id=f"field-{f.name}", tooltip=f.metadata.get("help"), compact=True)
                    yield Static("", id=f"error-{f.name}", classes="form-error")
                    if f.name == "seed":  # the replicates, beside the seed they count up from
                        with Horizontal(classes="form-row"):
                            yield Label("seeds", classes="form-label")
                            yield Input(value="1", id="meta-seeds", type="integer", compact=True,
                                        tooltip="replicates that differ only in seed (from the seed field up), N per cell of a sweep")
            yield PreprocessPreview(id="preview")
        with Horizontal(id="form-buttons"):
            yield Static("", id="form-summary")
            yield Button("Queue (ctrl+s)", variant="primary", id="submit", compact=True)
        yield KeyBar()

    def search_rows(self) -> ComposeResult:
        """The study's own fields, shown in search mode."""
        from engine.studies import PRUNERS, SAMPLERS

        with Vertical(id="search-rows"):
            for key, label, widget in (
                ("space", "space", Input(value="lr=log:1e-4:1e-1; batch_size=16,32,64; rotation=0:45", id="meta-space", compact=True,
                                         tooltip="FIELD=log:LOW:HIGH, FIELD=LOW:HIGH[:STEP] or FIELD=V1,V2, separated by ;")),
                ("trials", "trials", Input(value="20", id="meta-trials", type="integer", compact=True)),
                ("parallel", "at once", Input(placeholder="what the scheduler runs here at once", id="meta-parallel", type="integer",
                                              compact=True)),
                ("sampler", "sampler", Select([(f"{k}: {v}", k) for k, v in SAMPLERS.items()], value="tpe", allow_blank=False,
                                              id="meta-sampler", compact=True)),
                ("pruner", "pruner", Select([(f"{k}: {v}", k) for k, v in PRUNERS.items()], value="median", allow_blank=False,
                                            id="meta-pruner", compact=True)),
                ("metric", "metric", Input(value="val_acc", id="meta-metric", compact=True,
                                           tooltip="what the study optimizes at each trial's best epoch (val_loss is minimized)")),
            ):
                with Horizontal(classes="form-row", id=f"row-{key}"):
                    yield Label(label, classes="form-label")
                    yield widget

    @property
    def searching(self) -> bool:
        return self.sweep and self.query_one("#meta-mode", Select).value == "search"

    def study_request(self):
        from runner.studies import StudyRequest

        def number(widget_id: str, name: str) -> int | None:
            text = self.query_one(widget_id, Input).value.strip()
            if not text:
                return None
            try:
                return int(text)
            except ValueError:
                raise ConfigError(name, f"{text!r} is not a whole number") from None

        return StudyRequest(
            name=self.query_one("#meta-name", Input).value.strip(), space=self.query_one("#meta-space", Input).value,
            trials=number("#meta-trials", "trials") or 0, parallel=number("#meta-parallel", "parallel"),
            sampler=str(self.query_one("#meta-sampler", Select).value), pruner=str(self.query_one("#meta-pruner", Select).value),
            metric=self.query_one("#meta-metric", Input).value.strip(),
            tags=[t.strip() for t in self.query_one("#meta-tags", Input).value.split(",") if t.strip()],
        )

    def on_mount(self) -> None:
        if self.sweep:
            self._show_mode()
        self.validate_form()

    def on_resize(self) -> None:
        preview = self.query_one(PreprocessPreview)
        shown = self.size.width >= PREVIEW_WIDTH  # narrower, the fields need the room
        if shown != preview.display:
            preview.display = shown
            if shown and self.valid is not None:
                preview.show(self.valid)

    def _show_mode(self) -> None:
        searching = self.searching
        self.query_one("#search-rows").display = searching
        self.query_one("#row-factors").display = not searching
        self.query_one("#row-again").display = not searching
        self.query_one("#meta-name", Input).placeholder = "the study's name (required)" if searching else "made from the config if empty"

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(RunConfig):
            widget = self.query_one(f"#field-{f.name}")
            out[f.name] = widget.value
        return out

    def validate_form(self) -> RunConfig | None:
        for error in self.query(".form-error"):
            error.update("")
            error.display = False
        summary = self.query_one("#form-summary", Static)
        values = self.values()
        wrong = []  # every field's own mistake at once, not one after the other
        for name, value in values.items():
            try:
                RunConfig.from_dict({name: value})
            except ConfigError as exc:
                if exc.field == name:
                    wrong.append(exc)
        if wrong:
            return self._refuse(wrong, f"fix the {len(wrong)} field{'s' if len(wrong) > 1 else ''} marked in red: "
                                       + ", ".join(e.field for e in wrong))
        try:
            config = RunConfig.from_dict(values)
        except ConfigError as exc:
            return self._refuse([exc], f"fix {exc.field}: {exc.message}")
        self.query_one(PreprocessPreview).show(config)  # what these fields feed the network
        if self.searching:
            return self._validate_search(config)
        try:
            grid = self.grid()
        except ConfigError as exc:
            return self._refuse([exc], f"fix the factors: {exc.message}")
        try:
            seeds = self.seeds()
        except ConfigError as exc:
            return self._refuse([exc], f"fix the seeds: {exc.message}")
        if self.sweep and not grid and seeds == 1:
            return self._refuse([ConfigError("factors", "give one or more")],
                                "fix the factors: give one or more, e.g. model=resnet18,resnet50; hist_eq=false,true")
        try:
            count = len(expand(config, with_seeds(grid, config, self.seeds())).configs)
        except ConfigError as exc:
            problem = f"fix the seeds: {exc.message}" if exc.field == "seeds" else f"fix the factors: {exc.field}: {exc.message}"
            return self._refuse([exc], problem)
        data = Path(config.data_dir)
        warning = "" if (data / "train.csv").is_file() or (data / "fold_0").is_dir() else f"  (no dataset at {data} yet)"
        summary.update(plain(f"will queue {count} run{'s' if count != 1 else ''}{warning}"))
        self.valid = config
        return config

    def _validate_search(self, config: RunConfig) -> RunConfig | None:
        from runner.studies import check_request

        try:
            if self.seeds() != 1:
                raise ConfigError("seeds", "a study's trials are one run each; seeds replicate a grid's cells")
            request = self.study_request()
            check_request(request, config)
        except ConfigError as exc:
            return self._refuse([exc], f"fix the {exc.field.replace('_', ' ')}: {exc.message}")
        parallel = f"{request.parallel} at once" if request.parallel else "as many at once as the scheduler runs"
        self.query_one("#form-summary", Static).update(plain(f"will search {request.trials} trials, {parallel}"))
        self.valid = config
        return config

    def _refuse(self, errors: list[ConfigError], problem: str) -> None:
        """Mark each error under its field, say ``problem`` in the summary; nothing can be queued."""
        for exc in errors:
            self._show_error(exc.field, exc.message)
        self.problem = problem
        self.query_one("#form-summary", Static).update(plain(problem))
        self.valid = None

    def grid(self) -> dict[str, list[str]]:
        if not self.sweep:
            return {}
        return parse_grid([part for part in self.query_one("#meta-factors", Input).value.split(";") if part.strip()])

    def seeds(self) -> int:
        text = self.query_one("#meta-seeds", Input).value.strip() or "1"
        try:
            return int(text)
        except ValueError:
            raise ConfigError("seeds", f"{text!r} is not a whole number") from None

    def _show_error(self, field_name: str, message: str) -> None:
        target = field_name if field_name in RunConfig.field_names() else None
        if target is None:
            return  # the factors' or the seeds' mistake: the summary line says it
        error = self.query_one(f"#error-{target}", Static)
        error.update(plain(f"↑ {message}"))
        error.display = True

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _changed(self, event) -> None:
        if isinstance(event, Select.Changed) and event.select.id == "meta-mode":
            self._show_mode()
        self.validate_form()

    @on(Button.Pressed, "#submit")
    def _pressed(self) -> None:
        self.action_submit()

    def action_submit(self) -> None:
        config = self.validate_form()
        if config is None:
            self.notify(self.problem, title="not queued", severity="error")
            return
        if self.searching:
            from runner.studies import create_study

            request = self.study_request()
            self.app.run_task("study", lambda: create_study(self.app.db, self.app.workspace, request, config), done=self._study_made)
            return
        name = self.query_one("#meta-name", Input).value.strip() or None
        tags = [t.strip() for t in self.query_one("#meta-tags", Input).value.split(",") if t.strip()]
        grid, seeds = self.grid(), self.seeds()
        again = self.query_one("#meta-again", Checkbox).value

        def submit():
            from runner.control import AlreadyCompleted

            try:
                return queue_runs(self.app.db, config, grid=grid, name=name, tags=tags, workspace=self.app.workspace, seeds=seeds,
                                  force=again)
            except AlreadyCompleted as exc:  # in the form's words, not the command line's
                raise AlreadyCompleted(exc.run, "tick “again” in the form") from None

        self.app.run_task("queue", submit, done=self._queued)

    def _study_made(self, sweep) -> None:
        settings = sweep.study
        self.notify(f"study {sweep.id} '{sweep.name}': {settings['trials']} trials, {settings['parallel']} at once; "
                    "o shows it")
        if self.app.start_scheduler:
            self.app.ensure_scheduler()
        self.app.pop_screen()

    def _queued(self, result) -> None:
        runs, sweep = result
        what = f"sweep {sweep.id}: {len(runs)} runs" if sweep else f"run {runs[0].id} {runs[0].name}"
        self.notify(f"queued {what}")
        if self.app.start_scheduler:
            self.app.ensure_scheduler()
        self.app.pop_screen()
