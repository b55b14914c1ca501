"""The validated contents of a portal file, and the problem list for an invalid one.

``validate_document`` checks the data that a YAML or JSON parser produced and
returns a ``PortalDocument``, or a list of every problem found. Each problem
names the entry it is about, for example
``networks[0] (3233204505122666) memberships[2] (node 0badc0ffe): node must be
10 hex digits, got '0badc0ffe'``. The file format is described in
``ztctl.portal.portal_file``.
"""

from __future__ import annotations

import itertools
import math
import re
import reprlib
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

NETWORK_ID_DIGITS = 16
NODE_ID_DIGITS = 10
MAX_TEXT_LENGTH = 200
"""Maximum length of an owner or name, set by the String(200) columns of the portal tables."""

_HEX_DIGITS = re.compile(r"[0-9a-fA-F]+")
# The validation context key that lets a JSON number stand for an ID.
_NUMBERS_AS_IDS = "numbers_as_ids"


def _problem(message: str) -> PydanticCustomError:
    """Return a pydantic error whose message ``describe_error`` shows as written."""
    return PydanticCustomError("portal_file", "{message}", {"message": message})


SHORT_REPR_LENGTH = 60
"""Maximum length of a value shown in a problem."""


class _ShortRepr(reprlib.Repr):
    """A ``reprlib.Repr`` that formats only as much of a value as a problem can show.

    A plain ``repr`` of a large or deeply nested value takes time and memory
    in proportion to the whole value before it can be cut. This class stops at
    a few levels and items, and formats only a prefix of a string.
    """

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 4
        self.maxstring = self.maxother = SHORT_REPR_LENGTH

    def repr_str(self, value: str, level: int) -> str:
        # A prefix keeps the start of the text, which ``short_repr`` then cuts to length.
        return repr(value[: self.maxstring + 1])

    def repr_bytes(self, value: bytes, level: int) -> str:
        return repr(value[: self.maxstring + 1])

    def repr_int(self, value: int, level: int) -> str:
        # Since Python 3.11, formatting an int longer than sys.get_int_max_str_digits() (4300 by default) raises ValueError.
        if value.bit_length() > 1000:
            return f"<int of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(value, level)

    def repr_dict(self, value: dict[Any, Any], level: int) -> str:
        # Unlike reprlib, which sorts every key first, this keeps the order of the file.
        if not value:
            return "{}"
        if level <= 0:
            return "{...}"
        items = itertools.islice(value.items(), self.maxdict)
        pieces = [f"{self.repr1(key, level - 1)}: {self.repr1(item, level - 1)}" for key, item in items]
        if len(value) > self.maxdict:
            pieces.append("...")
        return "{" + ", ".join(pieces) + "}"


_SHORT_REPR = _ShortRepr()


def short_repr(value: Any) -> str:
    """Return the repr of ``value`` cut to at most SHORT_REPR_LENGTH characters.

    The work does not grow with the size or depth of ``value``, so a problem
    can quote any value that a parser returns.
    """
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= SHORT_REPR_LENGTH else f"{text[: SHORT_REPR_LENGTH - 3]}..."


def short_text(value: Any) -> str:
    """Return a string cut to at most SHORT_REPR_LENGTH characters, or ``short_repr`` of any other value."""
    if not isinstance(value, str):
        return short_repr(value)
    return value if len(value) <= SHORT_REPR_LENGTH else f"{value[: SHORT_REPR_LENGTH - 3]}..."


def normalize_id(value: Any, digits: int, *, numbers_as_ids: bool) -> str | None:
    """Return ``value`` in lower case if it is an ID of ``digits`` hex digits, else None.

    With ``numbers_as_ids``, an integer is first turned into its decimal
    digits, which is how a JSON file can carry an ID written without quotes.
    """
    if numbers_as_ids and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and len(value) == digits and _HEX_DIGITS.fullmatch(value):
        return value.lower()
    return None


def _validate_id(value: Any, info: ValidationInfo, digits: int) -> str:
    numbers_as_ids = bool(info.context and info.context.get(_NUMBERS_AS_IDS))
    normalized = normalize_id(value, digits, numbers_as_ids=numbers_as_ids)
    if normalized is None:
        shown = str(value) if numbers_as_ids and isinstance(value, int) and not isinstance(value, bool) else value
        raise _problem(f"{info.field_name} must be {digits} hex digits, got {short_repr(shown)}")
    return normalized


def _validate_network_id(value: Any, info: ValidationInfo) -> str:
    return _validate_id(value, info, NETWORK_ID_DIGITS)


def _validate_node_id(value: Any, info: ValidationInfo) -> str:
    return _validate_id(value, info, NODE_ID_DIGITS)


