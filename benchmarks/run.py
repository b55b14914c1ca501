"""Run the scale benchmark of ``ztctl reconcile`` against the floor and a naive job.

From the repo root, with the virtual environment active::

    python -m benchmarks.run --sizes 1000,10000,100000 --backends sqlite,postgresql --drift 0.01

Results go to ``benchmarks/results/latest.json`` (``--results`` changes it),
rewritten after every case, with the Markdown tables beside it
(``latest.md``). ``--resume`` keeps the cases that an interrupted run of the
same parameters had finished and measures only the rest, including any case
with a failed run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import report
from benchmarks.cases import CaseSettings, run_case
from benchmarks.controller import REUSED_CONNECTION_DELAY, calibrate
from benchmarks.dataset import generate_dataset
from benchmarks.machine import describe_machine, describe_ztctl
from benchmarks.portal import DEFAULT_POSTGRES_URL
from benchmarks.process import REPO_ROOT, stop_on_sigterm
from benchmarks.profiling import find_py_spy
from benchmarks.targets import succeeded

log = logging.getLogger(__name__)

RESULTS_FORMAT = 1
DEFAULT_RESULTS = REPO_ROOT / "benchmarks" / "results" / "latest.json"
BACKENDS = ("sqlite", "postgresql")
FILE_LOADER_MAX_SIZE = 10_000
"""Above this size ``--portal-loader auto`` inserts rows in bulk: ``ztctl portal load`` took 34 s for 100,000."""

# Parameters that shape the data or the emulator: a resumed run must match them all.
_DATA_PARAMETERS = ("network_size", "drift_share", "seed", "reused_connection_delay")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])

    # What to measure.
    parser.add_argument("--sizes", type=_sizes, default=[1000, 10000, 100000],
                        help="total members per case, comma-separated (default: 1000,10000,100000)")
    parser.add_argument("--backends", type=_backends, default=list(BACKENDS),
                        help="portal databases, comma-separated: sqlite, postgresql (default: both)")
    parser.add_argument("--drift", type=float, default=0.01, dest="drift_share",
                        help="share of members that drifted, 0 to 1 (default: 0.01)")
    parser.add_argument("--network-size", type=int, default=100, help="members per network (default: 100)")
    parser.add_argument("--naive-max-size", type=int, default=10_000,
                        help="run the naive job up to this size and extrapolate above it (default: 10000)")

    # How the data is built.
    parser.add_argument("--portal-loader", choices=("auto", "file", "bulk"), default="auto",
                        help=f"load the portal with `ztctl portal load` (file) or bulk INSERTs (bulk); "
                             f"auto uses the file up to {FILE_LOADER_MAX_SIZE:,} members")
    parser.add_argument("--reused-connection-delay", type=float, default=REUSED_CONNECTION_DELAY,
                        help=f"emulator delay in seconds per reused-connection request (default: {REUSED_CONNECTION_DELAY})")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help=f"PostgreSQL server URL with a database to connect to for CREATE DATABASE "
                             f"(default: {DEFAULT_POSTGRES_URL})")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated data (default: 1)")

    # Where the results go, and how the runs are watched.
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a run is killed (default: 3600)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results JSON file to write")
    parser.add_argument("--resume", action="store_true", help="keep the finished cases of an existing results file")
    parser.add_argument("--profile", action="store_true",
                        help="also profile a 1st and a 2nd reconcile per case (not timed), with py-spy if "
                             "found, else cProfile; summaries go to a profiles/ folder beside the results")
    parser.add_argument("--py-spy", help="py-spy executable for --profile (default: py-spy on PATH)")

    arguments = parser.parse_args(argv)
    for size in arguments.sizes:
        if size % arguments.network_size:
            parser.error(f"invalid size {size}: it must be a multiple of --network-size {arguments.network_size}")
    if not 0 <= arguments.drift_share <= 1:
        parser.error(f"invalid --drift {arguments.drift_share}: expected a share from 0 to 1, such as 0.01")
    return arguments


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid sizes {text!r}: expected numbers such as 1000,10000") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"invalid sizes {text!r}: expected positive numbers")
    return sorted(set(sizes))


def _backends(text: str) -> list[str]:
    backends = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [backend for backend in backends if backend not in BACKENDS]
    if unknown or not backends:
        raise argparse.ArgumentTypeError(f"invalid backends {text!r}: expected sqlite, postgresql or both")
    return backends


def start_results(arguments: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Return the results to extend: the existing file's with ``--resume``, else a new record."""
    parameters = {name: getattr(arguments, name) for name in _DATA_PARAMETERS}
    if arguments.resume and arguments.results.exists():
        results = json.loads(arguments.results.read_text(encoding="utf-8"))
        previous = results.get("parameters", {})
        differing = [name for name in _DATA_PARAMETERS if previous.get(name) != parameters[name]]
        if differing:
            raise SystemExit(
                f"cannot resume {arguments.results}: its {', '.join(differing)} differ from this run's; "
                "rerun without --resume, or with the same parameters"
            )
        log.info("resuming %s: %d case(s) already measured", arguments.results, len(results.get("cases", {})))
        resumed = {"at": _now(), "command": _command_line(argv)}
        results.setdefault("resumed", []).append(resumed)
        return results

    postgres_url = arguments.postgres_url if "postgresql" in arguments.backends else None
    log.info("measuring the emulator's latency")
    return {
        "format": RESULTS_FORMAT,
        "command": _command_line(argv),
        "started_at": _now(),
        "parameters": parameters,
        "machine": describe_machine(postgres_url),
        "ztctl": describe_ztctl(),
        "calibration": calibrate(arguments.reused_connection_delay),
        "cases": {},
    }


