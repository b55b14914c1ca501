"""Pytest fixtures for portal databases on SQLite and on PostgreSQL.

``portal_url`` and ``blank_portal_url`` run each test twice, with the ids
``sqlite`` and ``postgresql``. PostgreSQL tests use the server at
``ZTCTL_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``),
where the user must be allowed to create databases. Every test gets its own
database named ``ztctl_test_<random>``, copied from a template migrated once
per session, and dropped afterwards even when the test fails.

An unreachable PostgreSQL server makes the PostgreSQL tests error out with
instructions. Set ``ZTCTL_TEST_POSTGRES=off`` to skip them instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ztctl.portal.db import (
    WriteAccess,
    create_portal_engine,
    redact_url,
    session_factory,
    upgrade_schema,
)

__all__ = [
    "POSTGRES_URL_VARIABLE",
    "PostgresServer",
    "backend_params",
    "blank_portal_url",
    "portal_engine",
    "portal_session",
    "portal_url",
    "postgres_server",
    "postgres_template_database",
    "sqlite_template_path",
]

POSTGRES_URL_VARIABLE = "ZTCTL_TEST_POSTGRES_URL"
POSTGRES_SWITCH_VARIABLE = "ZTCTL_TEST_POSTGRES"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "ztctl_test_"


def postgres_enabled() -> bool:
    return os.environ.get(POSTGRES_SWITCH_VARIABLE, "").strip().lower() != "off"


def backend_params() -> list[object]:
    """Return the pytest params ``sqlite`` and ``postgresql``; the latter is skipped when turned off."""
    postgres_marks = [pytest.mark.postgres]
    if not postgres_enabled():
        postgres_marks.append(pytest.mark.skip(reason=f"{POSTGRES_SWITCH_VARIABLE}=off turns PostgreSQL tests off"))
    return [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql", marks=postgres_marks)]


def new_database_name() -> str:
    return f"{DATABASE_PREFIX}{secrets.token_hex(6)}"


class PostgresServer:
    """The test PostgreSQL server, on which the fixtures create and drop databases."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)

    def url_for(self, database: str) -> str:
        """Return the SQLAlchemy URL of ``database`` on this server, with the password if there is one."""
        return self.url.set(database=database).render_as_string(hide_password=False)

    def _admin_connection(self) -> psycopg.Connection[tuple[object, ...]]:
        conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)

    def check_reachable(self) -> None:
        reason = None
        try:
            with self._admin_connection() as connection:
                connection.execute("SELECT 1")
        except psycopg.OperationalError as error:
            reason = " ".join(str(error).split())
        # Failing outside the except block keeps the driver's traceback out of the report.
        if reason is not None:
            pytest.fail(
                f"PostgreSQL test server {redact_url(str(self.url))} is unreachable: {reason}\n"
                "Start it (for example `pg_ctlcluster 15 main start`, or `docker run -d -p 5432:5432 "
                "-e POSTGRES_HOST_AUTH_METHOD=trust postgres:15`), set "
                f"{POSTGRES_URL_VARIABLE} to a server where this user may create databases, "
                f"or set {POSTGRES_SWITCH_VARIABLE}=off to skip the PostgreSQL tests.",
                pytrace=False,
            )

    def create_database(self, *, template: str = "template0") -> str:
        name = new_database_name()
        with self._admin_connection() as connection:
            connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        assert name.startswith(DATABASE_PREFIX), f"refusing to drop {name}, which the fixtures did not create"
        with self._admin_connection() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The PostgreSQL test server; fails every test that uses it when the server cannot be reached."""
    if not postgres_enabled():
        pytest.skip(f"{POSTGRES_SWITCH_VARIABLE}=off turns PostgreSQL tests off")
    server = PostgresServer(os.environ.get(POSTGRES_URL_VARIABLE) or DEFAULT_POSTGRES_URL)
    server.check_reachable()
    return server


def _migrate(url: str, *, create_sqlite_file: bool = False) -> None:
    engine = create_portal_engine(url, access=WriteAccess.ALL, create_sqlite_file=create_sqlite_file)
    try:
        upgrade_schema(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_template_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A PostgreSQL database at schema head, copied for each test, which is faster than migrating each one."""
    name = postgres_server.create_database()
    try:
        _migrate(postgres_server.url_for(name))
        yield name
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def sqlite_template_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("portal-template") / "portal.db"
    _migrate(f"sqlite:///{path}", create_sqlite_file=True)
    return path


def _database_url(request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "portal.db"
        if migrated:
            shutil.copyfile(request.getfixturevalue("sqlite_template_path"), path)
        else:
            path.touch()  # SQLite reads an empty file as an empty database
        yield f"sqlite:///{path}"
        return

    server: PostgresServer = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("postgres_template_database") if migrated else "template0"
    name = server.create_database(template=template)
    try:
        yield server.url_for(name)
    finally:
        server.drop_database(name)


@pytest.fixture(params=backend_params())
def portal_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh portal database with the schema at head, on SQLite and on PostgreSQL."""
    yield from _database_url(request, tmp_path, migrated=True)


@pytest.fixture(params=backend_params())
def blank_portal_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty database with no schema, on SQLite and on PostgreSQL."""
    yield from _database_url(request, tmp_path, migrated=False)


@pytest.fixture
def portal_engine(portal_url: str) -> Iterator[sqlalchemy.Engine]:
    """An engine with write access ALL on ``portal_url``."""
    engine = create_portal_engine(portal_url, access=WriteAccess.ALL)
    yield engine
    engine.dispose()


@pytest.fixture
def portal_session(portal_engine: sqlalchemy.Engine) -> Iterator[Session]:
    """A session on ``portal_url`` with write access ALL."""
    with session_factory(portal_engine)() as session:
        yield session
