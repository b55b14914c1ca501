"""Replay every recording of a real ``zerotier-one`` 1.14.1 controller against the emulator.

The cassettes were recorded in one session against one controller whose state
carried over from file to file. So they are replayed in recording order, which
is derived from the times in their responses, against one emulator. It is
seeded with what existed before the first recording: node 3233204505 with
network 32332045057ef094. Each cassette in the directory is its own test case,
so a new cassette that the emulator responds to differently fails.

Per request the test compares:

- the status code;
- the content type, present or absent, and its value;
- an empty body against an empty body;
- the JSON shape: the same kinds of values, key sets and key order, with
  arrays compared element by element and members paired by ``id``;
- the values that depend on neither time nor randomness: ``VALUE_KEYS``, the
  member map's revisions, the network ID list, and whether a time is 0.

Network IDs that the recorded controller picked at random are mapped to the
ones the emulator picked, in later request paths and in expected values.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
import yaml

from ztctl.controller.emulator import ControllerEmulator

CASSETTE_DIR = Path(__file__).resolve().parents[1] / "cassettes" / "zerotier-one-1.14.1"
CASSETTE_NAMES = sorted(path.name for path in CASSETTE_DIR.glob("*.yaml"))

RECORDED_ADDRESS = "3233204505"
NETWORKS_BEFORE_RECORDING = ("32332045057ef094",)
TOKEN = "conformance-token"
WRONG_TOKEN = "not-the-token"

VALUE_KEYS = frozenset(
    {
        # members
        "activeBridge", "address", "authenticationExpiryTime", "authorized", "capabilities",
        "id", "ipAssignments", "lastAuthorizedCredential", "lastAuthorizedCredentialType",
        "name", "noAutoAssignIps", "nwid", "objtype", "remoteTraceLevel", "remoteTraceTarget",
        "revision", "ssoExempt", "tags", "vMajor", "vMinor", "vProto", "vRev",
        # networks
        "dns", "enableBroadcast", "ipAssignmentPools", "mtu", "multicastLimit", "private",
        "routes", "rules", "v4AssignMode", "v6AssignMode",
        # node, controller, lists and errors
        "apiVersion", "controller", "databaseReady", "version", "versionBuild", "versionMajor",
        "versionMinor", "versionRev", "authorizedCount", "totalCount", "networkCount",
        "authorizedMemberCount", "totalMemberCount", "error",
    }
)  # fmt: skip
"""Keys whose values must be equal, wherever they appear in a body."""

TIME_KEYS = frozenset({"clock", "creationTime", "lastAuthorizedTime", "lastDeauthorizedTime"})
"""Millisecond times: only whether they are 0 ("never") is compared."""

RANDOM_NETWORK_PATH = re.compile(r"/controller/network(/[0-9a-fA-F]{10}______)?")
NODE_ID = re.compile(r"[0-9a-fA-F]{10}")


# Cassettes


@dataclass(frozen=True)
class Exchange:
    """One recorded request and its response."""

    method: str
    uri: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int
    response_headers: dict[str, str]
    response_body: bytes


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _first_values(headers: dict[str, list[str]] | None, *, lower: bool) -> dict[str, str]:
    result = {}
    for name, values in (headers or {}).items():
        value = values[0] if isinstance(values, list) else values
        result[name.lower() if lower else name] = str(value)
    return result


def load_cassette(path: Path) -> list[Exchange]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    exchanges = []
    for interaction in document["interactions"]:
        request, response = interaction["request"], interaction["response"]
        exchanges.append(
            Exchange(
                method=request["method"],
                uri=request["uri"],
                request_headers=_first_values(request.get("headers"), lower=False),
                request_body=_as_bytes(request.get("body")),
                status=response["status"]["code"],
                response_headers=_first_values(response.get("headers"), lower=True),
                response_body=_as_bytes((response.get("body") or {}).get("string")),
            )
        )
    return exchanges


def _walk_times(value: Any) -> Iterator[int]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in TIME_KEYS and isinstance(item, int) and not isinstance(item, bool) and item > 0:
                yield item
            yield from _walk_times(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_times(item)


def latest_time_ms(exchanges: list[Exchange]) -> int | None:
    """Return the latest time in any response body, or ``None`` if there is none.

    Every cassette that creates or reads something fresh contains a time from
    its own recording, later than every time in the cassettes recorded before
    it, so sorting by the latest time gives the recording order.
    """
    times = []
    for exchange in exchanges:
        try:
            times.extend(_walk_times(json.loads(exchange.response_body)))
        except ValueError:
            continue
    return max(times, default=None)


# Comparison


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def compare_json(expected: Any, actual: Any, where: str) -> list[str]:
    """List the differences in shape and deterministic values between two JSON values."""
    if json_kind(expected) != json_kind(actual):
        return [f"{where}: {json_kind(actual)} where the recording has {json_kind(expected)}"]
    if isinstance(expected, dict):
        return _compare_objects(expected, actual, where)
    if isinstance(expected, list):
        return _compare_arrays(expected, actual, where)
    return []


def _is_member_revision_map(value: dict[str, Any]) -> bool:
    return bool(value) and all(NODE_ID.fullmatch(key) for key in value)


def _compare_objects(expected: dict[str, Any], actual: dict[str, Any], where: str) -> list[str]:
    problems = []
    missing = sorted(expected.keys() - actual.keys())
    unexpected = sorted(actual.keys() - expected.keys())
    if missing:
        problems.append(f"{where}: missing keys {missing}")
    if unexpected:
        problems.append(f"{where}: unexpected keys {unexpected}")
    if not missing and not unexpected and list(expected) != list(actual):
        problems.append(f"{where}: keys in order {list(actual)} where the recording has {list(expected)}")

    revision_map = _is_member_revision_map(expected)
    for key in [key for key in expected if key in actual]:
        child = f"{where}.{key}"
        expected_value, actual_value = expected[key], actual[key]
        if (key in VALUE_KEYS or revision_map) and expected_value != actual_value:
            problems.append(f"{child}: {actual_value!r} where the recording has {expected_value!r}")
        elif key in TIME_KEYS and isinstance(expected_value, int) and isinstance(actual_value, int):
            if (expected_value == 0) != (actual_value == 0):
                problems.append(f"{child}: {actual_value} where the recording has {expected_value}")
        problems.extend(compare_json(expected_value, actual_value, child))
    return problems


def _compare_arrays(expected: list[Any], actual: list[Any], where: str) -> list[str]:
    problems = []
    if len(expected) != len(actual):
        problems.append(f"{where}: {len(actual)} items where the recording has {len(expected)}")

    # Objects with an ID (members in the bulk list) come in hash-table order,
    # so pair them by ID; anything else is paired by position.
    if all(isinstance(item, dict) and "id" in item for item in expected + actual):
        actual_by_id = {item["id"]: item for item in actual}
        for item in expected:
            if item["id"] not in actual_by_id:
                problems.append(f"{where}: no item with id {item['id']!r}")
                continue
            problems.extend(compare_json(item, actual_by_id[item["id"]], f"{where}[id={item['id']}]"))
        return problems
    for index, (expected_item, actual_item) in enumerate(zip(expected, actual, strict=False)):
        problems.extend(compare_json(expected_item, actual_item, f"{where}[{index}]"))
    return problems


def map_ids(value: Any, id_map: dict[str, str]) -> Any:
    """Replace recorded random network IDs by the emulator's, in strings and object keys."""
    if isinstance(value, str):
        for recorded, emulated in id_map.items():
            value = value.replace(recorded, emulated)
        return value
    if isinstance(value, list):
        return [map_ids(item, id_map) for item in value]
    if isinstance(value, dict):
        return {map_ids(key, id_map): map_ids(item, id_map) for key, item in value.items()}
    return value


