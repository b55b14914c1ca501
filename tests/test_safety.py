"""Safety rails: the mass-revocation guard, protected members, tombstones, bad portal rows,
the wrong controller, overdue revocations, carry-over of failures, stale plans and the time limit.

Every test runs the real CLI or engine against the emulator, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from scenario import (
    ADDRESS,
    ENGINEERING,
    EXPECTED_AFTER,
    Workspace,
    authorization,
    drift_portal,
    iso,
    member_path,
    seed_drift_controller,
    writes,
)

from ztctl.controller.emulator import Fault
from ztctl.engine import Mode, open_job
from ztctl.engine.model import OutcomeStatus
from ztctl.engine.stages import apply_network, plan_network
from ztctl.engine.sync import sync_network
from ztctl.errors import ExitCode

FLEET = f"{ADDRESS}f1ee70"


def fleet_nodes(count: int) -> list[str]:
    return [f"f1ee7{index:05x}" for index in range(count)]


def fleet_portal(states: dict[str, str], *, expired: set[str] = frozenset(), now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    lines = ["networks:", f"  - id: '{FLEET}'", "    name: fleet", "    memberships:"]
    if not states:
        lines[-1] = "    memberships: []"
    for node, state in states.items():
        lines += [f"      - node: '{node}'", f"        state: {state}"]
        if node in expired:
            lines += [
                "        activations:",
                f"          - start: {iso(now - timedelta(hours=9))}",
                f"            expires: {iso(now - timedelta(hours=1))}",
            ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def fleet(tmp_path, portal_url, emulator):
    """A network of 20 authorized members, all active in the portal and in line."""
    emulator.create_network(FLEET, name="fleet", private=True)
    for node in fleet_nodes(20):
        emulator.put_member(FLEET, node, authorized=True)
    space = Workspace(tmp_path, portal_url, emulator)
    space.load(fleet_portal({node: "active" for node in fleet_nodes(20)}))
    assert space.run("reconcile").exit_code == ExitCode.OK
    emulator.clear_requests()
    return space



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


# The mass-revocation guard ---------------------------------------------------


def test_mass_deauthorization_refused(fleet):
    nodes = fleet_nodes(20)
    fleet.load(fleet_portal({node: "inactive" if i < 15 else "active" for i, node in enumerate(nodes)}))

    result = fleet.run("reconcile")

    assert result.exit_code == ExitCode.REFUSED, result.output
    assert "refused" in result.stdout
    assert result.stdout.count("would deauthorize 15 of 20") == 1, result.stdout
    assert result.stderr.count("would deauthorize 15 of 20") == 1, result.stderr
    assert writes(fleet.emulator) == []
    assert all(authorization(fleet.emulator, FLEET).values())


def test_mass_deauthorization_forced(fleet):
    nodes = fleet_nodes(20)
    fleet.load(fleet_portal({node: "inactive" if i < 15 else "active" for i, node in enumerate(nodes)}))

    result = fleet.run("reconcile", "--force")

    assert result.exit_code == ExitCode.OK, result.output
    state = authorization(fleet.emulator, FLEET)
    assert sum(state.values()) == 5


def test_refusal_shown_by_dry_run(fleet):
    nodes = fleet_nodes(20)
    fleet.load(fleet_portal({node: "inactive" if i < 15 else "active" for i, node in enumerate(nodes)}))

    code, document = fleet.run_json("--dry-run", "reconcile")

    assert code == ExitCode.REFUSED
    refusals = [n["refusal"] for s in document["stages"] for n in s["networks"] if n["refusal"]]
    assert refusals
    assert writes(fleet.emulator) == []


def test_few_revocations_allowed_below_min_count(fleet):
    nodes = fleet_nodes(20)
    fleet.write_config("policies:\n  revocation_guard:\n    max_share: 0.1\n    min_count: 10\n")
    fleet.load(fleet_portal({node: "inactive" if i < 8 else "active" for i, node in enumerate(nodes)}))

    result = fleet.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert sum(authorization(fleet.emulator, FLEET).values()) == 12


def test_emptied_portal_refused(fleet):
    fleet.write_config("policies:\n  revocation_guard:\n    max_share: 1.0\n")
    fleet.load(fleet_portal({}))

    result = fleet.run("reconcile")

    assert result.exit_code == ExitCode.REFUSED, result.output
    assert "no active membership" in result.stdout
    assert writes(fleet.emulator) == []


def test_guard_counts_the_whole_run(fleet):
    """Six expiries pass on their own; six more deauthorizations in repair push the run over the limit."""
    nodes = fleet_nodes(20)
    states = {node: "active" for node in nodes}
    states.update({node: "inactive" for node in nodes[6:12]})
    fleet.load(fleet_portal(states, expired=set(nodes[:6])))

    code, document = fleet.run_json("reconcile")

    assert code == ExitCode.REFUSED
    assert document["counts"]["deauthorized"] == 6
    stages = {stage["stage"]: stage for stage in document["stages"]}
    assert stages["repair"]["networks"][0]["refusal"].startswith("would deauthorize 12 of 20")
    assert sum(authorization(fleet.emulator, FLEET).values()) == 14


def test_portal_load_refuses_to_drop_every_network(fleet, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("networks: []\n", encoding="utf-8")

    refused = fleet.run("portal", "load", str(empty))
    forced = fleet.run("portal", "load", str(empty), "--force")

    assert refused.exit_code == ExitCode.REFUSED
    assert "all 1 of its networks" in refused.stderr
    assert forced.exit_code == ExitCode.OK


# Protected members and tombstones -------------------------------------------------


def test_protected_node_never_deauthorized(workspace):
    workspace.write_config("policies:\n  protected_nodes: [E5F6A7B8C9]\n")

    diff = workspace.run("diff")
    result = workspace.run("reconcile")

    assert "protected_nodes" in diff.stdout
    assert result.exit_code == ExitCode.OK, result.output
    assert authorization(workspace.emulator, ENGINEERING)["e5f6a7b8c9"] is True


def test_deleted_unknown_member_not_deleted_again(workspace):
    workspace.write_config("policies:\n  unknown:\n    action: delete\n    grace: 0s\n")
    first = workspace.run("reconcile")
    assert first.exit_code == ExitCode.OK, first.output
    assert "0000dead01" not in authorization(workspace.emulator, ENGINEERING)

    workspace.emulator.simulate_join(ENGINEERING, "0000dead01")
    workspace.emulator.clear_requests()
    second = workspace.run("reconcile")
    diff = workspace.run("diff")

    assert second.exit_code == ExitCode.OK, second.output
    assert writes(workspace.emulator) == []
    assert authorization(workspace.emulator, ENGINEERING)["0000dead01"] is False
    assert "came back after ztctl deleted it" in diff.stdout


def test_purged_member_not_deleted_again(workspace):
    workspace.write_config("policies:\n  purge_after: 0s\n")
    first = workspace.run("reconcile")
    assert first.exit_code == ExitCode.OK, first.output
    third = workspace.run("reconcile")
    assert third.exit_code == ExitCode.OK, third.output
    assert "e5f6a7b8c9" not in authorization(workspace.emulator, ENGINEERING)

    workspace.emulator.simulate_join(ENGINEERING, "e5f6a7b8c9")
    workspace.emulator.clear_requests()
    again = workspace.run("reconcile")

    assert again.exit_code == ExitCode.OK, again.output
    assert writes(workspace.emulator) == []


# Bad portal rows and the wrong controller ------------------------------------------


def test_malformed_portal_row_skipped_and_reported(workspace):
    network_row = workspace.sql("SELECT id FROM networks WHERE id = :id", id=ENGINEERING)
    assert network_row
    workspace.sql(
        "INSERT INTO memberships (network_id, node_id, state, state_changed_at, created_at, updated_at) "
        "VALUES (:network, 'not-a-node', 'active', :now, :now, :now)",
        network=ENGINEERING, now=datetime.now(UTC).replace(tzinfo=None),
    )

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "'not-a-node'" in result.stderr
    assert not any("not-a-node" in request.path for request in workspace.emulator.requests)
    assert authorization(workspace.emulator, ENGINEERING) == EXPECTED_AFTER


@pytest.fixture
def sqlite_workspace(tmp_path, emulator):
    """SQLite stores any text in a time column, which PostgreSQL would refuse."""
    seed_drift_controller(emulator)
    space = Workspace(tmp_path, f"sqlite:///{tmp_path / 'portal.db'}", emulator)
    space.load(drift_portal(datetime.now(UTC)))
    return space


def membership_id(space: Workspace, node_id: str) -> int:
    return space.sql("SELECT id FROM memberships WHERE node_id = :node", node=node_id)[0][0]


def test_unreadable_time_stops_its_network_only(sqlite_workspace):
    space = sqlite_workspace
    space.sql(
        "UPDATE activations SET expires_at = 'tomorrow' WHERE membership_id = :id", id=membership_id(space, "a1b2c3d4e5")
    )

    result = space.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert result.stderr.count("'tomorrow'") == 1, result.stderr
    assert "Traceback" not in result.output
    state = authorization(space.emulator, ENGINEERING)
    assert state["b2c3d4e5f6"] is False, "another member's expiry still happens"
    assert state["e5f6a7b8c9"] is True, "no repair on a network whose portal rows cannot all be read"
    assert [write for write in writes(space.emulator) if "b2c3d4e5f6" not in write] == []


def test_unreadable_time_skips_its_membership_in_expiry(sqlite_workspace):
    space = sqlite_workspace
    bob = membership_id(space, "b2c3d4e5f6")
    space.sql(
        "INSERT INTO activations (membership_id, starts_at, expires_at, created_at) "
        "VALUES (:id, '2026-12-01 00:00:00', 'soon', '2026-12-01 00:00:00')",
        id=bob,
    )

    result = space.run("expire")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert f"membership {bob} skipped" in result.stdout + result.stderr
    assert "Traceback" not in result.output


def test_upper_case_portal_node_id_read_as_lower_case(workspace):
    workspace.sql("UPDATE memberships SET node_id = 'E5F6A7B8C9' WHERE node_id = 'e5f6a7b8c9'")

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert authorization(workspace.emulator, ENGINEERING)["e5f6a7b8c9"] is False


def test_network_of_another_controller_left_alone(tmp_path, portal_url, make_emulator):
    """Only a self-hosted controller's network IDs start with its address, so this is zerotier-one's rule."""
    emulator = make_emulator(address=ADDRESS)
    foreign = "aaaaaaaaaa000001"
    emulator.create_network(foreign, name="foreign", private=True)
    emulator.put_member(foreign, "a1b2c3d4e5", authorized=True)
    space = Workspace(tmp_path, portal_url, emulator)
    space.load(f"networks:\n  - id: '{foreign}'\n    memberships:\n      - node: a1b2c3d4e5\n        state: inactive\n")
    emulator.clear_requests()

    result = space.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "cannot belong to the controller" in result.stderr
    assert writes(emulator) == []


# Expiry, overdue revocations and carry-over --------------------------------------------


def test_failed_revocation_reported_as_overdue(workspace):
    workspace.emulator.inject(
        Fault.status(500, b'{"error": 500}'), method="POST",
        path=member_path(workspace.emulator, ENGINEERING, "b2c3d4e5f6"), times=10,
    )

    code, document = workspace.run_json("expire")

    assert code == ExitCode.PARTIAL_FAILURE
    assert document["counts"]["overdue_revocations"] == 1
    assert document["counts"]["max_overdue_seconds"] >= 3600


def test_next_run_shows_last_failures(workspace):
    workspace.emulator.inject(
        Fault.status(500, b'{"error": 500}'), method="POST",
        path=member_path(workspace.emulator, ENGINEERING, "b2c3d4e5f6"), times=10,
    )
    failed = workspace.run("expire")
    assert failed.exit_code == ExitCode.PARTIAL_FAILURE
    workspace.emulator.clear_faults()

    diff = workspace.run("diff")
    code, document = workspace.run_json("diff")

    assert "left 1 failure(s)" in diff.stdout.splitlines()[0]
    assert document["previous_failures"][0]["node"] == "b2c3d4e5f6"
    assert document["previous_failures"][0]["outcome"] == "failed"


def test_next_run_shows_network_that_failed(workspace):
    workspace.emulator.delete_network(ENGINEERING)
    failed = workspace.run("reconcile")
    assert failed.exit_code == ExitCode.PARTIAL_FAILURE, failed.output

    _, document = workspace.run_json("diff")

    failures = document["previous_failures"]
    assert {(f["network"], f["node"], f["outcome"]) for f in failures} == {(ENGINEERING, None, "failed")}
    assert any("not on the controller" in f["detail"] for f in failures), failures


def test_expire_keeps_membership_with_activation_to_come(tmp_path, portal_url, emulator):
    now = datetime.now(UTC)
    emulator.create_network(ENGINEERING, name="engineering", private=True)
    emulator.put_member(ENGINEERING, "a1b2c3d4e5", authorized=True)
    space = Workspace(tmp_path, portal_url, emulator)
    space.load(
        f"networks:\n  - id: '{ENGINEERING}'\n    memberships:\n      - node: a1b2c3d4e5\n        state: active\n"
        "        activations:\n"
        f"          - start: {iso(now - timedelta(hours=5))}\n            expires: {iso(now - timedelta(hours=1))}\n"
        f"          - start: {iso(now + timedelta(hours=1))}\n            expires: {iso(now + timedelta(hours=3))}\n"
    )

    result = space.run("reconcile")
    state = space.sql("SELECT state FROM memberships WHERE node_id = 'a1b2c3d4e5'")
    later = open_job(space.load_settings(), command="diff", mode=Mode.DRY_RUN, clock=lambda: now + timedelta(hours=2))
    try:
        from ztctl.engine import stages

        findings = stages.diff(later).stages[-1].findings
    finally:
        later.close()

    assert result.exit_code == ExitCode.OK, result.output
    assert authorization(emulator, ENGINEERING)["a1b2c3d4e5"] is False
    assert state == [("active",)]
    assert [(f.node_id, str(f.action)) for f in findings] == [("a1b2c3d4e5", "authorize")]


# Stale plans ----------------------------------------------------------------------


def _plan_repair(space: Workspace):
    job = open_job(space.load_settings(), command="repair", mode=Mode.APPLY)
    _, snapshot = sync_network(job, ENGINEERING, "engineering", write_cache=True)
    return job, plan_network(job, "repair", snapshot, drift=True, unknown=False)


def test_portal_change_after_plan_skips_deauthorization(workspace):
    job, report = _plan_repair(workspace)
    try:
        workspace.sql("UPDATE memberships SET state = 'active' WHERE node_id = 'e5f6a7b8c9'")
        apply_network(job, "repair", report)
    finally:
        job.close()

    outcome = next(o for o in report.outcomes if o.finding.node_id == "e5f6a7b8c9")
    assert outcome.status is OutcomeStatus.SKIPPED
    assert "changed since plan" in outcome.detail
    assert authorization(workspace.emulator, ENGINEERING)["e5f6a7b8c9"] is True


def test_controller_change_after_plan_skips_deauthorization(workspace):
    job, report = _plan_repair(workspace)
    try:
        workspace.emulator.put_member(ENGINEERING, "e5f6a7b8c9", active_bridge=True)
        apply_network(job, "repair", report)
    finally:
        job.close()

    outcome = next(o for o in report.outcomes if o.finding.node_id == "e5f6a7b8c9")
    assert outcome.status is OutcomeStatus.SKIPPED
    assert "revision" in outcome.detail
    assert authorization(workspace.emulator, ENGINEERING)["e5f6a7b8c9"] is True


# The run time limit -------------------------------------------------------------------


def test_time_limit_stops_before_acting_and_next_run_converges(workspace):
    workspace.write_config("run:\n  time_limit: 0s\n")
    stopped = workspace.run("reconcile")
    workspace.write_config()
    converged = workspace.run("reconcile")

    assert stopped.exit_code == ExitCode.PARTIAL_FAILURE, stopped.output
    assert "run time limit" in stopped.stderr
    assert converged.exit_code == ExitCode.OK, converged.output
    assert authorization(workspace.emulator, ENGINEERING) == EXPECTED_AFTER


# The command line on odd input --------------------------------------------------------


def test_reconcile_does_not_create_missing_sqlite_file(workspace, tmp_path):
    missing = tmp_path / "typo" / "portl.db"
    workspace.env["ZTCTL_DATABASE_URL"] = f"sqlite:///{missing}"

    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.CONFIG
    assert "does not exist yet" in result.stderr
    assert not missing.exists()


def test_json_apply_needs_yes(workspace):
    result = workspace.run("--output", "json", "diff", "--apply")

    assert result.exit_code == ExitCode.USAGE
    assert json.loads(result.stdout)["error"]["type"] == "UsageError"
    assert writes(workspace.emulator) == []


def test_usage_error_prints_json_document(workspace):
    result = workspace.run("--output", "json", "diff", "--no-such-option")

    assert result.exit_code == ExitCode.USAGE
    document = json.loads(result.stdout)
    assert document["exit_code"] == 2
    assert document["command"] == "diff"


def test_markup_in_names_printed_as_text(workspace):
    workspace.sql("UPDATE memberships SET owner = '[/]' WHERE node_id = 'e5f6a7b8c9'")

    result = workspace.run("diff")

    assert result.exit_code == ExitCode.CHANGES_PENDING, result.output
    assert "[/]" in result.stdout


# Reuse of cached members by revision (controllers before 1.14) ------------------------


@pytest.mark.parametrize(("max_age", "caught"), [("0s", True), ("1h", False)])
def test_recreated_member_found_once_cache_expires(tmp_path, portal_url, make_emulator, max_age, caught):
    """A member deleted and created anew repeats revision 1; only a full read after the cache's age finds it."""
    emulator = make_emulator(version="1.12.2")
    emulator.create_network(ENGINEERING, name="engineering", private=True)
    emulator.put_member(ENGINEERING, "e5f6a7b8c9", authorized=False)
    space = Workspace(tmp_path, portal_url, emulator)
    space.config.write_text(
        space.config.read_text(encoding="utf-8").replace("controller:\n", f"controller:\n  cache_max_age: {max_age}\n"),
        encoding="utf-8",
    )
    space.load(f"networks:\n  - id: '{ENGINEERING}'\n    memberships:\n      - node: e5f6a7b8c9\n        state: inactive\n")
    assert space.run("reconcile").exit_code == ExitCode.OK

    deleted = httpx.delete(
        f"{emulator.url}/controller/network/{ENGINEERING}/member/e5f6a7b8c9", headers={"X-ZT1-Auth": emulator.token}
    )
    assert deleted.status_code == 200
    emulator.put_member(ENGINEERING, "e5f6a7b8c9", authorized=True)
    assert emulator.get_member(ENGINEERING, "e5f6a7b8c9")["revision"] == 1
    result = space.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert authorization(emulator, ENGINEERING)["e5f6a7b8c9"] is (not caught)


def test_text_in_removed_at_is_reported(sqlite_workspace):
    space = sqlite_workspace
    space.sql("UPDATE networks SET removed_at = 'soon' WHERE id = :id", id=ENGINEERING)

    result = space.run("reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "removed_at 'soon', which is not a time" in result.stdout + result.stderr


def test_text_in_network_created_at_stops_nothing(sqlite_workspace):
    space = sqlite_workspace
    space.sql("UPDATE networks SET created_at = 'soon' WHERE id = :id", id=ENGINEERING)

    result = space.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert authorization(space.emulator, ENGINEERING) == EXPECTED_AFTER
