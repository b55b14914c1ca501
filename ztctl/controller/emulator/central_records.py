"""Network, member and status records as ZeroTier Central API v1 serves them.

The fields and their types follow the published OpenAPI specification of
Central API v1 (``components.schemas``); every documented property is present.
Values that the specification only gives as examples, such as the status
``version``, are marked as such. A member POST is a partial update whose
values must have the documented types; the emulator returns 400 otherwise.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from typing import Any

CENTRAL_VERSION = "1.6.5"
"""Central's ``version`` in ``GET /status``: the example value of the specification."""
CENTRAL_API_VERSION = "4"

JOIN_CLIENT_VERSION = (1, 14, 2)
JOIN_PROTOCOL_VERSION = 13
DEFAULT_MTU = 2800

EPHEMERAL_MEMBER_FIELDS = frozenset(
    {"lastOnline", "lastSeen", "physicalAddress", "clientVersion", "protocolVersion"}
)
"""Fields that describe a device's last contact: changing them does not change the member's revision."""

_BOOLEAN_CONFIG_FIELDS = ("authorized", "activeBridge", "noAutoAssignIps", "ssoExempt")


class InvalidMemberBody(Exception):
    """A member POST body with a value of the wrong type; the emulator returns 400 with the message."""


def stable_uuid(name: str) -> str:
    """Return a UUID derived from ``name``, so that every run of the emulator serves the same IDs."""
    return str(uuid.UUID(bytes=hashlib.sha256(name.encode("utf-8")).digest()[:16], version=4))


def new_member_record(network_id: str, node_id: str, now_ms: int) -> dict[str, Any]:
    """Build a member that has never contacted the controller; ``config.revision`` is 0 until saved."""
    return {
        "id": f"{network_id}-{node_id}",
        "networkId": network_id,
        "nodeId": node_id,
        "controllerId": network_id[:10],
        "hidden": False,
        "name": "",
        "description": "",
        "config": {
            "activeBridge": False,
            "authorized": False,
            "capabilities": [],
            "creationTime": now_ms,
            "id": node_id,
            "identity": "",
            "ipAssignments": [],
            "lastAuthorizedTime": 0,
            "lastDeauthorizedTime": 0,
            "noAutoAssignIps": False,
            "revision": 0,
            "ssoExempt": False,
            "tags": [],
            "vMajor": -1,
            "vMinor": -1,
            "vRev": -1,
            "vProto": -1,
        },
        "lastOnline": 0,
        "lastSeen": 0,
        "physicalAddress": None,
        "clientVersion": None,
        "protocolVersion": -1,
        "supportsRulesEngine": False,
    }


def new_network_record(
    network_id: str, name: str, private: bool, now_ms: int, owner_id: str
) -> dict[str, Any]:
    """Build a network with the defaults of a network created in Central."""
    return {
        "id": network_id,
        "description": "",
        "rulesSource": "accept;",
        "permissions": {owner_id: {"a": True, "d": True, "m": True, "r": True}},
        "ownerId": owner_id,
        "capabilitiesByName": {},
        "tagsByName": {},
        "config": {
            "id": network_id,
            "creationTime": now_ms,
            "capabilities": [],
            "dns": {"domain": "", "servers": None},
            "enableBroadcast": True,
            "ipAssignmentPools": [],
            "lastModified": now_ms,
            "mtu": DEFAULT_MTU,
            "multicastLimit": 32,
            "name": name,
            "private": private,
            "routes": [],
            "rules": [{"not": False, "or": False, "type": "ACTION_ACCEPT"}],
            "ssoConfig": {
                "enabled": False,
                "mode": "default",
                "clientId": "",
                "issuer": "",
                "provider": "",
                "authorizationEndpoint": "",
                "allowList": None,
            },
            "tags": [],
            "v4AssignMode": {"zt": False},
            "v6AssignMode": {"6plane": False, "rfc4193": False, "zt": False},
        },
    }


def revision_fields(member: dict[str, Any]) -> dict[str, Any]:
    """Return the fields whose change moves ``config.revision``: all but the revision and contact data."""
    fields = {key: value for key, value in member.items() if key not in EPHEMERAL_MEMBER_FIELDS}
    fields["config"] = {key: value for key, value in member["config"].items() if key != "revision"}
    return fields


def set_authorized(member: dict[str, Any], authorized: bool, now_ms: int) -> None:
    """Set ``config.authorized`` and its timestamp, but only when the value changes."""
    config = member["config"]
    if config["authorized"] is authorized:
        return
    config["authorized"] = authorized
    config["lastAuthorizedTime" if authorized else "lastDeauthorizedTime"] = now_ms


