"""The controller token and the database password never appear in any output, file or table.

Every command runs with recognisable secrets: a controller token and a
PostgreSQL password that are easy to search for. The runs cover every
command and output mode, failing runs (a rejected token, a stopped
controller, an unreachable database) and crashes whose exception message
contains the secrets. The tests then search stdout and stderr of every run,
every file under the test's directory, and every row of every portal table.

Most runs go through the CLI in-process. Each starts with an empty registry
of secrets to redact, as a new process would, so a secret that an earlier run
registered cannot hide a leak. A few run as real processes, to include the
interpreter's own error output.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from scenario import ENGINEERING, Workspace, drift_portal, seed_drift_controller
from sqlalchemy.engine import make_url

import ztctl.redact
from ztctl.controller.emulator import ControllerEmulator, Fault
from ztctl.errors import ExitCode

TOKEN = "TOPSECRET-canary-7f3a"
WRONG_TOKEN = "WRONGTOKEN-canary-3c8d"
PASSWORD = "PASSWORD-canary-91c2"
CANARIES = (TOKEN, WRONG_TOKEN, PASSWORD)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTEXT_CHARS = 60

COMMANDS = {
    "reconcile": ("reconcile",),
    "expire": ("expire",),
    "sync": ("sync",),
    "diff": ("diff",),
    "diff-apply": ("diff", "--apply", "--yes"),
    "repair": ("repair",),
    "unknown": ("unknown",),
    "portal-load": ("portal", "load", "{portal_file}"),
    "portal-dump": ("portal", "dump"),
    "db-upgrade": ("db", "upgrade"),
}
JOB_COMMANDS = ("reconcile", "expire", "sync", "diff", "diff-apply", "repair", "unknown")

# Read-only modes run first, while the drift is still there. Each apply run
# after them starts from the drifted scenario again.
FLAG_SETS = {
    "dry-run": ("-vvv", "--dry-run", "--output", "json"),
    "audit": ("-vvv", "--audit"),
    "verbose": ("-vvv",),
    "json": ("--output", "json"),
    "plain": (),
}
OK, PENDING, USAGE = ExitCode.OK, ExitCode.CHANGES_PENDING, ExitCode.USAGE
# Exit status of each command in a dry run, an audit, and the three apply runs.
# `unknown` has nothing to apply under the report policy, `diff` without
# --apply is a dry run, `--apply` rejects the read-only modes, and `portal load`,
# `portal dump` and `db upgrade` reject the modes they lack.
EXPECTED_CODES = {
    "reconcile": (PENDING, PENDING, OK),
    "expire": (PENDING, PENDING, OK),
    "sync": (PENDING, PENDING, OK),
    "diff": (PENDING, PENDING, PENDING),
    "diff-apply": (USAGE, USAGE, OK),
    "repair": (PENDING, PENDING, OK),
    "unknown": (OK, PENDING, OK),
    "portal-load": (OK, USAGE, OK),
    "portal-dump": (USAGE, USAGE, OK),
    "db-upgrade": (USAGE, USAGE, OK),
}


@dataclass
class Evidence:
    """The stdout and stderr of every run of one test, labelled by run."""

    outputs: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, stdout: str, stderr: str) -> None:
        self.outputs.append((f"{label} (stdout)", stdout))
        self.outputs.append((f"{label} (stderr)", stderr))


def leaks_in(label: str, text: str) -> list[str]:
    """Describe each secret found in ``text``, with the text around it."""
    found = []
    for canary in CANARIES:
        index = text.find(canary)
        if index >= 0:
            around = text[max(0, index - CONTEXT_CHARS): index + len(canary) + CONTEXT_CHARS]
            found.append(f"{label}: {around!r}")
    return found


def output_leaks(evidence: Evidence) -> list[str]:
    return [leak for label, text in evidence.outputs for leak in leaks_in(label, text)]


def file_leaks(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            found.extend(leaks_in(str(path), path.read_bytes().decode("utf-8", errors="replace")))
    return found


def database_leaks(workspace: Workspace) -> list[str]:
    found = []
    for table, rows in workspace.table_rows().items():
        for row in rows:
            found.extend(leaks_in(f"table {table}", repr(row)))
    return found


def assert_no_leaks(evidence: Evidence, workspace: Workspace, root: Path) -> None:
    assert evidence.outputs, "no run was captured, so nothing was searched"
    # One assert over all three places, so that a failure lists every place that leaked.
    leaks = {"outputs": output_leaks(evidence), "files": file_leaks(root), "tables": database_leaks(workspace)}
    assert leaks == {"outputs": [], "files": [], "tables": []}


def url_with_password(url: str) -> str:
    """Return ``url`` with ``PASSWORD`` as its password on PostgreSQL, whose test server accepts any password."""
    if not url.startswith("postgresql"):
        return url
    return make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SecretWorkspace(Workspace):
    """A workspace whose token and database URL come from the environment, so no input file contains a secret."""

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "ZTCTL_CONTROLLER_TOKEN": TOKEN,
                "ZTCTL_DATABASE_URL": url_with_password(self.database_url), **self.env}


@pytest.fixture
def start_emulator(make_emulator):
    def start() -> ControllerEmulator:
        emulator = make_emulator(token=TOKEN)
        seed_drift_controller(emulator)
        return emulator

    return start


@pytest.fixture
def workspace(tmp_path, portal_url, start_emulator, monkeypatch):
    root = tmp_path / "workspace"
    root.mkdir()
    space = SecretWorkspace(root, portal_url, start_emulator())
    space.portal_file = root / "portal.yaml"
    space.portal_file.write_text(drift_portal(datetime.now(UTC)), encoding="utf-8")
    result = run_fresh(space, monkeypatch, "portal", "load", str(space.portal_file))
    assert result.exit_code == ExitCode.OK, result.output
    return space


def run_fresh(workspace: Workspace, monkeypatch, *args: str):
    """Run the CLI in-process with an empty redaction registry, as in a new process."""
    monkeypatch.setattr(ztctl.redact, "_secrets", set())
    try:
        return workspace.run(*args)
    finally:
        detach_cli_log_handler()


def detach_cli_log_handler() -> None:
    """Remove the handler that the CLI added to the root logger, whose stream the runner has closed.

    Otherwise the emulator's log lines at teardown go to that closed stream.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_ztctl", False):
            root.removeHandler(handler)


