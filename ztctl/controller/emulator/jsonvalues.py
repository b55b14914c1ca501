"""JSON parsing and value coercion with the rules of ``zerotier-one``'s controller.

The real controller never rejects a value of the wrong type in a POST body: it
converts it (``"yes"`` becomes ``false``) or ignores it. These helpers apply
the same conversions, so that the emulator stores what the real one stores.
Descriptions of parse errors imitate the wording of nlohmann/json, the C++
library the controller uses, but are not byte-for-byte identical.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

UINT64_MASK = (1 << 64) - 1
MAX_ARRAY_SIZE = 16384
"""``ZT_CONTROLLER_MAX_ARRAY_SIZE``: longer arrays in a POST body are cut to this length."""

_INET_ADDRESS_BUFFER = 64
"""``InetAddress::fromString`` copies into a 64-byte buffer and gives up on longer strings."""


class InvalidBody(Exception):
    """A request body that the controller rejects with an error status.

    ``kind`` is ``"json"`` when the body is not valid JSON (or, before 1.12,
    not an object), and ``"parameters"`` when a field contains a value that
    the controller cannot convert.
    """

    def __init__(self, kind: str, description: str) -> None:
        super().__init__(description)
        self.kind = kind
        self.description = description


def json_type_name(value: Any) -> str:
    """Return the nlohmann/json name of a value's type, as used in its error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _reject_constant(name: str) -> Any:
    # Python accepts NaN and Infinity; nlohmann/json, like RFC 8259, does not.
    raise ValueError(f"invalid literal {name}")


def parse_json_body(body: bytes) -> Any:
    """Parse a POST body as JSON; raise ``InvalidBody`` when it is empty or malformed."""
    if not body.strip():
        raise InvalidBody(
            "json",
            "[json.exception.parse_error.101] parse error at line 1, column 1: attempting to "
            "parse an empty input; check that your input string or stream contains the "
            "expected JSON",
        )
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as error:
        raise InvalidBody(
            "json",
            f"[json.exception.parse_error.101] parse error: invalid UTF-8 byte at index {error.start}",
        ) from error
    except json.JSONDecodeError as error:
        raise InvalidBody(
            "json",
            f"[json.exception.parse_error.101] parse error at line {error.lineno}, column "
            f"{error.colno}: syntax error while parsing value - {error.msg}",
        ) from error
    except ValueError as error:
        raise InvalidBody("json", f"[json.exception.parse_error.101] parse error: {error}") from error


def json_bool(value: Any, default: bool) -> bool:
    """Convert like ``OSUtils::jsonBool``: strings starting with t, T or 1 are true."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return (int(value) & UINT64_MASK) > 0
    if isinstance(value, str):
        return value[:1] in ("t", "T", "1")
    return default


def json_int(value: Any, default: int) -> int:
    """Convert like ``OSUtils::jsonInt``: an unsigned 64-bit integer, leading digits of a string."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return int(value) & UINT64_MASK
    if isinstance(value, str):
        digits = ""
        for character in value.lstrip():
            if not character.isdigit():
                break
            digits += character
        return int(digits) & UINT64_MASK if digits else 0
    return default


def json_string(value: Any, default: str) -> str:
    """Convert like ``OSUtils::jsonString``: numbers as unsigned decimals, booleans as 1 or 0."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(int(value) & UINT64_MASK)
    return default


def parse_ip_assignment(text: str) -> str | None:
    """Normalise one ``ipAssignments`` entry like ``InetAddress::fromString`` + ``toIpString``.

    Anything after a ``/`` is read as a port and dropped. A string with a
    colon is read as IPv6 and one with a dot as IPv4; if it does not parse,
    the real controller stores the zero address of that family, and so does
    this function. A string with neither, or of 64 characters or more, is
    dropped (``None``).
    """
    if len(text.encode("utf-8")) >= _INET_ADDRESS_BUFFER:
        return None
    address_text = text.split("/", 1)[0]
    if ":" in address_text:
        try:
            return ipaddress.IPv6Address(address_text).compressed
        except ValueError:
            return "::"
    if "." in address_text:
        try:
            return str(ipaddress.IPv4Address(address_text))
        except ValueError:
            return "0.0.0.0"
    return None


def coerce_ip_assignments(value: list[Any]) -> list[str]:
    """Convert an ``ipAssignments`` array; a non-string entry raises ``InvalidBody``."""
    addresses: list[str] = []
    for entry in value:
        if not isinstance(entry, str):
            raise InvalidBody(
                "parameters",
                f"[json.exception.type_error.302] type must be string, but is {json_type_name(entry)}",
            )
        address = parse_ip_assignment(entry)
        if address is not None:
            addresses.append(address)
        if len(addresses) >= MAX_ARRAY_SIZE:
            break
    return addresses


def coerce_tags(value: list[Any]) -> list[list[int]]:
    """Convert a ``tags`` array of ``[id, value]`` pairs: the last pair for an ID wins, sorted by ID."""
    tags: dict[int, int] = {}
    for entry in value:
        if isinstance(entry, list) and len(entry) == 2:
            tags[json_int(entry[0], 0) & 0xFFFFFFFF] = json_int(entry[1], 0) & 0xFFFFFFFF
    return [[tag_id, tags[tag_id]] for tag_id in sorted(tags)][:MAX_ARRAY_SIZE]


def coerce_capabilities(value: list[Any]) -> list[int]:
    """Convert a ``capabilities`` array of integers, sorted and without duplicates."""
    capabilities = [json_int(entry, 0) for entry in value[:MAX_ARRAY_SIZE]]
    return sorted(set(capabilities))
