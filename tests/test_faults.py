"""Controller faults and portal database failures during ``ztctl reconcile``, on SQLite and PostgreSQL.

Each test injects one fault into the emulator, or breaks the portal
connection, while reconcile repairs the drifted scenario. It checks the exit
status and that nothing was lost. Then it clears the fault and checks that a
normal run converges and that the run after it sends no writes.

The drifted scenario makes these writes, in this order: expire deauthorizes
b2c3d4e5f6, then repair authorizes c3d4e5f6a7, deauthorizes e5f6a7b8c9 and
preauthorizes d4e5f6a7b8, all on the engineering network.
"""

from __future__ import annotations

import importlib
import logging
import re
import sqlite3
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa
from scenario import (
    ENGINEERING,
    EXPECTED_AFTER,
    LAB,
    Workspace,
    authorization,
    drift_portal,
    seed_drift_controller,
    writes,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import ztctl.engine.apply
from ztctl.controller.emulator import ControllerEmulator, Fault
from ztctl.controller.zerotier_one_api import ZeroTierOneApi
from ztctl.errors import ExitCode

RETRIES = 2
TIMEOUT_SECONDS = 0.5
"""controller.timeout in these tests, in seconds. A response delayed longer than this times out."""
DELAY_SECONDS = 1.0
RESENT_DELAY_SECONDS = 1.5
WAIT_SECONDS = 15.0
"""Upper bound for waiting on a condition, such as a delayed request reaching the emulator."""

MEMBER_PATH = rf"/controller/network/{ENGINEERING}/member/[0-9a-f]{{10}}"
BULK_LIST_PATH = f"/unstable/controller/network/{ENGINEERING}/member"
BOB, CAROL, DAVE, ERIN = "b2c3d4e5f6", "c3d4e5f6a7", "d4e5f6a7b8", "e5f6a7b8c9"


def member_path(node_id: str) -> str:
    return f"/controller/network/{ENGINEERING}/member/{node_id}"


class FastWorkspace(Workspace):
    """A workspace whose controller settings keep retries and timeouts short."""

    def write_config(self, extra: str = "") -> None:
        self.config.write_text(
            f"database:\n  url: {self.database_url}\n"
            f"controller:\n  url: {self.emulator.url}\n  retries: {RETRIES}\n"
            f"  timeout: {TIMEOUT_SECONDS}\n  connect_timeout: 1\n{extra}",
            encoding="utf-8",
        )

    def run(self, *args: str, input: str | None = None):
        try:
            return super().run(*args, input=input)
        finally:
            # The CLI's log handler writes to the runner's stream, which is closed
            # now. The emulator would log to it when the test stops the emulator.
            root = logging.getLogger()
            for handler in list(root.handlers):
                if getattr(handler, "_ztctl", False):
                    root.removeHandler(handler)


@pytest.fixture
def workspace(tmp_path, portal_url, emulator):
    seed_drift_controller(emulator)
    space = FastWorkspace(tmp_path, portal_url, emulator)
    space.load(drift_portal(datetime.now(UTC)))
    emulator.clear_requests()
    return space


# Helpers --------------------------------------------------------------------


def query(workspace: Workspace, sql: str) -> list[tuple]:
    url = workspace.database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql)).all()]
    finally:
        engine.dispose()


def last_run(workspace: Workspace) -> tuple:
    """Return (command, exit_code, error) of the newest row in ``runs``."""
    return query(workspace, "SELECT command, exit_code, error FROM runs ORDER BY id DESC LIMIT 1")[0]


def outcomes(workspace: Workspace) -> list[tuple]:
    """Return (stage, node_id, action, outcome) of every audit entry of the newest run."""
    return query(
        workspace,
        "SELECT stage, node_id, action, outcome FROM audit_log "
        "WHERE run_id = (SELECT max(id) FROM runs) ORDER BY id",
    )


