"""One run of a command: its mode, its portal connection, its controller client and its record.

``open_job`` is where a run's read-only promise is made good: a dry run gets a
database engine that rejects every write and a controller client that rejects
every non-GET request, whatever code runs later. An audit may write only its
own run record and audit log.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ztctl import __version__
from ztctl.config import LoadedSettings, Settings, resolve_token
from ztctl.controller.factory import build_controller
from ztctl.controller.base import ControllerClient, ControllerStatus
from ztctl.engine.model import Finding, Mode, Outcome, RunResult
from ztctl.errors import ExitCode
from ztctl.portal.db import WriteAccess, create_portal_engine, ensure_schema, session_factory
from ztctl.portal.models import AuditEntry, Run, utc_now

log = logging.getLogger(__name__)

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
                reason=finding.reason,
                detail=outcome.detail if outcome else None,
                before=before,
                after=after,
                revision=outcome.revision if outcome and outcome.revision is not None else finding.expected_revision,
            )
        )

    def finish(self, exit_code: int, counts: dict[str, int], error: str | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        with self._sessions() as session:
            run = session.get(Run, self.run_id)
            if run is None:
                return
            run.finished_at = utc_now()
            run.exit_code = exit_code
            run.counts = counts
            run.error = error
            session.commit()


@dataclass
class Job:
    """Everything a stage needs, built once per command by ``open_job``."""

    command: str
    mode: Mode
    settings: Settings
    db_engine: Engine
    sessions: sessionmaker[Session]
    recorder: RunRecorder
    controller: ControllerClient | None = None
    controller_status: ControllerStatus | None = None
    clock: Callable[[], datetime] = utc_now
    force: bool = False
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def now(self) -> datetime:
        return self.clock()

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
) -> Job:
    """Connect to the portal and, when needed, to the controller, with the mode's write access.

    ``controller`` replaces the client built from the settings; tests use it.
    The database schema is checked and the controller probed before the run
    is recorded, so a wrong URL or token stops the run before anything is
    written.
    """
    settings = loaded.settings
    url = settings.database.url
    db_engine = create_portal_engine(url, access=_ACCESS_BY_MODE[mode], create_sqlite_file=mode is Mode.APPLY)
    job = Job(
        command=command,
        mode=mode,
        settings=settings,
        db_engine=db_engine,
        sessions=session_factory(db_engine),
        recorder=RunRecorder(session_factory(db_engine), mode, command),
        clock=clock,
        force=force,
    )
    job._closers.append(db_engine.dispose)
    try:
        ensure_schema(db_engine, create_if_empty=mode is Mode.APPLY and db_engine.dialect.name == "sqlite")
        if needs_controller:
            _connect_controller(job, loaded, controller)
        job.recorder.start()
    except BaseException:
        job.close()
        raise
    return job


def _connect_controller(job: Job, loaded: LoadedSettings, controller: ControllerClient | None) -> None:
    if controller is None:
        token = resolve_token(loaded)
        controller = build_controller(loaded.settings.controller, token, read_only=job.mode.is_read_only)
        job._closers.append(controller.close)
    job.controller = controller
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
    changes: an operator alerted on the highest code sees the most urgent
    problem first.
    """
    if result.has_refusals:
        return ExitCode.REFUSED
    if result.has_errors:
        return ExitCode.PARTIAL_FAILURE
    if result.mode is Mode.APPLY:
        # Pending findings with no action (an unknown member under the
        # report policy) are for operators to read, not for cron to alert on.
        pending = result.has_unapplied
    else:
        pending = result.has_pending
    return ExitCode.CHANGES_PENDING if pending else ExitCode.OK