def record(evidence: Evidence, label: str, result) -> None:
    evidence.add(label, result.stdout, result.stderr)


def restore_drift(workspace: Workspace, start_emulator, monkeypatch, evidence: Evidence) -> None:
    """Point the workspace at a new drifted controller and load the drifted portal again."""
    workspace.emulator = start_emulator()
    workspace.write_config()
    result = run_fresh(workspace, monkeypatch, "portal", "load", str(workspace.portal_file))
    record(evidence, "portal load (restoring drift)", result)
    assert result.exit_code == ExitCode.OK, result.output


def command_args(name: str, workspace: Workspace) -> list[str]:
    return [part.format(portal_file=workspace.portal_file) for part in COMMANDS[name]]


def token_was_sent(emulator: ControllerEmulator, token: str) -> bool:
    return any(request.headers.get("x-zt1-auth") == token for request in emulator.requests)


# Every command, every mode, with the right token -----------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_command_output_has_no_secret(workspace, start_emulator, monkeypatch, tmp_path, command):
    evidence = Evidence()
    codes = {}
    for flags_name, flags in FLAG_SETS.items():
        if flags_name in ("verbose", "json", "plain"):
            restore_drift(workspace, start_emulator, monkeypatch, evidence)
        result = run_fresh(workspace, monkeypatch, *flags, *command_args(command, workspace))
        record(evidence, f"{command} {flags_name}", result)
        codes[flags_name] = result.exit_code

    # A run that failed early would prove nothing about the paths it never reached.
    dry_run, audit, apply = EXPECTED_CODES[command]
    assert codes == {"dry-run": dry_run, "audit": audit, "verbose": apply, "json": apply, "plain": apply}
    if command in JOB_COMMANDS:
        assert token_was_sent(workspace.emulator, TOKEN)
    assert_no_leaks(evidence, workspace, tmp_path)


