"""Explain one member: why it is or is not authorized, since when, who acted, and what comes next.

Everything comes from one read of the portal, the cache, the audit log and
the live controller. The plan for the next run is built by the same drift
and expiry rules a run uses, so ``explain`` cannot disagree with ``reconcile``
(apart from the mass-revocation guard, which weighs a whole network).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from ztctl.config import LoadedSettings, PolicySettings, resolve_token
from ztctl.controller.base import (
    ControllerMember,
    ControllerNetwork,
    is_network_id,
    is_node_id,
)
from ztctl.controller.factory import build_controller
from ztctl.engine import portal_state
from ztctl.engine.ack import (
    AcknowledgementView,
    active_acknowledgements,
    apply_acknowledgements,
)
from ztctl.engine.drift import DriftPolicy, find_drift, find_unknown
from ztctl.engine.expire import plan_expiry
from ztctl.engine.history import HistoryEntry, HistoryFilter, query_history
from ztctl.engine.job import open_job
from ztctl.engine.model import Finding, Mode
from ztctl.engine.portal_state import MembershipView
from ztctl.errors import ControllerError, NetworkNotFound, UsageError
from ztctl.portal.models import ControllerMemberCache, Network

RECENT_ACTIONS = 10


@dataclass
class Explanation:
    network_id: str
    node_id: str
    now: datetime
    network_name: str | None = None
    managed: bool = False
    membership: MembershipView | None = None
    cached: ControllerMember | None = None
    cached_at: datetime | None = None
    unknown_since: datetime | None = None
    live_network: ControllerNetwork | None = None
    live: ControllerMember | None = None
    live_error: str | None = None
    recent: list[HistoryEntry] = field(default_factory=list)
    next_run: list[Finding] = field(default_factory=list)
    acknowledgement: AcknowledgementView | None = None
    deleted_at: datetime | None = None
    """When ztctl last deleted this member from the controller, if it ever did."""
    differences: list[Finding] = field(default_factory=list)
    """Findings of the next run for the member, before acknowledgements are applied."""
    network_missing: bool = False
    """Whether the controller returned 404 for the network."""

    @property
    def verdict(self) -> str:
        """Return one sentence: whether the member is authorized, and why."""
        if self.live_error is not None:
            state = "unknown right now (the controller could not be read)"
        elif self.network_missing:
            state = "not on the controller, which has no network with this ID"
        elif self.live is None:
            state = "not on the controller"
        elif self.live_network is not None and not self.live_network.private:
            state = "on a public network, where everyone who joins is authorized"
        else:
            state = "authorized" if self.live.authorized else "not authorized"
        portal = self._portal_reason()
        last = self._last_change()
        return f"{self.node_id} on {self.network_id} is {state}; {portal}{last}."

    def _portal_reason(self) -> str:
        if not self.managed:
            return "the portal does not manage this network, so ztctl never changes it"
        if self.membership is None:
            return "the portal has no membership for it (an unknown member)"
        access = self.membership.access_state(self.now)
        if access == "active":
            current = [a for a in self.membership.activations if a.is_current(self.now)]
            if current:
                until = max(a.expires_at for a in current)
                return f"the portal grants access until {until:%Y-%m-%d %H:%M}Z"
            return "the portal grants access (active, with no time limit)"
        return f"the portal does not grant access (membership {access})"

    def _last_change(self) -> str:
        for entry in self.recent:
            if entry.outcome == "applied":
                return (
                    f"; last change: {entry.action} at {entry.recorded_at:%Y-%m-%d %H:%M:%S}Z by run "
                    f"#{entry.run_id} ({entry.command}, {entry.user or 'unknown user'} on {entry.host})"
                )
        return ""

    def to_dict(self) -> dict[str, object]:
        membership = None
        if self.membership is not None:
            membership = {
                "owner": self.membership.owner,
                "name": self.membership.name,
                "state": self.membership.state,
                "access": self.membership.access_state(self.now),
                "removed_at": self.membership.removed_at,
                "activations": [
                    {"start": a.starts_at, "expires": a.expires_at, "ended_at": a.ended_at,
                     "current": a.is_current(self.now)}
                    for a in self.membership.activations
                ],
            }
        return {
            "network": self.network_id,
            "node": self.node_id,
            "verdict": self.verdict,
            "network_name": self.network_name,
            "managed": self.managed,
            "membership": membership,
            "cached": _member_dict(self.cached, self.cached_at),
            "unknown_since": self.unknown_since,
            "live": _member_dict(self.live, None),
            "live_error": self.live_error,
            "recent_actions": [entry.to_dict() for entry in self.recent],
            "next_run": [finding.to_dict() for finding in self.next_run],
            "acknowledgement": self.acknowledgement.to_dict() if self.acknowledgement else None,
            "network_missing": self.network_missing,
        }


def _member_dict(member: ControllerMember | None, read_at: datetime | None) -> dict[str, object] | None:
    if member is None:
        return None
    return {
        "authorized": member.authorized,
        "active_bridge": member.active_bridge,
        "revision": member.revision,
        "name": member.name,
        "created_at": member.created_at,
        "last_authorized_at": member.last_authorized_at,
        "last_deauthorized_at": member.last_deauthorized_at,
        "last_seen_at": member.last_seen_at,
        "physical_address": member.physical_address,
        "read_at": read_at,
    }


def explain(loaded: LoadedSettings, network_id: str, node_id: str) -> Explanation:
    network_id, node_id = network_id.lower(), node_id.lower()
    if not is_network_id(network_id):
        raise UsageError(f"invalid network ID {network_id!r}: expected 16 hex digits")
    if not is_node_id(node_id):
        raise UsageError(f"invalid node ID {node_id!r}: expected 10 hex digits")
    job = open_job(loaded, command="explain", mode=Mode.DRY_RUN, needs_controller=False)
    try:
        now = job.now()
        result = Explanation(network_id, node_id, now)
        with job.sessions() as session:
            _read_portal(session, result, now)
        _read_live(loaded, result)
        _plan_next_run(job.settings.policies, result, now)
        return result
    finally:
        job.close()


def _read_portal(session: Session, result: Explanation, now: datetime) -> None:
    network = session.get(Network, result.network_id)
    if network is not None:
        result.network_name = network.name
        result.managed = network.removed_at is None
    result.membership = portal_state.membership_view(session, result.network_id, result.node_id)
    row = session.get(ControllerMemberCache, (result.network_id, result.node_id))
    if row is not None:
        result.cached = portal_state.cached_members(session, result.network_id).get(result.node_id)
        result.cached_at = row.synced_at
        result.unknown_since = row.unknown_since
    wanted = HistoryFilter(network_id=result.network_id, node_id=result.node_id, limit=RECENT_ACTIONS)
    result.recent = query_history(session, wanted)
    result.acknowledgement = active_acknowledgements(session, result.network_id, now).get(result.node_id)
    result.deleted_at = portal_state.deletions_by_node(session, result.network_id, result.node_id).get(result.node_id)


def _read_live(loaded: LoadedSettings, result: Explanation) -> None:
    """Read the member from the controller; an unreachable controller is reported, not fatal."""
    try:
        token = resolve_token(loaded)
        with build_controller(loaded.settings.controller, token, read_only=True) as client:
            client.probe()
            try:
                result.live_network = client.get_network(result.network_id)
            except NetworkNotFound:
                result.network_missing = True
                return
            result.live = client.get_member(result.network_id, result.node_id)
    except ControllerError as exc:
        result.live_error = str(exc)


def _plan_next_run(policies: PolicySettings, result: Explanation, now: datetime) -> None:
    if not result.managed or result.live_network is None or result.live_error is not None:
        return
    policy = DriftPolicy.for_network(policies, result.network_id)
    members = [result.live] if result.live is not None else []
    memberships = {result.node_id: result.membership} if result.membership is not None else {}
    if result.membership is not None and result.membership.expired_open_activations(now):
        # The expiry comes first in a run and leaves nothing for repair to do.
        result.next_run.append(plan_expiry(result.live_network, result.membership, result.live, policy, now))
        return
    deletions = {result.node_id: result.deleted_at} if result.deleted_at else {}
    findings = find_drift(result.live_network, members, memberships, policy, now)
    findings.extend(find_unknown(result.live_network, members, memberships, policy, now, deletions))
    result.differences = list(findings)
    acknowledgements = {result.node_id: result.acknowledgement} if result.acknowledgement else {}
    result.next_run.extend(apply_acknowledgements(findings, acknowledgements))
