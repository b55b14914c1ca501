"""The portal file: the portal's desired state as YAML or JSON, for ``ztctl portal load`` and ``dump``.

The format is a contract. Files written for it must keep loading, and
``dump`` output must keep its shape::

    networks:
      - id: '3233204505122666'      # 16 hex digits; required
        name: engineering           # optional
        memberships:                # required; [] for a network with none
          - node: 'a1b2c3d4e5'      # 10 hex digits; required
            owner: user-17          # optional free text: who the device belongs to
            name: laptop-17         # optional
            state: active           # required: active or inactive
            activations:            # optional
              - start: 2026-12-04T09:00:00Z
                expires: 2026-12-04T17:00:00Z
          - node: 0badc0ffee
            state: inactive

Rules:

- The file is the complete desired state. A managed network that is missing
  from it is no longer managed, and a membership missing from its network's
  list is removed, so that the member loses access. ``ztctl.portal.portal_load``
  spells out what a load changes.
- IDs may be written with or without quotes and in either case. They are
  stored in lower case. In YAML, numbers, floats and timestamps are not
  recognized, so ``0123456789`` stays a string and keeps its leading zero. In
  JSON, an ID given as a number is turned into its decimal digits and then
  checked, so a number that lost a leading zero is rejected.
- Times are ISO 8601 with a zone (``Z`` or an offset such as ``+02:00``) and
  are stored in UTC. ``expires`` must be after ``start``.
- ``owner`` and ``name`` are strings of at most 200 characters. An empty
  string is the same as leaving the key out.
- Unknown keys, a key given twice in one mapping, and a network, membership
  or activation (same start and expires) given twice are errors.
- YAML anchors and aliases (``&name`` and ``*name``, which merge keys such as
  ``<<: *name`` need) are errors, so each entry is written out in full. Lists
  and mappings nested more than ``MAX_NESTING`` (32) levels deep are errors.
- An invalid file changes nothing, and ``PortalFileError`` lists every
  problem with the entry it is about.

``dump`` writes networks by ID, memberships by node and activations by start.
IDs are quoted, times are UTC with a ``Z``, and ``name``, ``owner`` and
``activations`` are left out when empty. Removed networks, memberships and
activations are not written. A dump loads back to the same state.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ztctl.errors import PortalFileError, UsageError
from ztctl.portal.models import Activation, Membership, Network
from ztctl.portal.portal_document import (
    PortalDocument,
    format_time,
    short_repr,
    short_text,
    validate_document,
)
from ztctl.portal.portal_load import (
    ActivationChange,
    LoadPlan,
    LoadSummary,
    MembershipChange,
    NetworkChange,
    apply_load,
    plan_load,
)

__all__ = [
    "ActivationChange",
    "LoadPlan",
    "LoadSummary",
    "MembershipChange",
    "NetworkChange",
    "PortalDocument",
    "apply_load",
    "dump_portal",
    "parse_portal_text",
    "plan_load",
    "render_portal",
]

FORMATS = ("yaml", "json")
MAX_NESTING = 32
"""Maximum number of lists and mappings nested in one another in a portal file.

