"""In-memory controller state with the semantics of ``zerotier-one``'s controller.

Networks and members are keyed by their numeric ID, so lookups ignore case,
while a member keeps the ``id`` and ``address`` exactly as the last POST typed
them (from 1.12.0), which is how the real controller behaves. Every method
takes the state lock, so the HTTP threads and the test's Python calls can
interleave safely. Methods return deep copies; callers never hold live records.
"""

from __future__ import annotations

import copy
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .flavour import ApiFlavour
from .jsonvalues import json_int
from .records import (
    apply_member_post,
    apply_network_post,
    identity_for,
    new_member_record,
    new_network_record,
    records_differ,
    set_authorized,
)

NETWORK_ID_PATTERN = re.compile(r"[0-9a-fA-F]{16}")
NODE_ID_PATTERN = re.compile(r"[0-9a-fA-F]{10}")

_RANDOM_ID_ATTEMPTS = 100_000
"""How many random suffixes the controller tries before it returns 503 (no free network ID)."""

_JOIN_PROTOCOL_VERSION = 13
# NOTE: the protocol version that a joining 1.12+ node reports is assumed to be 13;
# no recording shows a member that has joined.


def validate_network_id(network_id: str) -> str:
    """Return ``network_id`` unchanged, or raise ``ValueError`` if it is not 16 hex digits."""
    if not isinstance(network_id, str) or NETWORK_ID_PATTERN.fullmatch(network_id) is None:
        raise ValueError(f"invalid network ID {network_id!r}: expected 16 hex digits")
    return network_id


def validate_node_id(node_id: str) -> str:
    """Return ``node_id`` unchanged, or raise ``ValueError`` if it is not 10 hex digits."""
    if not isinstance(node_id, str) or NODE_ID_PATTERN.fullmatch(node_id) is None:
        raise ValueError(f"invalid node ID {node_id!r}: expected 10 hex digits")
    return node_id


def current_time_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Network:
    record: dict[str, Any]
    members: dict[int, dict[str, Any]] = field(default_factory=dict)


