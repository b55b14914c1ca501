"""The commands as the engine runs them: each returns a ``RunResult``.

``reconcile`` runs the stages in the job's order: expire, sync, diff and
repair, unknown. The standalone commands run the part they are named after.
A plan is always built in full before anything is applied, so that what a
dry run shows is what an apply run does.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from ztctl.engine import portal_state
from ztctl.engine.ack import active_acknowledgements, apply_acknowledgements
from ztctl.engine.apply import apply_finding, settle_interrupted_writes
from ztctl.engine.drift import DriftPolicy, find_drift, find_unknown
from ztctl.engine.expire import run_expire
from ztctl.engine.history import previous_failures
from ztctl.engine.job import Job
from ztctl.engine.model import (
    ActionKind,
    DriftKind,
    JobCounts,
    NetworkReport,
    Outcome,
    OutcomeStatus,
    RunResult,
    StageResult,
)
from ztctl.engine.sync import (
    NetworkSnapshot,
    managed_networks,
    prefetch_networks,
    run_sync,
    sync_network,
)
from ztctl.engine.workers import for_each_network
from ztctl.errors import ControllerUnreachable, PortalUnavailable, UnreadableTime

log = logging.getLogger(__name__)

Confirm = Callable[[RunResult], bool]
"""Asked before applying a plan; returning False applies nothing."""


def plan_network(
    job: Job, stage: str, snapshot: NetworkSnapshot, *, drift: bool, unknown: bool
) -> NetworkReport:
    """Build one network's findings for ``stage`` and let the guard review them."""
    now = job.now()
    network = snapshot.network
    assert network is not None
    report = NetworkReport(network.id, name=network.name or snapshot.portal_name, private=network.private)
    report.member_count = len(snapshot.members)
    try:
        with job.sessions() as session:
            memberships = portal_state.memberships_by_node(session, network.id, job.problems)
            deletions = portal_state.deletions_by_node(session, network.id) if unknown else {}
            acknowledgements = active_acknowledgements(session, network.id, now)
    except UnreadableTime as exc:
        # Without every membership the plan could take a member for unknown
        # and act on it, so the network waits until the row is fixed.
        report.error = f"{exc}; nothing was changed on this network ({exc.hint})"
        report.counts.errors += 1
        log.error("network %s: %s", network.id, report.error, extra={"network": network.id})
        return report
    policy = DriftPolicy.for_network(job.settings.policies, network.id)
    members = list(snapshot.members)
    if drift:
        report.findings.extend(find_drift(network, members, memberships, policy, now))
    if unknown:
        unknown_findings = find_unknown(network, members, memberships, policy, now, deletions)
        report.findings.extend(unknown_findings)
        report.counts.unknown_members += len(unknown_findings)
    report.findings = apply_acknowledgements(report.findings, acknowledgements)
    active = sum(1 for membership in memberships.values() if membership.grants_access(now))
    actionable = [finding for finding in report.findings if finding.action is not None]
    report.refusal = job.guard.review(network.id, actionable, active_memberships=active)
    if report.refusal is not None:
        report.counts.refused += len(actionable)
    return report


def finish_network(job: Job, stage: str, report: NetworkReport, *, apply: bool = True) -> None:
    """Record a planned network in a read-only run, or apply it (unless ``apply`` is False)."""
    if job.mode.is_read_only:
        _record_findings(job, stage, report)
    elif apply:
        apply_network(job, stage, report)


def apply_network(job: Job, stage: str, report: NetworkReport) -> None:
    """Apply every actionable finding of one planned network.

    A failed action is counted and the rest go on. A controller that stops
    responding ends the network: its remaining actions are left for the next run.
    """
    if report.refusal is not None:
        _record_refusal(job, stage, report)
        return
    try:
        _apply_report(job, stage, report)
    except ControllerUnreachable as exc:
        report.error = f"stopped: {exc}"
        report.counts.errors += 1
        log.error("network %s: %s", report.network_id, report.error, extra={"network": report.network_id})
        return
    if stage == "unknown":
        _flag_unknown(job, report)


def _apply_report(job: Job, stage: str, report: NetworkReport) -> None:
    job.check_lock()
    for finding in report.findings:
        if finding.action is None:
            continue
        if job.past_deadline():
            job.note_deadline(report)
            return
        outcome = apply_finding(job, stage, finding)
        report.outcomes.append(outcome)
        _count_outcome(report, outcome.finding.action, outcome.status)
        if outcome.status is OutcomeStatus.APPLIED:
            job.guard.record(report.network_id, finding)


