"""Tests of the controller emulator: Python API, faults, keep-alive, versions and authentication."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from controller_fixtures import *  # noqa: F403 (the emulator and make_emulator fixtures)
from controller_fixtures import EMULATOR_TOKEN

from ztctl.controller.emulator import ControllerEmulator, Fault

NETWORK_ID = "3233204505aaaaaa"
MakeEmulator = Callable[..., ControllerEmulator]


@pytest.fixture
def api(emulator: ControllerEmulator) -> Iterator[httpx.Client]:
    """An HTTP client with the right token for ``emulator``, which has network ``NETWORK_ID``."""
    emulator.create_network(NETWORK_ID, name="test")
    with httpx.Client(base_url=emulator.url, headers={"X-ZT1-Auth": EMULATOR_TOKEN}, timeout=10) as client:
        yield client


def client_for(emulator: ControllerEmulator, **kwargs: object) -> httpx.Client:
    return httpx.Client(base_url=emulator.url, timeout=10, **kwargs)


# Lifecycle


def test_url_before_start_raises() -> None:
    emulator = ControllerEmulator(token="t")

    with pytest.raises(RuntimeError, match="call start"):
        _ = emulator.url


def test_context_manager_starts_and_stops() -> None:
    with ControllerEmulator(token="t") as emulator:
        url = emulator.url
        assert httpx.get(f"{url}/status", headers={"X-ZT1-Auth": "t"}).status_code == 200

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/status", headers={"X-ZT1-Auth": "t"})


def test_url_is_loopback(emulator: ControllerEmulator) -> None:
    assert emulator.url.startswith("http://127.0.0.1:")
    assert emulator.url.endswith(f":{emulator.port}")


def test_default_token_has_real_form() -> None:
    emulator = ControllerEmulator()

    assert len(emulator.token) == 24
    assert emulator.token.isalnum()
    assert emulator.token == emulator.token.lower()


def test_invalid_version_raises() -> None:
    with pytest.raises(ValueError, match="expected MAJOR.MINOR.REV"):
        ControllerEmulator(version="1.16.x")


# Python API


def test_create_network_random_suffix(emulator: ControllerEmulator) -> None:
    network_id = emulator.create_network(name="lab")

    assert len(network_id) == 16
    assert network_id.startswith("3233204505")
    assert emulator.network_ids() == [network_id]


def test_create_network_explicit_id(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.create_network("3233204505000001", name="open", private=False)

    network = api.get("/controller/network/3233204505000001").json()
    assert network["name"] == "open"
    assert network["private"] is False
    assert network["revision"] == 1


def test_delete_network_unknown_raises(emulator: ControllerEmulator) -> None:
    with pytest.raises(KeyError, match="3233204505000009"):
        emulator.delete_network("3233204505000009")


def test_delete_network_removes_members(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.put_member(NETWORK_ID, "a1b2c3d4e5", authorized=True)

    emulator.delete_network(NETWORK_ID)

    assert emulator.network_ids() == []
    assert api.get(f"/controller/network/{NETWORK_ID}/member").status_code == 404


def test_put_member_creates_member(emulator: ControllerEmulator, api: httpx.Client) -> None:
    member = emulator.put_member(
        NETWORK_ID,
        "a1b2c3d4e5",
        authorized=True,
        active_bridge=True,
        name="router",
        ip_assignments=["10.0.0.5"],
        created_at_ms=1_700_000_000_000,
    )

    assert member == api.get(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5").json()
    assert member["authorized"] is True
    assert member["activeBridge"] is True
    assert member["name"] == "router"
    assert member["ipAssignments"] == ["10.0.0.5"]
    assert member["creationTime"] == 1_700_000_000_000
    assert member["revision"] == 1
    assert member["lastAuthorizedTime"] > 0
    assert member["lastAuthorizedCredentialType"] == "api"
    assert list(member) == sorted(member)


def test_put_member_unchanged_keeps_revision(emulator: ControllerEmulator) -> None:
    emulator.create_network(NETWORK_ID)
    first = emulator.put_member(NETWORK_ID, "a1b2c3d4e5", authorized=True)

    second = emulator.put_member(NETWORK_ID, "a1b2c3d4e5", authorized=True)

    assert second["revision"] == first["revision"]
    assert second["lastAuthorizedTime"] == first["lastAuthorizedTime"]


def test_put_member_deauthorize_sets_time(emulator: ControllerEmulator) -> None:
    emulator.create_network(NETWORK_ID)
    emulator.put_member(NETWORK_ID, "a1b2c3d4e5", authorized=True)

    member = emulator.put_member(NETWORK_ID, "a1b2c3d4e5", authorized=False)

    assert member["authorized"] is False
    assert member["lastDeauthorizedTime"] > 0
    assert member["revision"] == 2


def test_put_member_none_leaves_fields(emulator: ControllerEmulator) -> None:
    emulator.create_network(NETWORK_ID)
    emulator.put_member(NETWORK_ID, "a1b2c3d4e5", authorized=True, name="laptop")

    member = emulator.put_member(NETWORK_ID, "a1b2c3d4e5", ip_assignments=["10.0.0.9"])

    assert member["authorized"] is True
    assert member["name"] == "laptop"
    assert member["ipAssignments"] == ["10.0.0.9"]


def test_put_member_unknown_network_raises(emulator: ControllerEmulator) -> None:
    with pytest.raises(KeyError, match="3233204505000009"):
        emulator.put_member("3233204505000009", "a1b2c3d4e5", authorized=True)


def test_put_member_invalid_node_id_raises(emulator: ControllerEmulator) -> None:
    with pytest.raises(ValueError, match="10 hex digits"):
        emulator.put_member(NETWORK_ID, "a1b2c3d4e", authorized=True)


def test_put_member_keeps_id_case(emulator: ControllerEmulator) -> None:
    emulator.create_network(NETWORK_ID)
    emulator.put_member(NETWORK_ID, "ABCDEF0123", authorized=True)

    assert list(emulator.members(NETWORK_ID)) == ["ABCDEF0123"]
    assert emulator.get_member(NETWORK_ID, "abcdef0123")["id"] == "ABCDEF0123"


def test_get_member_missing_is_none(emulator: ControllerEmulator) -> None:
    emulator.create_network(NETWORK_ID)

    assert emulator.get_member(NETWORK_ID, "a1b2c3d4e5") is None
    assert emulator.get_member("3233204505000009", "a1b2c3d4e5") is None


def test_members_unknown_network_raises(emulator: ControllerEmulator) -> None:
    with pytest.raises(KeyError):
        emulator.members("3233204505000009")


def test_simulate_join_creates_pending_member(emulator: ControllerEmulator) -> None:
    emulator.create_network(NETWORK_ID)

    member = emulator.simulate_join(NETWORK_ID, "a1b2c3d4e5")

    assert member["authorized"] is False
    assert member["revision"] == 1
    assert member["creationTime"] > 0
    assert member["lastAuthorizedTime"] == 0
    assert member["identity"].startswith("a1b2c3d4e5:0:")
    assert member["vMajor"] == -1


def test_simulate_join_public_network_authorizes(emulator: ControllerEmulator) -> None:
    network_id = emulator.create_network(private=False)

    member = emulator.simulate_join(network_id, "a1b2c3d4e5")

    assert member["authorized"] is True
    assert member["lastAuthorizedCredentialType"] == "public"
    assert member["lastAuthorizedTime"] > 0
    assert member["vMajor"] == 1
    assert member["vMinor"] == 14


def test_simulate_join_lowercases_typed_id(emulator: ControllerEmulator) -> None:
    emulator.create_network(NETWORK_ID)
    emulator.put_member(NETWORK_ID, "ABCDEF0123", authorized=True)

    member = emulator.simulate_join(NETWORK_ID, "abcdef0123")

    assert member["id"] == "abcdef0123"
    assert member["address"] == "abcdef0123"
    assert member["revision"] == 2
    assert member["authorized"] is True


def test_simulate_join_again_changes_nothing(emulator: ControllerEmulator) -> None:
    emulator.create_network(NETWORK_ID)
    first = emulator.simulate_join(NETWORK_ID, "a1b2c3d4e5")

    second = emulator.simulate_join(NETWORK_ID, "a1b2c3d4e5")

    assert second == first


def test_simulate_join_after_delete_recreates(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.put_member(NETWORK_ID, "a1b2c3d4e5", authorized=True)
    api.delete(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5")

    member = emulator.simulate_join(NETWORK_ID, "a1b2c3d4e5")

    assert member["authorized"] is False
    assert member["lastAuthorizedTime"] == 0
    assert api.get(f"/controller/network/{NETWORK_ID}/member").json() == {"a1b2c3d4e5": 1}


def test_simulate_join_unknown_network_raises(emulator: ControllerEmulator) -> None:
    with pytest.raises(KeyError, match="3233204505000009"):
        emulator.simulate_join("3233204505000009", "a1b2c3d4e5")


# HTTP behaviour


def test_post_member_coerces_string_to_false(api: httpx.Client) -> None:
    response = api.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", json={"authorized": "yes"})

    assert response.status_code == 200
    assert response.json()["authorized"] is False


def test_post_member_string_true_authorizes(api: httpx.Client) -> None:
    response = api.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", json={"authorized": "True"})

    assert response.json()["authorized"] is True


def test_post_member_ignores_unknown_keys(api: httpx.Client) -> None:
    member = api.post(
        f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", json={"revision": 99, "identity": "x"}
    ).json()

    assert member["revision"] == 1
    assert "identity" not in member


@pytest.mark.parametrize(
    "body",
    [b"not json", b"", b'{"ipAssignments": [1]}', b'{"ipAssignments": [null]}'],
    ids=["malformed", "empty", "number-ip", "null-ip"],
)
def test_post_member_bad_body_is_500(api: httpx.Client, body: bytes) -> None:
    response = api.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", content=body)

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == 500
    assert response.json()["description"]
    assert api.get(f"/controller/network/{NETWORK_ID}/member").json() == {}


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null"], ids=["array", "string", "null"])
def test_post_member_non_object_body_reads_empty(api: httpx.Client, body: bytes) -> None:
    # The controller looks keys up with count(), which is 0 on a non-object.
    response = api.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", content=body)

    assert response.status_code == 200
    assert response.json()["authorized"] is False
    assert response.json()["revision"] == 1


def test_post_member_unknown_network_is_404(api: httpx.Client) -> None:
    response = api.post("/controller/network/3233204505000009/member/a1b2c3d4e5", json={"authorized": True})

    assert response.status_code == 404
    assert response.content == b""


def test_ip_assignments_are_normalised(api: httpx.Client) -> None:
    member = api.post(
        f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5",
        json={"ipAssignments": ["10.0.0.1/24", "fd00:0:0::1", "nonsense"]},
    ).json()

    assert member["ipAssignments"] == ["10.0.0.1", "fd00::1"]


def test_post_network_updates_fields(api: httpx.Client) -> None:
    body = {
        "name": "renamed",
        "private": "false",
        "mtu": 99999,
        "enableBroadcast": 0,
        "v6AssignMode": {"rfc4193": True},
        "dns": ["ignored"],
    }

    network = api.post(f"/controller/network/{NETWORK_ID}", json=body).json()

    assert network["name"] == "renamed"
    assert network["private"] is False
    assert network["mtu"] == 10000
    assert network["enableBroadcast"] is False
    assert network["v6AssignMode"] == {"rfc4193": True}
    assert network["dns"] == []
    assert network["revision"] == 2


def test_post_network_unchanged_keeps_revision(api: httpx.Client) -> None:
    network = api.post(f"/controller/network/{NETWORK_ID}", json={"name": "test"}).json()

    assert network["revision"] == 1


def test_create_network_under_other_address_is_400(api: httpx.Client) -> None:
    response = api.post("/controller/network/1122334455______", json={})

    assert response.status_code == 400
    assert response.content == b""


def test_create_network_without_id(api: httpx.Client) -> None:
    response = api.post("/controller/network", json={"name": "random"})

    assert response.status_code == 200
    assert response.json()["id"].startswith("3233204505")


@pytest.mark.parametrize(
    "path",
    [
        "/controller/network/",
        f"/controller/network/{NETWORK_ID}/member/",
        f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e",
        f"/controller/network/{NETWORK_ID}/member/a1b2c3d4zz",
        "/controller/network/3233204505aaaaa",
        "/nope",
    ],
)
def test_unmatched_path_is_empty_404(api: httpx.Client, path: str) -> None:
    response = api.get(path)

    assert response.status_code == 404
    assert response.content == b""
    assert "content-type" not in response.headers


def test_uppercase_network_id_in_path(api: httpx.Client) -> None:
    response = api.get(f"/controller/network/{NETWORK_ID.upper()}")

    assert response.status_code == 200
    assert response.json()["id"] == NETWORK_ID


def test_delete_member_then_404(api: httpx.Client) -> None:
    api.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", json={"authorized": True})

    deleted = api.delete(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5")

    assert deleted.status_code == 200
    assert deleted.json()["authorized"] is True
    assert api.get(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5").status_code == 404
    assert api.delete(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5").status_code == 404


def test_bulk_member_list_counts(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.put_member(NETWORK_ID, "a1b2c3d4e5", authorized=True)
    emulator.put_member(NETWORK_ID, "0badc0ffee", authorized=False)

    body = api.get(f"/unstable/controller/network/{NETWORK_ID}/member").json()

    assert body["meta"] == {"authorizedCount": 1, "totalCount": 2}
    assert sorted(member["id"] for member in body["data"]) == ["0badc0ffee", "a1b2c3d4e5"]


def test_unstable_network_list(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.put_member(NETWORK_ID, "a1b2c3d4e5", authorized=True)

    body = api.get("/unstable/controller/network").json()

    assert body["meta"] == {"networkCount": 1}
    assert body["data"][0]["id"] == NETWORK_ID
    assert body["data"][0]["meta"] == {"authorizedMemberCount": 1, "totalMemberCount": 1}


def test_status_reports_node(emulator: ControllerEmulator, api: httpx.Client) -> None:
    status = api.get("/status").json()

    assert status["address"] == "3233204505"
    assert status["version"] == "1.14.1"
    assert status["publicIdentity"].startswith("3233204505:0:")
    assert status["config"]["settings"]["primaryPort"] == emulator.port


def test_head_has_no_body(api: httpx.Client) -> None:
    response = api.head("/controller/network")

    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


# Requests log


def test_requests_log_records_each_request(emulator: ControllerEmulator, api: httpx.Client) -> None:
    api.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5?x=1", json={"authorized": True})
    api.get("/nope")

    requests = emulator.requests

    assert [(r.method, r.path, r.status) for r in requests] == [
        ("POST", f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", 200),
        ("GET", "/nope", 404),
    ]
    assert requests[0].body == b'{"authorized":true}'
    assert requests[0].query == "x=1"
    assert requests[1].body == b""


def test_clear_requests_empties_log(emulator: ControllerEmulator, api: httpx.Client) -> None:
    api.get("/status")

    emulator.clear_requests()

    assert emulator.requests == []


# Faults


def test_status_fault_then_normal(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.inject(Fault.status(503, b'{"busy":true}', {"Content-Type": "application/json"}))

    faulted = api.get("/controller/network")
    normal = api.get("/controller/network")

    assert faulted.status_code == 503
    assert faulted.json() == {"busy": True}
    assert normal.status_code == 200
    assert [r.status for r in emulator.requests] == [503, 200]


def test_status_fault_retry_after(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.inject(Fault.status(429, headers={"Retry-After": "2"}))

    response = api.get("/status")

    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.content == b""


def test_status_fault_skips_request(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.inject(Fault.status(503), method="POST")

    api.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", json={"authorized": True})

    assert emulator.get_member(NETWORK_ID, "a1b2c3d4e5") is None


def test_fault_times_then_gone(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.inject(Fault.status(500), times=2)

    statuses = [api.get("/status").status_code for _ in range(3)]

    assert statuses == [500, 500, 200]


def test_fault_matches_method_and_full_path(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.inject(Fault.status(503), method="get", path=r"/controller/network/[0-9a-f]{16}/member")

    assert api.get(f"/controller/network/{NETWORK_ID}").status_code == 200
    assert api.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", json={}).status_code == 200
    assert api.get(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5").status_code == 200
    assert api.get(f"/controller/network/{NETWORK_ID}/member").status_code == 503


def test_clear_faults_removes_them(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.inject(Fault.status(503), times=5)

    emulator.clear_faults()

    assert api.get("/status").status_code == 200


def test_reset_fault_drops_request(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.inject(Fault.reset(), method="POST")

    with pytest.raises(httpx.TransportError):
        api.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", json={"authorized": True})

    assert emulator.get_member(NETWORK_ID, "a1b2c3d4e5") is None
    assert emulator.requests[-1].status == 0
    assert api.get("/status").status_code == 200


def test_delay_fault_responds_late(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.inject(Fault.delay(0.3))

    started = time.monotonic()
    response = api.get("/status")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.3
    assert emulator.requests[-1].status == 200


def test_truncate_fault_cuts_body(emulator: ControllerEmulator, api: httpx.Client) -> None:
    emulator.inject(Fault.truncate(), method="POST")

    with pytest.raises(httpx.RemoteProtocolError):
        api.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", json={"authorized": True})

    assert emulator.get_member(NETWORK_ID, "a1b2c3d4e5")["authorized"] is True
    assert emulator.requests[-1].status == 0


def test_fault_invalid_arguments_raise(emulator: ControllerEmulator) -> None:
    with pytest.raises(ValueError, match="status"):
        Fault.status(99)
    with pytest.raises(ValueError, match="delay"):
        Fault.delay(-1)
    with pytest.raises(ValueError, match="times"):
        emulator.inject(Fault.reset(), times=0)


# Connections


def test_client_connection_close_is_honoured(api: httpx.Client) -> None:
    response = api.get("/status", headers={"Connection": "close"})

    assert response.headers["connection"] == "close"


def test_reused_connection_fast_by_default(api: httpx.Client) -> None:
    # With Nagle's algorithm and delayed ACKs each request here would take about 40 ms.
    api.get("/status")
    started = time.monotonic()
    for _ in range(20):
        api.get("/controller")
    elapsed = time.monotonic() - started

    assert elapsed < 0.4


def test_reused_connection_delay(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(reused_connection_delay=0.5)

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        started = time.monotonic()
        client.get("/status")
        first = time.monotonic() - started
        started = time.monotonic()
        client.get("/status")
        reused = time.monotonic() - started

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN, "Connection": "close"}) as client:
        started = time.monotonic()
        client.get("/status")
        client.get("/status")
        fresh_pair = time.monotonic() - started

    assert first < 0.4
    assert reused >= 0.5
    assert fresh_pair < 0.8
    assert [r.connection_request_number for r in emulator.requests] == [1, 2, 1, 1]


def read_one_response(connection: socket.socket) -> bytes:
    """Read one HTTP response with a Content-Length from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += connection.recv(65536)
    return data


