"""Everything that differs between the databases leuktui runs on: SQLite (the default, one file in
the workspace) and PostgreSQL (a lab's shared server). Every other module's SQL is portable.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, Text, cast, func, insert, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ColumnElement

# Any constant shared by every leuktui process: the key of PostgreSQL's advisory lock for migrations.
MIGRATION_LOCK_KEY = 0x6C65756B  # "leuk"

# SQLSTATEs PostgreSQL answers with when retrying the transaction is the cure.
_PG_RETRY_STATES = {"40001", "40P01"}  # serialization failure, deadlock detected


SUPPORTED = ("sqlite", "postgresql")


def check_url(url: str | URL) -> None:
    """Refuse, in one line, a database URL leuktui cannot use (an unknown scheme, no URL at all)."""
    from db.errors import UserError

    try:
        parsed = make_url(url)
    except Exception:  # sqlalchemy's ArgumentError, and whatever a malformed port raises
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))  # never the password
        raise UserError(f"LEUKTUI_DB={shown!r}: not a database URL; use sqlite:///PATH or "
                        "postgresql+psycopg://USER@HOST:PORT/DB") from None
    if parsed.get_backend_name() not in SUPPORTED:
        shown = parsed.render_as_string(hide_password=True)
        raise UserError(f"{shown}: leuktui runs on {' or '.join(SUPPORTED)}, not {parsed.get_backend_name()!r}")


def backend_name(url: str | URL) -> str:
    return make_url(url).get_backend_name()


def sqlite_path(url: str | URL) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def engine_options(url: str | URL) -> dict[str, Any]:
    """Arguments to ``create_engine`` for a server database (SQLite's are set in db.session)."""
    if backend_name(url) == "postgresql":
        # A worker holds one connection and the app a few; idle ones are recycled before a server
        # or firewall drops them. No ping per checkout: it was a round trip on every write and
        # halved the step rows a server took (bench/db_load.py); a dropped connection is instead
        # noticed when used, the pool is refreshed, and a write is retried (``is_transient``).
        return {"pool_pre_ping": False, "pool_size": 4, "max_overflow": 8, "pool_recycle": 1800}
    return {"pool_pre_ping": True}


def pairs_as_json(dialect: str, first: ColumnElement, second: ColumnElement) -> ColumnElement:
    """An aggregate packing (first, second) of every row into one JSON array of pairs, as text."""
    if dialect == "postgresql":
        return cast(func.json_agg(func.json_build_array(first, second)), Text)
    return func.json_group_array(func.json_array(first, second))


def insert_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]], *, durable: bool = True) -> None:
    """Insert many rows in one statement; a row already there (a batch retried after its commit's
    answer was lost) is left as it is.

    PostgreSQL: one ``INSERT ... SELECT FROM unnest(arrays)``, one array per column, sent by the
    driver as a prepared statement: one round trip and nothing to parse, whatever the batch's size.
    With ``durable=False`` the statement's own transaction commits without waiting for its WAL to
    reach the disk (``set_config('synchronous_commit', 'off', true)``, for that transaction only;
    see ``Database.add_steps``). SQLite: one multi-row ``INSERT OR IGNORE``."""
    if not rows:
        return
    columns = list(rows[0])
    if connection.dialect.name != "postgresql":
        connection.execute(insert(table).prefix_with("OR IGNORE"), list(rows))
        return
    quote = connection.dialect.identifier_preparer
    arrays = ", ".join(f"%s::{table.c[name].type.compile(connection.dialect)}[]" for name in columns)
    setting = "" if durable else "(SELECT set_config('synchronous_commit', 'off', true)) AS local_setting, "
    statement = (
        f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.quote(name) for name in columns)}) "
        f"SELECT batch.* FROM {setting}unnest({arrays}) AS batch ON CONFLICT DO NOTHING"
    )
    connection.exec_driver_sql(statement, tuple([row[name] for row in rows] for name in columns))


