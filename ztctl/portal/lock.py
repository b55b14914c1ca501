"""The run lock, which lets only one ztctl run act on a portal database at a time.

Cron starts a run every minute or two, so runs overlap, and several hosts may
run ztctl against one PostgreSQL portal for high availability. The lock is
released by the operating system or the database server when its process
dies, so a killed run never leaves a stale lock behind:

- PostgreSQL: a session advisory lock, taken with ``pg_try_advisory_lock``
  on a connection of its own that stays open for the whole run. It excludes
  runs on every host. Advisory locks are scoped to one database, so portals
  in different databases on one server do not contend. The connection's
  ``application_name`` is the owner string, which lets a second run name the
  holder through ``pg_locks`` and ``pg_stat_activity``.
- SQLite: an exclusive ``flock`` on ``<database path>.lock``, taken with
  ``filelock``, where the path has its symlinks resolved. The holder writes
  its owner, host, PID and start time to ``<database path>.lock.owner``,
  which a second run reads to name it.

Either way a second run fails at once with ``LockHeld`` (exit status 6), or
polls until ``wait`` seconds have passed.

NOTE: a connection pooler in transaction mode, such as PgBouncer with
``pool_mode = transaction``, breaks session advisory locks, because the lock
stays on a server connection that the pooler hands to other clients. The
portal URL must point at the server or at a pool in session mode.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import filelock
import psycopg
import sqlalchemy

from ztctl.errors import DatabaseError, LockHeld, UsageError
from ztctl.portal.db import POSTGRES_CONNECT_TIMEOUT_S, display_url, url_passwords
from ztctl.redact import mask_secrets

logger = logging.getLogger(__name__)

RUN_LOCK_NAME = "ztctl run lock"
# The advisory lock key is the first 8 bytes of SHA-256 of RUN_LOCK_NAME, as a
# signed 64-bit integer. It must never change, because runs of two ztctl
# versions that use different keys would not exclude each other.
ADVISORY_LOCK_KEY = int.from_bytes(hashlib.sha256(RUN_LOCK_NAME.encode()).digest()[:8], "big", signed=True)

POLL_INTERVAL_S = 0.25
"""Time between two attempts while waiting for the lock."""

MAX_WAIT_S = 24 * 3600
"""Maximum ``wait`` for the lock, in seconds: one day, far longer than a run takes, so that a mistyped
value such as 1e309 cannot make a run wait for ever."""

# PostgreSQL truncates application_name to 63 bytes and replaces characters
# outside printable ASCII, so the owner is cut down to that form beforehand.
APPLICATION_NAME_MAX_BYTES = 63

# Server-side TCP keepalive for the lock connection, in seconds. A session
# whose client host vanishes without closing its socket otherwise holds the
# lock until the server's TCP keepalive gives up, which takes over 2 hours
# with the Linux defaults (net.ipv4.tcp_keepalive_time = 7200). With these
# values the server drops it after about 60 s, so another host can take over
# within a cron interval or two. They have no effect over a Unix socket.
_TCP_KEEPALIVE_SETTINGS = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}

_ADVISORY_KEY_PARAMETERS = {"high": (ADVISORY_LOCK_KEY >> 32) & 0xFFFFFFFF, "low": ADVISORY_LOCK_KEY & 0xFFFFFFFF}
"""The run lock's key as pg_locks shows a bigint advisory key: high 32 bits in ``classid``, low 32 bits in
``objid``, and ``objsubid`` 1."""

_FIND_HOLDER_SQL = """
SELECT activity.application_name, host(activity.client_addr), activity.backend_start, activity.pid
FROM pg_locks AS locks
JOIN pg_stat_activity AS activity ON activity.pid = locks.pid
WHERE locks.locktype = 'advisory'
  AND locks.granted
  AND locks.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND locks.classid::bigint = %(high)s
  AND locks.objid::bigint = %(low)s
  AND locks.objsubid = 1
"""

_HELD_BY_THIS_SESSION_SQL = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory'
  AND granted
  AND pid = pg_backend_pid()
  AND classid::bigint = %(high)s
  AND objid::bigint = %(low)s
  AND objsubid = 1
"""


class RunLock:
    """A held run lock. ``release`` frees it, and so does leaving its ``with`` block."""

    def __init__(self, holder: str, release: Callable[[], None], check: Callable[[], None]) -> None:
        self.holder = holder
        """The owner string of this lock."""
        self._release = release
        self._check = check
        self._is_released = False

    def ensure_held(self) -> None:
        """Raise LockHeld if this run has lost the lock, so that it can stop before acting alongside another run.

        The PostgreSQL lock is lost when its connection closes, for example
        when the server restarts or an administrator ends the session. The
        SQLite lock is lost when someone removes or replaces the lock file.
        """
        if self._is_released:
            raise RuntimeError(f"the run lock of {self.holder} was released, so it cannot be checked")
        self._check()

    def release(self) -> None:
        """Free the lock. Later calls do nothing."""
        if self._is_released:
            return
        self._is_released = True
        self._release()
        logger.debug("Released the run lock held by %s", self.holder)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _traceback: TracebackType | None
    ) -> None:
        self.release()


