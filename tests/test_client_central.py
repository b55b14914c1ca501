"""CentralClient against the Central emulator over loopback HTTP, and through httpx.MockTransport.

The emulator shows the client's requests as a real server receives them. The
mock transport covers what the emulator cannot produce: odd member shapes,
broken connections in the middle of a write, and a 403 on a read. Waits between
retries are recorded instead of slept wherever a test does not measure time.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ztctl.controller.central import CentralClient
from ztctl.controller.emulator import Fault
from ztctl.controller.emulator.central_emulator import CentralEmulator
from ztctl.controller.rate_limit import RateLimiter, parse_reset, window_rate
from ztctl.errors import (
    ControllerResponseError,
    ExitCode,
    MemberChanged,
    MemberNotFound,
    NetworkNotFound,
    NotAController,
    ReadOnlyViolation,
    TokenRejected,
)

TOKEN = "s3cret-central-token-do-not-leak"
TOKEN_SOURCE = "ZTCTL_CONTROLLER_TOKEN"
MOCK_URL = "http://127.0.0.1:9/api/v1"
NETWORK = "8056c2e21c000001"
PUBLIC_NETWORK = "8056c2e21c000002"
MISSING_NETWORK = "8056c2e21cffffff"
NODE = "a1b2c3d4e5"
OTHER_NODE = "0badc0ffee"
MEMBER_PATH = f"/api/v1/network/{NETWORK}/member/{NODE}"
LIST_PATH = f"/api/v1/network/{NETWORK}/member"
FAST_RATE = 1000.0
"""A rate high enough that the limiter never delays a test that does not measure it."""

MakeCentral = Callable[..., CentralEmulator]
Reply = Callable[[httpx.Request], httpx.Response]


# Emulator fixtures


@pytest.fixture
def make_central() -> Iterator[MakeCentral]:
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
    """An emulator with private network ``NETWORK`` (member ``NODE`` authorized) and a public network."""
    emulator = make_central()
    emulator.create_network(NETWORK, name="engineering")
    emulator.create_network(PUBLIC_NETWORK, name="lab", private=False)
    emulator.put_member(NETWORK, NODE, authorized=True, name="laptop")
    emulator.clear_requests()
    return emulator


@pytest.fixture
def clients() -> Iterator[list[CentralClient]]:
    built: list[CentralClient] = []
    yield built
    for client in built:
        client.close()


@pytest.fixture
def connect(clients: list[CentralClient]) -> Callable[..., CentralClient]:
    """Build a client for an emulator, by default writable and fast."""

    def build(emulator: CentralEmulator, **options: Any) -> CentralClient:
        options.setdefault("read_only", False)
        options.setdefault("rate", FAST_RATE)
        options.setdefault("token_source", TOKEN_SOURCE)
        client = CentralClient(emulator.url, options.pop("token", TOKEN), **options)
        clients.append(client)
        return client

    return build


def sent(emulator: CentralEmulator, method: str) -> list[Any]:
    return [request for request in emulator.requests if request.method == method]


# Mock transport helpers


def reply(status: int, body: object = None, *, headers: dict[str, str] | None = None) -> Reply:
    """Build a response factory: JSON for a body, an empty body for None, text for a str."""

    def respond(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, content=b"", headers=headers)
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return respond


def fail(error: type[httpx.TransportError], message: str) -> Reply:
    def respond(request: httpx.Request) -> httpx.Response:
        raise error(message, request=request)

    return respond


class FakeCentral:
    """Routes ``(method, path)`` to a list of replies used in turn, the last one repeating; else 404."""

    def __init__(self, routes: dict[tuple[str, str], Reply | list[Reply]]) -> None:
        self.routes = {key: value if isinstance(value, list) else [value] for key, value in routes.items()}
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            replies = self.routes.get((request.method, request.url.path))
            if not replies:
                return httpx.Response(404, content=b"")
            respond = replies.pop(0) if len(replies) > 1 else replies[0]
        return respond(request)

    def sent(self, method: str) -> list[httpx.Request]:
        return [request for request in self.requests if request.method == method]


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def pauses() -> list[float]:
    return []


@pytest.fixture
def mock_connect(
    clients: list[CentralClient], sleeps: list[float], pauses: list[float]
) -> Callable[..., CentralClient]:
    """Build a client over a FakeCentral; retry waits go to ``sleeps`` and limiter pauses to ``pauses``."""

    def build(fake: FakeCentral, **options: Any) -> CentralClient:
        options.setdefault("read_only", False)
        options.setdefault("rate", FAST_RATE)
        options.setdefault("token_source", TOKEN_SOURCE)
        client = CentralClient(MOCK_URL, TOKEN, transport=httpx.MockTransport(fake), **options)
        client.http.sleep = sleeps.append
        client.rate_limiter.sleep = pauses.append
        clients.append(client)
        return client

    return build


def member_json(node_id: str = NODE, *, authorized: bool = True, revision: int = 1, **config: object) -> dict:
    """A member object shaped like those the Central specification describes."""
    return {
        "id": f"{NETWORK}-{node_id}",
        "networkId": NETWORK,
        "nodeId": node_id,
        "name": "laptop",
        "config": {
            "authorized": authorized,
            "activeBridge": False,
            "creationTime": 1796412574362,
            "ipAssignments": ["10.0.0.3"],
            "lastAuthorizedTime": 1796412574362 if authorized else 0,
            "lastDeauthorizedTime": 0,
            "revision": revision,
            **config,
        },
        "lastSeen": 0,
        "physicalAddress": None,
    }


CENTRAL_STATUS = {
    "id": "central_status",
    "type": "CentralStatus",
    "version": "1.6.5",
    "apiVersion": "4",
    "user": {},
}


# Probe


def test_probe_reads_central_status(central: CentralEmulator, connect) -> None:
    client = connect(central)

    status = client.probe()

    assert status.backend == "central"
    assert status.address == ""
    assert status.version == "1.6.5"
    assert status.api_version == 4
    assert client.stats.by_kind == {"status": 1}


def test_probe_wrong_token_names_source(central: CentralEmulator, connect) -> None:
    client = connect(central, token="not-the-token")

    with pytest.raises(TokenRejected) as caught:
        client.probe()

    assert TOKEN_SOURCE in str(caught.value)
    assert "HTTP 401" in str(caught.value)
    assert "/api/v1" in caught.value.hint
    assert caught.value.exit_code == ExitCode.CONTROLLER


def test_probe_status_without_user_checks_token(mock_connect) -> None:
    status = {**CENTRAL_STATUS, "user": None}
    fake = FakeCentral(
        {("GET", "/api/v1/status"): reply(200, status), ("GET", "/api/v1/network"): reply(401)}
    )
    client = mock_connect(fake)

    with pytest.raises(TokenRejected) as caught:
        client.probe()

    assert TOKEN_SOURCE in str(caught.value)
    assert client.stats.by_kind == {"status": 1, "network_list": 1}


def test_probe_status_without_user_token_accepted(mock_connect) -> None:
    status = {"id": "central_status", "type": "CentralStatus"}
    fake = FakeCentral(
        {("GET", "/api/v1/status"): reply(200, status), ("GET", "/api/v1/network"): reply(200, [])}
    )
    client = mock_connect(fake)

    result = client.probe()

    assert result.version == "central"
    assert result.api_version is None
    assert client.stats.by_kind == {"status": 1, "network_list": 1}


@pytest.mark.parametrize(
    "status_reply",
    [
        reply(
            200,
            {"address": "3233204505", "version": "1.14.1", "publicIdentity": "3233204505:0:ab", "clock": 1},
        ),
        reply(200, "<html><body>ZeroTier Central</body></html>"),
        reply(200, {"message": "hello"}),
        reply(200, ["central_status"]),
        reply(404),
    ],
    ids=["zerotier-one", "html", "other-json", "array", "404"],
)
def test_probe_not_central(mock_connect, status_reply: Reply) -> None:
    client = mock_connect(FakeCentral({("GET", "/api/v1/status"): status_reply}))

    with pytest.raises(NotAController) as caught:
        client.probe()

    assert "is not ZeroTier Central" in str(caught.value)
    assert "/api/v1" in caught.value.hint


def test_probe_read_only_mode_warns(mock_connect, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeCentral({("GET", "/api/v1/status"): reply(200, {**CENTRAL_STATUS, "readOnlyMode": True})})
    client = mock_connect(fake)

    with caplog.at_level(logging.WARNING, logger="ztctl.controller.central"):
        client.probe()

    assert "read-only mode" in caplog.text


# Reads


def test_list_network_ids(central: CentralEmulator, connect) -> None:
    client = connect(central)

    assert client.list_network_ids() == [NETWORK, PUBLIC_NETWORK]
    assert client.stats.by_kind == {"network_list": 1}


def test_list_network_ids_lower_case(mock_connect) -> None:
    networks = [{"id": NETWORK.upper()}, {"config": {"id": PUBLIC_NETWORK}}]
    client = mock_connect(FakeCentral({("GET", "/api/v1/network"): reply(200, networks)}))

    assert client.list_network_ids() == [NETWORK, PUBLIC_NETWORK]


@pytest.mark.parametrize("body", [{"id": NETWORK}, [{"id": "8056"}], [{"name": "x"}]])
def test_list_network_ids_bad_shape(mock_connect, body: object) -> None:
    client = mock_connect(FakeCentral({("GET", "/api/v1/network"): reply(200, body)}))

    with pytest.raises(ControllerResponseError, match="GET /api/v1/network"):
        client.list_network_ids()


def test_get_network_private(central: CentralEmulator, connect) -> None:
    network = connect(central).get_network(NETWORK.upper())

    assert network.id == NETWORK
    assert network.name == "engineering"
    assert network.private is True


def test_get_network_public(central: CentralEmulator, connect) -> None:
    network = connect(central).get_network(PUBLIC_NETWORK)

    assert network.private is False


def test_get_network_missing(central: CentralEmulator, connect) -> None:
    with pytest.raises(NetworkNotFound) as caught:
        connect(central).get_network(MISSING_NETWORK)

    assert caught.value.network_id == MISSING_NETWORK
    assert caught.value.status_code == 404


def test_get_network_missing_private_is_true(mock_connect) -> None:
    body = {"id": NETWORK, "config": {"name": None}}
    client = mock_connect(FakeCentral({("GET", f"/api/v1/network/{NETWORK}"): reply(200, body)}))

    network = client.get_network(NETWORK)

    assert network.private is True
    assert network.name == ""


def test_list_members_from_emulator(central: CentralEmulator, connect) -> None:
    central.put_member(
        NETWORK, OTHER_NODE, authorized=False, created_at_ms=1796412574362, ip_assignments=["10.0.0.7"]
    )
    central.put_member(NETWORK, OTHER_NODE, last_seen_ms=1796412600000, physical_address="198.51.100.7")
    client = connect(central)

    members = client.list_members(NETWORK)

    assert [member.node_id for member in members] == [OTHER_NODE, NODE]
    other = members[0]
    assert other.network_id == NETWORK
    assert other.authorized is False
    assert other.revision == 1
    assert other.created_at == datetime.fromtimestamp(1796412574.362, tz=UTC)
    assert other.ip_assignments == ("10.0.0.7",)
    assert other.last_seen_at == datetime.fromtimestamp(1796412600, tz=UTC)
    assert other.physical_address == "198.51.100.7"
    assert members[1].name == "laptop"
    assert members[1].last_authorized_at is not None
    assert client.stats.by_kind == {"list": 1}


def test_list_members_keyed_by_node_id(mock_connect) -> None:
    # The deprecated composite id names another member; only nodeId counts.
    first = member_json("A1B2C3D4E5")
    first["id"] = f"{NETWORK}-ffffffffff"
    second = member_json(OTHER_NODE)
    del second["id"]
    client = mock_connect(FakeCentral({("GET", LIST_PATH): reply(200, [first, second])}))

    members = client.list_members(NETWORK)

    assert [member.node_id for member in members] == [OTHER_NODE, NODE]


def test_list_members_ignores_cache(mock_connect) -> None:
    client = mock_connect(FakeCentral({("GET", LIST_PATH): reply(200, [member_json(revision=7)])}))

    members = client.list_members(NETWORK, cached={NODE: None})  # type: ignore[dict-item]

    assert members[0].revision == 7


def test_member_minimal_fields_tolerated(mock_connect) -> None:
    body = [{"nodeId": NODE, "config": {"authorized": True, "revision": 3}}]
    client = mock_connect(FakeCentral({("GET", LIST_PATH): reply(200, body)}))

    [member] = client.list_members(NETWORK)

    assert member.authorized is True
    assert member.revision == 3
    assert member.active_bridge is False
    assert member.created_at is None
    assert member.name is None
    assert member.ip_assignments == ()
    assert member.last_seen_at is None
    assert member.physical_address is None


def test_member_null_optional_fields_tolerated(mock_connect) -> None:
    body = member_json(
        activeBridge=None,
        ipAssignments=None,
        creationTime=None,
        lastAuthorizedTime=None,
        lastDeauthorizedTime=None,
    )
    body.update(name=None, networkId=None, lastSeen=None, physicalAddress=None)
    client = mock_connect(FakeCentral({("GET", MEMBER_PATH): reply(200, body)}))

    member = client.get_member(NETWORK, NODE)

    assert member is not None
    assert member.active_bridge is False
    assert member.ip_assignments == ()
    assert member.last_authorized_at is None
    assert member.name is None


def test_member_unknown_fields_ignored(mock_connect) -> None:
    body = member_json(futureSetting={"x": 1})
    body.update(online=True, type="Member", physicalLocation=[1.0, 2.0])
    client = mock_connect(FakeCentral({("GET", MEMBER_PATH): reply(200, body)}))

    member = client.get_member(NETWORK, NODE)

    assert member is not None
    assert member.authorized is True


def test_member_info_fields_wrong_type_dropped(mock_connect) -> None:
    body = member_json()
    body.update(lastSeen="yesterday", physicalAddress=0)
    client = mock_connect(FakeCentral({("GET", MEMBER_PATH): reply(200, body)}))

    member = client.get_member(NETWORK, NODE)

    assert member is not None
    assert member.last_seen_at is None
    assert member.physical_address is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("config.authorized", "true"),
        ("config.authorized", None),
        ("config.authorized", 1),
        ("config.revision", "3"),
        ("config.revision", True),
        ("config.revision", -1),
        ("config.revision", 2**70),
        ("config.activeBridge", 1),
        ("config.creationTime", "2026-12-04"),
        ("config.lastDeauthorizedTime", 10**20),
        ("config.ipAssignments", ["10.0.0.3", 4]),
        ("config.ipAssignments", "10.0.0.3"),
        ("name", 5),
        ("networkId", "8056c2e21c000009"),
        ("config", None),
        ("config", "authorized"),
    ],
)
def test_member_wrong_type_names_field(mock_connect, field: str, value: object) -> None:
    body = member_json()
    if field.startswith("config."):
        body["config"][field.removeprefix("config.")] = value
    else:
        body[field] = value
    client = mock_connect(FakeCentral({("GET", LIST_PATH): reply(200, [body])}))

    with pytest.raises(ControllerResponseError) as caught:
        client.list_members(NETWORK)

    message = str(caught.value)
    assert f"field {field!r}" in message
    assert f"member {NODE} of network {NETWORK}" in message
    assert f"GET {LIST_PATH}" in message
    assert caught.value.network_id == NETWORK
    assert caught.value.node_id == NODE


@pytest.mark.parametrize("node_id", [None, "a1b2c3", 1234567890, f"{NETWORK}-{NODE}"])
def test_member_without_node_id_rejected(mock_connect, node_id: object) -> None:
    body = member_json()
    body["nodeId"] = node_id
    client = mock_connect(FakeCentral({("GET", LIST_PATH): reply(200, [body])}))

    with pytest.raises(ControllerResponseError, match="field 'nodeId'"):
        client.list_members(NETWORK)


def test_member_list_duplicate_rejected(mock_connect) -> None:
    body = [member_json(NODE), member_json(NODE.upper())]
    client = mock_connect(FakeCentral({("GET", LIST_PATH): reply(200, body)}))

    with pytest.raises(ControllerResponseError, match="more than once"):
        client.list_members(NETWORK)


def test_member_list_not_array_rejected(mock_connect) -> None:
    client = mock_connect(FakeCentral({("GET", LIST_PATH): reply(200, {NODE: 1})}))

    with pytest.raises(ControllerResponseError, match="expected an array of members") as caught:
        client.list_members(NETWORK)

    assert caught.value.network_id == NETWORK


def test_member_list_missing_network(central: CentralEmulator, connect) -> None:
    with pytest.raises(NetworkNotFound):
        connect(central).list_members(MISSING_NETWORK)


def test_get_member_missing_is_none(central: CentralEmulator, connect) -> None:
    assert connect(central).get_member(NETWORK, "ffffffffff") is None


def test_get_member_other_node_rejected(mock_connect) -> None:
    client = mock_connect(FakeCentral({("GET", MEMBER_PATH): reply(200, member_json(OTHER_NODE))}))

    with pytest.raises(ControllerResponseError, match=f"returned member {OTHER_NODE} instead of {NODE}"):
        client.get_member(NETWORK, NODE)


def test_ids_sent_lower_case(central: CentralEmulator, connect) -> None:
    member = connect(central).get_member(NETWORK.upper(), NODE.upper())

    assert member is not None
    assert member.node_id == NODE
    assert central.requests[-1].path == f"/api/v1/network/{NETWORK}/member/{NODE}"


@pytest.mark.parametrize(
    "call",
    [
        lambda client: client.get_network("8056c2e21c"),
        lambda client: client.list_members("zz56c2e21c000001"),
        lambda client: client.get_member(NETWORK, "a1b2c3d4e5f"),
        lambda client: client.authorize_member(NETWORK, "../status"),
        lambda client: client.deauthorize_member(f"{NETWORK}/", NODE),
        lambda client: client.delete_member(NETWORK, "a1b2c3d4e"),
    ],
    ids=["network", "list", "member", "authorize", "deauthorize", "delete"],
)
def test_malformed_ids_rejected_before_sending(central: CentralEmulator, connect, call) -> None:
    client = connect(central)

    with pytest.raises(ValueError, match="expected 1[06] hex digits"):
        call(client)

    assert central.requests == []
    assert client.stats.total == 0


# Conditional writes


def test_deauthorize_posts_boolean(central: CentralEmulator, connect) -> None:
    client = connect(central)

    member = client.deauthorize_member(NETWORK, NODE, expected_revision=1)

    [post] = sent(central, "POST")
    assert json.loads(post.body) == {"config": {"authorized": False}}
    assert b"false" in post.body
    assert member.authorized is False
    assert member.revision == 2
    assert client.stats.by_kind == {"member_get": 1, "deauthorize": 1}


def test_deauthorize_twice_posts_once(central: CentralEmulator, connect) -> None:
    client = connect(central)

    client.deauthorize_member(NETWORK, NODE)
    member = client.deauthorize_member(NETWORK, NODE)

    assert member.authorized is False
    assert len(sent(central, "POST")) == 1
    assert len(sent(central, "GET")) == 2


def test_authorize_already_authorized_no_post(central: CentralEmulator, connect) -> None:
    member = connect(central).authorize_member(NETWORK, NODE)

    assert member.authorized is True
    assert sent(central, "POST") == []


def test_authorize_contradicting_read_fails(central: CentralEmulator, connect) -> None:
    # A plan to authorize at revision 1 saw the member deauthorized there; the
    # member now reads authorized at that same revision.
    with pytest.raises(ControllerResponseError) as caught:
        connect(central).authorize_member(NETWORK, NODE, expected_revision=1)

    assert "contradict each other" in str(caught.value)
    assert sent(central, "POST") == []


def test_authorize_posts_true(central: CentralEmulator, connect) -> None:
    central.put_member(NETWORK, NODE, authorized=False)

    member = connect(central).authorize_member(NETWORK, NODE, expected_revision=2)

    [post] = sent(central, "POST")
    assert json.loads(post.body) == {"config": {"authorized": True}}
    assert member.authorized is True
    assert member.revision == 3


@pytest.mark.parametrize("action", ["authorize_member", "deauthorize_member", "delete_member"])
def test_write_missing_member_sends_nothing(central: CentralEmulator, connect, action: str) -> None:
    client = connect(central)

    with pytest.raises(MemberNotFound) as caught:
        getattr(client, action)(NETWORK, OTHER_NODE)

    assert caught.value.node_id == OTHER_NODE
    assert sent(central, "POST") == []
    assert sent(central, "DELETE") == []
    assert central.get_member(NETWORK, OTHER_NODE) is None


@pytest.mark.parametrize("action", ["deauthorize_member", "delete_member"])
def test_write_revision_mismatch_sends_nothing(central: CentralEmulator, connect, action: str) -> None:
    client = connect(central)

    with pytest.raises(MemberChanged, match="revision 1, not the expected 5"):
        getattr(client, action)(NETWORK, NODE, expected_revision=5)

    assert sent(central, "POST") == []
    assert sent(central, "DELETE") == []


def test_create_posts_name(central: CentralEmulator, connect) -> None:
    member = connect(central).authorize_member(NETWORK, OTHER_NODE, create=True, name="laptop-17")

    [post] = sent(central, "POST")
    assert json.loads(post.body) == {"config": {"authorized": True}, "name": "laptop-17"}
    assert member.authorized is True
    assert member.name == "laptop-17"
    assert central.get_member(NETWORK, OTHER_NODE)["config"]["authorized"] is True


def test_create_existing_member_no_post(central: CentralEmulator, connect) -> None:
    with pytest.raises(MemberChanged, match="already exists"):
        connect(central).authorize_member(NETWORK, NODE, create=True)

    assert sent(central, "POST") == []


def test_create_missing_network(central: CentralEmulator, connect) -> None:
    with pytest.raises(NetworkNotFound) as caught:
        connect(central).authorize_member(MISSING_NETWORK, NODE, create=True)

    assert caught.value.network_id == MISSING_NETWORK


def test_delete_member_sends_delete(central: CentralEmulator, connect) -> None:
    member = connect(central).delete_member(NETWORK, NODE, expected_revision=1)

    assert member.node_id == NODE
    assert member.authorized is True
    assert len(sent(central, "DELETE")) == 1
    assert central.get_member(NETWORK, NODE) is None


def test_write_retry_after_post_landed(mock_connect, sleeps: list[float]) -> None:
    fake = FakeCentral(
        {
            ("GET", MEMBER_PATH): [
                reply(200, member_json(authorized=True, revision=1)),
                reply(200, member_json(authorized=False, revision=2)),
            ],
            ("POST", MEMBER_PATH): fail(httpx.RemoteProtocolError, "Server disconnected"),
        }
    )
    client = mock_connect(fake)

    member = client.deauthorize_member(NETWORK, NODE, expected_revision=1)

    assert member.authorized is False
    assert member.revision == 2
    assert len(fake.sent("POST")) == 1
    assert len(fake.sent("GET")) == 2
    assert client.stats.retries == 1


def test_write_retry_before_post_checks_revision(mock_connect, sleeps: list[float]) -> None:
    fake = FakeCentral(
        {
            ("GET", MEMBER_PATH): [reply(503), reply(200, member_json(authorized=True, revision=2))],
            ("POST", MEMBER_PATH): reply(200, member_json(authorized=False, revision=3)),
        }
    )
    client = mock_connect(fake)

    with pytest.raises(MemberChanged):
        client.deauthorize_member(NETWORK, NODE, expected_revision=1)

    assert fake.sent("POST") == []
    assert len(fake.sent("GET")) == 2


def test_delete_retry_after_delete_landed(mock_connect, sleeps: list[float]) -> None:
    fake = FakeCentral(
        {
            ("GET", MEMBER_PATH): [reply(200, member_json(revision=4)), reply(404)],
            ("DELETE", MEMBER_PATH): fail(httpx.ReadTimeout, "timed out"),
        }
    )
    client = mock_connect(fake)

    member = client.delete_member(NETWORK, NODE, expected_revision=4)

    assert member.revision == 4
    assert len(fake.sent("DELETE")) == 1


def test_post_stored_value_differs(mock_connect) -> None:
    fake = FakeCentral(
        {
            ("GET", MEMBER_PATH): reply(200, member_json(authorized=True)),
            ("POST", MEMBER_PATH): reply(200, member_json(authorized=True, revision=2)),
        }
    )
    client = mock_connect(fake)

    with pytest.raises(ControllerResponseError, match="sent config.authorized=false but Central stored"):
        client.deauthorize_member(NETWORK, NODE)


# Permissions


@pytest.mark.parametrize(
    ("action", "not_done"),
    [("deauthorize_member", "deauthorized"), ("delete_member", "deleted")],
)
def test_write_403_read_only_token(make_central: MakeCentral, connect, action: str, not_done: str) -> None:
    emulator = make_central(read_only_token=True)
    emulator.create_network(NETWORK)
    emulator.put_member(NETWORK, NODE, authorized=True)
    client = connect(emulator)

    with pytest.raises(ControllerResponseError) as caught:
        getattr(client, action)(NETWORK, NODE)

    error = caught.value
    assert type(error) is ControllerResponseError
    assert error.status_code == 403
    assert error.network_id == NETWORK
    assert error.node_id == NODE
    assert f"{TOKEN_SOURCE} may read network {NETWORK} but not change it" in str(error)
    assert f"so member {NODE} was not {not_done}" in str(error)
    assert "--dry-run" in error.hint
    assert client.stats.retries == 0
    assert emulator.get_member(NETWORK, NODE)["config"]["authorized"] is True


def test_create_403_read_only_token(make_central: MakeCentral, connect) -> None:
    emulator = make_central(read_only_token=True)
    emulator.create_network(NETWORK)

    with pytest.raises(ControllerResponseError, match="was not created") as caught:
        connect(emulator).authorize_member(NETWORK, NODE, create=True)

    assert caught.value.status_code == 403


@pytest.mark.parametrize(
    ("path", "call"),
    [
        (LIST_PATH, lambda client: client.list_members(NETWORK)),
        (MEMBER_PATH, lambda client: client.get_member(NETWORK, NODE)),
        (f"/api/v1/network/{NETWORK}", lambda client: client.get_network(NETWORK)),
    ],
    ids=["list", "member", "network"],
)
def test_read_403_is_response_error(mock_connect, path: str, call) -> None:
    client = mock_connect(FakeCentral({("GET", path): reply(403)}))

    with pytest.raises(ControllerResponseError) as caught:
        call(client)

    assert caught.value.status_code == 403
    assert caught.value.network_id == NETWORK
    assert f"{TOKEN_SOURCE} may not read network {NETWORK}" in str(caught.value)


# Rate limit


def test_429_honours_retry_after(mock_connect, sleeps: list[float], pauses: list[float]) -> None:
    fake = FakeCentral(
        {("GET", "/api/v1/network"): [reply(429, headers={"Retry-After": "7"}), reply(200, [])]}
    )
    client = mock_connect(fake)

    assert client.list_network_ids() == []

    assert sleeps == [7.0]
    assert len(pauses) == 1
    assert 6.5 < pauses[0] <= 7.0
    assert client.stats.by_kind == {"network_list": 2}
    assert client.stats.retries == 1


def test_429_exhausts_retries(mock_connect, sleeps: list[float]) -> None:
    fake = FakeCentral({("GET", "/api/v1/network"): reply(429, headers={"Retry-After": "1"})})
    client = mock_connect(fake, retries=2)

    with pytest.raises(ControllerResponseError, match="HTTP 429 after 3 attempts"):
        client.list_network_ids()

    assert client.stats.by_kind == {"network_list": 3}


def test_429_from_emulator_recovers(make_central: MakeCentral, connect) -> None:
    emulator = make_central(rate_limit=3)
    emulator.create_network(NETWORK)
    client = connect(emulator)
    # Another tool that uses the same account spends the whole budget first.
    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"token {TOKEN}"}) as other_tool:
        for _ in range(3):
            other_tool.get("/status")

    assert client.list_network_ids() == [NETWORK]

    statuses = [request.status for request in emulator.requests]
    assert statuses[3:] == [429, 200]
    assert client.stats.retries == 1
    assert client.stats.by_kind == {"network_list": 2}


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    """Return the maximum count of ``times`` inside one half-open window [t, t + window), over every start t."""
    ordered = sorted(times)
    return max(
        sum(1 for other in ordered[index:] if other < start + window) for index, start in enumerate(ordered)
    )


def test_limiter_keeps_rate_across_threads(central: CentralEmulator, connect) -> None:
    rate = 5
    client = connect(central, rate=rate, concurrency=4)
    started = time.monotonic()

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: client.get_member(NETWORK, NODE), range(20)))

    elapsed = time.monotonic() - started
    times = central.request_times
    assert all(result is not None for result in results)
    assert len(times) == 20
    assert max_in_any_window(times) <= rate
    assert elapsed >= 3.0
    assert client.stats.total == 20


def test_low_remaining_pauses_before_429(make_central: MakeCentral, connect) -> None:
    emulator = make_central(rate_limit=5)
    emulator.create_network(NETWORK)
    client = connect(emulator, rate=20, concurrency=1)

    for _ in range(8):
        client.list_network_ids()

    assert [request.status for request in emulator.requests] == [200] * 8
    assert client.rate_limiter.pauses >= 1
    assert client.rate_limiter.server_limit == 5


def test_stats_count_every_request(mock_connect, sleeps: list[float]) -> None:
    fake = FakeCentral(
        {
            ("GET", "/api/v1/status"): reply(200, CENTRAL_STATUS),
            ("GET", "/api/v1/network"): [reply(503), reply(200, [{"id": NETWORK}])],
            ("GET", LIST_PATH): reply(200, [member_json()]),
        }
    )
    client = mock_connect(fake)

    client.probe()
    client.list_network_ids()
    client.list_members(NETWORK)

    assert client.stats.total == len(fake.requests) == 4
    assert client.stats.by_kind == {"status": 1, "network_list": 2, "list": 1}


@pytest.mark.parametrize(
    ("rate", "limit", "interval_ms"),
    [(10, 10, 1000), (10.0, 10, 1000), (2.5, 2, 1000), (100, 100, 1000), (0.5, 1, 2000), (0.3, 1, 3334)],
)
def test_window_rate(rate: float, limit: int, interval_ms: int) -> None:
    converted = window_rate(rate)

    assert converted.limit == limit
    assert converted.interval == interval_ms


@pytest.mark.parametrize("rate", [0, -1, math.nan, math.inf, "10"])
def test_window_rate_invalid(rate: object) -> None:
    with pytest.raises(ValueError, match="invalid rate"):
        window_rate(rate)  # type: ignore[arg-type]


NOW = datetime(2024, 8, 6, 20, 53, 45, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("Tue, 06 Aug 2024 20:53:48 UTC", 3.0),
        ("Tue, 06 Aug 2024 20:53:48 GMT", 3.0),
        (str(int(NOW.timestamp()) + 2), 2.0),
        ("1", 1.0),
        ("Tue, 06 Aug 2024 20:50:00 UTC", 0.0),
        ("Tue, 06 Aug 2024 21:53:48 UTC", 30.0),
        ("soon", None),
        (None, None),
    ],
)
def test_parse_reset(value: str | None, seconds: float | None) -> None:
    assert parse_reset(value, NOW) == seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def limiter_with_fake_clock(**options: Any) -> tuple[RateLimiter, FakeClock, list[float]]:
    clock = FakeClock()
    waits: list[float] = []
    limiter = RateLimiter(FAST_RATE, clock=clock, **options)

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    limiter.sleep = sleep
    return limiter, clock, waits


def response(status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers={name.replace("_", "-"): value for name, value in headers.items()})


def test_limiter_429_pauses_every_thread() -> None:
    limiter, _clock, waits = limiter_with_fake_clock()

    limiter.observe(response(429, Retry_After="3"))
    limiter.acquire()
    limiter.acquire()

    assert waits == [3.0]
    assert limiter.pauses == 1
    limiter.close()


def test_limiter_429_without_retry_after_waits_window() -> None:
    limiter, _clock, waits = limiter_with_fake_clock()

    limiter.observe(response(429))
    limiter.acquire()

    assert waits == [1.0]
    limiter.close()


def test_limiter_low_remaining_pauses() -> None:
    limiter, _clock, waits = limiter_with_fake_clock(reserve=2)

    limiter.observe(response(X_Ratelimit_Limit="20", X_Ratelimit_Remaining="2", X_Ratelimit_Reset="2"))
    limiter.acquire()

    assert waits == [2.0]
    assert limiter.server_limit == 20
    limiter.close()


def test_limiter_enough_remaining_no_pause() -> None:
    limiter, _clock, waits = limiter_with_fake_clock(reserve=2)

    limiter.observe(response(X_Ratelimit_Limit="20", X_Ratelimit_Remaining="3", X_Ratelimit_Reset="2"))
    limiter.acquire()

    assert waits == []
    limiter.close()


def test_limiter_pause_capped() -> None:
    limiter, _clock, waits = limiter_with_fake_clock()

    limiter.observe(response(429, Retry_After="3600"))
    limiter.acquire()

    assert waits == [30.0]
    limiter.close()


def test_limiter_pause_holds_waiting_thread() -> None:
    limiter = RateLimiter(1)
    limiter.acquire()
    returned_at: list[float] = []
    waiter = threading.Thread(target=lambda: (limiter.acquire(), returned_at.append(time.monotonic())))

    waiter.start()
    time.sleep(0.2)
    pause_end = time.monotonic() + 1.5
    limiter.pause(1.5, "test")
    waiter.join(timeout=10)
    limiter.close()

    assert returned_at[0] >= pause_end
    assert limiter.pauses == 1


def test_limiter_warns_low_server_limit(caplog: pytest.LogCaptureFixture) -> None:
    limiter, _clock, _waits = limiter_with_fake_clock()

    with caplog.at_level(logging.WARNING, logger="ztctl.controller.rate_limit"):
        limiter.observe(response(X_Ratelimit_Limit="20", X_Ratelimit_Remaining="19"))
        limiter.observe(response(X_Ratelimit_Limit="20", X_Ratelimit_Remaining="18"))

    assert caplog.text.count("allows 20 requests per second") == 1
    limiter.close()


# Read-only choke point


@pytest.mark.parametrize(
    "call",
    [
        lambda client: client.deauthorize_member(NETWORK, NODE),
        lambda client: client.authorize_member(NETWORK, OTHER_NODE, create=True),
        lambda client: client.delete_member(NETWORK, NODE),
    ],
    ids=["deauthorize", "create", "delete"],
)
def test_read_only_rejects_writes(central: CentralEmulator, connect, call) -> None:
    client = connect(central, read_only=True)
    before = central.members(NETWORK)

    with pytest.raises(ReadOnlyViolation, match="read-only run"):
        call(client)

    assert {request.method for request in central.requests} <= {"GET"}
    assert central.members(NETWORK).keys() == before.keys()
    assert central.get_member(NETWORK, NODE)["config"] == before[NODE]["config"]


def test_read_only_allows_reads(central: CentralEmulator, connect) -> None:
    client = connect(central, read_only=True)

    client.probe()
    members = client.list_members(NETWORK)

    assert [member.node_id for member in members] == [NODE]


# Secrets and headers


def test_authorization_header_form(central: CentralEmulator, connect) -> None:
    connect(central).list_network_ids()

    headers = central.requests[-1].headers
    assert headers["authorization"] == f"token {TOKEN}"
    assert headers.get("connection", "").lower() != "close"


def test_token_never_shown(make_central: MakeCentral, connect, caplog: pytest.LogCaptureFixture) -> None:
    emulator = make_central(read_only_token=True)
    emulator.create_network(NETWORK)
    emulator.put_member(NETWORK, NODE, authorized=True)
    emulator.inject(Fault.status(429, headers={"Retry-After": "1"}), method="GET", path="/api/v1/status")
    client = connect(emulator)
    client.http.sleep = client.rate_limiter.sleep = lambda seconds: None
    rejected = connect(emulator, token=f"{TOKEN}-wrong")
    errors: list[Exception] = []

    with caplog.at_level(logging.DEBUG):
        client.probe()
        for call in (
            lambda: client.deauthorize_member(NETWORK, NODE),
            lambda: rejected.probe(),
            lambda: client.get_network(MISSING_NETWORK),
        ):
            try:
                call()
            except (ControllerResponseError, TokenRejected) as error:
                errors.append(error)

    assert [type(error) for error in errors] == [ControllerResponseError, TokenRejected, NetworkNotFound]
    assert "retrying after HTTP 429" in caplog.text
    assert TOKEN not in caplog.text
    for error in errors:
        assert TOKEN not in str(error)
        assert TOKEN not in (error.hint or "")
    for text in (
        repr(client),
        repr(client.http),
        repr(client.rate_limiter),
        repr(client.http.client.headers),
    ):
        assert TOKEN not in text


def test_empty_token_rejected() -> None:
    with pytest.raises(ValueError, match=f"{TOKEN_SOURCE} is empty"):
        CentralClient(MOCK_URL, " \n", read_only=True, token_source=TOKEN_SOURCE)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "invalid concurrency"),
        ({"retries": -1}, "invalid retries"),
        ({"rate": 0}, "invalid rate"),
    ],
)
def test_invalid_options_rejected(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CentralClient(MOCK_URL, TOKEN, read_only=True, **options)


def test_url_with_credentials_rejected() -> None:
    with pytest.raises(ValueError, match="must not contain user info"):
        CentralClient(f"http://user:{TOKEN}@127.0.0.1:9/api/v1", TOKEN, read_only=True)


def test_trailing_slash_stripped(mock_connect) -> None:
    fake = FakeCentral({("GET", "/api/v1/network"): reply(200, [])})
    client = CentralClient(f"{MOCK_URL}/", TOKEN, read_only=True, transport=httpx.MockTransport(fake))

    client.list_network_ids()
    client.close()

    assert client.base_url == MOCK_URL
    assert [request.url.path for request in fake.requests] == ["/api/v1/network"]
