"""Network and member records as ``zerotier-one`` 1.14.1 stores and serves them.

The key sets and defaults match the recorded responses of a real 1.14.1
controller. Keys are serialised in sorted order, as the controller's JSON
library does.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .jsonvalues import (
    coerce_capabilities,
    coerce_ip_assignments,
    coerce_tags,
    json_bool,
    json_int,
    json_string,
)

MIN_MTU = 1280
MAX_MTU = 10000
DEFAULT_MTU = 2800

_MEMBER_ID_LENGTH = 10


def new_member_record(network_id: str, node_id: str, now_ms: int) -> dict[str, Any]:
    """Build a member record with ``DB::initMember`` defaults; ``revision`` 0 until first saved."""
    return {
        "activeBridge": False,
        "address": node_id,
        "authenticationExpiryTime": 0,
        "authorized": False,
        "capabilities": [],
        "creationTime": now_ms,
        "id": node_id,
        "ipAssignments": [],
        "lastAuthorizedCredential": None,
        "lastAuthorizedCredentialType": None,
        "lastAuthorizedTime": 0,
        "lastDeauthorizedTime": 0,
        "noAutoAssignIps": False,
        "nwid": network_id,
        "objtype": "member",
        "remoteTraceLevel": 0,
        "remoteTraceTarget": None,
        "revision": 0,
        "ssoExempt": False,
        "tags": [],
        "vMajor": -1,
        "vMinor": -1,
        "vProto": -1,
        "vRev": -1,
    }


def new_network_record(network_id: str, now_ms: int) -> dict[str, Any]:
    """Build a network record with ``DB::initNetwork`` defaults; ``revision`` 0 until first saved."""
    return {
        "authTokens": [None],
        "authorizationEndpoint": "",
        "capabilities": [],
        "clientId": "",
        "creationTime": now_ms,
        "dns": [],
        "enableBroadcast": True,
        "id": network_id,
        "ipAssignmentPools": [],
        "mtu": DEFAULT_MTU,
        "multicastLimit": 32,
        "name": "",
        "nwid": network_id,
        "objtype": "network",
        "private": True,
        "remoteTraceLevel": 0,
        "remoteTraceTarget": None,
        "revision": 0,
        "routes": [],
        "rules": [{"not": False, "or": False, "type": "ACTION_ACCEPT"}],
        "rulesSource": "",
        "ssoEnabled": False,
        "tags": [],
        "v4AssignMode": {"zt": False},
        "v6AssignMode": {"6plane": False, "rfc4193": False, "zt": False},
    }


def records_differ(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Tell whether saving ``new`` changes anything; ``revision`` itself is not compared."""
    if old is None:
        return True
    old_fields = {key: value for key, value in old.items() if key != "revision"}
    new_fields = {key: value for key, value in new.items() if key != "revision"}
    return old_fields != new_fields


def set_authorized(member: dict[str, Any], authorized: bool, now_ms: int, credential_type: str) -> None:
    """Set ``authorized`` and its timestamps, but only when the value actually changes."""
    if authorized == json_bool(member.get("authorized"), False):
        return
    member["authorized"] = authorized
    if authorized:
        member["lastAuthorizedTime"] = now_ms
        member["lastAuthorizedCredentialType"] = credential_type
        member["lastAuthorizedCredential"] = None
    else:
        member["lastDeauthorizedTime"] = now_ms