def run_all(arguments: argparse.Namespace, results: dict[str, Any]) -> None:
    for size in arguments.sizes:
        pending = [backend for backend in arguments.backends if not _is_finished(results, f"{size}/{backend}")]
        if not pending:
            continue
        dataset = generate_dataset(
            size, network_size=arguments.network_size, drift_share=arguments.drift_share,
            seed=arguments.seed, now=datetime.now(UTC),
        )
        for backend in pending:
            log.info("case %d members / %s: started", size, backend)
            settings = CaseSettings(
                backend=backend,
                loader=_loader(arguments.portal_loader, size),
                reused_connection_delay=arguments.reused_connection_delay,
                postgres_url=arguments.postgres_url,
                run_naive=size <= arguments.naive_max_size,
                timeout=arguments.timeout,
                profile_dir=arguments.results.parent / "profiles" if arguments.profile else None,
                py_spy=find_py_spy(arguments.py_spy),
            )
            case = run_case(dataset, settings)
            case["ztctl_commit"] = describe_ztctl()["commit"]
            case["finished_at"] = _now()
            results["cases"][f"{size}/{backend}"] = case
            save(results, arguments.results)
            _log_case(case)


def _is_finished(results: dict[str, Any], key: str) -> bool:
    """Return whether a case was measured with every run succeeding; a resumed run measures the others again."""
    case = results["cases"].get(key)
    return case is not None and all(succeeded(run) for run in case["runs"].values())


def _loader(choice: str, size: int) -> str:
    if choice != "auto":
        return choice
    return "file" if size <= FILE_LOADER_MAX_SIZE else "bulk"


def save(results: dict[str, Any], path: Path) -> None:
    """Write the results and their Markdown tables, each through a temporary file, so a crash leaves the last good copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, text in ((path, json.dumps(results, indent=2) + "\n"),
                         (path.with_suffix(".md"), report.render(results))):
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)


def _log_case(case: dict[str, Any]) -> None:
    for name, run in case["runs"].items():
        log.info(
            "case %d members / %s: %s exit %d, %.2f s, %d requests, peak %d MiB",
            case["size"], case["backend"], name, run["exit_code"], run["wall_seconds"],
            run["requests"]["total"], run["max_rss_kib"] // 1024,
        )


def _check_postgres(url: str) -> None:
    try:
        with psycopg.connect("postgresql://" + url.split("://", 1)[1], connect_timeout=5):
            pass
    except psycopg.OperationalError as error:
        raise SystemExit(
            f"PostgreSQL at {url} is not reachable: {error}. Start it, pass --postgres-url, "
            "or run with --backends sqlite"
        ) from None


def _command_line(argv: list[str]) -> str:
    return shlex.join(["python", "-m", "benchmarks.run", *argv])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # Progress lines only: httpx and the emulator log every request at INFO. Under
    # ``python -m`` this module's logger is ``__main__``, outside the package's.
    for name in ("benchmarks", __name__):
        logging.getLogger(name).setLevel(logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    arguments = parse_arguments(argv)
    stop_on_sigterm()
    if "postgresql" in arguments.backends:
        _check_postgres(arguments.postgres_url)
    results = start_results(arguments, argv)
    run_all(arguments, results)
    results["finished_at"] = _now()
    save(results, arguments.results)
    sys.stdout.write(report.render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
