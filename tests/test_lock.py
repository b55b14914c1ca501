"""Tests of the run lock on SQLite and PostgreSQL: exclusion, waiting, holder names and killed holders."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from db_fixtures import *  # noqa: F403
from db_fixtures import PostgresServer
from sqlalchemy.engine import make_url

from ztctl.errors import DatabaseError, ExitCode, LockHeld, UsageError
from ztctl.portal import lock as lock_module
from ztctl.portal.db import WriteAccess, create_portal_engine
from ztctl.portal.lock import (
    APPLICATION_NAME_MAX_BYTES,
    MAX_WAIT_S,
    RunLock,
    acquire_run_lock,
    check_run_lock,
)

OWNER = "ztctl reconcile on host1 pid 4242"
FAKE_PASSWORD = "fake-secret-pw-7731"
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]

only_sqlite = pytest.mark.parametrize("portal_url", ["sqlite"], indirect=True)
only_postgres = pytest.mark.parametrize(
    "portal_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

# A child process that takes the lock, reports it on stdout and sleeps until killed.
HOLDER_SCRIPT = """
import sys, time
from ztctl.portal.db import WriteAccess, create_portal_engine
from ztctl.portal.lock import acquire_run_lock

engine = create_portal_engine(sys.argv[1], access=WriteAccess.ALL)
lock = acquire_run_lock(engine, wait=None, owner="child holder")
print("acquired", flush=True)
time.sleep(120)
"""


@pytest.fixture
def engine(portal_url: str) -> Iterator[sqlalchemy.Engine]:
    engine = create_portal_engine(portal_url, access=WriteAccess.ALL)
    yield engine
    engine.dispose()


@pytest.fixture
def held_lock(engine: sqlalchemy.Engine) -> Iterator[RunLock]:
    lock = acquire_run_lock(engine, wait=None, owner=OWNER)
    yield lock
    lock.release()


def expect_lock_held(engine: sqlalchemy.Engine, *, wait: float | None = None) -> LockHeld:
    with pytest.raises(LockHeld) as raised:
        acquire_run_lock(engine, wait=wait, owner="second run")
    return raised.value


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_holder_process(url: str) -> subprocess.Popen[str]:
    """Start a child process that holds the lock, and return once it reports that it does."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, url],
        cwd=REPOSITORY_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready and process.stdout else ""
    if line.strip() != "acquired":
        process.kill()
        _, stderr = process.communicate(timeout=10)
        pytest.fail(f"holder process did not report the lock: stdout {line!r}, stderr {stderr!r}")
    return process


def test_acquire_returns_owner(engine):
    lock = acquire_run_lock(engine, wait=None, owner=OWNER)
    try:
        assert lock.holder == OWNER
    finally:
        lock.release()


def test_second_acquire_fails_at_once(engine, held_lock):
    started = time.monotonic()
    error = expect_lock_held(engine)
    elapsed = time.monotonic() - started

    assert elapsed < 2.0
    assert error.exit_code == ExitCode.LOCK_HELD
    assert error.exit_code == 6
    assert "another ztctl run holds the lock on the portal database" in str(error)
    assert OWNER in str(error)
    assert error.hint is not None
    assert "--wait SECONDS" in error.hint


def test_second_acquire_with_wait_zero_fails(engine, held_lock):
    error = expect_lock_held(engine, wait=0)

    assert OWNER in str(error)
    assert "after waiting" not in str(error)


def test_release_frees_lock(engine):
    first = acquire_run_lock(engine, wait=None, owner=OWNER)
    first.release()

    second = acquire_run_lock(engine, wait=None, owner="second run")
    try:
        assert second.holder == "second run"
    finally:
        second.release()


def test_release_twice_is_harmless(engine):
    lock = acquire_run_lock(engine, wait=None, owner=OWNER)
    lock.release()
    lock.release()

    again = acquire_run_lock(engine, wait=None, owner=OWNER)
    again.release()


