"""Exit statuses and messages of the command line on every path, success and failure."""

from __future__ import annotations

import json
import socket

import pytest
from scenario import ENGINEERING, TOKEN, Workspace, seed_drift_controller

from ztctl.errors import ExitCode


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'portal.db'}"


@pytest.fixture
def workspace(tmp_path, sqlite_url, emulator):
    seed_drift_controller(emulator)
    space = Workspace(tmp_path, sqlite_url, emulator)
    assert space.run("db", "upgrade").exit_code == ExitCode.OK
    return space


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_help_lists_every_command(workspace):
    result = workspace.run("--help")
    assert result.exit_code == ExitCode.OK
    for command in ("reconcile", "expire", "sync", "diff", "repair", "unknown", "portal", "db", "demo"):
        assert command in result.stdout


def test_unknown_option_is_usage_error(workspace):
    result = workspace.run("reconcile", "--no-such-option")
    assert result.exit_code == ExitCode.USAGE
    assert "No such option" in result.stderr


def test_unknown_command_is_usage_error(workspace):
    result = workspace.run("reconcil")
    assert result.exit_code == ExitCode.USAGE


def test_bad_output_choice_is_usage_error(workspace):
    result = workspace.run("--output", "xml", "diff")
    assert result.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("arguments", "flag"),
    [
        (("--report", "report.json", "check"), "--report"),
        (("--metrics-file", "ztctl.prom", "history"), "--metrics-file"),
        (("--dry-run", "demo"), "--dry-run"),
        (("--force", "portal", "dump"), "--force"),
    ],
)
def test_misplaced_global_option_rejected(workspace, arguments, flag):
    result = workspace.run(*arguments)

    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"does not take {flag}" in result.stderr
    assert not (workspace.root / arguments[1]).exists()


def test_progress_bar_stops_while_question_is_asked(monkeypatch):
    from types import SimpleNamespace

    from ztctl.cli import runner
    from ztctl.cli.options import CliOptions

    monkeypatch.setattr(runner.sys.stderr, "isatty", lambda: True)
    job = SimpleNamespace(progress=None)
    with runner.progress_display(job, CliOptions()):
        progress = runner._live_progress.get()
        assert progress is not None and progress.live.is_started
        with runner.progress_paused():
            assert not progress.live.is_started
        assert progress.live.is_started
    assert runner._live_progress.get() is None


def test_invalid_config_exits_3(workspace):
    workspace.config.write_text("controller:\n  timeout: soon\n", encoding="utf-8")
    result = workspace.run("reconcile")
    assert result.exit_code == ExitCode.CONFIG
    assert "controller.timeout" in result.stderr
    assert "'soon'" in result.stderr


def test_invalid_config_json_error_document(workspace):
    workspace.config.write_text("nonsense: 1\n", encoding="utf-8")
    result = workspace.run("--output", "json", "diff")
    assert result.exit_code == ExitCode.CONFIG
    document = json.loads(result.stdout)
    assert document["exit_code"] == 3
    assert document["error"]["type"] == "ConfigError"
    assert "nonsense" in document["error"]["message"]


def test_bad_database_url_exits_3(workspace):
    workspace.env["ZTCTL_DATABASE_URL"] = "mysql://somewhere/portal"
    result = workspace.run("diff")
    assert result.exit_code == ExitCode.CONFIG
    assert "mysql" in result.stderr


def test_controller_unreachable_exits_4(workspace):
    workspace.env["ZTCTL_CONTROLLER_URL"] = f"http://127.0.0.1:{free_port()}"
    result = workspace.run("reconcile")
    assert result.exit_code == ExitCode.CONTROLLER
    assert "127.0.0.1" in result.stderr


def test_wrong_token_exits_4_and_names_source(workspace):
    workspace.env["ZTCTL_CONTROLLER_TOKEN"] = "wrong-token-value"
    result = workspace.run("diff")
    assert result.exit_code == ExitCode.CONTROLLER
    assert "ZTCTL_CONTROLLER_TOKEN" in result.stderr
    assert "wrong-token-value" not in result.output


def test_build_without_controller_exits_4(tmp_path, sqlite_url, make_emulator):
    emulator = make_emulator(has_controller=False)
    workspace = Workspace(tmp_path, sqlite_url, emulator)
    assert workspace.run("db", "upgrade").exit_code == ExitCode.OK
    result = workspace.run("diff")
    assert result.exit_code == ExitCode.CONTROLLER
    assert "controller" in result.stderr.lower()
    assert "no networks" not in result.output.lower()


