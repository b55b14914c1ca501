"""Engines, sessions and the schema of the portal database.

Two database URL forms are accepted: ``sqlite:///PATH`` and
``postgresql://USER@HOST:PORT/DATABASE`` (``postgresql+psycopg://`` is the
same; both use psycopg 3).

Every engine is made with a ``WriteAccess``, and that engine is the choke
point that keeps read-only runs read-only:

- ``NONE`` (``--dry-run``): a ``before_cursor_execute`` listener raises
  ``ReadOnlyViolation`` for every statement that writes, whatever code issued
  it. As a second layer, each connection is read-only in the database itself
  (``PRAGMA query_only`` on SQLite, a read-only session on PostgreSQL).
- ``AUDIT_ONLY`` (``--audit``): the same listener lets through only INSERT,
  UPDATE and DELETE on the ``runs`` and ``audit_log`` tables. There is no
  database-level layer for this mode, because it must write some tables.
- ``ALL``: no restriction.

The schema is managed by Alembic with the migrations in this package. Only
``upgrade_schema`` and ``ensure_schema(create_if_empty=True)`` run them.
"""

from __future__ import annotations

import enum
import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import sessionmaker

from ztctl.errors import ConfigError, DatabaseError, ReadOnlyViolation
from ztctl.portal.models import Base
from ztctl.portal.write_guard import DML_VERBS, find_writes
from ztctl.redact import mask_secrets

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
AUDIT_TABLES = frozenset({"runs", "audit_log"})
"""The tables that an audit run may write to."""

# How long an SQLite connection waits for another process's lock before it
# fails with "database is locked". An estimate: far longer than a short write
# by another process, and well inside the minute between cron runs.
SQLITE_BUSY_TIMEOUT_MS = 15_000
# How long psycopg waits for a PostgreSQL server to accept a connection, so
# that a cron run against a host that drops packets fails within seconds.
POSTGRES_CONNECT_TIMEOUT_S = 10

ACCEPTED_URL_FORMS = "sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
_CONNECTION_HINT = (
    "Check that the server is running and that the URL's host, port, user, password and database name are right."
)


class WriteAccess(enum.Enum):
    """The write permission of an engine."""

    NONE = "none"
    """Nothing: dry runs."""
    AUDIT_ONLY = "audit-only"
    """Only the ``runs`` and ``audit_log`` tables: audit runs."""
    ALL = "all"


@dataclass(frozen=True)
class SchemaState:
    """The Alembic revision of a portal database, compared with this ztctl's migrations."""

    current_revision: str | None
    head_revision: str
    is_empty: bool
    """True when the database has neither an Alembic version nor any portal table."""
    is_known_revision: bool
    """False when ``current_revision`` comes from a newer ztctl (or another application's migrations)."""

    @property
    def is_current(self) -> bool:
        return self.current_revision == self.head_revision


@dataclass(frozen=True)
class _EngineInfo:
    access: WriteAccess
    display_url: str
    """The URL as the operator wrote it, password redacted, with an SQLite path made absolute."""


_engine_info: weakref.WeakKeyDictionary[sqlalchemy.Engine, _EngineInfo] = weakref.WeakKeyDictionary()


def redact_url(url: str) -> str:
    """Return ``url`` with its password, in the user part or in a ``password=`` query parameter, replaced by ***."""
    address, question_mark, query = url.partition("?")
    scheme, separator, rest = address.partition("://")
    if separator and "@" in rest:
        user_part, _, host_part = rest.rpartition("@")
        user, colon, _password = user_part.partition(":")
        if colon:
            address = f"{scheme}://{user}:***@{host_part}"
    elif not separator and "@" in address:
        # Not a URL that can be parsed, such as "postgresql:/user:pw@host":
        # mask from the first colon to the last @, which may hide the user too.
        before_at, _, host_part = address.rpartition("@")
        start, colon, _secret = before_at.partition(":")
        if colon:
            address = f"{start}:***@{host_part}"
    if question_mark:
        parameters = []
        for parameter in query.split("&"):
            key, equals, _value = parameter.partition("=")
            parameters.append(f"{key}=***" if equals and key.lower() == "password" else parameter)
        query = "&".join(parameters)
    return f"{address}{question_mark}{query}"


