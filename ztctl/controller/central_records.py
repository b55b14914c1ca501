"""Turn ZeroTier Central API v1 JSON into the records of ``ztctl.controller.base``.

A Central member nests the self-hosted member object under ``config`` and adds
account-level fields around it. Members are keyed by ``nodeId``; the top-level
``id`` is a deprecated ``<network ID>-<node ID>`` composite and is ignored.

Every parser checks the fields that ztctl relies on and raises
``ControllerResponseError`` naming the network, member, field and request when
one has the wrong type. Unknown fields are ignored and missing optional fields
take their defaults. ``lastSeen`` and ``physicalAddress`` are information only,
so a value of the wrong type there is dropped instead of failing the member.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from ztctl.controller.base import ControllerMember, ControllerNetwork, datetime_from_ms
from ztctl.controller.zerotier_one_records import MAX_REVISION, MAX_TIME_MS
from ztctl.errors import ControllerResponseError

_NETWORK_ID = re.compile(r"[0-9a-fA-F]{16}")
_NODE_ID = re.compile(r"[0-9a-fA-F]{10}")

STATUS_ID = "central_status"
STATUS_TYPE = "CentralStatus"
DEFAULT_VERSION = "central"


@dataclass(frozen=True, slots=True)
class CentralStatus:
    """The parts of a ``GET /status`` body that ztctl uses."""

    version: str
    """Central's ``version``, or ``central`` when the body has none."""
    api_version: int | None
    has_user: bool
    """Whether the body names the user the token belongs to, which shows that Central accepted it."""
    read_only_mode: bool
    """Central's maintenance mode, in which it rejects every change."""
    user_id: str | None = None
    """The ID of the token's user, which keys each network's ``permissions``."""


def parse_status(body: object) -> CentralStatus | None:
    """Read a ``GET /status`` body, or return None when it is not a Central status.

    NOTE: a body counts as Central's when it has ``"id": "central_status"``,
    ``"type": "CentralStatus"`` or an ``apiVersion``. Those values are the
    examples of the published API specification, not taken from a live response.
    """
    if not isinstance(body, Mapping):
        return None
    # A zerotier-one node also serves GET /status, with its address and public identity.
    if "publicIdentity" in body:
        return None
    marked = body.get("id") == STATUS_ID or body.get("type") == STATUS_TYPE or "apiVersion" in body
    if not marked:
        return None

    version = body.get("version")
    api_version = body.get("apiVersion")
    user = body.get("user")
    if isinstance(api_version, str) and api_version.isdigit():
        api_version = int(api_version)
    return CentralStatus(
        version=version if isinstance(version, str) and version else DEFAULT_VERSION,
        api_version=api_version if _is_int(api_version) else None,
        has_user=isinstance(user, Mapping),
        read_only_mode=body.get("readOnlyMode") is True,
        user_id=user.get("id") if isinstance(user, Mapping) and isinstance(user.get("id"), str) else None,
    )


def can_authorize(body: object, user_id: str) -> bool | None:
    """Read from a network body whether ``user_id`` may authorize its members, or None if the body does not include it."""
    if not isinstance(body, Mapping) or not isinstance(body.get("permissions"), Mapping):
        return None
    granted = body["permissions"].get(user_id)
    if not isinstance(granted, Mapping) or not isinstance(granted.get("a"), bool):
        return None
    return granted["a"]


def parse_network_ids(body: object, source: str) -> list[str]:
    """Return the lower-case IDs of a ``GET /network`` body: an array of network objects."""
    if not isinstance(body, list):
        raise ControllerResponseError(f"{source} returned {_json_type(body)}, expected an array of networks")
    network_ids = []
    for item in body:
        network_id = _network_id_of(item)
        if network_id is None:
            raise ControllerResponseError(
                f"{source} listed a network without an 'id' of 16 hex digits: {item!r:.100}"
            )
        network_ids.append(network_id)
    return network_ids


def parse_networks(body: object, source: str) -> dict[str, ControllerNetwork]:
    """Return the networks of a ``GET /network`` body, a JSON array of network objects."""
    if not isinstance(body, list):
        raise ControllerResponseError(f"{source} returned {_json_type(body)}, expected an array of networks")
    networks: dict[str, ControllerNetwork] = {}
    for item in body:
        network_id = _network_id_of(item)
        if network_id is None:
            raise ControllerResponseError(f"{source} listed a network without a valid 'id'")
        networks[network_id] = parse_network(item, network_id, source)
    return networks


def parse_network(body: object, network_id: str, source: str) -> ControllerNetwork:
    """Build a ``ControllerNetwork`` from a network object.

    ``config.private`` missing or null means true, the default of a new Central network.
    """
    if not isinstance(body, Mapping):
        raise _network_error(network_id, source, f"returned {_json_type(body)}, expected a network object")
    returned_id = _network_id_of(body)
    if returned_id != network_id:
        raise _network_error(network_id, source, f"returned a network whose 'id' is {body.get('id')!r}")
    config = body.get("config")
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise _network_error(
            network_id, source, f"field 'config' is {_json_type(config)}, expected an object"
        )

    name = config.get("name")
    if name is None:
        name = ""
    if not isinstance(name, str):
        raise _network_error(network_id, source, f"field 'config.name' is {name!r}, expected a string")
    private = config.get("private")
    if private is None:
        private = True
    if not isinstance(private, bool):
        raise _network_error(
            network_id, source, f"field 'config.private' is {private!r}, expected true or false"
        )
    return ControllerNetwork(id=network_id, name=name, private=private)