def _record_refusal(job: Job, stage: str, report: NetworkReport) -> None:
    refusal = f"refused: {report.refusal}; run with --force to apply"
    outcomes = [Outcome(f, OutcomeStatus.REFUSED, refusal) for f in report.findings if f.action is not None]
    report.outcomes.extend(outcomes)
    with job.write_sessions() as session:
        for outcome in outcomes:
            job.recorder.record(session, stage, outcome.finding, outcome)
        session.commit()


def _record_findings(job: Job, stage: str, report: NetworkReport) -> None:
    """Record every finding in the audit log, as an audit run does instead of applying them."""
    if not job.recorder.enabled or not report.findings:
        return
    with job.write_sessions() as session:
        for finding in report.findings:
            job.recorder.record(session, stage, finding, None)
        session.commit()


def _flag_unknown(job: Job, report: NetworkReport) -> None:
    unknown = {f.node_id: f for f in report.findings if f.kind is DriftKind.UNKNOWN}
    with job.sessions() as session:
        flagged = portal_state.unknown_flags(session, report.network_id)
    newly_flagged: set[str] = set()
    if flagged != set(unknown):
        with job.write_sessions() as session:
            newly_flagged = portal_state.flag_unknown_members(session, report.network_id, set(unknown), job.now())
            session.commit()
    # An authorized member without a membership in the portal has access it
    # should not have, so it is a warning on every run until it is dealt with
    # or acknowledged. An unauthorized one is usually a device asking to join,
    # logged once when first seen, so that cron mail stays quiet.
    for node_id, finding in sorted(unknown.items()):
        authorized = finding.controller_state.startswith("authorized")
        if authorized and finding.pending and finding.action is None:
            log.warning(
                "unknown member %s on network %s is authorized: %s",
                node_id, report.network_id, finding.reason, extra={"network": report.network_id, "node": node_id},
            )
        elif node_id in newly_flagged:
            log.info(
                "unknown member %s on network %s (%s): %s",
                node_id, report.network_id, finding.controller_state, finding.reason,
            )


def _count_outcome(report: NetworkReport, action: ActionKind | None, status: OutcomeStatus) -> None:
    counts = report.counts
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


def _report_problems(job: Job, run: RunResult) -> None:
    """Put the portal rows that could not be used in the run's result, once each."""
    if not job.problems or not run.stages:
        return
    stage = run.stages[-1]
    for problem in dict.fromkeys(job.problems):
        log.error("%s", problem)
        stage.errors.append(problem)
        stage.counts.errors += 1
    job.problems.clear()


def _record_network_errors(job: Job, run: RunResult) -> None:
    """Put each network that failed as a whole in the audit log; its members' failures are there already."""
    failed = [(stage.stage, report) for stage in run.stages for report in stage.networks if report.error is not None]
    if not failed or not job.recorder.enabled:
        return
    try:
        with job.write_sessions() as session:
            for stage_name, report in failed:
                job.recorder.record_network_error(session, stage_name, report.network_id, report.error or "")
            session.commit()
    except SQLAlchemyError as exc:
        # The failures are still in the log, the output and the exit status.
        log.error("could not record the failed networks in the audit log: %s", exc)


def _command(name: str) -> Callable[[Callable[..., RunResult]], Callable[..., RunResult]]:
    """Wrap a command: carry over the last run's failures, report portal problems, translate database errors."""

    def decorate(body: Callable[..., RunResult]) -> Callable[..., RunResult]:
        @functools.wraps(body)
        def run_command(job: Job, **kwargs: object) -> RunResult:
            run = RunResult(str(kwargs.pop("command", name)), job.mode)
            try:
                settle_interrupted_writes(job)
                with job.sessions() as session:
                    run.previous_failures = previous_failures(session, exclude_run=job.recorder.run_id)
                body(job, run, **kwargs)
            except SQLAlchemyError as exc:
                log.error("portal database error: %s", exc)
                raise PortalUnavailable(
                    f"the portal database failed during the run: {type(exc).__name__}",
                    hint="check the database; the next run reads the controller again and converges",
                ) from exc
            _report_problems(job, run)
            _record_network_errors(job, run)
            return run

        return run_command

    return decorate


# Commands -------------------------------------------------------------------


@_command("expire")
def expire(job: Job, run: RunResult) -> None:
    run.stages.append(run_expire(job))


@_command("sync")
def sync(job: Job, run: RunResult) -> None:
    job.progress_stage = "sync"
    run.stages.append(run_sync(job))