def test_idle_connection_closes_after_5_seconds(emulator: ControllerEmulator) -> None:
    host, port = "127.0.0.1", emulator.port
    with socket.create_connection((host, port), timeout=10) as connection:
        request = f"GET /status HTTP/1.1\r\nHost: {host}\r\nX-ZT1-Auth: {EMULATOR_TOKEN}\r\n\r\n"
        connection.sendall(request.encode("ascii"))
        first_reply = read_one_response(connection)
        started = time.monotonic()
        closed = connection.recv(65536)
        idle = time.monotonic() - started

    assert first_reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Keep-Alive: timeout=5, max=5" in first_reply
    assert closed == b""
    assert 4.5 <= idle <= 7


# Versions and builds


@pytest.mark.parametrize("version", ["1.12.0", "1.12.1"])
def test_member_list_array_on_1_12_early(make_emulator: MakeEmulator, version: str) -> None:
    emulator = make_emulator(version=version)
    emulator.create_network(NETWORK_ID)
    emulator.put_member(NETWORK_ID, "a1b2c3d4e5", authorized=True)
    emulator.put_member(NETWORK_ID, "0badc0ffee", authorized=False)

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        members = client.get(f"/controller/network/{NETWORK_ID}/member")
        bulk = client.get(f"/unstable/controller/network/{NETWORK_ID}/member")

    assert members.json() == [{"0badc0ffee": 1}, {"a1b2c3d4e5": 1}]
    assert bulk.status_code == 404


