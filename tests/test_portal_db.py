"""Tests of the portal database layer: URLs, connection errors, the write choke point and schema checks."""

from __future__ import annotations

import logging
import shutil
import socket
import sqlite3
import traceback
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from db_fixtures import *  # noqa: F403
from db_fixtures import PostgresServer
from sqlalchemy import func, insert, select, text

from ztctl.errors import ConfigError, DatabaseError, ReadOnlyViolation
from ztctl.portal import db
from ztctl.portal.db import (
    WriteAccess,
    create_portal_engine,
    ensure_schema,
    redact_url,
    schema_state,
    session_factory,
    upgrade_schema,
    write_access,
)
from ztctl.portal.models import Activation, AuditEntry, Membership, Network, Run
from ztctl.portal.write_guard import Write, find_writes

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
NETWORK_ID = "3233204505122666"


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed_portal(url: str) -> None:
    """Write one network, membership, activation and run."""
    engine = create_portal_engine(url, access=WriteAccess.ALL)
    with session_factory(engine)() as session:
        membership = Membership(network_id=NETWORK_ID, node_id="a1b2c3d4e5", state="active")
        session.add(Network(id=NETWORK_ID, name="engineering"))
        session.add(membership)
        session.add(Activation(membership=membership, starts_at=NOW, expires_at=NOW.replace(hour=17)))
        session.add(Run(command="reconcile", mode="apply"))
        session.commit()
    engine.dispose()


def snapshot(url: str) -> dict[str, object]:
    """Return row counts of every table and the network names, read with an unrestricted engine."""
    engine = create_portal_engine(url, access=WriteAccess.ALL)
    with engine.connect() as connection:
        result: dict[str, object] = {
            model.__tablename__: connection.scalar(select(func.count()).select_from(model))
            for model in (Network, Membership, Activation, Run, AuditEntry)
        }
        result["names"] = connection.scalars(select(Network.name)).all()
    engine.dispose()
    return result


# URL handling


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://ztctl:s3cret@db.example:5432/portal", "postgresql://ztctl:***@db.example:5432/portal"),
        ("postgresql://ztctl@db.example/portal", "postgresql://ztctl@db.example/portal"),
        ("postgresql://ztctl:p@ss@db.example/portal", "postgresql://ztctl:***@db.example/portal"),
        ("postgresql://ztctl@h/portal?password=s3cret&sslmode=require",
         "postgresql://ztctl@h/portal?password=***&sslmode=require"),
        ("sqlite:///var/lib/ztctl/portal.db", "sqlite:///var/lib/ztctl/portal.db"),
        ("postgresql:/ztctl:s3cret@db.example/portal", "postgresql:***@db.example/portal"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["mysql://ztctl:s3cret@db.example/portal", "postgres://ztctl:s3cret@db.example/portal",
     "postgresql+asyncpg://ztctl:s3cret@db.example/portal", "no-scheme:s3cret@nothing"],
)
def test_engine_rejects_unsupported_url(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        create_portal_engine(url, access=WriteAccess.ALL)
    assert type(raised.value) is ConfigError
    assert "s3cret" not in str(raised.value)
    assert redact_url(url) in str(raised.value)
    assert raised.value.hint is not None
    assert "sqlite:///" in raised.value.hint
    assert "postgresql://" in raised.value.hint


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_engine_rejects_sqlite_without_file(url: str) -> None:
    with pytest.raises(ConfigError, match="names no SQLite file"):
        create_portal_engine(url, access=WriteAccess.ALL)


def test_sqlite_missing_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "portal.db"
    with pytest.raises(DatabaseError) as raised:
        create_portal_engine(f"sqlite:///{path}", access=WriteAccess.ALL)
    assert "does not exist yet" in str(raised.value)
    assert str(path) in str(raised.value)
    assert "ztctl db upgrade" in (raised.value.hint or "")
    assert "portal load" in (raised.value.hint or "")
    assert not path.parent.exists()


def test_sqlite_file_created_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "portal.db"
    engine = create_portal_engine(f"sqlite:///{path}", access=WriteAccess.ALL, create_sqlite_file=True)
    engine.dispose()
    assert path.is_file()


def test_sqlite_relative_path_uses_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine = create_portal_engine("sqlite:///sub/portal.db", access=WriteAccess.ALL, create_sqlite_file=True)
    engine.dispose()
    assert engine.url.database == str(tmp_path / "sub" / "portal.db")
    assert (tmp_path / "sub" / "portal.db").is_file()


def test_sqlite_home_directory_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    engine = create_portal_engine("sqlite:///~/portal.db", access=WriteAccess.ALL, create_sqlite_file=True)
    engine.dispose()
    assert engine.url.database == str(tmp_path / "portal.db")


def test_dry_run_engine_cannot_create_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="contradicts"):
        create_portal_engine(f"sqlite:///{tmp_path}/p.db", access=WriteAccess.NONE, create_sqlite_file=True)


