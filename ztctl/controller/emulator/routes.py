"""Authentication and routing of the emulated local API, independent of the HTTP server.

``ControllerApi.handle`` turns one request into a ``Response`` the way
``zerotier-one``'s local API does from 1.12.0 (cpp-httplib). The token check
runs before routing and returns 401 ``{}`` on every path. Routes are regular
expressions matched against the whole path, so a trailing slash or an ID of
the wrong length is a 404 with an empty body.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from .flavour import ApiFlavour
from .jsonvalues import InvalidBody, parse_json_body
from .state import ControllerState

JSON_CONTENT_TYPE = "application/json"
CONTROLLER_API_VERSION = 4

_NETWORK = "([0-9a-fA-F]{16})"
_NODE = "([0-9a-fA-F]{10})"

_PLANET_WORLD_ID = 149604618
_PLANET_WORLD_TIMESTAMP = 1644592324813
"""The default planet's world ID and timestamp, as a 1.14.1 node reports them in ``/status``."""


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response before it is written: status, body bytes and content type (if any)."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, payload: Any) -> Response:
    """Serialise like nlohmann/json's ``dump()``: compact, keys sorted, UTF-8 unescaped."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Response(status, text.encode("utf-8"), JSON_CONTENT_TYPE)


def empty_response(status: int) -> Response:
    return Response(status)


Handler = Callable[[re.Match[str], bytes], Response]


@dataclass(frozen=True, slots=True)
class _Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler


class ControllerApi:
    """The local API of one emulated node: token check, route table and handlers."""

    def __init__(self, state: ControllerState, flavour: ApiFlavour, token: str) -> None:
        self.state = state
        self.flavour = flavour
        self._token = token.encode("utf-8")
        self.port = 0
        """The TCP port the node reports as ``primaryPort``; the server sets it once bound."""
        self._routes = self._build_routes()

    def _build_routes(self) -> list[_Route]:
        read, write, delete = frozenset({"GET"}), frozenset({"POST", "PUT"}), frozenset({"DELETE"})
        table: list[tuple[frozenset[str], str, Handler]] = [(read, "/status", self._get_status)]
        if self.flavour.has_controller:
            table += [
                (read, "/controller", self._get_controller),
                (read, "/controller/network", self._list_networks),
                (write, "/controller/network", self._create_random_network),
                (write, f"/controller/network/{_NODE}______", self._create_network_under_address),
                (read, f"/controller/network/{_NETWORK}", self._get_network),
                (write, f"/controller/network/{_NETWORK}", self._post_network),
                (delete, f"/controller/network/{_NETWORK}", self._delete_network),
                (read, f"/controller/network/{_NETWORK}/member", self._list_member_revisions),
                (read, f"/controller/network/{_NETWORK}/member/{_NODE}", self._get_member),
                (write, f"/controller/network/{_NETWORK}/member/{_NODE}", self._post_member),
                (delete, f"/controller/network/{_NETWORK}/member/{_NODE}", self._delete_member),
            ]
        if self.flavour.has_controller and self.flavour.has_unstable_routes:
            table += [
                (read, "/unstable/controller/network", self._list_network_summaries),
                (read, f"/unstable/controller/network/{_NETWORK}/member", self._list_members),
            ]
        return [_Route(methods, re.compile(pattern), handler) for methods, pattern, handler in table]

    # Entry point

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Build the response to one request. ``headers`` maps lower-case header names to values."""
        if not self.is_authorized(headers, query):
            return json_response(401, {})

        route_method = "GET" if method == "HEAD" else method
        for route in self._routes:
            match = route.pattern.fullmatch(path)
            if match is not None and route_method in route.methods:
                try:
                    return route.handler(match, body)
                except InvalidBody as error:
                    return self._invalid_body_response(error)
        return empty_response(404)

    def is_authorized(self, headers: Mapping[str, str], query: str) -> bool:
        """Check the token like the local API: only the first credential present counts.

        The order is the ``X-ZT1-Auth`` header, then the ``auth`` query
        parameter, then ``Authorization: Bearer`` (1.12.0+), so a wrong header
        is not rescued by a right query parameter.
        """
        if "x-zt1-auth" in headers:
            return self._token_matches(headers["x-zt1-auth"])
        parameters = parse_qs(query, keep_blank_values=True)
        if "auth" in parameters:
            return self._token_matches(parameters["auth"][0])
        if self.flavour.accepts_bearer_token and "authorization" in headers:
            parts = headers["authorization"].split(" ")
            return len(parts) == 2 and parts[0].lower() == "bearer" and self._token_matches(parts[1])
        return False

    def redact_token(self, text: str) -> str:
        """Return ``text`` with every occurrence of the token replaced, for log messages."""
        return text.replace(self._token.decode("utf-8"), "<token>") if self._token else text

    def _token_matches(self, candidate: str) -> bool:
        return secrets.compare_digest(candidate.encode("utf-8"), self._token)

    def _invalid_body_response(self, error: InvalidBody) -> Response:
        if self.flavour.uses_httplib:
            # A real 1.14.1 controller was recorded sending exactly this form, with spaces.
            text = f'{{"error": 500, "description": {json.dumps(error.description)}}}'
            return Response(500, text.encode("utf-8"), JSON_CONTENT_TYPE)
        # NOTE: the two pre-1.12 messages and their status come from notes on
        # the 1.10 source, not from a recording of a 1.10 controller.
        if error.kind == "json":
            return json_response(400, {"message": "body JSON is invalid"})
        return json_response(400, {"message": "exception while processing parameters in JSON body"})

    def _parse_body_fields(self, body: bytes) -> dict[str, Any]:
        """Parse a POST body into the fields to apply.

        From 1.12.0 the controller looks keys up with nlohmann/json's
        ``count()``, which returns 0 on anything but an object, so a valid
        non-object body (``[1]``, ``"x"``, ``null``) changes nothing and the
        request succeeds. The emulator returns 400 for it on releases before 1.12.0.
        """
        parsed = parse_json_body(body)
        if isinstance(parsed, dict):
            return parsed
        if self.flavour.uses_httplib:
            return {}
        raise InvalidBody("json", "body is not a JSON object")

    # Node

    def _get_status(self, match: re.Match[str], body: bytes) -> Response:
        address = self.state.address
        public_key = hashlib.sha512(b"node:" + address.encode("ascii")).hexdigest()
        return json_response(
            200,
            {
                "address": address,
                "clock": self.state.clock(),
                "config": {"settings": self._status_settings()},
                "online": False,
                "planetWorldId": _PLANET_WORLD_ID,
                "planetWorldTimestamp": _PLANET_WORLD_TIMESTAMP,
                "publicIdentity": f"{address}:0:{public_key}",
                "tcpFallbackActive": False,
                "version": self.flavour.version,
                "versionBuild": 0,
                "versionMajor": self.flavour.major,
                "versionMinor": self.flavour.minor,
                "versionRev": self.flavour.revision,
            },
        )

    def _status_settings(self) -> dict[str, Any]:
        return {
            "allowSecondaryPort": False,
            "allowTcpFallbackRelay": False,
            "forceTcpRelay": False,
            "homeDir": "/var/lib/zerotier-one",
            "listeningOn": [],
            "portMappingEnabled": False,
            "primaryPort": self.port,
            "secondaryPort": 0,
            "softwareUpdate": "disable",
            "softwareUpdateChannel": "release",
            "surfaceAddresses": [],
            "tertiaryPort": 0,
        }

    # Controller and networks

    def _get_controller(self, match: re.Match[str], body: bytes) -> Response:
        if not self.flavour.has_controller_info_route:
            return empty_response(404)
        # The controller formats this one by hand: tab-indented, keys in this order.
        text = (
            '{\n\t"controller": true,\n'
            f'\t"apiVersion": {CONTROLLER_API_VERSION},\n'
            f'\t"clock": {self.state.clock()},\n'
            '\t"databaseReady": true\n}\n'
        )
        return Response(200, text.encode("ascii"), JSON_CONTENT_TYPE)

    def _list_networks(self, match: re.Match[str], body: bytes) -> Response:
        return json_response(200, self.state.network_ids())

    def _list_network_summaries(self, match: re.Match[str], body: bytes) -> Response:
        summaries = self.state.network_summaries()
        return json_response(200, {"data": summaries, "meta": {"networkCount": len(summaries)}})

    def _create_random_network(self, match: re.Match[str], body: bytes) -> Response:
        if not self.flavour.has_random_network_route:
            return empty_response(404)
        return self._create_network_with_random_suffix(body)

    def _create_network_under_address(self, match: re.Match[str], body: bytes) -> Response:
        # The controller compares the prefix as a string, so it must be typed in lower case.
        if match.group(1) != self.state.address:
            return empty_response(400)
        return self._create_network_with_random_suffix(body)

    def _create_network_with_random_suffix(self, body: bytes) -> Response:
        fields = self._parse_body_fields(body)
        network = self.state.create_random_network(fields)
        return json_response(200, network) if network is not None else empty_response(503)

    def _get_network(self, match: re.Match[str], body: bytes) -> Response:
        network = self.state.get_network(match.group(1))
        return json_response(200, network) if network is not None else empty_response(404)

    def _post_network(self, match: re.Match[str], body: bytes) -> Response:
        if not self.flavour.has_network_update_route:
            return empty_response(404)
        fields = self._parse_body_fields(body)
        return json_response(200, self.state.post_network(match.group(1), fields))

    def _delete_network(self, match: re.Match[str], body: bytes) -> Response:
        network = self.state.delete_network(match.group(1))
        return json_response(200, network) if network is not None else empty_response(404)

    # Members

    def _list_member_revisions(self, match: re.Match[str], body: bytes) -> Response:
        revisions = self.state.member_revisions(match.group(1))
        if revisions is None:
            return empty_response(404)
        if self.flavour.member_list_is_array:
            return json_response(200, [{member_id: revision} for member_id, revision in revisions.items()])
        return json_response(200, revisions)

    def _list_members(self, match: re.Match[str], body: bytes) -> Response:
        members = self.state.list_members(match.group(1))
        if members is None:
            return empty_response(404)
        authorized = sum(1 for member in members if member.get("authorized") is True)
        meta = {"authorizedCount": authorized, "totalCount": len(members)}
        return json_response(200, {"data": members, "meta": meta})

    def _get_member(self, match: re.Match[str], body: bytes) -> Response:
        member = self.state.get_member(match.group(1), match.group(2))
        return json_response(200, member) if member is not None else empty_response(404)

    def _post_member(self, match: re.Match[str], body: bytes) -> Response:
        # The 1.14 controller checks the network before it parses the body.
        if self.flavour.rejects_member_of_unknown_network and not self.state.has_network(match.group(1)):
            return empty_response(404)
        fields = self._parse_body_fields(body)
        member = self.state.post_member(match.group(1), match.group(2), fields)
        return json_response(200, member) if member is not None else empty_response(404)

    def _delete_member(self, match: re.Match[str], body: bytes) -> Response:
        member = self.state.delete_member(match.group(1), match.group(2))
        return json_response(200, member) if member is not None else empty_response(404)
