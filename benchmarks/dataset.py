"""The generated data of one benchmark size: networks, members, portal states and drift.

The same seed always gives the same IDs, states and drift, so the controller
and the portal of every run in a case start from identical data.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

CONTROLLER_ADDRESS = "3233204505"
"""The emulated node's address: every network ID starts with it, as on a real controller."""

INACTIVE_AUTHORIZED = "inactive-authorized"
ACTIVE_DEAUTHORIZED = "active-deauthorized"
ACTIVE_MISSING = "active-missing"
DRIFT_KINDS = (INACTIVE_AUTHORIZED, ACTIVE_DEAUTHORIZED, ACTIVE_MISSING)
"""Drift kinds, in the order they are dealt out, so each kind gets a third of the drifted members."""

ACTIVE_SHARE = 0.9
"""Share of the members without drift that are active in the portal (and authorized on the controller)."""
ACTIVATION_SHARE = 0.3
"""Share of the active members without drift whose access comes from a current, time-limited activation."""

# Generated node IDs skip 0 and the ff prefix, which ZeroTier reserves.
# NOTE: that reservation is not checked against ZeroTier's source here; the
# emulator and ztctl accept any 10 hex digits, so it only keeps the data plausible.
_NODE_ID_LIMIT = 0xFF_0000_0000


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """One device of one network, as the portal and the controller hold it before any run."""

    node_id: str
    index: int
    """Position of the member across the whole data set, from 0; it sets the member's IP address."""
    portal_state: str
    """``active`` or ``inactive``; every generated member has a membership in the portal."""
    on_controller: bool
    controller_authorized: bool
    has_activation: bool
    drift: str | None

    @property
    def should_be_authorized(self) -> bool:
        return self.portal_state == "active"

    @property
    def ip_address(self) -> str:
        number = self.index + 1
        return f"10.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255}"


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    network_id: str
    name: str
    members: tuple[MemberSpec, ...]


@dataclass(frozen=True)
class Dataset:
    """``size`` members in networks of ``network_size``, with ``drift_share`` of them drifted."""

    size: int
    network_size: int
    drift_share: float
    seed: int
    generated_at: datetime
    """The time that activations and creation times are relative to."""
    networks: tuple[NetworkSpec, ...]

    @property
    def network_ids(self) -> list[str]:
        return [network.network_id for network in self.networks]

    def members(self) -> list[MemberSpec]:
        return [member for network in self.networks for member in network.members]

    def drift_counts(self) -> dict[str, int]:
        counts = Counter(member.drift for member in self.members() if member.drift is not None)
        return {kind: counts.get(kind, 0) for kind in DRIFT_KINDS}

    def activation_window(self) -> tuple[datetime, datetime]:
        """Return the start and end of every generated activation: current for the next 30 days."""
        return self.generated_at - timedelta(hours=1), self.generated_at + timedelta(days=30)


def generate_dataset(
    size: int, *, network_size: int, drift_share: float, seed: int, now: datetime
) -> Dataset:
    """Generate ``size`` members in ``size // network_size`` networks; raise ``ValueError`` on bad sizes."""
    if size < 1 or network_size < 1 or size % network_size:
        raise ValueError(
            f"invalid size {size} with networks of {network_size}: the size must be a positive multiple "
            "of the network size"
        )
    if not 0 <= drift_share <= 1:
        raise ValueError(f"invalid drift share {drift_share}: expected 0 to 1, such as 0.01 for 1%")

    rng = random.Random(seed)
    node_ids = _unique_node_ids(rng, size)
    drift_by_index = _deal_drift(rng, size, round(size * drift_share))
    networks = []
    for network_number in range(size // network_size):
        first = network_number * network_size
        members = tuple(
            _member(rng, index, node_ids[index], drift_by_index.get(index))
            for index in range(first, first + network_size)
        )
        network_id = f"{CONTROLLER_ADDRESS}{network_number + 1:06x}"
        networks.append(NetworkSpec(network_id, f"bench-{network_number + 1:04d}", members))
    return Dataset(size, network_size, drift_share, seed, now, tuple(networks))


def _unique_node_ids(rng: random.Random, count: int) -> list[str]:
    seen: set[int] = set()
    node_ids = []
    while len(node_ids) < count:
        value = rng.randrange(1, _NODE_ID_LIMIT)
        if value not in seen:
            seen.add(value)
            node_ids.append(f"{value:010x}")
    return node_ids


def _deal_drift(rng: random.Random, size: int, drifted: int) -> dict[int, str]:
    chosen = rng.sample(range(size), drifted)
    return {index: DRIFT_KINDS[position % len(DRIFT_KINDS)] for position, index in enumerate(chosen)}


def _member(rng: random.Random, index: int, node_id: str, drift: str | None) -> MemberSpec:
    if drift == INACTIVE_AUTHORIZED:
        return MemberSpec(node_id, index, "inactive", True, True, False, drift)
    if drift == ACTIVE_DEAUTHORIZED:
        return MemberSpec(node_id, index, "active", True, False, False, drift)
    if drift == ACTIVE_MISSING:
        return MemberSpec(node_id, index, "active", False, False, False, drift)
    active = rng.random() < ACTIVE_SHARE
    has_activation = active and rng.random() < ACTIVATION_SHARE
    return MemberSpec(node_id, index, "active" if active else "inactive", True, active, has_activation, None)
