"""New run / new sweep: a form for every config field, validated inline by the config object."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Header, Input, Label, Select, Static

from db.models import Run
from engine.config import ConfigError, RunConfig
from leuktui.actions import bindings
from leuktui.cells import plain
from leuktui.widgets.keybar import KeyBar
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
        self.valid: RunConfig | None = self.defaults
        self.problem = ""  # what the form's summary says is wrong

    def compose(self) -> ComposeResult:
        yield Header()
        title = "New sweep: a base config and factors (FIELD=V1,V2; FIELD=…)" if self.sweep else "New run"
        yield Static(title, id="form-title")
        with VerticalScroll(id="form"):
            with Horizontal(classes="form-row"):
                yield Label("name", classes="form-label")
                yield Input(placeholder="made from the config if empty", id="meta-name", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("tags", classes="form-label")
                yield Input(placeholder="comma-separated", id="meta-tags", compact=True)
            if self.sweep:
                with Horizontal(classes="form-row"):
                    yield Label("factors", classes="form-label")
                    yield Input(value="model=resnet18,resnet50,resnet152; hist_eq=false,true", id="meta-factors", compact=True)
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
        with Horizontal(id="form-buttons"):
            yield Static("", id="form-summary")
            yield Button("Queue (ctrl+s)", variant="primary", id="submit", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.validate_form()

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
        try:
            grid = self.grid()
        except ConfigError as exc:
            return self._refuse([exc], f"fix the factors: {exc.message}")
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
    def _changed(self) -> None:
        self.validate_form()

    @on(Button.Pressed, "#submit")
    def _pressed(self) -> None:
        self.action_submit()

    def action_submit(self) -> None:
        config = self.validate_form()
        if config is None:
            self.notify(self.problem, title="not queued", severity="error")
            return
        name = self.query_one("#meta-name", Input).value.strip() or None
        tags = [t.strip() for t in self.query_one("#meta-tags", Input).value.split(",") if t.strip()]
        grid, seeds = self.grid(), self.seeds()

        def submit():
            return queue_runs(self.app.db, config, grid=grid, name=name, tags=tags, workspace=self.app.workspace, seeds=seeds)

        self.app.run_task("queue", submit, done=self._queued)

    def _queued(self, result) -> None:
        runs, sweep = result
        what = f"sweep {sweep.id}: {len(runs)} runs" if sweep else f"run {runs[0].id} {runs[0].name}"
        self.notify(f"queued {what}")
        if self.app.start_scheduler:
            self.app.ensure_scheduler()
        self.app.pop_screen()
