"""ZeroTierOneClient against failures and shapes that the real recordings lack, through httpx.MockTransport.

``FakeController`` behaves like zerotier-one: a path it has no route for gets
404 with an empty body. Waits between retries are recorded instead of slept.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from ztctl.controller.base import ControllerMember
from ztctl.controller.http import MAX_RETRY_AFTER, parse_retry_after
from ztctl.controller.zerotier_one import ZeroTierOneClient
from ztctl.errors import (
    ControllerResponseError,
    ControllerUnreachable,
    MemberChanged,
    MemberNotFound,
    NetworkNotFound,
    NotAController,
    ReadOnlyViolation,
    TokenRejected,
)

URL = "http://127.0.0.1:9993"
TOKEN = "s3cret-token-do-not-leak"
NETWORK = "3233204505122666"
NODE = "a1b2c3d4e5"
MEMBER_PATH = f"/controller/network/{NETWORK}/member/{NODE}"
LIST_PATH = f"/controller/network/{NETWORK}/member"
BULK_PATH = f"/unstable/controller/network/{NETWORK}/member"

Reply = Callable[[httpx.Request], httpx.Response]


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


class FakeController:
    """Routes ``(method, path)`` to a list of replies used in turn, the last one repeating."""

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

    def sent(self, method: str, path: str | None = None) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and (path is None or r.url.path == path)]


def member_json(node_id: str = NODE, *, authorized: bool = True, revision: int = 1, **fields: object) -> dict:
    """A member object shaped like those zerotier-one 1.14.1 returns."""
    body = {
        "activeBridge": False,
        "address": node_id,
        "authorized": authorized,
        "capabilities": [],
        "creationTime": 1796412574362,
        "id": node_id,
        "ipAssignments": [],
        "lastAuthorizedTime": 1796412574362 if authorized else 0,
        "lastDeauthorizedTime": 0,
        "noAutoAssignIps": False,
        "nwid": NETWORK,
        "objtype": "member",
        "revision": revision,
        "tags": [],
        "vMajor": -1,
    }
    body.update(fields)
    return body


def status_json(version: str) -> dict:
    return {"address": "3233204505", "online": False, "version": version, "versionMajor": 1}


def probe_routes(version: str = "1.14.1") -> dict[tuple[str, str], Reply]:
    """Routes for a successful probe of a controller that reports ``version``."""
    return {
        ("GET", "/status"): reply(200, status_json(version)),
        ("GET", "/controller"): reply(200, CONTROLLER_READY),
    }


CONTROLLER_READY = {"controller": True, "apiVersion": 4, "clock": 1796412574136, "databaseReady": True}
NETWORK_JSON = {"id": NETWORK, "nwid": NETWORK, "name": "engineering", "private": True, "objtype": "network"}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def connect(sleeps: list[float]) -> Iterator[Callable[..., ZeroTierOneClient]]:
    """Build clients over a FakeController; each records its retry waits in ``sleeps``."""
    clients: list[ZeroTierOneClient] = []

    def build(fake: FakeController, **options: object) -> ZeroTierOneClient:
        options.setdefault("read_only", False)
        client = ZeroTierOneClient(URL, TOKEN, transport=httpx.MockTransport(fake), **options)
        client.http.sleep = sleeps.append
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


# Member list shapes


def test_member_list_array_shape(connect) -> None:
    fake = FakeController(
        {
            ("GET", LIST_PATH): reply(200, [{"0123456789": 3}, {"ABCDEF0123": 1}]),
            ("GET", f"{LIST_PATH}/0123456789"): reply(200, member_json("0123456789", revision=3)),
            ("GET", f"{LIST_PATH}/abcdef0123"): reply(200, member_json("ABCDEF0123", authorized=False)),
        }
    )
    client = connect(fake)

    members = client.list_members(NETWORK)

    assert [member.node_id for member in members] == ["0123456789", "abcdef0123"]
    assert [member.revision for member in members] == [3, 1]
    assert client.has_bulk_list is False
    assert len(fake.sent("GET", BULK_PATH)) == 1


def test_member_list_fallback_remembered(connect) -> None:
    fake = FakeController({("GET", LIST_PATH): reply(200, {})})
    client = connect(fake)

    client.list_members(NETWORK)
    client.list_members(NETWORK)

    assert len(fake.sent("GET", BULK_PATH)) == 1
    assert len(fake.sent("GET", LIST_PATH)) == 2


@pytest.mark.parametrize(
    "body",
    [
        "not a list",
        [["0123456789", 3]],
        [{"0123456789": 3, "abcdef0123": 1}],
        {"0123456789": "3"},
        {"0123456789": True},
        {"12345": 1},
        {"abcdef0123": 1, "ABCDEF0123": 2},
    ],
)
def test_member_list_bad_shape(connect, body: object) -> None:
    client = connect(FakeController({("GET", LIST_PATH): reply(200, body)}))

    with pytest.raises(ControllerResponseError) as raised:
        client.list_members(NETWORK)

    assert raised.value.network_id == NETWORK
    assert f"GET {LIST_PATH}" in str(raised.value)


def test_member_list_drops_vanished_member(connect, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeController(
        {
            ("GET", LIST_PATH): reply(200, {"0123456789": 1, "abcdef0123": 1}),
            ("GET", f"{LIST_PATH}/0123456789"): reply(200, member_json("0123456789")),
        }
    )
    client = connect(fake)

    with caplog.at_level(logging.INFO, logger="ztctl.controller.zerotier_one"):
        members = client.list_members(NETWORK)

    assert [member.node_id for member in members] == ["0123456789"]
    assert "abcdef0123" in caplog.text


def test_member_list_reuses_cached_revision(connect) -> None:
    fake = FakeController(
        {
            ("GET", LIST_PATH): reply(200, {"0123456789": 4, "abcdef0123": 2}),
            ("GET", f"{LIST_PATH}/abcdef0123"): reply(200, member_json("abcdef0123", revision=2)),
        }
    )
    client = connect(fake)
    cached = {
        "0123456789": ControllerMember(NETWORK, "0123456789", True, active_bridge=False, revision=4),
        "abcdef0123": ControllerMember(NETWORK, "abcdef0123", True, active_bridge=False, revision=1),
    }

    members = client.list_members(NETWORK, cached=cached)

    assert members[0] is cached["0123456789"]
    assert members[1].revision == 2
    assert len(fake.sent("GET", f"{LIST_PATH}/0123456789")) == 0
    assert len(fake.sent("GET", f"{LIST_PATH}/abcdef0123")) == 1


def test_member_list_concurrency_bounded(connect) -> None:
    node_ids = [f"{index:010x}" for index in range(1, 21)]
    in_flight = 0
    max_in_flight = 0
    lock = threading.Lock()

    def slow_member(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, max_in_flight
        with lock:
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
        time.sleep(0.01)
        with lock:
            in_flight -= 1
        return httpx.Response(200, json=member_json(request.url.path.rsplit("/", 1)[1]))

    routes: dict = {("GET", LIST_PATH): reply(200, {node_id: 1 for node_id in node_ids})}
    routes.update({("GET", f"{LIST_PATH}/{node_id}"): slow_member for node_id in node_ids})
    client = connect(FakeController(routes), concurrency=3)

    members = client.list_members(NETWORK)

    assert [member.node_id for member in members] == node_ids
    assert max_in_flight <= 3
    assert max_in_flight > 1
    assert client.stats.by_kind["member_get"] == 20


def test_member_list_network_missing(connect) -> None:
    fake = FakeController(probe_routes())
    client = connect(fake)
    client.probe()

    with pytest.raises(NetworkNotFound) as raised:
        client.list_members(NETWORK)

    assert raised.value.network_id == NETWORK
    assert len(fake.sent("GET", LIST_PATH)) == 1
    assert client.has_bulk_list is True


def test_bulk_list_404_on_1_14(connect) -> None:
    fake = FakeController(
        {
            ("GET", "/status"): reply(200, status_json("1.14.1")),
            ("GET", "/controller"): reply(200, CONTROLLER_READY),
            ("GET", LIST_PATH): reply(200, {NODE: 1}),
            ("GET", MEMBER_PATH): reply(200, member_json()),
        }
    )
    client = connect(fake)
    client.probe()

    members = client.list_members(NETWORK)

    assert [member.node_id for member in members] == [NODE]
    assert client.has_bulk_list is False


def test_bulk_list_skipped_on_old_version(connect) -> None:
    fake = FakeController(
        {
            ("GET", "/status"): reply(200, status_json("1.12.2")),
            ("GET", "/controller"): reply(200, CONTROLLER_READY),
            ("GET", LIST_PATH): reply(200, {}),
        }
    )
    client = connect(fake)
    client.probe()

    assert client.list_members(NETWORK) == []
    assert fake.sent("GET", BULK_PATH) == []


@pytest.mark.parametrize("odd_body", [{}, "<html>not found</html>"])
def test_bulk_list_odd_body_fallback(connect, odd_body: object) -> None:
    fake = FakeController(
        {
            ("GET", BULK_PATH): reply(200, odd_body),
            ("GET", LIST_PATH): reply(200, {NODE: 1}),
            ("GET", MEMBER_PATH): reply(200, member_json()),
        }
    )
    client = connect(fake)

    members = client.list_members(NETWORK)

    assert len(members) == 1
    assert client.has_bulk_list is False


def test_bulk_list_odd_body_on_1_14(connect) -> None:
    fake = FakeController(
        {
            ("GET", "/status"): reply(200, status_json("1.14.1")),
            ("GET", "/controller"): reply(200, CONTROLLER_READY),
            ("GET", BULK_PATH): reply(200, {}),
        }
    )
    client = connect(fake)
    client.probe()

    with pytest.raises(ControllerResponseError):
        client.list_members(NETWORK)

    assert fake.sent("GET", LIST_PATH) == []


def _bulk(members: list[dict], *, total: object = None, authorized: object = None) -> dict:
    return {
        "data": members,
        "meta": {
            "totalCount": len(members) if total is None else total,
            "authorizedCount": sum(m["authorized"] for m in members) if authorized is None else authorized,
        },
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_bulk([member_json("0123456789"), member_json("abcdef0123")], total=3), "meta.totalCount = 3"),
        (_bulk([member_json("0123456789"), member_json("abcdef0123")], total="2"), "meta.totalCount = '2'"),
        (_bulk([member_json("0123456789", authorized=False)], authorized=1), "meta.authorizedCount = 1"),
        (_bulk([member_json(nwid="32332045057ef094")]), "field 'nwid'"),
        (_bulk([member_json(), member_json()]), "more than once"),
        ({"data": {}, "meta": {"totalCount": 0, "authorizedCount": 0}}, "field 'data'"),
    ],
)
def test_bulk_list_contradiction(connect, body: dict, expected: str) -> None:
    client = connect(FakeController({("GET", BULK_PATH): reply(200, body)}))

    with pytest.raises(ControllerResponseError) as raised:
        client.list_members(NETWORK)

    assert expected in str(raised.value)
    assert raised.value.network_id == NETWORK


# Member fields


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("authorized", "yes"),
        ("authorized", None),
        ("revision", "3"),
        ("revision", True),
        ("activeBridge", 1),
        ("creationTime", "yesterday"),
        ("lastDeauthorizedTime", -5),
        ("ipAssignments", "10.0.0.1"),
        ("name", 7),
    ],
)
def test_member_wrong_field_type(connect, field: str, value: object) -> None:
    client = connect(FakeController({("GET", MEMBER_PATH): reply(200, member_json(**{field: value}))}))

    with pytest.raises(ControllerResponseError) as raised:
        client.get_member(NETWORK, NODE)

    message = str(raised.value)
    assert f"member {NODE}" in message
    assert f"network {NETWORK}" in message
    assert f"field {field!r}" in message
    assert raised.value.node_id == NODE


@pytest.mark.parametrize("member_id", ["a1b2c3d4", "not-hex-id", 12345, "0123456789"])
def test_member_wrong_id(connect, member_id: object) -> None:
    client = connect(FakeController({("GET", MEMBER_PATH): reply(200, member_json(id=member_id))}))

    with pytest.raises(ControllerResponseError) as raised:
        client.get_member(NETWORK, NODE)

    assert raised.value.network_id == NETWORK


def test_member_missing_optional_fields(connect) -> None:
    body = {"id": "A1B2C3D4E5", "authorized": False, "revision": 0, "futureField": {"x": 1}}
    client = connect(FakeController({("GET", MEMBER_PATH): reply(200, body)}))

    member = client.get_member(NETWORK, NODE)

    assert member == ControllerMember(NETWORK, NODE, authorized=False, active_bridge=False, revision=0)


def test_member_times_in_utc(connect) -> None:
    body = member_json(lastDeauthorizedTime=1796412575000)
    client = connect(FakeController({("GET", MEMBER_PATH): reply(200, body)}))

    member = client.get_member(NETWORK, NODE)

    assert member is not None
    assert member.last_deauthorized_at == datetime(2026, 12, 4, 19, 29, 35, tzinfo=UTC)
    assert member.created_at is not None
    assert member.created_at.tzinfo is UTC


def test_non_json_body(connect) -> None:
    fake = FakeController({("GET", f"/controller/network/{NETWORK}"): reply(200, "<html>hello</html>")})
    client = connect(fake)

    with pytest.raises(ControllerResponseError) as raised:
        client.get_network(NETWORK)

    assert f"GET /controller/network/{NETWORK}" in str(raised.value)
    assert "not JSON" in str(raised.value)


def test_response_over_size_limit_fails(connect, monkeypatch) -> None:
    monkeypatch.setattr("ztctl.controller.http.MAX_RESPONSE_BYTES", 1_000)
    fake = FakeController({("GET", f"/controller/network/{NETWORK}"): reply(200, "x" * 5_000)})
    client = connect(fake)

    with pytest.raises(ControllerResponseError) as raised:
        client.get_network(NETWORK)

    assert "the response is larger than" in str(raised.value)


def test_deeply_nested_body_is_not_json(connect) -> None:
    # Deeper than the JSON decoder can follow, which raises RecursionError.
    fake = FakeController({("GET", f"/controller/network/{NETWORK}"): reply(200, "[" * 200_000)})
    client = connect(fake)

    with pytest.raises(ControllerResponseError) as raised:
        client.get_network(NETWORK)

    assert "not JSON" in str(raised.value)


# Probe


def test_probe_without_controller_route(connect) -> None:
    fake = FakeController(
        {
            ("GET", "/status"): reply(200, status_json("1.12.1")),
            ("GET", "/controller/network"): reply(200, []),
        }
    )
    client = connect(fake)

    status = client.probe()

    assert status.version == "1.12.1"
    assert status.api_version is None
    assert client.has_bulk_list is False


def test_probe_build_without_controller(connect) -> None:
    client = connect(FakeController({("GET", "/status"): reply(200, status_json("1.16.0"))}))

    with pytest.raises(NotAController) as raised:
        client.probe()

    message = str(raised.value)
    assert "zerotier-one 1.16.0" in message
    assert "has no network controller" in message
    assert "1.16.0 and later leave the controller out" in message
    assert raised.value.hint is not None
    assert "ZT_NONFREE=1" in raised.value.hint
    assert "1.14.x" in raised.value.hint


def test_list_network_ids_without_controller(connect) -> None:
    client = connect(FakeController({}))

    with pytest.raises(NotAController):
        client.list_network_ids()


@pytest.mark.parametrize(
    "status_reply",
    [reply(404), reply(200, "<html>router login</html>"), reply(200, {"status": "ok"}), reply(200, [1, 2])],
)
def test_probe_not_zerotier(connect, status_reply: Reply) -> None:
    client = connect(FakeController({("GET", "/status"): status_reply}))

    with pytest.raises(NotAController) as raised:
        client.probe()

    assert "is not a zerotier-one node" in str(raised.value)


def test_probe_controller_false(connect) -> None:
    fake = FakeController(probe_routes() | {("GET", "/controller"): reply(200, {"controller": False})})

    with pytest.raises(NotAController):
        connect(fake).probe()


def test_probe_database_not_ready(connect, sleeps: list[float]) -> None:
    not_ready = {"controller": True, "apiVersion": 4, "clock": 1796412574136, "databaseReady": False}
    fake = FakeController(
        {("GET", "/status"): reply(200, status_json("1.14.1")), ("GET", "/controller"): reply(503, not_ready)}
    )
    client = connect(fake, retries=3)

    with pytest.raises(ControllerUnreachable) as raised:
        client.probe()

    assert "database is still loading" in str(raised.value)
    assert len(fake.sent("GET", "/controller")) == 4
    assert len(sleeps) == 3
    assert client.stats.retries == 3


# Retries


def test_retry_503_then_success(connect, sleeps: list[float]) -> None:
    path = f"/controller/network/{NETWORK}"
    client = connect(FakeController({("GET", path): [reply(503), reply(502), reply(200, NETWORK_JSON)]}))

    network = client.get_network(NETWORK)

    assert network.name == "engineering"
    assert len(sleeps) == 2
    assert all(0 < seconds <= 8.25 for seconds in sleeps)
    assert client.stats.retries == 2
    assert client.stats.by_kind["network"] == 3


def test_retry_logged(connect, caplog: pytest.LogCaptureFixture) -> None:
    path = f"/controller/network/{NETWORK}"
    client = connect(FakeController({("GET", path): [reply(503), reply(200, NETWORK_JSON)]}))

    with caplog.at_level(logging.INFO, logger="ztctl.controller.http"):
        client.get_network(NETWORK)

    retries = [record for record in caplog.records if record.levelno == logging.INFO]
    assert len(retries) == 1
    assert retries[0].getMessage().startswith(f"retrying after HTTP 503 on GET {path}: retry 1 of 3 in ")


def test_retry_429_honours_retry_after(connect, sleeps: list[float]) -> None:
    path = f"/controller/network/{NETWORK}"
    rate_limited = reply(429, {}, headers={"Retry-After": "7"})
    client = connect(FakeController({("GET", path): [rate_limited, reply(200, NETWORK_JSON)]}))

    client.get_network(NETWORK)

    assert sleeps == [7.0]


def test_retry_after_capped(connect, sleeps: list[float]) -> None:
    path = f"/controller/network/{NETWORK}"
    rate_limited = reply(429, {}, headers={"Retry-After": "3600"})
    client = connect(FakeController({("GET", path): [rate_limited, reply(200, NETWORK_JSON)]}))

    client.get_network(NETWORK)

    assert sleeps == [MAX_RETRY_AFTER]


def test_retry_after_http_date() -> None:
    now = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)

    assert parse_retry_after("Fri, 04 Dec 2026 12:00:12 GMT", now) == 12.0
    assert parse_retry_after("Fri, 04 Dec 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_retries_exhausted(connect, sleeps: list[float]) -> None:
    path = f"/controller/network/{NETWORK}"
    fake = FakeController({("GET", path): reply(504)})
    client = connect(fake, retries=2)

    with pytest.raises(ControllerResponseError) as raised:
        client.get_network(NETWORK)

    assert raised.value.status_code == 504
    assert "after 3 attempts" in str(raised.value)
    assert len(fake.requests) == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("status", [400, 403, 405, 500])
def test_no_retry_on_other_status(connect, sleeps: list[float], status: int) -> None:
    path = f"/controller/network/{NETWORK}"
    fake = FakeController({("GET", path): reply(status, {"error": status, "description": "bad thing"})})
    client = connect(fake)

    with pytest.raises(ControllerResponseError) as raised:
        client.get_network(NETWORK)

    assert raised.value.status_code == status
    assert f"GET {path} returned HTTP {status}" in str(raised.value)
    assert "bad thing" in str(raised.value)
    assert len(fake.requests) == 1
    assert sleeps == []


def test_no_retry_on_404(connect, sleeps: list[float]) -> None:
    fake = FakeController({})
    client = connect(fake)

    with pytest.raises(NetworkNotFound):
        client.get_network(NETWORK)

    assert len(fake.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize(
    "broken",
    [
        fail(httpx.ReadError, "[Errno 104] Connection reset by peer"),
        fail(httpx.RemoteProtocolError, "Server disconnected without sending a response."),
        fail(httpx.ConnectError, "[Errno 111] Connection refused"),
        fail(httpx.ReadTimeout, "timed out"),
    ],
)
def test_retry_connection_failure_then_success(connect, sleeps: list[float], broken: Reply) -> None:
    path = f"/controller/network/{NETWORK}"
    client = connect(FakeController({("GET", path): [broken, reply(200, NETWORK_JSON)]}))

    network = client.get_network(NETWORK)

    assert network.id == NETWORK
    assert len(sleeps) == 1
    assert client.stats.retries == 1


def test_connection_refused_unreachable(connect, sleeps: list[float]) -> None:
    fake = FakeController({("GET", "/status"): fail(httpx.ConnectError, "[Errno 111] Connection refused")})
    client = connect(fake, retries=3)

    with pytest.raises(ControllerUnreachable) as raised:
        client.probe()

    message = str(raised.value)
    assert URL in message
    assert "after 4 attempts" in message
    assert "Connection refused" in message
    assert TOKEN not in message
    assert len(fake.requests) == 4


def test_token_rejected_not_retried(connect, sleeps: list[float]) -> None:
    fake = FakeController({("GET", "/status"): reply(401, {})})
    client = connect(fake, token_source="the token file /var/lib/zerotier-one/authtoken.secret")

    with pytest.raises(TokenRejected) as raised:
        client.probe()

    assert "the token file /var/lib/zerotier-one/authtoken.secret" in str(raised.value)
    assert len(fake.requests) == 1
    assert sleeps == []


# Writes


def test_authorize_create_posts_name(connect) -> None:
    fake = FakeController(
        {
            ("GET", f"/controller/network/{NETWORK}"): reply(200, NETWORK_JSON),
            ("POST", MEMBER_PATH): reply(200, member_json(name="laptop-17")),
        }
    )
    client = connect(fake)

    member = client.authorize_member(NETWORK, NODE.upper(), create=True, name="laptop-17")

    assert member.authorized is True
    assert member.name == "laptop-17"
    (post,) = fake.sent("POST")
    assert post.url.path == MEMBER_PATH
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.content) == {"authorized": True, "name": "laptop-17"}


def test_authorize_create_existing_member(connect) -> None:
    fake = FakeController({("GET", MEMBER_PATH): reply(200, member_json(authorized=False))})
    client = connect(fake)

    with pytest.raises(MemberChanged):
        client.authorize_member(NETWORK, NODE, create=True)

    assert fake.sent("POST") == []


def test_authorize_create_missing_network(connect) -> None:
    fake = FakeController({})
    client = connect(fake)

    with pytest.raises(NetworkNotFound):
        client.authorize_member(NETWORK, NODE, create=True)

    assert fake.sent("POST") == []


def test_authorize_missing_member_without_create(connect) -> None:
    fake = FakeController({})
    client = connect(fake)

    with pytest.raises(MemberNotFound):
        client.authorize_member(NETWORK, NODE)

    assert fake.sent("POST") == []


def test_deauthorize_sends_real_boolean(connect) -> None:
    fake = FakeController(
        {
            ("GET", MEMBER_PATH): reply(200, member_json(authorized=True, revision=4)),
            ("POST", MEMBER_PATH): reply(200, member_json(authorized=False, revision=5)),
        }
    )
    client = connect(fake)

    member = client.deauthorize_member(NETWORK, NODE, expected_revision=4)

    assert member.revision == 5
    (post,) = fake.sent("POST")
    assert post.content == b'{"authorized":false}'


def test_post_stored_value_differs(connect) -> None:
    fake = FakeController(
        {
            ("GET", MEMBER_PATH): reply(200, member_json(authorized=False)),
            ("POST", MEMBER_PATH): reply(200, member_json(authorized=False)),
        }
    )
    client = connect(fake)

    with pytest.raises(ControllerResponseError) as raised:
        client.authorize_member(NETWORK, NODE)

    assert "sent authorized=true but the controller stored authorized=false" in str(raised.value)


def test_post_bad_body_500_not_retried(connect, sleeps: list[float]) -> None:
    description = "[json.exception.parse_error.101] parse error at line 1, column 2"
    fake = FakeController(
        {
            ("GET", MEMBER_PATH): reply(200, member_json(authorized=True)),
            ("POST", MEMBER_PATH): reply(500, {"error": 500, "description": description}),
        }
    )
    client = connect(fake)

    with pytest.raises(ControllerResponseError) as raised:
        client.deauthorize_member(NETWORK, NODE)

    assert raised.value.status_code == 500
    assert "parse error" in str(raised.value)
    assert raised.value.node_id == NODE
    assert len(fake.sent("POST")) == 1
    assert sleeps == []


def test_write_retry_after_post_landed(connect, sleeps: list[float]) -> None:
    fake = FakeController(
        {
            ("GET", MEMBER_PATH): [
                reply(200, member_json(authorized=True, revision=1)),
                reply(200, member_json(authorized=False, revision=2)),
            ],
            ("POST", MEMBER_PATH): fail(httpx.RemoteProtocolError, "Server disconnected"),
        }
    )
    client = connect(fake)

    member = client.deauthorize_member(NETWORK, NODE, expected_revision=1)

    assert member.authorized is False
    assert member.revision == 2
    assert len(fake.sent("POST")) == 1
    assert len(fake.sent("GET")) == 2
    assert client.stats.retries == 1


def test_write_retry_before_post_checks_revision(connect, sleeps: list[float]) -> None:
    """A re-read that times out is retried, and the retry still enforces the planned revision."""
    fake = FakeController(
        {
            ("GET", MEMBER_PATH): [
                fail(httpx.ReadTimeout, "timed out"),
                reply(200, member_json(authorized=True, revision=2, activeBridge=True)),
            ],
            ("POST", MEMBER_PATH): reply(200, member_json(authorized=False, revision=3)),
        }
    )
    client = connect(fake)

    with pytest.raises(MemberChanged):
        client.deauthorize_member(NETWORK, NODE, expected_revision=1)

    assert fake.sent("POST") == []
    assert len(fake.sent("GET")) == 2


def test_delete_retry_before_delete_checks_revision(connect, sleeps: list[float]) -> None:
    fake = FakeController(
        {
            ("GET", MEMBER_PATH): [
                fail(httpx.ConnectError, "refused"),
                reply(200, member_json(authorized=False, revision=4)),
            ],
        }
    )
    client = connect(fake)

    with pytest.raises(MemberChanged):
        client.delete_member(NETWORK, NODE, expected_revision=3)

    assert fake.sent("DELETE") == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("creationTime", 10**20), ("lastDeauthorizedTime", 2**63), ("revision", 2**70), ("revision", -1)],
)
def test_member_value_out_of_range(connect, field: str, value: int) -> None:
    fake = FakeController({**probe_routes(), ("GET", MEMBER_PATH): reply(200, member_json(**{field: value}))})
    client = connect(fake)

    with pytest.raises(ControllerResponseError) as caught:
        client.get_member(NETWORK, NODE)

    assert field in str(caught.value)


def test_write_retry_posts_again(connect, sleeps: list[float]) -> None:
    fake = FakeController(
        {
            ("GET", MEMBER_PATH): reply(200, member_json(authorized=True, revision=1)),
            ("POST", MEMBER_PATH): [reply(503), reply(200, member_json(authorized=False, revision=2))],
        }
    )
    client = connect(fake)

    member = client.deauthorize_member(NETWORK, NODE, expected_revision=1)

    assert member.authorized is False
    assert len(fake.sent("POST")) == 2
    assert len(sleeps) == 1


def test_write_retry_create_landed(connect, sleeps: list[float]) -> None:
    fake = FakeController(
        {
            ("GET", MEMBER_PATH): [reply(404), reply(200, member_json(authorized=True))],
            ("GET", f"/controller/network/{NETWORK}"): reply(200, NETWORK_JSON),
            ("POST", MEMBER_PATH): fail(httpx.ReadTimeout, "timed out"),
        }
    )
    client = connect(fake)

    member = client.authorize_member(NETWORK, NODE, create=True)

    assert member.authorized is True
    assert len(fake.sent("POST")) == 1


def test_write_unreachable_after_retries(connect, sleeps: list[float]) -> None:
    fake = FakeController({("GET", MEMBER_PATH): fail(httpx.ConnectError, "[Errno 111] Connection refused")})
    client = connect(fake, retries=2)

    with pytest.raises(ControllerUnreachable):
        client.deauthorize_member(NETWORK, NODE)

    assert len(fake.requests) == 3
    assert len(sleeps) == 2


def test_delete_404_on_delete(connect) -> None:
    fake = FakeController({("GET", MEMBER_PATH): reply(200, member_json(authorized=False))})
    client = connect(fake)

    with pytest.raises(MemberNotFound) as raised:
        client.delete_member(NETWORK, NODE)

    assert "DELETE" in str(raised.value)
    assert len(fake.sent("DELETE")) == 1


def test_delete_stale_revision(connect) -> None:
    fake = FakeController({("GET", MEMBER_PATH): reply(200, member_json(authorized=False, revision=3))})
    client = connect(fake)

    with pytest.raises(MemberChanged):
        client.delete_member(NETWORK, NODE, expected_revision=2)

    assert fake.sent("DELETE") == []


def test_delete_retry_after_delete_landed(connect, sleeps: list[float]) -> None:
    fake = FakeController(
        {
            ("GET", MEMBER_PATH): [reply(200, member_json(authorized=False, revision=3)), reply(404)],
            ("DELETE", MEMBER_PATH): fail(httpx.ReadTimeout, "timed out"),
        }
    )
    client = connect(fake)

    member = client.delete_member(NETWORK, NODE, expected_revision=3)

    assert member.revision == 3
    assert len(fake.sent("DELETE")) == 1


# Read-only choke point


def _member_needing_every_write() -> FakeController:
    """A controller where member NODE is authorized and another node is absent."""
    return FakeController(
        {
            ("GET", MEMBER_PATH): reply(200, member_json(authorized=True)),
            ("GET", f"/controller/network/{NETWORK}"): reply(200, NETWORK_JSON),
        }
    )


@pytest.mark.parametrize(
    "write",
    [
        lambda client: client.deauthorize_member(NETWORK, NODE),
        lambda client: client.delete_member(NETWORK, NODE),
        lambda client: client.authorize_member(NETWORK, "0123456789", create=True),
    ],
    ids=["deauthorize", "delete", "authorize-create"],
)
def test_read_only_write_not_sent(connect, sleeps: list[float], write: Callable) -> None:
    fake = _member_needing_every_write()
    client = connect(fake, read_only=True)

    with pytest.raises(ReadOnlyViolation):
        write(client)

    assert {request.method for request in fake.requests} == {"GET"}
    assert sleeps == []


def test_read_only_authorize_not_sent(connect) -> None:
    fake = FakeController({("GET", MEMBER_PATH): reply(200, member_json(authorized=False))})
    client = connect(fake, read_only=True)

    with pytest.raises(ReadOnlyViolation):
        client.authorize_member(NETWORK, NODE)

    assert {request.method for request in fake.requests} == {"GET"}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD"])
def test_read_only_session_rejects_method(connect, method: str) -> None:
    fake = FakeController({})
    client = connect(fake, read_only=True)
    body = None if method == "HEAD" else {"authorized": False}

    with pytest.raises(ReadOnlyViolation) as raised:
        client.http.send(method, MEMBER_PATH, kind="test", json=body)

    assert fake.requests == []
    assert client.stats.total == 0
    assert method in str(raised.value)


def test_read_only_reads_allowed(connect) -> None:
    fake = FakeController({("GET", MEMBER_PATH): reply(200, member_json())})
    client = connect(fake, read_only=True)

    assert client.get_member(NETWORK, NODE) is not None
    assert len(fake.requests) == 1


# Headers, logging and secrets


def test_headers_token_and_connection_close(connect) -> None:
    fake = FakeController({("GET", "/controller/network"): reply(200, [NETWORK])})
    client = connect(fake)

    client.list_network_ids()

    (request,) = fake.requests
    assert request.headers["X-ZT1-Auth"] == TOKEN
    assert request.headers["Connection"] == "close"
    assert TOKEN not in str(request.url)


def test_keepalive_keeps_connection(connect) -> None:
    fake = FakeController({("GET", "/controller/network"): reply(200, [NETWORK])})
    client = connect(fake, keepalive=True)

    client.list_network_ids()

    assert fake.requests[0].headers.get("Connection") != "close"


def test_token_stripped(connect) -> None:
    fake = FakeController({("GET", "/controller/network"): reply(200, [])})
    client = ZeroTierOneClient(URL, f"  {TOKEN}\n", read_only=True, transport=httpx.MockTransport(fake))

    client.list_network_ids()

    assert fake.requests[0].headers["X-ZT1-Auth"] == TOKEN


def test_debug_line_per_request(connect, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeController(probe_routes())
    client = connect(fake)

    with caplog.at_level(logging.DEBUG, logger="ztctl.controller.http"):
        client.probe()

    lines = [record.getMessage() for record in caplog.records if record.name == "ztctl.controller.http"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /status -> 200 in ")
    assert lines[0].endswith(" ms")
    assert lines[1].startswith("GET /controller -> 200 in ")


def test_token_never_leaks(connect, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeController(
        {
            ("GET", "/status"): reply(200, status_json("1.14.1")),
            ("GET", "/controller"): reply(200, CONTROLLER_READY),
            ("GET", "/controller/network"): [fail(httpx.ConnectError, "refused"), reply(401, {})],
            ("GET", MEMBER_PATH): reply(503),
        }
    )
    client = connect(fake, retries=1)
    errors: list[Exception] = []

    with caplog.at_level(logging.DEBUG):
        client.probe()
        for call in (client.list_network_ids, lambda: client.get_member(NETWORK, NODE)):
            try:
                call()
            except Exception as error:  # noqa: BLE001 - every error is checked for the token below
                errors.append(error)

    assert len(errors) == 2
    assert "HTTP 401" in str(errors[0])
    assert "HTTP 503" in str(errors[1])
    assert TOKEN not in caplog.text
    for error in errors:
        assert TOKEN not in str(error)
        assert TOKEN not in repr(error)
        assert TOKEN not in (getattr(error, "hint", None) or "")
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(client.http)
    assert TOKEN not in repr(client.http.client)


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:9993", "ftp://127.0.0.1", "http://127.0.0.1:9993/?auth=abc", "http://user:pw@127.0.0.1:9993"],
)
def test_invalid_url_rejected(url: str) -> None:
    with pytest.raises(ValueError) as raised:
        ZeroTierOneClient(url, TOKEN, read_only=True)

    assert "abc" not in str(raised.value)
    assert "pw" not in str(raised.value)


def test_empty_token_rejected() -> None:
    with pytest.raises(ValueError, match="ZTCTL_TOKEN is empty"):
        ZeroTierOneClient(URL, " \n", read_only=True, token_source="ZTCTL_TOKEN")


def test_list_networks_bulk_on_1_14(connect) -> None:
    body = {"data": [NETWORK_JSON, {**NETWORK_JSON, "id": "32332045050000aa", "private": False}], "meta": {"networkCount": 2}}
    fake = FakeController({**probe_routes("1.14.1"), ("GET", "/unstable/controller/network"): reply(200, body)})
    client = connect(fake)
    client.probe()

    networks = client.list_networks()

    assert networks is not None
    assert sorted(networks) == sorted([NETWORK, "32332045050000aa"])
    assert networks["32332045050000aa"].private is False


def test_list_networks_count_contradiction(connect) -> None:
    body = {"data": [NETWORK_JSON], "meta": {"networkCount": 3}}
    fake = FakeController({**probe_routes("1.14.1"), ("GET", "/unstable/controller/network"): reply(200, body)})
    client = connect(fake)
    client.probe()

    with pytest.raises(ControllerResponseError) as caught:
        client.list_networks()

    assert "networkCount" in str(caught.value)


def test_list_networks_none_before_1_14(connect) -> None:
    fake = FakeController(probe_routes("1.12.2"))
    client = connect(fake)
    client.probe()

    assert client.list_networks() is None
    assert fake.sent("GET", "/unstable/controller/network") == []
