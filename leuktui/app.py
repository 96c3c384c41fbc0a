"""The leuktui terminal app: runs, live charts, compare, ablation, queue and export by keyboard.

Nothing here waits on SQLite or torch on the event loop: a thread worker polls the database for
runs changed since its last look and posts messages; actions that touch the database or torch
run in thread workers too. torch is imported only by the export and evaluate actions.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.screen import Screen
from textual.worker import get_current_worker

from db import Database, Workspace
from db.models import Run
from engine.errors import UserError
from leuktui.actions import ACTION_BY_ID, bindings, display, screen_of, validate_keymap
from leuktui.formatting import visible
from leuktui.messages import PollFailed, RunsUpdated

POLL_SECONDS = 0.5
FULL_CHECK_EVERY = 20  # polls between checks for runs deleted by another process
FIRST_PAGE = 250       # runs loaded before all the others
POLL_OVERLAP_SECONDS = 2.0  # each poll reads again the runs changed this long before the newest seen


class LeuktuiApp(App):
    CSS_PATH = Path(__file__).with_name("leuktui.tcss")  # absolute, so subclasses elsewhere find it
    TITLE = "leuktui"
    SUB_TITLE = "leukemia cell classification experiments"
    BINDINGS = bindings("app")

    def __init__(
        self,
        workspace: Workspace,
        *,
        start_scheduler: bool = True,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = POLL_SECONDS,
        device_reader: Callable[[], Any] | None = None,
    ):
        """``clock`` and ``device_reader`` (the queue screen's device strip) can be fixed for tests."""
        super().__init__()
        self.workspace = workspace
        self.db = Database(workspace.db_url)
        self.start_scheduler = start_scheduler
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.closing = threading.Event()
        self.device_reader = device_reader
        self.runs: dict[int, Run] = {}
        self.loaded = False
        self.keymap: dict[str, str] = {}  # binding id -> key, from keymap.json as validated

    # -- start-up ---------------------------------------------------------------------------

    def on_mount(self) -> None:
        from leuktui.screens.runs import RunsScreen

        self._load_keymap()
        self.push_screen(RunsScreen())
        self.poll_runs()
        if self.start_scheduler:
            self.ensure_scheduler()

    def on_unmount(self) -> None:
        self.closing.set()  # the polls' naps end now: the process's exit waits for its threads
        gc.unfreeze()  # what the app froze can be collected once it is gone (tests run many apps)

    def nap(self, seconds: float) -> None:
        """A background poll's pause between reads: cut short when the app closes, so quitting
        never waits out a poll's sleep."""
        self.closing.wait(seconds)

    def _load_keymap(self) -> None:
        """``keymap.json`` in the workspace maps binding ids to keys, e.g. {"new-run": "N"}; what
        the action registry refuses is named in a warning, and the rest applies."""
        from db.files import read_regular_text

        path = self.workspace.home / "keymap.json"
        if not path.exists():
            return
        try:
            requested = json.loads(read_regular_text(path, encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self.notify(f"{path}: not a keymap ({exc}); default keys in use", severity="warning", timeout=10)
            return
        self.keymap, warnings = validate_keymap(requested, str(path))
        for warning in warnings:
            self.notify(warning, severity="warning", timeout=10)
        self.set_keymap(self.keymap)

    @work(thread=True, group="scheduler", exit_on_error=False)
    def ensure_scheduler(self) -> None:
        from runner.daemon import start_detached

        try:
            start_detached(self.workspace)
        except (OSError, RuntimeError) as exc:
            self.call_from_thread(self.notify, f"scheduler not started: {exc}", severity="error")

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def poll_runs(self) -> None:
        worker = get_current_worker()
        since = 0.0
        polls = 0
        known: set[int] = set()
        stamps: dict[int, float] = {}  # run id -> the updated_at last posted
        try:
            # The newest runs first, so the table fills at once even with thousands of runs.
            self.post_message(RunsUpdated(self.db.list_runs(limit=FIRST_PAGE), initial=True, partial=True))
        except Exception as exc:
            self.post_message(PollFailed(str(exc)))
        while not worker.is_cancelled:
            started = time.time()
            try:
                # Look back a little: a change stamped just before another process's commit of a
                # later stamp would otherwise be skipped. What was already posted is left out.
                recent = self.db.runs_changed_since(since - POLL_OVERLAP_SECONDS if since else 0.0)
                changed = [run for run in recent if stamps.get(run.id) != run.updated_at]
                stamps = {run.id: run.updated_at for run in recent}
                removed: set[int] = set()
                polls += 1
                if polls % FULL_CHECK_EVERY == 0 and known:
                    removed = known - self.db.run_ids()
                if changed or removed or polls == 1:
                    since = max([since, *(run.updated_at for run in changed)])
                    known |= {run.id for run in changed}
                    known -= removed
                    self.post_message(RunsUpdated(changed, removed, initial=polls == 1))
            except Exception as exc:  # a locked or vanished database must not end the poll
                self.post_message(PollFailed(str(exc)))
            elapsed = time.time() - started
            self.nap(max(0.05, self.poll_seconds - elapsed))

    def on_runs_updated(self, message: RunsUpdated) -> None:
        for run in message.changed:
            self.runs[run.id] = run
        for run_id in message.removed:
            self.runs.pop(run_id, None)
        if not message.partial and not self.loaded:
            self.loaded = True
            # Thousands of runs are long-lived objects; without this, each full collection walks
            # all of them (~200 ms with 10,000 runs) and stalls whatever screen is being drawn.
            gc.freeze()
            self._warm_imports()
        for screen in self.screen_stack:
            if hasattr(screen, "runs_updated"):
                screen.runs_updated(message)

    @work(thread=True, group="warm-imports", exit_on_error=False)
    def _warm_imports(self) -> None:
        """Import the run screen's modules (plotext, the tabs, the log) once the runs are loaded,
        off the event loop, so the first run opened is as quick as the next ones."""
        import leuktui.screens.run_detail  # noqa: F401

    def notify(self, message: str, *, title: str = "", severity: str = "information", timeout: float | None = None,
               markup: bool = True) -> None:
        """Notifications are plain text, whoever asks (a screen's ``notify`` always says
        ``markup=True``): they quote names, paths and errors, which are never markup."""
        super().notify(visible(message, newlines=True), title=visible(title), severity=severity, timeout=timeout, markup=False)

    def on_poll_failed(self, message: PollFailed) -> None:
        self.notify(f"database: {message.error}", severity="error", timeout=4)

    # -- shared helpers -------------------------------------------------------------------

    def run_task(self, label: str, task: Callable[[], Any], *, done: Callable[[Any], None] | None = None) -> None:
        """Run ``task`` in a thread and hand its result to ``done`` on the event loop: the one way a
        one-off piece of background work (a read, an evaluation, a queue operation) reports back.
        Polls that go on post messages instead. A user error becomes a notification naming its
        cause; anything else is a bug, shown and raised."""
        self._run_task(label, task, done)

    @work(thread=True, group="actions", exit_on_error=False)
    def _run_task(self, label: str, task: Callable[[], Any], done: Callable[[Any], None] | None) -> None:
        try:
            result = task()
        except UserError as exc:  # the cause, in one line: "CUDA is not available", "no such run"
            self.call_from_thread(self.notify, str(exc), title=label, severity="error", timeout=6)
            return
        except Exception as exc:
            self.call_from_thread(self.notify, f"{exc.__class__.__name__}: {exc}", title=f"{label} failed", severity="error", timeout=8)
            raise
        if done is not None:
            self.call_from_thread(done, result)

    # -- screens --------------------------------------------------------------------------

    def open_run(self, run_id: int) -> None:
        """Read a run's data in a thread, then push its screen with it: the screen is laid out and
        painted once, complete."""
        resume_gc = self.pause_gc()
        origin = self.screen

        def read() -> tuple:
            from leuktui.feed import DetailFeed

            try:
                feed = DetailFeed(self.db, self.workspace.log_path(run_id), run_id)
                return feed, feed.read()
            except BaseException:
                self.call_from_thread(resume_gc)
                raise

        def push(opened: tuple) -> None:
            from leuktui.screens.run_detail import RunDetailScreen

            if self.screen is origin:  # not if the user went elsewhere meanwhile, or pressed enter twice
                self.push_screen(RunDetailScreen(run_id, opened=opened, on_first_picture=resume_gc))
            else:
                resume_gc()

        self.run_task(f"run {run_id}", read, done=push)

    def pause_gc(self, *, at_most: float = 3.0) -> Callable[[], None]:
        """No garbage collection until the returned function is called, or for ``at_most``
        seconds: a full collection takes tens of milliseconds and would stall the picture being
        drawn. Textual does the same while scrolling; if it has already paused collection, it
        stays Textual's to resume."""
        if not gc.isenabled():
            return lambda: None
        gc.disable()
        timer = self.set_timer(at_most, gc.enable)

        def resume() -> None:
            timer.stop()
            gc.enable()

        return resume

    def action_help(self) -> None:
        from leuktui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(screen_of(self.screen)))

    def action_queue_screen(self) -> None:
        from leuktui.screens.queue import QueueScreen

        if not isinstance(self.screen, QueueScreen):
            self.push_screen(QueueScreen())

    def action_studies_screen(self) -> None:
        from leuktui.screens.studies import StudiesScreen

        if not isinstance(self.screen, StudiesScreen):
            self.push_screen(StudiesScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every key binding of the screen and the app is also in the command palette."""
        yield from super().get_system_commands(screen)
        seen = set()
        for owner in (screen, self):
            for binding in getattr(owner, "BINDINGS", []):
                if not binding.description or binding.action in seen:
                    continue
                seen.add(binding.action)
                known = ACTION_BY_ID.get(binding.id)
                key = display(known, self.keymap) if known is not None else binding.key
                yield SystemCommand(  # the help's line under the key bar's word: what it does, and its key
                    binding.description, f"{known.explained if known is not None else binding.description} ({key})",
                    lambda owner=owner, action=binding.action: owner.run_action(action),
                )
