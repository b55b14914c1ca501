"""The operator's commands (history, explain, check, adopt, ack) and the files for cron and CI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from scenario import (
    ENGINEERING,
    TOKEN,
    UNMANAGED,
    Workspace,
    authorization,
    drift_portal,
    seed_drift_controller,
    writes,
)

from ztctl.engine import Mode, open_job, stages
from ztctl.errors import ExitCode
from ztctl.portal.db import WriteAccess, create_portal_engine
from ztctl.portal.lock import acquire_run_lock


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


@pytest.fixture
def reconciled(workspace):
    result = workspace.run("reconcile")
    assert result.exit_code == ExitCode.OK, result.output
    return workspace


# history ----------------------------------------------------------------------------


def test_history_lists_applied_actions(reconciled):
    result = reconciled.run("history")

    assert result.exit_code == ExitCode.OK, result.output
    assert "e5f6a7b8c9" in result.stdout
    assert "deauthorize" in result.stdout
    assert "reconcile" in result.stdout


def test_history_filters(reconciled):
    code, document = reconciled.run_json("history", "--node", "E5F6A7B8C9", "--since", "1h", "--outcome", "applied")

    assert code == ExitCode.OK
    entries = document["entries"]
    assert [entry["node"] for entry in entries] == ["e5f6a7b8c9"]
    assert entries[0]["action"] == "deauthorize"
    assert entries[0]["before"]["controller"] == "authorized"
    assert entries[0]["after"]["authorized"] is False
    assert entries[0]["revision"] is not None
    assert entries[0]["user"]


def test_history_since_future_is_empty(reconciled):
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    code, document = reconciled.run_json("history", "--since", tomorrow)

    assert code == ExitCode.OK
    assert document["entries"] == []


def test_history_invalid_since(reconciled):
    result = reconciled.run("history", "--since", "yesterday")

    assert result.exit_code == ExitCode.USAGE
    assert "'yesterday'" in result.stderr


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--outcome", "fail", "expected one of applied, skipped, failed, refused, found"),
        ("--action", "deauthorise", "expected one of authorize, deauthorize"),
        ("--node", "xyz", "expected 10 hex digits"),
        ("--network", "12345", "expected 16 hex digits"),
    ],
)
def test_history_rejects_filter_that_cannot_match(reconciled, option, value, expected):
    result = reconciled.run("history", option, value)

    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"invalid {option} {value!r}" in result.stderr
    assert expected in result.stderr


# explain ----------------------------------------------------------------------------


def test_explain_says_who_deauthorized(reconciled):
    result = reconciled.run("explain", ENGINEERING, "e5f6a7b8c9")

    assert result.exit_code == ExitCode.OK, result.output
    first = result.stdout.splitlines()[0]
    assert "is not authorized" in first
    assert "membership inactive" in first
    assert "last change: deauthorize" in first
    assert "reconcile" in first
    assert "next run: nothing to do" in result.stdout


def test_explain_shows_next_run(workspace):
    code, document = workspace.run_json("explain", ENGINEERING, "c3d4e5f6a7")

    assert code == ExitCode.OK
    assert document["live"]["authorized"] is False
    assert [f["action"] for f in document["next_run"]] == ["authorize"]
    assert document["membership"]["access"] == "active"


def test_explain_expired_activation(workspace):
    code, document = workspace.run_json("explain", ENGINEERING, "b2c3d4e5f6")

    assert code == ExitCode.OK
    assert [f["action"] for f in document["next_run"]] == ["expire"]
    assert document["membership"]["access"] == "expired"


def test_explain_unknown_member(workspace):
    code, document = workspace.run_json("explain", ENGINEERING, "0badc0ffee")

    assert code == ExitCode.OK
    assert document["membership"] is None
    assert "unknown member" in document["verdict"]


def test_explain_with_controller_down(workspace):
    workspace.emulator.stop()
    result = workspace.run("explain", ENGINEERING, "e5f6a7b8c9")

    assert result.exit_code == ExitCode.CONTROLLER
    assert "unknown right now" in result.stdout
    assert "portal: inactive" in result.stdout
    assert "controller: not read" in result.stdout
    assert "controller: not present" not in result.stdout
    assert "next run: unknown until the controller can be read" in result.stdout


def test_explain_network_missing_on_controller(workspace):
    workspace.emulator.delete_network(ENGINEERING)
    code, document = workspace.run_json("explain", ENGINEERING, "e5f6a7b8c9")
    result = workspace.run("explain", ENGINEERING, "e5f6a7b8c9")

    assert code == ExitCode.OK
    assert document["network_missing"] is True
    assert document["error"] is None
    assert "no network with this ID" in document["verdict"]
    assert "next run: an error for this network" in result.stdout


def test_explain_controller_down_sets_json_error(workspace):
    workspace.emulator.stop()
    code, document = workspace.run_json("explain", ENGINEERING, "e5f6a7b8c9")

    assert code == ExitCode.CONTROLLER
    assert document["error"]["type"] == "ControllerError"


def test_explain_invalid_node(workspace):
    result = workspace.run("explain", ENGINEERING, "xyz")

    assert result.exit_code == ExitCode.USAGE
    assert "'xyz'" in result.stderr


# check ------------------------------------------------------------------------------


def test_check_all_ok(reconciled):
    code, document = reconciled.run_json("check")

    assert code == ExitCode.OK
    assert [row["check"] for row in document["checks"]] == ["config", "database", "controller", "token", "networks", "lock"]
    assert {row["status"] for row in document["checks"]} == {"ok"}


def test_check_wrong_token(reconciled):
    reconciled.env["ZTCTL_CONTROLLER_TOKEN"] = "wrong-token"
    code, document = reconciled.run_json("check")

    statuses = {row["check"]: row["status"] for row in document["checks"]}
    assert code == ExitCode.CONTROLLER
    assert statuses["token"] == "failed"
    assert statuses["controller"] == "ok"


def test_check_missing_network(reconciled):
    reconciled.emulator.delete_network("3233204505519ec1")
    result = reconciled.run("check")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE
    assert "missing on the controller: 3233204505519ec1" in result.stdout


def test_check_lock_held(reconciled):
    engine = create_portal_engine(reconciled.database_url, access=WriteAccess.ALL)
    try:
        with acquire_run_lock(engine, wait=None, owner="a test holding the lock"):
            code, document = reconciled.run_json("check")
    finally:
        engine.dispose()

    assert code == ExitCode.LOCK_HELD
    assert document["checks"][-1]["status"] == "failed"
    assert "a test holding the lock" in document["checks"][-1]["detail"]


def test_check_missing_database_still_checks_controller(reconciled, tmp_path):
    reconciled.env["ZTCTL_DATABASE_URL"] = f"sqlite:///{tmp_path / 'missing.db'}"
    code, document = reconciled.run_json("check")

    statuses = {row["check"]: row["status"] for row in document["checks"]}
    assert code == ExitCode.CONFIG
    assert statuses == {
        "config": "ok", "database": "failed", "controller": "ok", "token": "ok", "networks": "skipped",
        "lock": "skipped",
    }
    assert document["error"]["message"].startswith("database: ")
    assert not (tmp_path / "missing.db").exists()


def test_check_empty_portal(tmp_path, portal_url, emulator):
    seed_drift_controller(emulator)
    space = Workspace(tmp_path, portal_url, emulator)
    space.load("networks: []\n")
    code, document = space.run_json("check")

    row = next(row for row in document["checks"] if row["check"] == "networks")
    assert code == ExitCode.CONFIG
    assert "the portal manages no network" in row["detail"]
    assert "database.url" in row["detail"]


def test_check_bad_config(reconciled):
    reconciled.config.write_text("controller:\n  timeout: never\n", encoding="utf-8")
    result = reconciled.run("check")

    assert result.exit_code == ExitCode.CONFIG
    assert "controller.timeout" in result.stdout


# adopt ------------------------------------------------------------------------------


def test_adopt_dry_run_writes_nothing(workspace):
    before = workspace.table_rows()
    result = workspace.run("--dry-run", "adopt", UNMANAGED)

    assert result.exit_code == ExitCode.CHANGES_PENDING, result.output
    assert "dry run" in result.stdout
    assert "9999999999 (active" in result.stdout
    assert workspace.table_rows() == before


def test_adopt_then_reconcile_changes_nothing(workspace):
    adopted = workspace.run("adopt", UNMANAGED)
    workspace.emulator.clear_requests()
    code, document = workspace.run_json("diff")
    again = workspace.run_json("adopt", UNMANAGED)

    assert adopted.exit_code == ExitCode.OK, adopted.output
    network = next(n for s in document["stages"] for n in s["networks"] if n["id"] == UNMANAGED)
    assert network["findings"] == []
    assert again[0] == ExitCode.USAGE
    assert authorization(workspace.emulator, UNMANAGED) == {"9999999999": True, "8888888888": False}


def test_adopt_refuses_managed_network(workspace):
    before = workspace.table_rows()
    result = workspace.run("adopt", ENGINEERING)

    assert result.exit_code == ExitCode.USAGE, result.output
    assert "already managed" in result.stderr
    after = workspace.table_rows()
    # Only the refused run itself is recorded.
    assert {k: v for k, v in after.items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}


def test_adopt_network_not_on_controller(workspace):
    result = workspace.run("adopt", "32332045050000ab")

    assert result.exit_code == ExitCode.USAGE
    assert "not on the controller" in result.stderr


# ack ----------------------------------------------------------------------------------


def test_ack_stops_counting_drift_until_it_expires(reconciled):
    pending = reconciled.run("diff")
    acked = reconciled.run("ack", ENGINEERING, "0badc0ffee", "--until", "2h", "--reason", "lab printer, ticket 42")
    quiet = reconciled.run("diff")
    later = open_job(
        reconciled.load_settings(), command="diff", mode=Mode.DRY_RUN,
        clock=lambda: datetime.now(UTC) + timedelta(hours=3),
    )
    try:
        expired = stages.diff(later)
    finally:
        later.close()

    assert pending.exit_code == ExitCode.CHANGES_PENDING
    assert acked.exit_code == ExitCode.OK, acked.output
    assert quiet.exit_code == ExitCode.OK, quiet.output
    assert "acknowledged until" in quiet.stdout
    assert "lab printer, ticket 42" in quiet.stdout
    assert expired.has_pending


def test_ack_holds_back_repair_until_it_ends(workspace):
    for node in ("e5f6a7b8c9", "0badc0ffee"):
        acked = workspace.run("ack", ENGINEERING, node, "--until", "1d", "--reason", "accepted")
        assert acked.exit_code == ExitCode.OK, acked.output
    expiry = workspace.run("ack", ENGINEERING, "b2c3d4e5f6", "--until", "1d", "--reason", "accepted")
    assert expiry.exit_code == ExitCode.USAGE, expiry.output
    assert "no difference that an acknowledgement can cover" in expiry.stderr
    result = workspace.run("reconcile")
    audit = workspace.run("--audit", "reconcile")
    dry_run = workspace.run("--dry-run", "reconcile")
    later = open_job(
        workspace.load_settings(), command="reconcile", mode=Mode.DRY_RUN,
        clock=lambda: datetime.now(UTC) + timedelta(days=2),
    )
    try:
        after_ack = stages.reconcile(later)
    finally:
        later.close()

    assert audit.exit_code == dry_run.exit_code == ExitCode.OK, (audit.output, dry_run.output)
    assert result.exit_code == ExitCode.OK, result.output
    authorized_now = authorization(workspace.emulator, ENGINEERING)
    assert authorized_now["e5f6a7b8c9"] is True, "an acknowledged difference is left as it is"
    assert authorized_now["b2c3d4e5f6"] is False, "an activation still ends at its expiry"
    planned = {(f.node_id, str(f.action)) for stage in after_ack.stages for f in stage.findings if f.action}
    assert ("e5f6a7b8c9", "deauthorize") in planned


def test_ack_covers_only_the_difference_accepted(reconciled):
    # 0badc0ffee is accepted as an unknown member. Once the portal has a
    # membership for it and revokes it, that is a new difference, which the acknowledgement
    # does not cover.
    acked = reconciled.run("ack", ENGINEERING, "0badc0ffee", "--until", "7d", "--reason", "lab printer")
    quiet = reconciled.run("--audit", "diff")
    portal = drift_portal(datetime.now(UTC)).replace(
        "      - node: abcdef0123\n",
        "      - node: 0badc0ffee\n        state: inactive\n      - node: abcdef0123\n",
    )
    reconciled.load(portal)
    result = reconciled.run("reconcile")

    assert acked.exit_code == ExitCode.OK, acked.output
    assert quiet.exit_code == ExitCode.OK, quiet.output
    assert result.exit_code == ExitCode.OK, result.output
    assert authorization(reconciled.emulator, ENGINEERING)["0badc0ffee"] is False


def test_ack_refuses_network_not_managed(workspace):
    result = workspace.run("ack", UNMANAGED, "9999999999", "--until", "1d", "--reason", "x")

    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"network {UNMANAGED} is not managed" in result.stderr


def test_ack_withdrawn_counts_drift_again(reconciled):
    reconciled.run("ack", ENGINEERING, "0badc0ffee", "--until", "7d", "--reason", "lab printer")
    quiet = reconciled.run("diff")
    withdrawn = reconciled.run("ack", ENGINEERING, "0badc0ffee", "--withdraw", "--reason", "printer gone")
    pending = reconciled.run("diff")

    assert quiet.exit_code == ExitCode.OK, quiet.output
    assert withdrawn.exit_code == ExitCode.OK, withdrawn.output
    assert "withdrawn" in withdrawn.stdout
    assert pending.exit_code == ExitCode.CHANGES_PENDING, pending.output


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (("--until", "400d", "--reason", "x"), "more than 366 days ahead"),
        (("--until", "99999999d", "--reason", "x"), "invalid --until"),
        (("--until", "9999-12-31T23:59:59-12:00", "--reason", "x"), "invalid --until"),
        (("--until", "1d", "--reason", "bad\x1b[2Jreason"), "control characters"),
        (("--reason", "x"), "give either --until or --withdraw"),
    ],
)
def test_ack_rejects_bad_arguments(workspace, arguments, expected):
    result = workspace.run("ack", ENGINEERING, "0badc0ffee", *arguments)

    assert result.exit_code == ExitCode.USAGE, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("since", ["99999999d", "9999-12-31T23:59:59-12:00"])
def test_history_since_out_of_range_is_usage_error(reconciled, since):
    result = reconciled.run("history", "--since", since)

    assert result.exit_code == ExitCode.USAGE, result.output
    assert "invalid --since" in result.stderr


def test_ack_until_in_past_rejected(workspace):
    result = workspace.run("ack", ENGINEERING, "0badc0ffee", "--until", "2020-01-01", "--reason", "x")

    assert result.exit_code == ExitCode.USAGE
    assert "not in the future" in result.stderr


# Reports, metrics and logs for cron and CI -------------------------------------------


def test_audit_report_file(workspace, tmp_path):
    report = tmp_path / "drift.json"
    result = workspace.run("--audit", "--report", str(report), "diff")

    document = json.loads(report.read_text(encoding="utf-8"))
    assert result.exit_code == ExitCode.CHANGES_PENDING
    assert document["kind"] == "ztctl-report"
    assert document["schema"] == 1
    assert document["mode"] == "audit"
    assert document["exit_code"] == 1
    nodes = {finding["node"]: finding for finding in document["findings"]}
    assert nodes["e5f6a7b8c9"]["action"] == "deauthorize"
    assert nodes["e5f6a7b8c9"]["network_name"] == "engineering"


def test_report_written_for_failed_run(workspace, tmp_path):
    report = tmp_path / "failed.json"
    workspace.env["ZTCTL_CONTROLLER_TOKEN"] = "wrong-token"
    result = workspace.run("--report", str(report), "diff")

    document = json.loads(report.read_text(encoding="utf-8"))
    assert result.exit_code == ExitCode.CONTROLLER
    assert document["error"]["type"] == "TokenRejected"
    assert document["findings"] == []


def test_metrics_file(workspace, tmp_path):
    metrics = tmp_path / "ztctl.prom"
    first = workspace.run("--metrics-file", str(metrics), "reconcile")
    text = metrics.read_text(encoding="utf-8")

    assert first.exit_code == ExitCode.OK, first.output
    assert 'ztctl_last_run_exit_code{command="reconcile"} 0.0' in text
    assert 'ztctl_actions{action="deauthorize",outcome="applied"} 1.0' in text
    assert 'ztctl_actions{action="expire",outcome="applied"} 1.0' in text
    assert "ztctl_last_success_timestamp_seconds" in text
    assert f'ztctl_unknown_members{{network="{ENGINEERING}"}} 2.0' in text
    assert "ztctl_overdue_revocations 0.0" in text
    # What the run repaired is no longer drift; the authorized unknown member is.
    assert f'ztctl_drift_members{{network="{ENGINEERING}"}} 1.0' in text


def test_metrics_count_drift_per_member(workspace, tmp_path):
    metrics = tmp_path / "ztctl.prom"
    result = workspace.run("--dry-run", "--metrics-file", str(metrics), "reconcile")
    text = metrics.read_text(encoding="utf-8")

    assert result.exit_code == ExitCode.CHANGES_PENDING, result.output
    # b2c3d4e5f6 has a finding in expire and in repair, and counts once.
    assert f'ztctl_drift_members{{network="{ENGINEERING}"}} 5.0' in text


def test_metrics_count_overdue_on_network_not_read(workspace, tmp_path):
    metrics = tmp_path / "ztctl.prom"
    workspace.emulator.delete_network(ENGINEERING)
    result = workspace.run("--metrics-file", str(metrics), "reconcile")
    text = metrics.read_text(encoding="utf-8")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "ztctl_overdue_revocations 1.0" in text


def test_metrics_keep_last_success_after_failure(workspace, tmp_path):
    metrics = tmp_path / "ztctl.prom"
    assert workspace.run("--metrics-file", str(metrics), "reconcile").exit_code == ExitCode.OK
    success_line = next(line for line in metrics.read_text().splitlines() if line.startswith("ztctl_last_success"))
    workspace.env["ZTCTL_CONTROLLER_TOKEN"] = "wrong-token"
    failed = workspace.run("--metrics-file", str(metrics), "reconcile")
    text = metrics.read_text(encoding="utf-8")

    assert failed.exit_code == ExitCode.CONTROLLER
    assert 'ztctl_last_run_exit_code{command="reconcile"} 4.0' in text
    assert success_line in text


def test_json_logs_one_object_per_line(workspace):
    result = workspace.run("--log-format", "json", "-v", "reconcile")

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert result.exit_code == ExitCode.OK, result.output
    assert records
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert TOKEN not in result.stderr


def test_cron_run_with_nothing_to_do_is_silent(reconciled):
    # The scenario's authorized unknown member is accepted, so nothing is left to report.
    reconciled.run("ack", ENGINEERING, "0badc0ffee", "--until", "7d", "--reason", "lab printer")
    result = reconciled.run("reconcile")

    assert result.exit_code == ExitCode.OK
    assert result.stdout == ""
    assert result.stderr == ""


def test_authorized_unknown_member_warned_every_run(reconciled):
    runs = [reconciled.run("reconcile") for _ in range(2)]

    for result in runs:
        assert result.exit_code == ExitCode.OK, result.output
        assert result.stdout == ""
        assert "unknown member 0badc0ffee on network" in result.stderr
        assert "is authorized" in result.stderr


def test_cron_run_that_acts_prints_one_line(workspace):
    result = workspace.run("reconcile")

    assert result.exit_code == ExitCode.OK, result.output
    assert len(result.stdout.strip().splitlines()) == 1
    assert "deauthorized" in result.stdout
    assert writes(workspace.emulator)


def test_history_since_after_until_rejected(reconciled):
    result = reconciled.run("history", "--since", "1h", "--until", "2h")

    assert result.exit_code == ExitCode.USAGE, result.output
    assert "--since is not before --until" in result.stderr


def test_ack_withdraw_without_ack_rejected(reconciled):
    result = reconciled.run("ack", ENGINEERING, "0badc0ffee", "--withdraw", "--reason", "gone")

    assert result.exit_code == ExitCode.USAGE, result.output
    assert "has no acknowledgement in force, so there is nothing to withdraw" in result.stderr


def test_ack_with_controller_down_exits_4(reconciled):
    reconciled.emulator.stop()
    result = reconciled.run("ack", ENGINEERING, "0badc0ffee", "--until", "7d", "--reason", "lab printer")

    assert result.exit_code == ExitCode.CONTROLLER, result.output
    assert "the difference to accept is unknown" in result.stderr


def test_adopt_drops_control_characters_from_names(workspace):
    workspace.emulator.put_member(UNMANAGED, "7777777777", authorized=True, name="desk\x1b[2Jprinter")
    adopted = workspace.run("adopt", UNMANAGED)
    dumped = workspace.run("portal", "dump")

    assert adopted.exit_code == ExitCode.OK, adopted.output
    assert dumped.exit_code == ExitCode.OK, dumped.output
    assert "desk[2Jprinter" in dumped.stdout
    assert "\x1b" not in dumped.stdout
