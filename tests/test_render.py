"""The Rich tables: IDs printed whole at any width, control characters escaped, and $COLUMNS taken only when valid."""

from __future__ import annotations

import io
import os
import sys
from datetime import UTC, datetime

import pytest
from rich.console import Console

from ztctl.cli import render
from ztctl.cli.render import printable, render_outcomes, render_plan, stdout_console
from ztctl.engine.model import (
    ActionKind,
    DriftKind,
    Finding,
    Mode,
    NetworkReport,
    Outcome,
    OutcomeStatus,
    RunResult,
    StageResult,
)

NETWORK = "8056c2e21c0000de"
HOSTILE = "eng\x1b[2J\x1b[31mPWN"


def run_result(*, name: str = "engineering", owner: str = "alice.longname@example.com", detail: str = "") -> RunResult:
    """A repair run on one network: a member to preauthorize and one to deauthorize, Central-style with a last-seen time."""
    preauthorize = Finding(
        NETWORK,
        "0000dead01",
        DriftKind.ACTIVE_MISSING,
        "active",
        "missing",
        ActionKind.PREAUTHORIZE,
        "active in the portal but not on the controller, so it is written before the member first joins",
        owner=owner,
        name="build server in the second rack",
    )
    deauthorize = Finding(
        NETWORK,
        "0000beef02",
        DriftKind.AUTHORIZED_NOT_ACTIVE,
        "inactive",
        "authorized, bridge",
        ActionKind.DEAUTHORIZE,
        "inactive in the portal but authorized on the controller",
        owner="bob",
        last_seen_at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        physical_address="203.0.113.9/9993",
    )
    report = NetworkReport(
        NETWORK,
        name=name,
        private=True,
        findings=[preauthorize, deauthorize],
        outcomes=[
            Outcome(preauthorize, OutcomeStatus.APPLIED, detail),
            Outcome(deauthorize, OutcomeStatus.FAILED, "the controller answered 503 twice; the next run tries again"),
        ],
        member_count=2,
    )
    stage = StageResult("repair", Mode.APPLY, datetime(2024, 5, 1, 13, 0, tzinfo=UTC))
    stage.add(report)
    return RunResult("repair", Mode.APPLY, [stage])


def render_all(console: Console, result: RunResult) -> None:
    render_plan(console, result)
    render_outcomes(console, result, always_summary=True)


def rendered(result: RunResult, width: int) -> str:
    console = Console(file=io.StringIO(), width=width)
    render_all(console, result)
    return console.file.getvalue()


@pytest.mark.parametrize("width", [200, 80, 60, 30])
def test_ids_print_whole_at_any_width(width):
    output = rendered(run_result(), width)

    for whole in (NETWORK, "0000dead01", "0000beef02", "preauthorize", "deauthorize", "active-missing",
                  "authorized-not-active", "applied", "failed"):
        assert whole in output, f"{whole!r} cut at width {width}:\n{output}"
    assert "…" not in output


@pytest.mark.parametrize("width", [80, 60])
def test_free_text_keeps_readable_width(width):
    output = rendered(run_result(), width)

    # Headers that fit the minimum width show that no column was squeezed away.
    for header in ("Owner / name", "Reason", "Last seen", "Detail", "Controller"):
        assert header in output
    for word in ("authorized,", "bridge", "controller", "inactive"):
        assert word in output


def test_fitting_table_keeps_console_width():
    output = rendered(run_result(), 140)

    assert max(len(line) for line in output.splitlines()) <= 140


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HOSTILE, "eng\\x1b[2J\\x1b[31mPWN"),
        ("tab\there\nnext\rline", "tab\\there\\nnext\\rline"),
        ("nul\x00 bell\x07 del\x7f csi\x9b nbsp\xa0", "nul\\x00 bell\\x07 del\\x7f csi\\x9b nbsp\xa0"),
        ("Zoë's laptop, 日本 [/] ok", "Zoë's laptop, 日本 [/] ok"),
    ],
)
def test_printable_escapes_only_controls(text, expected):
    assert printable(text) == expected


def test_outside_values_are_escaped():
    result = run_result(name=HOSTILE, owner=f"mallory{HOSTILE}", detail=f"done\r{HOSTILE}")
    report = result.stages[0].networks[0]
    report.refusal = f"refused by {HOSTILE}"
    result.stages[0].errors.append(f"portal query failed: {HOSTILE}")
    result.previous_failures.append(
        {"run_id": 7, "command": "repair", "network": NETWORK, "node": "0000dead01", "action": "authorize",
         "outcome": "failed", "detail": HOSTILE}
    )
    # A terminal with colour would add escapes of its own; a plain file shows only what the values carry.
    console = Console(file=io.StringIO(), width=120, color_system=None)

    render_all(console, result)
    output = console.file.getvalue()

    assert "\x1b" not in output
    assert "\r" not in output
    assert output.count("eng\\x1b[2J\\x1b[31mPWN") >= 5
    assert "done\\r" in output


def test_sync_line_prints_names_literally():
    report = NetworkReport(NETWORK, name=f"[/]{HOSTILE}", private=False, member_count=3, cache_changes=1)
    stage = StageResult("sync", Mode.APPLY, datetime(2024, 5, 1, tzinfo=UTC))
    stage.add(report)
    # Markup on, as on a console other than stdout_console(): "[/]" must not be read as a closing tag.
    console = Console(file=io.StringIO(), width=200, color_system=None)

    render_plan(console, RunResult("sync", Mode.APPLY, [stage]), summary=False)

    assert "([/]eng\\x1b[2J\\x1b[31mPWN), public: 3 member(s)" in console.file.getvalue()


@pytest.mark.parametrize("columns", ["0", "", "-20", "wide", "0x50"])
def test_invalid_columns_gives_pipe_width(monkeypatch, capsys, columns):
    monkeypatch.setenv("COLUMNS", columns)

    console = stdout_console()
    render_all(console, run_result())

    assert console.width == render._PIPE_WIDTH
    output = capsys.readouterr().out
    assert "Kind" in output
    assert "0000dead01" in output
    assert "preauthorize" in output


@pytest.mark.parametrize("width", [80, 60])
def test_columns_sets_width(monkeypatch, capsys, width):
    monkeypatch.setenv("COLUMNS", str(width))

    console = stdout_console()
    render_all(console, run_result())

    assert console.width == width
    output = capsys.readouterr().out
    assert "0000dead01" in output
    assert "preauthorize" in output


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return 1


def test_invalid_columns_gives_terminal_size(monkeypatch):
    monkeypatch.setenv("COLUMNS", "0")
    monkeypatch.setattr(sys, "stdout", FakeTerminal())
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=1: os.terminal_size((97, 30)))

    console = stdout_console()
    render_all(console, run_result())

    assert console.width == 97
    assert "preauthorize" in sys.stdout.getvalue()


def test_terminal_without_columns_uses_rich(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "stdout", FakeTerminal())
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=1: os.terminal_size((111, 30)))

    assert stdout_console().width == 111
