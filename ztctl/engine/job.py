"""One run of a command: its mode, its portal connection, its controller client and its record.

``open_job`` is where a run's read-only promise is made good: a dry run gets a
database engine that rejects every write and a controller client that rejects
every non-GET request, whatever code runs later. An audit may write only its
own run record and audit log.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ztctl import __version__
from ztctl.config import LoadedSettings, Settings, resolve_token
from ztctl.controller.base import ControllerClient, ControllerStatus
from ztctl.controller.factory import build_controller
from ztctl.engine.guard import RevocationGuard
from ztctl.engine.model import (
    Finding,
    Mode,
    NetworkReport,
    Outcome,
    RunResult,
)
from ztctl.errors import ExitCode, PortalUnavailable
from ztctl.portal.db import (
    WriteAccess,
    create_portal_engine,
    ensure_schema,
    session_factory,
    write_session_factory,
)
from ztctl.portal.lock import RunLock, acquire_run_lock
from ztctl.portal.models import AuditEntry, Run, utc_now
from ztctl.redact import redact

log = logging.getLogger(__name__)

PENDING = "pending"
"""The outcome of an audit entry whose write was sent but whose result is not known yet."""

_ACCESS_BY_MODE = {Mode.APPLY: WriteAccess.ALL, Mode.AUDIT: WriteAccess.AUDIT_ONLY, Mode.DRY_RUN: WriteAccess.NONE}


class RunRecorder:
    """Write the ``runs`` row and the audit log of one run; does nothing in a dry run."""

    def __init__(self, sessions: sessionmaker[Session], mode: Mode, command: str) -> None:
        self._sessions = sessions
        self._mode = mode
        self._command = command
        self.run_id: int | None = None

    @property
    def enabled(self) -> bool:
        return self._mode is not Mode.DRY_RUN

    def start(self) -> None:
        """Insert the run's row and commit it at once, so a run killed midway still shows up."""
        if not self.enabled:
            return
        with self._sessions() as session:
            run = Run(
                command=self._command,
                mode=str(self._mode),
                host=socket.gethostname(),
                user=current_user(),
                pid=os.getpid(),
                version=__version__,
            )
            session.add(run)
            session.commit()
            self.run_id = run.id

    def record(
        self,
        session: Session,
        stage: str,
        finding: Finding,
        outcome: Outcome | None,
        *,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Add an audit entry to ``session``, to commit together with the change it describes."""
        if not self.enabled or self.run_id is None:
            return
        session.add(
            AuditEntry(
                run_id=self.run_id,
                stage=stage,
                network_id=finding.network_id,
                node_id=finding.node_id,
                action=str(finding.action) if finding.action else "none",
                outcome=str(outcome.status) if outcome else "found",
                reason=redact(finding.reason),
                detail=redact(outcome.detail) if outcome else None,
                before=before,
                after=after,
                revision=outcome.revision if outcome and outcome.revision is not None else finding.expected_revision,
            )
        )

    def begin(self, stage: str, finding: Finding, *, before: dict[str, Any] | None = None) -> int | None:
        """Commit a ``pending`` audit entry for a write about to be sent, and return its ID.

        A run killed while the write is in flight leaves this entry behind, and
        the next run finds out from the controller what became of the write.
        """
        if not self.enabled or self.run_id is None:
            return None
        with self._sessions() as session:
            entry = AuditEntry(
                run_id=self.run_id, stage=stage, network_id=finding.network_id, node_id=finding.node_id,
                action=str(finding.action) if finding.action else "none", outcome=PENDING,
                reason=redact(finding.reason), before=before, revision=finding.expected_revision,
            )
            session.add(entry)
            session.commit()
            return entry.id

    def complete(
        self,
        session: Session,
        entry_id: int | None,
        stage: str,
        finding: Finding,
        outcome: Outcome,
        *,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Turn the pending entry ``entry_id`` into the outcome, in ``session``, to commit with the change."""
        entry = session.get(AuditEntry, entry_id) if entry_id is not None else None
        if entry is None:
            self.record(session, stage, finding, outcome, before=before, after=after)
            return
        entry.outcome = str(outcome.status)
        entry.detail = redact(outcome.detail)
        entry.after = after
        if outcome.revision is not None:
            entry.revision = outcome.revision

    def record_network_error(self, session: Session, stage: str, network_id: str, error: str) -> None:
        """Add an audit entry for a network that failed as a whole, so that the next run shows it first."""
        if not self.enabled or self.run_id is None:
            return
        session.add(
            AuditEntry(
                run_id=self.run_id, stage=stage, network_id=network_id, node_id=None,
                action="none", outcome="failed", reason=redact(error),
            )
        )

    def finish(self, exit_code: int, counts: dict[str, int], error: str | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        try:
            with self._sessions() as session:
                run = session.get(Run, self.run_id)
                if run is None:
                    return
                run.finished_at = utc_now()
                run.exit_code = exit_code
                run.counts = counts
                run.error = error
                session.commit()
        except SQLAlchemyError as exc:
            # The run's outcome is still in the log and the exit status.
            log.error("could not record the end of run %s in the portal database: %s", self.run_id, exc)


@dataclass
class Job:
    """Everything a stage needs, built once per command by ``open_job``."""

    command: str
    mode: Mode
    settings: Settings
    db_engine: Engine
    sessions: sessionmaker[Session]
    """Sessions for reading; on SQLite their transactions never wait for another writer."""
    write_sessions: sessionmaker[Session]
    """Sessions that write: in an apply run on SQLite each takes the write lock as its transaction begins."""
    recorder: RunRecorder
    controller: ControllerClient | None = None
    controller_status: ControllerStatus | None = None
    clock: Callable[[], datetime] = utc_now
    force: bool = False
    guard: RevocationGuard = field(init=False)
    problems: list[str] = field(default_factory=list)
    """Portal rows that could not be used, described for the operator; each makes the run exit 5."""
    deadline: float | None = None
    """``time.monotonic()`` value after which the run starts no new action."""
    lock: RunLock | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    """Set on an interrupt, so that workers stop between actions."""
    progress: Callable[[str, int, int], None] | None = None
    """Called with a stage name, networks done and networks in all; the CLI shows it on a terminal."""
    progress_stage: str = ""
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.guard = RevocationGuard(self.settings.policies.revocation_guard, force=self.force)

    def now(self) -> datetime:
        return self.clock()

    def check_lock(self) -> None:
        """Raise ``LockHeld`` if this run lost its lock (a dropped database connection), before it acts again."""
        if self.lock is not None:
            self.lock.ensure_held()

    def past_deadline(self) -> bool:
        return self.stop_requested.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline)

    def report_progress(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(self.progress_stage, done, total)

    def note_deadline(self, report: NetworkReport) -> None:
        """Record that the run stopped (its time limit, or an interrupt) before the end of a network's actions."""
        if self.stop_requested.is_set():
            message = "interrupted; the remaining actions are left for the next run"
        else:
            limit = self.settings.run.time_limit
            message = (
                f"run time limit of {int(limit.total_seconds())}s reached; "
                "the remaining actions are left for the next run"
            )
        if report.error != message:
            report.error = message
            report.counts.errors += 1
            log.error("network %s: %s", report.network_id, message, extra={"network": report.network_id})

    @contextmanager
    def recording_after_write(self, finding: Finding) -> Iterator[None]:
        """Guard the recording of a change already made on the controller.

        If the portal database fails now, the change is real but unrecorded:
        the log records it, and is then the only record, and the run stops.
        """
        try:
            yield
        except SQLAlchemyError as exc:
            log.error(
                "%s of member %s on network %s was applied on the controller, but recording it in the "
                "portal failed: %s",
                finding.action, finding.node_id, finding.network_id, exc,
                extra={"network": finding.network_id, "node": finding.node_id},
            )
            raise PortalUnavailable(
                f"the portal database failed during the run, after {finding.action} of member "
                f"{finding.node_id} on network {finding.network_id} was applied on the controller: "
                f"{type(exc).__name__}",
                hint="check the database; the next run reads the controller again and converges",
            ) from exc

    def require_controller(self) -> ControllerClient:
        if self.controller is None:
            raise RuntimeError(f"command {self.command} was opened without a controller")
        return self.controller

    def finish(self, result: RunResult | None, exit_code: int, error: str | None = None) -> None:
        counts = result.counts.to_dict() if result else {}
        self.recorder.finish(exit_code, counts, error)

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer()
        self._closers.clear()


def open_job(
    loaded: LoadedSettings,
    *,
    command: str,
    mode: Mode,
    needs_controller: bool = True,
    controller: ControllerClient | None = None,
    clock: Callable[[], datetime] = utc_now,
    force: bool = False,
    wait: float | None = None,
    create_database: bool = False,
) -> Job:
    """Connect to the portal and, when needed, to the controller, with the mode's write access.

    An apply run first takes the run lock, waiting up to ``wait`` seconds
    for another run to finish, so that only one run acts at a time. Only
    ``create_database`` lets a missing SQLite file be created: a job that
    reconciled against a new, empty portal because of a mistyped path would
    enforce nothing and still succeed.
    ``controller`` replaces the client built from the settings; tests use it.
    The database schema is checked and the controller probed before the run
    is recorded, so a wrong URL or token stops the run before anything is
    written.
    """
    settings = loaded.settings
    url = settings.database.url
    create = create_database and mode is Mode.APPLY
    db_engine = create_portal_engine(url, access=_ACCESS_BY_MODE[mode], create_sqlite_file=create)
    job = Job(
        command=command,
        mode=mode,
        settings=settings,
        db_engine=db_engine,
        # Reads, including the checks made before the run lock is taken, use
        # DEFERRED transactions, so a second run reaches the lock (and exits
        # 6) instead of waiting for SQLite's write lock, and the network
        # workers of one run read side by side.
        sessions=session_factory(db_engine),
        write_sessions=write_session_factory(db_engine),
        recorder=RunRecorder(write_session_factory(db_engine), mode, command),
        clock=clock,
        force=force,
    )
    job._closers.append(db_engine.dispose)
    job.deadline = time.monotonic() + settings.run.time_limit.total_seconds()
    try:
        if mode is Mode.APPLY:
            job.lock = acquire_run_lock(db_engine, wait=wait, owner=run_owner(command))
            job._closers.append(job.lock.release)
        ensure_schema(db_engine, create_if_empty=create and db_engine.dialect.name == "sqlite")
        if needs_controller:
            _connect_controller(job, loaded, controller)
        job.recorder.start()
    except BaseException:
        job.close()
        raise
    return job


def current_user() -> str:
    """Name the operating-system user, or its numeric ID where the system has no name for it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def run_owner(command: str) -> str:
    """Describe this run for the lock, so that a second run can name the holder."""
    return f"ztctl {command} on {socket.gethostname()} pid {os.getpid()}"


def _connect_controller(job: Job, loaded: LoadedSettings, controller: ControllerClient | None) -> None:
    if controller is None:
        token = resolve_token(loaded)
        controller = build_controller(loaded.settings.controller, token, read_only=job.mode.is_read_only)
        job._closers.append(controller.close)
    job.controller = controller
    controller.set_deadline(job.deadline)
    job.controller_status = controller.probe()
    log.info(
        "controller %s at %s, version %s",
        job.controller_status.address,
        loaded.settings.controller.url,
        job.controller_status.version,
    )


def exit_code_for(result: RunResult) -> ExitCode:
    """Map a finished run to its exit status.

    A safety refusal outranks a partial failure, which outranks pending
    changes: an operator alerted on the highest code learns of the most urgent
    problem first.
    """
    if result.has_refusals:
        return ExitCode.REFUSED
    if result.has_errors:
        return ExitCode.PARTIAL_FAILURE
    if result.mode is Mode.APPLY:
        # Pending findings with no action (an authorized unknown member under
        # the report policy) are for operators to read, not for cron to alert on.
        pending = result.has_unapplied
    elif result.mode is Mode.DRY_RUN and result.command != "diff":
        # A dry run reports whether the real run would change anything.
        pending = result.has_actions
    else:
        # diff and audits report drift, which includes authorized unknown members.
        pending = result.has_pending
    return ExitCode.CHANGES_PENDING if pending else ExitCode.OK
