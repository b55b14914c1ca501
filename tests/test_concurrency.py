"""Overlapping and killed runs, as real ``ztctl`` processes, on SQLite and PostgreSQL.

Cron starts a run every minute or two, so runs overlap. The run lock must let
exactly one of them act. A second run exits 6 naming the holder, or waits for
it when given ``--wait``. A run killed with SIGKILL must not leave a lock
behind. The emulator runs in the test process and slows every write, so that
the runs overlap for seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from scenario import (
    ENGINEERING,
    EXPECTED_AFTER,
    Workspace,
    authorization,
    drift_portal,
    seed_drift_controller,
    writes,
)

from ztctl.controller.emulator import ControllerEmulator, Fault
from ztctl.errors import ExitCode

REPO_ROOT = Path(__file__).resolve().parent.parent
WRITE_DELAY_SECONDS = 1.0
"""Delay of every member POST. The drifted scenario makes 4 writes, so a run holds the lock for 4 s or more."""
PROCESS_TIMEOUT_SECONDS = 90
WAIT_SECONDS = 30.0

SLOW_WRITE_SECONDS = 3.0
"""Delay of the one slow write in the tests that start a second run during it; longer than a ztctl start-up."""

ANY_MEMBER_PATH = rf"/controller/network/{ENGINEERING}/member/[0-9a-f]{{10}}"
CAROL_PATH = f"/controller/network/{ENGINEERING}/member/c3d4e5f6a7"
EXPECTED_WRITES = Counter(
    f"POST /controller/network/{ENGINEERING}/member/{node}"
    for node in ("b2c3d4e5f6", "c3d4e5f6a7", "e5f6a7b8c9", "d4e5f6a7b8")
)


@dataclass
class Finished:
    pid: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def document(self) -> dict:
        return json.loads(self.stdout)

    @property
    def stderr_text(self) -> str:
        """stderr on one line, so a message that Rich wrapped at the terminal width can be searched."""
        return " ".join(self.stderr.split())


@pytest.fixture
def workspace(tmp_path, portal_url, emulator):
    seed_drift_controller(emulator)
    space = Workspace(tmp_path, portal_url, emulator)
    space.load(drift_portal(datetime.now(UTC)))
    emulator.clear_requests()
    emulator.inject(Fault.delay(WRITE_DELAY_SECONDS), method="POST", path=ANY_MEMBER_PATH, times=1000)
    return space


def start(workspace: Workspace, *args: str) -> subprocess.Popen[str]:
    """Start ``python -m ztctl ARGS`` with the workspace's config and token, and nothing else from ZTCTL_*."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("ZTCTL_")}
    environment.update(workspace.environment())
    return subprocess.Popen(
        [sys.executable, "-m", "ztctl", *args],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> Finished:
    try:
        stdout, stderr = process.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"ztctl pid {process.pid} did not end in {PROCESS_TIMEOUT_SECONDS} s:\n{stderr}") from None
    return Finished(process.pid, process.returncode, stdout, stderr)


