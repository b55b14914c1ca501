"""``ztctl adopt NETWORK``: bring an existing network under management.

Every member on the controller gets a membership: authorized members as
active, the others as inactive. Members that still have a membership from an
earlier time under management keep it. Without adoption, the first run on a
newly managed network would report every member as unknown and, under a
deauthorize or delete policy, act on them. A network already managed is
refused: there, the members without a membership are unknown devices.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from ztctl.controller.base import is_network_id
from ztctl.engine import portal_state
from ztctl.engine.job import Job
from ztctl.engine.model import (
    ActionKind,
    DriftKind,
    Finding,
    Mode,
    Outcome,
    OutcomeStatus,
)
from ztctl.errors import NetworkNotFound, UsageError
from ztctl.portal.models import Membership, Network

STAGE = "adopt"


@dataclass
class AdoptResult:
    network_id: str
    network_name: str
    adds_network: bool
    """Whether the network itself is new to the portal (or returns after being removed)."""
    memberships: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(node ID, state, name) of each membership written, or to write in a dry run."""
    kept: int = 0
    """Members that already had a membership, left as they are."""
    applied: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "network": self.network_id,
            "name": self.network_name,
            "adds_network": self.adds_network,
            "memberships": [{"node": node, "state": state, "name": name} for node, state, name in self.memberships],
            "kept": self.kept,
            "applied": self.applied,
        }


def adopt(job: Job, network_id: str) -> AdoptResult:
    network_id = network_id.lower()
    if not is_network_id(network_id):
        raise UsageError(f"invalid network ID {network_id!r}: expected 16 hex digits")
    if job.mode is Mode.AUDIT:
        raise UsageError("adopt does not support --audit", hint="use --dry-run to see what it would write")
    client = job.require_controller()
    try:
        network = client.get_network(network_id)
    except NetworkNotFound:
        raise UsageError(
            f"network {network_id} is not on the controller at {job.settings.controller.url}",
            hint="check the network ID with the controller's network list",
        ) from None
    with job.sessions() as session:
        existing = session.get(Network, network_id)
        if existing is not None and existing.removed_at is None:
            # On a managed network the members without a membership are the
            # unknown ones; adopting them would approve every unknown device.
            raise UsageError(
                f"network {network_id} is already managed, so adopt would turn its unknown members into approved ones",
                hint="add memberships for the devices you know with `ztctl portal load`, or accept a known "
                "difference with `ztctl ack`",
            )
        known = portal_state.memberships_by_node(session, network_id, [])
    members = client.list_members(network_id)
    result = AdoptResult(network_id, _storable(network.name), adds_network=True)
    for member in members:
        if member.node_id in known:
            result.kept += 1
            continue
        state = "active" if member.authorized else "inactive"
        result.memberships.append((member.node_id, state, _storable(member.name) if member.name else member.name))
    if job.mode is Mode.APPLY:
        _write(job, result)
    return result


def _storable(text: str) -> str:
    """Drop control characters from a name the controller gave, which the portal file format rejects."""
    return "".join(character for character in text if unicodedata.category(character) != "Cc")


def _write(job: Job, result: AdoptResult) -> None:
    now = job.now()
    with job.write_sessions() as session:
        network = session.get(Network, result.network_id)
        if network is None:
            session.add(Network(id=result.network_id, name=result.network_name))
        elif network.removed_at is not None:
            network.removed_at = None
        session.flush()
        for node_id, state, name in result.memberships:
            session.add(
                Membership(
                    network_id=result.network_id, node_id=node_id, state=state, name=name[:200] if name else None,
                    state_changed_at=now,
                )
            )
            finding = Finding(
                network_id=result.network_id, node_id=node_id, kind=DriftKind.UNKNOWN, portal_state="none",
                controller_state="authorized" if state == "active" else "deauthorized", action=ActionKind.ADOPT,
                reason=f"adopted from the controller as {state}",
            )
            job.recorder.record(session, STAGE, finding, Outcome(finding, OutcomeStatus.APPLIED))
        session.commit()
    result.applied = True
