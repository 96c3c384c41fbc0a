"""The typed query API every process uses: the CLI, the app, the worker and the scheduler."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db import dialect
from db.errors import UserError
from db.models import (
    RUN_STATUSES,
    WAITING_STATUSES,
    Epoch,
    Evaluation,
    Prediction,
    Run,
    StepMetric,
    Submission,
    Sweep,
)
from db.session import DatabaseError, create_db_engine, ensure_schema, sqlite_path
from db.settings import number_setting
from db.vocabulary import CANCELLING, COMPLETED, HELD, METRICS, QUEUED, RUNNING
from db.workspace import file_permissions

T = TypeVar("T")
WRITE_ATTEMPTS = 8
WRITE_WAIT_SECONDS = 120.0  # for the writer turn; $LEUKTUI_WRITE_WAIT_SECONDS changes it
HEARTBEAT_WAIT_SECONDS = 5.0

# Columns of an epoch row a worker supplies; the summary columns of the run follow from them.
EPOCH_FIELDS = (
    "train_loss", "train_acc", *(metric.epoch_column for metric in METRICS), "confusion", "lr", "seconds", "images_per_s",
)


def _wait_for_lock(fd: int, path, wait: float) -> int:
    """Block on ``flock(fd)`` for at most ``wait`` seconds. The blocking call runs in a thread of
    its own; if the wait is given up, that thread closes ``fd`` (releasing the lock) whenever the
    lock comes, so a holder that is stopped or hung costs a bounded wait, never a deadlock."""
    decided = threading.Lock()
    taken, given_up = threading.Event(), threading.Event()

    def take() -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with decided:
            if given_up.is_set():
                os.close(fd)
            else:
                taken.set()

    threading.Thread(target=take, daemon=True, name="writer-turn").start()
    if taken.wait(wait):
        return fd
    with decided:
        if taken.is_set():
            return fd
        given_up.set()
    raise DatabaseError(f"{path}: another process has held the database's write lock for {wait:g} s "
                        "(a stopped or hung process?); nothing was written")


def _stamped(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``updated_at`` set to now, unless given: called inside a write, after the
    writer turn is taken, so stamps follow the order in which changes commit."""
    return values if "updated_at" in values else {**values, "updated_at": time.time()}


class RunBusy(UserError):
    """The run is running, and the operation needs it stopped; names the run."""


class NotFound(UserError, LookupError):
    """No run (or other record) with that id; the message names it."""


def refuse_empty_file(path: Path | None) -> None:
    """A database file of 0 bytes is not a new workspace's: something emptied it (a failed copy,
    a full disk, ``> leuktui.db``). Taking it for a new database would start the ids again at 1
    beside the old runs' folders, so it is refused. A process creating the database leaves the
    file empty for a moment only (its first connection writes the header): look twice."""
    if path is None:
        return
    for attempt in range(2):
        try:
            if path.stat().st_size or path.with_name(path.name + "-wal").exists():
                return
        except FileNotFoundError:
            return
        if attempt == 0:
            time.sleep(0.25)
    raise DatabaseError(f"{path}: an empty file (0 bytes), not a leuktui database; restore it, or move it away to start anew")


class ReadOnlyError(UserError, PermissionError):
    """A write to a database opened read-only; the message names the database's folder."""