def test_context_manager_releases(engine):
    with acquire_run_lock(engine, wait=None, owner=OWNER) as lock:
        assert lock.holder == OWNER
        expect_lock_held(engine)

    after = acquire_run_lock(engine, wait=None, owner="after the block")
    after.release()


def test_wait_succeeds_when_holder_releases(engine, held_lock):
    releaser = threading.Timer(0.3, held_lock.release)
    started = time.monotonic()
    releaser.start()
    try:
        lock = acquire_run_lock(engine, wait=1.0, owner="waiting run")
    finally:
        releaser.join()
    elapsed = time.monotonic() - started
    lock.release()

    assert lock.holder == "waiting run"
    assert elapsed >= 0.25


def test_wait_fails_when_holder_keeps_lock(engine, held_lock):
    started = time.monotonic()
    error = expect_lock_held(engine, wait=0.6)
    elapsed = time.monotonic() - started

    assert elapsed >= 0.5
    assert "after waiting 0.6 s" in str(error)
    assert OWNER in str(error)
    assert error.hint is not None
    assert "--wait SECONDS" in error.hint


def test_ensure_held_passes_while_held(held_lock):
    held_lock.ensure_held()


def test_ensure_held_after_release_is_error(engine):
    lock = acquire_run_lock(engine, wait=None, owner=OWNER)
    lock.release()

    with pytest.raises(RuntimeError, match="released"):
        lock.ensure_held()


@pytest.mark.parametrize("wait", [-1, float("1e309"), float("-inf"), float("nan"), MAX_WAIT_S + 1])
def test_wait_out_of_range_is_usage_error(engine, wait):
    with pytest.raises(UsageError) as raised:
        acquire_run_lock(engine, wait=wait, owner=OWNER)

    assert raised.value.exit_code == ExitCode.USAGE
    assert "is not a number of seconds from 0 to 86400" in str(raised.value)
    assert str(raised.value).startswith("--wait ")


def test_longest_wait_is_accepted(engine):
    with acquire_run_lock(engine, wait=MAX_WAIT_S, owner=OWNER) as lock:
        assert lock.holder == OWNER


def test_killed_holder_frees_lock(portal_url, engine):
    process = start_holder_process(portal_url)
    try:
        error = expect_lock_held(engine)
        assert "child holder" in str(error)

        process.kill()
        process.wait(timeout=10)
        lock = acquire_run_lock(engine, wait=2.0, owner="after the kill")
        lock.release()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        process.communicate()

    assert lock.holder == "after the kill"


def test_read_only_engine_takes_lock(portal_url, engine):
    read_only_engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    try:
        with acquire_run_lock(read_only_engine, wait=None, owner="dry run"):
            error = expect_lock_held(engine)
    finally:
        read_only_engine.dispose()

    assert "dry run" in str(error)


def test_lock_outlives_engine_dispose(portal_url, engine, held_lock):
    engine.dispose()
    other_engine = create_portal_engine(portal_url, access=WriteAccess.ALL)
    try:
        error = expect_lock_held(other_engine)
    finally:
        other_engine.dispose()

    assert OWNER in str(error)


def test_check_finds_free_lock(engine):
    check_run_lock(engine, owner="check")

    with acquire_run_lock(engine, wait=None, owner=OWNER):
        pass
    check_run_lock(engine, owner="check")


def test_check_finds_held_lock(engine, held_lock):
    with pytest.raises(LockHeld) as raised:
        check_run_lock(engine, owner="check")

    assert raised.value.exit_code == ExitCode.LOCK_HELD
    assert OWNER in str(raised.value)
    held_lock.ensure_held()


@only_sqlite
def test_check_creates_no_lock_file(portal_url):
    database_path = Path(make_url(portal_url).database or "")
    read_only_engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    try:
        check_run_lock(read_only_engine, owner="dry run check")
    finally:
        read_only_engine.dispose()

    assert not Path(f"{database_path}.lock").exists()
    assert not Path(f"{database_path}.lock.owner").exists()


