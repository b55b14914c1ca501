"""Drift rules, as pure functions of portal views and controller records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ztctl.config import UnknownMemberPolicy
from ztctl.controller.base import ControllerMember, ControllerNetwork
from ztctl.engine.drift import DriftPolicy, find_drift, find_unknown
from ztctl.engine.model import ActionKind, DriftKind
from ztctl.engine.portal_state import ActivationView, MembershipView

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
NETWORK = ControllerNetwork("3233204505122666", "engineering", private=True)
PUBLIC = ControllerNetwork("3233204505519ec1", "public-lab", private=False)


def member(node: str, *, authorized: bool, bridge: bool = False, created: datetime | None = None,
           deauthorized_at: datetime | None = None, revision: int = 3) -> ControllerMember:
    return ControllerMember(
        network_id=NETWORK.id, node_id=node, authorized=authorized, active_bridge=bridge, revision=revision,
        created_at=created or NOW - timedelta(days=100), last_deauthorized_at=deauthorized_at,
    )


def membership(node: str, state: str = "active", *, removed: bool = False, changed: datetime | None = None,
               activations: tuple[ActivationView, ...] = (), purged: datetime | None = None) -> MembershipView:
    return MembershipView(
        id=1, network_id=NETWORK.id, node_id=node, owner="user-1", name="laptop", state=state,
        removed_at=NOW - timedelta(days=1) if removed else None,
        state_changed_at=changed or NOW - timedelta(days=60), purged_at=purged, activations=activations,
    )


def activation(start_hours: float, end_hours: float, ended: bool = False) -> ActivationView:
    return ActivationView(
        id=7, starts_at=NOW + timedelta(hours=start_hours), expires_at=NOW + timedelta(hours=end_hours),
        ended_at=NOW if ended else None,
    )


def policy(*, purge_after: timedelta | None = timedelta(days=30), action: str = "report",
           grace: timedelta = timedelta(hours=1), protected: frozenset[str] = frozenset()) -> DriftPolicy:
    return DriftPolicy(purge_after, UnknownMemberPolicy(action=action, grace=grace), protected)


def only(findings):
    assert len(findings) == 1, findings
    return findings[0]


def test_in_line_member_has_no_drift():
    assert find_drift(NETWORK, [member("a1b2c3d4e5", authorized=True)], {"a1b2c3d4e5": membership("a1b2c3d4e5")}, policy(), NOW) == []


def test_inactive_authorized_is_deauthorized():
    finding = only(find_drift(NETWORK, [member("a1b2c3d4e5", authorized=True)],
                              {"a1b2c3d4e5": membership("a1b2c3d4e5", "inactive")}, policy(), NOW))
    assert finding.kind is DriftKind.AUTHORIZED_NOT_ACTIVE
    assert finding.action is ActionKind.DEAUTHORIZE
    assert finding.expected_revision == 3
    assert finding.pending


def test_removed_authorized_is_deauthorized():
    finding = only(find_drift(NETWORK, [member("a1b2c3d4e5", authorized=True)],
                              {"a1b2c3d4e5": membership("a1b2c3d4e5", removed=True)}, policy(), NOW))
    assert finding.action is ActionKind.DEAUTHORIZE
    assert finding.portal_state == "removed"


def test_active_unauthorized_is_authorized():
    finding = only(find_drift(NETWORK, [member("a1b2c3d4e5", authorized=False)],
                              {"a1b2c3d4e5": membership("a1b2c3d4e5")}, policy(), NOW))
    assert finding.kind is DriftKind.ACTIVE_NOT_AUTHORIZED
    assert finding.action is ActionKind.AUTHORIZE


def test_active_missing_is_preauthorized():
    finding = only(find_drift(NETWORK, [], {"a1b2c3d4e5": membership("a1b2c3d4e5")}, policy(), NOW))
    assert finding.kind is DriftKind.ACTIVE_MISSING
    assert finding.action is ActionKind.PREAUTHORIZE
    assert finding.controller_state == "missing"
    assert finding.expected_revision is None


def test_inactive_missing_needs_nothing():
    assert find_drift(NETWORK, [], {"a1b2c3d4e5": membership("a1b2c3d4e5", "inactive")}, policy(), NOW) == []


def test_current_activation_grants_access():
    view = membership("a1b2c3d4e5", activations=(activation(-1, 2),))
    assert find_drift(NETWORK, [member("a1b2c3d4e5", authorized=True)], {"a1b2c3d4e5": view}, policy(), NOW) == []


def test_expired_activation_deauthorizes():
    view = membership("a1b2c3d4e5", activations=(activation(-9, -1),))
    finding = only(find_drift(NETWORK, [member("a1b2c3d4e5", authorized=True)], {"a1b2c3d4e5": view}, policy(), NOW))
    assert finding.portal_state == "expired"
    assert finding.action is ActionKind.DEAUTHORIZE
    assert "expired at" in finding.reason


def test_future_activation_is_not_yet_access():
    view = membership("a1b2c3d4e5", activations=(activation(1, 5),))
    finding = only(find_drift(NETWORK, [member("a1b2c3d4e5", authorized=True)], {"a1b2c3d4e5": view}, policy(), NOW))
    assert finding.portal_state == "scheduled"
    assert finding.action is ActionKind.DEAUTHORIZE


def test_activation_expiring_exactly_now_is_expired():
    view = membership("a1b2c3d4e5", activations=(activation(-2, 0),))
    assert view.access_state(NOW) == "expired"


def test_inactive_state_wins_over_current_activation():
    view = membership("a1b2c3d4e5", "inactive", activations=(activation(-1, 2),))
    assert view.access_state(NOW) == "inactive"


def test_active_bridge_is_protected():
    finding = only(find_drift(NETWORK, [member("b41d9e0001", authorized=True, bridge=True)],
                              {"b41d9e0001": membership("b41d9e0001", "inactive")}, policy(), NOW))
    assert finding.kind is DriftKind.PROTECTED
    assert finding.action is None
    assert not finding.pending


def test_listed_node_is_protected():
    finding = only(find_drift(NETWORK, [member("a1b2c3d4e5", authorized=True)],
                              {"a1b2c3d4e5": membership("a1b2c3d4e5", "inactive")},
                              policy(protected=frozenset({"a1b2c3d4e5"})), NOW))
    assert finding.kind is DriftKind.PROTECTED
    assert "protected_nodes" in finding.reason


def test_public_network_has_no_authorization_drift():
    members = [member("a1b2c3d4e5", authorized=True)]
    assert find_drift(PUBLIC, members, {"a1b2c3d4e5": membership("a1b2c3d4e5", "inactive")}, policy(), NOW) == []
    assert find_drift(PUBLIC, [], {"a1b2c3d4e5": membership("a1b2c3d4e5")}, policy(), NOW) == []


def test_retention_passed_deletes():
    old = NOW - timedelta(days=40)
    finding = only(find_drift(NETWORK, [member("a1b2c3d4e5", authorized=False, created=old, deauthorized_at=old)],
                              {"a1b2c3d4e5": membership("a1b2c3d4e5", "inactive", changed=old)}, policy(), NOW))
    assert finding.kind is DriftKind.RETENTION_PASSED
    assert finding.action is ActionKind.DELETE


@pytest.mark.parametrize("recent", ["changed", "deauthorized", "created"])
def test_retention_counts_from_latest_time(recent):
    old, new = NOW - timedelta(days=40), NOW - timedelta(days=2)
    view = membership("a1b2c3d4e5", "inactive", changed=new if recent == "changed" else old)
    record = member("a1b2c3d4e5", authorized=False, created=new if recent == "created" else old,
                    deauthorized_at=new if recent == "deauthorized" else old)
    assert find_drift(NETWORK, [record], {"a1b2c3d4e5": view}, policy(), NOW) == []


def test_retention_disabled_never_deletes():
    old = NOW - timedelta(days=400)
    findings = find_drift(NETWORK, [member("a1b2c3d4e5", authorized=False, created=old, deauthorized_at=old)],
                          {"a1b2c3d4e5": membership("a1b2c3d4e5", "inactive", changed=old)},
                          policy(purge_after=None), NOW)
    assert findings == []


def test_member_back_after_purge_not_deleted_again():
    purged = NOW - timedelta(days=40)
    returned = member("a1b2c3d4e5", authorized=False, created=purged + timedelta(minutes=1))
    view = membership("a1b2c3d4e5", "inactive", changed=NOW - timedelta(days=90), purged=purged)
    assert find_drift(NETWORK, [returned], {"a1b2c3d4e5": view}, policy(), NOW) == []


def test_unknown_report_policy_flags_only():
    findings = find_unknown(NETWORK, [member("0badc0ffee", authorized=True), member("0000dead01", authorized=False)],
                            {}, policy(), NOW)
    assert [f.node_id for f in findings] == ["0000dead01", "0badc0ffee"]
    assert all(f.kind is DriftKind.UNKNOWN and f.action is None for f in findings)
    assert [f.pending for f in findings] == [False, True]


def test_unknown_deauthorize_after_grace():
    old = member("0badc0ffee", authorized=True, created=NOW - timedelta(hours=2))
    young = member("0badc0ffe1", authorized=True, created=NOW - timedelta(minutes=5))
    findings = find_unknown(NETWORK, [old, young], {}, policy(action="deauthorize"), NOW)
    by_node = {f.node_id: f for f in findings}
    assert by_node["0badc0ffee"].action is ActionKind.DEAUTHORIZE
    assert by_node["0badc0ffe1"].action is None
    assert "applies after" in by_node["0badc0ffe1"].reason


def test_unknown_delete_policy():
    old = member("0badc0ffee", authorized=False, created=NOW - timedelta(hours=2))
    finding = only(find_unknown(NETWORK, [old], {}, policy(action="delete"), NOW))
    assert finding.action is ActionKind.DELETE


def test_unknown_without_creation_time_not_acted_on():
    record = ControllerMember(NETWORK.id, "0badc0ffee", authorized=True, active_bridge=False, revision=1)
    finding = only(find_unknown(NETWORK, [record], {}, policy(action="delete"), NOW))
    assert finding.action is None
    assert "creation time unknown" in finding.reason


def test_unknown_on_public_network_not_acted_on():
    finding = only(find_unknown(PUBLIC, [member("0badc0ffee", authorized=True)], {}, policy(action="delete"), NOW))
    assert finding.action is None
    assert not finding.pending


def test_unknown_bridge_protected():
    finding = only(find_unknown(NETWORK, [member("b41d9e0001", authorized=True, bridge=True)], {},
                                policy(action="delete", grace=timedelta(0)), NOW))
    assert finding.action is None
    assert "active bridge" in finding.reason


def test_members_with_membership_are_not_unknown():
    members = [member("a1b2c3d4e5", authorized=True)]
    assert find_unknown(NETWORK, members, {"a1b2c3d4e5": membership("a1b2c3d4e5", removed=True)}, policy(), NOW) == []
