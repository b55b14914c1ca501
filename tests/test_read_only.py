"""A dry run writes nothing anywhere, and an audit writes only its own record, whatever the command."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from scenario import (
    Workspace,
    drift_portal,
    member_states,
    seed_drift_controller,
    writes,
)

from ztctl.errors import ExitCode

COMMANDS = [
    ["reconcile"],
    ["expire"],
    ["sync"],
    ["diff"],
    ["diff", "--apply", "--yes"],
    ["repair"],
    ["unknown"],
]



@pytest.fixture
def emulator(any_emulator):
    """Each test runs against zerotier-one's API and against ZeroTier Central's."""
    return any_emulator

@pytest.fixture
def workspace(tmp_path, portal_url, emulator):
    seed_drift_controller(emulator)
    space = Workspace(tmp_path, portal_url, emulator)
    space.load(drift_portal(datetime.now(UTC)))
    # Make every policy want to act, so that a leak of any kind of write would show.
    space.write_config(
        "policies:\n  purge_after: 0s\n  unknown:\n    action: delete\n    grace: 0s\n"
    )
    emulator.clear_requests()
    return space


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("position", ["before", "after"])
def test_dry_run_writes_nothing(workspace, command, position):
    before = workspace.table_rows()
    members_before = member_states(workspace.emulator, "3233204505122666")
    args = ["--dry-run", *command] if position == "before" else [*command, "--dry-run"]

    result = workspace.run(*args)

    assert writes(workspace.emulator) == []
    assert member_states(workspace.emulator, "3233204505122666") == members_before
    assert workspace.table_rows() == before
    if "--apply" in command:
        # --apply contradicts --dry-run, so the command stops before it reads anything.
        assert result.exit_code == ExitCode.USAGE, result.output
        assert "cannot be combined with --dry-run" in result.stderr
    else:
        assert result.exit_code == ExitCode.CHANGES_PENDING, result.output
        assert "dry run" in result.stdout


def test_dry_run_portal_load_writes_nothing(workspace, tmp_path):
    before = workspace.table_rows()
    changed = tmp_path / "changed.yaml"
    changed.write_text(drift_portal(datetime.now(UTC)).replace("state: inactive", "state: active"), encoding="utf-8")

    result = workspace.run("--dry-run", "portal", "load", str(changed))

    assert result.exit_code == ExitCode.CHANGES_PENDING, result.output
    assert "dry run" in result.stdout
    assert workspace.table_rows() == before


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[0] != "sync" and "--apply" not in c], ids=" ".join)
def test_audit_writes_only_run_and_audit_log(workspace, command):
    before = workspace.table_rows()

    result = workspace.run("--audit", *command)

    assert result.exit_code == ExitCode.CHANGES_PENDING, result.output
    assert writes(workspace.emulator) == []
    after = workspace.table_rows()
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"runs", "audit_log"}
    assert len(after["runs"]) == len(before["runs"]) + 1
    assert len(after["audit_log"]) > len(before["audit_log"])


def test_dry_run_and_audit_together_is_usage_error(workspace):
    result = workspace.run("--dry-run", "--audit", "diff")
    assert result.exit_code == ExitCode.USAGE
    assert "cannot be used together" in result.stderr
