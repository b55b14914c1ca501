"""Turn zerotier-one controller JSON into the records of ``ztctl.controller.base``.

Every parser checks the fields that ztctl relies on and raises
``ControllerResponseError`` naming the network, member, field and request when
one is missing or of the wrong type. The API silently coerces wrong types on
input, so a wrong type on output is treated as a broken response, never guessed
at. Unknown fields are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from ztctl.controller.base import ControllerMember, ControllerNetwork, datetime_from_ms
from ztctl.errors import ControllerResponseError

_NETWORK_ID = re.compile(r"[0-9a-fA-F]{16}")
_NODE_ID = re.compile(r"[0-9a-fA-F]{10}")
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def normalize_network_id(value: str) -> str:
    """Return a network ID in lower case; raise ``ValueError`` unless it is 16 hex digits."""
    if not isinstance(value, str) or _NETWORK_ID.fullmatch(value) is None:
        raise ValueError(f"invalid network ID {value!r}: expected 16 hex digits")
    return value.lower()


def normalize_node_id(value: str) -> str:
    """Return a node ID in lower case; raise ``ValueError`` unless it is 10 hex digits."""
    if not isinstance(value, str) or _NODE_ID.fullmatch(value) is None:
        raise ValueError(f"invalid node ID {value!r}: expected 10 hex digits")
    return value.lower()


def parse_version(value: str) -> tuple[int, int, int] | None:
    """Read ``major.minor.revision`` from a zerotier-one version string, or None if it has none."""
    match = _VERSION.match(value)
    if match is None:
        return None
    major, minor, revision = (int(part) for part in match.groups())
    return major, minor, revision


def parse_status(body: object) -> tuple[str, str] | None:
    """Return ``(address, version)`` from a ``GET /status`` body, or None if it is not a node status."""
    if not isinstance(body, Mapping):
        return None
    address = body.get("address")
    version = body.get("version")
    if not isinstance(address, str) or _NODE_ID.fullmatch(address) is None:
        return None
    if not isinstance(version, str) or not version:
        return None
    return address.lower(), version


def parse_network_ids(body: object, source: str) -> list[str]:
    """Return the lower-case IDs from a ``GET /controller/network`` body: a JSON array of network IDs."""
    if not isinstance(body, list):
        raise ControllerResponseError(
            f"{source} returned {_json_type(body)}, expected an array of network IDs"
        )
    network_ids = []
    for item in body:
        if not isinstance(item, str) or _NETWORK_ID.fullmatch(item) is None:
            raise ControllerResponseError(
                f"{source} listed {item!r}, which is not a network ID of 16 hex digits"
            )
        network_ids.append(item.lower())
    return network_ids


def parse_bulk_networks(body: object, source: str) -> dict[str, ControllerNetwork]:
    """Return the networks of a ``GET /unstable/controller/network`` body, checked against its own count."""
    if not isinstance(body, Mapping) or not isinstance(body.get("data"), list):
        raise ControllerResponseError(f"{source} returned {_json_type(body)}, expected an object with a 'data' array")
    networks: dict[str, ControllerNetwork] = {}
    for item in body["data"]:
        raw_id = item.get("id", item.get("nwid")) if isinstance(item, Mapping) else None
        if not isinstance(raw_id, str) or _NETWORK_ID.fullmatch(raw_id) is None:
            raise ControllerResponseError(f"{source} listed a network whose 'id' is {raw_id!r}")
        network = parse_network(item, raw_id.lower(), source)
        networks[network.id] = network
    meta = body.get("meta")
    count = meta.get("networkCount") if isinstance(meta, Mapping) else None
    if count is not None and count != len(networks):
        raise ControllerResponseError(
            f"{source} returned {len(networks)} networks but its meta.networkCount says {count!r}"
        )
    return networks


def parse_network(body: object, network_id: str, source: str) -> ControllerNetwork:
    """Build a ``ControllerNetwork`` from a network object; a missing ``private`` means true, as it does
    on the controller."""
    if not isinstance(body, Mapping):
        raise _network_error(network_id, source, f"returned {_json_type(body)}, expected a network object")
    returned_id = body.get("id", body.get("nwid"))
    if not isinstance(returned_id, str) or returned_id.lower() != network_id:
        raise _network_error(network_id, source, f"returned a network whose 'id' is {returned_id!r}")
    name = body.get("name", "")
    if name is None:
        name = ""
    if not isinstance(name, str):
        raise _network_error(network_id, source, f"field 'name' is {name!r}, expected a string")
    private = body.get("private", True)
    if not isinstance(private, bool):
        raise _network_error(network_id, source, f"field 'private' is {private!r}, expected true or false")
    return ControllerNetwork(id=network_id, name=name, private=private)


def parse_member(
    body: object, network_id: str, source: str, expected_node_id: str | None = None
) -> ControllerMember:
    """Build a ``ControllerMember`` from a member object, with IDs in lower case and times in UTC.

    ``expected_node_id`` is the ID the request was for; a member with another ID is an error.
    """
    if not isinstance(body, Mapping):
        raise ControllerResponseError(
            f"{source} returned {_json_type(body)}, expected a member object of network {network_id}",
            network_id=network_id,
            node_id=expected_node_id,
        )
    node_id = _read_node_id(body, network_id, source, expected_node_id)
    fields = _MemberFields(body, network_id, node_id, source)

    returned_network = body.get("nwid")
    if returned_network is not None and (
        not isinstance(returned_network, str) or returned_network.lower() != network_id
    ):
        raise fields.error("nwid", returned_network, f"network ID {network_id}")

    return ControllerMember(
        network_id=network_id,
        node_id=node_id,
        authorized=fields.boolean("authorized", required=True),
        active_bridge=fields.boolean("activeBridge", required=False),
        revision=fields.integer("revision"),
        created_at=fields.time("creationTime"),
        last_authorized_at=fields.time("lastAuthorizedTime"),
        last_deauthorized_at=fields.time("lastDeauthorizedTime"),
        name=fields.optional_string("name"),
        ip_assignments=fields.strings("ipAssignments"),
    )


def parse_member_revisions(body: object, network_id: str, source: str) -> dict[str, int]:
    """Return ``{node ID: revision}`` from a ``GET /controller/network/<id>/member`` body.

    zerotier-one 1.10 and 1.12.2+ return an object ``{"<id>": revision}``; 1.12.0 and 1.12.1
    return an array of one-key objects ``[{"<id>": revision}]``. Any other shape is an error.
    """
    if isinstance(body, Mapping):
        pairs = list(body.items())
    elif isinstance(body, list):
        pairs = []
        for item in body:
            if not isinstance(item, Mapping) or len(item) != 1:
                problem = f"listed {item!r}, expected an object with one node ID and its revision"
                raise _network_error(network_id, source, problem)
            pairs.extend(item.items())
    else:
        raise _network_error(
            network_id, source, f"returned {_json_type(body)}, expected an object of node IDs and revisions"
        )

    revisions: dict[str, int] = {}
    for raw_id, revision in pairs:
        if not isinstance(raw_id, str) or _NODE_ID.fullmatch(raw_id) is None:
            problem = f"listed {raw_id!r}, which is not a node ID of 10 hex digits"
            raise _network_error(network_id, source, problem)
        node_id = raw_id.lower()
        if not _is_int(revision):
            problem = f"listed member {node_id} with revision {revision!r}, expected an integer"
            raise _network_error(network_id, source, problem)
        if node_id in revisions:
            raise _network_error(network_id, source, f"listed member {node_id} twice")
        revisions[node_id] = revision
    return revisions


def is_bulk_list(body: object) -> bool:
    """Tell whether a body has the outline of the bulk member list: an object with ``data`` and ``meta``."""
    return isinstance(body, Mapping) and "data" in body and "meta" in body


def parse_bulk_members(body: object, network_id: str, source: str) -> list[ControllerMember]:
    """Return the members of a ``GET /unstable/controller/network/<id>/member`` body.

    The body's ``meta`` must agree with its ``data``: a count that does not match means a list
    that ztctl cannot trust to be complete.
    """
    if not is_bulk_list(body):
        problem = f"returned {_json_type(body)}, expected an object with 'data' and 'meta'"
        raise _network_error(network_id, source, problem)
    data = body["data"]
    meta = body["meta"]
    if not isinstance(data, list):
        problem = f"field 'data' is {_json_type(data)}, expected an array of members"
        raise _network_error(network_id, source, problem)
    if not isinstance(meta, Mapping):
        raise _network_error(network_id, source, f"field 'meta' is {_json_type(meta)}, expected an object")

    members = [parse_member(item, network_id, source) for item in data]
    node_ids = {member.node_id for member in members}
    if len(node_ids) != len(members):
        raise _network_error(network_id, source, "listed a member more than once")

    authorized_count = sum(member.authorized for member in members)
    for key, counted in (("totalCount", len(members)), ("authorizedCount", authorized_count)):
        stated = meta.get(key)
        if not _is_int(stated) or stated != counted:
            raise _network_error(
                network_id, source, f"states meta.{key} = {stated!r} but its data holds {counted}"
            )
    return members


class _MemberFields:
    """Typed reads of one member object's fields, each raising an error that names the field."""

    def __init__(self, body: Mapping[str, object], network_id: str, node_id: str, source: str) -> None:
        self.body = body
        self.network_id = network_id
        self.node_id = node_id
        self.source = source

    def error(self, field: str, value: object, expected: str) -> ControllerResponseError:
        return ControllerResponseError(
            f"member {self.node_id} of network {self.network_id}: field {field!r} is {value!r}, "
            f"expected {expected} ({self.source})",
            network_id=self.network_id,
            node_id=self.node_id,
        )

    def boolean(self, field: str, *, required: bool) -> bool:
        if field not in self.body and not required:
            return False
        value = self.body.get(field)
        if not isinstance(value, bool):
            raise self.error(field, value, "true or false")
        return value

    def integer(self, field: str) -> int:
        value = self.body.get(field)
        if not _is_int(value) or not 0 <= value <= MAX_REVISION:
            raise self.error(field, value, f"an integer from 0 to {MAX_REVISION}")
        return value

    def time(self, field: str) -> datetime | None:
        value = self.body.get(field)
        if value is None:
            return None
        if not _is_int(value) or not 0 <= value <= MAX_TIME_MS:
            raise self.error(field, value, "milliseconds since the Unix epoch, before the year 10000")
        return datetime_from_ms(value)

    def optional_string(self, field: str) -> str | None:
        value = self.body.get(field)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.error(field, value, "a string")
        return value

    def strings(self, field: str) -> tuple[str, ...]:
        value = self.body.get(field)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(field, value, "an array of strings")
        return tuple(value)