def wait_for_first_write(emulator: ControllerEmulator, process: subprocess.Popen[str]) -> None:
    """Wait until the emulator has served a member POST, which a run sends only while it holds the lock."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not writes(emulator):
        if process.poll() is not None:
            raise AssertionError(f"ztctl ended with {process.returncode} before its first write:\n{finish(process).stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no write reached the emulator within {WAIT_SECONDS} s")
        time.sleep(0.02)


def start_during_slow_write(workspace: Workspace, *args: str) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """Start a reconcile whose write to c3d4e5f6a7 is slow, and start ``ztctl ARGS`` while that write is in flight.

    A run reads the member back right before it writes it, inside the
    transaction that records the write, so once that read reaches the
    emulator the first run is in the middle of its slow write.
    """
    emulator = workspace.emulator
    emulator.clear_faults()
    emulator.inject(Fault.delay(SLOW_WRITE_SECONDS), method="POST", path=CAROL_PATH)
    first = start(workspace, "--output", "json", "reconcile")
    deadline = time.monotonic() + WAIT_SECONDS
    while not any(request.method == "GET" and request.path == CAROL_PATH for request in emulator.requests):
        if first.poll() is not None:
            raise AssertionError(f"ztctl ended with {first.returncode} before its slow write:\n{finish(first).stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the first run did not reach its slow write within {WAIT_SECONDS} s")
        time.sleep(0.02)
    return first, start(workspace, *args)


def slow_write_done(emulator: ControllerEmulator) -> bool:
    return any(request.method == "POST" and request.path == CAROL_PATH for request in emulator.requests)


def read_stderr_until(process: subprocess.Popen[str], text: str) -> list[str]:
    """Read stderr lines until one contains ``text`` or the process ends; return the lines read."""
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if text in line:
            break
    return lines


def write_counts(emulator: ControllerEmulator) -> Counter[str]:
    return Counter(writes(emulator))


def run_rows(workspace: Workspace) -> list[tuple]:
    """Return (pid, command, exit_code) of every reconcile in ``runs``, oldest first."""
    url = workspace.database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT pid, command, exit_code FROM runs WHERE command = 'reconcile' ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    return [tuple(row) for row in rows]


def test_overlapping_runs_one_acts(workspace):
    emulator = workspace.emulator

    first = start(workspace, "--output", "json", "reconcile")
    second = start(workspace, "--output", "json", "reconcile")
    results = [finish(first), finish(second)]

    # On a loaded machine the first run can finish before the second starts.
    # The second then finds nothing to do, which still leaves one run acting.
    # test_run_during_write_stops_at_lock makes the overlap certain.
    codes = sorted(result.returncode for result in results)
    assert codes in ([ExitCode.OK, ExitCode.LOCK_HELD], [ExitCode.OK, ExitCode.OK]), [r.stderr for r in results]
    acted = [r for r in results if r.returncode == ExitCode.OK and r.document["counts"]["authorized"]]
    assert len(acted) == 1, [r.document for r in results]
    winner = acted[0]
    loser = next(result for result in results if result is not winner)

    if loser.returncode == ExitCode.LOCK_HELD:
        assert "another ztctl run holds the lock" in loser.stderr_text
        assert "ztctl reconcile on" in loser.stderr_text
        assert f"pid {winner.pid}" in loser.stderr_text
        assert loser.document["error"]["type"] == "LockHeld"
        assert f"pid {winner.pid}" in loser.document["error"]["message"]
        # Only the run that held the lock is recorded.
        assert [row[0] for row in run_rows(workspace)] == [winner.pid]
    else:
        actions = ("expired_activations", "authorized", "deauthorized", "deleted_memberships")
        assert [loser.document["counts"][key] for key in actions] == [0, 0, 0, 0], loser.document["counts"]

    counts = winner.document["counts"]
    assert counts["expired_activations"] == 1
    assert counts["authorized"] == 2
    assert counts["deauthorized"] == 2
    assert counts["errors"] == 0
    assert write_counts(emulator) == EXPECTED_WRITES
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER


def test_run_during_write_stops_at_lock(workspace):
    # Whether two runs started together overlap with a write is left to
    # chance above; here the second run always starts during the first's write.
    emulator = workspace.emulator

    first, second_process = start_during_slow_write(workspace, "--output", "json", "reconcile")
    second = finish(second_process)
    write_done_before_second_ended = slow_write_done(emulator)
    first_result = finish(first)

    assert second.returncode == ExitCode.LOCK_HELD, f"the second run did not stop at the lock: {second.stderr}"
    assert f"pid {first_result.pid}" in second.stderr_text
    # A run must stop at the lock at once, not after waiting for the other run's write.
    assert not write_done_before_second_ended, "the second run ended only after the first run's slow write"
    assert first_result.returncode == ExitCode.OK, first_result.stderr
    assert write_counts(emulator) == EXPECTED_WRITES
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER


def test_waiting_run_finds_nothing_to_do(workspace):
    emulator = workspace.emulator
    waiting = "Waiting up to 30 s for the run lock"

    first, second = start_during_slow_write(workspace, "-v", "--output", "json", "reconcile", "--wait", "30")
    early_lines = read_stderr_until(second, waiting)
    write_done_before_waiting = slow_write_done(emulator)
    second_result = finish(second)
    first_result = finish(first)
    second_result.stderr = "".join(early_lines) + second_result.stderr

    assert first_result.returncode == ExitCode.OK, first_result.stderr
    assert second_result.returncode == ExitCode.OK, second_result.stderr
    assert waiting in second_result.stderr_text
    assert f"pid {first_result.pid}" in second_result.stderr_text
    # The second run must wait for the run lock, not for the first run's write to the portal.
    assert not write_done_before_waiting, "the second run started waiting only after the first run's slow write"

    counts = second_result.document["counts"]
    assert counts["expired_activations"] == 0
    assert counts["authorized"] == 0
    assert counts["deauthorized"] == 0
    assert counts["errors"] == 0
    assert first_result.document["counts"]["authorized"] == 2
    assert write_counts(emulator) == EXPECTED_WRITES
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    assert [row[0] for row in run_rows(workspace)] == [first_result.pid, second_result.pid]


def test_killed_run_leaves_no_lock(workspace):
    emulator = workspace.emulator

    victim = start(workspace, "reconcile")
    wait_for_first_write(emulator, victim)
    victim.send_signal(signal.SIGKILL)
    killed = finish(victim)
    assert killed.returncode == -signal.SIGKILL
    emulator.clear_faults()

    successor = finish(start(workspace, "--output", "json", "reconcile"))

    assert successor.returncode == ExitCode.OK, successor.stderr
    assert "holds the lock" not in successor.stderr_text
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    # The killed run was recorded when it started and never finished.
    rows = run_rows(workspace)
    assert rows[0] == (killed.pid, "reconcile", None)
    assert rows[-1] == (successor.pid, "reconcile", ExitCode.OK)

    emulator.clear_requests()
    third = finish(start(workspace, "reconcile"))
    assert third.returncode == ExitCode.OK, third.stderr
    assert writes(emulator) == []
