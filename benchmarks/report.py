"""Render a results file as Markdown tables, with the targets and whether they hold.

Regenerate the tables of an earlier run without measuring again::

    python -m benchmarks.report benchmarks/results/latest.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.controller import REQUEST_KINDS
from benchmarks.targets import (
    TARGET_SIZE,
    Check,
    evaluate,
    naive_seconds,
    rows_written,
    run_of,
    succeeded,
)

RUN_NAMES = {
    "floor": "floor (pooled)",
    "floor_fresh_connections": "floor (fresh connections)",
    "reconcile_first": "reconcile, 1st run",
    "reconcile_second": "reconcile, 2nd run",
    "naive": "naive job",
}
_KIND_HEADINGS = {
    "bulk_list": "bulk list", "list": "list", "member_get": "member GET", "network_get": "network GET",
    "post": "POST", "delete": "DELETE", "other": "other",
}


def render(results: dict[str, Any]) -> str:
    sections = [
        _render_header(results),
        _render_times(results),
        _render_requests(results),
        _render_rows_and_memory(results),
        _render_targets(evaluate(results)),
    ]
    return "\n\n".join(sections) + "\n"


def _cases(results: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(results.get("cases", {}).values(), key=lambda case: (case["backend"], case["size"]))


def _render_header(results: dict[str, Any]) -> str:
    calibration = results.get("calibration", {})
    ztctl = results.get("ztctl", {})
    parameters = results.get("parameters", {})
    data = (
        f"Drift share {parameters.get('drift_share')}, networks of {parameters.get('network_size')} members, "
        f"seed {parameters.get('seed')}."
    )
    emulator = (
        f"Emulator reused-connection delay {calibration.get('reused_connection_delay_s')} s: a pooled httpx "
        f"client measured {calibration.get('pooled_ms_per_request')} ms per request, and "
        f"{calibration.get('fresh_connection_ms_per_request')} ms with `Connection: close`."
    )
    commits = sorted({case.get("ztctl_commit") or "?" for case in results.get("cases", {}).values()})
    version = (
        f"ztctl {ztctl.get('version', '?')}, started {results.get('started_at', '?')} at commit "
        f"{ztctl.get('commit', '?')}; cases finished at {', '.join(commits)}."
    )
    commands = [f"Command: `{results.get('command', '?')}`"]
    commands += [f"Resumed {entry['at']} with `{entry['command']}`" for entry in results.get("resumed", [])]
    return "\n".join(["  \n".join(commands), "", version, data, emulator])


def _render_times(results: dict[str, Any]) -> str:
    lines = [
        "### Wall time (seconds, whole child process)",
        "",
        (
            "| backend | members | networks | floor (pooled) | floor (fresh connections) | reconcile, 1st run "
            "| reconcile, 2nd run | naive job | 1st run / floor | naive / 1st run |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in _cases(results):
        backend, size = case["backend"], case["size"]
        cells = [_seconds(run_of(results, size, backend, name))
                 for name in ("floor", "floor_fresh_connections", "reconcile_first", "reconcile_second")]
        naive = naive_seconds(results, backend, size)
        if naive is None:
            naive_cell = "-"
        elif naive[1]:
            naive_cell = f"{naive[0]:.1f}"
        else:
            naive_cell = f"~{naive[0]:.0f} (extrapolated)"
        first, floor = run_of(results, size, backend, "reconcile_first"), run_of(results, size, backend, "floor")
        ratio = _ratio(first, floor)
        speedup = "-" if naive is None or not succeeded(first) else f"{naive[0] / first['wall_seconds']:.1f}x"
        lines.append(f"| {backend} | {size:,} | {case['networks']:,} | " + " | ".join(cells)
                     + f" | {naive_cell} | {ratio} | {speedup} |")
    return "\n".join(lines)


def _render_requests(results: dict[str, Any]) -> str:
    kinds = [kind for kind in ("bulk_list", "list", "member_get", "network_get", "post", "delete", "other")
             if kind in REQUEST_KINDS]
    lines = [
        "### Requests sent to the controller, by kind",
        "",
        "| backend | members | run | " + " | ".join(_KIND_HEADINGS[kind] for kind in kinds) + " | total | connections |",
        "| --- | ---: | --- | " + " | ".join("---:" for _ in kinds) + " | ---: | ---: |",
    ]
    for case in _cases(results):
        for name, run in case["runs"].items():
            counts = run["requests"]
            cells = [str(counts["by_kind"].get(kind, 0)) for kind in kinds]
            lines.append(f"| {case['backend']} | {case['size']:,} | {RUN_NAMES.get(name, name)} | "
                         + " | ".join(cells) + f" | {counts['total']} | {counts['connections']} |")
    return "\n".join(lines)


def _render_rows_and_memory(results: dict[str, Any]) -> str:
    lines = [
        "### Portal rows written, peak memory and CPU time",
        "",
        (
            "Rows: `+` inserted, `~` updated, `-` deleted. PostgreSQL rows come from `pg_stat_user_tables`, "
            "SQLite rows from comparing every row before and after the run. Transactions: commits counted by "
            "`pg_stat_database` (PostgreSQL only)."
        ),
        "",
        "| backend | members | run | exit | rows written | transactions | peak RSS (MiB) | CPU (s) |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for case in _cases(results):
        for name, run in case["runs"].items():
            written = _format_rows(rows_written(run)) if ("rows_changed" in run or "row_writes" in run) else "-"
            transactions = run.get("transactions")
            committed = "-" if transactions is None else str(transactions["committed"])
            lines.append(
                f"| {case['backend']} | {case['size']:,} | {RUN_NAMES.get(name, name)} | {run['exit_code']} | "
                f"{written} | {committed} | {run['max_rss_kib'] / 1024:.0f} | {run['cpu_seconds']:.2f} |"
            )
    return "\n".join(lines)


def _render_targets(checks: list[Check]) -> str:
    lines = [
        "### Targets",
        "",
        f"The targets are set for {TARGET_SIZE:,} members; rows at other sizes are for reference.",
        "",
        "| target | backend | members | measured | limit | result | note |",
        "| --- | --- | ---: | --- | --- | --- | --- |",
    ]
    for check in checks:
        result = {True: "pass", False: "FAIL", None: "not measured"}[check.holds]
        if not check.is_stated_target and check.holds is not None:
            result += " (reference)"
        lines.append(f"| {check.target} | {check.backend} | {check.size:,} | {check.measured} | {check.limit} | "
                     f"{result} | {check.note} |")
    return "\n".join(lines)


def _seconds(run: dict[str, Any] | None) -> str:
    if run is None:
        return "-"
    if not succeeded(run):
        return f"failed (exit {run['exit_code']})"
    return f"{run['wall_seconds']:.2f}"


def _ratio(first: dict[str, Any] | None, floor: dict[str, Any] | None) -> str:
    if not (succeeded(first) and succeeded(floor)):
        return "-"
    assert first is not None and floor is not None
    return f"{first['wall_seconds'] / floor['wall_seconds']:.2f}x"


def _format_rows(tables: dict[str, dict[str, int]]) -> str:
    parts = []
    for table, counts in sorted(tables.items()):
        marks = [f"{sign}{counts[kind]}" for sign, kind in (("+", "inserted"), ("~", "updated"), ("-", "deleted"))
                 if counts.get(kind)]
        if marks:
            parts.append(f"{table} {' '.join(marks)}")
    return "; ".join(parts) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results JSON written by python -m benchmarks.run")
    arguments = parser.parse_args(argv)
    results = json.loads(arguments.results.read_text(encoding="utf-8"))
    markdown = render(results)
    arguments.results.with_suffix(".md").write_text(markdown, encoding="utf-8")
    sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