@only_sqlite
def test_check_unusable_lock_path_raises_database_error(portal_url, engine):
    lock_path = Path(f"{make_url(portal_url).database}.lock")
    lock_path.mkdir()

    with pytest.raises(DatabaseError) as raised:
        check_run_lock(engine, owner="check")

    assert str(lock_path) in str(raised.value)
    assert raised.value.exit_code == ExitCode.CONFIG


@only_sqlite
def test_sqlite_lock_is_shared_through_symlink(portal_url, engine, held_lock, tmp_path):
    link = tmp_path / "elsewhere" / "link.db"
    link.parent.mkdir()
    link.symlink_to(make_url(portal_url).database or "")
    linked_engine = create_portal_engine(f"sqlite:///{link}", access=WriteAccess.ALL)
    try:
        error = expect_lock_held(linked_engine)
        with pytest.raises(LockHeld):
            check_run_lock(linked_engine, owner="check")
    finally:
        linked_engine.dispose()

    assert OWNER in str(error)
    assert list(link.parent.iterdir()) == [link]


@only_sqlite
def test_sqlite_holder_from_owner_file(portal_url, engine, held_lock):
    database_path = Path(make_url(portal_url).database or "")
    owner_path = Path(f"{database_path}.lock.owner")
    record = json.loads(owner_path.read_text(encoding="utf-8"))

    error = expect_lock_held(engine)

    assert Path(f"{database_path}.lock").exists()
    assert record["owner"] == OWNER
    assert record["pid"] > 0
    assert record["host"]
    assert f"{OWNER}, since {record['started']}" in str(error)
    assert "as recorded by the holder" in str(error)


@only_sqlite
def test_sqlite_release_removes_owner_file(portal_url, engine):
    owner_path = Path(f"{make_url(portal_url).database}.lock.owner")
    lock = acquire_run_lock(engine, wait=None, owner=OWNER)
    assert owner_path.exists()

    lock.release()

    assert not owner_path.exists()


@only_sqlite
def test_sqlite_removed_lock_file_loses_lock(portal_url, held_lock):
    Path(f"{make_url(portal_url).database}.lock").unlink()

    with pytest.raises(LockHeld) as raised:
        held_lock.ensure_held()

    assert "was removed or replaced" in str(raised.value)
    assert raised.value.exit_code == ExitCode.LOCK_HELD


@only_sqlite
def test_sqlite_missing_owner_file_still_locks(portal_url, engine, held_lock):
    Path(f"{make_url(portal_url).database}.lock.owner").unlink()

    error = expect_lock_held(engine)

    assert "no holder is recorded" in str(error)


@only_sqlite
def test_sqlite_unusable_lock_path_raises_database_error(portal_url, engine):
    lock_path = Path(f"{make_url(portal_url).database}.lock")
    lock_path.mkdir()

    with pytest.raises(DatabaseError) as raised:
        acquire_run_lock(engine, wait=None, owner=OWNER)

    assert str(lock_path) in str(raised.value)
    assert raised.value.exit_code == ExitCode.CONFIG


@only_postgres
def test_postgres_holder_from_session(engine, held_lock):
    error = expect_lock_held(engine)

    assert OWNER in str(error)
    assert "connected since" in str(error)
    assert "from 127.0.0.1" in str(error)
    assert "PostgreSQL server process" in str(error)
    assert error.hint is not None
    assert "stop its process, not just its session (server process " in error.hint


@only_postgres
def test_postgres_ended_session_loses_lock(portal_url, engine):
    lock = acquire_run_lock(engine, wait=None, owner=OWNER)
    admin_url = make_url(portal_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (OWNER,)
        ).fetchall()

    with pytest.raises(LockHeld) as raised:
        lock.ensure_held()
    lock.release()

    assert ended == [(True,)]
    assert "this run lost the run lock" in str(raised.value)
    assert "its database connection failed" in str(raised.value)


