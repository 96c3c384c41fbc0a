"""Opening the database: engine set-up (WAL, busy timeout, foreign keys) and schema upgrades."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DatabaseError as SQLAlchemyDatabaseError
from sqlalchemy.exc import DBAPIError, OperationalError

from db import dialect
from db.dialect import sqlite_path
from db.errors import UserError
from db.settings import number_setting

# The newest migration in db/migrations/versions; a test keeps the two in step.
SCHEMA_REVISION = "0008"
BUSY_TIMEOUT_MS = 30_000  # $LEUKTUI_BUSY_TIMEOUT_MS overrides it
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class DatabaseError(UserError, RuntimeError):
    """The database cannot be opened or upgraded; the message names it."""


def create_db_engine(url: str, *, read_only: bool = False) -> Engine:
    """The engine of ``url``. ``read_only``: a SQLite file in a folder this process cannot write
    (a read-only file system, a workspace shared to read), opened so that SQLite writes nothing."""
    sqlite_file = sqlite_path(url)
    if sqlite_file is None:
        try:
            return create_engine(url, **dialect.engine_options(url))
        except ModuleNotFoundError as exc:
            raise DatabaseError(dialect.missing_driver(url, exc)) from None
    busy_ms = int(number_setting("LEUKTUI_BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS, whole=True))
    if read_only:
        engine = _read_only_sqlite_engine(sqlite_file, busy_ms)
    else:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": busy_ms / 1000})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        if not read_only:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    return engine


def _read_only_sqlite_engine(path: Path, busy_ms: int) -> Engine:
    """SQLite's ``mode=ro``, decided for each connection. A WAL database is read through its
    ``-wal`` and ``-shm`` files, which exist while some process has it open (a scheduler, a
    worker): then what they commit is read as they commit it. With none open there is no ``-wal``
    (or it went with the last writer's close) and none can be made here, so the file is read as
    ``immutable``: as it is, which it stays unless a writer opens it during this command."""
    import os
    import sqlite3
    from urllib.parse import quote

    from sqlalchemy.pool import QueuePool

    if not path.is_file():
        raise DatabaseError(f"{path}: no database, and the folder cannot be written to make one")
    uri = f"file:{quote(os.fsencode(path))}?mode=ro"

    def connect():
        if path.with_name(path.name + "-wal").exists():
            connection = sqlite3.connect(uri, uri=True, timeout=busy_ms / 1000, check_same_thread=False)
            try:
                connection.execute("PRAGMA schema_version").fetchone()  # reads through the -wal, or fails
                return connection
            except sqlite3.OperationalError:
                connection.close()
        return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=busy_ms / 1000, check_same_thread=False)

    return create_engine("sqlite://", creator=connect, poolclass=QueuePool)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, url: str, revision: str = "head") -> None:
    from alembic import command

    config = alembic_config(url)
    if engine.dialect.name != "sqlite":
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        return
    # A migration that rebuilds a table drops the old one, and with foreign keys on SQLite's
    # implicit DELETE of its rows would cascade to every child row. The pragma only takes effect
    # outside a transaction, so it is set before the migration's begins, and checked after.
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
        connection.commit()
        try:
            with connection.begin():
                before = len(connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall())
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                after = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if len(after) > before:  # rolled back: the database stays as it was
                    raise DatabaseError(f"{url}: upgrading the schema would leave {len(after) - before} rows whose run "
                                        f"is gone (e.g. {after[0]}); nothing was changed")
        finally:
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")
            connection.commit()


def create_schema(engine: Engine) -> None:
    """A new, empty database gets the newest schema at once, from the models, stamped with the
    newest revision: what the migrations build step by step (``tests/test_db.py`` holds the two
    equal), without importing alembic or rebuilding tables a new database does not have."""
    from db.models import Base

    with engine.begin() as connection:
        Base.metadata.create_all(connection)
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))
        connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:revision)"), {"revision": SCHEMA_REVISION})


def is_empty(engine: Engine) -> bool:
    with engine.connect() as connection:
        return not inspect(connection).get_table_names()


def ensure_schema(engine: Engine, url: str, *, read_only: bool = False) -> None:
    """Bring the schema to the newest revision; cheap when it already is (no alembic import).
    ``read_only``: a database that cannot be written is only checked."""
    try:
        revision = current_revision(engine)
        if revision == SCHEMA_REVISION:
            return
        if read_only:
            raise DatabaseError(f"{sqlite_path(url) or url}: its schema is leuktui's revision {revision or 'none'}, this "
                                f"leuktui's is {SCHEMA_REVISION}, and a workspace that cannot be written is not upgraded")
        with dialect.migration_lock(engine, url):
            if current_revision(engine) == SCHEMA_REVISION:
                return
            if is_empty(engine):
                create_schema(engine)
            else:
                upgrade(engine, url)
    except DBAPIError as exc:
        if not is_unusable_database(exc):
            raise
        raise database_error(url, exc) from None


def is_unusable_database(exc: DBAPIError) -> bool:
    """An error about the database itself (unreachable, locked, corrupt, not a database), which a
    user fixes; not one about our SQL, which is a bug."""
    return isinstance(exc, OperationalError) or type(exc) is SQLAlchemyDatabaseError


def database_error(url, exc: DBAPIError) -> DatabaseError:
    """One line naming the database (password hidden) and what is wrong with it."""
    return DatabaseError(dialect.describe_unreachable(url, exc))