def open_activations(workspace: Workspace, node_id: str) -> int:
    rows = query(
        workspace,
        "SELECT count(*) FROM activations JOIN memberships ON memberships.id = activations.membership_id "
        f"WHERE memberships.node_id = '{node_id}' AND activations.ended_at IS NULL",
    )
    return rows[0][0]


def statuses(emulator: ControllerEmulator, method: str, path: str) -> list[int]:
    """Return the status the emulator sent for each matching request, 0 for a reset or a cut response."""
    return [request.status for request in emulator.requests if request.method == method and request.path == path]


def wait_for_requests(emulator: ControllerEmulator, method: str, path: str, count: int) -> None:
    """Wait until the emulator has logged ``count`` such requests. It logs a delayed request once the delay is over."""
    deadline = time.monotonic() + WAIT_SECONDS
    while len(statuses(emulator, method, path)) < count:
        if time.monotonic() > deadline:
            seen = statuses(emulator, method, path)
            raise AssertionError(f"the emulator logged {len(seen)} {method} {path}, expected {count}: {seen}")
        time.sleep(0.05)


def stderr_lines_with(result, *words: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if all(word in line for word in words)]


def assert_converges(workspace: Workspace) -> None:
    """With faults cleared, one run repairs everything and the run after it writes nothing."""
    emulator = workspace.emulator
    emulator.clear_faults()

    repaired = workspace.run("reconcile")
    assert repaired.exit_code == ExitCode.OK, repaired.output
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    assert open_activations(workspace, BOB) == 0

    emulator.clear_requests()
    again = workspace.run("reconcile")
    assert again.exit_code == ExitCode.OK, again.output
    assert writes(emulator) == []


# Faults that a retry absorbs ------------------------------------------------