def test_sqlite_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "portal.db"
    path.write_text("this is not an SQLite file\n" * 100)
    with pytest.raises(DatabaseError, match="could not connect"):
        create_portal_engine(f"sqlite:///{path}", access=WriteAccess.ALL)


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    path = tmp_path / "portal.db"
    writable = create_portal_engine(f"sqlite:///{path}", access=WriteAccess.ALL, create_sqlite_file=True)
    read_only = create_portal_engine(f"sqlite:///{path}", access=WriteAccess.NONE)
    with writable.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_TIMEOUT_MS
        assert connection.exec_driver_sql("PRAGMA query_only").scalar() == 0
    with read_only.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA query_only").scalar() == 1
    writable.dispose()
    read_only.dispose()


def test_write_access_recorded(tmp_path: Path) -> None:
    path = tmp_path / "portal.db"
    engine = create_portal_engine(f"sqlite:///{path}", access=WriteAccess.AUDIT_ONLY, create_sqlite_file=True)
    assert write_access(engine) is WriteAccess.AUDIT_ONLY
    engine.dispose()


# PostgreSQL connection errors


def assert_password_hidden(error: BaseException, password: str) -> None:
    printed = "".join(traceback.format_exception(error))
    assert password not in printed
    assert password not in str(error)
    assert password not in (getattr(error, "hint", None) or "")


def test_postgres_unreachable() -> None:
    url = f"postgresql://ztctl:s3cret-pw@127.0.0.1:{free_local_port()}/portal"
    with pytest.raises(DatabaseError) as raised:
        create_portal_engine(url, access=WriteAccess.ALL)
    message = str(raised.value)
    assert "could not connect to portal database" in message
    assert "ztctl:***@127.0.0.1" in message
    assert "Connection refused" in message
    assert "server is running" in (raised.value.hint or "")
    assert raised.value.__suppress_context__
    assert_password_hidden(raised.value, "s3cret-pw")


def test_postgres_short_password_leaves_driver_words_alone() -> None:
    url = f"postgresql://ztctl:se@127.0.0.1:{free_local_port()}/portal"
    with pytest.raises(DatabaseError) as raised:
        create_portal_engine(url, access=WriteAccess.ALL)
    message = str(raised.value)
    assert "ztctl:***@127.0.0.1" in message
    assert 'connection to server at "127.0.0.1"' in message
    assert "***rver" not in message


def test_postgres_driver_text_scrubbed_in_any_case(postgres_server: PostgresServer) -> None:
    # The database name is the password in lower case, so only a match that
    # ignores case hides it in the driver's "database does not exist" message.
    secret = "ztctl_test_hunter2hunter2"
    url = postgres_server.url.set(password=secret.upper(), database=secret).render_as_string(hide_password=False)
    with pytest.raises(DatabaseError) as raised:
        create_portal_engine(url, access=WriteAccess.ALL)
    driver_reason = str(raised.value).partition(": ")[2]
    assert 'database "***" does not exist' in driver_reason
    assert secret not in driver_reason


def test_at_sign_in_password_rejected_before_connecting() -> None:
    # SQLAlchemy ends the password at the first @, so the host would be "cretpw@127.0.0.1".
    with pytest.raises(ConfigError) as raised:
        create_portal_engine("postgresql://ztctl:se@cretpw@127.0.0.1/portal", access=WriteAccess.ALL)
    assert type(raised.value) is ConfigError
    assert "ztctl:***@127.0.0.1/portal" in str(raised.value)
    assert "contains an @" in str(raised.value)
    assert "%40" in (raised.value.hint or "")
    assert "cretpw" not in str(raised.value)


def test_postgres_authentication_failed(postgres_server: PostgresServer) -> None:
    url = postgres_server.url.set(username="ztctl_test_no_such_role", password="s3cret-pw")
    with pytest.raises(DatabaseError) as raised:
        create_portal_engine(url.render_as_string(hide_password=False), access=WriteAccess.ALL)
    assert "ztctl_test_no_such_role" in str(raised.value)
    assert "ztctl_test_no_such_role:***@" in str(raised.value)
    assert_password_hidden(raised.value, "s3cret-pw")