def test_real_process_output_has_no_secret(workspace, tmp_path):
    evidence = Evidence()
    environment = {name: value for name, value in os.environ.items() if not name.startswith("ZTCTL_")}
    environment.update(workspace.environment())
    for args in (["-vvv", "reconcile"], ["-vvv", "--output", "json", "diff"]):
        finished = subprocess.run(
            [sys.executable, "-m", "ztctl", *args], cwd=REPO_ROOT, env=environment,
            capture_output=True, text=True, timeout=120, check=False,
        )
        evidence.add(" ".join(args), finished.stdout, finished.stderr)
        assert finished.returncode in (ExitCode.OK, ExitCode.CHANGES_PENDING), finished.stderr

    assert token_was_sent(workspace.emulator, TOKEN)
    assert_no_leaks(evidence, workspace, tmp_path)


# Failing runs ----------------------------------------------------------------


def test_wrong_token_not_shown(workspace, monkeypatch, tmp_path):
    workspace.env["ZTCTL_CONTROLLER_TOKEN"] = WRONG_TOKEN
    evidence = Evidence()
    for command in JOB_COMMANDS:
        for flags in (("-vvv",), ("-vvv", "--output", "json")):
            result = run_fresh(workspace, monkeypatch, *flags, *command_args(command, workspace))
            record(evidence, f"{command} {' '.join(flags)}", result)
            assert result.exit_code == ExitCode.CONTROLLER, result.output
            assert "rejected" in result.stderr

    assert token_was_sent(workspace.emulator, WRONG_TOKEN)
    assert_no_leaks(evidence, workspace, tmp_path)


@pytest.mark.parametrize("token", [TOKEN, WRONG_TOKEN], ids=["right", "wrong"])
def test_token_file_not_shown(workspace, monkeypatch, tmp_path, tmp_path_factory, token):
    # The token file is input, so it lives outside the directory that is searched.
    token_file = tmp_path_factory.mktemp("token") / "authtoken.secret"
    token_file.write_text(token + "\n", encoding="utf-8")
    workspace.env["ZTCTL_CONTROLLER_TOKEN"] = ""
    workspace.env["ZTCTL_CONTROLLER_TOKEN_FILE"] = str(token_file)
    expected = ExitCode.OK if token == TOKEN else ExitCode.CONTROLLER
    evidence = Evidence()
    for flags in (("-vvv",), ("-vvv", "--output", "json"), ("--output", "json", "--dry-run")):
        result = run_fresh(workspace, monkeypatch, *flags, "reconcile")
        record(evidence, f"reconcile {' '.join(flags)}", result)
        assert result.exit_code in (expected, ExitCode.CHANGES_PENDING), result.output

    assert token_was_sent(workspace.emulator, token)
    assert_no_leaks(evidence, workspace, tmp_path)


