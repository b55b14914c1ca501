"""Tests of the ZeroTier Central emulator: schema conformance, rate limit, tokens, upsert and revisions.

Every JSON body the emulator returns on a documented route is validated against
the response schema of the published Central API v1 specification in
``tests/specs``, with ``$ref``s resolved and OpenAPI 3.0 rules (``nullable``)
applied by openapi-schema-validator.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30ReadValidator
from openapi_schema_validator.validators import (
    build_enforce_properties_required_validator,
)
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from ztctl.controller.emulator import Fault
from ztctl.controller.emulator.central_emulator import CentralEmulator

SPEC_PATH = Path(__file__).resolve().parent / "specs" / "zerotier-central-v1.json"
SPEC_URI = "urn:zerotier-central-v1"
TOKEN = "central-emulator-test-token"
NETWORK = "8056c2e21c000001"
PUBLIC_NETWORK = "8056c2e21c000002"
NODE = "a1b2c3d4e5"
JOINED = "0badc0ffee"
MISSING_NETWORK = "8056c2e21cffffff"

MakeCentral = Callable[..., CentralEmulator]


# Specification helpers


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def registry(spec: dict[str, Any]) -> Registry:
    # OpenAPI 3.0 schemas are a dialect of JSON Schema draft 4.
    return Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT4))


def response_schema_ref(spec_path: str, method: str, status: int = 200) -> dict[str, str]:
    """Return a ``$ref`` to the JSON schema of one documented response."""
    parts = [
        "paths",
        spec_path,
        method.lower(),
        "responses",
        str(status),
        "content",
        "application/json",
        "schema",
    ]
    pointer = "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)
    return {"$ref": f"{SPEC_URI}#/{pointer}"}


def schema_errors(
    body: object, spec_path: str, method: str, registry: Registry, *, every_field: bool = False
) -> list[str]:
    """Validate a response body; with ``every_field``, every property the schema lists must be present.

    The read validator applies the rules for responses: ``readOnly`` properties may appear and
    ``writeOnly`` ones may not.
    """
    base = OAS30ReadValidator
    validator_class = build_enforce_properties_required_validator(base) if every_field else base
    validator = validator_class(response_schema_ref(spec_path, method), registry=registry)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(body)
    ]


# Fixtures


@pytest.fixture
def make_central() -> Iterator[MakeCentral]:
    """Return a factory that starts a ``CentralEmulator``; every one it started is stopped at the end."""
    started: list[CentralEmulator] = []

    def start(**options: Any) -> CentralEmulator:
        options.setdefault("token", TOKEN)
        options.setdefault("rate_limit", None)
        emulator = CentralEmulator(**options).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def central(make_central: MakeCentral) -> CentralEmulator:
    """A running emulator without a rate limit, with a private and a public network and three members."""
    emulator = make_central()
    emulator.create_network(NETWORK, name="engineering")
    emulator.create_network(PUBLIC_NETWORK, name="lab", private=False)
    emulator.put_member(NETWORK, NODE, authorized=True, name="laptop", ip_assignments=["10.0.0.3"])
    emulator.simulate_join(NETWORK, JOINED)
    emulator.put_member(NETWORK, "b41d9e0001", authorized=True, active_bridge=True, name="router")
    return emulator


def api_client(emulator: CentralEmulator, token: str = TOKEN, scheme: str = "token") -> httpx.Client:
    return httpx.Client(base_url=emulator.url, headers={"Authorization": f"{scheme} {token}"}, timeout=10)


@pytest.fixture
def api(central: CentralEmulator) -> Iterator[httpx.Client]:
    with api_client(central) as client:
        yield client


# Schema conformance

DOCUMENTED_ROUTES = [
    ("GET", "/status", "/status"),
    ("GET", "/network", "/network"),
    ("GET", f"/network/{NETWORK}", "/network/{networkID}"),
    ("GET", f"/network/{PUBLIC_NETWORK}", "/network/{networkID}"),
    ("GET", f"/network/{NETWORK}/member", "/network/{networkID}/member"),
    ("GET", f"/network/{PUBLIC_NETWORK}/member", "/network/{networkID}/member"),
    ("GET", f"/network/{NETWORK}/member/{NODE}", "/network/{networkID}/member/{memberID}"),
    ("GET", f"/network/{NETWORK}/member/{JOINED}", "/network/{networkID}/member/{memberID}"),
]


@pytest.mark.parametrize(("method", "path", "spec_path"), DOCUMENTED_ROUTES)
def test_response_matches_schema(
    api: httpx.Client, registry: Registry, method: str, path: str, spec_path: str
) -> None:
    response = api.request(method, path)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert schema_errors(response.json(), spec_path, method, registry) == []


@pytest.mark.parametrize(("method", "path", "spec_path"), DOCUMENTED_ROUTES)
def test_response_has_every_documented_field(
    api: httpx.Client, registry: Registry, method: str, path: str, spec_path: str
) -> None:
    response = api.request(method, path)

    assert schema_errors(response.json(), spec_path, method, registry, every_field=True) == []


POST_BODIES = [
    {"config": {"authorized": True}},
    {"config": {"authorized": False}},
    {"name": "laptop-2", "description": "spare", "hidden": True},
    {
        "config": {
            "activeBridge": True,
            "noAutoAssignIps": True,
            "ssoExempt": True,
            "ipAssignments": ["10.0.0.9", "fd00::9"],
            "tags": [[1, 2], [3, True]],
            "capabilities": [4, 5],
        }
    },
]


@pytest.mark.parametrize("body", POST_BODIES)
@pytest.mark.parametrize("node", [NODE, "c0ffee0001"])
def test_post_response_matches_schema(api: httpx.Client, registry: Registry, body: dict, node: str) -> None:
    response = api.post(f"/network/{NETWORK}/member/{node}", json=body)

    assert response.status_code == 200
    assert schema_errors(response.json(), "/network/{networkID}/member/{memberID}", "POST", registry) == []
    assert (
        schema_errors(
            response.json(), "/network/{networkID}/member/{memberID}", "POST", registry, every_field=True
        )
        == []
    )


def test_delete_response_is_documented_empty(api: httpx.Client, spec: dict[str, Any]) -> None:
    documented = spec["paths"]["/network/{networkID}/member/{memberID}"]["delete"]["responses"]["200"]

    response = api.delete(f"/network/{NETWORK}/member/{NODE}")

    assert response.status_code == 200
    assert "content" not in documented
    assert response.content == b""


def test_every_served_route_is_documented(spec: dict[str, Any]) -> None:
    served = {(method, spec_path) for method, _, spec_path in DOCUMENTED_ROUTES}
    served |= {
        ("POST", "/network/{networkID}/member/{memberID}"),
        ("DELETE", "/network/{networkID}/member/{memberID}"),
    }

    for method, spec_path in served:
        assert method.lower() in spec["paths"][spec_path]


def test_schema_check_catches_missing_field(registry: Registry) -> None:
    member = {"nodeId": NODE, "config": {"authorized": True}}

    errors = schema_errors(
        member, "/network/{networkID}/member/{memberID}", "GET", registry, every_field=True
    )

    assert "config: 'revision' is a required property" in errors
    assert ": 'lastSeen' is a required property" in errors


def test_schema_check_catches_wrong_type(registry: Registry) -> None:
    member = {"nodeId": NODE, "config": {"authorized": "yes", "revision": 1}}

    errors = schema_errors([member], "/network/{networkID}/member", "GET", registry)

    assert errors == ["0/config/authorized: 'yes' is not of type 'boolean'"]


# Authentication and permissions


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"token wrong-{TOKEN}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"X-ZT1-Auth": TOKEN},
    ],
)
def test_missing_or_wrong_token_is_401(central: CentralEmulator, headers: dict[str, str]) -> None:
    response = httpx.get(f"{central.url}/network", headers=headers)

    assert response.status_code == 401
    assert response.content == b""


@pytest.mark.parametrize("scheme", ["token", "Token", "bearer", "Bearer"])
def test_token_and_bearer_schemes_accepted(central: CentralEmulator, scheme: str) -> None:
    with api_client(central, scheme=scheme) as client:
        response = client.get("/network")

    assert response.status_code == 200


def test_read_only_token_reads(make_central: MakeCentral) -> None:
    emulator = make_central(read_only_token=True)
    emulator.create_network(NETWORK)

    with api_client(emulator) as client:
        networks = client.get("/network")
        status = client.get("/status")

    assert networks.status_code == 200
    assert networks.json()[0]["permissions"][status.json()["user"]["id"]] == {
        "a": False,
        "d": False,
        "m": False,
        "r": True,
    }
    assert status.json()["user"]["globalPermissions"]["a"] is False


def test_read_only_token_writes_are_403(make_central: MakeCentral) -> None:
    emulator = make_central(read_only_token=True)
    emulator.create_network(NETWORK)
    emulator.put_member(NETWORK, NODE, authorized=True)

    with api_client(emulator) as client:
        post = client.post(f"/network/{NETWORK}/member/{NODE}", json={"config": {"authorized": False}})
        delete = client.delete(f"/network/{NETWORK}/member/{NODE}")

    assert post.status_code == 403
    assert delete.status_code == 403
    assert emulator.get_member(NETWORK, NODE)["config"]["authorized"] is True


def test_token_can_write_toggles(central: CentralEmulator, api: httpx.Client) -> None:
    central.token_can_write = False
    rejected = api.post(f"/network/{NETWORK}/member/{NODE}", json={"name": "x"})
    central.token_can_write = True
    accepted = api.post(f"/network/{NETWORK}/member/{NODE}", json={"name": "x"})

    assert rejected.status_code == 403
    assert accepted.status_code == 200


# Members: upsert, partial update, revisions


def test_post_missing_member_creates_it(central: CentralEmulator, api: httpx.Client) -> None:
    response = api.post(
        f"/network/{NETWORK}/member/C0FFEE0001", json={"config": {"authorized": True}, "name": "new"}
    )

    member = response.json()
    assert response.status_code == 200
    assert member["nodeId"] == "c0ffee0001"
    assert member["id"] == f"{NETWORK}-c0ffee0001"
    assert member["networkId"] == NETWORK
    assert member["name"] == "new"
    assert member["config"]["authorized"] is True
    assert member["config"]["revision"] == 1
    assert member["config"]["lastAuthorizedTime"] > 0
    assert central.get_member(NETWORK, "c0ffee0001") is not None


def test_post_missing_network_is_404(api: httpx.Client) -> None:
    response = api.post(f"/network/{MISSING_NETWORK}/member/{NODE}", json={"config": {"authorized": True}})

    assert response.status_code == 404


def test_post_same_value_keeps_revision(api: httpx.Client) -> None:
    first = api.post(f"/network/{NETWORK}/member/{NODE}", json={"config": {"authorized": True}}).json()
    second = api.post(f"/network/{NETWORK}/member/{NODE}", json={"config": {"authorized": True}}).json()

    assert first["config"]["revision"] == 1
    assert second["config"]["revision"] == 1


def test_post_change_bumps_revision(api: httpx.Client) -> None:
    deauthorized = api.post(
        f"/network/{NETWORK}/member/{NODE}", json={"config": {"authorized": False}}
    ).json()
    renamed = api.post(f"/network/{NETWORK}/member/{NODE}", json={"name": "laptop-2"}).json()

    assert deauthorized["config"]["revision"] == 2
    assert deauthorized["config"]["lastDeauthorizedTime"] > 0
    assert renamed["config"]["revision"] == 3


def test_post_partial_update_keeps_other_fields(api: httpx.Client) -> None:
    member = api.post(
        f"/network/{NETWORK}/member/{NODE}", json={"description": "desk", "hidden": True}
    ).json()

    assert member["description"] == "desk"
    assert member["hidden"] is True
    assert member["name"] == "laptop"
    assert member["config"]["authorized"] is True
    assert member["config"]["ipAssignments"] == ["10.0.0.3"]


def test_post_config_fields_stored(api: httpx.Client) -> None:
    body = {
        "config": {
            "activeBridge": True,
            "noAutoAssignIps": True,
            "ipAssignments": ["10.0.0.9"],
            "tags": [[1, 2]],
            "capabilities": [7],
            "revision": 99,
            "creationTime": 5,
        }
    }
    config = api.post(f"/network/{NETWORK}/member/{NODE}", json=body).json()["config"]

    assert config["activeBridge"] is True
    assert config["noAutoAssignIps"] is True
    assert config["ipAssignments"] == ["10.0.0.9"]
    assert config["tags"] == [[1, 2]]
    assert config["capabilities"] == [7]
    assert config["revision"] == 2
    assert config["creationTime"] != 5


@pytest.mark.parametrize(
    "body",
    [
        {"config": {"authorized": "true"}},
        {"config": {"authorized": 1}},
        {"config": "authorized"},
        {"name": 5},
        {"hidden": "no"},
        {"config": {"ipAssignments": ["not-an-ip"]}},
        {"config": {"tags": [[1]]}},
        {"config": {"capabilities": ["1"]}},
        [1],
    ],
)
def test_post_wrong_type_is_400(central: CentralEmulator, api: httpx.Client, body: object) -> None:
    before = central.get_member(NETWORK, NODE)

    response = api.post(f"/network/{NETWORK}/member/{NODE}", json=body)

    assert response.status_code == 400
    assert "message" in response.json()
    assert central.get_member(NETWORK, NODE)["config"] == before["config"]


def test_post_invalid_json_is_400(api: httpx.Client) -> None:
    response = api.post(f"/network/{NETWORK}/member/{NODE}", content=b"{not json")

    assert response.status_code == 400


def test_delete_member_then_404(api: httpx.Client) -> None:
    deleted = api.delete(f"/network/{NETWORK}/member/{NODE}")
    read = api.get(f"/network/{NETWORK}/member/{NODE}")
    again = api.delete(f"/network/{NETWORK}/member/{NODE}")

    assert deleted.status_code == 200
    assert read.status_code == 404
    assert again.status_code == 404


def test_member_list_is_array_by_node_id(api: httpx.Client) -> None:
    members = api.get(f"/network/{NETWORK}/member").json()

    assert [member["nodeId"] for member in members] == [JOINED, NODE, "b41d9e0001"]
    assert [member["id"] for member in members] == [
        f"{NETWORK}-{JOINED}",
        f"{NETWORK}-{NODE}",
        f"{NETWORK}-b41d9e0001",
    ]


def test_network_counts_members(api: httpx.Client) -> None:
    network = api.get(f"/network/{NETWORK}").json()

    assert network["totalMemberCount"] == 3
    assert network["authorizedMemberCount"] == 2
    assert network["onlineMemberCount"] == 1
    assert network["config"]["name"] == "engineering"
    assert network["config"]["private"] is True


@pytest.mark.parametrize(
    "path",
    [
        f"/network/{MISSING_NETWORK}",
        f"/network/{MISSING_NETWORK}/member",
        f"/network/{NETWORK}/member/ffffffffff",
        "/network/",
        "/network/8056c2e21c",
        "/controller/network",
    ],
)
def test_unknown_is_empty_404(api: httpx.Client, path: str) -> None:
    response = api.get(path)

    assert response.status_code == 404
    assert response.content == b""


def test_path_outside_base_path_is_404(central: CentralEmulator) -> None:
    response = httpx.get(
        f"{central.url.removesuffix('/api/v1')}/network", headers={"Authorization": f"token {TOKEN}"}
    )

    assert response.status_code == 404


# Rate limit


def test_rate_limit_answers_429(make_central: MakeCentral) -> None:
    emulator = make_central(rate_limit=3)

    with api_client(emulator) as client:
        responses = [client.get("/status") for _ in range(4)]

    assert [response.status_code for response in responses] == [200, 200, 200, 429]
    assert [response.headers["X-Ratelimit-Remaining"] for response in responses] == ["2", "1", "0", "0"]
    assert all(response.headers["X-Ratelimit-Limit"] == "3" for response in responses)
    assert responses[3].headers["Retry-After"] == "1"
    assert "Retry-After" not in responses[0].headers


def test_rate_limit_reset_is_http_date(make_central: MakeCentral) -> None:
    emulator = make_central(rate_limit=3)

    with api_client(emulator) as client:
        reset = client.get("/status").headers["X-Ratelimit-Reset"]

    assert re.fullmatch(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} UTC", reset)


def test_rate_limit_window_slides(make_central: MakeCentral) -> None:
    emulator = make_central(rate_limit=2)

    with api_client(emulator) as client:
        first = [client.get("/status").status_code for _ in range(3)]
        time.sleep(1.05)
        later = client.get("/status")

    assert first == [200, 200, 429]
    assert later.status_code == 200


def test_rate_limit_applies_before_token(make_central: MakeCentral) -> None:
    emulator = make_central(rate_limit=1)

    with api_client(emulator, token="wrong") as client:
        statuses = [client.get("/status").status_code for _ in range(2)]

    assert statuses == [401, 429]


def test_no_rate_limit_no_headers(api: httpx.Client) -> None:
    responses = [api.get("/status") for _ in range(30)]

    assert {response.status_code for response in responses} == {200}
    assert "X-Ratelimit-Limit" not in responses[0].headers


def test_default_rate_limit_is_free_account() -> None:
    assert CentralEmulator(token="t").rate_limit == 20


def test_request_times_recorded(central: CentralEmulator, api: httpx.Client) -> None:
    central.clear_requests()
    before = time.monotonic()
    api.get("/status")
    api.get("/network")
    after = time.monotonic()

    times = central.request_times
    assert len(times) == 2
    assert before <= times[0] <= times[1] <= after


def test_clear_requests_clears_times(central: CentralEmulator, api: httpx.Client) -> None:
    api.get("/status")
    central.clear_requests()

    assert central.request_times == []
    assert central.requests == []


# Python API


def test_url_has_base_path(central: CentralEmulator) -> None:
    assert central.url == f"http://127.0.0.1:{central.port}/api/v1"


def test_custom_base_path(make_central: MakeCentral) -> None:
    emulator = make_central(base_path="/v1")

    with api_client(emulator) as client:
        response = client.get("/status")

    assert emulator.url.endswith("/v1")
    assert response.status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.com"])
def test_non_loopback_host_rejected(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        CentralEmulator(token="t", host=host)


def test_status_names_user(central: CentralEmulator, api: httpx.Client) -> None:
    status = api.get("/status").json()

    assert status["id"] == "central_status"
    assert status["type"] == "CentralStatus"
    assert status["apiVersion"] == "4"
    assert status["user"]["globalPermissions"] == {"a": True, "d": True, "m": True, "r": True}


def test_create_network_random_id(make_central: MakeCentral) -> None:
    emulator = make_central()

    network_id = emulator.create_network(name="x")

    assert re.fullmatch("[0-9a-f]{16}", network_id)
    assert emulator.network_ids() == [network_id]


def test_delete_network_unknown_raises(central: CentralEmulator) -> None:
    with pytest.raises(KeyError):
        central.delete_network(MISSING_NETWORK)


def test_delete_network_removes_members(central: CentralEmulator, api: httpx.Client) -> None:
    central.delete_network(NETWORK)

    assert api.get(f"/network/{NETWORK}/member").status_code == 404
    assert central.network_ids() == [PUBLIC_NETWORK]


def test_members_keyed_by_node_id(central: CentralEmulator) -> None:
    members = central.members(NETWORK)

    assert sorted(members) == [JOINED, NODE, "b41d9e0001"]
    assert members[NODE]["config"]["authorized"] is True


def test_put_member_none_leaves_fields(central: CentralEmulator) -> None:
    member = central.put_member(NETWORK, NODE, name="renamed")

    assert member["config"]["authorized"] is True
    assert member["config"]["ipAssignments"] == ["10.0.0.3"]
    assert member["config"]["revision"] == 2


def test_put_member_contact_fields(central: CentralEmulator) -> None:
    member = central.put_member(NETWORK, NODE, last_seen_ms=1796412574362, physical_address="198.51.100.7")

    assert member["lastSeen"] == 1796412574362
    assert member["physicalAddress"] == "198.51.100.7"
    assert member["config"]["revision"] == 1


def test_put_member_created_at(central: CentralEmulator) -> None:
    member = central.put_member(NETWORK, "c0ffee0001", created_at_ms=1700000000000)

    assert member["config"]["creationTime"] == 1700000000000


def test_put_member_invalid_ip_raises(central: CentralEmulator) -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        central.put_member(NETWORK, NODE, ip_assignments=["nowhere"])


def test_put_member_unknown_network_raises(central: CentralEmulator) -> None:
    with pytest.raises(KeyError, match="create_network"):
        central.put_member(MISSING_NETWORK, NODE, authorized=True)


def test_simulate_join_creates_pending_member(central: CentralEmulator) -> None:
    member = central.simulate_join(NETWORK, "C0FFEE0002")

    assert member["nodeId"] == "c0ffee0002"
    assert member["config"]["authorized"] is False
    assert member["config"]["revision"] == 1
    assert member["lastSeen"] > 0
    assert member["physicalAddress"] == "203.0.113.10"
    assert member["clientVersion"] == "1.14.2"


def test_simulate_join_public_authorizes(central: CentralEmulator) -> None:
    member = central.simulate_join(PUBLIC_NETWORK, NODE)

    assert member["config"]["authorized"] is True


def test_simulate_join_again_keeps_revision(central: CentralEmulator) -> None:
    first = central.simulate_join(NETWORK, NODE)
    second = central.simulate_join(NETWORK, NODE)

    assert first["config"]["revision"] == 2
    assert second["config"]["revision"] == 2
    assert second["lastSeen"] >= first["lastSeen"]


def test_inject_fault_on_member_path(central: CentralEmulator, api: httpx.Client) -> None:
    central.inject(Fault.status(503), method="GET", path=central.member_path(NETWORK, NODE))

    faulted = api.get(f"/network/{NETWORK}/member/{NODE}")
    normal = api.get(f"/network/{NETWORK}/member/{NODE}")

    assert faulted.status_code == 503
    assert normal.status_code == 200
    assert [request.status for request in central.requests[-2:]] == [503, 200]


def test_requests_record_authorization(central: CentralEmulator, api: httpx.Client) -> None:
    api.get("/status")

    assert central.requests[-1].headers["authorization"] == f"token {TOKEN}"
    assert central.requests[-1].path == "/api/v1/status"