def test_postgres_driver_text_scrubbed(postgres_server: PostgresServer) -> None:
    # The database name equals the password, so the driver's "database does
    # not exist" message carries the password unless it is scrubbed.
    secret = "ztctl_test_hunter2hunter2"
    url = postgres_server.url.set(password=secret, database=secret).render_as_string(hide_password=False)
    with pytest.raises(DatabaseError) as raised:
        create_portal_engine(url, access=WriteAccess.ALL)
    driver_reason = str(raised.value).partition(": ")[2]
    assert 'database "***" does not exist' in driver_reason
    assert secret not in driver_reason


def test_postgres_url_without_driver_uses_psycopg(portal_url: str) -> None:
    engine = create_portal_engine(portal_url, access=WriteAccess.ALL)
    expected = "pysqlite" if portal_url.startswith("sqlite") else "psycopg"
    assert engine.dialect.driver == expected
    engine.dispose()


# The write choke point


def test_dry_run_rejects_orm_insert(portal_url: str) -> None:
    seed_portal(portal_url)
    before = snapshot(portal_url)
    engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    with session_factory(engine)() as session:
        session.add(Network(id="1111111111111111", name="new"))
        with pytest.raises(ReadOnlyViolation) as raised:
            session.commit()
    engine.dispose()
    assert "INSERT on table networks rejected" in str(raised.value)
    assert "dry run" in str(raised.value)
    assert snapshot(portal_url) == before


def test_dry_run_rejects_orm_update(portal_url: str) -> None:
    seed_portal(portal_url)
    before = snapshot(portal_url)
    engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    with session_factory(engine)() as session:
        network = session.get_one(Network, NETWORK_ID)
        network.name = "renamed"
        with pytest.raises(ReadOnlyViolation, match="UPDATE on table networks"):
            session.flush()
    engine.dispose()
    assert snapshot(portal_url) == before


def test_dry_run_rejects_core_insert(portal_url: str) -> None:
    seed_portal(portal_url)
    before = snapshot(portal_url)
    engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    with pytest.raises(ReadOnlyViolation, match="INSERT on table runs"), engine.begin() as connection:
        connection.execute(insert(Run).values(command="expire", mode="apply", started_at=NOW, counts={}, host="",
                                              pid=0, version=""))
    engine.dispose()
    assert snapshot(portal_url) == before


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("DELETE FROM activations", "DELETE on table activations"),
        ("UPDATE memberships SET state = 'inactive'", "UPDATE on table memberships"),
        ("SELECT 1; DELETE FROM networks", "DELETE on table networks"),
        ("WITH gone AS (DELETE FROM runs RETURNING id) SELECT count(*) FROM gone", "DELETE on table runs"),
        ("CREATE TABLE extra (id INTEGER)", "CREATE TABLE on table extra"),
        ("DROP TABLE audit_log", "DROP TABLE on table audit_log"),
        ("ALTER TABLE networks ADD COLUMN extra INTEGER", "ALTER TABLE on table networks"),
    ],
)
def test_dry_run_rejects_raw_sql(portal_url: str, statement: str, expected: str) -> None:
    seed_portal(portal_url)
    before = snapshot(portal_url)
    engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    with pytest.raises(ReadOnlyViolation) as raised, engine.begin() as connection:
        connection.execute(text(statement))
    engine.dispose()
    assert expected in str(raised.value)
    assert snapshot(portal_url) == before