def parse_members(body: object, network_id: str, source: str) -> list[ControllerMember]:
    """Return the members of a ``GET /network/<id>/member`` body: a JSON array of member objects."""
    if not isinstance(body, list):
        raise _network_error(network_id, source, f"returned {_json_type(body)}, expected an array of members")
    members = [parse_member(item, network_id, source) for item in body]
    node_ids = {member.node_id for member in members}
    if len(node_ids) != len(members):
        raise _network_error(network_id, source, "listed a member more than once")
    return members


def parse_member(
    body: object, network_id: str, source: str, expected_node_id: str | None = None
) -> ControllerMember:
    """Build a ``ControllerMember`` from a Central member object, with IDs in lower case and times in UTC.

    ``expected_node_id`` is the ID the request was for; a member with another ``nodeId`` is an error.
    """
    if not isinstance(body, Mapping):
        raise ControllerResponseError(
            f"{source} returned {_json_type(body)}, expected a member object of network {network_id}",
            network_id=network_id,
            node_id=expected_node_id,
        )
    node_id = _read_node_id(body, network_id, source, expected_node_id)
    fields = _MemberFields(body, network_id, node_id, source)

    returned_network = body.get("networkId")
    if returned_network is not None and (
        not isinstance(returned_network, str) or returned_network.lower() != network_id
    ):
        raise fields.error("networkId", returned_network, f"network ID {network_id}")

    return ControllerMember(
        network_id=network_id,
        node_id=node_id,
        authorized=fields.boolean("authorized", required=True),
        active_bridge=fields.boolean("activeBridge", required=False),
        revision=fields.revision(),
        created_at=fields.time("creationTime"),
        last_authorized_at=fields.time("lastAuthorizedTime"),
        last_deauthorized_at=fields.time("lastDeauthorizedTime"),
        name=fields.name(),
        ip_assignments=fields.ip_assignments(),
        last_seen_at=fields.last_seen(),
        physical_address=fields.physical_address(),
    )


class _MemberFields:
    """Typed reads of one member's fields, each raising an error that names the field.

    ``boolean``, ``time`` and the other readers of settings take names inside ``config``.
    """

    def __init__(self, body: Mapping[str, object], network_id: str, node_id: str, source: str) -> None:
        self.body = body
        self.network_id = network_id
        self.node_id = node_id
        self.source = source
        config = body.get("config")
        if not isinstance(config, Mapping):
            raise self.error("config", config, "an object with the member's settings")
        self.config: Mapping[str, object] = config

    def error(self, field: str, value: object, expected: str) -> ControllerResponseError:
        return ControllerResponseError(
            f"member {self.node_id} of network {self.network_id}: field {field!r} is {value!r:.100}, "
            f"expected {expected} ({self.source})",
            network_id=self.network_id,
            node_id=self.node_id,
        )

    def boolean(self, field: str, *, required: bool) -> bool:
        value = self.config.get(field)
        if value is None and not required:
            return False
        if not isinstance(value, bool):
            raise self.error(f"config.{field}", value, "true or false")
        return value

    def revision(self) -> int:
        value = self.config.get("revision")
        if not _is_int(value) or not 0 <= value <= MAX_REVISION:
            raise self.error("config.revision", value, f"an integer from 0 to {MAX_REVISION}")
        return value

    def time(self, field: str) -> datetime | None:
        value = self.config.get(field)
        if value is None:
            return None
        if not _is_int(value) or not 0 <= value <= MAX_TIME_MS:
            raise self.error(
                f"config.{field}", value, "milliseconds since the Unix epoch, before the year 10000"
            )
        return datetime_from_ms(value)

    def ip_assignments(self) -> tuple[str, ...]:
        value = self.config.get("ipAssignments")
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error("config.ipAssignments", value, "an array of strings")
        return tuple(value)

    def name(self) -> str | None:
        value = self.body.get("name")
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.error("name", value, "a string")
        return value

    def last_seen(self) -> datetime | None:
        # Central may reset lastSeen to 0 at any time, and ztctl only shows it.
        value = self.body.get("lastSeen")
        if not _is_int(value) or not 0 < value <= MAX_TIME_MS:
            return None
        return datetime_from_ms(value)

    def physical_address(self) -> str | None:
        value = self.body.get("physicalAddress")
        return value if isinstance(value, str) and value else None


def _read_node_id(
    body: Mapping[str, object], network_id: str, source: str, expected_node_id: str | None
) -> str:
    raw_id = body.get("nodeId")
    if not isinstance(raw_id, str) or _NODE_ID.fullmatch(raw_id) is None:
        raise ControllerResponseError(
            f"a member of network {network_id}: field 'nodeId' is {raw_id!r:.100}, expected 10 hex digits "
            f"({source})",
            network_id=network_id,
            node_id=expected_node_id,
        )
    node_id = raw_id.lower()
    if expected_node_id is not None and node_id != expected_node_id:
        raise ControllerResponseError(
            f"{source} returned member {node_id} instead of {expected_node_id}",
            network_id=network_id,
            node_id=expected_node_id,
        )
    return node_id


def _network_id_of(body: object) -> str | None:
    """Return a network object's ID in lower case: ``id``, else ``config.id``; None if neither is valid."""
    if not isinstance(body, Mapping):
        return None
    config = body.get("config")
    candidates = [body.get("id"), config.get("id") if isinstance(config, Mapping) else None]
    for candidate in candidates:
        if isinstance(candidate, str) and _NETWORK_ID.fullmatch(candidate):
            return candidate.lower()
    return None


def _network_error(network_id: str, source: str, problem: str) -> ControllerResponseError:
    return ControllerResponseError(f"network {network_id}: {source} {problem}", network_id=network_id)


def _is_int(value: object) -> bool:
    # bool is a subclass of int, but true is not a revision or a time.
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for python_type, name in names.items():
        if isinstance(value, python_type):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__