A valid file needs 7. The limit leaves room to report values of the wrong
shape, and keeps the recursive YAML composer and JSON decoder far from
Python's recursion limit.
"""
_UNRESOLVED_YAML_TAGS = frozenset(
    {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"}
)


class _RejectedInput(Exception):
    """Input that parses but that a portal file does not allow. The message names the line."""


class _PortalLoader(yaml.SafeLoader):
    """A SafeLoader that keeps numbers and times as strings, records duplicate keys and rejects aliases.

    Plain PyYAML would read ``node: 0123456789`` as the integer 123456789, and
    it keeps only the last of two equal keys without an error.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[str] = []
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # An alias shares a node instead of copying it, so a file of a few
        # hundred bytes can stand for billions of values ("billion laughs"),
        # and the time to walk or format the data grows fourfold per level.
        event = self.peek_event()
        mark = event.start_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        if isinstance(event, yaml.AliasEvent):
            raise _RejectedInput(
                f"{where}: alias *{short_text(event.anchor)}: write the entry out in full; "
                "anchors and aliases are not supported"
            )
        if event.anchor is not None:
            raise _RejectedInput(
                f"{where}: anchor &{short_text(event.anchor)}: write the entry out in full; "
                "anchors and aliases are not supported"
            )
        if isinstance(event, yaml.ScalarEvent):
            return super().compose_node(parent, index)
        # The composer calls itself for every level, so deep nesting would
        # otherwise end in a RecursionError.
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise _RejectedInput(f"{where}: lists and mappings are nested more than {MAX_NESTING} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key, which the base class reports
            if first is not None:
                mark = key_node.start_mark
                self.duplicate_keys.append(
                    f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {short_repr(key)} "
                    f"(first given at line {first.line + 1}); YAML would keep only the last value"
                )
            else:
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_PortalLoader.yaml_implicit_resolvers = {
    first_character: [(tag, pattern) for tag, pattern in resolvers if tag not in _UNRESOLVED_YAML_TAGS]
    for first_character, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    # An explicit tag such as !!int or !!timestamp still reaches these types.
    # The value is then kept as written, so validation reports what is wrong with it.
    if not isinstance(node, yaml.ScalarNode):
        mark = node.start_mark
        raise _RejectedInput(f"line {mark.line + 1}, column {mark.column + 1}: {node.tag} on a list or mapping")
    return str(loader.construct_scalar(node))


for _tag in _UNRESOLVED_YAML_TAGS:
    _PortalLoader.add_constructor(_tag, _construct_as_text)


def format_for_source(source: str) -> str:
    """Return "json" for a source name ending in .json, else "yaml"."""
    return "json" if source.lower().endswith(".json") else "yaml"


def parse_portal_text(text: str, *, source: str, fmt: str | None = None) -> PortalDocument:
    """Parse and validate a portal file, or raise PortalFileError listing every problem.

    ``source`` names the file in messages. ``fmt`` is "yaml" or "json"; by
    default it follows the suffix of ``source``.
    """
    fmt = fmt or format_for_source(source)
    if fmt not in FORMATS:
        raise UsageError(f"unknown portal file format {fmt!r}", hint="Use yaml or json.")
    try:
        raw, syntax_problems = _load_yaml(text) if fmt == "yaml" else _load_json(text)
    except _RejectedInput as error:
        raise PortalFileError(f"portal file {source} is invalid (1 problem)", [str(error)],
                              hint="Fix the entry listed and load the file again; nothing was changed.") from None
    if raw is None and syntax_problems:
        raise PortalFileError(f"portal file {source} is not valid {fmt.upper()}", syntax_problems,
                              hint="Fix the syntax and load the file again; nothing was changed.")

    document, problems = validate_document(raw, numbers_as_ids=fmt == "json")
    all_problems = syntax_problems + [text for _position, text in problems]
    if document is None or all_problems:
        raise PortalFileError(
            f"portal file {source} is invalid ({len(all_problems)} {_plural(len(all_problems), 'problem')})",
            all_problems,
            hint="Fix every entry listed and load the file again; nothing was changed.",
        )
    return document


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


def _load_yaml(text: str) -> tuple[Any, list[str]]:
    """Return the data and the duplicate keys found, or (None, [the syntax error])."""
    loader = _PortalLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = f" ({error.context})" if error.context else ""
        return None, [f"{where}{error.problem}{context}"]
    except yaml.YAMLError as error:
        return None, [str(error)]
    finally:
        loader.dispose()
    return data, loader.duplicate_keys


def _load_json(text: str) -> tuple[Any, list[str]]:
    _check_json_nesting(text)
    duplicate_keys: list[str] = []

    def build_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicate_keys.append(
                    f"duplicate key {short_repr(key)} in one object; JSON parsers keep only the last value"
                )
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=build_object)
    except json.JSONDecodeError as error:
        return None, [f"line {error.lineno}, column {error.colno}: {error.msg}"]
    except ValueError:
        # json raises a plain ValueError, with no position, for an integer
        # longer than the limit that int() enforces.
        return None, [f"a number has more than {sys.get_int_max_str_digits()} digits"]
    return data, duplicate_keys


# A JSON string, or one bracket outside strings.
_JSON_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _check_json_nesting(text: str) -> None:
    """Raise _RejectedInput if arrays and objects are nested more than MAX_NESTING levels deep.

    The decoder in ``json`` recurses for every level and raises RecursionError,
    which names no position, so the brackets are counted first. The count
    matches the decoder's for every prefix that the decoder accepts.
    """
    depth = 0
    for match in _JSON_STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_NESTING:
                position = match.start()
                line = text.count("\n", 0, position) + 1
                column = position - text.rfind("\n", 0, position)
                raise _RejectedInput(
                    f"line {line}, column {column}: arrays and objects are nested more than {MAX_NESTING} levels deep"
                )
        elif token in ("]", "}"):
            depth -= 1


def dump_portal(session: Session) -> PortalDocument:
    """Read the managed networks, their memberships and activations; removed rows are left out."""
    networks = session.scalars(select(Network).where(Network.removed_at.is_(None)).order_by(Network.id)).all()
    memberships = session.scalars(
        select(Membership)
        .where(Membership.removed_at.is_(None), Membership.network_id.in_([network.id for network in networks]))
        .order_by(Membership.network_id, Membership.node_id)
        .options(selectinload(Membership.activations))
    ).all()

    by_network: dict[str, list[dict[str, Any]]] = {network.id: [] for network in networks}
    for membership in memberships:
        activations = sorted(
            (activation for activation in membership.activations if activation.removed_at is None),
            key=_activation_order,
        )
        by_network[membership.network_id].append({
            "node": membership.node_id,
            "owner": membership.owner,
            "name": membership.name,
            "state": membership.state,
            "activations": [{"start": row.starts_at, "expires": row.expires_at} for row in activations],
        })
    raw = {"networks": [{"id": network.id, "name": network.name, "memberships": by_network[network.id]}
                        for network in networks]}

    document, problems = validate_document(raw, numbers_as_ids=False)
    if document is None:
        raise PortalFileError("the portal database contains rows that are invalid in a portal file",
                              [text for _position, text in problems],
                              hint="Fix those rows in the portal database, then dump again.")
    return document


def _activation_order(activation: Activation) -> tuple[Any, ...]:
    return (activation.starts_at, activation.expires_at)


class _QuotedString(str):
    """A string that the YAML dump always quotes: IDs, which other YAML tools would read as numbers."""


class _PortalDumper(yaml.SafeDumper):
    """A SafeDumper that indents lists under their key and writes times without quotes."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


# Without the timestamp resolver, the dumper writes times without quotes.
_PortalDumper.yaml_implicit_resolvers = {
    first_character: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first_character, resolvers in yaml.SafeDumper.yaml_implicit_resolvers.items()
}
_PortalDumper.add_representer(
    _QuotedString, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="'")
)


def render_portal(document: PortalDocument, fmt: str) -> str:
    """Write a document as portal file text in "yaml" or "json"."""
    quote_ids = fmt == "yaml"
    data = {"networks": [_network_data(network, quote_ids=quote_ids) for network in document.networks]}
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return yaml.dump(data, Dumper=_PortalDumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                         width=4096)
    raise UsageError(f"unknown portal file format {fmt!r}", hint="Use yaml or json.")


def _network_data(network: Any, *, quote_ids: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"id": _QuotedString(network.id) if quote_ids else network.id}
    if network.name:
        data["name"] = network.name
    data["memberships"] = []
    for membership in network.memberships:
        entry: dict[str, Any] = {"node": _QuotedString(membership.node) if quote_ids else membership.node}
        if membership.owner:
            entry["owner"] = membership.owner
        if membership.name:
            entry["name"] = membership.name
        entry["state"] = membership.state
        if membership.activations:
            entry["activations"] = [
                {"start": format_time(activation.start), "expires": format_time(activation.expires)}
                for activation in membership.activations
            ]
        data["memberships"].append(entry)
    return data