def test_dry_run_rejects_lifting_read_only(portal_url: str) -> None:
    statement = ("PRAGMA query_only = OFF" if portal_url.startswith("sqlite")
                 else "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
    engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    with pytest.raises(ReadOnlyViolation), engine.connect() as connection:
        connection.exec_driver_sql(statement)
    engine.dispose()


def test_dry_run_database_rejects_bypass(portal_url: str) -> None:
    """The second layer: a write sent straight to the driver, past the listener, fails in the database."""
    seed_portal(portal_url)
    before = snapshot(portal_url)
    engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    raw_connection = engine.raw_connection()
    cursor = raw_connection.cursor()
    with pytest.raises((sqlite3.OperationalError, psycopg.errors.ReadOnlySqlTransaction)):
        cursor.execute("DELETE FROM activations")
    raw_connection.rollback()
    raw_connection.close()
    engine.dispose()
    assert snapshot(portal_url) == before


def test_dry_run_reads(portal_url: str) -> None:
    seed_portal(portal_url)
    engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    with session_factory(engine)() as session:
        names = session.scalars(select(Network.name)).all()
    engine.dispose()
    assert names == ["engineering"]


def test_audit_writes_runs_and_audit_log(portal_url: str) -> None:
    seed_portal(portal_url)
    before = snapshot(portal_url)
    engine = create_portal_engine(portal_url, access=WriteAccess.AUDIT_ONLY)
    with session_factory(engine)() as session:
        run = Run(command="reconcile", mode="audit")
        session.add(run)
        session.flush()
        session.add(AuditEntry(run_id=run.id, stage="diff", network_id=NETWORK_ID, node_id="a1b2c3d4e5",
                               action="deauthorize", outcome="found"))
        run.exit_code = 1
        session.commit()
    engine.dispose()
    after = snapshot(portal_url)
    assert after["runs"] == before["runs"] + 1  # type: ignore[operator]
    assert after["audit_log"] == 1
    assert after["networks"] == before["networks"]


def test_audit_rejects_portal_tables(portal_url: str) -> None:
    seed_portal(portal_url)
    before = snapshot(portal_url)
    engine = create_portal_engine(portal_url, access=WriteAccess.AUDIT_ONLY)

    with session_factory(engine)() as session:
        session.add(Network(id="1111111111111111", name="new"))
        with pytest.raises(ReadOnlyViolation) as raised:
            session.commit()
    assert "INSERT on table networks rejected" in str(raised.value)
    assert "runs and audit_log" in str(raised.value)

    with pytest.raises(ReadOnlyViolation, match="INSERT on table activations"), engine.begin() as connection:
        connection.execute(insert(Activation).values(membership_id=1, starts_at=NOW, expires_at=NOW.replace(hour=13),
                                                     created_at=NOW))
    with pytest.raises(ReadOnlyViolation, match="DELETE on table memberships"), engine.begin() as connection:
        connection.execute(text("DELETE FROM memberships"))
    with pytest.raises(ReadOnlyViolation, match="DROP TABLE on table runs"), engine.begin() as connection:
        connection.execute(text("DROP TABLE runs"))
    engine.dispose()
    assert snapshot(portal_url) == before


def test_all_access_writes(portal_url: str) -> None:
    seed_portal(portal_url)
    engine = create_portal_engine(portal_url, access=WriteAccess.ALL)
    with engine.begin() as connection:
        connection.execute(text("UPDATE networks SET name = 'renamed'"))
    engine.dispose()
    assert snapshot(portal_url)["names"] == ["renamed"]


def test_session_keeps_objects_after_commit(portal_engine: sqlalchemy.Engine) -> None:
    with session_factory(portal_engine)() as session:
        network = Network(id=NETWORK_ID, name="engineering")
        session.add(network)
        session.commit()
        assert not sqlalchemy.inspect(network).expired


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT * FROM networks WHERE name = 'DELETE FROM x' -- DROP TABLE y", []),
        ('INSERT INTO "audit_log" (id) VALUES (1)', [Write("INSERT", "audit_log")]),
        ("insert or replace into main.runs values (1)", [Write("INSERT", "runs")]),
        ("INSERT INTO runs (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET id = 2", [Write("INSERT", "runs")]),
        ("SELECT * FROM networks FOR UPDATE", []),
        ("CREATE UNIQUE INDEX ix_a ON networks (name)", [Write("CREATE INDEX", "networks")]),
        ("EXPLAIN ANALYZE DELETE FROM networks", [Write("DELETE", "networks")]),
        ("EXPLAIN QUERY PLAN SELECT 1", []),
        ("SELECT * INTO TEMP copy FROM networks", [Write("SELECT INTO", "copy")]),
        ("MERGE INTO runs USING x ON true WHEN MATCHED THEN UPDATE SET a = 1", [Write("MERGE", "runs")]),
        ('PRAGMA main.table_info("networks")', []),
        ("PRAGMA optimize", [Write("PRAGMA optimize", None)]),
        ("SHOW transaction_read_only", []),
        ("SET default_transaction_read_only = off", [Write("SET that lifts read-only mode", None)]),
        ("SELECT set_config('default_transaction_read_only', 'off', false)",
         [Write("SELECT that lifts read-only mode", None)]),
        ("RESET ALL", [Write("RESET", None)]),
        ("VACUUM", [Write("VACUUM", None)]),
        ("SELECT $$DELETE FROM x$$", []),
        ("SAVEPOINT sa_savepoint_1", []),
        ("REPLACE INTO networks VALUES (1)", [Write("REPLACE", "networks")]),
        ("SELECT replace(name, 'a', 'b') FROM networks", []),
    ],
)
def test_find_writes(statement: str, expected: list[Write]) -> None:
    assert find_writes(statement) == expected


# Schema checks