def acquire_run_lock(engine: sqlalchemy.Engine, *, wait: float | None, owner: str) -> RunLock:
    """Take the run lock of the portal database behind ``engine``.

    ``owner`` describes this run to a run that finds the lock held, such as
    "ztctl reconcile on host1 pid 4242". With ``wait`` None or 0 the lock is
    tried once. Otherwise it is tried every ``POLL_INTERVAL_S`` until ``wait``
    seconds have passed. Raises LockHeld when another run still holds it,
    UsageError for a ``wait`` that is not from 0 to ``MAX_WAIT_S``, and
    DatabaseError when the lock cannot be taken for another reason.
    """
    wait = _check_wait(wait)
    backend = engine.dialect.name
    if backend == "postgresql":
        return _acquire_postgres_lock(engine, wait=wait, owner=owner)
    if backend == "sqlite":
        return _acquire_file_lock(engine, wait=wait, owner=owner)
    raise ValueError(f"no run lock for database backend {backend!r}: expected postgresql or sqlite")


def check_run_lock(engine: sqlalchemy.Engine, *, owner: str) -> None:
    """Raise LockHeld if another run holds the run lock of the portal database behind ``engine``.

    Unlike ``acquire_run_lock``, this creates no file, so a dry run can call
    it. On SQLite it tries the lock file only if the file exists, and on
    PostgreSQL it takes the advisory lock as ``owner`` and releases it at
    once. Raises DatabaseError when the lock could not be taken for another
    reason.
    """
    backend = engine.dialect.name
    if backend == "postgresql":
        with _acquire_postgres_lock(engine, wait=0.0, owner=owner):
            return
    if backend == "sqlite":
        _check_file_lock(engine)
        return
    raise ValueError(f"no run lock for database backend {backend!r}: expected postgresql or sqlite")


def _check_wait(wait: float | None) -> float:
    if wait is None:
        return 0.0
    # A wait of inf or 1e309 (which float() reads as inf) would never end, and
    # with nan the deadline comparisons are all false.
    if not math.isfinite(wait) or not 0 <= wait <= MAX_WAIT_S:
        raise UsageError(
            f"--wait {wait:g} is not a number of seconds from 0 to {MAX_WAIT_S}",
            hint=f"Give --wait SECONDS with SECONDS from 0 to {MAX_WAIT_S} (one day).",
        )
    return float(wait)


def _poll(try_lock: Callable[[], bool], *, wait: float, on_first_failure: Callable[[], None]) -> bool:
    """Call ``try_lock`` until it returns True or ``wait`` seconds have passed, and return its last result."""
    deadline = time.monotonic() + wait
    if try_lock():
        return True
    if wait > 0:
        on_first_failure()
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(POLL_INTERVAL_S, remaining))
        if try_lock():
            return True
    return False


def _lock_held_error(engine: sqlalchemy.Engine, holder: str, *, wait: float, hint: str) -> LockHeld:
    waited = f" after waiting {wait:g} s" if wait else ""
    message = f"another ztctl run holds the lock on the portal database {display_url(engine)}{waited}: {holder}"
    if wait:
        retry = "Rerun with a longer --wait SECONDS, or check the holder."
    else:
        retry = "Rerun with --wait SECONDS to wait for it, or check the holder."
    return LockHeld(message, hint=f"{retry} {hint}")


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# PostgreSQL


def _application_name(owner: str) -> str:
    printable = "".join(character if " " <= character <= "~" else "?" for character in owner)
    return printable[:APPLICATION_NAME_MAX_BYTES]


def _acquire_postgres_lock(engine: sqlalchemy.Engine, *, wait: float, owner: str) -> RunLock:
    connection = _connect_for_lock(engine, owner)
    try:
        is_locked = _poll(
            lambda: _try_advisory_lock(engine, connection),
            wait=wait,
            on_first_failure=lambda: logger.info(
                "Waiting up to %g s for the run lock on %s, held by %s",
                wait, display_url(engine), _find_postgres_holder(engine, connection)[0],
            ),
        )
        if not is_locked:
            holder, backend_pid = _find_postgres_holder(engine, connection)
            # When no holder is found, it released the lock between the last
            # attempt and the lookup, so one more attempt is worth making.
            if backend_pid is not None or not _try_advisory_lock(engine, connection):
                raise _lock_held_error(engine, holder, wait=wait, hint=_postgres_hint(backend_pid))
    except BaseException:
        connection.close()
        raise

    logger.debug("Took the PostgreSQL run lock on %s for %s", display_url(engine), owner)
    return RunLock(owner, connection.close, lambda: _check_advisory_lock(engine, connection))