def apply_member_post(member: dict[str, Any], body: object, now_ms: int) -> None:
    """Apply the writable fields of a member POST body; read-only and unknown fields are ignored.

    Raises ``InvalidMemberBody`` before changing anything when a value has the wrong type. A
    field set to null is left as it is.
    """
    if not isinstance(body, dict):
        raise InvalidMemberBody("the request body must be a JSON object")
    config = body.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise InvalidMemberBody("config must be an object")
    updates = _checked_top_level(body)
    config_updates = _checked_config(config)

    member.update(updates)
    authorized = config_updates.pop("authorized", None)
    member["config"].update(config_updates)
    if authorized is not None:
        set_authorized(member, authorized, now_ms)


def _checked_top_level(body: dict[str, Any]) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for key, expected in (("name", str), ("description", str), ("hidden", bool)):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, expected):
            raise InvalidMemberBody(f"{key} must be a {'string' if expected is str else 'boolean'}")
        updates[key] = value
    return updates


def _checked_config(config: dict[str, Any]) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for key in _BOOLEAN_CONFIG_FIELDS:
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, bool):
            raise InvalidMemberBody(f"config.{key} must be true or false")
        updates[key] = value
    if config.get("ipAssignments") is not None:
        updates["ipAssignments"] = _checked_ip_assignments(config["ipAssignments"])
    if config.get("tags") is not None:
        updates["tags"] = _checked_tags(config["tags"])
    if config.get("capabilities") is not None:
        capabilities = config["capabilities"]
        if not isinstance(capabilities, list) or not all(_is_int(item) for item in capabilities):
            raise InvalidMemberBody("config.capabilities must be an array of integers")
        updates["capabilities"] = list(capabilities)
    return updates


def _checked_ip_assignments(value: object) -> list[str]:
    if not isinstance(value, list):
        raise InvalidMemberBody("config.ipAssignments must be an array of IP addresses")
    addresses = []
    for item in value:
        try:
            addresses.append(str(ipaddress.ip_address(item)))
        except ValueError:
            raise InvalidMemberBody(f"config.ipAssignments: {item!r} is not an IP address") from None
    return addresses


def _checked_tags(value: object) -> list[list[int | bool]]:
    if not isinstance(value, list):
        raise InvalidMemberBody("config.tags must be an array of [tag ID, value] pairs")
    tags = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and _is_int(pair[0])):
            raise InvalidMemberBody(f"config.tags: {pair!r} is not a [tag ID, value] pair")
        if not isinstance(pair[1], int):
            raise InvalidMemberBody(f"config.tags: the value in {pair!r} must be an integer or a boolean")
        tags.append([pair[0], pair[1]])
    return tags


def record_join(member: dict[str, Any], now_ms: int, physical_address: str) -> None:
    """Record a device's contact with the controller: identity, version and last-seen data."""
    node_id = member["nodeId"]
    major, minor, revision = JOIN_CLIENT_VERSION
    config = member["config"]
    if not config["identity"]:
        config["identity"] = f"{node_id}:0:{hashlib.sha512(node_id.encode('ascii')).hexdigest()}"
    config.update(vMajor=major, vMinor=minor, vRev=revision, vProto=JOIN_PROTOCOL_VERSION)
    member.update(
        lastOnline=now_ms,
        lastSeen=now_ms,
        physicalAddress=physical_address,
        clientVersion=f"{major}.{minor}.{revision}",
        protocolVersion=JOIN_PROTOCOL_VERSION,
        supportsRulesEngine=True,
    )


def status_record(*, now_ms: int, uptime_ms: int, version: str, can_write: bool) -> dict[str, Any]:
    """Build the ``GET /status`` body for the emulator's single user."""
    email = "emulator@example.com"
    return {
        "id": "central_status",
        "type": "CentralStatus",
        "clock": now_ms,
        "version": version,
        "apiVersion": CENTRAL_API_VERSION,
        "uptime": uptime_ms,
        "user": {
            "id": stable_uuid("user"),
            "orgId": stable_uuid("organization"),
            "globalPermissions": permissions(can_write),
            "displayName": "ztctl emulator",
            "email": email,
            "auth": {"local": email, "google": None, "oidc": None},
            "smsNumber": "",
            "tokens": ["ztctl-emulator"],
        },
        "readOnlyMode": False,
        "loginMethods": {
            "local": True,
            "google": False,
            "twitter": False,
            "facebook": False,
            "github": False,
            "saml": False,
            "oidc": False,
        },
    }


def permissions(can_write: bool) -> dict[str, bool]:
    """Return a permissions object: authorize, delete, modify and read."""
    return {"a": can_write, "d": can_write, "m": can_write, "r": True}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
