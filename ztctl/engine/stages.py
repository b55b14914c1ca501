"""The commands as the engine runs them: each returns a ``RunResult``.

``reconcile`` runs the stages in the job's order: expire, sync, diff and
repair, unknown. The standalone commands run the part they are named after.
A plan is always built in full before anything is applied, so that what a
dry run shows is what an apply run does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ztctl.engine import portal_state
from ztctl.engine.apply import apply_finding
from ztctl.engine.drift import DriftPolicy, find_drift, find_unknown
from ztctl.engine.expire import run_expire
from ztctl.engine.job import Job
from ztctl.engine.model import (
    ActionKind,
    DriftKind,
    NetworkReport,
    OutcomeStatus,
    RunResult,
    StageResult,
)
from ztctl.engine.sync import NetworkSnapshot, run_sync
from ztctl.errors import ControllerUnreachable

log = logging.getLogger(__name__)

Confirm = Callable[[RunResult], bool]
"""Asked before applying a plan; returning False applies nothing."""


def plan_stage(
    job: Job, stage: str, snapshots: list[NetworkSnapshot], *, drift: bool, unknown: bool
) -> StageResult:
    """Build the findings of ``stage`` for every network that could be read."""
    now = job.now()
    result = StageResult(stage, job.mode, now)
    for snapshot in snapshots:
        if snapshot.error is not None or snapshot.network is None:
            continue
        network = snapshot.network
        report = NetworkReport(network.id, name=network.name or snapshot.portal_name, private=network.private)
        report.member_count = len(snapshot.members)
        with job.sessions() as session:
            memberships = portal_state.memberships_by_node(session, network.id)
        policy = DriftPolicy.for_network(job.settings.policies, network.id)
        members = list(snapshot.members)
        if drift:
            report.findings.extend(find_drift(network, members, memberships, policy, now))
        if unknown:
            unknown_findings = find_unknown(network, members, memberships, policy, now)
            report.findings.extend(unknown_findings)
            result.counts.unknown_members += len(unknown_findings)
        result.networks.append(report)
    return result


def apply_stage(job: Job, result: StageResult) -> None:
    """Apply every actionable finding of a planned stage, network by network.

    A failed action is counted and the rest go on. A controller that stops
    answering ends the stage: the remaining actions are left for the next run.
    """
    for report in result.networks:
        try:
            for finding in report.findings:
                if finding.action is None:
                    continue
                outcome = apply_finding(job, result.stage, finding)
                report.outcomes.append(outcome)
                _count_outcome(result, outcome.finding.action, outcome.status)
        except ControllerUnreachable as exc:
            report.error = f"stopped: {exc}"
            result.errors.append(f"network {report.network_id}: {report.error}")
            result.counts.errors += 1
            log.error("network %s: %s", report.network_id, report.error)
            return
        if result.stage == "unknown":
            _flag_unknown(job, report)


def record_findings(job: Job, result: StageResult) -> None:
    """Record every finding in the audit log, as an audit run does instead of applying them."""
    if not job.recorder.enabled:
        return
    with job.sessions() as session:
        for finding in result.findings:
            job.recorder.record(session, result.stage, finding, None)
        session.commit()


def _flag_unknown(job: Job, report: NetworkReport) -> None:
    unknown = {f.node_id: f for f in report.findings if f.kind is DriftKind.UNKNOWN}
    with job.sessions() as session:
        newly_flagged = portal_state.flag_unknown_members(session, report.network_id, set(unknown), job.now())
        session.commit()
    # Log once, when a member is first seen unknown, so that cron mail does
    # not repeat the same line every minute. Only an authorized one is a
    # warning: an unauthorized one is usually a device asking to join.
    for node_id in sorted(newly_flagged):
        finding = unknown[node_id]
        level = logging.WARNING if finding.controller_state.startswith("authorized") else logging.INFO
        log.log(
            level, "unknown member %s on network %s (%s): %s",
            node_id, report.network_id, finding.controller_state, finding.reason,
        )


def _count_outcome(result: StageResult, action: ActionKind | None, status: OutcomeStatus) -> None:
    counts = result.counts
    if status is OutcomeStatus.APPLIED:
        if action in (ActionKind.AUTHORIZE, ActionKind.PREAUTHORIZE):
            counts.authorized += 1
        elif action is ActionKind.DEAUTHORIZE:
            counts.deauthorized += 1
        elif action is ActionKind.DELETE:
            counts.deleted_memberships += 1
    elif status is OutcomeStatus.FAILED:
        counts.errors += 1
        if action is ActionKind.DELETE:
            counts.delete_errors += 1
    elif status is OutcomeStatus.SKIPPED:
        counts.skipped += 1
    elif status is OutcomeStatus.REFUSED:
        counts.refused += 1


def _finish_stage(job: Job, result: StageResult, confirm: Confirm | None, run: RunResult) -> None:
    if job.mode.is_read_only:
        record_findings(job, result)
        return
    if confirm is not None and result.has_pending and not confirm(run):
        log.warning("plan not applied: confirmation declined")
        return
    apply_stage(job, result)


# Commands -------------------------------------------------------------------


def expire(job: Job) -> RunResult:
    run = RunResult("expire", job.mode)
    stage = run_expire(job)
    if job.mode.is_read_only:
        record_findings(job, stage)
    run.stages.append(stage)
    return run


def sync(job: Job) -> RunResult:
    run = RunResult("sync", job.mode)
    stage, _ = run_sync(job)
    run.stages.append(stage)
    return run


def diff(job: Job, *, confirm: Confirm | None = None, command: str = "diff") -> RunResult:
    """Show drift and unknown members; in apply mode, repair them after ``confirm`` agrees."""
    run = RunResult(command, job.mode)
    sync_stage, snapshots = run_sync(job, write_cache=not job.mode.is_read_only)
    run.stages.append(_errors_only(sync_stage))
    stage = plan_stage(job, command, snapshots, drift=True, unknown=True)
    run.stages.append(stage)
    _finish_stage(job, stage, confirm, run)
    return run


def repair(job: Job) -> RunResult:
    return diff(job, command="repair")


def unknown(job: Job) -> RunResult:
    run = RunResult("unknown", job.mode)
    sync_stage, snapshots = run_sync(job, write_cache=not job.mode.is_read_only)
    run.stages.append(_errors_only(sync_stage))
    stage = plan_stage(job, "unknown", snapshots, drift=False, unknown=True)
    run.stages.append(stage)
    _finish_stage(job, stage, None, run)
    return run


def reconcile(job: Job) -> RunResult:
    """Run the whole job: expire, sync, diff and repair, unknown."""
    run = RunResult("reconcile", job.mode)
    run.stages.append(run_expire(job))
    if job.mode.is_read_only:
        record_findings(job, run.stages[-1])
    sync_stage, snapshots = run_sync(job)
    run.stages.append(sync_stage)
    for name, drift, unknown_members in (("repair", True, False), ("unknown", False, True)):
        stage = plan_stage(job, name, snapshots, drift=drift, unknown=unknown_members)
        run.stages.append(stage)
        _finish_stage(job, stage, None, run)
    return run


def _errors_only(stage: StageResult) -> StageResult:
    """Keep a sync stage's errors and counts but drop its per-network rows, which the plan repeats."""
    stage.networks = [report for report in stage.networks if report.error is not None]
    return stage