def _connect_for_lock(engine: sqlalchemy.Engine, owner: str) -> psycopg.Connection[tuple[Any, ...]]:
    """Open a connection outside the engine's pool, named after ``owner``, in autocommit.

    The engine's connections do not suit, because they may be read-only or
    guarded against writes, they carry the application name "ztctl", and
    SQLAlchemy would leave one idle in a transaction for the whole run.
    """
    url = engine.url.set(drivername="postgresql")
    parameters: dict[str, Any] = {"application_name": _application_name(owner)}
    if "connect_timeout" not in url.query:
        parameters["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    with _postgres_errors(engine, "open the lock connection to"):
        connection = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True, **parameters)
    try:
        with _postgres_errors(engine, "configure the lock connection to"):
            for name, value in _TCP_KEEPALIVE_SETTINGS.items():
                connection.execute(f"SET {name} = {int(value)}")
    except BaseException:
        connection.close()
        raise
    return connection


def _try_advisory_lock(engine: sqlalchemy.Engine, connection: psycopg.Connection[tuple[Any, ...]]) -> bool:
    with _postgres_errors(engine, "take the run lock on"):
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
    return bool(row and row[0])


def _find_postgres_holder(
    engine: sqlalchemy.Engine, connection: psycopg.Connection[tuple[Any, ...]]
) -> tuple[str, int | None]:
    """Describe the session that holds the run lock, and return its server process ID (None if not found)."""
    with _postgres_errors(engine, "look up the run lock holder in"):
        row = connection.execute(_FIND_HOLDER_SQL, _ADVISORY_KEY_PARAMETERS).fetchone()
    if row is None:
        return "unknown, because the lock changed hands while this run looked up its holder", None

    application_name, client_address, backend_start, backend_pid = row
    parts = [application_name or "a session with no application name"]
    if backend_start is not None:
        parts.append(f"connected since {_format_time(backend_start)}")
    if client_address is not None:
        parts.append(f"from {client_address}")
    description = ", ".join(parts)
    return f"{description} (PostgreSQL server process {backend_pid})", backend_pid


def _postgres_hint(backend_pid: int | None) -> str:
    hint = "The lock is released when the holder's database session ends. If that run is stuck, stop its process"
    if backend_pid is None:
        return f"{hint}."
    # Ending only the session would free the lock while the stuck run may still go on and act.
    return f"{hint}, not just its session (server process {backend_pid}), because the run might go on without the lock."


def _check_advisory_lock(engine: sqlalchemy.Engine, connection: psycopg.Connection[tuple[Any, ...]]) -> None:
    try:
        row = connection.execute(_HELD_BY_THIS_SESSION_SQL, _ADVISORY_KEY_PARAMETERS).fetchone()
    except psycopg.Error as error:
        reason = f"its database connection failed: {_hide_password(engine, error)}"
    else:
        if row and row[0]:
            return
        reason = "its database session no longer holds it"
    raise LockHeld(
        f"this run lost the run lock on the portal database {display_url(engine)}: {reason}",
        hint="Another run may act on the portal now, so this run stops. The next run starts over.",
    )


def _hide_password(engine: sqlalchemy.Engine, error: psycopg.Error) -> str:
    """Return the driver's message on one line with the URL's password replaced by ***."""
    return mask_secrets(" ".join(str(error).split()), url_passwords(engine.url))


@contextmanager
def _postgres_errors(engine: sqlalchemy.Engine, action: str) -> Iterator[None]:
    """Turn psycopg errors into DatabaseError with the redacted URL, because the driver's text may contain the password."""
    try:
        yield
    except psycopg.Error as error:
        raise DatabaseError(
            f"could not {action} portal database {display_url(engine)}: {_hide_password(engine, error)}",
            hint="Check that the server is running and accepts one more connection from this user.",
        ) from None


# SQLite


def _database_path(engine: sqlalchemy.Engine) -> Path:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise DatabaseError(
            f"portal database {display_url(engine)} is not an SQLite file, so there is no file to lock beside it"
        )
    path = Path(database).expanduser()
    # The lock file is named after the real path, so that runs that reach
    # one database through different symlinks take the same lock.
    return (path if path.is_absolute() else Path.cwd() / path).resolve()


def _lock_paths(engine: sqlalchemy.Engine) -> tuple[Path, Path]:
    """Return the lock file and the owner record of the SQLite database behind ``engine``."""
    database_path = _database_path(engine)
    return Path(f"{database_path}.lock"), Path(f"{database_path}.lock.owner")


_OWNER_RECORD_GRACE = 0.5
"""Seconds to wait for a new holder's record before naming no holder."""


