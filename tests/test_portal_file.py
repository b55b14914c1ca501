"""Tests of the portal file: parsing, validation, load semantics and dump, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy
from db_fixtures import *  # noqa: F403
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from ztctl.errors import ExitCode, PortalFileError, ReadOnlyViolation, UsageError
from ztctl.portal.db import WriteAccess, create_portal_engine, session_factory
from ztctl.portal.models import Activation, Membership, Network
from ztctl.portal.portal_document import validate_document
from ztctl.portal.portal_file import (
    LoadPlan,
    PortalDocument,
    apply_load,
    dump_portal,
    parse_portal_text,
    plan_load,
    render_portal,
)
from ztctl.portal.write_guard import find_writes

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)

EXAMPLE = """\
networks:
  - id: 3233204505122666        # 16 hex digits
    name: engineering
    memberships:
      - node: a1b2c3d4e5        # 10 hex digits
        owner: user-17
        name: laptop-17
        state: active
        activations:
          - start: 2026-12-04T09:00:00Z
            expires: 2026-12-04T17:00:00Z
      - node: 0badc0ffee
        state: inactive
"""

EXAMPLE_DUMP = """\
networks:
  - id: '3233204505122666'
    name: engineering
    memberships:
      - node: '0badc0ffee'
        state: inactive
      - node: 'a1b2c3d4e5'
        owner: user-17
        name: laptop-17
        state: active
        activations:
          - start: 2026-12-04T09:00:00Z
            expires: 2026-12-04T17:00:00Z
"""

TWO_NETWORKS = """\
networks:
  - id: 3233204505122666
    name: engineering
    memberships:
      - node: a1b2c3d4e5
        owner: user-17
        state: active
        activations:
          - {start: 2026-12-04T09:00:00Z, expires: 2026-12-04T17:00:00Z}
          - {start: 2026-12-05T09:00:00Z, expires: 2026-12-05T17:00:00Z}
      - node: 0badc0ffee
        state: active
        activations:
          - {start: 2026-12-04T10:00:00Z, expires: 2026-12-04T18:00:00Z}
  - id: 8056c2e21c000001
    name: guests
    memberships:
      - node: 1122334455
        state: active