@pytest.mark.parametrize("version", ["1.12.2", "1.10.6"])
def test_member_map_without_unstable(make_emulator: MakeEmulator, version: str) -> None:
    emulator = make_emulator(version=version)
    emulator.create_network(NETWORK_ID)
    emulator.put_member(NETWORK_ID, "a1b2c3d4e5", authorized=True)

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        members = client.get(f"/controller/network/{NETWORK_ID}/member")
        bulk = client.get(f"/unstable/controller/network/{NETWORK_ID}/member")
        networks = client.get("/unstable/controller/network")

    assert members.json() == {"a1b2c3d4e5": 1}
    assert bulk.status_code == 404
    assert networks.status_code == 404


@pytest.mark.parametrize("version", ["1.14.2", "1.16.0"])
def test_newer_versions_have_unstable(make_emulator: MakeEmulator, version: str) -> None:
    emulator = make_emulator(version=version)
    emulator.create_network(NETWORK_ID)

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        bulk = client.get(f"/unstable/controller/network/{NETWORK_ID}/member")

    assert bulk.json() == {"data": [], "meta": {"authorizedCount": 0, "totalCount": 0}}


def test_status_reflects_version(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(version="1.12.2")

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        status = client.get("/status").json()

    assert status["version"] == "1.12.2"
    assert status["versionMajor"] == 1
    assert status["versionMinor"] == 12
    assert status["versionRev"] == 2


def test_1_10_malformed_body_is_400(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(version="1.10.6")
    emulator.create_network(NETWORK_ID)

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        response = client.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", content=b"not json")

    assert response.status_code == 400
    assert response.json() == {"message": "body JSON is invalid"}


def test_1_10_non_object_body_is_400(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(version="1.10.6")
    emulator.create_network(NETWORK_ID)

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        response = client.post(f"/controller/network/{NETWORK_ID}/member/a1b2c3d4e5", content=b"[1]")

    assert response.status_code == 400
    assert response.json() == {"message": "body JSON is invalid"}


def test_1_10_lowercases_id_and_ignores_name(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(version="1.10.6")
    emulator.create_network(NETWORK_ID)

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        member = client.post(
            f"/controller/network/{NETWORK_ID}/member/ABCDEF0123", json={"authorized": True, "name": "x"}
        ).json()

    assert member["id"] == "abcdef0123"
    assert "name" not in member


def test_1_12_1_controller_info_is_404(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(version="1.12.1")

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        info = client.get("/controller")
        networks = client.get("/controller/network")

    assert info.status_code == 404
    assert networks.status_code == 200


def test_1_12_0_network_update_is_404(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(version="1.12.0")

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        update = client.post(f"/controller/network/{NETWORK_ID}", json={"name": "x"})
        create = client.post("/controller/network/3233204505______", json={"name": "x"})

    assert update.status_code == 404
    assert create.status_code == 200


def test_1_12_member_post_unknown_network_is_200(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(version="1.12.2")

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        response = client.post("/controller/network/3233204505000009/member/a1b2c3d4e5", json={})

    assert response.status_code == 200
    assert emulator.network_ids() == []


@pytest.mark.parametrize(
    "path",
    ["/controller", "/controller/network", f"/controller/network/{NETWORK_ID}", "/unstable/controller/network"],
)
def test_build_without_controller_is_404(make_emulator: MakeEmulator, path: str) -> None:
    emulator = make_emulator(version="1.16.0", has_controller=False)
    emulator.create_network(NETWORK_ID)

    with client_for(emulator, headers={"X-ZT1-Auth": EMULATOR_TOKEN}) as client:
        status = client.get("/status")
        response = client.get(path)

    assert status.status_code == 200
    assert status.json()["version"] == "1.16.0"
    assert response.status_code == 404
    assert response.content == b""


# Authentication


@pytest.mark.parametrize("path", ["/status", "/controller/network", "/unstable/controller/network", "/nope"])
def test_missing_token_is_401(emulator: ControllerEmulator, path: str) -> None:
    with client_for(emulator) as client:
        response = client.get(path)

    assert response.status_code == 401
    assert response.content == b"{}"
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "headers",
    [
        {"x-zt1-auth": EMULATOR_TOKEN},
        {"Authorization": f"Bearer {EMULATOR_TOKEN}"},
        {"Authorization": f"bearer {EMULATOR_TOKEN}"},
        {"Authorization": f"BEARER {EMULATOR_TOKEN}"},
    ],
    ids=["lower-case-header", "bearer", "bearer-lower", "bearer-upper"],
)
def test_token_header_variants(emulator: ControllerEmulator, headers: dict[str, str]) -> None:
    with client_for(emulator, headers=headers) as client:
        assert client.get("/status").status_code == 200


def test_query_token_accepted(emulator: ControllerEmulator) -> None:
    with client_for(emulator) as client:
        response = client.get("/status", params={"auth": EMULATOR_TOKEN})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"X-ZT1-Auth": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {EMULATOR_TOKEN}"},
        {"Authorization": EMULATOR_TOKEN},
    ],
    ids=["wrong-header", "wrong-bearer", "basic", "no-scheme"],
)
def test_wrong_token_is_401(emulator: ControllerEmulator, headers: dict[str, str]) -> None:
    with client_for(emulator, headers=headers) as client:
        response = client.get("/status")

    assert response.status_code == 401
    assert response.json() == {}


def test_wrong_header_beats_right_query(emulator: ControllerEmulator) -> None:
    with client_for(emulator, headers={"X-ZT1-Auth": "wrong"}) as client:
        response = client.get("/status", params={"auth": EMULATOR_TOKEN})

    assert response.status_code == 401


def test_1_10_rejects_bearer(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(version="1.10.6")

    with client_for(emulator, headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"}) as client:
        response = client.get("/status")

    assert response.status_code == 401