def apply_member_post(
    member: dict[str, Any], body: dict[str, Any], *, now_ms: int, stores_name: bool
) -> None:
    """Apply the keys that a member POST accepts; all other keys are ignored.

    Raises ``InvalidBody`` when ``ipAssignments`` contains a non-string, like
    the real controller (which returns 500 then).
    """
    if "activeBridge" in body:
        member["activeBridge"] = json_bool(body["activeBridge"], False)
    if "noAutoAssignIps" in body:
        member["noAutoAssignIps"] = json_bool(body["noAutoAssignIps"], False)
    if "authenticationExpiryTime" in body:
        member["authenticationExpiryTime"] = json_int(body["authenticationExpiryTime"], 0)
    if "name" in body and stores_name:
        member["name"] = json_string(body["name"], "")
    if "remoteTraceTarget" in body:
        target = json_string(body["remoteTraceTarget"], "")
        member["remoteTraceTarget"] = target if len(target) == _MEMBER_ID_LENGTH else None
    if "remoteTraceLevel" in body:
        member["remoteTraceLevel"] = json_int(body["remoteTraceLevel"], 0)
    if "authorized" in body:
        set_authorized(member, json_bool(body["authorized"], False), now_ms, "api")
    if isinstance(body.get("ipAssignments"), list):
        member["ipAssignments"] = coerce_ip_assignments(body["ipAssignments"])
    if isinstance(body.get("tags"), list):
        member["tags"] = coerce_tags(body["tags"])
    if isinstance(body.get("capabilities"), list):
        member["capabilities"] = coerce_capabilities(body["capabilities"])


def _v4_assign_mode(value: Any) -> dict[str, bool]:
    # Old clients sent the mode as the string "zt".
    if isinstance(value, str):
        return {"zt": value == "zt"}
    if isinstance(value, dict):
        return {"zt": json_bool(value.get("zt"), False)}
    return {"zt": False}


def _v6_assign_mode(value: Any) -> dict[str, bool]:
    flags = ("6plane", "rfc4193", "zt")
    # Old clients sent a comma-separated string such as "rfc4193,zt".
    if isinstance(value, str):
        named = set(value.split(","))
        return {flag: flag in named for flag in flags}
    # An object replaces the mode with only the flags it names.
    if isinstance(value, dict):
        return {flag: json_bool(value[flag], False) for flag in flags if flag in value}
    return {flag: False for flag in flags}


def apply_network_post(network: dict[str, Any], body: dict[str, Any]) -> None:
    """Apply the keys of a network POST that the emulator models.

    NOTE: ``routes``, ``ipAssignmentPools``, ``rules``, ``capabilities`` and
    ``tags`` are stored as sent when they are arrays, and ``dns`` when it is
    an object. The real controller also validates and rewrites their entries.
    """
    if "name" in body:
        network["name"] = json_string(body["name"], "")
    if "private" in body:
        network["private"] = json_bool(body["private"], True)
    if "enableBroadcast" in body:
        network["enableBroadcast"] = json_bool(body["enableBroadcast"], False)
    if "multicastLimit" in body:
        network["multicastLimit"] = json_int(body["multicastLimit"], 32)
    if "mtu" in body:
        network["mtu"] = max(min(json_int(body["mtu"], DEFAULT_MTU), MAX_MTU), MIN_MTU)
    if "remoteTraceTarget" in body:
        target = json_string(body["remoteTraceTarget"], "")
        network["remoteTraceTarget"] = target if len(target) == _MEMBER_ID_LENGTH else None
    if "remoteTraceLevel" in body:
        network["remoteTraceLevel"] = json_int(body["remoteTraceLevel"], 0)
    if "v4AssignMode" in body:
        network["v4AssignMode"] = _v4_assign_mode(body["v4AssignMode"])
    if "v6AssignMode" in body:
        network["v6AssignMode"] = _v6_assign_mode(body["v6AssignMode"])
    for key in ("routes", "ipAssignmentPools", "rules", "capabilities", "tags"):
        if isinstance(body.get(key), list):
            network[key] = body[key]
    if isinstance(body.get("dns"), dict):
        network["dns"] = body["dns"]


def identity_for(node_id: str) -> str:
    """Build a stand-in public identity ``<address>:0:<128 hex digits>`` for a node ID.

    It has the form of a real identity but is derived from the address, so it
    is not a valid key pair.
    """
    address = node_id.lower()
    return f"{address}:0:{hashlib.sha512(address.encode('ascii')).hexdigest()}"