def _acquire_file_lock(engine: sqlalchemy.Engine, *, wait: float, owner: str) -> RunLock:
    lock_path, owner_path = _lock_paths(engine)
    # On a filesystem without flock, filelock would otherwise fall back to a
    # lock that is the file's existence, which a killed run leaves behind.
    file_lock = filelock.FileLock(lock_path, thread_local=False, fallback_to_soft=False, preserve_lock_file=True)

    def try_lock() -> bool:
        try:
            file_lock.acquire(timeout=0)
        except filelock.Timeout:
            return False
        except OSError as error:
            raise _lock_file_error(engine, lock_path, error) from None
        return True

    is_locked = _poll(
        try_lock,
        wait=wait,
        on_first_failure=lambda: logger.info(
            "Waiting up to %g s for the run lock %s, held by %s", wait, lock_path, _describe_file_holder(owner_path)
        ),
    )
    if not is_locked:
        raise _lock_held_error(engine, _wait_for_file_holder(owner_path), wait=wait, hint=_FILE_LOCK_HINT)

    lock_file_identity = _file_identity(lock_path)
    _write_owner_file(owner_path, owner)
    logger.debug("Took the run lock %s for %s", lock_path, owner)

    def release() -> None:
        # The owner file is removed while the lock is still held, so a
        # released lock leaves no record. A killed run leaves its record,
        # which the next holder overwrites.
        with suppress(FileNotFoundError):
            owner_path.unlink()
        file_lock.release()

    def check() -> None:
        # A new run locks whatever file is at the path now, so the lock is
        # lost once the file that this run locked is no longer there.
        if _file_identity(lock_path) != lock_file_identity:
            raise LockHeld(
                f"this run lost the run lock on the portal database {display_url(engine)}: "
                f"its lock file {lock_path} was removed or replaced",
                hint="Another run may act on the portal now, so this run stops. Do not remove the lock file.",
            )

    return RunLock(owner, release, check)


def _check_file_lock(engine: sqlalchemy.Engine) -> None:
    lock_path, owner_path = _lock_paths(engine)
    try:
        # Without O_CREAT, so that a missing lock file stays missing.
        descriptor = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        # A run creates the lock file before it locks it, so no run holds the lock.
        if not os.access(lock_path.parent, os.W_OK | os.X_OK):
            denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            raise _lock_file_error(engine, lock_path, denied) from None
        return
    except OSError as error:
        raise _lock_file_error(engine, lock_path, error) from None
    try:
        # flock cannot test a lock without taking it, so a run that tries the
        # lock in this moment finds it held and exits with LockHeld.
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _lock_held_error(engine, _wait_for_file_holder(owner_path), wait=0, hint=_FILE_LOCK_HINT) from None
    except OSError as error:
        raise _lock_file_error(engine, lock_path, error) from None
    finally:
        # Closing the descriptor releases the lock.
        os.close(descriptor)


_FILE_LOCK_HINT = "The lock is released when the holder's process ends. If that run is stuck, stop that process."


def _lock_file_error(engine: sqlalchemy.Engine, lock_path: Path, error: OSError) -> DatabaseError:
    return DatabaseError(
        f"could not take the run lock file {lock_path} of portal database {display_url(engine)}: "
        f"{error.strerror or error}",
        hint="Check that this user may create and lock files in the database's directory.",
    )


def _wait_for_file_holder(owner_path: Path) -> str:
    """Describe the holder of the lock file, giving a holder that has not written its record yet a moment."""
    if not owner_path.exists():
        # The holder writes its record just after it takes the lock, so a
        # run that lost the race by a moment gives it that moment.
        time.sleep(_OWNER_RECORD_GRACE)
    return _describe_file_holder(owner_path)


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def _write_owner_file(owner_path: Path, owner: str) -> None:
    """Record who holds the lock. A failure is logged, not raised, because it only hides the holder's name."""
    record = {
        "owner": owner,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _format_time(datetime.now(UTC)),
    }
    # Written under another name and renamed, so a reader never sees half a record.
    temporary_path = owner_path.with_name(f"{owner_path.name}.{os.getpid()}.tmp")
    try:
        temporary_path.write_text(json.dumps(record) + "\n", encoding="utf-8")
        os.replace(temporary_path, owner_path)
    except OSError as error:
        logger.warning("Could not record the run lock owner in %s: %s", owner_path, error.strerror or error)
        with suppress(OSError):
            temporary_path.unlink()


def _describe_file_holder(owner_path: Path) -> str:
    try:
        record = json.loads(owner_path.read_text(encoding="utf-8"))
        owner = str(record["owner"])
        started = str(record["started"])
    except FileNotFoundError:
        return f"no holder is recorded in {owner_path}"
    except (OSError, ValueError, TypeError, KeyError) as error:
        return f"the holder's record in {owner_path} cannot be read ({error})"
    return f"{owner}, since {started}, as recorded by the holder in {owner_path}"
