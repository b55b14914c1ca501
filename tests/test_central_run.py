"""A whole run against the Central emulator stays within the configured request rate."""

from __future__ import annotations

from datetime import UTC, datetime

from scenario import (
    ENGINEERING,
    EXPECTED_AFTER,
    Workspace,
    authorization,
    drift_portal,
    seed_drift_controller,
)

from ztctl.controller.emulator import CentralEmulator
from ztctl.errors import ExitCode

RATE = 5


def busiest_second(times: list[float]) -> int:
    """Return the most requests that arrived within any one-second window."""
    ordered = sorted(times)
    busiest = 0
    start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest


def test_run_keeps_configured_rate(tmp_path):
    emulator = CentralEmulator(token="central-test-token", rate_limit=20).start()
    try:
        seed_drift_controller(emulator)
        space = Workspace(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", emulator)
        space.env["ZTCTL_CONTROLLER_TOKEN"] = "central-test-token"
        space.load(drift_portal(datetime.now(UTC)))
        config = space.config.read_text(encoding="utf-8").replace("  rate: 100\n", f"  rate: {RATE}\n")
        space.config.write_text(config, encoding="utf-8")
        emulator.clear_requests()

        result = space.run("reconcile")

        times = emulator.request_times
        assert result.exit_code == ExitCode.OK, result.output
        assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
        assert len(times) > 2 * RATE
        assert busiest_second(times) <= RATE
        assert not [request for request in emulator.requests if request.status == 429]
    finally:
        emulator.stop()


def test_diff_shows_last_seen_without_acting_on_it(tmp_path):
    emulator = CentralEmulator(token="central-test-token", rate_limit=None).start()
    try:
        seed_drift_controller(emulator)
        # A long-silent member that the portal wants on: being unseen must not stop its authorization.
        emulator.put_member(ENGINEERING, "c3d4e5f6a7", last_seen_ms=1_600_000_000_000, physical_address="198.51.100.7")
        space = Workspace(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", emulator)
        space.env["ZTCTL_CONTROLLER_TOKEN"] = "central-test-token"
        space.load(drift_portal(datetime.now(UTC)))

        diff = space.run("diff")
        reconcile = space.run("reconcile")

        assert diff.exit_code == ExitCode.CHANGES_PENDING
        assert "Last seen" in diff.stdout
        assert "2020-09-13 12:26Z" in diff.stdout
        assert "198.51.100.7" in diff.stdout
        assert reconcile.exit_code == ExitCode.OK, reconcile.output
        assert authorization(emulator, ENGINEERING)["c3d4e5f6a7"] is True
    finally:
        emulator.stop()


def test_run_reports_requests_used(tmp_path):
    emulator = CentralEmulator(token="central-test-token", rate_limit=None).start()
    try:
        seed_drift_controller(emulator)
        space = Workspace(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", emulator)
        space.env["ZTCTL_CONTROLLER_TOKEN"] = "central-test-token"
        space.load(drift_portal(datetime.now(UTC)))
        emulator.clear_requests()

        code, document = space.run_json("reconcile")

        assert code == ExitCode.OK
        assert document["requests"]["total"] == len(emulator.requests)
        assert document["requests"]["retries"] == 0
        assert sum(document["requests"]["by_kind"].values()) == document["requests"]["total"]
    finally:
        emulator.stop()


def test_check_fails_for_token_that_may_only_read(tmp_path):
    emulator = CentralEmulator(token="central-test-token", rate_limit=None, read_only_token=True).start()
    try:
        seed_drift_controller(emulator)
        space = Workspace(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", emulator)
        space.env["ZTCTL_CONTROLLER_TOKEN"] = "central-test-token"
        space.load(drift_portal(datetime.now(UTC)))

        code, document = space.run_json("check")
        emulator.token_can_write = True
        allowed, _ = space.run_json("check")
    finally:
        emulator.stop()

    row = next(row for row in document["checks"] if row["check"] == "networks")
    assert code == ExitCode.CONTROLLER, document
    assert "may read but not change" in row["detail"]
    assert ENGINEERING in row["detail"]
    assert allowed == ExitCode.OK