def compare_response(exchange: Exchange, response: httpx.Response, id_map: dict[str, str]) -> list[str]:
    """List how the emulator's response differs from the recorded one."""
    if response.status_code != exchange.status:
        return [f"status {response.status_code} where the recording has {exchange.status}"]

    problems = []
    expected_type = exchange.response_headers.get("content-type")
    actual_type = response.headers.get("content-type")
    if expected_type != actual_type:
        problems.append(f"content type {actual_type!r} where the recording has {expected_type!r}")

    if not exchange.response_body or not response.content:
        if exchange.response_body != response.content:
            problems.append(f"body {response.content[:80]!r} where the recording has {exchange.response_body[:80]!r}")
        return problems

    try:
        expected = map_ids(json.loads(exchange.response_body), id_map)
    except ValueError:
        if response.content != exchange.response_body:
            problems.append("non-JSON body differs from the recording")
        return problems
    actual = response.json()
    problems.extend(compare_json(expected, actual, "body"))
    # A top-level array of strings is the network ID list: compare its values too.
    if isinstance(expected, list) and all(isinstance(item, str) for item in expected):
        if isinstance(actual, list) and sorted(map(str, actual)) != sorted(expected):
            problems.append(f"body: {actual!r} where the recording has {expected!r}")
    return problems