"""


def parse(text: str, source: str = "portal.yaml") -> PortalDocument:
    return parse_portal_text(text, source=source)


def problems_of(text: str, source: str = "portal.yaml") -> list[str]:
    with pytest.raises(PortalFileError) as raised:
        parse_portal_text(text, source=source)
    return raised.value.problems


def load(session: Session, text: str, *, now: datetime = NOW) -> LoadPlan:
    """Parse, plan, apply and commit a portal file; return the plan."""
    plan = plan_load(session, parse(text), now=now)
    apply_load(session, plan, now=now)
    session.commit()
    return plan


def membership(session: Session, node_id: str, network_id: str = "3233204505122666") -> Membership:
    return session.scalars(
        select(Membership).where(Membership.network_id == network_id, Membership.node_id == node_id)
    ).one()


def activations_of(session: Session, node_id: str) -> list[Activation]:
    return session.scalars(
        select(Activation).where(Activation.membership_id == membership(session, node_id).id).order_by(Activation.id)
    ).all()


def row_counts(session: Session) -> tuple[int, int, int]:
    return (
        session.scalar(select(func.count()).select_from(Network)),
        session.scalar(select(func.count()).select_from(Membership)),
        session.scalar(select(func.count()).select_from(Activation)),
    )


@pytest.fixture
def written_statements(portal_engine: sqlalchemy.Engine) -> Iterator[list[str]]:
    """Record every statement that writes, sent through ``portal_engine``."""
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if find_writes(statement):
            statements.append(statement)

    event.listen(portal_engine, "before_cursor_execute", record)
    yield statements
    event.remove(portal_engine, "before_cursor_execute", record)


# Parsing


def test_parse_example() -> None:
    document = parse(EXAMPLE)
    network = document.networks[0]
    laptop = network.memberships[0]
    assert network.id == "3233204505122666"
    assert network.name == "engineering"
    assert laptop.node == "a1b2c3d4e5"
    assert laptop.owner == "user-17"
    assert laptop.state == "active"
    assert laptop.activations[0].start == datetime(2026, 12, 4, 9, tzinfo=UTC)
    assert network.memberships[1].owner is None
    assert network.memberships[1].activations == []


def test_yaml_ids_stay_exact_strings() -> None:
    document = parse(
        "networks:\n"
        "  - id: 0000000000000012\n"
        "    memberships:\n"
        "      - {node: 0123456789, state: active}\n"
        "      - {node: 1234567890, state: active}\n"
        "      - {node: A1B2C3D4E5, state: active}\n"
    )
    nodes = [entry.node for entry in document.networks[0].memberships]
    assert document.networks[0].id == "0000000000000012"
    assert nodes == ["0123456789", "1234567890", "a1b2c3d4e5"]


def test_yaml_times_parsed_as_text() -> None:
    """Plain PyYAML would turn a time without a zone into a naive datetime and accept it."""
    problems = problems_of(
        "networks:\n"
        "  - id: 3233204505122666\n"
        "    memberships:\n"
        "      - node: a1b2c3d4e5\n"
        "        state: active\n"
        "        activations:\n"
        "          - {start: 2026-12-04 09:00:00, expires: 2026-12-04T17:00:00Z}\n"
    )
    assert problems == [
        "networks[0] (3233204505122666) memberships[0] (node a1b2c3d4e5) activations[0] (start 2026-12-04 09:00:00): "
        "start '2026-12-04 09:00:00' has no time zone: add Z for UTC or an offset such as +02:00"
    ]


def test_yaml_time_with_offset_converted_to_utc() -> None:
    document = parse(EXAMPLE.replace("2026-12-04T09:00:00Z", "2026-12-04T11:00:00+02:00"))
    activation = document.networks[0].memberships[0].activations[0]
    assert activation.start == datetime(2026, 12, 4, 9, tzinfo=UTC)
    assert activation.start.utcoffset() == timedelta(0)


def test_yaml_booleans_and_nulls_resolve() -> None:
    problems = problems_of(
        "networks:\n"
        "  - id: 3233204505122666\n"
        "    memberships:\n"
        "      - {node: a1b2c3d4e5, state: active, name: null, owner: true}\n"
    )
    assert problems == [
        "networks[0] (3233204505122666) memberships[0] (node a1b2c3d4e5): owner must be a string, got True"
    ]


def test_empty_owner_same_as_missing() -> None:
    document = parse(EXAMPLE.replace("owner: user-17", 'owner: ""'))
    assert document.networks[0].memberships[0].owner is None


def test_json_input() -> None:
    text = json.dumps({"networks": [{"id": "3233204505122666", "name": "engineering", "memberships": [
        {"node": "a1b2c3d4e5", "owner": "user-17", "name": "laptop-17", "state": "active",
         "activations": [{"start": "2026-12-04T09:00:00Z", "expires": "2026-12-04T17:00:00Z"}]},
        {"node": "0badc0ffee", "state": "inactive"}]}]})
    assert parse(text, source="portal.json") == parse(EXAMPLE)


def test_json_numeric_ids_converted() -> None:
    text = '{"networks": [{"id": 3233204505122666, "memberships": [{"node": 1234567890, "state": "active"}]}]}'
    document = parse(text, source="portal.json")
    assert document.networks[0].id == "3233204505122666"
    assert document.networks[0].memberships[0].node == "1234567890"


def test_json_numeric_id_lost_leading_zero() -> None:
    text = '{"networks": [{"id": 3233204505122666, "memberships": [{"node": 123456789, "state": "active"}]}]}'
    problems = problems_of(text, source="portal.json")
    assert problems == [
        "networks[0] (3233204505122666) memberships[0] (node 123456789): node must be 10 hex digits, got '123456789'"
    ]


def test_json_duplicate_keys() -> None:
    text = '{"networks": [], "networks": []}'
    problems = problems_of(text, source="portal.json")
    assert problems == ["duplicate key 'networks' in one object; JSON parsers keep only the last value"]


def test_format_chosen_by_argument() -> None:
    document = parse_portal_text('{"networks": []}', source="-", fmt="json")
    assert document.networks == []


def test_unknown_format_rejected() -> None:
    with pytest.raises(UsageError, match="unknown portal file format 'toml'"):
        parse_portal_text("", source="portal.toml", fmt="toml")


# Validation


def test_problem_names_entry_and_source() -> None:
    text = EXAMPLE.replace("0badc0ffee", "0badc0ffe")
    with pytest.raises(PortalFileError) as raised:
        parse_portal_text(text, source="/etc/ztctl/portal.yaml")
    assert "/etc/ztctl/portal.yaml" in raised.value.message
    assert raised.value.problems == [
        "networks[0] (3233204505122666) memberships[1] (node 0badc0ffe): node must be 10 hex digits, got '0badc0ffe'"
    ]
    assert "nothing was changed" in (raised.value.hint or "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "top level: the file must be a mapping with a 'networks' list, got None"),
        ("- 1\n", "top level: the file must be a mapping with a 'networks' list, got ['1']"),
        ("{}\n", "top level: networks is required"),
        ("networks: 5\n", "top level: networks must be a list, got '5'"),
        ("networks: []\nversion: 2\n", "top level: unknown key 'version' (allowed: networks)"),
    ],
)
def test_document_shape_problems(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


def test_syntax_error_reported_with_line() -> None:
    with pytest.raises(PortalFileError) as raised:
        parse("networks:\n  - id: [\n")
    assert "not valid YAML" in raised.value.message
    assert raised.value.problems[0].startswith("line 3, column 1:")


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ("    name: engineering\n", "    name: engineering\n    nmae: x\n",
         "networks[0] (3233204505122666): unknown key 'nmae' (allowed: id, name, memberships)"),
        ("        state: inactive\n", "        state: inactive\n        colour: red\n",
         "networks[0] (3233204505122666) memberships[1] (node 0badc0ffee): "
         "unknown key 'colour' (allowed: node, owner, name, state, activations)"),
        ("            expires: 2026-12-04T17:00:00Z\n", "            expires: 2026-12-04T17:00:00Z\n            ttl: 8\n",
         "networks[0] (3233204505122666) memberships[0] (node a1b2c3d4e5) activations[0] "
         "(start 2026-12-04T09:00:00Z): unknown key 'ttl' (allowed: start, expires)"),
        ("id: 3233204505122666", "id: 323320450512266",
         "networks[0] (323320450512266): id must be 16 hex digits, got '323320450512266'"),
        ("id: 3233204505122666", "id: 3233204505122g66",
         "networks[0] (3233204505122g66): id must be 16 hex digits, got '3233204505122g66'"),
        ("node: 0badc0ffee", "node: 0badc0ffee1",
         "networks[0] (3233204505122666) memberships[1] (node 0badc0ffee1): "
         "node must be 10 hex digits, got '0badc0ffee1'"),
        ("state: inactive", "state: enabled",
         "networks[0] (3233204505122666) memberships[1] (node 0badc0ffee): "
         "state must be 'active' or 'inactive', got 'enabled'"),
        ("        state: inactive\n", "",
         "networks[0] (3233204505122666) memberships[1] (node 0badc0ffee): state is required"),
        ("start: 2026-12-04T09:00:00Z", "start: next tuesday",
         "networks[0] (3233204505122666) memberships[0] (node a1b2c3d4e5) activations[0] (start next tuesday): "
         "start is not an ISO 8601 time such as 2026-12-04T09:00:00Z, got 'next tuesday'"),
        ("expires: 2026-12-04T17:00:00Z", "expires: 2026-12-04T17:00:00",
         "networks[0] (3233204505122666) memberships[0] (node a1b2c3d4e5) activations[0] "
         "(start 2026-12-04T09:00:00Z): "
         "expires '2026-12-04T17:00:00' has no time zone: add Z for UTC or an offset such as +02:00"),
        ("expires: 2026-12-04T17:00:00Z", "expires: 2026-12-04T09:00:00Z",
         "networks[0] (3233204505122666) memberships[0] (node a1b2c3d4e5) activations[0] "
         "(start 2026-12-04T09:00:00Z): expires 2026-12-04T09:00:00Z is not after start 2026-12-04T09:00:00Z"),
        ("expires: 2026-12-04T17:00:00Z", "expires: 2026-12-04T10:00:00+02:00",
         "networks[0] (3233204505122666) memberships[0] (node a1b2c3d4e5) activations[0] "
         "(start 2026-12-04T09:00:00Z): expires 2026-12-04T08:00:00Z is not after start 2026-12-04T09:00:00Z"),
        ("name: laptop-17", "name: " + "x" * 201,
         "networks[0] (3233204505122666) memberships[0] (node a1b2c3d4e5): "
         "name must be at most 200 characters, got 201"),
        ("    name: engineering\n", "    name: engineering\n    name: eng\n",
         "line 4, column 5: duplicate key 'name' (first given at line 3); YAML would keep only the last value"),
        ("    memberships:\n", "    memberships: []\n    memberships:\n",
         "line 5, column 5: duplicate key 'memberships' (first given at line 4); "
         "YAML would keep only the last value"),
    ],
)
def test_entry_problem(replace: str, by: str, expected: str) -> None:
    assert replace in EXAMPLE
    problems = problems_of(EXAMPLE.replace(replace, by, 1))
    assert expected in problems


def test_memberships_required() -> None:
    problems = problems_of("networks:\n  - id: 3233204505122666\n")
    assert problems == ["networks[0] (3233204505122666): memberships is required"]


def test_entry_not_a_mapping() -> None:
    problems = problems_of("networks:\n  - 3233204505122666\n")
    assert problems == [
        "networks[0]: the entry must be a mapping with the keys id, name, memberships, got '3233204505122666'"
    ]


def test_duplicate_network_after_lower_casing() -> None:
    text = TWO_NETWORKS + "  - id: 8056C2E21C000001\n    memberships: []\n"
    problems = problems_of(text)
    assert problems == [
        "networks[2] (8056C2E21C000001): duplicate network 8056c2e21c000001, first given as networks[1]"
    ]


def test_duplicate_membership_after_lower_casing() -> None:
    text = EXAMPLE + "      - node: 0BADC0FFEE\n        state: active\n"
    problems = problems_of(text)
    assert problems == [
        "networks[0] (3233204505122666) memberships[2] (node 0BADC0FFEE): "
        "duplicate membership for node 0badc0ffee, first given as memberships[1]"
    ]


def test_same_node_on_two_networks_allowed() -> None:
    document = parse(TWO_NETWORKS.replace("1122334455", "a1b2c3d4e5"))
    assert document.networks[1].memberships[0].node == "a1b2c3d4e5"


def test_duplicate_activation_in_other_zone() -> None:
    text = EXAMPLE + (
        "      - node: 1122334455\n"
        "        state: active\n"
        "        activations:\n"
        "          - {start: 2026-12-04T09:00:00Z, expires: 2026-12-04T17:00:00Z}\n"
        "          - {start: 2026-12-04T11:00:00+02:00, expires: 2026-12-04T19:00:00+02:00}\n"
    )
    problems = problems_of(text)
    assert problems == [
        "networks[0] (3233204505122666) memberships[2] (node 1122334455) activations[1] "
        "(start 2026-12-04T11:00:00+02:00): duplicate activation 2026-12-04T09:00:00Z to 2026-12-04T17:00:00Z, "
        "first given as activations[0]"
    ]


def test_every_problem_collected() -> None:
    text = (
        "networks:\n"
        "  - id: 3233204505122666\n"
        "    memberships:\n"
        "      - {node: 0badc0ffe, state: active}\n"
        "      - {node: a1b2c3d4e5, state: on}\n"
        "  - id: 3233204505122666\n"
        "    memberships: []\n"
        "  - id: xyz\n"
        "    memberships: []\n"
    )
    problems = problems_of(text)
    assert len(problems) == 4
    assert problems[0].startswith("networks[0] (3233204505122666) memberships[0] (node 0badc0ffe): node")
    assert problems[1].startswith("networks[0] (3233204505122666) memberships[1] (node a1b2c3d4e5): state")
    assert problems[2].startswith("networks[1] (3233204505122666): duplicate network")
    assert problems[3].startswith("networks[2] (xyz): id must be 16 hex digits")


# Anchors, aliases, nesting and large values

ALIAS_UNSUPPORTED = "write the entry out in full; anchors and aliases are not supported"


def alias_bomb(levels: int) -> str:
    """Return a YAML "billion laughs" document: each anchor is a list of four aliases of the one before."""
    lines = ["a0: &a0 [x, x, x, x]"]
    lines += [f"a{level}: &a{level} [*a{level - 1}, *a{level - 1}, *a{level - 1}, *a{level - 1}]"
              for level in range(1, levels)]
    lines.append(f"networks: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def shared_list_bomb(levels: int) -> list[object]:
    """Return a list that repeats one object 4 ** levels times, as YAML aliases would."""
    value: list[object] = ["x"] * 4
    for _level in range(levels):
        value = [value] * 4
    return value


def test_yaml_alias_bomb_rejected() -> None:
    # 4 ** 24 values: formatting them in a message would never finish.
    with pytest.raises(PortalFileError) as raised:
        parse(alias_bomb(24), source="bomb.yaml")
    assert raised.value.exit_code == ExitCode.USAGE
    assert raised.value.message == "portal file bomb.yaml is invalid (1 problem)"
    assert raised.value.problems == [f"line 1, column 5: anchor &a0: {ALIAS_UNSUPPORTED}"]
    assert "nothing was changed" in (raised.value.hint or "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("networks: *nets\n", f"line 1, column 11: alias *nets: {ALIAS_UNSUPPORTED}"),
        (EXAMPLE.replace("node: 0badc0ffee", "node: &spare 0badc0ffee"),
         f"line 12, column 15: anchor &spare: {ALIAS_UNSUPPORTED}"),
        ("base: &base {state: active}\nnetworks: [{id: 3233204505122666, memberships: [{<<: *base}]}]\n",
         f"line 1, column 7: anchor &base: {ALIAS_UNSUPPORTED}"),
        ("networks: []\nextra: *" + "a" * 10_000 + "\n",
         f"line 2, column 8: alias *{'a' * 57}...: {ALIAS_UNSUPPORTED}"),
    ],
)
def test_yaml_anchor_or_alias_rejected(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


@pytest.mark.parametrize(
    ("text", "source", "expected"),
    [
        ("networks: " + "[" * 10_000 + "]" * 10_000 + "\n", "portal.yaml",
         "line 1, column 42: lists and mappings are nested more than 32 levels deep"),
        ("networks:\n  - owner:\n" + "".join(f"{'  ' * level}    k:\n" for level in range(10_000)), "portal.yaml",
         "line 33, column 65: lists and mappings are nested more than 32 levels deep"),
        ('{"networks": ' + "[" * 10_000 + "]" * 10_000 + "}", "portal.json",
         "line 1, column 45: arrays and objects are nested more than 32 levels deep"),
        ('{"networks":\n "[[[[",\n "x": ' + '{"k": ' * 10_000 + "1" + "}" * 10_000 + "}", "portal.json",
         "line 3, column 193: arrays and objects are nested more than 32 levels deep"),
    ],
)
def test_deep_nesting_rejected(text: str, source: str, expected: str) -> None:
    with pytest.raises(PortalFileError) as raised:
        parse(text, source=source)
    assert raised.value.exit_code == ExitCode.USAGE
    assert raised.value.problems == [expected]


@pytest.mark.parametrize(
    ("text", "source"),
    [
        ("networks: " + "[" * 31 + "]" * 31 + "\n", "portal.yaml"),
        ('{"networks": ' + "[" * 31 + "]" * 31 + "}", "portal.json"),
    ],
)
def test_nesting_at_limit_validated(text: str, source: str) -> None:
    assert problems_of(text, source=source) == [
        "networks[0]: the entry must be a mapping with the keys id, name, memberships, got [[[[...]]]]"
    ]


def test_shared_values_shortened_in_problems() -> None:
    # Data shaped like an alias bomb, given to the validator directly.
    bomb = shared_list_bomb(24)
    raw = {
        "networks": [
            {"id": bomb, "memberships": [{"node": "a1b2c3d4e5", "state": "active", "owner": bomb}]},
            bomb,
        ],
        bomb[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]: bomb,
    }
    document, problems = validate_document(raw, numbers_as_ids=False)
    bomb_repr = "[[[[...], [...], [...], [...]], [[...], [...], [...], [....."
    assert document is None
    assert [text for _position, text in problems] == [
        "top level: unknown key 'x' (allowed: networks)",
        f"networks[0]: id must be 16 hex digits, got {bomb_repr}",
        f"networks[0] memberships[0] (node a1b2c3d4e5): owner must be a string, got {bomb_repr}",
        f"networks[1]: the entry must be a mapping with the keys id, name, memberships, got {bomb_repr}",
    ]


def test_large_values_shortened_in_problems() -> None:
    text = (
        "networks:\n"
        f"  - id: {'f' * 100_000}\n"
        "    memberships:\n"
        f"      - node: !!int 0x{'f' * 100_000}\n"
        f"        ? {'k' * 100_000}\n"
        "        : 1\n"
        "        state: active\n"
        f"        owner: [{', '.join(['x'] * 100_000)}]\n"
    )
    problems = problems_of(text)
    network = f"networks[0] ({'f' * 57}...)"
    # The explicit !!int tag is kept as the text written, like every other number.
    membership = f"{network} memberships[0] (node 0x{'f' * 55}...)"
    assert problems == [
        f"{network}: id must be 16 hex digits, got '{'f' * 56}...",
        f"{membership}: node must be 10 hex digits, got '0x{'f' * 54}...",
        f"{membership}: owner must be a string, got ['x', 'x', 'x', 'x', ...]",
        f"{membership}: unknown key '{'k' * 56}... (allowed: node, owner, name, state, activations)",
    ]


def test_json_number_too_long() -> None:
    with pytest.raises(PortalFileError) as raised:
        parse('{"networks": [{"id": ' + "1" * 5_000 + ', "memberships": []}]}', source="portal.json")
    assert "not valid JSON" in raised.value.message
    assert raised.value.problems == ["a number has more than 4300 digits"]


# Rendering


def test_render_yaml_layout() -> None:
    rendered = render_portal(parse(EXAMPLE).sorted(), "yaml")
    assert rendered == EXAMPLE_DUMP


def test_render_yaml_parses_back() -> None:
    document = parse(TWO_NETWORKS).sorted()
    assert parse(render_portal(document, "yaml")) == document


def test_render_json_parses_back() -> None:
    document = parse(TWO_NETWORKS).sorted()
    rendered = render_portal(document, "json")
    assert json.loads(rendered)["networks"][0]["id"] == "3233204505122666"
    assert parse(rendered, source="portal.json") == document


def test_render_quotes_names_that_look_like_numbers() -> None:
    rendered = render_portal(parse(EXAMPLE.replace("name: laptop-17", "name: '0017'")), "yaml")
    assert "name: '0017'" in rendered


def test_render_unknown_format_rejected() -> None:
    with pytest.raises(UsageError):
        render_portal(parse(EXAMPLE), "xml")


# Loading and dumping


def test_first_load_plan(portal_session: Session) -> None:
    plan = load(portal_session, EXAMPLE)
    assert plan.summary.networks_added == 1
    assert plan.summary.memberships_added == 2
    assert plan.summary.activations_added == 1
    assert plan.summary.total == 4
    assert plan.changes[0] == "add network 3233204505122666 ('engineering')"
    assert "add activation 3233204505122666/a1b2c3d4e5 2026-12-04T09:00:00Z to 2026-12-04T17:00:00Z" in plan.changes


def test_load_dump_round_trip(portal_session: Session) -> None:
    load(portal_session, TWO_NETWORKS)
    portal_session.expunge_all()
    assert dump_portal(portal_session) == parse(TWO_NETWORKS).sorted()


def test_dump_renders_example(portal_session: Session) -> None:
    load(portal_session, EXAMPLE)
    assert render_portal(dump_portal(portal_session), "yaml") == EXAMPLE_DUMP


def test_load_stores_ids_lower_case(portal_session: Session) -> None:
    load(portal_session, EXAMPLE.replace("a1b2c3d4e5", "A1B2C3D4E5"))
    assert membership(portal_session, "a1b2c3d4e5").owner == "user-17"


def test_load_times_in_utc(portal_session: Session) -> None:
    load(portal_session, EXAMPLE.replace("2026-12-04T09:00:00Z", "2026-12-04T11:00:00+02:00"))
    portal_session.expunge_all()
    [activation] = activations_of(portal_session, "a1b2c3d4e5")
    assert activation.starts_at == datetime(2026, 12, 4, 9, tzinfo=UTC)
    assert activation.starts_at.utcoffset() == timedelta(0)
    assert "start: 2026-12-04T09:00:00Z" in render_portal(dump_portal(portal_session), "yaml")


def test_reload_is_no_op(
    portal_session: Session, portal_engine: sqlalchemy.Engine, written_statements: list[str]
) -> None:
    load(portal_session, TWO_NETWORKS)
    written_statements.clear()

    plan = load(portal_session, TWO_NETWORKS, now=LATER)
    assert plan.changes == []
    assert plan.summary.total == 0
    assert written_statements == []


def test_invalid_file_changes_nothing(portal_session: Session) -> None:
    load(portal_session, TWO_NETWORKS)
    before = render_portal(dump_portal(portal_session), "yaml")
    broken = EXAMPLE.replace("name: engineering", "name: renamed") + "      - {node: 0badc0ffe, state: active}\n"
    with pytest.raises(PortalFileError):
        load(portal_session, broken, now=LATER)
    assert render_portal(dump_portal(portal_session), "yaml") == before


def test_apply_leaves_commit_to_caller(portal_session: Session) -> None:
    plan = plan_load(portal_session, parse(TWO_NETWORKS), now=NOW)
    apply_load(portal_session, plan, now=NOW)
    portal_session.rollback()
    assert row_counts(portal_session) == (0, 0, 0)


def test_removed_membership_tombstone(portal_session: Session) -> None:
    load(portal_session, TWO_NETWORKS)
    without_member = TWO_NETWORKS.replace(
        "      - node: 0badc0ffee\n        state: active\n        activations:\n"
        "          - {start: 2026-12-04T10:00:00Z, expires: 2026-12-04T18:00:00Z}\n", "")
    plan = load(portal_session, without_member, now=LATER)
    portal_session.expunge_all()

    removed = membership(portal_session, "0badc0ffee")
    [activation] = activations_of(portal_session, "0badc0ffee")
    kept = membership(portal_session, "a1b2c3d4e5")
    assert plan.summary.memberships_removed == 1
    assert plan.summary.activations_removed == 1
    assert plan.summary.total == 2
    assert removed.removed_at == LATER
    assert removed.state_changed_at == LATER
    assert activation.ended_at == LATER
    assert activation.end_reason == "removed"
    assert activation.removed_at == LATER
    assert kept.updated_at == NOW
    assert dump_portal(portal_session) == parse(without_member).sorted()
    assert row_counts(portal_session) == (2, 3, 3)


def test_removed_network_keeps_memberships(portal_session: Session) -> None:
    load(portal_session, TWO_NETWORKS)
    plan = load(portal_session, TWO_NETWORKS.split("  - id: 8056c2e21c000001")[0], now=LATER)
    portal_session.expunge_all()

    network = portal_session.get_one(Network, "8056c2e21c000001")
    guest = membership(portal_session, "1122334455", network_id="8056c2e21c000001")
    assert plan.summary.networks_removed == 1
    assert plan.summary.total == 1
    assert network.removed_at == LATER
    assert guest.removed_at is None
    assert [entry.id for entry in dump_portal(portal_session).networks] == ["3233204505122666"]


def test_removed_entries_restored(portal_session: Session) -> None:
    load(portal_session, TWO_NETWORKS)
    load(portal_session, "networks: []\n", now=LATER)
    load(portal_session, TWO_NETWORKS.split("  - id: 8056c2e21c000001")[0], now=LATER)
    restored_at = LATER + timedelta(hours=1)
    plan = load(portal_session, TWO_NETWORKS, now=restored_at)
    portal_session.expunge_all()

    assert plan.summary.networks_updated == 1
    assert plan.summary.memberships_updated == 0
    assert portal_session.get_one(Network, "8056c2e21c000001").removed_at is None
    assert dump_portal(portal_session) == parse(TWO_NETWORKS).sorted()


def test_removed_membership_restored_with_new_activation(portal_session: Session) -> None:
    load(portal_session, EXAMPLE)
    load(portal_session, EXAMPLE.split("      - node: a1b2c3d4e5")[0] + "      - node: 0badc0ffee\n"
         "        state: inactive\n", now=LATER)
    restored_at = LATER + timedelta(hours=1)
    plan = load(portal_session, EXAMPLE, now=restored_at)
    portal_session.expunge_all()

    restored = membership(portal_session, "a1b2c3d4e5")
    activations = activations_of(portal_session, "a1b2c3d4e5")
    assert plan.summary.memberships_updated == 1
    assert plan.summary.activations_added == 1
    assert restored.removed_at is None
    assert restored.state_changed_at == restored_at
    assert [row.removed_at for row in activations] == [LATER, None]
    assert activations[1].ended_at is None
    assert dump_portal(portal_session) == parse(EXAMPLE).sorted()


def test_membership_update(portal_session: Session) -> None:
    load(portal_session, EXAMPLE)
    plan = load(portal_session, EXAMPLE.replace("owner: user-17", "owner: user-18"), now=LATER)
    portal_session.expunge_all()
    changed = membership(portal_session, "a1b2c3d4e5")
    assert plan.changes == ["update membership 3233204505122666/a1b2c3d4e5: owner 'user-17' -> 'user-18'"]
    assert changed.owner == "user-18"
    assert changed.updated_at == LATER
    assert changed.state_changed_at == NOW

    plan = load(portal_session, EXAMPLE.replace("state: inactive", "state: active"), now=LATER)
    portal_session.expunge_all()
    assert plan.summary.memberships_updated == 2
    assert membership(portal_session, "0badc0ffee").state_changed_at == LATER


def test_network_rename(portal_session: Session) -> None:
    load(portal_session, EXAMPLE)
    plan = load(portal_session, EXAMPLE.replace("name: engineering", "name: platform"), now=LATER)
    assert plan.changes == ["update network 3233204505122666: name 'engineering' -> 'platform'"]
    assert portal_session.get_one(Network, "3233204505122666").name == "platform"


def test_activation_removed_from_file(portal_session: Session) -> None:
    load(portal_session, TWO_NETWORKS)
    plan = load(portal_session, TWO_NETWORKS.replace(
        "          - {start: 2026-12-05T09:00:00Z, expires: 2026-12-05T17:00:00Z}\n", ""), now=LATER)
    portal_session.expunge_all()
    rows = activations_of(portal_session, "a1b2c3d4e5")
    assert plan.summary.activations_removed == 1
    assert plan.summary.total == 1
    assert [row.removed_at for row in rows] == [None, LATER]
    assert rows[1].end_reason == "removed"
    assert membership(portal_session, "a1b2c3d4e5").removed_at is None


def test_expired_activation_stays_in_dump(portal_session: Session) -> None:
    load(portal_session, EXAMPLE)
    [activation] = activations_of(portal_session, "a1b2c3d4e5")
    activation.ended_at = datetime(2026, 12, 4, 17, tzinfo=UTC)
    activation.end_reason = "expired"
    portal_session.commit()

    assert load(portal_session, EXAMPLE, now=LATER).changes == []
    assert dump_portal(portal_session) == parse(EXAMPLE).sorted()

    load(portal_session, EXAMPLE.replace("        activations:\n", "").replace(
        "          - start: 2026-12-04T09:00:00Z\n            expires: 2026-12-04T17:00:00Z\n", ""), now=LATER)
    portal_session.expunge_all()
    [activation] = activations_of(portal_session, "a1b2c3d4e5")
    assert activation.end_reason == "expired"
    assert activation.removed_at == LATER


def test_dry_run_plans_but_cannot_apply(portal_url: str) -> None:
    writable = create_portal_engine(portal_url, access=WriteAccess.ALL)
    with session_factory(writable)() as session:
        load(session, EXAMPLE)
    writable.dispose()

    engine = create_portal_engine(portal_url, access=WriteAccess.NONE)
    with session_factory(engine)() as session:
        plan = plan_load(session, parse(TWO_NETWORKS), now=LATER)
        with pytest.raises(ReadOnlyViolation):
            apply_load(session, plan, now=LATER)
        session.rollback()
        dumped = dump_portal(session)
    engine.dispose()
    assert plan.summary.networks_added == 1
    assert plan.summary.memberships_updated == 2
    assert plan.summary.activations_added == 2
    assert plan.summary.total == 6
    assert dumped == parse(EXAMPLE).sorted()


def test_load_rejects_naive_now(portal_session: Session) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_load(portal_session, parse(EXAMPLE), now=datetime(2026, 12, 4, 12))


@pytest.mark.parametrize("tagged", ["!!int abc", "!!float abc", "!!timestamp abc"])
def test_explicit_yaml_tag_kept_as_written(tagged):
    text = f"networks:\n  - id: {tagged}\n    memberships: []\n"

    with pytest.raises(PortalFileError) as caught:
        parse_portal_text(text, source="portal.yaml")

    assert "id must be 16 hex digits, got 'abc'" in str(caught.value)


def test_explicit_yaml_tag_on_mapping_rejected():
    text = "networks:\n  - id: !!int {a: 1}\n    memberships: []\n"

    with pytest.raises(PortalFileError) as caught:
        parse_portal_text(text, source="portal.yaml")

    assert "tag:yaml.org,2002:int on a list or mapping" in str(caught.value)
