"""``ztctl check``: the smoke check for CI and for a first install.

Each check is one row with its result and, on failure, the reason and the
exit status it stands for. Checks that depend on a failed one are skipped,
the others still run, and the command exits with the status of the first
failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from ztctl.config import LoadedSettings, load_settings, resolve_token
from ztctl.controller.base import ControllerClient, ControllerStatus
from ztctl.controller.factory import build_controller
from ztctl.engine import portal_state
from ztctl.engine.job import run_owner
from ztctl.errors import ExitCode, TokenRejected, ZtctlError
from ztctl.portal.db import (
    WriteAccess,
    create_portal_engine,
    display_url,
    schema_state,
    session_factory,
)
from ztctl.portal.lock import check_run_lock


@dataclass(frozen=True)
class CheckRow:
    name: str
    status: str
    """``ok``, ``failed`` or ``skipped``."""
    detail: str
    exit_code: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "exit_code": self.exit_code}


@dataclass
class CheckReport:
    rows: list[CheckRow] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return next((row.exit_code for row in self.rows if row.status == "failed"), int(ExitCode.OK))

    def ok(self, name: str, detail: str) -> None:
        self.rows.append(CheckRow(name, "ok", detail))

    def failed(self, name: str, error: ZtctlError | str, exit_code: int | None = None) -> None:
        if isinstance(error, ZtctlError):
            detail = str(error) + (f" ({error.hint})" if error.hint else "")
            exit_code = int(error.exit_code) if exit_code is None else exit_code
        else:
            detail = error
        self.rows.append(CheckRow(name, "failed", detail, exit_code or int(ExitCode.PARTIAL_FAILURE)))

    def skipped(self, *names: str) -> None:
        for name in names:
            self.rows.append(CheckRow(name, "skipped", "an earlier check failed"))


def run_checks(config_path: Path | None) -> CheckReport:
    report = CheckReport()
    try:
        loaded = load_settings(config_path)
    except ZtctlError as exc:
        report.failed("config", exc)
        report.skipped("database", "controller", "token", "networks", "lock")
        return report
    report.ok("config", f"read from {loaded.path}" if loaded.path else "defaults and ZTCTL_* variables")
    # The controller does not depend on the database, so a first install
    # learns of both problems in one go rather than one per attempt.
    engine, managed = _check_database(loaded, report)
    try:
        connected = _check_controller(loaded, report)
        if connected is None or managed is None:
            report.skipped("networks")
        else:
            client, status = connected
            with client:
                _check_networks(client, status, managed, report)
        if engine is None:
            report.skipped("lock")
        else:
            _check_lock(engine, report)
    finally:
        if engine is not None:
            engine.dispose()
    return report


def _check_database(loaded: LoadedSettings, report: CheckReport) -> tuple[Engine | None, list[str] | None]:
    """Check the portal database; return its engine and managed networks, or None for what failed."""
    try:
        engine = create_portal_engine(loaded.settings.database.url, access=WriteAccess.NONE)
    except ZtctlError as exc:
        report.failed("database", exc)
        return None, None
    try:
        state = schema_state(engine)
        if not state.is_current:
            report.failed(
                "database",
                f"{display_url(engine)}: schema at revision {state.current_revision or 'none'}, this ztctl "
                f"needs {state.head_revision}; run `ztctl db upgrade`",
                int(ExitCode.CONFIG),
            )
            engine.dispose()
            return None, None
        with session_factory(engine)() as session:
            managed = [network.id for network in portal_state.managed_networks(session, [])]
    except ZtctlError as exc:
        report.failed("database", exc)
        engine.dispose()
        return None, None
    report.ok("database", f"{display_url(engine)}, schema at revision {state.current_revision}")
    return engine, managed


def _check_controller(
    loaded: LoadedSettings, report: CheckReport
) -> tuple[ControllerClient, ControllerStatus] | None:
    try:
        token = resolve_token(loaded)
    except ZtctlError as exc:
        report.skipped("controller")
        report.failed("token", exc)
        return None
    client = build_controller(loaded.settings.controller, token, read_only=True)
    try:
        status = client.probe()
    except TokenRejected as exc:
        client.close()
        report.ok("controller", f"{loaded.settings.controller.url} answers")
        report.failed("token", exc)
        return None
    except ZtctlError as exc:
        client.close()
        report.failed("controller", exc)
        report.skipped("token")
        return None
    version = f"version {status.version}" + (f", node address {status.address}" if status.address else "")
    report.ok("controller", f"{loaded.settings.controller.url}: {status.backend} controller, {version}")
    report.ok("token", f"accepted ({token.source})")
    return client, status


def _check_networks(
    client: ControllerClient, status: ControllerStatus, managed: list[str], report: CheckReport
) -> None:
    if not managed:
        # Most often the database URL points at the wrong portal, hence a configuration status.
        report.failed(
            "networks",
            "the portal manages no network: check that database.url points at the portal, "
            "or load networks with `ztctl portal load` or `ztctl adopt`",
            int(ExitCode.CONFIG),
        )
        return
    try:
        on_controller = set(client.list_network_ids())
    except ZtctlError as exc:
        report.failed("networks", exc)
        return
    # Only a self-hosted controller puts its address in front of its networks' IDs.
    address = status.address if status.backend == "zerotier-one" else ""
    missing = [network for network in managed if network not in on_controller]
    foreign = [network for network in managed if address and not network.startswith(address)]
    problems = []
    if missing:
        problems.append(f"missing on the controller: {', '.join(missing)}")
    if foreign:
        problems.append(f"ID not starting with the controller's address {address}: {', '.join(foreign)}")
    if problems:
        report.failed("networks", "; ".join(problems), int(ExitCode.PARTIAL_FAILURE))
        return
    try:
        read_only = [network for network, allowed in client.may_change(managed).items() if not allowed]
    except ZtctlError as exc:
        report.failed("networks", exc)
        return
    if read_only:
        # Every run would then fail each change with HTTP 403.
        report.failed(
            "networks",
            f"the token may read but not change the members of: {', '.join(read_only)}; "
            "use a token of a user allowed to authorize members on them",
            int(ExitCode.CONTROLLER),
        )
    else:
        report.ok("networks", f"all {len(managed)} managed network(s) present on the controller")


def _check_lock(engine: Engine, report: CheckReport) -> None:
    try:
        check_run_lock(engine, owner=run_owner("check"))
    except ZtctlError as exc:
        report.failed("lock", exc)
        return
    report.ok("lock", "free")