def test_reset_on_write_retried(workspace):
    emulator = workspace.emulator
    emulator.inject(Fault.reset(), method="POST", path=member_path(CAROL))

    result = workspace.run("-v", "reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert statuses(emulator, "POST", member_path(CAROL)) == [0, 200]
    assert stderr_lines_with(result, "retrying after", f"POST {member_path(CAROL)}")
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    assert_converges(workspace)


def test_reset_on_member_list_retried(workspace):
    emulator = workspace.emulator
    emulator.inject(Fault.reset(), method="GET", path=BULK_LIST_PATH)

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert statuses(emulator, "GET", BULK_LIST_PATH)[:2] == [0, 200]
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    assert_converges(workspace)


def test_timeout_on_write_retried(workspace):
    # The retry reads the member at most 1 s after the first POST, which is the
    # 0.5 s timeout plus at most 0.5 s of backoff, so before the delayed POST lands.
    emulator = workspace.emulator
    emulator.inject(Fault.delay(RESENT_DELAY_SECONDS), method="POST", path=member_path(CAROL))

    result = workspace.run("-v", "reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert stderr_lines_with(result, "retrying after ReadTimeout", f"POST {member_path(CAROL)}")
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    # The timed-out POST still runs once its delay is over, so the same value is written twice.
    wait_for_requests(emulator, "POST", member_path(CAROL), 2)
    assert authorization(emulator, ENGINEERING)[CAROL] is True
    assert_converges(workspace)


def test_503_retried_then_succeeds(workspace):
    emulator = workspace.emulator
    emulator.inject(Fault.status(503), method="POST", path=member_path(CAROL), times=RETRIES)

    result = workspace.run("-v", "reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert statuses(emulator, "POST", member_path(CAROL)) == [503, 503, 200]
    assert len(stderr_lines_with(result, "retrying after HTTP 503", f"POST {member_path(CAROL)}")) == RETRIES
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    assert_converges(workspace)


def test_429_retry_after_honoured(workspace):
    emulator = workspace.emulator
    emulator.inject(Fault.status(429, headers={"Retry-After": "1"}), method="POST", path=member_path(CAROL))

    result = workspace.run("-v", "reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert statuses(emulator, "POST", member_path(CAROL)) == [429, 200]
    # Without Retry-After the first wait would be the backoff of 0.25 s plus up to 0.25 s of jitter.
    retry_lines = stderr_lines_with(result, "retrying after HTTP 429", f"POST {member_path(CAROL)}")
    assert len(retry_lines) == 1
    assert retry_lines[0].endswith("in 1.00 s"), retry_lines[0]
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    assert_converges(workspace)


def test_cut_member_list_retried(workspace):
    emulator = workspace.emulator
    emulator.inject(Fault.truncate(), method="GET", path=BULK_LIST_PATH)

    result = workspace.run("-v", "reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert statuses(emulator, "GET", BULK_LIST_PATH)[:2] == [0, 200]
    assert stderr_lines_with(result, "retrying after RemoteProtocolError", BULK_LIST_PATH)
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    assert_converges(workspace)


def test_cut_write_response_not_resent(workspace):
    # The POST runs but its response is cut, so the retry reads the member back,
    # finds it authorized and does not POST again.
    emulator = workspace.emulator
    emulator.inject(Fault.truncate(), method="POST", path=member_path(CAROL))

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert statuses(emulator, "POST", member_path(CAROL)) == [0]
    assert ("repair", CAROL, "authorize", "applied") in outcomes(workspace)
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    assert_converges(workspace)


# Faults that outlast the retries: a partial failure, then convergence -------


def test_resets_past_retries_stop_network(workspace):
    emulator = workspace.emulator
    emulator.inject(Fault.reset(), method="POST", path=member_path(CAROL), times=RETRIES + 1)

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert statuses(emulator, "POST", member_path(CAROL)) == [0] * (RETRIES + 1)
    assert stderr_lines_with(result, ENGINEERING, "cannot reach the controller")
    # What came before the failure is done and recorded, and the rest waits for the next run.
    assert authorization(emulator, ENGINEERING)[BOB] is False
    assert open_activations(workspace, BOB) == 0
    assert authorization(emulator, ENGINEERING)[CAROL] is False
    assert last_run(workspace)[1] == ExitCode.PARTIAL_FAILURE
    assert_converges(workspace)


def test_timeouts_past_retries_stop_network(workspace):
    # Each write first reads the member, so delaying that read times out every
    # attempt without the write ever being sent.
    emulator = workspace.emulator
    emulator.inject(Fault.delay(DELAY_SECONDS), method="GET", path=member_path(CAROL), times=RETRIES + 1)

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert stderr_lines_with(result, ENGINEERING, "ReadTimeout")
    assert statuses(emulator, "POST", member_path(CAROL)) == []
    assert authorization(emulator, ENGINEERING)[BOB] is False
    assert authorization(emulator, ENGINEERING)[CAROL] is False
    assert last_run(workspace)[1] == ExitCode.PARTIAL_FAILURE
    wait_for_requests(emulator, "GET", member_path(CAROL), RETRIES + 1)
    assert_converges(workspace)


def test_trickled_member_read_times_out(workspace):
    # Each byte arrives well within the read timeout, but the whole response does not.
    emulator = workspace.emulator
    emulator.inject(Fault.trickle(TIMEOUT_SECONDS / 5), method="GET", path=member_path(CAROL), times=RETRIES + 1)

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert stderr_lines_with(result, ENGINEERING, f"took longer than {TIMEOUT_SECONDS:g}s")
    assert statuses(emulator, "POST", member_path(CAROL)) == []
    assert authorization(emulator, ENGINEERING)[CAROL] is False
    wait_for_requests(emulator, "GET", member_path(CAROL), RETRIES + 1)
    emulator.clear_faults()
    assert_converges(workspace)


def test_timed_out_write_landed_not_resent(workspace):
    # Every POST times out, but the first lands while the client backs off,
    # so a later attempt reads the member back as authorized and stops there.
    emulator = workspace.emulator
    emulator.inject(Fault.delay(DELAY_SECONDS), method="POST", path=member_path(CAROL), times=RETRIES + 1)

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert ("repair", CAROL, "authorize", "applied") in outcomes(workspace)
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    wait_for_requests(emulator, "POST", member_path(CAROL), 1)
    posts = statuses(emulator, "POST", member_path(CAROL))
    assert len(posts) < RETRIES + 1, posts
    assert_converges(workspace)


def test_503_past_retries_fails_one_action(workspace):
    emulator = workspace.emulator
    emulator.inject(Fault.status(503), method="POST", path=member_path(CAROL), times=RETRIES + 1)

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert statuses(emulator, "POST", member_path(CAROL)) == [503] * (RETRIES + 1)
    assert f"returned HTTP 503 after {RETRIES + 1} attempts" in result.output
    # A failed action does not stop the others on the network.
    recorded = outcomes(workspace)
    assert ("repair", CAROL, "authorize", "failed") in recorded
    assert ("repair", ERIN, "deauthorize", "applied") in recorded
    assert ("repair", DAVE, "preauthorize", "applied") in recorded
    assert authorization(emulator, ENGINEERING)[CAROL] is False
    assert_converges(workspace)


def test_429_past_retries_fails_one_action(workspace):
    emulator = workspace.emulator
    emulator.inject(
        Fault.status(429, headers={"Retry-After": "1"}), method="POST", path=member_path(CAROL), times=RETRIES + 1
    )

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert statuses(emulator, "POST", member_path(CAROL)) == [429] * (RETRIES + 1)
    assert ("repair", CAROL, "authorize", "failed") in outcomes(workspace)
    assert_converges(workspace)


def test_invalid_json_member_list_fails_network(workspace):
    # The response is complete but its JSON is cut short, so the network cannot
    # be read. Nothing on it changes, and the other network is still processed.
    emulator = workspace.emulator
    whole = '[{"id": "a1b2c3d4e5", "nwid": "' + ENGINEERING + '", "authorized": true, "revision": 1}]'
    cut = whole[: len(whole) // 2]
    emulator.inject(
        Fault.status(200, cut, headers={"Content-Type": "application/json"}),
        method="GET", path=BULK_LIST_PATH, times=100,
    )
    before = authorization(emulator, ENGINEERING)

    result = workspace.run("--output", "json", "reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "not JSON" in result.stderr
    assert authorization(emulator, ENGINEERING) == before
    assert writes(emulator) == []
    # The expiry is not lost, because the activation stays open until the network can be read.
    assert open_activations(workspace, BOB) == 1
    assert any(request.path == f"/unstable/controller/network/{LAB}/member" for request in emulator.requests)
    assert_converges(workspace)


def test_invalid_json_write_response_fails_action(workspace):
    # The fault responds in place of the controller, so the POST never ran.
    emulator = workspace.emulator
    emulator.inject(
        Fault.status(200, '{"id": "c3d4e5f6a7", "authorized": tr', headers={"Content-Type": "application/json"}),
        method="POST", path=member_path(CAROL),
    )

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "not JSON" in result.output
    recorded = outcomes(workspace)
    assert ("repair", CAROL, "authorize", "failed") in recorded
    assert ("repair", ERIN, "deauthorize", "applied") in recorded
    assert_converges(workspace)


# The controller going away --------------------------------------------------


def test_controller_down_from_start(workspace):
    before = workspace.table_rows()
    workspace.emulator.stop()

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.CONTROLLER, result.output
    assert "cannot reach the controller" in result.stderr
    # The controller is probed before the run is recorded, so the portal is untouched.
    assert workspace.table_rows() == before

    workspace.emulator.start()
    workspace.write_config()
    assert_converges(workspace)


def stop_after_first_write(monkeypatch, emulator: ControllerEmulator) -> None:
    """Stop the emulator as soon as the first POST to a member has returned."""
    original = ZeroTierOneApi.post_member

    def post_then_stop(self, *args, **kwargs):
        member = original(self, *args, **kwargs)
        monkeypatch.setattr(ZeroTierOneApi, "post_member", original)
        emulator.stop()
        return member

    monkeypatch.setattr(ZeroTierOneApi, "post_member", post_then_stop)


def test_controller_stops_after_first_write(workspace, monkeypatch):
    emulator = workspace.emulator
    stop_after_first_write(monkeypatch, emulator)

    result = workspace.run("--output", "json", "reconcile")

    # Part of the job was done before the controller went away, so this is a
    # partial failure (5), not "unreachable" (4), and the report lists what was done.
    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "cannot reach the controller" in result.stderr
    assert BOB in result.stdout
    assert authorization(emulator, ENGINEERING)[BOB] is False
    assert open_activations(workspace, BOB) == 0
    assert ("expire", BOB, "expire", "applied") in outcomes(workspace)

    emulator.start()
    workspace.write_config()
    assert_converges(workspace)


def test_controller_stops_during_repair(workspace, monkeypatch):
    emulator = workspace.emulator
    original = ztctl.engine.apply.send_action

    def send_then_stop(client, finding):
        member = original(client, finding)
        monkeypatch.setattr(ztctl.engine.apply, "send_action", original)
        # Networks are read in parallel. The lab network's read failing is the
        # case of the test above, so this one stops the controller once it is done.
        deadline = time.monotonic() + WAIT_SECONDS
        while not statuses(emulator, "GET", f"/unstable/controller/network/{LAB}/member"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        emulator.stop()
        return member

    monkeypatch.setattr(ztctl.engine.apply, "send_action", send_then_stop)

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert stderr_lines_with(result, ENGINEERING, "cannot reach the controller")
    assert ("repair", CAROL, "authorize", "applied") in outcomes(workspace)
    assert authorization(emulator, ENGINEERING)[CAROL] is True
    assert authorization(emulator, ENGINEERING)[ERIN] is True
    assert last_run(workspace)[1] == ExitCode.PARTIAL_FAILURE

    emulator.start()
    workspace.write_config()
    assert_converges(workspace)


# The portal database failing mid-run ----------------------------------------


def terminate_postgres_sessions(database_url: str) -> None:
    """End every session on the test's own database, as a server restart or an administrator would."""
    url = make_url(database_url)
    database = url.database
    assert database and database.startswith("ztctl_test_"), f"refusing to end sessions on {database}"
    admin_url = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        deadline = time.monotonic() + WAIT_SECONDS
        while connection.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchone()[0]:
            assert time.monotonic() < deadline, f"sessions on {database} did not end"
            time.sleep(0.05)


def fail_next_commit(monkeypatch) -> None:
    """Make this thread's next ORM commit fail the way SQLite does when its disk fails.

    Networks are processed on several threads, and only the commit that
    records this thread's write must fail.
    """
    original = Session.commit
    thread = threading.get_ident()

    def failing_commit(self):
        if threading.get_ident() != thread:
            return original(self)
        monkeypatch.setattr(Session, "commit", original)
        self.rollback()
        raise sa.exc.OperationalError("COMMIT", None, sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(Session, "commit", failing_commit)


def test_portal_fails_after_write(workspace, monkeypatch):
    emulator = workspace.emulator
    original = ztctl.engine.apply.send_action
    written = []

    def send_then_break_portal(client, finding):
        member = original(client, finding)
        monkeypatch.setattr(ztctl.engine.apply, "send_action", original)
        written.append(finding.node_id)
        if workspace.database_url.startswith("postgresql"):
            terminate_postgres_sessions(workspace.database_url)
        else:
            fail_next_commit(monkeypatch)
        return member

    monkeypatch.setattr(ztctl.engine.apply, "send_action", send_then_break_portal)

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "portal database failed" in result.stderr
    assert written == [CAROL]
    assert authorization(emulator, ENGINEERING)[CAROL] is True
    # The change is on the controller. Either the audit log has it (on
    # PostgreSQL the recording can take a fresh connection) or the log names
    # it, because the log is then the only record that ztctl made it.
    unrecorded = [
        line for line in result.stderr.splitlines()
        if CAROL in line and re.search(r"applied on the controller|not recorded", line)
    ]
    recorded = ("repair", CAROL, "authorize", "applied") in outcomes(workspace)
    assert recorded or unrecorded, result.stderr
    assert last_run(workspace)[1] == ExitCode.PARTIAL_FAILURE
    assert_converges(workspace)


# Responses that contradict each other, and writes whose result is not known ---------


def test_contradicting_member_404_not_trusted(workspace):
    # The member list shows bob and erin authorized, but reading either one
    # alone returns 404. Trusting the 404 would end bob's activation and leave
    # both on the network, run after run, with exit status 0.
    emulator = workspace.emulator
    for node in (BOB, ERIN):
        emulator.inject(Fault.status(404, b"{}"), method="GET", path=member_path(node), times=100)

    first = workspace.run("reconcile")
    second = workspace.run("reconcile")

    for result in (first, second):
        assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
        assert "contradict each other" in result.stderr
    assert open_activations(workspace, BOB) == 1
    assert authorization(emulator, ENGINEERING)[BOB] is True
    assert ("expire", BOB, "expire", "failed") in outcomes(workspace)
    assert ("repair", ERIN, "deauthorize", "failed") in outcomes(workspace)
    assert_converges(workspace)


def test_unusable_write_response_read_back(workspace):
    emulator = workspace.emulator
    emulator.inject(Fault.empty_body(), method="POST", path=member_path(CAROL))

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert ("repair", CAROL, "authorize", "applied") in outcomes(workspace)
    detail = query(
        workspace, f"SELECT detail FROM audit_log WHERE node_id = '{CAROL}' AND action = 'authorize'"
    )[0][0]
    assert "reading the member back shows the change" in detail
    assert_converges(workspace)


def test_interrupted_write_settled_next_run(workspace, monkeypatch):
    # The run stops right after its write to carol reached the controller and
    # before it could record the outcome, as a kill would stop it.
    original = ztctl.engine.apply.send_action

    def send_then_stop(client, finding):
        original(client, finding)
        raise KeyboardInterrupt

    monkeypatch.setattr(ztctl.engine.apply, "send_action", send_then_stop)
    stopped = workspace.run("reconcile")
    monkeypatch.setattr(ztctl.engine.apply, "send_action", original)
    pending = query(workspace, "SELECT run_id, node_id, action FROM audit_log WHERE outcome = 'pending'")

    following = workspace.run("reconcile")

    assert stopped.exit_code == ExitCode.INTERRUPTED, stopped.output
    assert [(node, action) for _, node, action in pending] == [(CAROL, "authorize")]
    assert following.exit_code == ExitCode.OK, following.output
    settled = query(
        workspace, f"SELECT outcome, detail FROM audit_log WHERE run_id = {pending[0][0]} AND node_id = '{CAROL}'"
    )
    assert settled[0][0] == "applied", settled
    assert "stopped while this write was in flight" in settled[0][1]
    assert query(workspace, "SELECT count(*) FROM audit_log WHERE outcome = 'pending'")[0][0] == 0
    assert_converges(workspace)


def test_grant_during_expiry_write_survives(workspace, monkeypatch):
    # While bob's deauthorization is in flight, the portal extends his
    # activation by eight hours. The extension must stand, and the same
    # run's repair gives bob his access back.
    expire_module = importlib.import_module("ztctl.engine.expire")
    original = expire_module.revoke_with_fresh_revision
    later = datetime.now(UTC) + timedelta(hours=8)
    if workspace.database_url.startswith("sqlite"):
        later = later.replace(tzinfo=None)  # stored as naive UTC there

    def revoke_then_extend(finding, deauthorize):
        member = original(finding, deauthorize)
        workspace.sql(
            "UPDATE activations SET expires_at = :later WHERE membership_id = "
            "(SELECT id FROM memberships WHERE node_id = :node)",
            later=later, node=BOB,
        )
        return member

    monkeypatch.setattr(expire_module, "revoke_with_fresh_revision", revoke_then_extend)
    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert open_activations(workspace, BOB) == 1
    assert query(workspace, f"SELECT state FROM memberships WHERE node_id = '{BOB}'")[0][0] == "active"
    assert authorization(workspace.emulator, ENGINEERING)[BOB] is True
    assert "granted access again" in result.stderr


def test_revocation_goes_on_when_revisions_move(workspace, monkeypatch):
    # Every single read of a member reports one revision more than the member
    # list did. Skipping each revocation as "changed since plan" would leave
    # erin on the network on every run. The portal still denies her access,
    # so the deauthorization is sent against the newer revision.
    from ztctl.controller.base import ControllerMember
    from ztctl.controller.zerotier_one import ZeroTierOneClient

    original = ZeroTierOneClient._read_member_once

    def read_ahead(self, network_id, node_id):
        member = original(self, network_id, node_id)
        if member is None or not member.authorized:
            return member
        return replace(member, revision=member.revision + 1) if isinstance(member, ControllerMember) else member

    monkeypatch.setattr(ZeroTierOneClient, "_read_member_once", read_ahead)
    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert authorization(workspace.emulator, ENGINEERING)[ERIN] is False
    assert authorization(workspace.emulator, ENGINEERING)[BOB] is False
    assert ("repair", ERIN, "deauthorize", "applied") in outcomes(workspace)


def test_revocation_fails_when_revisions_keep_moving(workspace, monkeypatch):
    # Each read reports a newer revision than the one before, so even the
    # second attempt finds the member changed: the revocation fails, exit 5.
    from ztctl.controller.zerotier_one import ZeroTierOneClient

    original = ZeroTierOneClient._read_member_once
    reads = {"count": 0}

    def read_ever_newer(self, network_id, node_id):
        member = original(self, network_id, node_id)
        if member is None or not member.authorized:
            return member
        reads["count"] += 1
        return replace(member, revision=member.revision + reads["count"])

    monkeypatch.setattr(ZeroTierOneClient, "_read_member_once", read_ever_newer)
    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "kept changing while it was being deauthorized" in result.stderr
    assert authorization(workspace.emulator, ENGINEERING)[ERIN] is True
    assert ("repair", ERIN, "deauthorize", "failed") in outcomes(workspace)


def test_interrupted_write_not_sent_settled_as_failed(workspace, monkeypatch):
    # The run stops after recording carol's write as pending but before sending it.
    def stop_before_sending(client, finding):
        raise KeyboardInterrupt

    monkeypatch.setattr(ztctl.engine.apply, "send_action", stop_before_sending)
    stopped = workspace.run("reconcile")
    monkeypatch.undo()
    following = workspace.run("reconcile")

    settled = query(workspace, f"SELECT outcome, detail FROM audit_log WHERE node_id = '{CAROL}' ORDER BY id LIMIT 1")
    assert stopped.exit_code == ExitCode.INTERRUPTED, stopped.output
    assert following.exit_code == ExitCode.OK, following.output
    assert settled[0][0] == "failed", settled
    assert "so the write was not made by then" in settled[0][1]


def test_pending_write_kept_while_member_unreadable(workspace, monkeypatch):
    def stop_before_sending(client, finding):
        raise KeyboardInterrupt

    monkeypatch.setattr(ztctl.engine.apply, "send_action", stop_before_sending)
    workspace.run("reconcile")
    monkeypatch.undo()
    # The settling read fails, as do the later reads of carol in this run.
    workspace.emulator.inject(Fault.status(500, b'{"error": 500}'), method="GET", path=member_path(CAROL), times=20)
    following = workspace.run("reconcile")

    assert "could not yet learn what became of run" in following.stderr
    assert query(workspace, f"SELECT outcome FROM audit_log WHERE node_id = '{CAROL}' ORDER BY id LIMIT 1") == [
        ("pending",)
    ]
    # The rest of the run went on: erin's deauthorization was made.
    assert authorization(workspace.emulator, ENGINEERING)[ERIN] is False