# Replay


class Replayer:
    """Sends recorded requests to one emulator, remembering the random network IDs it picked."""

    def __init__(self, emulator: ControllerEmulator) -> None:
        self.emulator = emulator
        self.id_map: dict[str, str] = {}

    def replay(self, exchanges: list[Exchange]) -> list[str]:
        problems = []
        with httpx.Client(timeout=10) as client:
            for number, exchange in enumerate(exchanges, 1):
                label = f"request {number} ({exchange.method} {urlsplit(exchange.uri).path})"
                try:
                    response = client.send(self._build_request(client, exchange))
                except httpx.HTTPError as error:
                    problems.append(f"{label}: {type(error).__name__}: {error}")
                    continue
                self._learn_random_network_id(exchange, response)
                problems.extend(f"{label}: {problem}" for problem in compare_response(exchange, response, self.id_map))
        return problems

    def _build_request(self, client: httpx.Client, exchange: Exchange) -> httpx.Request:
        # Requests that got 401 in the recording were sent with a wrong token.
        token = WRONG_TOKEN if exchange.status == 401 else TOKEN
        target = urlsplit(exchange.uri)
        path = map_ids(target.path, self.id_map)
        query = [(name, token if name == "auth" else value) for name, value in parse_qsl(target.query, keep_blank_values=True)]
        url = f"{self.emulator.url}{path}" + (f"?{urlencode(query)}" if query else "")

        headers = {}
        for name, value in exchange.request_headers.items():
            if name.lower() == "x-zt1-auth":
                headers[name] = token
            elif name.lower() == "authorization":
                headers[name] = f"{value.split(' ', 1)[0]} {token}"
            elif name.lower() == "content-type":
                headers[name] = value
        body = map_ids(exchange.request_body.decode("utf-8"), self.id_map).encode("utf-8")
        return client.build_request(exchange.method, url, headers=headers, content=body)

    def _learn_random_network_id(self, exchange: Exchange, response: httpx.Response) -> None:
        if exchange.method != "POST" or exchange.status != 200 or response.status_code != 200:
            return
        if RANDOM_NETWORK_PATH.fullmatch(urlsplit(exchange.uri).path) is None:
            return
        self.id_map[json.loads(exchange.response_body)["id"]] = response.json()["id"]


def replay_in_recording_order(emulator: ControllerEmulator, paths: list[Path]) -> dict[str, list[str]]:
    """Replay cassettes in recording order against ``emulator``; map each file name to its problems."""
    results: dict[str, list[str]] = {}
    timed = []
    for path in paths:
        exchanges = load_cassette(path)
        latest = latest_time_ms(exchanges)
        if latest is None:
            results[path.name] = [f"cannot place {path.name} in recording order: no response holds a time"]
        else:
            timed.append((latest, path.name, exchanges))

    replayer = Replayer(emulator)
    for _, name, exchanges in sorted(timed):
        results[name] = replayer.replay(exchanges)
    return results


def seeded_emulator(**kwargs: Any) -> ControllerEmulator:
    """An emulator in the state the recorded controller was in before the first recording."""
    emulator = ControllerEmulator(token=TOKEN, address=RECORDED_ADDRESS, version="1.14.1", **kwargs)
    for network_id in NETWORKS_BEFORE_RECORDING:
        emulator.create_network(network_id)
    return emulator


@pytest.fixture(scope="module")
def replay_results() -> Iterator[dict[str, list[str]]]:
    with seeded_emulator() as emulator:
        yield replay_in_recording_order(emulator, [CASSETTE_DIR / name for name in CASSETTE_NAMES])


# Tests


def test_cassette_directory_has_recordings() -> None:
    assert CASSETTE_NAMES, f"no cassettes found in {CASSETTE_DIR}"


@pytest.mark.parametrize("cassette_name", CASSETTE_NAMES)
def test_emulator_matches_cassette(cassette_name: str, replay_results: dict[str, list[str]]) -> None:
    problems = replay_results[cassette_name]
    assert problems == [], f"{cassette_name}:\n" + "\n".join(problems)


