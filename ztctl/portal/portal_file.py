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
- An invalid file changes nothing, and ``PortalFileError`` lists every
  problem with the entry it is about.

``dump`` writes networks by ID, memberships by node and activations by start.
IDs are quoted, times are UTC with a ``Z``, and ``name``, ``owner`` and
``activations`` are left out when empty. Removed networks, memberships and
activations are not written. A dump loads back to the same state.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ztctl.errors import PortalFileError, UsageError
from ztctl.portal.models import Activation, Membership, Network
from ztctl.portal.portal_document import PortalDocument, format_time, validate_document
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
_UNRESOLVED_YAML_TAGS = frozenset(
    {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"}
)


class _PortalLoader(yaml.SafeLoader):
    """A SafeLoader that keeps numbers and times as strings and records duplicate keys.

    Plain PyYAML would read ``node: 0123456789`` as the integer 123456789, and
    it keeps only the last of two equal keys without an error.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[str] = []

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
                    f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {key!r} "
                    f"(first given at line {first.line + 1}); YAML would keep only the last value"
                )
            else:
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_PortalLoader.yaml_implicit_resolvers = {
    first_character: [(tag, pattern) for tag, pattern in resolvers if tag not in _UNRESOLVED_YAML_TAGS]
    for first_character, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def format_for_source(source: str) -> str:
    """Return "json" for a source name ending in .json, else "yaml"."""
    return "json" if source.lower().endswith(".json") else "yaml"


def parse_portal_text(text: str, *, source: str, fmt: str | None = None) -> PortalDocument:
    """Parse and validate a portal file, or raise PortalFileError listing every problem.

    ``source`` names the file in messages. ``fmt`` is "yaml" or "json"; by
    default it follows the suffix of ``source``.
    """
    fmt = fmt or format_for_source(source)
    if fmt == "yaml":
        raw, syntax_problems = _load_yaml(text)
    elif fmt == "json":
        raw, syntax_problems = _load_json(text)
    else:
        raise UsageError(f"unknown portal file format {fmt!r}", hint="Use yaml or json.")
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
    duplicate_keys: list[str] = []

    def build_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicate_keys.append(f"duplicate key {key!r} in one object; JSON parsers keep only the last value")
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=build_object)
    except json.JSONDecodeError as error:
        return None, [f"line {error.lineno}, column {error.colno}: {error.msg}"]
    return data, duplicate_keys


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
