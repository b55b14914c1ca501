"""One benchmark case: one size on one backend, every run measured on copies of the same data.

Order of a case:

1. Build the pristine portal (``ztctl db upgrade``, then the portal file or
   bulk INSERTs).
2. Start an emulator seeded with the controller side, and run the floor on
   it, pooled and with fresh connections. Both only read.
3. ``ztctl reconcile`` twice on a copy of the portal and the same emulator:
   the first run repairs the drift with an empty cache, the second finds
   nothing left to do.
4. The naive job, if the case includes it, on a new copy of the portal and a
   newly seeded emulator.
5. With ``profile_dir``, a 1st and a 2nd run again under a profiler, not timed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import floor, naive, portal, profiling, rows
from benchmarks.controller import (
    count_mismatches,
    count_requests,
    new_token,
    start_controller,
)
from benchmarks.dataset import Dataset
from benchmarks.process import python_module, run_measured
from ztctl.controller.emulator import ControllerEmulator

PRISTINE = "pristine"


@dataclass(frozen=True)
class CaseSettings:
    backend: str
    loader: str
    """``file`` (``ztctl portal load``) or ``bulk`` (SQLAlchemy Core INSERTs)."""
    reused_connection_delay: float
    postgres_url: str
    run_naive: bool
    timeout: float
    profile_dir: Path | None = None
    py_spy: str | None = None
    """The py-spy executable for profiles; None selects cProfile, which profiles only the main thread."""


@dataclass
class CaseContext:
    dataset: Dataset
    settings: CaseSettings
    store: portal.SqliteStore | portal.PostgresStore
    workdir: Path
    env: dict[str, str]
    """Environment of every child: no inherited ``ZTCTL_*`` variable, ``ZTCTL_CONFIG`` set."""


def run_case(dataset: Dataset, settings: CaseSettings) -> dict[str, Any]:
    """Measure every run of one case and return its record for the results file."""
    # Other work on the machine slows every run; the load average lets a reader spot it.
    load_before = [round(value, 2) for value in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="ztctl-bench-") as directory:
        workdir = Path(directory)
        config = workdir / "ztctl.yaml"
        portal.write_ztctl_config(config)
        with _open_store(settings, workdir, dataset.size) as store:
            context = CaseContext(dataset, settings, store, workdir, portal.ztctl_env(config))
            setup = build_pristine(context)
            runs = measure_floor_and_reconcile(context)
            if settings.run_naive:
                runs["naive"] = measure_naive(context)
            if settings.profile_dir is not None:
                setup["profiles"] = profile_reconcile(context, settings.profile_dir)
    return {
        "size": dataset.size,
        "networks": len(dataset.networks),
        "backend": settings.backend,
        "drift": dataset.drift_counts(),
        "setup": setup,
        "load_average_before": load_before,
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "runs": runs,
    }


@contextmanager
def _open_store(settings: CaseSettings, workdir: Path, size: int) -> Iterator[Any]:
    if settings.backend == "sqlite":
        store: Any = portal.SqliteStore(workdir)
    else:
        prefix = f"ztctl_bench_{workdir.name.rsplit('-', 1)[-1].lower()}_{size}"
        store = portal.PostgresStore(settings.postgres_url, prefix)
    try:
        yield store
    finally:
        store.close()


def build_pristine(context: CaseContext) -> dict[str, Any]:
    start = time.perf_counter()
    url = context.store.create(PRISTINE)
    portal.upgrade_schema(url, context.env)
    if context.settings.loader == "file":
        portal.load_portal_file(url, context.dataset, context.workdir / "portal.json", context.env)
    else:
        portal.insert_portal_rows(url, context.dataset)
    portal.analyze(url)
    return {"portal_loader": context.settings.loader, "portal_seconds": round(time.perf_counter() - start, 3)}


def measure_floor_and_reconcile(context: CaseContext) -> dict[str, Any]:
    token = new_token()
    emulator = _seeded_emulator(context, token)
    try:
        ids_file = context.workdir / "network_ids.json"
        ids_file.write_text(json.dumps(context.dataset.network_ids), encoding="utf-8")
        floor_env = {**context.env, floor.TOKEN_VARIABLE: token}
        runs = {}
        for name, extra in (("floor", []), ("floor_fresh_connections", ["--fresh-connections"])):
            argv = python_module("benchmarks.floor", emulator.url, str(ids_file), *extra)
            runs[name] = measure_run(context, emulator, argv, floor_env, database_url=None, prints_report=True)

        url = context.store.clone(PRISTINE, "reconcile")
        reconcile_env = _reconcile_env(context, emulator, url)
        for name in ("reconcile_first", "reconcile_second"):
            argv = python_module("ztctl", "reconcile")
            runs[name] = measure_run(context, emulator, argv, reconcile_env, database_url=url)
        return runs
    finally:
        emulator.stop()


def measure_naive(context: CaseContext) -> dict[str, Any]:
    token = new_token()
    emulator = _seeded_emulator(context, token)
    try:
        url = context.store.clone(PRISTINE, "naive")
        naive.create_cache_table(url)
        argv = python_module("benchmarks.naive", emulator.url, url)
        env = {**context.env, floor.TOKEN_VARIABLE: token}
        return measure_run(context, emulator, argv, env, database_url=url, prints_report=True)
    finally:
        emulator.stop()


def measure_run(
    context: CaseContext,
    emulator: ControllerEmulator,
    argv: list[str],
    env: dict[str, str],
    *,
    database_url: str | None,
    prints_report: bool = False,
) -> dict[str, Any]:
    """Run one measured child and return its times, memory, requests and, for a writer, its row writes."""
    postgres_url = database_url if context.settings.backend == "postgresql" else None
    before = rows.snapshot(database_url) if database_url else None
    counters_before = rows.table_write_counts(postgres_url) if postgres_url else None
    emulator.clear_requests()

    result = run_measured(argv, env=env, timeout=context.settings.timeout)

    record: dict[str, Any] = result.to_dict()
    record["requests"] = count_requests(emulator.requests).to_dict()
    if prints_report and result.exit_code == 0:
        record["report"] = json.loads(result.stdout)
    if postgres_url:
        # Read before the snapshot below connects, so that its transaction is not counted.
        counters_after = rows.table_write_counts(postgres_url)
        record["row_writes"], record["transactions"] = rows.diff_write_counts(counters_before or {}, counters_after)
    if database_url is not None:
        record["rows_changed"] = rows.diff_snapshots(before or {}, rows.snapshot(database_url))
        record["mismatches_after"] = count_mismatches(emulator, context.dataset)
    return record


def profile_reconcile(context: CaseContext, profile_dir: Path) -> list[str]:
    """Profile a 1st and a 2nd reconcile on fresh copies of the data; return the summary files' names."""
    token = new_token()
    emulator = _seeded_emulator(context, token)
    summaries = []
    try:
        url = context.store.clone(PRISTINE, "profile")
        for run_name in ("first", "second"):
            stem = profile_dir / f"reconcile-{run_name}-{context.dataset.size}-{context.settings.backend}"
            summary = profiling.profile_command(
                python_module("ztctl", "reconcile"),
                env=_reconcile_env(context, emulator, url),
                output_stem=stem,
                timeout=context.settings.timeout,
                py_spy=context.settings.py_spy,
            )
            summaries.append(summary.name)
    finally:
        emulator.stop()
    return summaries


def _seeded_emulator(context: CaseContext, token: str) -> ControllerEmulator:
    return start_controller(
        context.dataset, token, reused_connection_delay=context.settings.reused_connection_delay
    )


def _reconcile_env(context: CaseContext, emulator: ControllerEmulator, url: str) -> dict[str, str]:
    return {
        **context.env,
        "ZTCTL_DATABASE_URL": url,
        "ZTCTL_CONTROLLER_URL": emulator.url,
        "ZTCTL_CONTROLLER_TOKEN": emulator.token,
    }