def test_token_file_with_two_lines_not_shown(workspace, monkeypatch, tmp_path, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("token") / "authtoken.secret"
    token_file.write_text(f"{TOKEN}\n{WRONG_TOKEN}\n", encoding="utf-8")
    workspace.env["ZTCTL_CONTROLLER_TOKEN"] = ""
    workspace.env["ZTCTL_CONTROLLER_TOKEN_FILE"] = str(token_file)
    evidence = Evidence()
    for flags in (("-vvv",), ("-vvv", "--output", "json")):
        result = run_fresh(workspace, monkeypatch, *flags, "reconcile")
        record(evidence, f"reconcile {' '.join(flags)}", result)
        assert result.exit_code == ExitCode.CONFIG, result.output

    assert_no_leaks(evidence, workspace, tmp_path)


def test_stopped_controller_not_shown(workspace, monkeypatch, tmp_path):
    workspace.emulator.stop()
    evidence = Evidence()
    for command in JOB_COMMANDS:
        for flags in (("-vvv",), ("-vvv", "--output", "json")):
            result = run_fresh(workspace, monkeypatch, *flags, *command_args(command, workspace))
            record(evidence, f"{command} {' '.join(flags)}", result)
            assert result.exit_code == ExitCode.CONTROLLER, result.output

    assert_no_leaks(evidence, workspace, tmp_path)


def test_unreachable_database_not_shown(workspace, monkeypatch, tmp_path):
    # Nothing listens on this port, so the connection fails with the password in the URL.
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/ztctl_test_unreachable"
    workspace.env["ZTCTL_DATABASE_URL"] = url
    evidence = Evidence()
    for command in ("reconcile", "diff", "portal-load", "portal-dump", "db-upgrade"):
        for flags in (("-vvv",), ("-vvv", "--output", "json")):
            result = run_fresh(workspace, monkeypatch, *flags, *command_args(command, workspace))
            record(evidence, f"{command} {' '.join(flags)}", result)
            assert result.exit_code == ExitCode.CONFIG, result.output
            assert "127.0.0.1" in result.stderr

    assert_no_leaks(evidence, workspace, tmp_path)


# Crashes and controller responses that carry a secret ------------------------


def crash_with_secrets(*_args, **_kwargs):
    raise RuntimeError(f"simulated crash: token={os.environ['ZTCTL_CONTROLLER_TOKEN']} url={os.environ['ZTCTL_DATABASE_URL']}")


def test_crash_message_not_shown(workspace, monkeypatch, tmp_path):
    monkeypatch.setattr("ztctl.engine.apply.send_action", crash_with_secrets)
    evidence = Evidence()
    for flags in ((), ("-vvv",), ("-vvv", "--output", "json")):
        result = run_fresh(workspace, monkeypatch, *flags, "reconcile")
        record(evidence, f"reconcile {' '.join(flags)}", result)
        assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
        assert "simulated crash" in result.stderr

    assert_no_leaks(evidence, workspace, tmp_path)


CRASHING_CLI = textwrap.dedent(
    """
    import os
    import ztctl.engine.apply

    def crash(*args, **kwargs):
        raise RuntimeError(
            "simulated crash: token=" + os.environ["ZTCTL_CONTROLLER_TOKEN"]
            + " url=" + os.environ["ZTCTL_DATABASE_URL"]
        )

    ztctl.engine.apply.send_action = crash
    from ztctl.cli.app import main
    main()
    """
)


def test_crash_in_real_process_not_shown(workspace, tmp_path):
    environment = {name: value for name, value in os.environ.items() if not name.startswith("ZTCTL_")}
    environment.update(workspace.environment())
    evidence = Evidence()
    for flags in (["-vvv"], ["-vvv", "--output", "json"]):
        finished = subprocess.run(
            [sys.executable, "-c", CRASHING_CLI, *flags, "reconcile"], cwd=REPO_ROOT, env=environment,
            capture_output=True, text=True, timeout=120, check=False,
        )
        evidence.add(f"crashing reconcile {' '.join(flags)}", finished.stdout, finished.stderr)
        assert finished.returncode == ExitCode.PARTIAL_FAILURE, finished.stderr
        assert "simulated crash" in finished.stderr

    assert_no_leaks(evidence, workspace, tmp_path)


def test_controller_echoing_token_not_shown(workspace, monkeypatch, tmp_path):
    # A proxy in front of the controller may quote the whole request, token
    # included, in an error page. ztctl quotes the start of an error body in its messages.
    body = f'{{"error": 500, "description": "rejected request with X-ZT1-Auth: {TOKEN}"}}'
    workspace.emulator.inject(
        Fault.status(500, body, headers={"Content-Type": "application/json"}),
        method="POST", path=rf"/controller/network/{ENGINEERING}/member/[0-9a-f]{{10}}", times=100,
    )
    evidence = Evidence()
    for flags in (("-vvv", "--output", "json"), ("-vvv",)):
        result = run_fresh(workspace, monkeypatch, *flags, "reconcile")
        record(evidence, f"reconcile {' '.join(flags)}", result)
        assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output

    assert_no_leaks(evidence, workspace, tmp_path)