class Database:
    """One database connection pool and the queries on it."""

    def __init__(self, url: str, *, migrate: bool = True, write_wait: float | None = WRITE_WAIT_SECONDS, read_only: bool = False):
        """``write_wait`` bounds how long a write waits for another process's turn (None: as
        long as it takes, which wakes fastest; a worker's data writes wait so, its liveness being
        its heartbeat file). ``read_only``: a SQLite file whose folder this process cannot write,
        read without writing anything; a write is refused in one line (``ReadOnlyError``)."""
        self.url = url
        if write_wait == WRITE_WAIT_SECONDS:
            write_wait = number_setting("LEUKTUI_WRITE_WAIT_SECONDS", WRITE_WAIT_SECONDS)
        self.write_wait = write_wait
        dialect.check_url(url)
        sqlite_file = sqlite_path(url)
        self.read_only = read_only and sqlite_file is not None
        refuse_empty_file(sqlite_file)
        self.engine: Engine = create_db_engine(url, read_only=self.read_only)
        if migrate:
            ensure_schema(self.engine, url, read_only=self.read_only)
        if not self.read_only and sqlite_file is not None and sqlite_file.exists() and sqlite_file.stat().st_uid == os.getuid():
            # SQLite makes the file 0o644 under the umask; its -wal and -shm files copy this mode.
            os.chmod(sqlite_file, file_permissions())
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock_path = sqlite_file.with_name(sqlite_file.name + ".write.lock") if sqlite_file else None
        # flock belongs to an open file: each thread opens the lock file for itself, so threads of
        # one process exclude each other as processes do.
        self._lock_files = threading.local()

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _writer_turn(self, wait: float | None = None):
        """Writers of one SQLite file take turns on an OS file lock, waiting at most ``wait``
        seconds (else ``write_wait``) before a ``DatabaseError`` that names the lock.

        SQLite makes a waiting writer sleep and poll (up to 100 ms a nap); a blocked ``flock``
        wakes the moment the lock is free, so concurrent workers write in order, promptly. A
        bounded wait blocks in a thread of its own, which costs a little on every contended turn.
        """
        if self.read_only:
            raise ReadOnlyError(f"{self._write_lock_path.parent}: the database there is read-only here (its file or folder "
                                "cannot be written); this command would change it")
        if self._write_lock_path is None:
            yield
            return
        fd = getattr(self._lock_files, "fd", None)
        if fd is None:
            fd = self._lock_files.fd = os.open(self._write_lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_files.fd = None  # the waiting thread owns it now, and closes it when done
            wait = self.write_wait if wait is None else wait
            if wait is None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # the fast path: woken the moment the lock is free
            else:
                fd = _wait_for_lock(fd, self._write_lock_path, wait)
            self._lock_files.fd = fd
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def session(self) -> Session:
        return self.sessions()

    def write(self, work: Callable[[Any], T], *, core: bool | str = False, wait: float | None = None) -> T:
        """Run ``work`` in one write transaction (an ORM session, or a Core connection with
        ``core``), retried if SQLite reports the file locked or PostgreSQL picked it as a
        deadlock victim or dropped the connection. ``core="statement"`` is for work that is a
        single statement, which is then its own transaction (see ``dialect.statement_connection``).
        ``wait`` bounds the wait for the writer turn.

        The busy timeout absorbs ordinary contention; a retry covers the cases SQLite refuses
        at once (a deferred transaction that must upgrade while another process commits).
        """
        for attempt in range(WRITE_ATTEMPTS):
            try:
                if core == "statement":
                    with self._writer_turn(wait), dialect.statement_connection(self.engine) as connection:
                        return work(connection)
                if core:
                    with self._writer_turn(wait), self.engine.begin() as connection:
                        return work(connection)
                with self._writer_turn(wait), self.session() as session, session.begin():
                    return work(session)
            except OperationalError as exc:
                if not dialect.is_transient(exc) or attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(0.02 * 2**attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    # -- runs ---------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        config: dict[str, Any],
        config_hash: str,
        model: str,
        name: str,
        status: str = QUEUED,
        tags: Sequence[str] = (),
        notes: str = "",
        sweep_id: int | None = None,
        parent_id: int | None = None,
        trial: int | None = None,
        session: Session | None = None,
    ) -> Run:
        """Record a new run; inside ``session`` (a write transaction of the caller's), as part of it."""
        assert status in RUN_STATUSES, status
        run = Run(
            name=name,
            status=status,
            config=config,
            config_hash=config_hash,
            model=model,
            sweep_id=sweep_id,
            parent_id=parent_id,
            priority=0,
            created_at=time.time(),
            notes=notes,
            tags=list(tags),
            environment={},
            epochs_done=0,
            last_step=0,
            summary={},
            trial=trial,
        )
        def work(session: Session) -> None:
            run.updated_at = time.time()  # under the writer turn, so change polls see it in order
            session.add(run)

        if session is not None:
            work(session)
            session.flush()
        else:
            self.write(work)
        return run

    def get_run(self, run_id: int) -> Run:
        with self.session() as session:
            run = session.get(Run, run_id)
        if run is None:
            raise NotFound(f"run {run_id}: no such run")
        return run

    def list_runs(self, *, statuses: Iterable[str] | None = None, limit: int | None = None) -> list[Run]:
        """The runs, newest first; ``statuses`` keeps those with one of them, where ``cancelling``
        is a running run whose cancel was asked for (``Run.state``), and ``running`` includes it."""
        query = select(Run).order_by(Run.id.desc())
        if statuses:
            wanted = set(statuses)
            condition = Run.status.in_(sorted(wanted - {CANCELLING}))
            if CANCELLING in wanted and RUNNING not in wanted:
                condition = or_(condition, (Run.status == RUNNING) & Run.cancel_requested_at.is_not(None))
            query = query.where(condition)
        if limit:
            query = query.limit(limit)
        with self.session() as session:
            return list(session.scalars(query))

    def final_fits(self, run_id: int) -> list[Run]:
        """The final fits made from run ``run_id`` (trained on train + valid), and their retries,
        oldest first."""
        query = select(Run).where(Run.parent_id.is_not(None)).order_by(Run.id)
        with self.session() as session:
            children: dict[int, list[Run]] = {}
            for run in session.scalars(query):
                children.setdefault(run.parent_id, []).append(run)
        found, frontier = [], [run_id]
        while frontier:
            parent = frontier.pop()
            for run in children.get(parent, []):
                if (run.config or {}).get("fit_on") == "train+valid":
                    found.append(run)
                    frontier.append(run.id)
        return sorted(found, key=lambda run: run.id)

    def final_fit_plan(self, run_id: int) -> tuple[list[Run], list[Run], list[Run]]:
        """What a final-fit export of run ``run_id`` takes: the newest ``finalize``'s fits (those
        that agree on everything but the seed), as ``(completed, waiting or running, left out)``;
        a failed or cancelled fit that a retry replaced is neither, one without is left out."""
        fits = self.final_fits(run_id)
        if not fits:
            return [], [], []

        def without_seed(run: Run) -> str:
            return repr(sorted((k, repr(v)) for k, v in run.config.items() if k != "seed"))

        newest = without_seed(fits[-1])
        group = [run for run in fits if without_seed(run) == newest]
        retried = {run.parent_id for run in group}
        # One fit a seed (the newest): two of one config and seed, as an older `finalize --force`
        # made, would count that seed twice in the ensemble.
        newest_of_seed = {run.config.get("seed"): run for run in group if run.status == COMPLETED}
        completed = sorted(newest_of_seed.values(), key=lambda run: run.id)
        waiting = [run for run in group if run.status in (QUEUED, HELD, RUNNING)]
        left_out = [run for run in group if run not in completed and run not in waiting and run.id not in retried
                    and run.status != COMPLETED]  # an older fit of a seed a newer one fits is replaced, not left out
        return completed, waiting, left_out

    def update_run(self, run_id: int, *, when_status: Sequence[str] | None = None, wait: float | None = None, **values: Any) -> bool:
        """Change columns of a run other than its status (``db.states`` owns that one).

        ``when_status`` makes the change conditional on the run's current status; returns
        whether it applied. Raises NotFound for a run that does not exist.
        """
        if "status" in values:
            raise ValueError("a run's status is written by db.states.move, compare-and-set")
        query = update(Run).where(Run.id == run_id)
        if when_status is not None:
            query = query.where(Run.status.in_(list(when_status)))
        result = self.write(lambda session: session.execute(query.values(**_stamped(values))), wait=wait)
        if result.rowcount == 0:
            self.get_run(run_id)
            return False
        return True

    def compare_and_set_status(self, run_id: int, from_statuses: Sequence[str], to: str, **values: Any) -> bool:
        """Set a run's status to ``to`` only if it is one of ``from_statuses``; for ``db.states``."""
        values["status"] = to
        query = update(Run).where(Run.id == run_id, Run.status.in_(list(from_statuses)))
        return self.write(lambda session: session.execute(query.values(**_stamped(values)))).rowcount == 1

    def heartbeat(self, run_id: int, *, phase: str | None = None) -> None:
        """The worker lives; with ``phase``, it is doing something new, which the app shows (so
        only then does the run count as changed for the app's poll)."""
        # A beat that cannot be written soon is skipped: the heartbeat file says the worker lives.
        if phase is None:
            self.update_run(run_id, heartbeat_at=time.time(), updated_at=Run.updated_at, wait=HEARTBEAT_WAIT_SECONDS)
        else:
            self.update_run(run_id, heartbeat_at=time.time(), phase=phase[:200], wait=HEARTBEAT_WAIT_SECONDS)

    def runs_changed_since(self, since: float) -> list[Run]:
        """Runs created or changed after ``since`` (the app's incremental poll)."""
        # Ordered by the indexed column: ordering by id would make SQLite walk the whole table.
        query = select(Run).where(Run.updated_at > since).order_by(Run.updated_at)
        with self.session() as session:
            return list(session.scalars(query))

    def run_ids(self) -> set[int]:
        with self.session() as session:
            return set(session.scalars(select(Run.id)))

    def delete_run(self, run_id: int) -> None:
        """Delete a run and its epochs, steps, evaluations and predictions (not its files).

        Refused for a run that is running at that moment (checked in the deleting transaction,
        not against what a caller read earlier)."""
        def work(session: Session) -> int:
            status, cancelling = session.execute(
                select(Run.status, Run.cancel_requested_at).where(Run.id == run_id).with_for_update()).one_or_none() or (None, None)
            if status == RUNNING:
                raise RunBusy(f"run {run_id} is cancelling; delete it once it has stopped" if cancelling else
                              f"run {run_id} is running; cancel it first")
            evaluations = select(Evaluation.id).where(Evaluation.run_id == run_id)
            session.execute(delete(Prediction).where(Prediction.evaluation_id.in_(evaluations)))
            session.execute(delete(Evaluation).where(Evaluation.run_id == run_id))
            session.execute(delete(Epoch).where(Epoch.run_id == run_id))
            session.execute(delete(StepMetric).where(StepMetric.run_id == run_id))
            session.execute(update(Run).where(Run.parent_id == run_id).values(parent_id=None))
            return session.execute(delete(Run).where(Run.id == run_id)).rowcount

        if self.write(work) == 0:
            raise NotFound(f"run {run_id}: no such run")

    def epochs_of(self, run_ids: Sequence[int]) -> dict[int, list[Epoch]]:
        query = select(Epoch).where(Epoch.run_id.in_(list(run_ids))).order_by(Epoch.run_id, Epoch.epoch)
        out: dict[int, list[Epoch]] = {run_id: [] for run_id in run_ids}
        with self.session() as session:
            for epoch in session.scalars(query):
                out[epoch.run_id].append(epoch)
        return out

    def last_k_means(self, k: int, run_ids: Sequence[int] | None = None) -> dict[int, dict[str, float | None]]:
        """``{run id: {metric key: mean over the run's last k epochs}}`` in one query (every run's
        when ``run_ids`` is None): what ``ls`` prints beside the best epoch."""
        query = (
            select(Epoch.run_id, *(func.avg(getattr(Epoch, m.epoch_column)) for m in METRICS))
            .join(Run, Run.id == Epoch.run_id)
            .where(Epoch.epoch > Run.epochs_done - k)
            .group_by(Epoch.run_id)
        )
        if run_ids is not None:
            query = query.where(Epoch.run_id.in_(list(run_ids)))
        with self.session() as session:
            return {row[0]: {m.key: (float(v) if v is not None else None) for m, v in zip(METRICS, row[1:], strict=True)}
                    for row in session.execute(query)}

    def evaluations_of(self, run_ids: Sequence[int]) -> list[Evaluation]:
        query = select(Evaluation).where(Evaluation.run_id.in_(list(run_ids))).order_by(Evaluation.id)
        with self.session() as session:
            return list(session.scalars(query))

    def runs_by_id(self, run_ids: Sequence[int]) -> list[Run]:
        query = select(Run).where(Run.id.in_(list(run_ids))).order_by(Run.id)
        with self.session() as session:
            return list(session.scalars(query))

    def runs_with_config(self, config_hash: str, status: str | None = None) -> list[Run]:
        query = select(Run).where(Run.config_hash == config_hash)
        if status:
            query = query.where(Run.status == status)
        with self.session() as session:
            return list(session.scalars(query.order_by(Run.id)))

    # -- epochs and steps ---------------------------------------------------------------------

    def add_epoch(self, run_id: int, epoch: int, step: int, metrics: dict[str, Any], *, best: dict[str, Any] | None = None) -> None:
        """Record one finished epoch and bring the run's summary columns up to date in one commit.

        ``best`` carries the summary of the best epoch so far when it changed.
        """
        row = {key: metrics.get(key) for key in EPOCH_FIELDS}
        row["confusion"] = row["confusion"] or [[0, 0], [0, 0]]
        values: dict[str, Any] = {"epochs_done": epoch, "last_step": step}
        if best is not None:
            values.update(
                best_epoch=best["epoch"],
                best_val_acc=best.get("val_acc"),
                best_val_f1=best.get("f1"),
                best_val_auc=best.get("auc"),
                summary=best,
            )
        def work(session: Session) -> None:
            now = time.time()
            session.add(Epoch(run_id=run_id, epoch=epoch, step=step, created_at=now, **row))
            session.execute(update(Run).where(Run.id == run_id).values(**values, heartbeat_at=now, updated_at=now))

        self.write(work)

    def add_steps(self, run_id: int, rows: Sequence[tuple[int, str, float]], *, durable: bool = True) -> None:
        """Insert a batch of (step, key, value) rows in one statement and one commit.

        ``durable=False`` is for the batches inside an epoch: PostgreSQL then acknowledges the
        commit before its WAL is on disk (``synchronous_commit`` off for that transaction only;
        SQLite is unchanged). A server crash can lose such rows, never reorder or corrupt them,
        and the next durable commit (the epoch's last batch, written durably before its
        checkpoint and row) flushes every one before it. So a crash loses at most steps after
        the last checkpoint, which a resume discards and trains again anyway."""
        if not rows:
            return
        payload = [{"run_id": run_id, "step": s, "key": k, "value": v} for s, k, v in rows]
        table = StepMetric.__table__
        # Core, not the ORM session: this is the hot path of every worker.
        self.write(lambda connection: dialect.insert_rows(connection, table, payload, durable=durable), core="statement")

    def epochs(self, run_id: int, *, after: int = 0) -> list[Epoch]:
        query = select(Epoch).where(Epoch.run_id == run_id, Epoch.epoch > after).order_by(Epoch.epoch)
        with self.session() as session:
            return list(session.scalars(query))

    def steps(self, run_id: int, key: str = "train_loss", *, after: int = 0) -> list[tuple[int, float]]:
        query = (
            select(StepMetric.step, StepMetric.value)
            .where(StepMetric.run_id == run_id, StepMetric.key == key, StepMetric.step > after)
            .order_by(StepMetric.step)
        )
        with self.session() as session:
            return [(step, value) for step, value in session.execute(query)]

    def steps_overview(self, run_id: int, key: str = "train_loss", *, max_points: int = 2000) -> list[tuple[int, float]]:
        """At most ``max_points`` (step, mean value) pairs over the whole run, bucketed in SQL and
        ending exactly on the newest step; a chart needs no more than its width.

        The buckets come back packed in one JSON value: one row instead of thousands, so a reader
        thread needs the GIL back once rather than once per row while the event loop is busy.
        Values keep 15 significant digits."""
        where = (StepMetric.run_id == run_id, StepMetric.key == key)
        with self.session() as session:
            last = session.scalar(select(func.max(StepMetric.step)).where(*where))
            if last is None:
                return []
            bucket = max(1, -(-last // max_points))
            group = (StepMetric.step - 1) // bucket
            buckets = (
                select(func.max(StepMetric.step).label("step"), func.avg(StepMetric.value).label("value"))
                .where(*where).group_by(group).subquery()
            )
            packed = session.scalar(select(dialect.pairs_as_json(self.engine.dialect.name, buckets.c.step, buckets.c.value)))
        return sorted((int(step), float(value)) for step, value in dialect.unpack_pairs(packed))

    def count_steps(self, run_id: int) -> int:
        with self.session() as session:
            return session.scalar(select(func.count()).select_from(StepMetric).where(StepMetric.run_id == run_id)) or 0

    def truncate_after(self, run_id: int, *, epoch: int, step: int) -> None:
        """Forget epochs and steps newer than a checkpoint, so a resumed run repeats none."""
        def work(session: Session) -> None:
            session.execute(delete(Epoch).where(Epoch.run_id == run_id, Epoch.epoch > epoch))
            session.execute(delete(StepMetric).where(StepMetric.run_id == run_id, StepMetric.step > step))
            session.execute(update(Run).where(Run.id == run_id).values(**_stamped({"epochs_done": epoch, "last_step": step})))

        self.write(work)

    # -- evaluations ---------------------------------------------------------------------------

    def add_evaluation(
        self,
        run_id: int,
        *,
        checkpoint: str,
        epoch: int | None,
        split: str,
        tta: str,
        metrics: dict[str, Any] | None,
        n: int,
        predictions: Sequence[tuple[str, float, int, int | None]] = (),
        output_path: str | None = None,
        intervals: dict[str, Any] | None = None,
        origin: str = "evaluate",
        replaces: bool = False,
    ) -> Evaluation:
        """Record an evaluation and its per-image predictions (path, probability, predicted, label).

        ``replaces``: the run's earlier evaluations of the same origin, checkpoint, split and views
        go, in the same transaction (the worker keeps one record of its best epoch)."""
        metrics = metrics or {}
        evaluation = Evaluation(
            run_id=run_id,
            checkpoint=checkpoint,
            epoch=epoch,
            split=split,
            tta=tta,
            n=n,
            **{metric.key: metrics.get(metric.key) for metric in METRICS},
            confusion=metrics.get("confusion"),
            output_path=output_path,
            created_at=time.time(),
            intervals=intervals,
            origin=origin,
        )
        def work(session: Session) -> None:
            if replaces:
                session.execute(delete(Evaluation).where(
                    Evaluation.run_id == run_id, Evaluation.origin == origin, Evaluation.checkpoint == checkpoint,
                    Evaluation.split == split, Evaluation.tta == tta,
                ))
            session.add(evaluation)
            session.flush()
            if predictions:
                session.execute(
                    insert(Prediction),
                    [
                        {"evaluation_id": evaluation.id, "row": i, "path": p, "probability": prob, "predicted": pred, "label": label}
                        for i, (p, prob, pred, label) in enumerate(predictions)
                    ],
                )

        self.write(work)
        return evaluation

    def evaluations(self, run_id: int) -> list[Evaluation]:
        query = select(Evaluation).where(Evaluation.run_id == run_id).order_by(Evaluation.id)
        with self.session() as session:
            return list(session.scalars(query))

    def predictions(self, evaluation_id: int) -> list[Prediction]:
        query = select(Prediction).where(Prediction.evaluation_id == evaluation_id).order_by(Prediction.row)
        with self.session() as session:
            return list(session.scalars(query))

    # -- sweeps --------------------------------------------------------------------------------

    def create_sweep(self, name: str, base_config: dict[str, Any], factors: dict[str, list[Any]], *, kind: str = "grid",
                     study: dict[str, Any] | None = None) -> Sweep:
        sweep = Sweep(name=name, base_config=base_config, factors=factors, created_at=time.time(), kind=kind, study=study)
        self.write(lambda session: session.add(sweep))
        return sweep

    def studies(self) -> list[Sweep]:
        """Every study (a sweep of kind ``study``), oldest first."""
        with self.session() as session:
            return list(session.scalars(select(Sweep).where(Sweep.kind == "study").order_by(Sweep.id)))

    def sweep_named(self, name: str, *, kind: str | None = None) -> Sweep | None:
        """The newest sweep called ``name`` (of ``kind``), if any."""
        query = select(Sweep).where(Sweep.name == name)
        if kind is not None:
            query = query.where(Sweep.kind == kind)
        with self.session() as session:
            return session.scalars(query.order_by(Sweep.id.desc()).limit(1)).first()

    def study_turn(self, sweep_id: int, work: Callable[[Session, Sweep], T]) -> T:
        """Run ``work(session, sweep)`` in one write transaction that first writes the study's row:
        on PostgreSQL that row lock, on SQLite the write lock, makes every other process wait
        until this one commits, so two schedulers never give one trial twice or exceed a budget."""
        def turn(session: Session) -> T:
            session.execute(update(Sweep).where(Sweep.id == sweep_id).values(study_turn_at=time.time()))
            sweep = session.get(Sweep, sweep_id, populate_existing=True)
            if sweep is None:
                raise NotFound(f"sweep {sweep_id}: no such sweep")
            return work(session, sweep)

        return self.write(turn)

    def get_sweep(self, sweep_id: int) -> Sweep:
        with self.session() as session:
            sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            raise NotFound(f"sweep {sweep_id}: no such sweep")
        return sweep

    def sweep_runs(self, sweep_id: int) -> list[Run]:
        with self.session() as session:
            return list(session.scalars(select(Run).where(Run.sweep_id == sweep_id).order_by(Run.id)))

    # -- the queue ---------------------------------------------------------------------------------

    def queue(self) -> list[Run]:
        """Running work, then waiting work in the order it will start (priority, then age)."""
        order = case((Run.status == RUNNING, 0), else_=1)
        query = (
            select(Run)
            .where(Run.status.in_([RUNNING, *WAITING_STATUSES]))
            .order_by(order, Run.priority.desc(), Run.id)
        )
        with self.session() as session:
            return list(session.scalars(query))

    def prioritize(self, run_id: int) -> None:
        """Move a waiting run to the front of the queue."""
        def work(session: Session) -> int:
            top = session.scalar(select(func.max(Run.priority)).where(Run.status.in_(WAITING_STATUSES))) or 0
            return session.execute(
                update(Run).where(Run.id == run_id, Run.status.in_(WAITING_STATUSES)).values(**_stamped({"priority": top + 1}))
            ).rowcount

        if self.write(work) == 0:
            raise NotFound(f"run {run_id}: not waiting in the queue")

    # -- submissions -------------------------------------------------------------------------------

    def add_submission(
        self, run_ids: Sequence[int], *, checkpoint: str, tta: str, test_csv: str, path: str, rows: int, notes: str = ""
    ) -> Submission:
        """Record a submission file written by ``export`` (several runs for an ensemble)."""
        submission = Submission(
            run_ids=[int(run_id) for run_id in run_ids], checkpoint=checkpoint, tta=tta, test_csv=test_csv, path=path,
            rows=rows, created_at=time.time(), notes=notes,
        )
        self.write(lambda session: session.add(submission))
        return submission

    def submissions(self) -> list[Submission]:
        """Every recorded submission, oldest first."""
        with self.session() as session:
            return list(session.scalars(select(Submission).order_by(Submission.id)))

    def get_submission(self, submission_id: int) -> Submission:
        with self.session() as session:
            submission = session.get(Submission, submission_id)
        if submission is None:
            raise NotFound(f"submission {submission_id}: no such submission")
        return submission

    def submission_for_path(self, path: str) -> Submission | None:
        """The newest submission written to ``path`` (an absolute file name), if any."""
        query = select(Submission).where(Submission.path == path).order_by(Submission.id.desc()).limit(1)
        with self.session() as session:
            return session.scalars(query).first()

    def set_submission_notes(self, submission_id: int, notes: str) -> None:
        """What a submission is (a final fit's lineage, say), shown beside it."""
        self.write(lambda session: session.execute(update(Submission).where(Submission.id == submission_id).values(notes=notes)))

    def move_submission(self, submission_id: int, path: str) -> None:
        """A submission's file was moved (kept aside when another export replaced it)."""
        self.write(lambda session: session.execute(update(Submission).where(Submission.id == submission_id).values(path=path)))

    def score_submission(self, submission_id: int, score: float, source: str) -> Submission:
        """Attach a score (``source``: "key" when computed from an answer key, "leaderboard" when typed)."""
        assert source in ("key", "leaderboard"), source
        query = update(Submission).where(Submission.id == submission_id).values(score=score, score_source=source, scored_at=time.time())
        if self.write(lambda session: session.execute(query)).rowcount == 0:
            raise NotFound(f"submission {submission_id}: no such submission")
        return self.get_submission(submission_id)

    def predictions_of(self, evaluation_ids: Sequence[int]) -> dict[int, list[tuple[str, float, int, int | None]]]:
        """``{evaluation id: [(path, probability, predicted, label), ...]}`` in row order."""
        query = (
            select(Prediction.evaluation_id, Prediction.path, Prediction.probability, Prediction.predicted, Prediction.label)
            .where(Prediction.evaluation_id.in_(list(evaluation_ids)))
            .order_by(Prediction.evaluation_id, Prediction.row)
        )
        out: dict[int, list[tuple[str, float, int, int | None]]] = {evaluation_id: [] for evaluation_id in evaluation_ids}
        with self.session() as session:
            for evaluation_id, path, probability, predicted, label in session.execute(query):
                out[evaluation_id].append((path, probability, predicted, label))
        return out

    def labelled_predictions(self, evaluation_ids: Sequence[int]) -> dict[int, list[tuple[float, int]]]:
        """``{evaluation id: [(probability, label), ...]}`` of the predictions that have a label."""
        query = (
            select(Prediction.evaluation_id, Prediction.probability, Prediction.label)
            .where(Prediction.evaluation_id.in_(list(evaluation_ids)), Prediction.label.is_not(None))
            .order_by(Prediction.evaluation_id, Prediction.row)
        )
        out: dict[int, list[tuple[float, int]]] = {evaluation_id: [] for evaluation_id in evaluation_ids}
        with self.session() as session:
            for evaluation_id, probability, label in session.execute(query):
                out[evaluation_id].append((probability, label))
        return out