def url_passwords(url: URL) -> list[str]:
    """Return the passwords in ``url``: the one in the user part and a ``password=`` query parameter."""
    secrets = (url.password, url.query.get("password"))
    return [secret for secret in secrets if isinstance(secret, str) and secret]


def write_access(engine: sqlalchemy.Engine) -> WriteAccess:
    """Return the access that ``create_portal_engine`` gave ``engine``; ALL for any other engine."""
    info = _engine_info.get(engine)
    return info.access if info else WriteAccess.ALL


def display_url(engine: sqlalchemy.Engine) -> str:
    """Return the engine's URL for messages and logs, with the password replaced by ***."""
    info = _engine_info.get(engine)
    if info:
        return info.display_url
    return redact_url(engine.url.render_as_string(hide_password=True))


def create_portal_engine(url: str, *, access: WriteAccess, create_sqlite_file: bool = False) -> sqlalchemy.Engine:
    """Create an engine for the portal database and check that it can connect.

    Raises ConfigError for a URL of another kind and DatabaseError when the
    database cannot be reached or, on SQLite, the file is missing and
    ``create_sqlite_file`` is false.
    """
    if create_sqlite_file and access is WriteAccess.NONE:
        raise ValueError("create_sqlite_file=True contradicts WriteAccess.NONE: creating a file is a write")
    parsed = _parse_url(url)
    redacted = redact_url(url)

    if parsed.get_backend_name() == "sqlite":
        parsed = _prepare_sqlite_path(parsed, redacted, create_sqlite_file=create_sqlite_file)
        redacted = redact_url(parsed.render_as_string(hide_password=True))
        engine = sqlalchemy.create_engine(parsed)
        _install_sqlite_setup(engine, access)
    else:
        engine = sqlalchemy.create_engine(parsed.set(drivername="postgresql+psycopg"),
                                          connect_args=_postgres_connect_args(parsed))
        _install_postgres_setup(engine, access)
    _install_write_guard(engine, access)
    _engine_info[engine] = _EngineInfo(access, redacted)

    logger.debug("Opening portal database %s with write access %s", redacted, access.value)
    try:
        with _database_errors(engine, "connect to"), engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                # Reading the schema version fails at once on a file that is not an SQLite database.
                connection.exec_driver_sql("PRAGMA schema_version")
    except DatabaseError:
        engine.dispose()
        raise
    return engine


