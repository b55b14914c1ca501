"""Files a run leaves for machines: the JSON findings report and the Prometheus metrics.

The report (``--report FILE``) is for a CI artifact. Its fields are stable:
``schema`` rises when a field changes meaning or goes away. Both files are
written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ztctl import __version__
from ztctl.cli.jsonout import encode_json_value, error_object
from ztctl.engine.model import RunResult
from ztctl.errors import ZtctlError
from ztctl.portal.models import utc_now
from ztctl.redact import redact

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

REPORT_SCHEMA = 1


def report_document(
    result: RunResult | None, *, command: str, mode: str, exit_code: int, error: BaseException | None
) -> dict[str, Any]:
    """Build the findings report: one flat list of findings, the counts, errors and refusals."""
    document: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "kind": "ztctl-report",
        "generated_at": utc_now(),
        "ztctl": __version__,
        "command": command,
        "mode": mode,
        "exit_code": exit_code,
        "error": error_object(error),
        "counts": result.counts.to_dict() if result else None,
        "findings": [],
        "errors": [],
        "refusals": [],
    }
    if result is None:
        return document
    for stage in result.stages:
        document["errors"].extend(stage.errors)
        for report in stage.networks:
            if report.error:
                document["errors"].append(f"network {report.network_id}: {report.error}")
            refusal = {"network": report.network_id, "reason": report.refusal}
            # A refusal holds for every stage of the run on its network.
            if report.refusal and refusal not in document["refusals"]:
                document["refusals"].append(refusal)
            for finding in report.findings:
                document["findings"].append({"stage": stage.stage, "network_name": report.name, **finding.to_dict()})
    return document


def write_report(path: Path, document: dict[str, Any]) -> None:
    text = redact(json.dumps(document, indent=2, default=encode_json_value)) + "\n"
    _write_atomically(path, text)


def write_metrics(
    path: Path,
    result: RunResult | None,
    *,
    command: str,
    exit_code: int,
    started: float,
    last_success: datetime | None,
) -> None:
    """Write this run's metrics in the Prometheus text format, with the prometheus_client writer."""
    # Imported here: most runs write no metrics, and cron pays the import on every run.
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    labels = ["command"]
    Gauge("ztctl_last_run_timestamp_seconds", "When the last run finished.", labels, registry=registry).labels(
        command
    ).set(time.time())
    Gauge("ztctl_last_run_exit_code", "Exit status of the last run.", labels, registry=registry).labels(command).set(
        exit_code
    )
    Gauge("ztctl_last_run_duration_seconds", "How long the last run took.", labels, registry=registry).labels(
        command
    ).set(time.monotonic() - started)
    success = Gauge(
        "ztctl_last_success_timestamp_seconds", "When the last run with exit status 0 finished.", labels,
        registry=registry,
    )
    # The portal's record comes first, so that the value does not move when a
    # later run fails; a dry run, which records nothing, uses the clock.
    if last_success is not None:
        success.labels(command).set(last_success.timestamp())
    elif exit_code == 0:
        success.labels(command).set(time.time())
    if result is not None:
        _result_metrics(registry, result)
    try:
        write_to_textfile(str(path), registry)
    except OSError as exc:
        raise ZtctlError(f"cannot write the metrics file {path}: {exc.strerror or exc}") from None


def _result_metrics(registry: CollectorRegistry, result: RunResult) -> None:
    from prometheus_client import Gauge

    actions = Gauge(
        "ztctl_actions", "Actions of the last run, by kind and outcome.", ["action", "outcome"], registry=registry
    )
    for (action, outcome), count in Counter(
        (str(o.finding.action), str(o.status)) for stage in result.stages for o in stage.outcomes
    ).items():
        actions.labels(action, outcome).set(count)
    drift = Gauge("ztctl_drift_members", "Members with pending drift, per network.", ["network"], registry=registry)
    unknown = Gauge("ztctl_unknown_members", "Members unknown to the portal, per network.", ["network"], registry=registry)
    # Members, not findings: one member can have a finding in two stages (expire,
    # then repair). And drift that this run repaired is no longer drift.
    applied = {
        outcome.finding for stage in result.stages for outcome in stage.outcomes if outcome.status == "applied"
    }
    pending: dict[str, set[str]] = {}
    unknowns: dict[str, set[str]] = {}
    for stage in result.stages:
        for report in stage.networks:
            # Set for every network read, so that a network in line reports 0, not nothing.
            left = pending.setdefault(report.network_id, set())
            strangers = unknowns.setdefault(report.network_id, set())
            for finding in report.findings:
                if finding.pending and finding not in applied:
                    left.add(finding.node_id)
                if finding.kind == "unknown":
                    strangers.add(finding.node_id)
    for network_id, nodes in pending.items():
        drift.labels(network_id).set(len(nodes))
        unknown.labels(network_id).set(len(unknowns[network_id]))
    counts = result.counts
    Gauge(
        "ztctl_overdue_revocations", "Revocations past their activation's expiry that the run did not make.",
        registry=registry,
    ).set(counts.overdue_revocations)
    Gauge(
        "ztctl_max_overdue_seconds", "How long ago the most overdue of those activations expired.", registry=registry
    ).set(counts.max_overdue_seconds)


def _write_atomically(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except OSError as exc:
        raise ZtctlError(f"cannot write {path}: {exc.strerror or exc}") from None


