"""``ztctl reconcile`` and friends over real HTTP against the emulator, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from scenario import (
    ENGINEERING,
    EXPECTED_AFTER,
    LAB,
    UNMANAGED,
    Workspace,
    authorization,
    authorized,
    drift_portal,
    member_path,
    member_states,
    seed_drift_controller,
    writes,
)

from ztctl.errors import ExitCode


@pytest.fixture
def emulator(any_emulator):
    """Each test runs against zerotier-one's API and against ZeroTier Central's."""
    return any_emulator

@pytest.fixture
def workspace(tmp_path, portal_url, emulator):
    seed_drift_controller(emulator)
    space = Workspace(tmp_path, portal_url, emulator)
    space.load(drift_portal(datetime.now(UTC)))
    emulator.clear_requests()
    return space


def test_reconcile_repairs_every_drift_kind(workspace):
    emulator = workspace.emulator
    unmanaged_before = member_states(emulator, UNMANAGED)
    lab_before = member_states(emulator, LAB)

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert authorization(emulator, ENGINEERING) == EXPECTED_AFTER
    assert member_states(emulator, UNMANAGED) == unmanaged_before
    assert member_states(emulator, LAB) == lab_before
    assert not any(UNMANAGED in line or LAB in line for line in writes(emulator))


def test_reconcile_writes_only_what_drifted(workspace):
    workspace.run("reconcile")
    written = sorted(writes(workspace.emulator))
    expected = sorted(
        f"POST {member_path(workspace.emulator, ENGINEERING, node)}"
        for node in ("b2c3d4e5f6", "c3d4e5f6a7", "d4e5f6a7b8", "e5f6a7b8c9")
    )
    assert written == expected


def test_second_reconcile_changes_nothing(workspace):
    first = workspace.run("reconcile")
    assert first.exit_code == ExitCode.OK, first.output
    workspace.emulator.clear_requests()

    second = workspace.run("reconcile")

    assert second.exit_code == ExitCode.OK, second.output
    assert writes(workspace.emulator) == []
    assert second.stdout == ""


def test_diff_after_reconcile_shows_only_unknown(workspace):
    workspace.run("reconcile")
    code, document = workspace.run_json("diff")
    pending = [f for s in document["stages"] for n in s["networks"] for f in n["findings"] if f["pending"]]
    # Under the default report policy the member authorized by hand stays,
    # and stays pending, until someone adds it to the portal.
    assert code == ExitCode.CHANGES_PENDING
    assert [(f["node"], f["kind"]) for f in pending] == [("0badc0ffee", "unknown")]


def test_diff_after_reconcile_is_clean(workspace):
    workspace.write_config("policies:\n  unknown:\n    action: deauthorize\n    grace: 0s\n")
    workspace.run("reconcile")
    result = workspace.run("diff")
    assert result.exit_code == ExitCode.OK, result.output
    assert "engineering): in line with the portal" not in result.stdout
    assert "0badc0ffee" in result.stdout


def test_diff_shows_drift_and_exits_1(workspace):
    result = workspace.run("diff")
    assert result.exit_code == ExitCode.CHANGES_PENDING, result.output
    out = result.stdout
    for node in ("b2c3d4e5f6", "c3d4e5f6a7", "d4e5f6a7b8", "e5f6a7b8c9", "b41d9e0001", "0badc0ffee"):
        assert node in out
    assert "authorized-not-active" in out
    assert "active-not-authorized" in out
    assert "active-missing" in out
    assert "protected" in out
    assert "unknown" in out
    assert "alice" not in out  # in line, so no row
    assert writes(workspace.emulator) == []


def test_diff_json_document(workspace):
    code, document = workspace.run_json("diff")
    assert code == ExitCode.CHANGES_PENDING
    assert document["command"] == "diff"
    assert document["mode"] == "dry-run"
    assert document["exit_code"] == 1
    assert document["error"] is None
    findings = [f for stage in document["stages"] for n in stage["networks"] for f in n["findings"]]
    by_node = {f["node"]: f for f in findings}
    assert by_node["d4e5f6a7b8"]["action"] == "preauthorize"
    assert by_node["e5f6a7b8c9"]["action"] == "deauthorize"
    assert by_node["c3d4e5f6a7"]["action"] == "authorize"
    assert by_node["b41d9e0001"]["action"] is None
    assert by_node["0badc0ffee"]["kind"] == "unknown"


def test_reconcile_json_counts(workspace):
    code, document = workspace.run_json("reconcile")
    assert code == ExitCode.OK
    counts = document["counts"]
    assert counts["expired_activations"] == 1
    assert counts["networks_processed"] == 2
    assert counts["authorized"] == 2
    assert counts["deauthorized"] == 2
    assert counts["deleted_memberships"] == 0
    assert counts["delete_errors"] == 0
    assert counts["errors"] == 0
    assert counts["unknown_members"] == 2
    assert document["run_id"] is not None


def test_expire_ends_activation_in_portal(workspace):
    result = workspace.run("expire")
    assert result.exit_code == ExitCode.OK, result.output
    assert authorization(workspace.emulator, ENGINEERING)["b2c3d4e5f6"] is False
    dump = workspace.run("portal", "dump").stdout
    bob = dump.split("node: 'b2c3d4e5f6'")[1].split("- node")[0] if "node: 'b2c3d4e5f6'" in dump else dump
    assert "state: inactive" in bob


def test_preauthorized_member_named_from_portal(workspace):
    workspace.run("reconcile")
    created = workspace.emulator.get_member(ENGINEERING, "d4e5f6a7b8")
    assert authorized(created) is True
    assert created["name"] == "dave-tablet"


def test_diff_apply_needs_yes_without_terminal(workspace):
    result = workspace.run("diff", "--apply")
    assert result.exit_code == ExitCode.USAGE
    assert "--yes" in result.stderr
    assert writes(workspace.emulator) == []


def test_diff_apply_yes_repairs(workspace):
    result = workspace.run("diff", "--apply", "--yes")
    assert result.exit_code == ExitCode.OK, result.output
    state = authorization(workspace.emulator, ENGINEERING)
    assert state["c3d4e5f6a7"] is True
    assert state["e5f6a7b8c9"] is False
    assert result.stdout.count("2 authorized, 2 deauthorized") == 1, result.stdout


def test_repair_then_unknown(workspace):
    assert workspace.run("repair").exit_code == ExitCode.OK
    result = workspace.run("unknown")
    assert result.exit_code == ExitCode.OK, result.output


def test_unknown_policy_deauthorize(workspace):
    workspace.write_config("policies:\n  unknown:\n    action: deauthorize\n    grace: 0s\n")
    result = workspace.run("unknown")
    assert result.exit_code == ExitCode.OK, result.output
    assert authorization(workspace.emulator, ENGINEERING)["0badc0ffee"] is False


def test_unknown_flagged_in_cache(workspace):
    workspace.run("reconcile")
    engine = sa.create_engine(workspace.database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT node_id FROM zerotier_memberships WHERE unknown_since IS NOT NULL ORDER BY node_id")
        ).scalars().all()
    engine.dispose()
    assert rows == ["0000dead01", "0badc0ffee"]


def test_missing_network_is_error_for_that_network_only(workspace):
    workspace.emulator.delete_network(LAB)
    result = workspace.run("reconcile")
    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert LAB in result.stdout
    assert "not on the controller" in result.stdout
    assert authorization(workspace.emulator, ENGINEERING) == EXPECTED_AFTER


def test_sync_writes_cache(workspace):
    result = workspace.run("sync", "-v")
    assert result.exit_code == ExitCode.OK, result.output
    rows = workspace.table_rows()["zerotier_memberships"]
    assert len(rows) == 8 + 1  # engineering's members and lab's one


def test_failed_write_keeps_activation_open_and_retries(workspace):
    from ztctl.controller.emulator import Fault

    workspace.emulator.inject(
        Fault.status(500, b'{"error": 500, "description": "disk full"}'),
        method="POST", path=member_path(workspace.emulator, ENGINEERING, "b2c3d4e5f6"), times=5,
    )
    first = workspace.run("expire")
    assert first.exit_code == ExitCode.PARTIAL_FAILURE, first.output
    assert authorization(workspace.emulator, ENGINEERING)["b2c3d4e5f6"] is True
    workspace.emulator.clear_faults()

    second = workspace.run("expire")
    assert second.exit_code == ExitCode.OK, second.output
    assert authorization(workspace.emulator, ENGINEERING)["b2c3d4e5f6"] is False


def test_second_run_rewrites_no_rows(workspace):
    assert workspace.run("reconcile").exit_code == ExitCode.OK
    before = workspace.table_rows()

    result = workspace.run("reconcile")

    after = workspace.table_rows()
    changed = sorted(name for name in after if after[name] != before[name])
    assert result.exit_code == ExitCode.OK, result.output
    # Only the run's own record is written.
    assert changed == ["runs"]


def test_networks_read_in_one_request(workspace):
    workspace.run("reconcile")
    workspace.emulator.clear_requests()

    workspace.run("reconcile")

    single_network_reads = [
        r for r in workspace.emulator.requests
        if r.method == "GET" and r.path.rstrip("/").endswith((ENGINEERING, LAB))
    ]
    assert single_network_reads == []
