"""ZeroTierOneClient against recordings of a real zerotier-one 1.14.1 controller, replayed with vcrpy.

Requests match on method, URL and JSON body, and each recorded interaction
plays once. A test therefore fails when the client sends a request that is not
in the recording, such as a member path in upper case or a POST it should not
send.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import vcr
from vcr.cassette import Cassette

from ztctl.controller.base import ControllerMember
from ztctl.controller.zerotier_one import ZeroTierOneClient
from ztctl.errors import MemberChanged, MemberNotFound, NetworkNotFound, TokenRejected

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
RECORDED = CASSETTES / "zerotier-one-1.14.1"
DERIVED = CASSETTES / "derived"

URL = "http://127.0.0.1:9993"
TOKEN = "test-token-7f3a9c"
NETWORK = "3233204505122666"
FLEET = "3233204505d21700"
PUBLIC_NETWORK = "3233204505519ec1"

replay = vcr.VCR(
    record_mode="none",
    filter_headers=["X-ZT1-Auth"],
    match_on=["method", "scheme", "host", "port", "path", "query", "body"],
)


class WithoutBulkList(httpx.BaseTransport):
    """Returns 404 for the bulk member list, as zerotier-one before 1.14 does, and replays the rest."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/unstable/"):
            return httpx.Response(404, request=request)
        return self.inner.handle_request(request)


def played(cassette: Cassette, method: str) -> int:
    """Count the recorded interactions with ``method`` that were played back."""
    counts = cassette.play_counts.items()
    return sum(count for index, count in counts if cassette.requests[index].method == method)


@pytest.fixture
def client() -> Iterator[ZeroTierOneClient]:
    zt = ZeroTierOneClient(URL, TOKEN, read_only=False, retries=0, token_source="ZTCTL_TOKEN")
    yield zt
    zt.close()


@pytest.fixture
def client_without_bulk_list() -> Iterator[ZeroTierOneClient]:
    zt = ZeroTierOneClient(
        URL, TOKEN, read_only=False, retries=0, token_source="ZTCTL_TOKEN", transport=WithoutBulkList()
    )
    yield zt
    zt.close()


def test_probe_reads_address_and_versions(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "controller_info.yaml")):
        status = client.probe()

    assert status.address == "3233204505"
    assert status.version == "1.14.1"
    assert status.api_version == 4
    assert status.backend == "zerotier-one"
    assert client.has_bulk_list is True
    assert client.stats.by_kind == {"status": 1, "controller": 1}


def test_list_network_ids_lower_case(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "controller_info.yaml")):
        network_ids = client.list_network_ids()

    assert network_ids == ["32332045057ef094"]
    assert client.stats.by_kind["network_list"] == 1


def test_get_network_private(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "network_create_and_read.yaml")):
        network = client.get_network(NETWORK)

    assert network.id == NETWORK
    assert network.name == "engineering"
    assert network.private is True


def test_get_network_public(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "public_network.yaml")):
        network = client.get_network(PUBLIC_NETWORK.upper())

    assert network.id == PUBLIC_NETWORK
    assert network.name == "public-lab"
    assert network.private is False


def test_list_members_bulk_empty_network(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "network_create_and_read.yaml")) as cassette:
        members = client.list_members(NETWORK)

    assert members == []
    assert client.stats.by_kind == {"bulk_list": 1}
    assert cassette.play_count == 1


def test_list_members_bulk_fifty(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "network_with_50_members.yaml")):
        members = client.list_members(FLEET.upper())

    assert len(members) == 50
    assert sum(member.authorized for member in members) == 33
    assert [member.node_id for member in members] == sorted(member.node_id for member in members)
    assert {member.network_id for member in members} == {FLEET}
    assert client.stats.by_kind == {"bulk_list": 1}
    assert client.has_bulk_list is True
    first = members[0]
    assert first.node_id == "0b89488090"
    assert first.name == "device-00"
    assert first.authorized is False
    assert first.ip_assignments == ("10.200.0.1",)
    assert first.created_at == datetime(2026, 12, 4, 19, 29, 35, 264000, tzinfo=UTC)
    assert first.last_authorized_at is None


def test_list_members_by_revision_fifty(client_without_bulk_list: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "network_with_50_members.yaml")):
        with ZeroTierOneClient(URL, TOKEN, read_only=True) as bulk_client:
            from_bulk_list = bulk_client.list_members(FLEET)
    # The recording contains single GETs of these five members only, so the cache supplies the rest
    # at the revision the plain list states.
    recorded_gets = {"0b89488090", "0dcf81f618", "135914c78f", "18ceff9028", "21129204b8"}
    cached = {member.node_id: member for member in from_bulk_list if member.node_id not in recorded_gets}

    with replay.use_cassette(str(RECORDED / "network_with_50_members.yaml")) as cassette:
        members = client_without_bulk_list.list_members(FLEET, cached=cached)

    assert members == from_bulk_list
    assert client_without_bulk_list.stats.by_kind == {"bulk_list": 1, "list": 1, "member_get": 5}
    assert client_without_bulk_list.has_bulk_list is False
    assert played(cassette, "GET") == 6


def test_list_members_fallback_remembered(client_without_bulk_list: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "network_create_and_read.yaml"), allow_playback_repeats=True):
        first = client_without_bulk_list.list_members(NETWORK)
        second = client_without_bulk_list.list_members(NETWORK)

    assert first == []
    assert second == []
    assert client_without_bulk_list.stats.by_kind == {"bulk_list": 1, "list": 2}