def parse_time(value: Any) -> datetime:
    """Parse an ISO 8601 time that has a zone and return it in UTC; raise ValueError otherwise."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"is not an ISO 8601 time such as 2026-12-04T09:00:00Z, got {short_repr(value)}") from None
    else:
        raise ValueError(f"must be an ISO 8601 time such as 2026-12-04T09:00:00Z, got {short_repr(value)}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{short_repr(value)} has no time zone: add Z for UTC or an offset such as +02:00")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{short_repr(value)} is out of range once converted to UTC") from None


def _validate_time(value: Any, info: ValidationInfo) -> datetime:
    try:
        return parse_time(value)
    except ValueError as error:
        raise _problem(f"{info.field_name} {error}") from None


def _validate_optional_text(value: Any, info: ValidationInfo) -> str | None:
    """Accept a string of up to MAX_TEXT_LENGTH characters; an empty string or null becomes None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _problem(f"{info.field_name} must be a string, got {short_repr(value)}")
    if len(value) > MAX_TEXT_LENGTH:
        raise _problem(f"{info.field_name} must be at most {MAX_TEXT_LENGTH} characters, got {len(value)}")
    if any(unicodedata.category(character) == "Cc" for character in value):
        # Control characters do not survive a dump (YAML turns some into line
        # breaks) and PostgreSQL rejects NUL.
        raise _problem(f"{info.field_name} must not contain control characters, got {short_repr(value)}")
    return value


def _validate_network_name(value: Any, info: ValidationInfo) -> str:
    return _validate_optional_text(value, info) or ""


NetworkId = Annotated[str, PlainValidator(_validate_network_id)]
NodeId = Annotated[str, PlainValidator(_validate_node_id)]
UTCTime = Annotated[datetime, PlainValidator(_validate_time)]
OptionalText = Annotated[str | None, PlainValidator(_validate_optional_text)]
NetworkName = Annotated[str, PlainValidator(_validate_network_name)]


class _Entry(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ActivationEntry(_Entry):
    """One activation of a membership; both times are in UTC."""

    start: UTCTime
    expires: UTCTime

    @model_validator(mode="after")
    def _check_expires_after_start(self) -> ActivationEntry:
        if self.expires <= self.start:
            raise _problem(f"expires {format_time(self.expires)} is not after start {format_time(self.start)}")
        return self


class MembershipEntry(_Entry):
    """A device on a network, with its state and activations."""

    node: NodeId
    owner: OptionalText = None
    name: OptionalText = None
    state: Literal["active", "inactive"]
    activations: list[ActivationEntry] = Field(default_factory=list)


class NetworkEntry(_Entry):
    """A managed network and the complete list of its memberships."""

    id: NetworkId
    name: NetworkName = ""
    memberships: list[MembershipEntry]


class PortalDocument(_Entry):
    """The complete desired state of the portal, as a portal file contains it."""

    networks: list[NetworkEntry]

    def sorted(self) -> PortalDocument:
        """Return a copy in dump order: networks by ID, memberships by node, activations by start."""
        networks = []
        for network in sorted(self.networks, key=lambda entry: entry.id):
            memberships = [
                membership.model_copy(
                    update={"activations": sorted(membership.activations, key=lambda a: (a.start, a.expires))}
                )
                for membership in sorted(network.memberships, key=lambda entry: entry.node)
            ]
            networks.append(network.model_copy(update={"memberships": memberships}))
        return PortalDocument(networks=networks)


_ENTRY_MODELS: dict[str | None, type[_Entry]] = {
    None: PortalDocument,
    "networks": NetworkEntry,
    "memberships": MembershipEntry,
    "activations": ActivationEntry,
}


def format_time(value: datetime) -> str:
    """Format a time as UTC ISO 8601 with a Z, as dumps write it."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def validate_document(raw: Any, *, numbers_as_ids: bool) -> tuple[PortalDocument | None, list[tuple[tuple[int, ...], str]]]:
    """Validate parsed file data; return the document, or None and every problem with its sort key.

    The sort key is the entry's position (network, membership, activation
    indexes), so that problems can be listed in file order.
    """
    problems: list[tuple[tuple[int, ...], str]] = []
    document = None
    try:
        document = PortalDocument.model_validate(raw, context={_NUMBERS_AS_IDS: numbers_as_ids})
    except ValidationError as error:
        problems.extend(describe_error(raw, details) for details in error.errors(include_url=False))
    # Duplicates are checked on the raw data, so that they are reported even
    # when other entries are invalid.
    problems.extend(_find_duplicates(raw, numbers_as_ids=numbers_as_ids))
    if problems:
        return None, sorted(problems, key=lambda problem: problem[0])
    return document, []


def entry_label(list_name: str, index: int, entry: Any) -> str:
    """Return ``networks[0] (3233204505122666)`` and the like, using whatever ID the raw entry has."""
    label = f"{list_name}[{index}]"
    if not isinstance(entry, dict):
        return label
    if list_name == "networks" and isinstance(entry.get("id"), str | int):
        return f"{label} ({short_text(entry['id'])})"
    if list_name == "memberships" and isinstance(entry.get("node"), str | int):
        return f"{label} (node {short_text(entry['node'])})"
    if list_name == "activations" and isinstance(entry.get("start"), str | datetime):
        start = entry["start"]
        return f"{label} (start {format_time(start) if isinstance(start, datetime) else short_text(start)})"
    return label


def describe_error(raw: Any, details: Any) -> tuple[tuple[int, ...], str]:
    """Turn one pydantic error into a problem that names its entry, with the entry's sort key."""
    location = list(details["loc"])
    path: list[str] = []
    indexes: list[int] = []
    entry = raw
    list_name: str | None = None
    while len(location) >= 2 and isinstance(location[0], str) and isinstance(location[1], int):
        list_name, index = location.pop(0), location.pop(0)
        items = entry.get(list_name) if isinstance(entry, dict) else None
        entry = items[index] if isinstance(items, list) and 0 <= index < len(items) else None
        path.append(entry_label(list_name, index, entry))
        indexes.append(index)

    field = location[0] if location else None
    message = _error_message(details, field, _ENTRY_MODELS[list_name])
    where = " ".join(path) if path else "top level"
    return tuple(indexes), f"{where}: {message}"