def _read_node_id(
    body: Mapping[str, object], network_id: str, source: str, expected_node_id: str | None
) -> str:
    raw_id = body.get("id", body.get("address"))
    if not isinstance(raw_id, str) or _NODE_ID.fullmatch(raw_id) is None:
        raise ControllerResponseError(
            f"a member of network {network_id}: field 'id' is {raw_id!r}, expected 10 hex digits ({source})",
            network_id=network_id,
            node_id=expected_node_id,
        )
    # The controller stores an ID in the case it was typed in a request path, so compare in lower case.
    node_id = raw_id.lower()
    if expected_node_id is not None and node_id != expected_node_id:
        raise ControllerResponseError(
            f"{source} returned member {node_id} instead of {expected_node_id}",
            network_id=network_id,
            node_id=expected_node_id,
        )
    return node_id


def _network_error(network_id: str, source: str, problem: str) -> ControllerResponseError:
    return ControllerResponseError(f"network {network_id}: {source} {problem}", network_id=network_id)


MAX_REVISION = 2**63 - 1
"""The largest revision a portal database column can hold (a signed 64-bit integer)."""
MAX_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last time Python's datetime can hold."""


def _is_int(value: object) -> bool:
    # bool is a subclass of int, but true is not a revision.
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for python_type, name in names.items():
        if isinstance(value, python_type):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__