def test_token_file_unreadable_exits_3(workspace, tmp_path):
    workspace.env["ZTCTL_CONTROLLER_TOKEN"] = ""
    workspace.env["ZTCTL_CONTROLLER_TOKEN_FILE"] = str(tmp_path / "missing.secret")
    result = workspace.run("diff")
    assert result.exit_code == ExitCode.CONFIG
    assert "missing.secret" in result.stderr


def test_dry_run_on_missing_sqlite_file_exits_3(workspace, tmp_path):
    workspace.env["ZTCTL_DATABASE_URL"] = f"sqlite:///{tmp_path / 'never-created.db'}"
    result = workspace.run("--dry-run", "reconcile")
    assert result.exit_code == ExitCode.CONFIG
    assert "db upgrade" in result.stderr


def test_db_upgrade_then_schema_current(workspace, tmp_path):
    workspace.env["ZTCTL_DATABASE_URL"] = f"sqlite:///{tmp_path / 'fresh.db'}"
    first = workspace.run("db", "upgrade")
    assert first.exit_code == ExitCode.OK, first.output
    assert "upgraded" in first.stdout
    second = workspace.run("db", "upgrade")
    assert second.exit_code == ExitCode.OK
    assert "already at" in second.stdout


def test_internal_error_exits_5_not_1(workspace, monkeypatch):
    def explode(job):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("ztctl.engine.stages.reconcile", explode)
    result = workspace.run("reconcile")
    assert result.exit_code == ExitCode.PARTIAL_FAILURE
    assert "internal error" in result.stderr
    assert "simulated bug" in result.stderr


def test_interrupt_exits_130(workspace, monkeypatch):
    def interrupt(job):
        raise KeyboardInterrupt

    monkeypatch.setattr("ztctl.engine.stages.reconcile", interrupt)
    result = workspace.run("reconcile")
    assert result.exit_code == ExitCode.INTERRUPTED


def test_declined_confirmation_applies_nothing(workspace, monkeypatch):
    workspace.load(f"networks:\n  - id: '{ENGINEERING}'\n    memberships:\n      - node: c3d4e5f6a7\n        state: active\n")
    monkeypatch.setattr("ztctl.cli.runner.stdin_is_terminal", lambda: True)
    workspace.emulator.clear_requests()
    result = workspace.run("diff", "--apply", input="n\n")
    assert result.exit_code == ExitCode.CHANGES_PENDING, result.output
    assert [r for r in workspace.emulator.requests if r.method != "GET"] == []


