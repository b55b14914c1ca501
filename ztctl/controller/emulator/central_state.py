"""In-memory networks and members of the emulated ZeroTier Central.

IDs are stored in lower case and looked up in any case. ``config.revision``
starts at 1 when a member is created and goes up by one with each change that
a POST or a join makes, but not when only the contact data (``lastSeen`` and
the like) changes. Every method takes the state lock, so the HTTP threads and
the test's Python calls can interleave safely. Methods return deep copies.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .central_records import (
    apply_member_post,
    new_member_record,
    new_network_record,
    record_join,
    revision_fields,
    set_authorized,
    stable_uuid,
)

ONLINE_WINDOW_MS = 5 * 60 * 1000
"""A member seen within this many milliseconds counts in ``onlineMemberCount``."""


def current_time_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Network:
    record: dict[str, Any]
    members: dict[str, dict[str, Any]] = field(default_factory=dict)


class CentralState:
    """Networks and members of one emulated Central account, guarded by one lock."""

    def __init__(self, clock: Callable[[], int] = current_time_ms) -> None:
        self.clock = clock
        self.owner_id = stable_uuid("user")
        self._lock = threading.RLock()
        self._networks: dict[str, _Network] = {}

    # Networks

    def network_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._networks)

    def has_network(self, network_id: str) -> bool:
        with self._lock:
            return network_id.lower() in self._networks

    def create_network(self, network_id: str | None, name: str, private: bool) -> str:
        """Create a network, or rename and set ``private`` on an existing one; return its ID.

        ``None`` picks a random ID that no network has.
        """
        with self._lock:
            if network_id is None:
                network_id = self._free_network_id()
            network_id = network_id.lower()
            network = self._networks.get(network_id)
            if network is None:
                record = new_network_record(network_id, name, private, self.clock(), self.owner_id)
                self._networks[network_id] = _Network(record)
            else:
                network.record["config"].update(name=name, private=private, lastModified=self.clock())
            return network_id

    def delete_network(self, network_id: str) -> bool:
        with self._lock:
            return self._networks.pop(network_id.lower(), None) is not None

    def get_network(self, network_id: str) -> dict[str, Any] | None:
        """Return a network with its member counts, or None."""
        with self._lock:
            network = self._networks.get(network_id.lower())
            return self._served_network(network) if network else None

    def list_networks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._served_network(self._networks[key]) for key in sorted(self._networks)]

    def _free_network_id(self) -> str:
        while True:
            candidate = f"{secrets.randbits(64):016x}"
            if candidate not in self._networks:
                return candidate

    def _served_network(self, network: _Network) -> dict[str, Any]:
        record = copy.deepcopy(network.record)
        members = network.members.values()
        now = self.clock()
        record["clock"] = now
        record["authorizedMemberCount"] = sum(1 for member in members if member["config"]["authorized"])
        record["totalMemberCount"] = len(network.members)
        record["onlineMemberCount"] = sum(
            1 for member in members if member["lastSeen"] and now - member["lastSeen"] <= ONLINE_WINDOW_MS
        )
        return record

    # Members

    def list_members(self, network_id: str) -> list[dict[str, Any]] | None:
        """Return every member ordered by node ID, or None when the network does not exist."""
        with self._lock:
            network = self._networks.get(network_id.lower())
            if network is None:
                return None
            return [self._served_member(network.members[key]) for key in sorted(network.members)]

    def get_member(self, network_id: str, node_id: str) -> dict[str, Any] | None:
        with self._lock:
            network = self._networks.get(network_id.lower())
            member = network.members.get(node_id.lower()) if network else None
            return self._served_member(member) if member else None

    def post_member(
        self,
        network_id: str,
        node_id: str,
        body: object,
        *,
        creation_time_ms: int | None = None,
        contact: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Create or update a member like ``POST /network/<id>/member/<node>``; return it as served.

        Returns None when the network does not exist. Raises ``InvalidMemberBody`` for a value of
        the wrong type, and then changes nothing. ``creation_time_ms`` and ``contact`` (top-level
        contact fields such as ``lastSeen``) set what no request can.
        """
        network_id, node_id = network_id.lower(), node_id.lower()
        now = self.clock()
        with self._lock:
            network = self._networks.get(network_id)
            if network is None:
                return None
            old = network.members.get(node_id)
            member = copy.deepcopy(old) if old else new_member_record(network_id, node_id, now)
            apply_member_post(member, body, now)
            if creation_time_ms is not None:
                member["config"]["creationTime"] = creation_time_ms
            if contact:
                member.update(contact)
            return self._served_member(self._save_member(network, member))

    def delete_member(self, network_id: str, node_id: str) -> bool:
        with self._lock:
            network = self._networks.get(network_id.lower())
            if network is None:
                return False
            return network.members.pop(node_id.lower(), None) is not None

    def simulate_join(self, network_id: str, node_id: str, physical_address: str) -> dict[str, Any]:
        """Apply a device's request to join: create the member unauthorized if missing and record the contact.

        On a public network the member is authorized. Raises ``KeyError`` for an unknown network.
        """
        network_id, node_id = network_id.lower(), node_id.lower()
        now = self.clock()
        with self._lock:
            network = self._networks.get(network_id)
            if network is None:
                raise KeyError(f"network {network_id} not found: create it before a device joins")
            old = network.members.get(node_id)
            member = copy.deepcopy(old) if old else new_member_record(network_id, node_id, now)
            if not network.record["config"]["private"]:
                set_authorized(member, True, now)
            record_join(member, now, physical_address)
            return self._served_member(self._save_member(network, member))

    def _save_member(self, network: _Network, member: dict[str, Any]) -> dict[str, Any]:
        old = network.members.get(member["nodeId"])
        if old is None or revision_fields(old) != revision_fields(member):
            member["config"]["revision"] += 1
        network.members[member["nodeId"]] = member
        return member

    def _served_member(self, member: dict[str, Any]) -> dict[str, Any]:
        served = copy.deepcopy(member)
        served["clock"] = self.clock()
        return served
