"""Plans, findings, outcomes and results: the values the engine hands to the CLI.

A stage first builds a plan, a list of ``Finding`` rows per network, each
with the action that would repair it and the reason. Applying the plan turns
each actionable finding into an ``Outcome``. Every type here converts to
plain JSON through ``to_dict`` so that the CLI can print one document per
command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    APPLY = "apply"
    DRY_RUN = "dry-run"
    AUDIT = "audit"

    @property
    def is_read_only(self) -> bool:
        return self is not Mode.APPLY


class DriftKind(StrEnum):
    """A kind of difference between the portal and the controller for one member."""

    AUTHORIZED_NOT_ACTIVE = "authorized-not-active"
    ACTIVE_NOT_AUTHORIZED = "active-not-authorized"
    ACTIVE_MISSING = "active-missing"
    RETENTION_PASSED = "retention-passed"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    PROTECTED = "protected"


class ActionKind(StrEnum):
    AUTHORIZE = "authorize"
    DEAUTHORIZE = "deauthorize"
    PREAUTHORIZE = "preauthorize"
    DELETE = "delete"
    EXPIRE = "expire"
    """End expired activations, deauthorizing the member first when it has no other current one."""
    ADOPT = "adopt"
    """Write a membership for a member the controller already has (``ztctl adopt``)."""


class OutcomeStatus(StrEnum):
    APPLIED = "applied"
    SKIPPED = "skipped"
    FAILED = "failed"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Finding:
    """One difference between the portal and the controller, and what would repair it."""

    network_id: str
    node_id: str
    kind: DriftKind
    portal_state: str
    """``active``, ``inactive``, ``removed``, ``expired``, ``scheduled`` or ``none``."""
    controller_state: str
    """``authorized``, ``deauthorized`` or ``missing``, with ``bridge`` added for active bridges."""
    action: ActionKind | None
    reason: str
    owner: str | None = None
    name: str | None = None
    expected_revision: int | None = None
    """The member's revision when the plan was made; a write is sent only if it still matches."""
    pending: bool = True
    """Whether the finding counts as a change still to make (exit status 1 in read-only runs)."""
    activation_ids: tuple[int, ...] = ()
    """For ``expire``: the activations this action ends."""
    revokes_access: bool = False
    """Whether the action takes access away from an authorized member; the mass-revocation guard counts these."""
    acknowledged_until: datetime | None = None
    """Set when an operator accepted this difference; it is then not pending until that time."""
    last_seen_at: datetime | None = None
    """When the controller last heard from the member (Central only): shown, never used to decide."""
    physical_address: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": self.network_id,
            "node": self.node_id,
            "kind": str(self.kind),
            "owner": self.owner,
            "name": self.name,
            "portal_state": self.portal_state,
            "controller_state": self.controller_state,
            "action": str(self.action) if self.action else None,
            "reason": self.reason,
            "pending": self.pending,
            "acknowledged_until": self.acknowledged_until,
            "last_seen_at": self.last_seen_at,
            "physical_address": self.physical_address,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    finding: Finding
    status: OutcomeStatus
    detail: str = ""
    revision: int | None = None
    """The member's revision after the action, when the controller returned one."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": self.finding.network_id,
            "node": self.finding.node_id,
            "action": str(self.finding.action) if self.finding.action else None,
            "status": str(self.status),
            "detail": self.detail,
            "revision": self.revision,
        }


@dataclass
class NetworkReport:
    """A stage's plan and outcomes for one managed network."""

    network_id: str
    name: str = ""
    private: bool | None = None
    findings: list[Finding] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    error: str | None = None
    refusal: str | None = None
    """The reason a safety rail rejected every action on this network in this run."""
    member_count: int | None = None
    cache_changes: int = 0
    """Cache rows that sync wrote, or in a read-only run would write."""
    counts: JobCounts = field(default_factory=lambda: JobCounts())
    """This network's share of its stage's counters; ``StageResult.add`` sums them."""

    @property
    def pending(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.pending]

    @property
    def unapplied(self) -> list[Finding]:
        """Pending findings with an action that has no outcome yet (not applied, or declined)."""
        done = {outcome.finding for outcome in self.outcomes}
        return [f for f in self.findings if f.pending and f.action is not None and f not in done]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.network_id,
            "name": self.name,
            "private": self.private,
            "member_count": self.member_count,
            "cache_changes": self.cache_changes,
            "error": self.error,
            "refusal": self.refusal,
            "findings": [finding.to_dict() for finding in self.findings],
            "outcomes": [outcome.to_dict() for outcome in self.outcomes],
        }