def _error_message(details: Any, field: Any, model: type[_Entry]) -> str:
    error_type = details["type"]
    value = short_repr(details.get("input"))
    keys = ", ".join(model.model_fields)
    if error_type == "portal_file":
        return str(details["ctx"]["message"])
    if error_type == "missing":
        return f"{field} is required"
    if error_type == "extra_forbidden":
        return f"unknown key {short_repr(field)} (allowed: {keys})"
    if error_type == "literal_error":
        return f"{field} must be {details['ctx']['expected']}, got {value}"
    if error_type == "list_type":
        return f"{field} must be a list, got {value}"
    if error_type in ("model_type", "model_attributes_type", "dict_type"):
        if model is PortalDocument:
            return f"the file must be a mapping with a 'networks' list, got {value}"
        return f"the entry must be a mapping with the keys {keys}, got {value}"
    if field is None:
        return str(details["msg"])
    return f"{short_text(field)}: {details['msg']}"


def _find_duplicates(raw: Any, *, numbers_as_ids: bool) -> Iterator[tuple[tuple[int, ...], str]]:
    """Report networks, memberships within a network and activations within a membership given twice."""
    networks = raw.get("networks") if isinstance(raw, dict) else None
    first_network: dict[str, int] = {}
    for network_index, network in _mappings(networks):
        network_label = entry_label("networks", network_index, network)
        network_id = normalize_id(network.get("id"), NETWORK_ID_DIGITS, numbers_as_ids=numbers_as_ids)
        if network_id is not None:
            if network_id in first_network:
                yield (network_index,), (
                    f"{network_label}: duplicate network {network_id}, first given as networks[{first_network[network_id]}]"
                )
            else:
                first_network[network_id] = network_index

        first_node: dict[str, int] = {}
        for membership_index, membership in _mappings(network.get("memberships")):
            membership_label = f"{network_label} {entry_label('memberships', membership_index, membership)}"
            node_id = normalize_id(membership.get("node"), NODE_ID_DIGITS, numbers_as_ids=numbers_as_ids)
            if node_id is not None:
                if node_id in first_node:
                    yield (network_index, membership_index), (
                        f"{membership_label}: duplicate membership for node {node_id}, "
                        f"first given as memberships[{first_node[node_id]}]"
                    )
                else:
                    first_node[node_id] = membership_index
            yield from _find_duplicate_activations(membership, membership_label, (network_index, membership_index))


def _find_duplicate_activations(
    membership: dict[str, Any], membership_label: str, indexes: tuple[int, int]
) -> Iterator[tuple[tuple[int, ...], str]]:
    first_activation: dict[tuple[datetime, datetime], int] = {}
    for index, activation in _mappings(membership.get("activations")):
        try:
            key = (parse_time(activation.get("start")), parse_time(activation.get("expires")))
        except ValueError:
            continue
        if key in first_activation:
            label = f"{membership_label} {entry_label('activations', index, activation)}"
            yield (*indexes, index), (
                f"{label}: duplicate activation {format_time(key[0])} to {format_time(key[1])}, "
                f"first given as activations[{first_activation[key]}]"
            )
        else:
            first_activation[key] = index


def _mappings(items: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    if isinstance(items, list):
        for index, item in enumerate(items):
            if isinstance(item, dict):
                yield index, item