def test_ensure_schema_creates_empty(blank_portal_url: str, caplog: pytest.LogCaptureFixture) -> None:
    engine = create_portal_engine(blank_portal_url, access=WriteAccess.ALL)
    with caplog.at_level(logging.INFO, logger="ztctl.portal.db"):
        ensure_schema(engine, create_if_empty=True)
    state = schema_state(engine)
    engine.dispose()
    assert state.is_current
    assert any("Created a new portal database schema" in record.getMessage() for record in caplog.records)


def test_ensure_schema_rejects_empty(blank_portal_url: str) -> None:
    engine = create_portal_engine(blank_portal_url, access=WriteAccess.ALL)
    with pytest.raises(DatabaseError) as raised:
        ensure_schema(engine, create_if_empty=False)
    state = schema_state(engine)
    engine.dispose()
    assert "has no ztctl schema" in str(raised.value)
    assert "ztctl db upgrade" in (raised.value.hint or "")
    assert state.is_empty


def test_ensure_schema_dry_run_never_creates(blank_portal_url: str) -> None:
    engine = create_portal_engine(blank_portal_url, access=WriteAccess.NONE)
    with pytest.raises(DatabaseError, match="has no ztctl schema"):
        ensure_schema(engine, create_if_empty=True)
    engine.dispose()


def test_ensure_schema_accepts_current(portal_url: str) -> None:
    engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    ensure_schema(engine, create_if_empty=False)
    engine.dispose()


def current_head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
    assert head is not None
    return head


SHIPPED_HEAD = current_head()


@pytest.fixture
def newer_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the migrations with a revision 9999 on top, standing in for a future ztctl."""
    directory = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, directory, ignore=shutil.ignore_patterns("__pycache__"))
    (directory / "versions" / "9999_extra.py").write_text(
        '"""Add a table."""\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        f'revision = "9999"\ndown_revision = "{SHIPPED_HEAD}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade():\n"
        '    op.create_table("ztctl_extra", sa.Column("id", sa.Integer(), primary_key=True))\n\n\n'
        "def downgrade():\n"
        '    op.drop_table("ztctl_extra")\n'
    )
    monkeypatch.setattr(db, "MIGRATIONS_DIR", directory)
    return directory


@pytest.mark.usefixtures("newer_migrations")
def test_ensure_schema_rejects_behind_head(portal_url: str) -> None:
    engine = create_portal_engine(portal_url, access=WriteAccess.ALL)
    with pytest.raises(DatabaseError) as raised:
        ensure_schema(engine, create_if_empty=True)
    state = schema_state(engine)
    engine.dispose()
    assert f"schema revision {SHIPPED_HEAD}" in str(raised.value)
    assert "needs revision 9999" in str(raised.value)
    assert "ztctl db upgrade" in (raised.value.hint or "")
    assert state.current_revision == SHIPPED_HEAD


@pytest.mark.usefixtures("newer_migrations")
def test_upgrade_schema_from_older(portal_url: str) -> None:
    engine = create_portal_engine(portal_url, access=WriteAccess.ALL)
    revisions = upgrade_schema(engine)
    state = schema_state(engine)
    engine.dispose()
    assert revisions == (SHIPPED_HEAD, "9999")
    assert state.is_current


def test_upgrade_schema_at_head(portal_url: str) -> None:
    engine = create_portal_engine(portal_url, access=WriteAccess.ALL)
    assert upgrade_schema(engine) == (SHIPPED_HEAD, SHIPPED_HEAD)
    engine.dispose()


def test_schema_from_newer_ztctl_rejected(portal_url: str) -> None:
    engine = create_portal_engine(portal_url, access=WriteAccess.ALL)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    state = schema_state(engine)
    with pytest.raises(DatabaseError) as ensured:
        ensure_schema(engine, create_if_empty=True)
    with pytest.raises(DatabaseError) as upgraded:
        upgrade_schema(engine)
    engine.dispose()
    assert not state.is_known_revision
    assert "newer ztctl" in str(ensured.value)
    assert "0099" in str(ensured.value)
    assert "newer ztctl" in str(upgraded.value)


def test_tables_without_version_rejected(portal_url: str) -> None:
    engine = create_portal_engine(portal_url, access=WriteAccess.ALL)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
    state = schema_state(engine)
    with pytest.raises(DatabaseError, match="no Alembic version"):
        ensure_schema(engine, create_if_empty=True)
    with pytest.raises(DatabaseError, match="no Alembic version"):
        upgrade_schema(engine)
    engine.dispose()
    assert not state.is_empty
    assert state.current_revision is None
