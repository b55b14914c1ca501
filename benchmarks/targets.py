"""The scale targets of ``ztctl reconcile``, checked against a results file.

Each check returns one row per backend and size, with the measured value, the
limit and whether it holds. The targets are stated for 100,000 members in
1,000 networks; rows at smaller sizes are there for reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TARGET_SIZE = 100_000
FLOOR_FACTOR = 2.0
NAIVE_FACTOR = 10.0
MEMORY_FACTOR = 1.5
REQUEST_CONSTANT = 10
"""The "small constant" of the request budget: probes and other per-run requests."""
RUN_RECORD_TABLE = "runs"
"""Each run inserts and finishes its own row here, so a run with nothing to do still writes it."""


@dataclass(frozen=True)
class Check:
    target: str
    backend: str
    size: int
    measured: str
    limit: str
    holds: bool | None
    """None when the check could not be made, for example a failed run."""
    note: str = ""

    @property
    def is_stated_target(self) -> bool:
        return self.size == TARGET_SIZE

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "backend": self.backend, "size": self.size, "measured": self.measured,
            "limit": self.limit, "holds": self.holds, "note": self.note,
        }


def run_of(results: dict[str, Any], size: int, backend: str, name: str) -> dict[str, Any] | None:
    case = results.get("cases", {}).get(f"{size}/{backend}")
    if case is None:
        return None
    return case["runs"].get(name)


def succeeded(run: dict[str, Any] | None) -> bool:
    return run is not None and run.get("exit_code") == 0 and not run.get("timed_out")


def naive_seconds(results: dict[str, Any], backend: str, size: int) -> tuple[float, bool] | None:
    """Return the naive job's wall time at ``size`` and whether it was measured (False: extrapolated).

    An extrapolation is the least-squares line through every size measured on
    the backend, or proportional to the one size measured.
    """
    measured = {}
    for case in results.get("cases", {}).values():
        run = case["runs"].get("naive")
        if case["backend"] == backend and succeeded(run):
            measured[case["size"]] = run["wall_seconds"]
    if size in measured:
        return measured[size], True
    if not measured:
        return None
    if len(measured) == 1:
        ((known_size, seconds),) = measured.items()
        return seconds * size / known_size, False
    slope, intercept = _fit_line(measured)
    return intercept + slope * size, False


def _fit_line(points: dict[int, float]) -> tuple[float, float]:
    count = len(points)
    mean_x = sum(points) / count
    mean_y = sum(points.values()) / count
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points.items()) / sum((x - mean_x) ** 2 for x in points)
    return slope, mean_y - slope * mean_x


def rows_written(run: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Return per-table row writes: PostgreSQL's counters where measured, else the before/after comparison."""
    return run.get("row_writes", run.get("rows_changed", {}))


def evaluate(results: dict[str, Any]) -> list[Check]:
    checks = []
    for case in sorted(results.get("cases", {}).values(), key=lambda case: (case["backend"], case["size"])):
        backend, size = case["backend"], case["size"]
        checks.append(check_floor(results, backend, size))
        checks.append(check_naive(results, backend, size))
        checks.append(check_requests(results, case, requests_per_action=1))
        checks.append(check_requests(results, case, requests_per_action=2))
        checks.append(check_second_run(results, backend, size))
        if f"{size // 10}/{backend}" in results.get("cases", {}):
            checks.append(check_memory(results, backend, size))
    return checks


def check_floor(results: dict[str, Any], backend: str, size: int) -> Check:
    first, floor = run_of(results, size, backend, "reconcile_first"), run_of(results, size, backend, "floor")
    target = f"1st run within {FLOOR_FACTOR:g}x the floor"
    if not (succeeded(first) and succeeded(floor)):
        return Check(target, backend, size, "run failed", "", None)
    assert first is not None and floor is not None
    ratio = first["wall_seconds"] / floor["wall_seconds"]
    measured = f"{first['wall_seconds']:.2f} s = {ratio:.2f}x floor {floor['wall_seconds']:.2f} s"
    fresh = run_of(results, size, backend, "floor_fresh_connections")
    note = ""
    if succeeded(fresh):
        assert fresh is not None
        note = f"{first['wall_seconds'] / fresh['wall_seconds']:.1f}x the floor on fresh connections"
    return Check(target, backend, size, measured, f"<= {FLOOR_FACTOR:g}x", ratio <= FLOOR_FACTOR, note)