@dataclass
class JobCounts:
    """The job's counters, reported by every stage and summed by ``reconcile``."""

    expired_activations: int = 0
    networks_processed: int = 0
    authorized: int = 0
    deauthorized: int = 0
    deleted_memberships: int = 0
    delete_errors: int = 0
    errors: int = 0
    unknown_members: int = 0
    skipped: int = 0
    refused: int = 0
    overdue_revocations: int = 0
    """Revocations past their activation's expiry that the run did not make."""
    max_overdue_seconds: int = 0
    """How long ago the most overdue of those activations expired."""

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))

    def add(self, other: JobCounts) -> None:
        """Add ``other`` to these counters; the largest overdue time wins instead of adding up."""
        for name, value in vars(other).items():
            if name == "max_overdue_seconds":
                self.max_overdue_seconds = max(self.max_overdue_seconds, value)
            else:
                setattr(self, name, getattr(self, name) + value)


@dataclass
class StageResult:
    """The findings and outcomes of one stage."""

    stage: str
    mode: Mode
    started_at: datetime
    networks: list[NetworkReport] = field(default_factory=list)
    counts: JobCounts = field(default_factory=JobCounts)
    errors: list[str] = field(default_factory=list)
    """Errors that belong to no single network, such as a failed portal query."""

    def add(self, report: NetworkReport) -> None:
        """Append a network's report and add its counters to the stage's."""
        self.networks.append(report)
        self.counts.add(report.counts)

    @property
    def findings(self) -> list[Finding]:
        return [finding for report in self.networks for finding in report.findings]

    @property
    def outcomes(self) -> list[Outcome]:
        return [outcome for report in self.networks for outcome in report.outcomes]

    @property
    def has_pending(self) -> bool:
        return any(finding.pending for finding in self.findings)

    @property
    def has_unapplied(self) -> bool:
        return any(report.unapplied for report in self.networks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "counts": self.counts.to_dict(),
            "errors": self.errors,
            "networks": [report.to_dict() for report in self.networks],
        }


@dataclass
class RunResult:
    """The result of one command: its stages in order and the summed counts."""

    command: str
    mode: Mode
    stages: list[StageResult] = field(default_factory=list)
    run_id: int | None = None
    requests: dict[str, Any] = field(default_factory=dict)
    """Requests the run sent to the controller: ``total``, ``retries`` and ``by_kind``."""
    previous_failures: list[dict[str, Any]] = field(default_factory=list)
    """Failed and refused actions of the last finished apply run, shown before this run's results."""

    @property
    def counts(self) -> JobCounts:
        total = JobCounts()
        for stage in self.stages:
            total.add(stage.counts)
        # A network counts once however many stages processed it.
        total.networks_processed = max((s.counts.networks_processed for s in self.stages), default=0)
        return total

    @property
    def has_pending(self) -> bool:
        if self.command == "sync" and self.mode.is_read_only and self._has_cache_changes:
            return True
        return any(stage.has_pending for stage in self.stages)

    @property
    def _has_cache_changes(self) -> bool:
        return any(report.cache_changes for stage in self.stages for report in stage.networks)

    @property
    def has_unapplied(self) -> bool:
        return any(stage.has_unapplied for stage in self.stages)

    @property
    def has_actions(self) -> bool:
        """Whether an apply run of the same plan would change something.

        Cache rows count only for ``sync``, whose whole job they are; for the
        other commands a stale cache is not drift.
        """
        if self.command == "sync" and self._has_cache_changes:
            return True
        return any(f.action is not None for stage in self.stages for f in stage.findings)

    @property
    def has_errors(self) -> bool:
        return any(stage.counts.errors or stage.errors for stage in self.stages)

    @property
    def has_refusals(self) -> bool:
        return any(stage.counts.refused for stage in self.stages)
