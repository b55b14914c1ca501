"""The emulated controller of a benchmark case: seeding, request counts, checks and latency calibration."""

from __future__ import annotations

import re
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.dataset import CONTROLLER_ADDRESS, Dataset
from ztctl.controller.emulator import ControllerEmulator, RecordedRequest

REUSED_CONNECTION_DELAY = 0.031
"""Seconds the emulator waits before each request after the first on a kept-alive connection.

A real zerotier-one 1.14.1 controller on loopback took 40 to 44 ms for such a
request and 0.2 to 0.5 ms for the first one on a connection. Through httpx's
default pool that averaged 26.4 ms, because the controller closes a connection
after 5 requests.
On the 2-core machine of docs/benchmarks.md, ``calibrate`` measured 26.3 ms per
request with 0.031 s and 28.5 ms with 0.033 s, because the emulator adds about
1.5 ms of its own to each request. Each run measures it again and stores it in
its results.
"""

REQUEST_KINDS = ("list", "bulk_list", "member_get", "post", "delete", "network_get", "other")

_NETWORK = r"[0-9a-fA-F]{16}"
_NODE = r"[0-9a-fA-F]{10}"
_PATTERNS = (
    ("list", "GET", re.compile(rf"/controller/network/{_NETWORK}/member/?")),
    ("bulk_list", "GET", re.compile(rf"/unstable/controller/network/{_NETWORK}/member/?")),
    ("member_get", "GET", re.compile(rf"/controller/network/{_NETWORK}/member/{_NODE}")),
    ("post", "POST", re.compile(rf"/controller/network/{_NETWORK}/member/{_NODE}")),
    ("delete", "DELETE", re.compile(rf"/controller/network/{_NETWORK}/member/{_NODE}")),
    ("network_get", "GET", re.compile(rf"/controller/network/{_NETWORK}")),
)


def new_token() -> str:
    return secrets.token_hex(12)


def start_controller(dataset: Dataset, token: str, *, reused_connection_delay: float) -> ControllerEmulator:
    """Start an emulator on 127.0.0.1 holding the data set's controller side, before any run."""
    emulator = ControllerEmulator(
        token=token,
        address=CONTROLLER_ADDRESS,
        host="127.0.0.1",
        reused_connection_delay=reused_connection_delay,
    )
    created_at_ms = int((dataset.generated_at.timestamp() - 10 * 86400) * 1000)
    for network in dataset.networks:
        emulator.create_network(network.network_id, name=network.name, private=True)
        for member in network.members:
            if member.on_controller:
                emulator.put_member(
                    network.network_id,
                    member.node_id,
                    authorized=member.controller_authorized,
                    ip_assignments=[member.ip_address],
                    created_at_ms=created_at_ms,
                )
    return emulator.start()


@dataclass(frozen=True)
class RequestCounts:
    by_kind: dict[str, int]
    connections: int
    """TCP connections that carried the requests."""
    reused: int
    """Requests sent on a connection that had carried one before: each waits ``reused_connection_delay``."""
    failed: int
    """Requests that got a status of 400 or more, or were cut off (status 0)."""

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    @property
    def writes(self) -> int:
        return self.by_kind["post"] + self.by_kind["delete"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "by_kind": self.by_kind,
            "total": self.total,
            "writes": self.writes,
            "connections": self.connections,
            "reused_connection_requests": self.reused,
            "failed": self.failed,
        }


def count_requests(requests: Iterable[RecordedRequest]) -> RequestCounts:
    kinds: Counter[str] = Counter()
    connections = set()
    reused = failed = 0
    for request in requests:
        kinds[classify(request.method, request.path)] += 1
        connections.add(request.connection_id)
        reused += request.connection_request_number > 1
        failed += request.status == 0 or request.status >= 400
    by_kind = {kind: kinds.get(kind, 0) for kind in REQUEST_KINDS}
    return RequestCounts(by_kind, len(connections), reused, failed)


def classify(method: str, path: str) -> str:
    for kind, kind_method, pattern in _PATTERNS:
        if method == kind_method and pattern.fullmatch(path):
            return kind
    return "other"


def count_mismatches(emulator: ControllerEmulator, dataset: Dataset) -> int:
    """Count members whose authorization on the controller differs from what the portal wants.

    An active member missing from the controller counts as a mismatch; an
    inactive one that is missing does not, because it has no access.
    """
    mismatches = 0
    for network in dataset.networks:
        served = {node_id.lower(): record for node_id, record in emulator.members(network.network_id).items()}
        for member in network.members:
            record = served.get(member.node_id)
            authorized = bool(record["authorized"]) if record is not None else False
            mismatches += authorized != member.should_be_authorized
    return mismatches


def calibrate(reused_connection_delay: float, *, requests: int = 100) -> dict[str, float]:
    """Time ``GET /status`` through a pooled httpx client and with ``Connection: close``, in ms per request."""
    emulator = ControllerEmulator(
        token=new_token(), host="127.0.0.1", reused_connection_delay=reused_connection_delay
    ).start()
    try:
        headers = {"X-ZT1-Auth": emulator.token}
        with httpx.Client(base_url=emulator.url, headers=headers) as pooled:
            pooled_ms = _time_requests(pooled, requests)
        fresh_limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=emulator.url, headers={**headers, "Connection": "close"}, limits=fresh_limits) as fresh:
            fresh_ms = _time_requests(fresh, requests)
    finally:
        emulator.stop()
    return {
        "reused_connection_delay_s": reused_connection_delay,
        "requests_each": requests,
        "pooled_ms_per_request": round(pooled_ms, 2),
        "fresh_connection_ms_per_request": round(fresh_ms, 2),
    }


def _time_requests(client: httpx.Client, count: int) -> float:
    durations = []
    for _ in range(count):
        start = time.perf_counter()
        client.get("/status").raise_for_status()
        durations.append(time.perf_counter() - start)
    return statistics.fmean(durations) * 1000