def test_list_members_upper_case_ids_lowered(client_without_bulk_list: ZeroTierOneClient) -> None:
    cached = {
        "00000000ff": _cached_member("00000000ff", revision=1),
        "A1B2C3D4E5": _cached_member("a1b2c3d4e5", revision=4),
    }
    with replay.use_cassette(str(RECORDED / "uppercase_member_id.yaml")):
        members = client_without_bulk_list.list_members(NETWORK, cached=cached)

    assert [member.node_id for member in members] == ["00000000ff", "a1b2c3d4e5", "abcdef0123"]
    assert members[2].authorized is True
    assert client_without_bulk_list.stats.by_kind["member_get"] == 1


def test_get_member_upper_case_id(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "uppercase_member_id.yaml")):
        member = client.get_member(NETWORK, "ABCDEF0123")

    assert member is not None
    assert member.node_id == "abcdef0123"
    assert member.network_id == NETWORK


def test_get_member_fields(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "member_authorize_deauthorize.yaml")):
        member = client.get_member(NETWORK, "a1b2c3d4e5")

    assert member is not None
    assert member.authorized is True
    assert member.active_bridge is False
    assert member.revision == 1
    assert member.name == "laptop-01"
    assert member.created_at == datetime.fromtimestamp(1796412574.362, tz=UTC)
    assert member.last_authorized_at == datetime.fromtimestamp(1796412574.362, tz=UTC)
    assert member.last_deauthorized_at is None
    assert member.ip_assignments == ()


def test_get_member_unknown_is_none(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "errors.yaml")):
        member = client.get_member(NETWORK, "FFFFFFFFFF")

    assert member is None


def test_get_member_active_bridge(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "active_bridge.yaml")):
        member = client.get_member(NETWORK, "b41d9e0001")

    assert member is not None
    assert member.active_bridge is True
    assert member.name == "site-router"


def test_deauthorize_twice_posts_once(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "member_authorize_deauthorize.yaml")) as cassette:
        first = client.deauthorize_member(NETWORK, "a1b2c3d4e5", expected_revision=1)
        second = client.deauthorize_member(NETWORK, "a1b2c3d4e5")

    assert first.authorized is False
    assert first.revision == 3
    assert first.last_deauthorized_at is not None
    assert second.authorized is False
    assert second.revision == first.revision
    assert played(cassette, "POST") == 1
    assert client.stats.by_kind == {"member_get": 2, "deauthorize": 1}


def test_authorize_after_deauthorize(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "member_authorize_deauthorize.yaml")) as cassette:
        client.deauthorize_member(NETWORK, "a1b2c3d4e5")
        member = client.authorize_member(NETWORK, "A1B2C3D4E5", expected_revision=3)

    assert member.authorized is True
    assert member.revision == 4
    assert member.ip_assignments == ("10.147.17.5",)
    assert played(cassette, "POST") == 2
    assert client.stats.by_kind["authorize"] == 1


def test_authorize_authorized_member_no_post(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "member_authorize_deauthorize.yaml")) as cassette:
        member = client.authorize_member(NETWORK, "a1b2c3d4e5")

    assert member.authorized is True
    assert played(cassette, "POST") == 0


def test_deauthorize_stale_revision_no_post(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "member_authorize_deauthorize.yaml")) as cassette:
        with pytest.raises(MemberChanged) as raised:
            client.deauthorize_member(NETWORK, "a1b2c3d4e5", expected_revision=7)

    assert "revision 1, not the expected 7" in str(raised.value)
    assert raised.value.node_id == "a1b2c3d4e5"
    assert played(cassette, "POST") == 0


def test_deauthorize_missing_member_no_post(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "post_creates_missing_member.yaml")) as cassette:
        with pytest.raises(MemberNotFound) as raised:
            client.deauthorize_member(NETWORK, "00000000ff")

    assert raised.value.network_id == NETWORK
    assert raised.value.node_id == "00000000ff"
    assert played(cassette, "GET") == 1
    assert played(cassette, "POST") == 0


def test_delete_then_delete_again(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(DERIVED / "member_delete_after_get.yaml")) as cassette:
        deleted = client.delete_member(NETWORK, "0badc0ffee", expected_revision=1)
        with pytest.raises(MemberNotFound):
            client.delete_member(NETWORK, "0badc0ffee")

    assert deleted.node_id == "0badc0ffee"
    assert deleted.authorized is True
    assert played(cassette, "DELETE") == 1
    assert client.stats.by_kind == {"member_get": 2, "delete": 1}


def test_token_rejected_names_source(client_without_bulk_list: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "errors.yaml")):
        with pytest.raises(TokenRejected) as raised:
            client_without_bulk_list.list_members(NETWORK)

    message = str(raised.value)
    assert "ZTCTL_TOKEN" in message
    assert "HTTP 401" in message
    assert TOKEN not in message
    assert raised.value.hint is not None
    assert "authtoken.secret" in raised.value.hint


def test_unknown_network_not_found(client_without_bulk_list: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "errors.yaml")):
        with pytest.raises(NetworkNotFound) as raised:
            client_without_bulk_list.list_members("3233204505000999")

    assert raised.value.network_id == "3233204505000999"
    assert raised.value.status_code == 404


def test_malformed_ids_not_sent(client: ZeroTierOneClient) -> None:
    with replay.use_cassette(str(RECORDED / "errors.yaml")) as cassette:
        with pytest.raises(ValueError, match="'not-hex-id'"):
            client.get_member(NETWORK, "not-hex-id")
        with pytest.raises(ValueError, match="'a1b2c3d4e'"):
            client.get_member(NETWORK, "a1b2c3d4e")
        with pytest.raises(ValueError, match="'zzzz'"):
            client.get_network("zzzz")

    assert cassette.play_count == 0
    assert client.stats.total == 0


def _cached_member(node_id: str, *, revision: int) -> ControllerMember:
    return ControllerMember(
        network_id=NETWORK, node_id=node_id, authorized=True, active_bridge=False, revision=revision
    )