def session_factory(engine: sqlalchemy.Engine) -> sessionmaker[sqlalchemy.orm.Session]:
    """Return a session factory bound to ``engine``; loaded objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


_IMMEDIATE_OPTION = "ztctl_sqlite_immediate"


def write_session_factory(engine: sqlalchemy.Engine) -> sessionmaker[sqlalchemy.orm.Session]:
    """Return a session factory whose transactions take SQLite's write lock as they begin.

    For a transaction that changes the controller and then records the change;
    on PostgreSQL it is the same as ``session_factory``.
    """
    return sessionmaker(bind=engine.execution_options(**{_IMMEDIATE_OPTION: True}), expire_on_commit=False)


def _parse_url(url: str) -> URL:
    redacted = redact_url(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"database URL {redacted!r} cannot be parsed", hint=_url_forms_hint()) from None
    if parsed.drivername not in ("sqlite", "postgresql", "postgresql+psycopg"):
        raise ConfigError(f"database URL {redacted!r} has an unsupported scheme {parsed.drivername!r}",
                          hint=_url_forms_hint())
    if parsed.host and "@" in parsed.host:
        # SQLAlchemy ends the password at its first @, so the host that it
        # found contains the rest of the password, which the driver would quote in errors.
        raise ConfigError(
            f"database URL {redacted!r} has a password or user name that contains an @",
            hint="Percent-encode each @ in the user name and password as %40.",
        )
    if parsed.drivername == "sqlite" and (not parsed.database or parsed.database == ":memory:"
                                          or parsed.database.startswith("file:")):
        raise ConfigError(f"database URL {redacted!r} names no SQLite file: the portal must be a file",
                          hint=_url_forms_hint())
    return parsed


def _url_forms_hint() -> str:
    return f"Use {ACCEPTED_URL_FORMS}. An absolute SQLite path takes four slashes: sqlite:////var/lib/ztctl/portal.db."


def _prepare_sqlite_path(parsed: URL, redacted: str, *, create_sqlite_file: bool) -> URL:
    """Make the path absolute, and create its directory when asked to or raise when the file is missing."""
    assert parsed.database is not None
    path = Path(parsed.database).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path

    if not path.exists():
        if not create_sqlite_file:
            raise DatabaseError(
                f"portal database {path} does not exist yet (from URL {redacted!r})",
                hint="Create it with `ztctl db upgrade` or `ztctl portal load FILE`.",
            )
        logger.info("Creating SQLite portal database %s", path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(
                f"cannot create the directory of portal database {path}: {exc.strerror or exc}",
                hint="check the path in the database URL and the directory's permissions",
            ) from None
    elif path.is_dir():
        raise DatabaseError(f"portal database path {path} is a directory, not an SQLite file",
                            hint=_url_forms_hint())
    return parsed.set(database=str(path))


def _postgres_connect_args(parsed: URL) -> dict[str, Any]:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    if "application_name" not in parsed.query:
        connect_args["application_name"] = "ztctl"
    return connect_args


def _install_sqlite_setup(engine: sqlalchemy.Engine, access: WriteAccess) -> None:
    @event.listens_for(engine, "connect")
    def configure_connection(dbapi_connection: Any, _record: Any) -> None:
        # Python's sqlite3 module starts transactions only before DML, so
        # SELECTs and DDL would run outside them. SQLAlchemy emits BEGIN
        # itself instead (see the "begin" listener), which makes migrations
        # atomic and keeps the reads of one plan consistent.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if access is WriteAccess.NONE:
            cursor.execute("PRAGMA query_only = ON")
        cursor.close()

    # A DEFERRED transaction that reads and then writes fails at once with
    # "database is locked" when another process took the write lock in
    # between; SQLite does not wait then. An action changes the controller
    # inside such a transaction and records it at the commit, so a session
    # from ``write_session_factory`` takes the write lock when its transaction
    # begins (waiting up to the busy timeout): a locked portal then stops the
    # action before the controller is touched. Other transactions, such as the
    # checks made before a run holds its run lock, stay DEFERRED, so they never
    # wait for another run's write.
    @event.listens_for(engine, "begin")
    def begin_transaction(connection: sqlalchemy.Connection) -> None:
        immediate = connection.get_execution_options().get(_IMMEDIATE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate and access is WriteAccess.ALL else "BEGIN")


def _install_postgres_setup(engine: sqlalchemy.Engine, access: WriteAccess) -> None:
    if access is not WriteAccess.NONE:
        return

    @event.listens_for(engine, "connect")
    def make_session_read_only(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        # The SET ran in a transaction; without a commit, the pool's rollback would undo it.
        dbapi_connection.commit()


def _install_write_guard(engine: sqlalchemy.Engine, access: WriteAccess) -> None:
    if access is WriteAccess.ALL:
        return

    @event.listens_for(engine, "before_cursor_execute")
    def reject_writes(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        for write in find_writes(statement):
            target = f"on table {write.table}" if write.table else "(table unknown)"
            if access is WriteAccess.NONE:
                raise ReadOnlyViolation(
                    f"{write.verb} {target} rejected: this is a dry run, which must not write to the portal database",
                    hint="This is a bug in ztctl. Please report it with the command that you ran.",
                )
            if write.verb not in DML_VERBS or write.table not in AUDIT_TABLES:
                raise ReadOnlyViolation(
                    f"{write.verb} {target} rejected: an audit run writes only to the runs and audit_log tables",
                    hint="This is a bug in ztctl. Please report it with the command that you ran.",
                )


@contextmanager
def _database_errors(engine: sqlalchemy.Engine, action: str) -> Iterator[None]:
    """Turn driver errors into DatabaseError with the redacted URL, because the driver's text may contain the password."""
    try:
        yield
    except sqlalchemy.exc.DBAPIError as error:
        reason = mask_secrets(" ".join(str(error.orig).split()), url_passwords(engine.url))
        hint = _CONNECTION_HINT if isinstance(error, sqlalchemy.exc.OperationalError) else None
        raise DatabaseError(f"could not {action} portal database {display_url(engine)}: {reason}",
                            hint=hint) from None