def test_portal_load_invalid_file_exits_2(workspace, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("networks:\n  - id: 123\n", encoding="utf-8")
    result = workspace.run("portal", "load", str(bad))
    assert result.exit_code == ExitCode.USAGE
    assert "networks[0]" in result.stderr


def test_portal_load_missing_file_exits_2(workspace, tmp_path):
    result = workspace.run("portal", "load", str(tmp_path / "absent.yaml"))
    assert result.exit_code == ExitCode.USAGE
    assert "absent.yaml" in result.stderr


def test_portal_dump_round_trip(workspace, tmp_path):
    text = (
        f"networks:\n  - id: '{ENGINEERING}'\n    name: engineering\n    memberships:\n"
        "      - node: 0123456789\n        owner: user-17\n        state: active\n"
        "        activations:\n          - start: 2026-12-04T09:00:00+02:00\n            expires: 2026-12-04T17:00:00Z\n"
    )
    workspace.load(text)
    dumped = workspace.run("portal", "dump")
    assert dumped.exit_code == ExitCode.OK
    assert "'0123456789'" in dumped.stdout
    assert "2026-12-04T07:00:00Z" in dumped.stdout
    again = tmp_path / "again.yaml"
    again.write_text(dumped.stdout, encoding="utf-8")
    reload = workspace.run("--output", "json", "portal", "load", str(again))
    assert reload.exit_code == ExitCode.OK
    assert json.loads(reload.stdout)["changes"] == []


def test_demo_shows_drift_and_converges():
    from typer.testing import CliRunner

    from ztctl.cli.app import app

    result = CliRunner().invoke(app, ["demo"], env={"ZTCTL_CONTROLLER_TOKEN": TOKEN})
    assert result.exit_code == ExitCode.OK, result.output
    out = result.stdout
    assert "1. ztctl diff" in out
    assert "authorized-not-active" in out
    assert "deauthorize" in out
    assert "3. ztctl diff again" in out
    after = out.split("3. ztctl diff again")[1]
    assert "0 member(s) to change" in after
    assert "active-not-authorized" not in after
    assert "the controller now matches the portal" in after


def test_demo_keep_serves_until_interrupted(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from typer.testing import CliRunner

    from ztctl.cli.app import app

    keep = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("ZTCTL_CONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "ztctl", "demo", "--keep", str(keep)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        assert any(f"export ZTCTL_CONFIG={keep / 'ztctl.yaml'}" in line for line in lines), "".join(lines)
        checked = CliRunner().invoke(
            app, ["--output", "json", "check"],
            env={"ZTCTL_CONFIG": str(keep / "ztctl.yaml"), "ZTCTL_CONTROLLER_TOKEN": "", "ZTCTL_DATABASE_URL": ""},
        )
        assert checked.exit_code == ExitCode.OK, checked.output
        assert {row["status"] for row in json.loads(checked.stdout)["checks"]} == {"ok"}
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert process.returncode == ExitCode.OK, process.stderr.read()
    assert (keep / "portal.db").exists()
    assert (keep / "authtoken.secret").stat().st_mode & 0o077 == 0


def test_demo_keep_refuses_directory_in_use(tmp_path):
    from typer.testing import CliRunner

    from ztctl.cli.app import app

    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    result = CliRunner().invoke(app, ["demo", "--keep", str(tmp_path)])

    assert result.exit_code == ExitCode.USAGE, result.output
    assert "not an empty directory" in result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_output_that_cannot_be_written_exits_5(workspace):
    import os
    import subprocess
    import sys

    env = {**os.environ, **workspace.environment()}
    with open("/dev/full", "w", encoding="utf-8") as full:
        result = subprocess.run(
            [sys.executable, "-m", "ztctl", "--output", "json", "diff"],
            stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=60, check=False,
        )

    assert result.returncode == ExitCode.PARTIAL_FAILURE, result.stderr
    assert "cannot write the output" in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_report_path_rejected_early(workspace, tmp_path):
    workspace.emulator.clear_requests()
    result = workspace.run("--report", str(tmp_path / "missing" / "report.json"), "reconcile")

    assert result.exit_code == ExitCode.USAGE, result.output
    assert "directory" in result.stderr
    assert "does not exist" in result.stderr
    assert [r for r in workspace.emulator.requests if r.method != "GET"] == []


def test_report_path_that_is_directory_rejected(workspace, tmp_path):
    result = workspace.run("--report", str(tmp_path), "reconcile")

    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"--report {tmp_path}: is a directory" in result.stderr


def test_report_write_failure_after_run_exits_5(workspace, monkeypatch, tmp_path):
    from ztctl.errors import ZtctlError

    def fail_to_write(*args, **kwargs):
        raise ZtctlError("cannot write report.json: No space left on device")

    monkeypatch.setattr("ztctl.cli.runner._write_files", fail_to_write)
    result = workspace.run("--report", str(tmp_path / "report.json"), "reconcile")

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "cannot write report.json" in result.stderr
    # The run itself finished its work, and its record shows exit status 0.
    assert workspace.sql("SELECT exit_code FROM runs ORDER BY id DESC LIMIT 1") == [(0,)]


def test_closed_stdout_exits_5(workspace):
    import os
    import subprocess
    import sys

    env = {**os.environ, **workspace.environment()}
    result = subprocess.run(
        [sys.executable, "-c", "import os; os.close(1); from ztctl.cli.app import main; main()", "diff"],
        stderr=subprocess.PIPE, text=True, env=env, timeout=60, check=False,
    )

    assert result.returncode == ExitCode.PARTIAL_FAILURE, result.stderr
    assert "cannot write the output" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_printed(workspace):
    from ztctl import __version__

    result = workspace.run("--version")

    assert result.exit_code == ExitCode.OK
    assert result.stdout == f"ztctl {__version__}\n"


def test_fatal_error_follows_json_log_format(workspace):
    workspace.emulator.stop()
    result = workspace.run("--log-format", "json", "reconcile")

    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == ExitCode.CONTROLLER, result.output
    assert any("cannot reach the controller" in record["message"] for record in records), records
    assert all(record["level"] for record in records)


def test_apply_with_audit_is_usage_error(workspace):
    result = workspace.run("--audit", "diff", "--apply", "--yes")

    assert result.exit_code == ExitCode.USAGE, result.output
    assert "--apply cannot be combined with --audit" in result.stderr


def test_demo_keep_with_json_output_rejected(tmp_path):
    from typer.testing import CliRunner

    from ztctl.cli.app import app

    result = CliRunner().invoke(app, ["--output", "json", "demo", "--keep", str(tmp_path / "demo")])

    assert result.exit_code == ExitCode.USAGE, result.output
    assert json.loads(result.stdout)["error"]["message"] == "--keep cannot be used with --output json"
    assert not (tmp_path / "demo").exists()