def check_naive(results: dict[str, Any], backend: str, size: int) -> Check:
    first = run_of(results, size, backend, "reconcile_first")
    naive = naive_seconds(results, backend, size)
    target = f"1st run at least {NAIVE_FACTOR:g}x faster than the naive job"
    if not succeeded(first) or naive is None:
        return Check(target, backend, size, "run failed or naive job not run", "", None)
    assert first is not None
    seconds, was_measured = naive
    speedup = seconds / first["wall_seconds"]
    how = "measured" if was_measured else "extrapolated"
    measured = f"naive {seconds:.1f} s ({how}) / {first['wall_seconds']:.2f} s = {speedup:.1f}x"
    return Check(target, backend, size, measured, f">= {NAIVE_FACTOR:g}x", speedup >= NAIVE_FACTOR,
                 "" if was_measured else "naive time is an extrapolation")


def check_requests(results: dict[str, Any], case: dict[str, Any], *, requests_per_action: int) -> Check:
    """Check the 1st run's requests against one list per network, ``requests_per_action`` per action and a constant.

    The stated budget is one request per action. ztctl re-reads a member
    right before it writes it, a safety rule, so the same check with two per
    action shows whether everything else stays within budget.
    """
    backend, size, networks = case["backend"], case["size"], case["networks"]
    first, second = run_of(results, size, backend, "reconcile_first"), run_of(results, size, backend, "reconcile_second")
    target = f"requests <= 1 list per network + {requests_per_action} per action + {REQUEST_CONSTANT}"
    if not succeeded(first):
        return Check(target, backend, size, "run failed", "", None)
    assert first is not None
    requests = first["requests"]
    actions = requests["writes"]
    budget = networks + requests_per_action * actions + REQUEST_CONSTANT
    measured = f"{requests['total']} requests, {actions} actions"
    note = ""
    if succeeded(second) and actions:
        assert second is not None
        per_action = (requests["total"] - second["requests"]["total"]) / actions
        per_network = second["requests"]["total"] / networks
        note = f"{per_action:.2f} requests per action; the 2nd run sent {per_network:.2f} per network"
    limit = f"<= {budget} ({networks} + {requests_per_action} x {actions} + {REQUEST_CONSTANT})"
    return Check(target, backend, size, measured, limit, requests["total"] <= budget, note)


def check_second_run(results: dict[str, Any], backend: str, size: int) -> Check:
    second = run_of(results, size, backend, "reconcile_second")
    target = "2nd run: no controller writes, no portal rows rewritten"
    if not succeeded(second):
        return Check(target, backend, size, "run failed", "", None)
    assert second is not None
    rewritten = {
        table: sum(counts.values())
        for table, counts in rows_written(second).items()
        if table != RUN_RECORD_TABLE and sum(counts.values())
    }
    writes = second["requests"]["writes"]
    tables = ", ".join(f"{table} {count}" for table, count in rewritten.items()) or "none"
    measured = f"{writes} controller writes; rows rewritten: {tables}"
    source = "PostgreSQL row counters" if "row_writes" in second else "row comparison before and after"
    note = f"from {source}; the run's own row in `{RUN_RECORD_TABLE}` is not counted"
    return Check(target, backend, size, measured, "0 and 0", writes == 0 and not rewritten, note)


def check_memory(results: dict[str, Any], backend: str, size: int) -> Check:
    """Compare the 1st run's peak memory with that at a tenth of the size, same network size."""
    base = size // 10
    target = f"peak memory within {MEMORY_FACTOR:g}x of {base:,} members"
    large = run_of(results, size, backend, "reconcile_first")
    small = run_of(results, base, backend, "reconcile_first")
    if not (succeeded(large) and succeeded(small)):
        return Check(target, backend, size, "run failed", "", None)
    assert large is not None and small is not None
    ratio = large["max_rss_kib"] / small["max_rss_kib"]
    measured = f"{_mib(large['max_rss_kib'])} MiB / {_mib(small['max_rss_kib'])} MiB = {ratio:.2f}x"
    return Check(target, backend, size, measured, f"<= {MEMORY_FACTOR:g}x", ratio <= MEMORY_FACTOR,
                 "1st runs; peak resident set size from wait4")


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"
