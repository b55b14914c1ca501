"""Rate limiting, authentication and routing of the emulated ZeroTier Central API v1.

``CentralRoutes.handle`` turns one request into a ``Response``. It counts the
request against the rate limit first (429 when the window is full), then checks
the token (401 without a valid ``Authorization: token`` or ``bearer`` header),
then routes under the base path. A read-only token gets 403 on every POST and
DELETE. Error responses have empty bodies, because the specification documents
none, except 400, which carries a JSON ``message`` to help find the fault.
"""

from __future__ import annotations

import collections
import email.utils
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .central_records import InvalidMemberBody, permissions, status_record
from .central_state import CentralState
from .routes import Response, empty_response, json_response

WINDOW_SECONDS = 1.0

_NETWORK = "([0-9a-fA-F]{16})"
_NODE = "([0-9a-fA-F]{10})"


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[[re.Match[str], bytes], Response]
    writes: bool = False


class RequestRateWindow:
    """A sliding window of one second that admits at most ``limit`` requests; None admits all.

    It also records when each request arrived, for tests that check a client's rate.
    """

    def __init__(self, limit: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"invalid rate limit {limit!r}: expected 1 or more requests per second, or None")
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._admitted: collections.deque[float] = collections.deque()
        self._arrivals: list[float] = []

    def admit(self) -> tuple[bool, tuple[tuple[str, str], ...]]:
        """Count one request; return whether it is admitted and the rate-limit headers to send."""
        with self._lock:
            now = self._clock()
            self._arrivals.append(now)
            if self.limit is None:
                return True, ()
            while self._admitted and self._admitted[0] <= now - WINDOW_SECONDS:
                self._admitted.popleft()
            admitted = len(self._admitted) < self.limit
            if admitted:
                self._admitted.append(now)
            seconds_to_reset = self._admitted[0] + WINDOW_SECONDS - now
            headers = [
                ("X-Ratelimit-Limit", str(self.limit)),
                ("X-Ratelimit-Remaining", str(self.limit - len(self._admitted))),
                ("X-Ratelimit-Reset", _reset_date(seconds_to_reset)),
            ]
            if not admitted:
                headers.append(("Retry-After", str(max(1, math.ceil(seconds_to_reset)))))
            return admitted, tuple(headers)

    def arrivals(self) -> list[float]:
        with self._lock:
            return list(self._arrivals)

    def clear_arrivals(self) -> None:
        with self._lock:
            self._arrivals.clear()


def _reset_date(seconds_from_now: float) -> str:
    """Format the end of the window as an HTTP date in whole seconds, rounded up, with the zone ``UTC``."""
    moment = math.ceil(time.time() + seconds_from_now)
    return email.utils.formatdate(moment, usegmt=True).replace("GMT", "UTC")


class CentralRoutes:
    """The API of one emulated Central account: rate limit, token check, route table and handlers."""

    def __init__(
        self,
        state: CentralState,
        token: str,
        *,
        base_path: str,
        version: str,
        rate_window: RequestRateWindow,
    ) -> None:
        self.state = state
        self._token = token.encode("utf-8")
        self.base_path = base_path
        self.version = version
        self.rate_window = rate_window
        self.token_can_write = True
        """False makes the token read-only: every POST and DELETE gets 403."""
        self.port = 0
        self._started = time.monotonic()
        self._routes = self._build_routes()

    def _build_routes(self) -> list[_Route]:
        member = f"/network/{_NETWORK}/member/{_NODE}"
        table = [
            _Route("GET", re.compile("/status"), self._get_status),
            _Route("GET", re.compile("/network"), self._list_networks),
            _Route("GET", re.compile(f"/network/{_NETWORK}"), self._get_network),
            _Route("GET", re.compile(f"/network/{_NETWORK}/member"), self._list_members),
            _Route("GET", re.compile(member), self._get_member),
            _Route("POST", re.compile(member), self._post_member, writes=True),
            _Route("DELETE", re.compile(member), self._delete_member, writes=True),
        ]
        return table

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Build the response to one request. ``headers`` maps lower-case header names to values."""
        admitted, limit_headers = self.rate_window.admit()
        if not admitted:
            response = empty_response(429)
        elif not self.is_authorized(headers):
            response = empty_response(401)
        else:
            response = self._route(method, path, body)
        return Response(
            response.status, response.body, response.content_type, response.headers + limit_headers
        )

    def is_authorized(self, headers: Mapping[str, str]) -> bool:
        """Check ``Authorization: token <t>``; Central also accepts the scheme ``bearer``, in any case."""
        parts = headers.get("authorization", "").split(" ")
        if len(parts) != 2 or parts[0].lower() not in ("token", "bearer"):
            return False
        return secrets.compare_digest(parts[1].encode("utf-8"), self._token)

    def redact_token(self, text: str) -> str:
        """Return ``text`` with every occurrence of the token replaced, for log messages."""
        return text.replace(self._token.decode("utf-8"), "<token>") if self._token else text

    def _route(self, method: str, path: str, body: bytes) -> Response:
        if not path.startswith(self.base_path + "/"):
            return empty_response(404)
        relative = path[len(self.base_path) :]
        route_method = "GET" if method == "HEAD" else method
        for route in self._routes:
            match = route.pattern.fullmatch(relative)
            if match is None or route.method != route_method:
                continue
            if route.writes and not self.token_can_write:
                return empty_response(403)
            return route.handler(match, body)
        return empty_response(404)

    # Handlers

    def _get_status(self, match: re.Match[str], body: bytes) -> Response:
        uptime_ms = int((time.monotonic() - self._started) * 1000)
        record = status_record(
            now_ms=self.state.clock(),
            uptime_ms=uptime_ms,
            version=self.version,
            can_write=self.token_can_write,
        )
        return json_response(200, record)

    def _list_networks(self, match: re.Match[str], body: bytes) -> Response:
        return json_response(200, [self._with_permissions(network) for network in self.state.list_networks()])

    def _get_network(self, match: re.Match[str], body: bytes) -> Response:
        network = self.state.get_network(match.group(1))
        return json_response(200, self._with_permissions(network)) if network else empty_response(404)

    def _list_members(self, match: re.Match[str], body: bytes) -> Response:
        members = self.state.list_members(match.group(1))
        return json_response(200, members) if members is not None else empty_response(404)

    def _get_member(self, match: re.Match[str], body: bytes) -> Response:
        member = self.state.get_member(match.group(1), match.group(2))
        return json_response(200, member) if member is not None else empty_response(404)

    def _post_member(self, match: re.Match[str], body: bytes) -> Response:
        if not self.state.has_network(match.group(1)):
            return empty_response(404)
        try:
            parsed = json.loads(body.decode("utf-8")) if body.strip() else None
        except (UnicodeDecodeError, ValueError):
            return json_response(400, {"message": "the request body is not valid JSON"})
        try:
            member = self.state.post_member(match.group(1), match.group(2), parsed)
        except InvalidMemberBody as error:
            return json_response(400, {"message": str(error)})
        return json_response(200, member) if member is not None else empty_response(404)

    def _delete_member(self, match: re.Match[str], body: bytes) -> Response:
        deleted = self.state.delete_member(match.group(1), match.group(2))
        return empty_response(200) if deleted else empty_response(404)

    def _with_permissions(self, network: dict[str, Any]) -> dict[str, Any]:
        network["permissions"] = {self.state.owner_id: permissions(self.token_can_write)}
        return network