def statement_connection(engine: Engine):
    """A connection for one write statement that is its own transaction.

    On PostgreSQL it runs in autocommit: no BEGIN and COMMIT round trips around a statement that
    is atomic anyway. SQLite takes its write lock in a transaction as ever."""
    if engine.dialect.name == "postgresql":
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    return engine.begin()


def unpack_pairs(packed: str | None) -> list[Any]:
    return json.loads(packed) if packed else []


def is_transient(exc: DBAPIError) -> bool:
    """A write the database refused for now (a lock, a deadlock victim) that a retry will pass."""
    if exc.connection_invalidated:  # the server dropped the connection; the pool has a new one
        return True
    state = getattr(exc.orig, "sqlstate", None)
    if state is not None:
        return state in _PG_RETRY_STATES
    message = str(exc.orig)
    return "locked" in message or "busy" in message


@contextlib.contextmanager
def migration_lock(engine: Engine, url: str | URL) -> Iterator[None]:
    """Several processes may open a new database at once; only one of them migrates.

    SQLite: an OS lock on a file beside the database. PostgreSQL: a session advisory lock, held
    on its own connection until the migration committed.
    """
    sqlite_file = sqlite_path(url)
    if sqlite_file is not None:
        from filelock import FileLock  # here, not at the top: off the app's start-up path

        from db.workspace import file_permissions

        with FileLock(sqlite_file.with_name(sqlite_file.name + ".migrate.lock"), mode=file_permissions()):
            yield
        return
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                connection.commit()
        return
    yield


def describe_unreachable(url: str | URL, exc: BaseException) -> str:
    """One line for a database that cannot be opened: what, where (host and port), why; no password."""
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
    if parsed.get_backend_name() == "sqlite":
        full = full_disk_hint(sqlite_path(parsed)) if "disk I/O error" in reason or "database or disk is full" in reason else ""
        return f"{shown}: cannot open the database ({reason}){full}"
    where = f"{parsed.host or 'localhost'}:{parsed.port or default_port(parsed)}"
    return f"{shown}: cannot reach the database server at {where} ({reason})"


FULL_BELOW = 1 << 16  # bytes free under which a file system is full for a database


def full_disk_hint(path: Path | None) -> str:
    """Where the file system holding ``path`` has no room left (SQLite cannot even open for reading
    there: it makes its shared-memory file first), the words that say so; else nothing."""
    import os

    if path is None:
        return ""
    try:
        system = os.statvfs(path.parent)
    except OSError:
        return ""
    if system.f_flag & os.ST_RDONLY or system.f_bavail * system.f_frsize >= FULL_BELOW:
        return ""  # a read-only file system reports no room by nature
    return "; its file system is full (no space left on device): free some there and try again"


def default_port(url: URL) -> int | str:
    return {"postgresql": 5432, "mysql": 3306}.get(url.get_backend_name(), "?")


def missing_driver(url: str | URL, exc: ModuleNotFoundError) -> str:
    shown = make_url(url).render_as_string(hide_password=True)
    hint = " (pip install 'leuktui[postgres]')" if backend_name(url) == "postgresql" else ""
    return f"{shown}: the database driver {exc.name!r} is not installed{hint}"


# -- Optuna's storage beside ours ------------------------------------------------------------------

# Optuna's RDB storage keeps its own tables and its own alembic_version: on PostgreSQL it gets a
# schema of its own in our database, so neither's migrations ever see the other's.
OPTUNA_SCHEMA = "optuna"


def optuna_url(url: str | URL) -> str | None:
    """The SQLAlchemy URL of Optuna's RDB storage for a server database (None for SQLite, where
    Optuna recommends its journal file instead): the same server and database, schema ``optuna``."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    options = " ".join(filter(None, [parsed.query.get("options", ""), f"-csearch_path={OPTUNA_SCHEMA}"]))
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


def create_optuna_schema(engine: Engine) -> None:
    """Make the schema Optuna's tables live in (PostgreSQL; a no-op if it is there)."""
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