class ControllerState:
    """Networks and members of one emulated controller, guarded by one lock."""

    def __init__(
        self, address: str, flavour: ApiFlavour, clock: Callable[[], int] = current_time_ms
    ) -> None:
        validate_node_id(address)
        self.address = address.lower()
        self.flavour = flavour
        self.clock = clock
        self._lock = threading.RLock()
        self._networks: dict[int, _Network] = {}

    # Networks

    def network_ids(self) -> list[str]:
        with self._lock:
            return [f"{key:016x}" for key in sorted(self._networks)]

    def has_network(self, network_id: str) -> bool:
        with self._lock:
            return int(network_id, 16) in self._networks

    def get_network(self, network_id: str) -> dict[str, Any] | None:
        with self._lock:
            network = self._networks.get(int(network_id, 16))
            return copy.deepcopy(network.record) if network else None

    def network_summaries(self) -> list[dict[str, Any]]:
        """Return every network record with member counts, as ``/unstable/controller/network`` lists them."""
        with self._lock:
            summaries = []
            for key in sorted(self._networks):
                network = self._networks[key]
                summary = copy.deepcopy(network.record)
                summary["meta"] = {
                    "authorizedMemberCount": _authorized_count(network),
                    "totalMemberCount": len(network.members),
                }
                summaries.append(summary)
            return summaries

    def create_random_network(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a network under this node's address with a random suffix.

        Returns ``None`` when no free ID was found; the controller returns 503 then.
        """
        prefix = int(self.address, 16) << 24
        with self._lock:
            for _ in range(_RANDOM_ID_ATTEMPTS):
                # A zero suffix is never used: the controller turns it into 1.
                key = prefix | (secrets.randbits(24) or 1)
                if key not in self._networks:
                    return self.post_network(f"{key:016x}", body)
            return None

    def post_network(self, network_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create or update the network ``network_id`` (any prefix) with the keys in ``body``."""
        key = int(network_id, 16)
        with self._lock:
            network = self._networks.get(key)
            if network is None:
                record = new_network_record(f"{key:016x}", self.clock())
            else:
                record = copy.deepcopy(network.record)
            apply_network_post(record, body)

            if network is None:
                record["revision"] = json_int(record.get("revision"), 0) + 1
                self._networks[key] = _Network(record)
            elif records_differ(network.record, record):
                record["revision"] = json_int(record.get("revision"), 0) + 1
                network.record = record
            return copy.deepcopy(record)

    def delete_network(self, network_id: str) -> dict[str, Any] | None:
        """Delete a network and its members; return the old network record, or ``None``."""
        key = int(network_id, 16)
        with self._lock:
            network = self._networks.get(key)
            if network is None:
                return None
            if self.flavour.deauthorizes_members_on_network_delete:
                # From 1.14.1 the controller saves every member as deauthorized
                # before it erases the network, so that the nodes get revoked.
                now = self.clock()
                for member_key, member in list(network.members.items()):
                    updated = copy.deepcopy(member)
                    set_authorized(updated, False, now, "api")
                    self._save_member(network, member_key, updated)
            del self._networks[key]
            return copy.deepcopy(network.record)

    # Members

    def member_revisions(self, network_id: str) -> dict[str, int] | None:
        """Return ``{id: revision}`` for every member, sorted by ID as served; ``None`` if no such network."""
        with self._lock:
            network = self._networks.get(int(network_id, 16))
            if network is None:
                return None
            revisions = {member["id"]: member["revision"] for member in network.members.values()}
            return {member_id: revisions[member_id] for member_id in sorted(revisions)}

    def list_members(self, network_id: str) -> list[dict[str, Any]] | None:
        """Return every member record, ordered by node ID; ``None`` if no such network."""
        with self._lock:
            network = self._networks.get(int(network_id, 16))
            if network is None:
                return None
            return [copy.deepcopy(network.members[key]) for key in sorted(network.members)]

    def get_member(self, network_id: str, node_id: str) -> dict[str, Any] | None:
        with self._lock:
            network = self._networks.get(int(network_id, 16))
            if network is None:
                return None
            member = network.members.get(int(node_id, 16))
            return copy.deepcopy(member) if member else None

    def post_member(
        self,
        network_id: str,
        node_id: str,
        body: dict[str, Any],
        *,
        creation_time_ms: int | None = None,
    ) -> dict[str, Any] | None:
        """Upsert a member like ``POST .../member/<id>``; return it as served.

        ``network_id`` and ``node_id`` are stored as typed (from 1.12.0). Returns
        ``None`` when the network is unknown and this release returns 404 then
        (1.14.0+). Raises ``InvalidBody`` for a value that the controller
        cannot convert; nothing is saved in that case.
        """
        now = self.clock()
        if not self.flavour.keeps_member_id_case:
            network_id, node_id = network_id.lower(), node_id.lower()
        with self._lock:
            network = self._networks.get(int(network_id, 16))
            old = network.members.get(int(node_id, 16)) if network else None
            member = copy.deepcopy(old) if old else new_member_record(network_id, node_id, now)
            apply_member_post(member, body, now_ms=now, stores_name=self.flavour.stores_member_name)
            member["id"] = node_id
            member["address"] = node_id
            member["nwid"] = network_id
            if creation_time_ms is not None:
                member["creationTime"] = creation_time_ms

            if network is None:
                if self.flavour.rejects_member_of_unknown_network:
                    return None
                # NOTE: releases before 1.14.0 save a dangling record here that
                # no list shows; the emulator only returns it.
                member["revision"] = json_int(member.get("revision"), 0) + 1
                return member
            return copy.deepcopy(self._save_member(network, int(node_id, 16), member))

    def delete_member(self, network_id: str, node_id: str) -> dict[str, Any] | None:
        """Remove a member; return the removed record, or ``None`` if it does not exist."""
        with self._lock:
            network = self._networks.get(int(network_id, 16))
            if network is None:
                return None
            return network.members.pop(int(node_id, 16), None)

    def simulate_join(self, network_id: str, node_id: str) -> dict[str, Any]:
        """Apply a device's network config request to its member record.

        Like the controller's request handler: creates an unauthorized member
        if missing, learns its identity, rewrites ``id`` and ``address`` in
        lower case, auto-authorizes on a public network (credential type
        ``public``) and records the node's version once it is authorized.
        Raises ``KeyError`` for an unknown network (the real controller ignores
        the request then).
        """
        address = node_id.lower()
        now = self.clock()
        with self._lock:
            network = self._networks.get(int(network_id, 16))
            if network is None:
                raise KeyError(f"network {network_id} not found: create it before a device joins")
            old = network.members.get(int(address, 16))
            member = copy.deepcopy(old) if old else new_member_record(network_id, address, now)
            member["id"] = address
            member["address"] = address
            member["nwid"] = f"{int(network_id, 16):016x}"
            member.setdefault("identity", identity_for(address))
            if not network.record.get("private", True):
                set_authorized(member, True, now, "public")
            if member["authorized"]:
                member["vMajor"] = self.flavour.major
                member["vMinor"] = self.flavour.minor
                member["vRev"] = self.flavour.revision
                member["vProto"] = _JOIN_PROTOCOL_VERSION
            return copy.deepcopy(self._save_member(network, int(address, 16), member))

    def _save_member(self, network: _Network, key: int, member: dict[str, Any]) -> dict[str, Any]:
        # FileDB adds 1 to the revision only when the record changed; a new record gets 1.
        old = network.members.get(key)
        if records_differ(old, member):
            member["revision"] = json_int(member.get("revision"), 0) + 1
            # Sorted keys, as the controller's JSON objects (std::map) serve them.
            saved = dict(sorted(member.items()))
            network.members[key] = saved
            return saved
        return old if old is not None else member


def _authorized_count(network: _Network) -> int:
    return sum(1 for member in network.members.values() if member.get("authorized") is True)