@_command("diff")
def diff(job: Job, run: RunResult, *, confirm: Confirm | None = None) -> None:
    """Show drift and unknown members; in apply mode, repair them after ``confirm`` agrees.

    Every network is planned before anything is applied, because the
    confirmation is about the whole plan.
    """
    stage = StageResult(run.command, job.mode, job.now())
    sync_stage = StageResult("sync", job.mode, job.now())
    run.stages.extend([sync_stage, stage])

    known = prefetch_networks(job)

    def plan(network_id: str, name: str) -> tuple[NetworkReport, NetworkReport | None]:
        sync_report, snapshot = sync_network(
            job, network_id, name, write_cache=not job.mode.is_read_only, known=known
        )
        if snapshot.error is not None:
            return sync_report, None
        report = plan_network(job, run.command, snapshot, drift=True, unknown=True)
        finish_network(job, run.command, report, apply=False)
        return sync_report, report

    job.progress_stage = "read"
    _collect(sync_stage, stage, for_each_network(job, managed_networks(job), plan))
    if job.mode.is_read_only or not stage.findings:
        return
    if confirm is not None and stage.has_pending and not confirm(run):
        log.warning("plan not applied: confirmation declined")
        return
    job.progress_stage = "apply"
    applied = for_each_network(
        job, [(report.network_id, report.name) for report in stage.networks],
        lambda network_id, _name: _apply_planned(job, run.command, stage, network_id),
    )
    stage.counts = sum_counts(applied)


def repair(job: Job) -> RunResult:
    return diff(job, command="repair")


@_command("unknown")
def unknown(job: Job, run: RunResult) -> None:
    _stream(job, run, (("unknown", False, True),), write_cache=not job.mode.is_read_only)


@_command("reconcile")
def reconcile(job: Job, run: RunResult) -> None:
    """Run the whole job: expire, sync, diff and repair, unknown."""
    job.progress_stage = "expire"
    run.stages.append(run_expire(job))
    _stream(job, run, (("repair", True, False), ("unknown", False, True)), write_cache=True)


def _stream(job: Job, run: RunResult, steps: tuple[tuple[str, bool, bool], ...], *, write_cache: bool) -> None:
    """Read each network and carry it through ``steps`` before the next, so memory keeps one network per worker."""
    sync_stage = StageResult("sync", job.mode, job.now())
    stages = [StageResult(name, job.mode, job.now()) for name, _, _ in steps]
    run.stages.extend([sync_stage, *stages])

    known = prefetch_networks(job)

    def process(network_id: str, name: str) -> list[NetworkReport | None]:
        sync_report, snapshot = sync_network(job, network_id, name, write_cache=write_cache, known=known)
        if snapshot.error is not None:
            return [sync_report, *(None for _ in steps)]
        reports: list[NetworkReport | None] = [sync_report]
        for stage_name, drift, unknown_members in steps:
            report = plan_network(job, stage_name, snapshot, drift=drift, unknown=unknown_members)
            finish_network(job, stage_name, report)
            reports.append(report)
            if report.error is not None:
                # The later stages would fail on the same portal rows.
                reports.extend(None for _ in steps[len(reports) - 1 :])
                break
        return reports

    job.progress_stage = "networks"
    for reports in for_each_network(job, managed_networks(job), process):
        sync_stage.add(reports[0])  # type: ignore[arg-type]
        for stage, report in zip(stages, reports[1:], strict=True):
            if report is not None:
                stage.add(report)
    if run.command != "sync":
        _errors_only(sync_stage)


def _apply_planned(job: Job, stage_name: str, stage: StageResult, network_id: str) -> JobCounts:
    report = next(report for report in stage.networks if report.network_id == network_id)
    apply_network(job, stage_name, report)
    return report.counts


def _collect(
    sync_stage: StageResult, stage: StageResult, results: list[tuple[NetworkReport, NetworkReport | None]]
) -> None:
    for sync_report, report in results:
        sync_stage.add(sync_report)
        if report is not None:
            stage.add(report)
    _errors_only(sync_stage)


def sum_counts(reports: list[JobCounts]) -> JobCounts:
    total = JobCounts()
    for counts in reports:
        total.add(counts)
    return total


def _errors_only(stage: StageResult) -> StageResult:
    """Keep a sync stage's errors and counts but drop its per-network rows, which the plan repeats."""
    stage.networks = [report for report in stage.networks if report.error is not None]
    return stage