def test_keepalive_limit_matches_recording() -> None:
    exchanges = load_cassette(CASSETTE_DIR / "keepalive_many_requests.yaml")
    recorded_header = next(e.response_headers["keep-alive"] for e in exchanges if "keep-alive" in e.response_headers)
    max_requests = int(re.search(r"max=(\d+)", recorded_header).group(1))

    with seeded_emulator() as emulator, httpx.Client(headers={"X-ZT1-Auth": TOKEN}) as client:
        responses = [client.get(f"{emulator.url}/controller") for _ in exchanges]
        served = emulator.requests

    assert len(responses) == 12
    for number, response in enumerate(responses, 1):
        assert response.status_code == 200, f"response {number}"
        if number % max_requests == 0:
            assert response.headers.get("connection") == "close", f"response {number}"
            assert "keep-alive" not in response.headers, f"response {number}"
        else:
            assert response.headers.get("keep-alive") == recorded_header, f"response {number}"
            assert "connection" not in response.headers, f"response {number}"
    requests_per_connection = Counter(request.connection_id for request in served)
    assert sorted(requests_per_connection.values(), reverse=True) == [5, 5, 2]


def test_keepalive_recording_never_exceeds_limit() -> None:
    exchanges = load_cassette(CASSETTE_DIR / "keepalive_many_requests.yaml")
    max_requests = 5
    since_close = 0
    for exchange in exchanges:
        since_close += 1
        has_close = exchange.response_headers.get("connection") == "close"
        has_keep_alive = exchange.response_headers.get("keep-alive") == f"timeout=5, max={max_requests}"
        assert has_close != has_keep_alive
        assert since_close <= max_requests
        if has_close:
            since_close = 0


def test_recording_order_uses_latest_time() -> None:
    def exchange(body: dict[str, Any]) -> Exchange:
        return Exchange("GET", "http://127.0.0.1/x", {}, b"", 200, {}, json.dumps(body).encode())

    early = [exchange({"creationTime": 1000, "lastAuthorizedTime": 0})]
    # Reads an old member (time 500) but creates one at 2000: recorded after ``early``.
    late = [exchange({"creationTime": 500}), exchange({"data": [{"creationTime": 2000}]})]

    assert latest_time_ms(early) == 1000
    assert latest_time_ms(late) == 2000
    assert latest_time_ms([exchange({"id": "x"})]) is None


def test_compare_json_reports_shape_and_values() -> None:
    recorded = {"authorized": True, "revision": 2, "creationTime": 5, "ipAssignments": ["10.0.0.1"]}

    assert compare_json(recorded, dict(recorded), "body") == []
    assert compare_json(recorded, {**recorded, "authorized": 1}, "body") == [
        "body.authorized: integer where the recording has boolean"
    ]
    assert compare_json(recorded, {**recorded, "revision": 3}, "body") == [
        "body.revision: 3 where the recording has 2"
    ]
    assert compare_json(recorded, {**recorded, "creationTime": 0}, "body") == [
        "body.creationTime: 0 where the recording has 5"
    ]
    assert compare_json(recorded, {**recorded, "name": "x"}, "body") == ["body: unexpected keys ['name']"]
    assert compare_json([{"id": "a", "x": 1}], [{"id": "b", "x": 1}], "body") == ["body: no item with id 'a'"]


def test_replay_fails_on_unmatched_cassette(tmp_path: Path) -> None:
    # A made-up recording where a trailing slash gets 200. The emulator, like
    # the real 1.14.1 controller, returns 404, so the replay must report it.
    cassette = {
        "version": 1,
        "interactions": [
            {
                "request": {
                    "method": "GET",
                    "uri": "http://127.0.0.1:9993/controller/network/",
                    "body": "",
                    "headers": {"X-ZT1-Auth": ["REDACTED"]},
                },
                "response": {
                    "status": {"code": 200, "message": "OK"},
                    "headers": {"content-type": ["application/json"]},
                    "body": {"string": '{"clock": 1796412574091}'},
                },
            }
        ],
    }
    path = tmp_path / "trailing_slash.yaml"
    path.write_text(yaml.safe_dump(cassette), encoding="utf-8")

    with seeded_emulator() as emulator:
        results = replay_in_recording_order(emulator, [path])

    assert results == {
        "trailing_slash.yaml": ["request 1 (GET /controller/network/): status 404 where the recording has 200"]
    }


def test_replay_reports_cassette_without_times(tmp_path: Path) -> None:
    path = tmp_path / "no_times.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "interactions": []}), encoding="utf-8")

    with seeded_emulator() as emulator:
        results = replay_in_recording_order(emulator, [path])

    assert results == {"no_times.yaml": ["cannot place no_times.yaml in recording order: no response holds a time"]}
