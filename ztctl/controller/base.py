"""The controller interface that every backend implements.

The engine talks to a controller only through ``ControllerClient``. A backend
turns its API's JSON into the frozen records below, so that the engine never
sees a backend's field names, ID case or time units.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

NETWORK_ID_PATTERN = re.compile(r"[0-9a-f]{16}")
NODE_ID_PATTERN = re.compile(r"[0-9a-f]{10}")


def is_network_id(value: str) -> bool:
    """Tell whether ``value`` is a network ID in canonical form: 16 lower-case hex digits."""
    return NETWORK_ID_PATTERN.fullmatch(value) is not None


def is_node_id(value: str) -> bool:
    """Tell whether ``value`` is a node ID in canonical form: 10 lower-case hex digits."""
    return NODE_ID_PATTERN.fullmatch(value) is not None


def datetime_from_ms(value: int | None) -> datetime | None:
    """Convert controller milliseconds since the Unix epoch to an aware UTC time; 0 means never."""
    if not value:
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class ControllerStatus:
    """The controller's description of itself, returned by a probe."""

    address: str
    """The controller's node address: every network it serves starts with it."""
    version: str
    api_version: int | None = None
    backend: str = "zerotier-one"


@dataclass(frozen=True, slots=True)
class ControllerNetwork:
    id: str
    name: str
    private: bool
    """False on a public network: members join without authorization there."""


@dataclass(frozen=True, slots=True)
class ControllerMember:
    """A member as stored on the controller, with IDs in lower case and times in UTC."""

    network_id: str
    node_id: str
    authorized: bool
    active_bridge: bool
    revision: int
    created_at: datetime | None = None
    last_authorized_at: datetime | None = None
    last_deauthorized_at: datetime | None = None
    name: str | None = None
    ip_assignments: tuple[str, ...] = ()
    last_seen_at: datetime | None = None
    """Central only; shown to operators, never used to decide an action."""
    physical_address: str | None = None
    """Central only, like ``last_seen_at``."""


@dataclass
class RequestStats:
    """Requests sent by a client, counted by kind (``list``, ``get``, ``authorize`` and so on)."""

    by_kind: Counter[str] = field(default_factory=Counter)
    retries: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


class ControllerClient(ABC):
    """A connection to one network controller.

    Reads return records or raise ``NetworkNotFound``; writes are conditional:
    each re-reads the member first and raises ``MemberNotFound`` or
    ``MemberChanged`` instead of writing when the member is not as the caller
    expects. A write never creates a member unless ``create=True``.

    A client built with ``read_only=True`` rejects every write with
    ``ReadOnlyViolation`` before anything is sent.
    """

    backend: str = ""

    def __init__(self, *, read_only: bool) -> None:
        self.read_only = read_only
        self.stats = RequestStats()
        self.deadline: float | None = None

    @abstractmethod
    def probe(self) -> ControllerStatus:
        """Check that the server is a controller and accepts the token; raise ``ControllerError`` if not."""

    @abstractmethod
    def list_network_ids(self) -> list[str]:
        """Return the IDs of every network on the controller, in lower case."""

    def may_change(self, network_ids: list[str]) -> dict[str, bool]:
        """Return, per network, whether the token may change its members, where the controller reports it.

        A network left out is unknown. A zerotier-one token is the node's own
        and may change everything, so the default reports nothing.
        """
        return {}

    def list_networks(self) -> dict[str, ControllerNetwork] | None:
        """Return every network on the controller from one request, or None where the API has no such list.

        A run reads many networks, so one request for all of them saves one
        per network. The default says the backend cannot.
        """
        return None

    @abstractmethod
    def get_network(self, network_id: str) -> ControllerNetwork:
        """Return one network; raise ``NetworkNotFound`` when the controller does not have it."""

    @abstractmethod
    def list_members(
        self,
        network_id: str,
        cached: Mapping[str, ControllerMember] | None = None,
    ) -> list[ControllerMember]:
        """Return every member of a network.

        ``cached`` maps node IDs to members read earlier. A backend without a
        bulk list may reuse a cached member whose ``revision`` is unchanged
        instead of reading it again; it then returns that very object, so the
        caller can tell which members were reused.
        """

    @abstractmethod
    def get_member(self, network_id: str, node_id: str) -> ControllerMember | None:
        """Return one member, or None when the network has no such member."""

    @abstractmethod
    def authorize_member(
        self,
        network_id: str,
        node_id: str,
        *,
        expected_revision: int | None = None,
        create: bool = False,
        name: str | None = None,
    ) -> ControllerMember:
        """Set ``authorized`` to true and return the member as stored.

        ``expected_revision`` is the revision at which the plan saw the member
        unauthorized: a member at that revision that reads authorized means
        the controller's responses disagree, and ``ControllerResponseError`` is
        raised. With ``create=True`` the member is expected to be absent and is
        created (pre-authorized), named ``name`` where the backend stores
        names; if it exists by then, ``MemberChanged`` is raised. Otherwise a
        missing member raises ``MemberNotFound``.
        """

    @abstractmethod
    def deauthorize_member(
        self, network_id: str, node_id: str, *, expected_revision: int | None = None
    ) -> ControllerMember:
        """Set ``authorized`` to false on an existing member and return it as stored.

        ``expected_revision`` is handled as in ``authorize_member``, the other way round.
        """

    @abstractmethod
    def delete_member(
        self, network_id: str, node_id: str, *, expected_revision: int | None = None
    ) -> ControllerMember:
        """Delete an existing member and return its last state."""

    def set_deadline(self, deadline: float | None) -> None:
        """Stop retrying once ``time.monotonic()`` passes ``deadline``: the run's time limit."""
        self.deadline = deadline

    def close(self) -> None:
        """Release connections; the default has none to release."""

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