@only_postgres
def test_postgres_check_without_lock_fails(portal_url, engine):
    conninfo = make_url(portal_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        with pytest.raises(LockHeld) as raised:
            lock_module._check_advisory_lock(engine, connection)

    assert "its database session no longer holds it" in str(raised.value)


@only_postgres
def test_postgres_long_owner_is_truncated(engine):
    owner = "ztctl reconcile on " + "a-very-long-host-name." * 5 + " pid 4242 \u00e9"
    with acquire_run_lock(engine, wait=None, owner=owner) as lock:
        error = expect_lock_held(engine)

    assert lock.holder == owner
    assert owner[:APPLICATION_NAME_MAX_BYTES] in str(error)
    assert owner[: APPLICATION_NAME_MAX_BYTES + 1] not in str(error)


@only_postgres
def test_postgres_message_hides_password(portal_url):
    url_with_password = make_url(portal_url).set(password=FAKE_PASSWORD).render_as_string(hide_password=False)
    engine = create_portal_engine(url_with_password, access=WriteAccess.ALL)
    try:
        with acquire_run_lock(engine, wait=None, owner=OWNER):
            error = expect_lock_held(engine)
    finally:
        engine.dispose()

    assert OWNER in str(error)
    assert "***" in str(error)
    assert FAKE_PASSWORD not in str(error)
    assert FAKE_PASSWORD not in (error.hint or "")


def test_postgres_unreachable_server_raises_database_error():
    url = f"postgresql+psycopg://ztctl:{FAKE_PASSWORD}@127.0.0.1:{free_local_port()}/portal"
    engine = sqlalchemy.create_engine(url)
    try:
        with pytest.raises(DatabaseError) as raised:
            acquire_run_lock(engine, wait=None, owner=OWNER)
    finally:
        engine.dispose()

    assert "could not open the lock connection to portal database" in str(raised.value)
    assert "ztctl:***@127.0.0.1" in str(raised.value)
    assert FAKE_PASSWORD not in str(raised.value)
    assert raised.value.exit_code == ExitCode.CONFIG


def test_postgres_driver_error_hides_password():
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://ztctl:{FAKE_PASSWORD}@127.0.0.1:5432/portal")
    with pytest.raises(DatabaseError) as raised:
        with lock_module._postgres_errors(engine, "take the run lock on"):
            raise psycopg.OperationalError(f"authentication failed for password {FAKE_PASSWORD}")

    assert "authentication failed for password ***" in str(raised.value)
    assert FAKE_PASSWORD not in str(raised.value)


def test_postgres_driver_error_hides_password_in_any_case():
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://ztctl:{FAKE_PASSWORD}@127.0.0.1:5432/portal")
    with pytest.raises(DatabaseError) as raised, lock_module._postgres_errors(engine, "take the run lock on"):
        raise psycopg.OperationalError(f"authentication failed for password {FAKE_PASSWORD.upper()}")

    assert "authentication failed for password ***" in str(raised.value)
    assert FAKE_PASSWORD.upper() not in str(raised.value)


def test_postgres_driver_error_keeps_words_around_short_password():
    engine = sqlalchemy.create_engine("postgresql+psycopg://ztctl:se@127.0.0.1:5432/portal")
    with pytest.raises(DatabaseError) as raised, lock_module._postgres_errors(engine, "open the lock connection to"):
        raise psycopg.OperationalError("Name or service not known; password se rejected")

    assert "Name or service not known; password *** rejected" in str(raised.value)


@pytest.mark.postgres
def test_postgres_lock_is_per_database(postgres_server: PostgresServer, postgres_template_database: str):
    names = [postgres_server.create_database(template=postgres_template_database) for _ in range(2)]
    engines = [create_portal_engine(postgres_server.url_for(name), access=WriteAccess.ALL) for name in names]
    try:
        with acquire_run_lock(engines[0], wait=None, owner="first portal"):
            with acquire_run_lock(engines[1], wait=None, owner="second portal") as second:
                assert second.holder == "second portal"
    finally:
        for engine in engines:
            engine.dispose()
        for name in names:
            postgres_server.drop_database(name)