def alembic_config(connection: sqlalchemy.Connection | None = None) -> Config:
    """Build the Alembic configuration in code, so that no alembic.ini is needed.

    ``connection`` is handed to ``migrations/env.py`` through ``Config.attributes``.
    """
    config = Config()
    # ConfigParser reads % as the start of an interpolation.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def schema_state(engine: sqlalchemy.Engine) -> SchemaState:
    """Read the schema revision of the portal database without changing anything."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None, "the migrations directory holds no revision"

    with _database_errors(engine, "read the schema of"), engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        tables = set(sqlalchemy.inspect(connection).get_table_names())

    is_known = True
    if current is not None:
        try:
            is_known = script.get_revision(current) is not None
        except CommandError:
            is_known = False
    has_portal_tables = bool(tables & set(Base.metadata.tables))
    return SchemaState(
        current_revision=current,
        head_revision=head,
        is_empty=current is None and not has_portal_tables,
        is_known_revision=is_known,
    )


def ensure_schema(engine: sqlalchemy.Engine, *, create_if_empty: bool) -> None:
    """Raise DatabaseError unless the schema is at head; on an empty database, create it if allowed.

    Nothing else is migrated here: a schema behind head is an error until the
    operator runs ``ztctl db upgrade``.
    """
    state = schema_state(engine)
    redacted = display_url(engine)
    if state.is_current:
        return
    if state.is_empty:
        if not create_if_empty or write_access(engine) is not WriteAccess.ALL:
            raise DatabaseError(f"portal database {redacted} has no ztctl schema",
                                hint="Run `ztctl db upgrade` to create it.")
        _run_upgrade(engine)
        # A warning, so that even a cron run reports once that it started a new portal.
        logger.warning("Created a new portal database schema (revision %s) in %s", state.head_revision, redacted)
        return
    _raise_unless_upgradable(state, redacted)
    raise DatabaseError(
        f"portal database {redacted} has schema revision {state.current_revision}, "
        f"but this ztctl needs revision {state.head_revision}",
        hint="Back up the database, then run `ztctl db upgrade`.",
    )


def upgrade_schema(engine: sqlalchemy.Engine) -> tuple[str | None, str]:
    """Migrate the schema to head and return the revisions (from, to); from is None for an empty database."""
    state = schema_state(engine)
    redacted = display_url(engine)
    if state.is_current:
        logger.info("Portal schema in %s is already at revision %s", redacted, state.head_revision)
        return state.current_revision, state.head_revision
    if not state.is_empty:
        _raise_unless_upgradable(state, redacted)

    _run_upgrade(engine)
    logger.info("Upgraded the portal schema in %s from revision %s to %s",
                redacted, state.current_revision or "(none)", state.head_revision)
    return state.current_revision, state.head_revision


def _raise_unless_upgradable(state: SchemaState, redacted: str) -> None:
    if state.current_revision is None:
        raise DatabaseError(
            f"portal database {redacted} has portal tables but no Alembic version, "
            "so ztctl cannot tell which schema they follow",
            hint="Point ztctl at an empty database, or move those tables aside, then run `ztctl db upgrade`.",
        )
    if not state.is_known_revision:
        raise DatabaseError(
            f"portal database {redacted} has schema revision {state.current_revision}, which this ztctl "
            f"does not know (its newest is {state.head_revision}): a newer ztctl has upgraded it",
            hint="Run the ztctl version that upgraded the database.",
        )


def _run_upgrade(engine: sqlalchemy.Engine) -> None:
    with _database_errors(engine, "migrate"), engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
